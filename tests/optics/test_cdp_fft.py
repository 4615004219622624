"""Unit-free CDP operator (method='fft'), detector sample order, intensity(), order check, noise models."""
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from optics.cdp import CDPOperator, CDPSystem, DetectorOrderWarning, check_detector_order
from optics.errors import GeometryError, OpticsError, OptionError, ShapeError
from optics.grid import pad_centered
from optics.noise import PoissonNoise, PrDeepNoise
from optics.sensor import Sensor
from optics.slm import SLM

LAM, DX = 633e-9, 8e-6
PHYS = dict(pitch_m=DX, wavelength_m=LAM, z_m=0.1)


def _rand(shape, seed, dtype=torch.complex128):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _phases(L, n, seed):
    return torch.rand(L, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi


def _image(n):
    """A natural non-negative image in [0, 1] (scikit-image's camera, block-averaged to n × n)."""
    import skimage.data
    im = torch.as_tensor(skimage.data.camera(), dtype=torch.float64) / 255.0
    f = im.shape[0] // n
    return im[: n * f, : n * f].reshape(n, f, n, f).mean(dim=(1, 3))


@pytest.mark.parametrize("n, os", [(8, 1.0), (9, 1.0), (8, 2.0), (9, 1.5)])
@pytest.mark.parametrize("order", ["fft", "centered"])
def test_unit_free_operator_is_the_orthonormal_dft_of_the_masked_object(n, os, order):
    # reference: torch.fft.fft2(pad_centered(M ⊙ x), norm="ortho"), fftshift-ed for the centred
    # order; complex128, so agreement to 1e-13 is round-off (a wrong shift or scale is O(1))
    th = _phases(3, n, 0)
    x = _rand((2, n, n), 1)
    op = CDPOperator(th, method="fft", oversampling=os, detector_order=order)
    m = op.out_shape
    ref = torch.fft.fft2(pad_centered(torch.polar(torch.ones_like(th), th) * x[:, None], m), norm="ortho")
    if order == "centered":
        ref = torch.fft.fftshift(ref, dim=(-2, -1))
    assert torch.allclose(op.A(x), ref, rtol=0, atol=1e-13)
    assert torch.allclose(op.intensity(x), ref.abs() ** 2, rtol=0, atol=1e-12)
    assert op.adjointness_error() <= 1e-12
    assert op.out_pitch_m is None and op.unit_free
    assert op.dc_index == ((0, 0) if order == "fft" else (m[0] // 2, m[1] // 2))


def test_unit_free_normal_operator_is_sum_of_mask_powers():
    # each A_l is an isometry times M_l, so AᴴA = Σ_l |M_l|² (= L for phase masks): Parseval
    n, L = 12, 4
    x = _rand((n, n), 2)
    op = CDPOperator(_phases(L, n, 3), method="fft", oversampling=2.0, detector_order="fft")
    assert float((op.A(x).abs() ** 2).sum()) == pytest.approx(L * float((x.abs() ** 2).sum()), rel=1e-12)
    assert torch.allclose(op.A_adjoint(op.A(x)), L * x, rtol=0, atol=1e-12)
    amp = 0.2 + torch.rand(L, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mod = torch.polar(amp, _phases(L, n, 5))
    op2 = CDPOperator(mod, method="fft")
    assert torch.allclose(op2.A_adjoint(op2.A(x)), (amp ** 2).sum(0) * x, rtol=0, atol=1e-12)
    assert op2.normal_is_diagonal() is True


@pytest.mark.parametrize("method, z", [("fraunhofer", 0.1), ("fresnel-1fft", 0.5)])
@pytest.mark.parametrize("n, os", [(8, 2.0), (9, 1.0)])
def test_fft_order_of_physical_fourier_methods_is_ifftshift_of_centred(method, z, n, os):
    th = _phases(2, n, 6)
    x = _rand((n, n), 7)
    kw = dict(pitch_m=DX, wavelength_m=LAM, z_m=z, method=method, oversampling=os)
    c = CDPOperator(th, **kw)
    f = CDPOperator(th, detector_order="fft", **kw)
    assert torch.allclose(f.A(x), torch.fft.ifftshift(c.A(x), dim=(-2, -1)), rtol=0, atol=1e-12 * float(c.A(x).abs().max()))
    assert f.adjointness_error() <= 1e-12
    B, Bh = f.magnitude_pair()  # the phase-free pair keeps |A x| in the new order
    assert torch.allclose(B(x).abs(), f.A(x).abs(), rtol=1e-10, atol=0)


def test_bad_combinations_raise_with_the_fix():
    th = _phases(2, 8, 0)
    with pytest.raises(OptionError, match="unit-free.*pitch_m"):
        CDPOperator(th, method="fft", pitch_m=DX)
    with pytest.raises(OptionError, match="needs pitch_m, wavelength_m, z_m"):
        CDPOperator(th, method="fraunhofer")
    with pytest.raises(OptionError, match="real-space plane"):
        CDPOperator(th, method="asm", pitch_m=DX, wavelength_m=LAM, z_m=2e-3, detector_order="fft")
    with pytest.raises(OptionError, match="detector_order must be one of"):
        CDPOperator(th, method="fft", detector_order="shifted")
    with pytest.raises(OptionError, match="fit"):
        CDPOperator(th, method="fft", fit=("z_m",))
    with pytest.raises(GeometryError, match="no detector pitch"):
        CDPSystem(th, method="fft", sensor=Sensor(pitch_m=16e-6))
    with pytest.raises(OpticsError, match="not both"):
        CDPSystem(th, method="fft", sensor=Sensor(), noise=PrDeepNoise(9))
    sys = CDPSystem(th, method="fft", sensor=Sensor(mean_photons=100.0, noise="none"))  # one sample per pixel
    assert sys.measure(torch.ones(8, 8)).shape == (2, 8, 8)


@pytest.mark.parametrize("kw", [dict(method="fft"), dict(method="fft", oversampling=2.0),
                                dict(method="fraunhofer", oversampling=2.0, **PHYS)], ids=str)
@pytest.mark.parametrize("order", ["fft", "centered"])
def test_check_detector_order_warns_on_the_other_order_only(kw, order):
    # a natural image: its energy sits at DC; data in the other order put it half a band away
    n = 32
    x = _image(n).to(torch.complex128)
    op = CDPOperator(_phases(4, n, 8), detector_order=order, **kw)
    y = PrDeepNoise(27).sample(op.intensity(x), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = check_detector_order(y, op)
    assert ok.looks_like == order and ok.ratio > 1.3
    other = torch.fft.fftshift(y, dim=(-2, -1)) if order == "fft" else torch.fft.ifftshift(y, dim=(-2, -1))
    with pytest.warns(DetectorOrderWarning, match="detector_order="):
        bad = check_detector_order(other, op)
    assert bad.looks_like != order and bad.ratio < 1 / 1.3
    # a zero-mean object (complex Gaussian) has no DC to locate: undecided, silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_detector_order(op.intensity(_rand((n, n), 9)), op).looks_like is None


def test_the_other_order_is_exactly_a_frequency_shifted_object():
    # why the check needs an object prior: rolled data = the same operator on x ⊙ (−1)^j (even M)
    n = 16
    op = CDPOperator(_phases(3, n, 10), method="fft", detector_order="fft")
    x = _rand((n, n), 11)
    j = torch.arange(n)
    checker = ((-1.0) ** (j[:, None] + j[None, :])).to(torch.complex128)
    rolled = torch.fft.fftshift(op.intensity(x), dim=(-2, -1))
    assert torch.allclose(rolled, op.intensity(x * checker), rtol=1e-12, atol=1e-12)
    with pytest.raises(OptionError, match="real-space"):
        check_detector_order(torch.ones(3, 16, 16), CDPOperator(_phases(3, 16, 0), method="asm", pitch_m=DX,
                                                              wavelength_m=LAM, z_m=2e-3))


def test_system_with_a_noise_model_measures_through_it():
    n = 16
    x = _image(n)
    th = _phases(4, n, 12)
    sys = CDPSystem(th, method="fft", detector_order="fft", noise=PoissonNoise.matching_prdeep(9))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    y = sys.measure(x, generator=g())
    assert torch.equal(y, PoissonNoise.matching_prdeep(9).sample(sys.intensity(x), generator=g()))
    assert torch.equal(sys.measure(x, noise="none"), sys.intensity(x))
    with pytest.raises(OpticsError, match="the model PoissonNoise"):
        sys.measure(x, noise="poisson")
    # κ = (255/9)² photons per unit intensity: the mean count per detector pixel is κ·mean(x²)
    photons = float((y * sys.noise_model.photons_per_unit).mean())
    assert photons == pytest.approx((255 / 9) ** 2 * float((x ** 2).mean()), rel=0.02)
    assert np.isfinite(photons)


def test_gradcheck_unit_free_intensity_wrt_mask_phase_and_object():
    # complex128 finite differences against autograd, both orders (the reordering is in the factors);
    # real masks are phases in rad, so gradcheck perturbs θ itself
    theta = torch.rand(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6.28
    x = _rand((5, 5), 1).requires_grad_(True)
    for order in ("fft", "centered"):
        f = lambda th, xx, o=order: CDPSystem(th, method="fft", oversampling=1.6, detector_order=o).intensity(xx)  # noqa: E731
        assert torch.autograd.gradcheck(f, (theta.clone().requires_grad_(True), x), eps=1e-6, atol=1e-6, fast_mode=True)


# ---- check_detector_order: values and messages (issue 20 mutation run) ------------------------
def _q_ratio(op, y):
    """Q(1)/Q(u_δ) from the docstring's definition, computed here: Q(u) = Σ |A u|² · Σ_batch y,
    u_δ = e^{2πi·sign·(j₀·(M₀//2)/M₀ + j₁·(M₁//2)/M₁)} (sign +1 for an FFT-order operator)."""
    M, n = op.out_shape, op.in_shape
    sign = 1 if op.detector_order == "fft" else -1
    j0 = torch.arange(n[0], dtype=torch.float64)[:, None]
    j1 = torch.arange(n[1], dtype=torch.float64)[None, :]
    ph = 2 * math.pi * sign * (j0 * (M[0] // 2) / M[0] + j1 * (M[1] // 2) / M[1])
    ys = y.reshape((-1,) + tuple(y.shape[-3:])).sum(0)
    q = [float((op.intensity(torch.polar(torch.ones_like(ph), p)) * ys).sum()) for p in (torch.zeros_like(ph), ph)]
    return q[0] / q[1]


@pytest.mark.parametrize("order", ["fft", "centered"])
def test_check_detector_order_ratio_on_odd_non_square_batched_data(order):
    """The ratio is Q(1)/Q(u_δ) exactly as documented, on a 9×12 detector (odd rows, non-square)
    with batched data (3 captures); the verdict names the orders exactly; a CDPSystem is
    accepted. Equal to 1e-9 relative (same sums in another order)."""
    th = torch.rand(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 6.28
    op = CDPOperator(th, method="fft", oversampling=1.5, detector_order=order)
    assert op.out_shape == (9, 12)
    x = _image(48)[:6, :8].to(torch.complex128) + 0.2
    y = torch.stack([op.intensity(x * s) for s in (1.0, 0.7, 1.3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = check_detector_order(y, CDPSystem(th, method="fft", oversampling=1.5, detector_order=order))
    assert r.ratio == pytest.approx(_q_ratio(op, y), rel=1e-9)
    assert r.ratio > 1.3 and r.looks_like == order
    other = "centered" if order == "fft" else "fft"
    swapped = torch.fft.fftshift(y, dim=(-2, -1)) if order == "fft" else torch.fft.ifftshift(y, dim=(-2, -1))
    with pytest.warns(DetectorOrderWarning):
        b = check_detector_order(swapped, op)
    assert b.looks_like == other and b.ratio == pytest.approx(_q_ratio(op, swapped), rel=1e-9)
    # the thresholds are strict: ratio == threshold (or == 1/threshold) is undecided
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_detector_order(y, op, threshold=r.ratio).looks_like is None
        t = 1 / b.ratio
        if 1 / t == b.ratio:                                       # exactly representable round trip
            assert check_detector_order(swapped, op, threshold=t).looks_like is None
    # odd columns too (7×9 at oversampling 1): M//2 ≠ M/2 on both axes
    th2 = torch.rand(2, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 6.28
    op2 = CDPOperator(th2, method="fft", detector_order=order)
    y2 = op2.intensity(_image(48)[:7, :9].to(torch.complex128) + 0.2)
    assert check_detector_order(y2, op2, warn=False).ratio == pytest.approx(_q_ratio(op2, y2), rel=1e-9)


def test_check_detector_order_warning_text_and_location():
    """The warning names both orders, where each puts DC, the correlation factor, the threshold
    and the exact reordering call, and is attributed to the caller (stacklevel 2), not to
    optics/cdp.py (under mutmut a trampoline frame sits between: only "not cdp.py" is portable)."""
    import re
    n = 16
    x = _image(n).to(torch.complex128)
    for order, other, dc, fix in (("fft", "centered", "M//2", "torch.fft.ifftshift(y, dim=(-2, -1))"),
                                  ("centered", "fft", "0", "torch.fft.fftshift(y, dim=(-2, -1))")):
        op = CDPOperator(_phases(2, n, 1), method="fft", detector_order=order)
        y = op.intensity(x)
        swapped = torch.fft.fftshift(y, dim=(-2, -1)) if order == "fft" else torch.fft.ifftshift(y, dim=(-2, -1))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = check_detector_order(swapped, op)
        assert len(w) == 1 and not w[0].filename.replace("\\", "/").endswith("optics/cdp.py")
        if Path(__file__).parents[2].name != "mutants":           # outside mutmut: exactly the caller's file
            assert w[0].filename == __file__
        want = (f"the data look stored in detector order {other!r} (DC at index {dc}), but the operator uses "
                f"detector_order={order!r}: the data correlate {1 / r.ratio:.2f}× more with an object whose zero "
                f"frequency sits where {other!r} puts DC (threshold 1.3); build the operator with "
                f"detector_order={other!r}, or reorder the data with {fix}")
        assert re.fullmatch(re.escape(want), str(w[0].message))


def test_check_detector_order_refusals_and_undecidable_data():
    """Bad inputs are refused naming the problem; data that correlate negatively (e.g. after a
    background subtraction) give (nan, None), silently."""
    op = CDPOperator(_phases(2, 8, 1), method="fft")
    with pytest.raises(OptionError, match=r"^check_detector_order needs a CDPOperator or CDPSystem, got str$"):
        check_detector_order(torch.ones(2, 8, 8), "op")
    asm = CDPOperator(_phases(2, 8, 0), method="asm", pitch_m=DX, wavelength_m=LAM, z_m=1e-3)
    with pytest.raises(OptionError, match=r"^check_detector_order applies to Fourier-plane detectors \(fraunhofer, "
                                          r"fresnel-1fft, fft\); method 'asm' samples a real-space plane, which has no FFT order$"):
        check_detector_order(torch.ones(2, 8, 8), asm)
    with pytest.raises(OptionError, match=r"^threshold must be a number > 1, got 1$"):
        check_detector_order(torch.ones(2, 8, 8), op, threshold=1)
    with pytest.raises(OptionError, match=r"^threshold must be a number > 1, got '2'$"):
        check_detector_order(torch.ones(2, 8, 8), op, threshold="2")
    with pytest.raises(ShapeError, match=r"^y must be real intensities of shape \(\.\.\., 2, 8, 8\); got \(2, 8, 8\) torch\.complex64$"):
        check_detector_order(torch.ones(2, 8, 8, dtype=torch.complex64), op)
    with pytest.raises(ShapeError, match=r"^y must be real intensities of shape \(\.\.\., 2, 6, 8\); got \(2, 8, 9\) torch\.float32$"):
        check_detector_order(torch.ones(2, 8, 9), CDPOperator(torch.zeros(2, 6, 8), method="fft"))
    y = op.intensity(_image(8).to(torch.complex128))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = check_detector_order(-y, op)
    assert math.isnan(r.ratio) and r.looks_like is None and isinstance(r.ratio, float)
    # one correlation positive, the other negative (y = the difference of the two probes'
    # intensities: Q(1) = ‖i₁‖² − ⟨i₁, i₂⟩ > 0 > Q(u_δ)): no ratio either
    fo = CDPOperator(_phases(2, 8, 1), method="fft", detector_order="fft")
    j = torch.arange(8, dtype=torch.float64)
    ph = 2 * math.pi * (j[:, None] * 4 / 8 + j[None, :] * 4 / 8)
    i1 = fo.intensity(torch.ones(8, 8, dtype=torch.complex128))
    i2 = fo.intensity(torch.polar(torch.ones_like(ph), ph))
    assert float((i1 * (i1 - i2)).sum()) > 0 > float((i2 * (i1 - i2)).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = check_detector_order(i1 - i2, fo)
    assert math.isnan(r.ratio) and r.looks_like is None
    # Q(1) exactly 0 (flat masks: |A·1|² is exactly zero off DC; the data sit elsewhere): no ratio
    flat = CDPOperator(torch.zeros(1, 8, 8, dtype=torch.float64), method="fft", detector_order="fft")
    y = torch.zeros(1, 8, 8, dtype=torch.float64)
    y[0, 4, 4] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = check_detector_order(y, flat)
    assert math.isnan(r.ratio) and r.looks_like is None


@pytest.mark.parametrize("upsample", [1, 2])
def test_unit_free_operator_with_an_slm_shows_its_quantised_pixels(upsample):
    """method 'fft' with an SLM (issue 17 §5: an implementable single mask in the standard protocol):
    the SLM keeps its own grid, so A x = fft2(e^{i q(θ)}↑u ⊙ x, ortho) with q the 4 LUT levels and
    ↑u each SLM pixel repeated u × u samples — built here by hand from the LUT, compared to 1e-12
    (complex128 FFTs of 16² samples: rounding only); and Aᴴ is its adjoint (dot-product test, 1e-12)."""
    h = 16 // upsample
    th = _phases(1, h, 21)
    slm = SLM(pixel_pitch_m=upsample * DX, upsample=upsample, bit_depth=2, quantization="exact").eval()
    op = CDPOperator(th, method="fft", detector_order="fft", slm=slm)
    q = slm.lut.quantize(th)
    assert len(torch.unique(torch.remainder(q, 2 * math.pi))) <= 4
    qu = q.repeat_interleave(upsample, dim=-2).repeat_interleave(upsample, dim=-1)
    x = _rand((16, 16), 5)
    want = torch.fft.fft2(torch.polar(torch.ones_like(qu), qu) * x, norm="ortho")
    got = op.A(x)
    assert torch.allclose(got, want.to(got.dtype), rtol=0, atol=1e-12 * float(want.abs().max()))
    z = _rand((1, 16, 16), 6)
    lhs = torch.vdot(op.A(x).reshape(-1), z.reshape(-1))
    rhs = torch.vdot(x.reshape(-1), op.A_adjoint(z).reshape(-1))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
