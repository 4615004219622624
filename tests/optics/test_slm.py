"""Tests of optics.slm: LUT, quantisation modes, pixel geometry, crosstalk, gradients."""
import math

import numpy as np
import pytest
import torch

from optics.errors import LUTError, NonFiniteError, ShapeError, UnitsError
from optics.slm import SLM, PhaseLUT, PitchRatioError, wrap_phase

TWO_PI = 2 * math.pi


def _theta(shape, lo=0.0, hi=TWO_PI, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# LUT
# ---------------------------------------------------------------------------------------------
def test_linear_lut_levels():
    lut = PhaseLUT.linear(8)
    g = torch.arange(256, dtype=torch.float64)
    # 2π LUT: φ(g) = 2πg/256, so 0 and 2π are not both present (exact float64 arithmetic path)
    assert torch.allclose(lut.levels_rad, g * TWO_PI / 256, atol=0, rtol=1e-15)
    assert lut.bit_depth == 8 and lut.wraps
    lut_pi = PhaseLUT.linear(8, max_phase_rad=math.pi)
    assert float(lut_pi.levels_rad[-1]) == pytest.approx(math.pi, abs=1e-15)
    assert not lut_pi.wraps


def test_tabulated_lut_interpolates_linearly():
    lut = PhaseLUT.tabulated([0, 128, 255], [0.0, 2.56, 5.10])
    lv = lut.levels_rad
    assert lut.bit_depth == 8 and lv.numel() == 256
    # piecewise-linear: 0.02 rad/level up to 128, then (5.10-2.56)/127 rad/level
    assert float(lv[64]) == pytest.approx(1.28, abs=1e-12)
    assert float(lv[200]) == pytest.approx(2.56 + 72 * 2.54 / 127, abs=1e-12)


def test_tabulated_lut_not_monotone_names_gray_level():
    with pytest.raises(LUTError, match=r"not strictly increasing: phase\(gray 2\).*unwrap"):
        PhaseLUT.tabulated([0, 1, 2, 3], [0.0, 1.0, 0.5, 2.0])


def test_tabulated_lut_must_cover_end_levels():
    with pytest.raises(LUTError, match="covers gray levels 0 … 200 but a 8-bit SLM has 0 … 255"):
        PhaseLUT.tabulated([0, 200], [0.0, 6.0], bit_depth=8)


def test_gray_to_phase_and_range_check():
    lut = PhaseLUT.linear(2)
    assert torch.equal(lut.gray_to_phase(torch.tensor([0, 3])),
                       torch.tensor([0.0, 1.5 * math.pi], dtype=torch.float64))
    with pytest.raises(LUTError, match=r"0 … 3"):
        lut.gray_to_phase(torch.tensor([4]))


def test_phase_to_gray_is_nearest_wrap_aware():
    lut = PhaseLUT.linear(3)  # 8 levels, step π/4, circular
    th = _theta((5000,), lo=-10.0, hi=10.0, seed=1)
    g = lut.phase_to_gray(th)
    lv = lut.levels_rad
    brute = wrap_phase(th[:, None] - lv[None, :]).abs().argmin(dim=1)
    assert torch.equal(g, brute)
    # 2π − ε is nearest to gray 0 of a [0, 2π) LUT
    assert int(lut.phase_to_gray(torch.tensor(TWO_PI - 0.01))) == 0


def test_phase_to_gray_plain_nearest_for_short_lut():
    lut = PhaseLUT.linear(2, max_phase_rad=math.pi)  # levels 0, π/3, 2π/3, π: not circular
    g = lut.phase_to_gray(torch.tensor([3.0, 6.0, -0.4, 1.1]))
    assert g.tolist() == [3, 3, 0, 1]


# ---------------------------------------------------------------------------------------------
# construction errors
# ---------------------------------------------------------------------------------------------
def test_non_integer_pitch_ratio_error():
    with pytest.raises(PitchRatioError, match=r"pixel_pitch_m = 8e-06 m is not an integer multiple of "
                                              r"sim_pitch_m = 3e-06 m.*choose sim_pitch_m"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=3e-6)
    assert issubclass(PitchRatioError, ShapeError) and issubclass(PitchRatioError, UnitsError)
    # within 1e-6 relative is accepted
    assert SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6 * (1 + 1e-9)).upsample == 4


