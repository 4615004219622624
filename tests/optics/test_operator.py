"""The operator contract (A, Aᴴ, magnitude pair, pseudo-inverse, norm), one geometry, explicit
noise, tensor parameters with gradients, and symmetric propagation options.

Tolerances: complex128 throughout unless stated, so identities hold to ~1e-12 relative."""
import math

import pytest
import torch
from torch.func import functional_call

import optics
from optics.cdp import CDPSystem
from optics.errors import GeometryError, OptionError
from optics.grid import pad_centered
from optics.operator import OperatorError
from optics.masks import PhaseMask
from optics.propagation import propagate
from optics.sensor import Sensor
from optics.slm import SLM

LAM, DX = 633e-9, 8e-6
ZC = 16 * DX * DX / LAM  # critical distance of a 16-sample window

CASES = [("fraunhofer", 0.1, {}), ("fresnel-1fft", 3 * 32 * DX * DX / LAM, {}),
         ("fresnel-tf", 0.5 * ZC, {}), ("fresnel-ir", 3 * 32 * DX * DX / LAM, {}),
         ("asm", 0.5 * ZC, {}), ("asm", 0.5 * ZC, {"pad": False}), ("asm", 3 * ZC, {"evanescent": "decay"})]


def _x(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g, dtype=torch.float64),
                         torch.randn(shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("oversampling", [1, 2])
@pytest.mark.parametrize("method,z,opts", CASES)
def test_operator_is_the_direct_composition_with_exact_adjoint(method, z, opts, oversampling):
    masks = PhaseMask.random(3, (16, 16), seed=1, dtype=torch.float64)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=z, method=method, oversampling=oversampling, **opts)
    x = _x((2, 16, 16), 2)
    M = sys.out_shape
    direct = propagate(pad_centered(x.unsqueeze(-3) * masks().detach(), M), pitch_m=DX, wavelength_m=LAM, z_m=z,
                       method=method, **opts).field
    assert torch.allclose(sys.A(x), direct, rtol=1e-10, atol=1e-12 * float(direct.abs().max()))
    assert sys.adjointness_error() < 1e-12
    # the phase-free pair gives the same magnitudes and the same Aᴴ(w ⊙ A x) for real w
    B, BH = sys.magnitude_pair()
    ax, bx = sys.A(x), B(x)
    assert torch.allclose(ax.abs(), bx.abs(), rtol=1e-10, atol=1e-14)
    w = torch.rand(ax.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(sys.A_adjoint(w * ax), BH(w * bx), rtol=1e-9, atol=1e-12 * float(ax.detach().abs().max()))
    assert torch.allclose(sys.intensity(x), ax.abs() ** 2, rtol=1e-10, atol=1e-14)


def test_pseudo_inverse_and_norm():
    masks = PhaseMask.random(2, (16, 16), seed=4, dtype=torch.float64)
    fr = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, oversampling=2)
    x = _x((16, 16), 5)
    # diagonal AᴴA (Fraunhofer): A⁺A = I exactly, and tr(AᴴA)/n = L·(dx²/λz)²·M² exactly
    assert fr.normal_is_diagonal() is True
    assert torch.allclose(fr.A_dagger(fr.A(x)), x, rtol=1e-10, atol=1e-12)
    c = (DX ** 2 / (LAM * 0.1)) ** 2 * 32 ** 2
    assert fr.norm_sq(dtype=torch.complex128) == pytest.approx(2 * c, rel=1e-12)
    # near-field ASM: AᴴA is not diagonal; CG recovers x from A x
    asm = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.3 * ZC, method="asm", oversampling=1.5)
    pinv = asm.pseudo_inverse(dtype=torch.complex128, cg_iter=60)
    assert not pinv.diagonal
    err = float((pinv(asm.A(x)) - x).detach().norm() / x.norm())
    assert err < 1e-6


def test_one_geometry_binds_and_rejects_disagreement():
    theta = torch.zeros(1, 8, 8)
    slm = SLM(pixel_pitch_m=2 * DX, upsample=2, bit_depth=2)
    sys = CDPSystem(theta, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=slm)  # real phases with an SLM work
    assert sys.in_shape == (16, 16) and sys.slm.sim_pitch_m == pytest.approx(DX)
    with pytest.raises(GeometryError, match=r"SLM simulates .* on a 4e-06 m grid .* system's simulation pitch is 8e-06 m"):
        CDPSystem(theta, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX / 2))
    # the detector pitch λz/(M·dx) is the system's; a sensor built for another one is refused
    det = LAM * 0.1 / (16 * DX)
    cam = Sensor(pitch_m=2 * det)
    sys = CDPSystem(theta, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, upsample=2),
                    sensor=cam)
    assert sys.sensor.binning == 2 and sys.measure(torch.ones(16, 16), noise="none").shape == (1, 8, 8)
    with pytest.raises(GeometryError, match=r"built for a detector sample pitch of 1e-06 m .* detector pitch is 0.000494"):
        CDPSystem(theta, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, upsample=2),
                  sensor=Sensor(grid_pitch_m=1e-6))
    with pytest.raises(optics.errors.PitchRatioError, match="not an integer multiple"):
        CDPSystem(theta, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, upsample=2),
                  sensor=Sensor(pitch_m=1.5 * det))


