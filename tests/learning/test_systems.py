"""Learnable systems: first estimate, gradients to the masks, SLM export levels, noise control."""
import math

import numpy as np
import pytest
import torch

from learning.systems import (CodedPhysics, SystemsError, first_estimate, remove_global_phase,
                              sample_generators)
from learning.training import encoded_psnr
from optics.design import read_design, write_design

pytestmark = pytest.mark.usefixtures("one_thread")


def test_first_estimate_beats_flat_guess_and_backprojection(tiny_model, phase_objects):
    model = tiny_model(n_masks=1, photons=None)
    x = phase_objects[0][:8]
    with torch.no_grad():
        y = model.physics.measure(x, noise="none")
        flat = first_estimate(model.physics, y, n_iter=0)
        er = first_estimate(model.physics, y, n_iter=10)
        bp = model.physics.A_adjoint(torch.sqrt(y).to(torch.complex64))
    p_flat = float(encoded_psnr(flat, x, "phase").mean())
    p_er = float(encoded_psnr(er, x, "phase").mean())
    p_bp = float(encoded_psnr(bp / bp.abs().clamp_min(1e-9), x, "phase").mean())
    assert p_er > p_flat + 5 and p_er > p_bp + 5, (p_flat, p_er, p_bp)
    # the global phase is fixed (mean real positive) and the scale is unit RMS
    s = er.sum(dim=(-2, -1))
    assert torch.allclose(s.imag, torch.zeros_like(s.imag), atol=1e-3 * float(s.abs().max()))
    assert torch.allclose(er.abs().pow(2).mean(dim=(-2, -1)), torch.ones(8), rtol=1e-4)


def test_gradient_reaches_masks_through_unrolled_solver_and_ste(tiny_model, phase_objects):
    model = tiny_model(n_masks=1, slm_upsample=2, widths=(4, 8))
    model.train()
    x = phase_objects[0][:4]
    _, out = model(x, seeds=[1, 2, 3, 4])
    (out.x.real.sum() + out.x.imag.pow(2).sum()).backward()
    g = model.physics.theta.grad
    assert g is not None and float(g.abs().sum()) > 0
    assert g.shape == (1, 8, 8)  # one value per SLM pixel


def test_noise_is_per_sample_and_explicit(tiny_model, phase_objects):
    model = tiny_model(n_masks=1)
    ph = model.physics
    x = phase_objects[0][:4]
    with torch.no_grad():
        full = ph.measure(x, noise="exact", generators=sample_generators([5, 6, 7, 8]))
        half = ph.measure(x[2:], noise="exact", generators=sample_generators([7, 8]))
        clean = ph.measure(x, noise="none")
        diff = ph.measure(x, noise="differentiable", generators=sample_generators([5, 6, 7, 8]))
    assert torch.equal(full[2:], half)  # a batch split sees the same noise
    assert not torch.equal(full, clean)
    # the photon budget: mean 100 photons per pixel over the snapshot set, Poisson spread
    assert float(clean.mean()) == pytest.approx(100.0, rel=1e-4)
    assert float((full - clean).pow(2).mean() / clean.mean()) == pytest.approx(1.0, rel=0.1)
    assert float((diff - clean).pow(2).mean() / clean.mean()) == pytest.approx(1.0, rel=0.1)
    with pytest.raises(SystemsError, match="one generator per sample"):
        ph.measure(x, noise="exact")
    with pytest.raises(SystemsError, match="noise"):
        ph.measure(x, noise="poisson")


def test_exported_student_phase_takes_only_slm_levels_on_pixel_grid(tiny_model, tmp_path):
    model = tiny_model(n_masks=1, slm_upsample=2, levels=4)
    ph = model.physics
    with torch.no_grad():
        ph.theta.add_(0.3)  # off-level phases
    design = ph.design_phase()
    assert design.shape == (1, 8, 8)  # SLM pixels, not simulation samples
    levels = torch.arange(4, dtype=design.dtype) * (math.pi / 2)
    assert bool(torch.isclose(design[..., None], levels, atol=1e-6).any(-1).all())
    assert ph.design_levels() == 4 and ph.pixel_pitch_m == pytest.approx(16e-6)
    # in eval mode the simulated modulation is exactly the exported phase, repeated 2×2
    model.eval()
    with torch.no_grad():
        mod = ph.modulation()
    up = design.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.allclose(torch.angle(mod * torch.exp(-1j * up)), torch.zeros_like(up), atol=1e-5)
    p = write_design(tmp_path / "design.h5", design, pixel_pitch_m=ph.pixel_pitch_m, wavelength_m=633e-9,
                     levels=ph.design_levels(), z_m=0.1, method="fraunhofer")
    d = read_design(p)
    assert d.levels == 4 and d.pixel_pitch_m == pytest.approx(16e-6)
    assert np.allclose(d.phase_rad, design.numpy())