def test_bad_parameters_rejected():
    with pytest.raises(UnitsError, match=r"fill_factor = 1.2 is outside \(0, 1\]"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, fill_factor=1.2)
    with pytest.raises(UnitsError, match=r"fill_factor = 0.0 is outside"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, fill_factor=0.0)
    with pytest.raises(UnitsError, match=r"crosstalk_sigma_m = -1e-06 m must be >= 0"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, crosstalk_sigma_m=-1e-6)
    with pytest.raises(ShapeError, match="leaves an active square"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=4e-6, fill_factor=0.05)
    slm = SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6)
    with pytest.raises(NonFiniteError, match="theta contains 1 NaN/inf"):
        slm(torch.tensor([[0.0, float("nan")]]))


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def test_upsample_nearest_and_dtypes():
    slm = SLM(pixel_pitch_m=6e-6, sim_pitch_m=2e-6, quantization="none")
    th = _theta((2, 3, 4), seed=2)
    phi = slm.phase(th)
    assert phi.shape == (2, 9, 12)
    assert torch.equal(phi, th.repeat_interleave(3, -2).repeat_interleave(3, -1))
    assert slm(th).dtype == torch.complex128
    assert slm(th.float()).dtype == torch.complex64


@pytest.mark.parametrize("ff, side, start", [(0.25, 2, 1), (9 / 16, 3, 0), (1.0, 4, 0)])
def test_fill_factor_geometry_exact(ff, side, start):
    # upsample 4: active square of side round(sqrt(ff)·4) at offset (4 − side)//2 in every cell
    slm = SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, fill_factor=ff, dead_phase_rad=-1.0,
              quantization="none")
    th = torch.full((3, 5), 2.0, dtype=torch.float64)
    phi = slm.phase(th)
    dead = phi == -1.0
    assert slm.effective_fill_factor == ff
    assert int(dead.sum()) == round((1 - ff) * phi.numel())  # exact count, ff representable
    cell = (~dead)[:4, :4]
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[start:start + side, start:start + side] = True
    assert torch.equal(cell, expect)
    assert torch.equal(~dead, expect.repeat(3, 5))
    assert bool((phi[~dead] == 2.0).all())


# ---------------------------------------------------------------------------------------------
# quantisation
# ---------------------------------------------------------------------------------------------
def test_exact_quantisation_lands_on_lut_levels():
    lut = PhaseLUT.linear(4)
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=4e-6, lut=lut, quantization="exact")
    th = _theta((50, 50), lo=-3.0, hi=9.0, seed=3)
    q = slm.quantize(th)
    lv = lut.levels_rad
    dist = (q[..., None] - lv).abs().min(-1).values
    assert float(dist.max()) == 0.0  # exactly a level
    # and the nearest one on the circle: |wrap(θ − q)| <= half a step (+ round-off)
    assert float(wrap_phase(th - q).abs().max()) <= math.pi / 16 + 1e-12


def test_ste_forward_exact_gradient_identity():
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=4e-6, bit_depth=3, quantization="ste")
    slm.train()
    th = _theta((4, 4), seed=4).requires_grad_(True)
    q = slm.quantize(th)
    assert torch.equal(q.detach(), slm.lut.quantize(th.detach()))
    w = _theta((4, 4), seed=5)
    (q * w).sum().backward()
    assert torch.equal(th.grad, w)  # identity Jacobian, exactly
    slm.eval()
    assert not slm.quantize(th).requires_grad  # eval: plain exact quantisation


def test_soft_tends_to_exact_and_eval_is_exact():
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=4e-6, bit_depth=3, quantization="soft",
              soft_temperature_rad=0.01)
    th = _theta((1, 400), seed=6)
    # keep away from decision boundaries (midpoints between levels, step π/4) by > 0.1 rad,
    # where the neighbour's weight is < exp(−((π/4 − 2·0.1)² − 0.1² ... )/2T²) ≈ 0
    step = math.pi / 4
    frac = torch.remainder(th, step) / step
    th = th[(frac - 0.5).abs() > 0.13].reshape(1, -1)
    slm.train()
    soft = slm.quantize(th)
    exact = slm.lut.quantize(th)
    # soft may land on φ_0 + 2π where exact gives φ_0: compare modulo 2π
    assert float(wrap_phase(soft - exact).abs().max()) < 1e-10
    slm.eval()
    assert torch.equal(slm.quantize(th), exact)


@pytest.mark.parametrize("bit_depth, temp", [(3, 0.3), (8, 0.05)])  # all-level and windowed sums
def test_soft_path_gradcheck_complex128(bit_depth, temp):
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=2e-6, fill_factor=0.25, dead_phase_rad=0.3,
              crosstalk_sigma_m=1.5e-6, bit_depth=bit_depth, quantization="soft",
              soft_temperature_rad=temp)
    slm.train()
    th = _theta((2, 3, 3), lo=0.5, hi=5.5, seed=7).requires_grad_(True)  # away from the 2π cut
    out = slm(th)
    assert out.dtype == torch.complex128 and out.shape == (2, 6, 6)
    assert torch.autograd.gradcheck(slm, (th,), eps=1e-6, atol=1e-7)