def test_noise_is_an_argument_not_a_mode():
    masks = PhaseMask.random(2, (8, 8), seed=0, learnable=False)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, sensor=Sensor(mean_photons=50.0, read_noise_e=1.0))
    x = torch.ones(8, 8, dtype=torch.complex64)
    sys.train()
    a = sys(x, generator=torch.Generator().manual_seed(1))
    sys.eval()
    b = sys(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a, torch.round(a))  # exact Poisson path, integer DN, either mode
    g = sys.measure(x, noise="gaussian", generator=torch.Generator().manual_seed(1))
    assert not torch.equal(g, a)
    assert torch.equal(sys.measure(x, noise="none"), sys.sensor.expected_dn(sys.intensity(x)))
    with pytest.raises(optics.OpticsError, match="noise must be one of"):
        sys.measure(x, noise="shot")
    # the differentiable path carries gradients to the object; the exact one does not pretend to
    xr = torch.ones(8, 8, dtype=torch.complex64, requires_grad=True)
    sys.measure(xr, noise="gaussian", generator=torch.Generator().manual_seed(2)).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all() and float(xr.grad.abs().sum()) > 0


def _loss(sys, params, x):
    return functional_call(sys, params, (x,), {"noise": None}).sum()


def test_gradients_reach_distance_pitch_lut_and_crosstalk():
    """gradcheck (complex128/float64) through the physical scalars, which are tensors."""
    x = (_x((16, 16), 7).abs() + 0.2).to(torch.complex128)
    masks = PhaseMask.random(1, (16, 16), seed=2, dtype=torch.float64, learnable=False)
    asm = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.5 * ZC, method="asm", pad=False,
                    fit=("z_m", "pitch_m"))
    assert isinstance(asm.operator.z_m, torch.nn.Parameter)
    w = torch.rand(1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f_z(z):
        return (functional_call(asm, {"operator.z_m": z * ZC}, (x,)) * w).sum()

    def f_p(scale):
        return (functional_call(asm, {"operator.pitch_m": scale * DX}, (x,)) * w).sum()

    assert torch.autograd.gradcheck(f_z, (torch.tensor(0.5, dtype=torch.float64, requires_grad=True),), eps=1e-6)
    assert torch.autograd.gradcheck(f_p, (torch.tensor(1.0, dtype=torch.float64, requires_grad=True),), eps=1e-7,
                                    atol=1e-6)
    # the fitted distance receives a gradient through the system's own parameters too
    (asm(x) * w).sum().backward()
    assert asm.operator.z_m.grad is not None and float(asm.operator.z_m.grad.abs()) > 0

    slm = SLM(pixel_pitch_m=2 * DX, upsample=2, bit_depth=2, quantization="exact",
              crosstalk_sigma_m=0.6 * DX, fit=("lut", "crosstalk_sigma_m"))
    theta = torch.rand(1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 6
    sys = CDPSystem(theta, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=slm)
    w2 = torch.rand(1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def f_lut(levels):
        return (functional_call(sys, {"operator.slm.lut.levels_rad": levels}, (x,)) * w2).sum()

    def f_sig(sig_px):
        return (functional_call(sys, {"operator.slm.crosstalk_sigma_m": sig_px * DX}, (x,)) * w2).sum()

    lv = (torch.arange(4, dtype=torch.float64) * math.pi / 2 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(f_lut, (lv,), eps=1e-6)
    assert torch.autograd.gradcheck(f_sig, (torch.tensor(0.6, dtype=torch.float64, requires_grad=True),), eps=1e-6)


def test_modulation_cache_follows_in_place_updates_and_skips_grad():
    masks = PhaseMask.random(1, (8, 8), seed=0)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    x = torch.ones(8, 8, dtype=torch.complex64)
    with torch.no_grad():
        a = sys.intensity(x)
        f1 = sys.operator._factors(torch.complex64, x.device)
        assert sys.operator._factors(torch.complex64, x.device) is f1  # cached
        masks.theta.add_(0.5 * torch.randn(1, 8, 8))  # an optimiser step, in place
        b = sys.intensity(x)
    assert not torch.allclose(a, b)
    ref = CDPSystem(masks.theta.detach().clone(), pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    assert torch.allclose(b, ref.intensity(x), rtol=1e-5)
    # with grad: rebuilt per call, so gradients reach the learnable phases
    sys.intensity(x).sum().backward()
    assert masks.theta.grad is not None


def test_propagation_options_are_symmetric_and_checked():
    u = torch.ones(8, 8, dtype=torch.complex64)
    kw = dict(pitch_m=DX, wavelength_m=LAM, z_m=0.1, method="fraunhofer")
    for fn in (optics.propagate, optics.propagate_adjoint):
        with pytest.raises(OptionError, match="'fraunhofer' does not take option.*pad.*takes no options"):
            fn(u, pad=False, **kw)
        with pytest.raises(OptionError, match="band_limt"):
            fn(u, pitch_m=DX, wavelength_m=LAM, z_m=1e-4, method="asm", band_limt=True)
    with pytest.raises(OptionError, match="pad"):
        CDPSystem(torch.zeros(1, 8, 8), pitch_m=DX, wavelength_m=LAM, z_m=0.1, pad=False)
    # every propagator and adjoint returns (field, (py, px))
    for m, z in (("fraunhofer", 0.1), ("asm", 1e-4)):
        f = optics.propagate(u, pitch_m=DX, wavelength_m=LAM, z_m=z, method=m)
        b = optics.propagate_adjoint(f.field, pitch_m=DX, wavelength_m=LAM, z_m=z, method=m)
        assert isinstance(f.pitch_m, tuple) and len(f.pitch_m) == 2 and b.pitch_m == (DX, DX)


# ---- property: the adjoint is exact for any geometry the contract accepts ------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(n=st.integers(4, 12), L=st.integers(1, 3), over=st.sampled_from([1.0, 1.5, 2.0]),
       method=st.sampled_from(["fraunhofer", "asm", "fresnel-tf"]), zf=st.floats(0.2, 1.5))
def test_adjoint_exact_for_any_accepted_geometry(n, L, over, method, zf):
    z = 0.1 if method == "fraunhofer" else zf * n * DX * DX / LAM
    masks = torch.rand(L, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * 6.28
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=z,
                    method=method, oversampling=over)
    assert sys.adjointness_error() < 1e-12


def test_pad_buffers_never_leak_between_forward_and_adjoint(rand_field):
    # the persistent zero-padding buffers are keyed by window: A, Aᴴ, A again must agree
    masks = PhaseMask.random(2, (12, 12), seed=0, dtype=torch.float64, learnable=False)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.5 * 12 * DX * DX / LAM, method="asm", oversampling=1.5)
    x = rand_field((12, 12), 1)
    with torch.no_grad():
        a1 = sys.A(x)
        sys.A_adjoint(rand_field(a1.shape, 2))
        a2 = sys.A(x)
    assert torch.equal(a1, a2)


def test_cache_never_serves_stale_factors_for_swapped_or_rewritten_values():
    # values swapped in by functional_call (short-lived tensors whose ids get recycled) and
    # writes through .data (no version bump) must both rebuild the factors
    masks = PhaseMask.random(1, (16, 16), seed=3, dtype=torch.float64, learnable=False)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.5 * ZC, method="asm", pad=False)
    x = (torch.rand(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5).to(torch.complex128)
    with torch.no_grad():
        ref = {f: CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=f * ZC, method="asm", pad=False).intensity(x)
               for f in (0.3, 0.4, 0.5, 0.6)}
        for _ in range(3):
            for f in (0.3, 0.4, 0.5, 0.6):
                y = functional_call(sys, {"operator.z_m": torch.tensor(f * ZC, dtype=torch.float64)}, (x,),
                                    {"noise": "none"})
                assert torch.equal(y, ref[f])
        sys.operator.z_m.data.fill_(0.3 * ZC)
        assert torch.equal(sys.intensity(x), ref[0.3])


def test_adjoint_names_a_non_finite_detector_field():
    sys = CDPSystem(PhaseMask.random(2, (8, 8), seed=0, learnable=False), pitch_m=DX, wavelength_m=LAM, z_m=0.1,
                    oversampling=2)
    z = torch.ones(2, 16, 16, dtype=torch.complex64)
    z[1, 3, 4] = float("nan")
    with pytest.raises(optics.NonFiniteError, match="detector field z contains 1 NaN/inf"):
        sys.A_adjoint(z)


# ---- values the mutation run (issue 20, `make mutate MODULES=optics/cdp.py`) showed untested ----
NS_CASES = [("fft", None, {}), ("fraunhofer", 0.1, {}), ("fresnel-1fft", "1fft", {}), ("fresnel-tf", 0.5 * ZC, {}),
            ("asm", 0.5 * ZC, {}), ("fresnel-ir", "1fft", {})]


@pytest.mark.parametrize("order", ["centered", "fft"])
@pytest.mark.parametrize("method,z,opts", NS_CASES)
def test_non_square_odd_fields_are_the_direct_composition(method, z, opts, order):
    """A 7×10 object, oversampling 1.5 → an odd, non-square 10×15 detector (round(10.5) = 10):
    every row/column index of the folded factors, the crop and the reordering is exercised.
    Reference: the direct composition (centred padding, then the propagator / orthonormal DFT),
    ifftshift-ed for the FFT order. complex128 → 1e-10 relative."""
    if order == "fft" and method not in ("fft", "fraunhofer", "fresnel-1fft"):
        pytest.skip("detector_order='fft' is for Fourier-plane methods")
    th = torch.rand(2, 7, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 6.28
    m = torch.polar(torch.ones_like(th), th)
    x = _x((2, 7, 10), 5)
    if method == "fft":
        sys = CDPSystem(th, method="fft", oversampling=1.5, detector_order=order)
        M = sys.out_shape
        ref = torch.fft.fftshift(torch.fft.fft2(pad_centered(m * x[:, None], M), norm="ortho"), dim=(-2, -1))
    else:
        z = 3 * 15 * DX * DX / LAM if z == "1fft" else z
        sys = CDPSystem(th, pitch_m=DX, wavelength_m=LAM, z_m=z, method=method, oversampling=1.5,
                        detector_order=order, **opts)
        M = sys.out_shape
        ref = propagate(pad_centered(m * x[:, None], M), pitch_m=DX, wavelength_m=LAM, z_m=z, method=method,
                        **opts).field
    assert M == (10, 15)
    if order == "fft":
        ref = torch.fft.ifftshift(ref, dim=(-2, -1))
    assert torch.allclose(sys.A(x), ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    assert sys.adjointness_error() < 1e-12
    assert sys.A(x.to(torch.complex64)).dtype == torch.complex64   # factors follow the input precision
    assert sys.A(x.to(torch.complex64).requires_grad_(True)).dtype == torch.complex64   # also on the autograd path
    # the phase-free pair: A = D·B with one fixed unit-modulus diagonal D (≠ 1 for Fourier methods)
    B, BH = sys.magnitude_pair()
    d1, d2 = sys.A(x[:1]) / B(x[:1]), sys.A(x[1:]) / B(x[1:])
    assert torch.allclose(d1, d2, rtol=1e-9, atol=0) and torch.allclose(d1.abs(), torch.ones_like(d1.abs()), atol=1e-9)
    fourier = method in ("fft", "fraunhofer", "fresnel-1fft")
    assert bool((d1 - 1).abs().max() > 1e-3) == fourier
    assert sys.normal_is_diagonal() is (True if fourier else None)


def test_magnitude_pair_does_not_scan_for_nan_and_the_adjoint_names_an_overflow():
    """The pair checks shapes only (documented): a NaN input gives NaN output, no error. A finite
    field whose adjoint overflows is refused with its fix: unit-free, complex64, z = 3e38 in
    the phases of A δ, so Aᴴz adds 2·16·16 samples of 3e38/16 coherently (> 3.4e38)."""
    sys = CDPSystem(PhaseMask.random(2, (8, 8), seed=0, learnable=False), pitch_m=DX, wavelength_m=LAM, z_m=0.1,
                    oversampling=2)
    B, BH = sys.magnitude_pair()
    x = torch.ones(8, 8, dtype=torch.complex64)
    x[2, 3] = float("nan")
    assert bool(torch.isnan(B(x)).any())
    z = torch.ones(2, 16, 16, dtype=torch.complex64)
    z[0, 1, 1] = float("nan")
    assert bool(torch.isnan(BH(z)).any())
    with pytest.raises(optics.NonFiniteError, match=r"^A_adjoint overflowed to NaN/inf from a finite detector field; "
                                                    r"rescale the field \(e\.g\. divide by its maximum\) or use complex128$"):
        ff = CDPSystem(torch.zeros(2, 8, 8), method="fft", oversampling=2)
        d = torch.zeros(8, 8, dtype=torch.complex64)
        d[0, 0] = 1
        a = ff.A(d)
        ff.A_adjoint(3e38 * a / a.abs())


def test_single_fft_fresnel_sampling_limit_is_n_pitch_squared_over_lambda():
    """z ≥ N·dx²/λ (N the larger detector side) is accepted — exactly at the limit too; just
    below it is refused with the numbers and the fixes, unless allow_aliasing=True."""
    import re
    masks = PhaseMask.random(1, (8, 12), seed=0, learnable=False)
    n = 24                                                        # detector 16×24 at oversampling 2
    limit = n * DX ** 2 / LAM
    kw = dict(pitch_m=DX, wavelength_m=LAM, method="fresnel-1fft", oversampling=2)
    CDPSystem(masks, z_m=limit, **kw)
    z = 0.999 * limit
    msg = (f"single-FFT Fresnel input chirp aliases: z = {z:.4g} m < N·pitch²/λ = {limit:.4g} m (N = {n}, pitch "
           f"{DX:.4g} m, λ = {LAM:.4g} m); use method='fresnel-tf' or 'asm', increase z, or decrease the pitch; "
           f"pass allow_aliasing=True to proceed anyway")
    with pytest.raises(optics.SamplingError, match="^" + re.escape(msg) + "$"):
        CDPSystem(masks, z_m=z, **kw)
    CDPSystem(masks, z_m=z, allow_aliasing=True, **kw)


def test_cache_follows_modes_data_writes_and_large_in_place_updates():
    """The cached factors are rebuilt when a submodule's train/eval mode changes (SLM soft
    quantisation in training, hard in eval), after a write through .data (no version bump) and
    after an in-place update of a large (> 4096 entries, not value-compared) tensor. Reference:
    fresh systems; equal to 1e-12."""
    x = (torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5).to(torch.complex128)
    th = torch.rand(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 6

    def build():
        slm = SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, bit_depth=2, quantization="soft", soft_temperature_rad=0.5)
        return CDPSystem(th, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=slm)

    with torch.no_grad():
        s = build().eval()
        y_eval = s.intensity(x)
        s.train()
        y_train = s.intensity(x)
        assert not torch.allclose(y_eval, y_train, rtol=1e-6)
        assert torch.allclose(y_train, build().train().intensity(x), rtol=1e-12, atol=0)
        assert torch.allclose(s.eval().intensity(x), y_eval, rtol=1e-12, atol=0)
        # .data write of a physical scalar
        asm = CDPSystem(PhaseMask.random(1, (16, 16), seed=3, dtype=torch.float64, learnable=False), pitch_m=DX,
                        wavelength_m=LAM, z_m=0.5 * ZC, method="asm", pad=False)
        xa = x.repeat(2, 2)
        asm.intensity(xa)
        asm.operator.z_m.data.fill_(0.3 * ZC)
        ref = CDPSystem(PhaseMask.random(1, (16, 16), seed=3, dtype=torch.float64, learnable=False), pitch_m=DX,
                        wavelength_m=LAM, z_m=0.3 * ZC, method="asm", pad=False).intensity(xa)
        assert torch.allclose(asm.intensity(xa), ref, rtol=1e-12, atol=0)
        # in-place update of a 1×72×72 phase (5184 entries)
        big = PhaseMask.random(1, (72, 72), seed=4, dtype=torch.float64)
        sb = CDPSystem(big, pitch_m=DX, wavelength_m=LAM, z_m=0.1)
        xb = torch.ones(72, 72, dtype=torch.complex128)
        sb.intensity(xb)
        big.theta.add_(0.7 * torch.rand(1, 72, 72, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
        want = CDPSystem(big.theta.detach().clone(), pitch_m=DX, wavelength_m=LAM, z_m=0.1).intensity(xb)
        assert torch.allclose(sb.intensity(xb), want, rtol=1e-12, atol=1e-12 * float(want.max()))


def test_system_delegates_geometry_and_passes_noise_and_options_through():
    """CDPSystem exposes the operator's geometry (method, oversampling, options, offset); its
    forward passes the noise model through (noise='none' is noiseless even with a Poisson
    sensor); A_dagger passes its options; a noise request without a sensor names the fix."""
    masks = PhaseMask.random(2, (8, 8), seed=0, dtype=torch.float64, learnable=False)
    s = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.5 * ZC, method="asm", oversampling=1.5, pad=False,
                  sensor=Sensor(mean_photons=50.0, budget_dims=3))
    op = s.operator
    assert (s.method, s.oversampling, s.propagation_options, s.offset) == (op.method, 1.5, op.propagation_options, op.offset)
    for name in ("pitch_m", "wavelength_m", "z_m", "masks", "detector_order", "unit_free", "dc_index", "n_masks",
                 "in_shape", "out_shape", "out_pitch_m", "slm"):
        assert getattr(s, name) is getattr(op, name) or getattr(s, name) == getattr(op, name), name
    assert s.offset == (2, 2) and s.propagation_options["pad"] is False
    x = _x((8, 8), 1)
    assert torch.equal(s(x, noise="none"), s.measure(x, noise="none"))
    z = s.A(x)
    assert torch.equal(s.A_dagger(z, mode="cg", cg_iter=1), op.A_dagger(z, mode="cg", cg_iter=1))
    with pytest.raises(OperatorError, match="unknown pinv mode 'bogus'"):
        s.A_dagger(z, mode="bogus")
    bare = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    with pytest.raises(optics.OpticsError, match=r"^noise='poisson' needs a sensor; build the system with sensor=Sensor\(\.\.\.\)$"):
        bare.measure(x, noise="poisson")


OPT_CASES = [  # (method, pitch, z, options that change the result or are needed at this z)
    ("asm", DX, 3 * ZC, {"band_limit": False, "allow_aliasing": True}),
    ("asm", 0.25e-6, 1e-6, {"evanescent": "decay"}),             # pitch < λ/2: evanescent waves exist
    ("asm", DX, 0.5 * ZC, {"pad": False}),
    ("fresnel-tf", DX, 0.5 * ZC, {"pad": False}),
    ("fresnel-tf", DX, 10 * ZC, {"allow_aliasing": True}),
    ("fresnel-ir", DX, 3 * 32 * DX * DX / LAM, {"pad": False}),
    ("fresnel-ir", DX, 0.3 * ZC, {"allow_aliasing": True}),
]


@pytest.mark.parametrize("method,pitch,z,opts", OPT_CASES)
def test_propagation_options_reach_the_kernel(method, pitch, z, opts):
    """Each option given to the system is the option its kernel is built with: A equals the
    direct propagation with the same options (1e-10 relative), and differs from the default
    (or the default refuses this z)."""
    masks = PhaseMask.random(2, (16, 16), seed=1, dtype=torch.float64, learnable=False)
    x = _x((16, 16), 2)
    s = CDPSystem(masks, pitch_m=pitch, wavelength_m=LAM, z_m=z, method=method, oversampling=1.5, **opts)
    u = pad_centered(x * masks().detach(), s.out_shape)
    ref = propagate(u, pitch_m=pitch, wavelength_m=LAM, z_m=z, method=method, **opts).field
    assert torch.allclose(s.A(x), ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))
    try:
        default = propagate(u, pitch_m=pitch, wavelength_m=LAM, z_m=z, method=method).field
    except optics.SamplingError:
        with pytest.raises(optics.SamplingError):
            CDPSystem(masks, pitch_m=pitch, wavelength_m=LAM, z_m=z, method=method, oversampling=1.5)
    else:
        assert not torch.allclose(default, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))
    if opts.get("band_limit") is False:                  # without the band limit, aliasing must be allowed explicitly
        with pytest.raises(optics.SamplingError):
            CDPSystem(masks, pitch_m=pitch, wavelength_m=LAM, z_m=z, method=method, oversampling=1.5, band_limit=False)


def test_frozen_block_serves_each_precision_its_own_factors():
    """Inside frozen(): repeated calls reuse the factors, and a complex64 call after a
    complex128 one gets complex64 factors (values equal to the unfrozen ones to float32
    round-off, 1e-5 relative)."""
    masks = PhaseMask.random(2, (8, 8), seed=0, dtype=torch.float64)
    s = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, oversampling=2)
    x = _x((8, 8), 1)
    ref = s.A(x).detach()
    with s.frozen():
        a1, a2 = s.A(x), s.A(x)
        a3 = s.A(x.to(torch.complex64))
    assert torch.allclose(a1, ref, rtol=1e-12, atol=0) and torch.equal(a1, a2)
    assert a3.dtype == torch.complex64
    assert torch.allclose(a3.to(torch.complex128), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_cache_value_check_covers_a_4096_entry_tensor():
    """A .data write (no version bump) to a tensor of exactly 4096 entries (1×64×64, the
    largest value-compared size) rebuilds the factors (reference: a fresh system; 1e-12)."""
    masks = PhaseMask.random(1, (64, 64), seed=2, dtype=torch.float64)
    s = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    x = torch.ones(64, 64, dtype=torch.complex128)
    with torch.no_grad():
        s.intensity(x)
        masks.theta.data.add_(torch.rand(1, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
        want = CDPSystem(masks.theta.detach().clone(), pitch_m=DX, wavelength_m=LAM, z_m=0.1).intensity(x)
        assert torch.allclose(s.intensity(x), want, rtol=1e-12, atol=1e-12 * float(want.max()))


class _FourD(torch.nn.Module):
    """A mask module that returns a 4-D modulation / phase (a shape the operator must refuse)."""

    def phase(self):
        return torch.zeros(1, 1, 2, 2)

    def forward(self):
        return torch.ones(1, 1, 2, 2, dtype=torch.complex64)


def test_construction_errors_name_the_input_and_the_fix():
    import re
    with pytest.raises(optics.ShapeError, match=r"^masks must have shape \(L, H, W\) or \(H, W\); got \(1, 1, 4, 4\)$"):
        CDPSystem(torch.zeros(1, 1, 4, 4), pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    with pytest.raises(optics.NonFiniteError, match=r"^masks contains 1 NaN/inf"):
        CDPSystem([[0.0, float("nan")], [0.0, 0.0]], pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    two_d = CDPSystem([[0.0, 1.0], [2.0, 3.0]], pitch_m=DX, wavelength_m=LAM, z_m=0.1)   # a list: one (H, W) mask
    want = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    assert two_d.n_masks == 1 and torch.allclose(two_d.modulation()[0].angle().double(), want, atol=1e-6)
    slm = SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, bit_depth=2)
    from optics.masks import ComplexMask
    with pytest.raises(optics.ShapeError, match=r"^with an SLM the masks must be phases per SLM pixel: a PhaseMask or a real "
                                                r"\(L, h, w\) tensor in rad; got ComplexMask \(an SLM is phase-only"):
        CDPSystem(ComplexMask(torch.ones(1, 4, 4, dtype=torch.complex64)), pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=slm)
    with pytest.raises(optics.OpticsError, match=r"^noise must be an optics\.noise\.NoiseModel \(e\.g\. PrDeepNoise\(9\), "
                                                 r"PoissonNoise\(100\.0\)\) or None, got str; a sensor's noise is chosen with "
                                                 r"Sensor\(noise=\.\.\.\)$"):
        CDPSystem(torch.zeros(1, 4, 4), pitch_m=DX, wavelength_m=LAM, z_m=0.1, noise="poisson")
    from optics.noise import PoissonNoise
    with pytest.raises(optics.OpticsError, match=re.escape(
            "give either a sensor (a camera in DN, with its own noise) or a noise model on the intensity (noise=...), not both")):
        CDPSystem(torch.zeros(1, 4, 4), pitch_m=DX, wavelength_m=LAM, z_m=0.1, noise=PoissonNoise(10.0), sensor=Sensor())
    with pytest.raises(optics.ShapeError, match=r"^object x has spatial shape \(4, 5\) but the masks are \(4, 4\); "):
        CDPSystem(torch.zeros(1, 4, 4), pitch_m=DX, wavelength_m=LAM, z_m=0.1).A(torch.zeros(2, 4, 5, dtype=torch.complex64))
    with pytest.raises(optics.NonFiniteError, match=r"^object x contains 1 NaN/inf"):
        x = torch.zeros(4, 4, dtype=torch.complex64)
        x[0, 0] = float("inf")
        CDPSystem(torch.zeros(1, 4, 4), pitch_m=DX, wavelength_m=LAM, z_m=0.1).A(x)
    with pytest.raises(optics.ShapeError, match=r"^detector field has shape \(1, 4, 5\); expected \(\.\.\., 1, 4, 6\)$"):
        CDPSystem(torch.zeros(1, 4, 6), pitch_m=DX, wavelength_m=LAM, z_m=0.1).A_adjoint(torch.zeros(1, 4, 5, dtype=torch.complex64))
    with pytest.raises(optics.ShapeError, match=r"^SLM modulation must have shape \(L, H, W\) or \(H, W\); got \(1, 1, 4, 4\)$"):
        CDPSystem(_FourD(), pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, bit_depth=2))
    with pytest.raises(optics.ShapeError, match=r"^masks must have shape \(L, H, W\) or \(H, W\); got \(1, 1, 2, 2\)$"):
        CDPSystem(_FourD(), pitch_m=DX, wavelength_m=LAM, z_m=0.1)


def test_camera_binning_must_divide_the_detector_window():
    """A camera pixel of b detector samples needs a window divisible by b (binning 1 always
    fits); the message names the window and the binning."""
    masks = torch.zeros(1, 9, 9)
    p_out = LAM * 0.1 / (9 * DX)                       # Fraunhofer detector pitch of a 9-sample window
    CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, sensor=Sensor(pitch_m=p_out))
    with pytest.raises(GeometryError, match=r"^the detector window \(9, 9\) is not divisible by the camera binning 2 "
                                            r"\(camera pitch / detector sample pitch\); change the object size or oversampling$"):
        CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, sensor=Sensor(pitch_m=2 * p_out))
    s3 = CDPSystem(torch.zeros(1, 9, 9), pitch_m=DX, wavelength_m=LAM, z_m=0.1, sensor=Sensor(pitch_m=3 * p_out))
    assert s3.sensor.binning == 3


def test_operator_argument_errors_name_the_argument():
    """Each refused argument is named with its value and the fix (full key content asserted)."""
    import re
    from optics.errors import UnitsError
    m = torch.zeros(1, 4, 4)
    with pytest.raises(optics.OpticsError, match=r"^method must be one of \('fft', .*\), got 'bogus'$"):
        CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=0.1, method="bogus")
    with pytest.raises(optics.OpticsError, match=re.escape("cannot fit ['z']; the CDP operator fits ['pitch_m', 'wavelength_m', 'z_m']")):
        CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=0.1, fit=("z",))
    CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=0.1, fit=("z_m",))               # a listed name is accepted
    from optics.cdp import CDPOperator
    assert CDPOperator(m, pitch_m=DX, wavelength_m=LAM, z_m=0.1).method == "fraunhofer"    # the operator's default
    with pytest.raises(OptionError, match=re.escape(
            "method 'fft' is unit-free (A x = fft2(pad(M ⊙ x), norm='ortho')) and takes no pitch_m, wavelength_m, z_m; "
            "drop them, or choose a physical method such as 'fraunhofer'")):  # an SLM it takes, on its own grid
        CDPSystem(m, method="fft", pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, bit_depth=2))
    with pytest.raises(OptionError, match=r"^method 'fft' takes no propagation options; got \['pad'\]$"):
        CDPSystem(m, method="fft", pad=False)
    assert CDPSystem(m, method="fft").propagation_options == {}
    assert CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=0.1).method == "fraunhofer"              # the default
    with pytest.raises(UnitsError, match=r"for method 'fraunhofer', got 0\.0; "):
        CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=0.0)
    assert CDPSystem(m, method="fft").operator.pitch_m is None
    with pytest.raises(UnitsError, match=r"^pitch_m "):
        CDPSystem(m, pitch_m=-DX, wavelength_m=LAM, z_m=0.1)
    with pytest.raises(UnitsError, match=r"^z_m must be finite"):
        CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=float("inf"), method="asm")
    with pytest.raises(UnitsError, match=r"^z_m must be a positive distance in metres for method 'fraunhofer', got -0\.1; "
                                         r"far-field and single-FFT propagation are defined for z > 0$"):
        CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=-0.1)
    CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=-1e-4, method="asm")               # back-propagation is fine
    with pytest.raises(OptionError, match=r"^detector_order='fft' applies to Fourier-plane detectors \(fraunhofer, "
                                          r"fresnel-1fft, fft\); method 'asm' samples a real-space plane"):
        CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=1e-4, method="asm", detector_order="fft")
    # method="auto" is resolved on the detector window with the system's numbers
    auto = CDPSystem(m, pitch_m=DX, wavelength_m=LAM, z_m=1e-4, method="auto")
    assert auto.method == optics.propagation.resolve_method((4, 4), "auto", pitch_m=DX, wavelength_m=LAM, z_m=1e-4)
    with pytest.raises(optics.ShapeError, match=r"^with an SLM the masks must be real phases per SLM pixel \(rad\); got a "
                                                r"complex tensor — pass torch\.angle\(masks\) if the amplitude is 1$"):
        CDPSystem(torch.ones(1, 2, 2, dtype=torch.complex64), pitch_m=DX, wavelength_m=LAM, z_m=0.1,
                  slm=SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, bit_depth=2))
    ints = CDPSystem(torch.zeros(1, 2, 2, dtype=torch.int64), pitch_m=DX, wavelength_m=LAM, z_m=0.1,
                     slm=SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, bit_depth=2))
    assert ints.masks.theta.dtype == torch.float32                                  # integer phases → float32 rad
    assert CDPSystem(torch.zeros(1, 2, 2, dtype=torch.float64), method="fft").modulation().dtype == torch.complex128
    assert CDPSystem(torch.zeros(1, 2, 2, dtype=torch.float16), method="fft").modulation().dtype == torch.complex64


def test_repr_and_fixed_slm_phases():
    """The operator's repr states its geometry (what a log or an error report shows); fixed SLM
    phases give e^{iθ} when called like a mask."""
    s = CDPSystem(torch.zeros(1, 4, 6), pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    assert s.operator.extra_repr() == ("L=1, in_shape=(4, 6), out_shape=(4, 6), method='fraunhofer', "
                                       "detector_order='centered', pitch_m=8e-06, wavelength_m=6.33e-07, z_m=0.1")
    assert CDPSystem(torch.zeros(2, 4, 4), method="fft").operator.extra_repr() == (
        "L=2, in_shape=(4, 4), out_shape=(4, 4), method='fft', detector_order='centered'")
    th = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    ss = CDPSystem(th, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, bit_depth=2))
    assert torch.allclose(ss.masks(), torch.polar(torch.ones_like(th), th))
