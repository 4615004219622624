"""deepinv interop: phaseforge's CDP operator as deepinv physics, checked with deepinv's own tools.

The deepinv tests skip unless deepinv is importable (``pip install .[deepinv]``); the base install
runs only the missing-dependency test. README "Interop" records the command that ran them all.
"""
import math
import sys

import pytest
import torch

from optics.cdp import CDPOperator, CDPSystem
from optics.interop import InteropError, _classes, to_deepinv, to_deepinv_noise, to_deepinv_phase_retrieval
from optics.noise import PoissonNoise, PrDeepNoise


def _op(n=16, L=4, os=2.0, order="fft", **kw):
    th = torch.rand(L, n, n, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    return CDPOperator(th, oversampling=os, detector_order=order, **kw)


def test_missing_deepinv_names_the_install_command(monkeypatch):
    _classes.cache_clear()
    monkeypatch.setitem(sys.modules, "deepinv", None)  # makes `import deepinv` raise ImportError
    try:
        with pytest.raises(InteropError, match=r"pip install \.\[deepinv\]"):
            to_deepinv(_op(method="fft"))
    finally:
        _classes.cache_clear()
    with pytest.raises(InteropError, match="CDPOperator or CDPSystem"):
        to_deepinv(torch.nn.Identity())


@pytest.mark.parametrize("kw", [dict(method="fft"), dict(method="fraunhofer", pitch_m=8e-6, wavelength_m=633e-9, z_m=0.1,
                                                                order="centered")], ids=["fft", "fraunhofer"])
def test_deepinv_adjointness_test_and_norm_on_the_cdp_operator(kw):
    pytest.importorskip("deepinv")
    op = _op(**kw)
    lin = to_deepinv(op)
    # deepinv's Monte-Carlo estimate of ‖A − (Aᴴ)ᴴ‖_F/‖A‖_F: complex64 round-off level (~1e-7)
    for dtype in (torch.complex64, torch.float32):
        err = float(lin.adjointness_test(torch.zeros(1, 1, 16, 16, dtype=dtype), num_samples=4))
        assert err < 1e-5, (dtype, err)
    if op.unit_free:  # ‖A‖² = L for phase masks (each A_l an isometry times |M_l| = 1)
        norm = float(lin.compute_sqnorm(torch.randn(1, 1, 16, 16, dtype=torch.complex64), verbose=False))
        assert norm == pytest.approx(4.0, rel=1e-4)


def test_deepinv_gradient_descent_reconstructs_a_small_cdp_and_its_loss_is_zero():
    dinv = pytest.importorskip("deepinv")
    from deepinv.optim.phase_retrieval import correct_global_phase, spectral_methods_wrapper

    op = _op(method="fft")  # 16×16, L = 4, 2× oversampling: well-posed up to a global phase
    physics = to_deepinv_phase_retrieval(op)
    x = torch.exp(1j * math.pi * torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))).to(torch.complex64)
    y = physics(x)
    assert torch.allclose(y, op.intensity(x), rtol=1e-6, atol=0)  # deepinv's forward is phaseforge's |A x|²
    model = dinv.optim.GD(data_fidelity=dinv.optim.L2(), prior=dinv.optim.ZeroPrior(), stepsize=0.05, max_iter=300,
                          custom_init=lambda yy, p: spectral_methods_wrapper(yy, p, n_iter=200))
    with torch.no_grad():
        x_hat = correct_global_phase(model(y, physics), x)
    # noiseless data: gradient descent on ‖|Bx|² − y‖² from the spectral start converges (measured
    # 7.8e-6 relative error); 1e-3 leaves room for float32 and BLAS differences
    assert float((x_hat - x).norm() / x.norm()) < 1e-3
    mc = dinv.loss.MCLoss()  # deepinv's measurement-consistency loss on phaseforge's physics
    assert float(mc(y=y, x_net=x_hat, physics=physics).mean()) < 1e-6 * float((y ** 2).mean())


def test_noise_models_draw_the_same_through_deepinv():
    pytest.importorskip("deepinv")
    op = _op(method="fft")
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    for model in (PrDeepNoise(27), PoissonNoise.matching_prdeep(9)):
        system = CDPSystem(op.masks.values, method="fft", oversampling=2.0, detector_order="fft", noise=model)
        physics = to_deepinv_phase_retrieval(system)  # the system's own noise model
        physics.noise_model.rng = torch.Generator().manual_seed(5)
        y = physics(x)
        ref = model.sample(system.intensity(x), generator=torch.Generator().manual_seed(5))
        assert torch.allclose(y, ref, rtol=1e-6, atol=1e-7)
    with pytest.raises(InteropError, match="NoiseModel"):
        to_deepinv_noise("poisson")