def test_remove_global_phase_is_a_gauge():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 5, dtype=torch.complex128, generator=g)
    a = remove_global_phase(x)
    b = remove_global_phase(x * torch.exp(torch.tensor(2.1j, dtype=torch.complex128)))
    assert torch.allclose(a, b, atol=1e-12)


def test_physics_rejects_binning_sensor():
    from optics.cdp import CDPSystem
    from optics.sensor import Sensor
    s = CDPSystem(torch.zeros(1, 8, 8), pitch_m=8e-6, wavelength_m=633e-9, z_m=0.1)
    with pytest.raises(SystemsError, match="leave sensor.pitch_m unset"):
        CodedPhysics(s, Sensor(pitch_m=2e-6, grid_pitch_m=1e-6))


def test_teacher_and_student_masks_come_from_independent_streams():
    from learning.systems import build_phase_mask
    t = build_phase_mask(1, (16, 16), seed=0, role="teacher").theta.detach()
    s = build_phase_mask(1, (16, 16), seed=0, role="student").theta.detach()
    assert not torch.allclose(t, s)
    # uncorrelated: |⟨e^{iθt}, e^{iθs}⟩|/n ~ 1/√n, far from 1 (a shared stream would give 1)
    ov = (torch.polar(torch.ones_like(t), t) * torch.polar(torch.ones_like(s), -s)).mean().abs()
    assert float(ov) < 0.25


def test_protocol_system_unit_free_slm_and_noise_model():
    """The standard CDP protocol as a learnable system (issue 17 §5, `cdp-protocol-l1`): unit-free
    FFT without oversampling, one 4-level SLM mask with one pixel per sample, prDeep noise on |A x|²
    instead of a camera. Checked against physics: Parseval (‖A x‖² = ‖x‖² for one phase mask, the
    ortho DFT: float32 rounding, 1e-5), the exact draw is prDeep's own (bit for bit, same
    generator), the differentiable draw has prDeep's variance σ²·I (σ = 27/255; 16 384 samples:
    ±10 %), gradients reach the mask phases, and the unfolded reconstructor keeps the operator's
    units (normalize none: no camera gain to remove)."""
    from optics.noise import PrDeepNoise
    from phaseforge.config import load
    from phaseforge.learn import CONFIG_DIR, build_model

    ov = ["optics.method=fft", "optics.oversampling=1", "optics.detector_order=fft", "sensor.enabled=false",
          "noise.model=prdeep", "noise.alpha=27", "data.encoding=amplitude", "data.size=16",
          "slm.pixel_pitch_m=8e-6", "model.widths=[4, 8]", "model.n_warm=5", "model.n_stages=1"]
    model = build_model(load(CONFIG_DIR / "student_e2e.yaml", ov))
    ph = model.physics
    assert ph.noisy and ph.sensor is None and model.reconstructor.normalize == "none"
    assert ph.theta.shape == (1, 16, 16) and ph.design_levels() == 4
    x = torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(0)).to(torch.complex64)
    clean = ph.measure(x, noise="none")
    assert torch.allclose(clean.sum(dim=(-3, -2, -1)), (x.abs() ** 2).sum(dim=(-2, -1)), rtol=1e-5)
    seeds = list(range(16))
    with torch.no_grad():
        exact = ph.measure(x, noise="exact", generators=sample_generators(seeds))
    want = torch.stack([PrDeepNoise(27).sample(clean[b], generator=g)
                        for b, g in enumerate(sample_generators(seeds))])
    assert torch.equal(exact, want)
    model.train()  # the SLM's straight-through quantisation (eval mode shows the exact levels, no gradient)
    diff = ph.measure(x, noise="differentiable", generators=sample_generators(seeds))
    sigma = 27 / 255
    assert float(((diff - clean) ** 2).mean().detach() / (sigma ** 2 * clean.mean().detach())) == pytest.approx(1.0, rel=0.1)
    diff.sum().backward()
    assert ph.theta.grad is not None and bool(torch.isfinite(ph.theta.grad).all())
    assert float(ph.theta.grad.abs().max()) > 0
    with pytest.raises(SystemsError, match="one generator per sample"):
        ph.measure(x, noise="exact")