def test_soft_window_matches_full_sum():
    # the ±10T window (8-bit, T=0.05) equals the sum over all 256 levels to < e^{-50}·π
    th = _theta((1, 200), seed=8)
    a = SLM(pixel_pitch_m=4e-6, sim_pitch_m=4e-6, bit_depth=8, quantization="soft", soft_temperature_rad=0.05)
    a.train()
    lv = a.lut.levels_rad
    d = wrap_phase(th[..., None] - lv)
    w = torch.softmax(-(d * d) / (2 * 0.05 ** 2), dim=-1)
    full = th - (w * d).sum(-1)
    assert float(wrap_phase(a.quantize(th) - full).abs().max()) < 1e-12


def test_none_path_gradcheck_complex128():
    slm = SLM(pixel_pitch_m=6e-6, sim_pitch_m=2e-6, fill_factor=0.5, crosstalk_sigma_m=2e-6,
              quantization="none")
    th = _theta((2, 2), seed=9).requires_grad_(True)
    assert torch.autograd.gradcheck(slm, (th,), eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# crosstalk
# ---------------------------------------------------------------------------------------------
def test_crosstalk_preserves_constant_phase():
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=1e-6, crosstalk_sigma_m=3e-6, quantization="none")
    th = torch.full((4, 4), 1.3, dtype=torch.float64)
    phi = slm.phase(th)
    # normalised kernel + replicate padding: constant in, constant out (float64 round-off)
    assert float((phi - 1.3).abs().max()) < 1e-14


def test_crosstalk_step_10_90_width():
    sigma_samples = 6.0
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=1e-6, crosstalk_sigma_m=sigma_samples * 1e-6,
              quantization="none")
    th = torch.zeros(1, 24, dtype=torch.float64)
    th[:, 12:] = 1.0
    prof = slm.phase(th)[0].numpy()  # one row, 96 samples, step between samples 47 and 48
    x = np.arange(prof.size)
    x10 = np.interp(0.1, prof, x)
    x90 = np.interp(0.9, prof, x)
    # Gaussian-blurred step = erf profile: 10–90 % width = 2·1.28155·σ = 2.5631σ. The sampled,
    # 4σ-truncated kernel and linear interpolation between samples cost < 1 %.
    assert (x90 - x10) == pytest.approx(2.5631 * sigma_samples, rel=0.01)
    # symmetric about the edge (x = 47.5)
    assert 0.5 * (x10 + x90) == pytest.approx(47.5, abs=1e-9)


def test_crosstalk_across_wrap_gives_flyback():
    # neighbouring pixels at 0.1 and 2π − 0.1 rad are almost the same modulation (≈ +1), but the
    # phase blur passes through ≈ π at the boundary: a flyback line of modulation ≈ −1.
    slm = SLM(pixel_pitch_m=4e-6, sim_pitch_m=1e-6, crosstalk_sigma_m=2e-6, quantization="none")
    th = torch.tensor([[0.1] * 3 + [TWO_PI - 0.1] * 3], dtype=torch.float64)  # edge at x = 11.5
    m = slm(th)[0]
    # 11.5 samples = 5.75σ from the edge the blur is gone: cos(0.1) = 0.995
    assert float(m[0].real) == pytest.approx(math.cos(0.1), abs=1e-12)
    assert float(m[-1].real) == pytest.approx(math.cos(0.1), abs=1e-12)
    # the two samples either side of the edge average to exactly π by symmetry
    phi = slm.phase(th)[0]
    assert float(phi[11] + phi[12]) / 2 == pytest.approx(math.pi, abs=1e-12)
    assert float(m[11:13].real.max()) < -0.5


def test_float64_blur_matrix_path_equals_the_convolution():
    # the banded-matrix path (float64) and the padded convolution (float32 route) are one operator
    from optics.slm import gaussian_blur

    x = torch.rand(2, 3, 17, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    a = gaussian_blur(x, sig)
    k = torch.nn.functional.pad(x.reshape(-1, 1, 17, 23), (7, 7, 7, 7), mode="replicate")
    from optics.slm import gaussian_kernel1d
    kk = gaussian_kernel1d(1.7, dtype=torch.float64)
    b = torch.nn.functional.conv2d(torch.nn.functional.conv2d(k, kk.view(1, 1, -1, 1)), kk.view(1, 1, 1, -1))
    assert torch.allclose(a, b.reshape(a.shape), rtol=0, atol=1e-13)
    assert torch.allclose(a.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=0.05)  # roughly mean-preserving
    assert torch.autograd.gradcheck(lambda s: gaussian_blur(x[0, 0], s), (sig,), eps=1e-6)
