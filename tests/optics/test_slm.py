"""Tests of optics.slm: LUT, quantisation modes, pixel geometry, crosstalk, gradients."""
import math

import numpy as np
import pytest
import torch

from optics.errors import LUTError, NonFiniteError, OpticsError, ShapeError, UnitsError
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
    g = lut.phase_to_gray(torch.tensor([3.0, 6.0, -0.4, 1.1, 0.2, 0.0]))
    assert g.tolist() == [3, 3, 0, 1, 0, 0]


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


# ---------------------------------------------------------------------------------------------
# values and messages (mutation testing, issue 20): each test checks what a value must be
# ---------------------------------------------------------------------------------------------
def test_integer_pitch_ratio_values_and_message():
    from optics.slm import integer_pitch_ratio

    assert integer_pitch_ratio("a", 8e-6, "b", 2e-6) == 4
    assert integer_pitch_ratio("a", 5e-6, "b", 5e-6) == 1  # ratio 1 is an integer >= 1
    # 5e-7 relative off an integer is inside the default 1e-6 (tolerance relative to the ratio)
    assert integer_pitch_ratio("a", 8e-6 * (1 + 5e-7), "b", 2e-6) == 4
    with pytest.raises(PitchRatioError) as e:
        integer_pitch_ratio("a", 8e-6 * (1 + 3e-6), "b", 2e-6)
    assert str(e.value).endswith("(ratio 4.000012, allowed deviation 1e-06 relative)")  # no fix: no "; "
    assert integer_pitch_ratio("a", 8e-6 * (1 + 3e-6), "b", 2e-6, rel_tol=1e-5) == 4
    # a coarse pitch finer than the fine one: ratio 1/3 rounds to 0, which is no ratio
    with pytest.raises(PitchRatioError, match=r"^a = 1e-06 m is not an integer multiple of b = 3e-06 m "
                                              r"\(ratio 0.333333333, allowed deviation 1e-06 relative\); fix it$"):
        integer_pitch_ratio("a", 1e-6, "b", 3e-6, fix="fix it")
    with pytest.raises(UnitsError, match="^b must be a finite positive number in m, got -1.0"):
        integer_pitch_ratio("a", 1e-6, "b", -1.0)
    with pytest.raises(UnitsError, match="^a must be a finite positive number in m, got -1.0"):
        integer_pitch_ratio("a", -1.0, "b", 1e-6)


def test_wrap_phase_values():
    x = torch.tensor([-math.pi, math.pi, 0.0, 3.0, 4.0, -4.0, 3 * TWO_PI + 1.0], dtype=torch.float64)
    want = torch.tensor([-math.pi, -math.pi, 0.0, 3.0, 4.0 - TWO_PI, TWO_PI - 4.0, 1.0], dtype=torch.float64)
    # [-π, π): π itself wraps to −π; float64 round-off of the 2π multiples only
    assert torch.allclose(wrap_phase(x), want, rtol=0, atol=1e-14)


def test_bit_depth_checks():
    for bad in (True, 0, 17, 3.0, "8"):
        with pytest.raises(LUTError, match=r"^bit_depth must be an int in 1 … 16 \(SLMs are 8–12 bit\), got "
                                           + repr(bad).replace("(", r"\(") + "$"):
            PhaseLUT.linear(bad)
    assert PhaseLUT.linear(np.int64(1)).levels_rad.tolist() == [0.0, math.pi]  # 1 bit: 0 and π
    assert PhaseLUT.linear(16).n_levels == 65536 and PhaseLUT.linear(16).bit_depth == 16


def test_lut_constructor_checks_and_storage():
    for lv in ([0.0, 1.0, 2.0], [0.0]):
        with pytest.raises(LUTError, match=rf"^a LUT needs 2\^b phase levels \(one per gray level\), got {len(lv)}; "
                                           r"use PhaseLUT.tabulated\(gray, phase_rad\)"):
            PhaseLUT(lv)
    with pytest.raises(LUTError, match=r"^LUT phase at gray level 1 is nan; every level must be finite$"):
        PhaseLUT([0.0, float("nan"), 2.0, 3.0])
    with pytest.raises(LUTError, match=r"^LUT phase at gray level 3 is inf"):
        PhaseLUT([0.0, 1.0, 2.0, float("inf")])
    with pytest.raises(LUTError, match=r"^LUT is not strictly increasing: phase\(gray 2\) = 1 rad <= "
                                       r"phase\(gray 1\) = 1 rad; unwrap the measured phase \(numpy.unwrap\), "
                                       r"drop the gray levels past the phase maximum, or re-measure$"):
        PhaseLUT([0.0, 1.0, 1.0, 2.0])  # equal neighbours are not increasing
    src = torch.tensor([0.0, 1.0, 2.0, 3.0], requires_grad=True)
    lut = PhaseLUT(src)
    assert lut.bit_depth == 2 and lut.levels_rad.dtype == torch.float64 and not lut.levels_rad.requires_grad
    assert "levels_rad" in dict(lut.named_buffers()) and not list(lut.parameters())
    learn = PhaseLUT(src, learnable=True)
    assert isinstance(learn.levels_rad, torch.nn.Parameter) and learn.levels_rad.requires_grad
    assert learn.levels_rad.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert repr(PhaseLUT.linear(2)) == "PhaseLUT(bit_depth=2, phase 0 … 4.712 rad, wraps=True)"


def test_lut_wraps_threshold():
    # N levels spaced a: circular when span·N/(N−1) = N·a >= 2π(1 − 1e-6)
    def lut(a):
        return PhaseLUT(torch.arange(4, dtype=torch.float64) * a)
    assert lut(TWO_PI / 4).wraps
    assert lut(TWO_PI / 4 * (1 - 0.5e-6)).wraps
    assert not lut(TWO_PI / 4 * (1 - 2e-6)).wraps
    assert not lut(TWO_PI / 8).wraps
    # exactly on the threshold (2 levels: N·span/(N − 1) = 2·span, exact in float64) is circular
    edge = TWO_PI * (1.0 - 1e-6)
    assert PhaseLUT([0.0, edge / 2]).wraps and not PhaseLUT([0.0, np.nextafter(edge / 2, 0)]).wraps
    # the span is last − first: 2 … 3.5 spans 1.5 rad (not circular) wherever it starts
    assert not PhaseLUT([2.0, 2.5, 3.0, 3.5]).wraps


def test_linear_lut_with_other_ranges():
    assert torch.allclose(PhaseLUT.linear(2, 6.0).levels_rad, torch.tensor([0.0, 2.0, 4.0, 6.0], dtype=torch.float64),
                          rtol=0, atol=1e-15)  # not 2π: the top gray level reaches max_phase_rad
    off = TWO_PI * (1 + 1e-11)  # beyond the 1e-12 relative match to 2π: top level = max_phase_rad
    assert float(PhaseLUT.linear(2, off).levels_rad[-1]) == pytest.approx(off, rel=1e-15)
    with pytest.raises(UnitsError, match="max_phase_rad must be a finite positive number in rad, got -1.0"):
        PhaseLUT.linear(8, -1.0)


def test_tabulated_lut_checks():
    with pytest.raises(LUTError, match=r"^gray and phase_rad must be 1-D arrays of equal length >= 2, got shapes "
                                       r"\(2,\) and \(3,\)$"):
        PhaseLUT.tabulated([0, 1], [0.0, 1.0, 2.0])
    for g, p in (([0], [0.0]), ([[0, 1]], [[0.0, 1.0]]), ([0, 1], [[0.0, 1.0]])):
        with pytest.raises(LUTError, match="1-D arrays of equal length >= 2"):
            PhaseLUT.tabulated(g, p)
    with pytest.raises(LUTError, match=r"^phase_rad at gray level 5 is nan; every phase must be finite$"):
        PhaseLUT.tabulated([0, 5, 7], [0.0, float("nan"), 1.0])
    for g in ([0, 1.5, 3], [-1, 0, 3], [0, float("inf"), 3]):
        with pytest.raises(LUTError, match=r"^gray levels must be non-negative integers, got \["):
            PhaseLUT.tabulated(g, [0.0, 1.0, 2.0])
    with pytest.raises(LUTError, match=r"^gray level 2 appears twice; give one phase per gray level$"):
        PhaseLUT.tabulated([0, 2, 2, 3], [0.0, 1.0, 1.5, 2.0])
    with pytest.raises(LUTError, match=r"^tabulated LUT covers gray levels 1 … 3 but a 2-bit SLM has 0 … 3; "
                                       r"measure \(or extrapolate\) both end levels, or set bit_depth$"):
        PhaseLUT.tabulated([1, 3], [0.0, 1.0])
    with pytest.raises(LUTError, match="bit_depth must be an int"):
        PhaseLUT.tabulated([0, 1], [0.0, 1.0], bit_depth=0)
    with pytest.raises(LUTError, match=r"^tabulated LUT covers gray levels 1 … 3 but a 3-bit SLM has 0 … 7"):
        PhaseLUT.tabulated([2, 1, 3], [0.5, 0.0, 1.0], bit_depth=3)


def test_tabulated_lut_values():
    # unsorted input is sorted by gray level, phases follow their gray level
    lut = PhaseLUT.tabulated([3, 0, 1, 2], [3.0, 0.0, 1.0, 2.5])
    assert lut.levels_rad.tolist() == [0.0, 1.0, 2.5, 3.0] and lut.bit_depth == 2
    # the smallest bit depth holding the top gray level: 7 → 3 bits, 1 → 1 bit
    lut = PhaseLUT.tabulated(np.array([0.0, 7.0]), [0.0, 7.0])  # integral floats are gray levels
    assert lut.bit_depth == 3 and lut.levels_rad.tolist() == [0.0, 1, 2, 3, 4, 5, 6, 7]
    assert PhaseLUT.tabulated([0, 1], [0.0, 2.0]).bit_depth == 1
    # a given bit depth: linear interpolation between the given points
    lut = PhaseLUT.tabulated([0, 2, 3], [0.0, 1.0, 4.0], bit_depth=2)
    assert lut.levels_rad.tolist() == [0.0, 0.5, 1.0, 4.0]


def test_lut_accepts_any_real_numeric_dtype():
    # integers, float32 and extended precision (numpy longdouble, which torch cannot hold) all give the
    # same float64 table
    want = [0.0, 1.0, 2.0, 3.0]
    for lv in (np.arange(4), np.arange(4, dtype=np.float32), np.arange(4, dtype=np.longdouble)):
        assert PhaseLUT(lv).levels_rad.tolist() == want
        assert PhaseLUT.tabulated([0, 3], lv[[0, 3]]).levels_rad.tolist() == want


def test_min_step_rad_includes_the_wrap_gap():
    assert PhaseLUT.linear(2).min_step_rad == pytest.approx(math.pi / 2, rel=1e-15)
    # not circular: smallest neighbour gap (0.1), no wrap gap
    lut = PhaseLUT([0.0, 0.1, 0.5, 0.6])
    assert not lut.wraps and lut.min_step_rad == pytest.approx(0.1, rel=1e-12)
    # circular, last level past 2π: on the circle 7 − 2π = 0.717 lies between 0 and 2
    lut = PhaseLUT([0.0, 2.0, 4.0, 7.0])
    assert lut.wraps and lut.min_step_rad == pytest.approx(7.0 - TWO_PI, rel=1e-12)
    # circular, the wrap gap 2π − 6.2 is the smallest
    assert PhaseLUT([0.0, 2.0, 4.0, 6.2]).min_step_rad == pytest.approx(TWO_PI - 6.2, rel=1e-12)


def test_gray_to_phase_inputs():
    lut = PhaseLUT.linear(2)
    assert lut(torch.tensor([0.0, 3.0])).tolist() == [0.0, 1.5 * math.pi]  # integral floats (forward)
    assert lut.gray_to_phase(torch.tensor([1 + 0j])).tolist() == [0.5 * math.pi]  # real-integral complex
    for bad in (torch.tensor([0.5]), torch.tensor([1 + 0.5j])):
        with pytest.raises(LUTError, match=r"^gray levels must be integers; round them or use phase_to_gray$"):
            lut.gray_to_phase(bad)
    with pytest.raises(LUTError, match=r"^gray levels must lie in 0 … 3 for a 2-bit LUT, got -1 … 2; clamp them or "
                                       r"use a LUT of higher bit depth$"):
        lut.gray_to_phase([-1, 2])
    out = lut.gray_to_phase([[1, 2]], dtype=torch.float32)
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    assert lut.gray_to_phase(torch.zeros(0, dtype=torch.int64)).numel() == 0
    lut.gray_to_phase(3)  # the top level is in range
    # gray maps read from 8-bit bitmaps are uint8: indices, not a boolean mask
    assert lut.gray_to_phase(torch.tensor([1, 3], dtype=torch.uint8)).tolist() == [0.5 * math.pi, 1.5 * math.pi]


def test_reduce_moves_into_the_gray0_period():
    lut = PhaseLUT([1.0, 2.0, 3.0, 4.0])
    got = lut.reduce(torch.tensor([0.5, 1.0, 7.5, 1.0 + TWO_PI], dtype=torch.float64))
    assert torch.allclose(got, torch.tensor([0.5 + TWO_PI, 1.0, 7.5 - TWO_PI, 1.0], dtype=torch.float64),
                          rtol=0, atol=1e-14)


def test_phase_to_gray_ties_overrides_and_errors():
    lut = PhaseLUT.linear(2)  # 0, π/2, π, 3π/2 (exact in float64)
    # π/4 is exactly halfway between gray 0 and 1 (powers of two of π): the lower one wins
    # (and a phase exactly on the gray-0 level is gray 0, not the circle's other end)
    th = torch.tensor([0.0, math.pi / 4, 3 * math.pi / 4, 1.5 * math.pi], dtype=torch.float64)
    assert lut.phase_to_gray(th).tolist() == [0, 0, 1, 3]
    # plain distance on request: 2π − 0.01 is nearest to gray 3; wrap-aware (default) to gray 0
    assert int(lut.phase_to_gray(TWO_PI - 0.01, wrap=False)) == 3
    assert int(lut.phase_to_gray(TWO_PI - 0.01)) == 0
    # wrap-aware distance on request for a non-circular LUT (0, π/3, 2π/3, π): 6.0 is 0.28 from 2π ≡ gray 0
    short = PhaseLUT.linear(2, max_phase_rad=math.pi)
    assert int(short.phase_to_gray(6.0, wrap=True)) == 0 and int(short.phase_to_gray(6.0)) == 3
    # a circular LUT whose top level lies past 2π: on the circle the order is 0, 7 − 2π, 2, 4
    lut = PhaseLUT([0.0, 2.0, 4.0, 7.0])
    th = torch.tensor([[0.7, 1.3, 1.5, 6.2, -0.05, 5.1, 0.3]], dtype=torch.float64)
    assert lut.phase_to_gray(th).tolist() == [[3, 3, 1, 0, 0, 2, 0]]
    # the same LUT turned by 1 rad (gray-0 phase 1): the same grays for the phases turned alike
    turned = PhaseLUT([1.0, 3.0, 5.0, 8.0])
    assert turned.phase_to_gray(th + 1.0).tolist() == [[3, 3, 1, 0, 0, 2, 0]]
    assert turned.min_step_rad == pytest.approx(7.0 - TWO_PI, rel=1e-12)
    # float32 phases are searched in float64: −π/256 in float32 lies just below the gray-255/gray-0 midpoint
    # 2π − π/256 once wrapped in float64 (wrapped in float32 it would land above it, on gray 0)
    assert int(PhaseLUT.linear(8).phase_to_gray(torch.tensor(-math.pi / 256, dtype=torch.float32))) == 255
    with pytest.raises(LUTError, match=r"^phase_to_gray expects real phases in radians, got a complex tensor$"):
        lut.phase_to_gray(torch.tensor([1j]))
    with pytest.raises(NonFiniteError, match="theta contains 1 NaN"):
        lut.phase_to_gray(torch.tensor([float("inf")]))


def test_lut_quantize_dtype_and_learnable_gradient():
    lut = PhaseLUT(PhaseLUT.linear(2).levels_rad, learnable=True)
    th = torch.tensor([0.1, 1.5, 1.6, 3.0, 6.2])  # grays 0, 1, 1, 2, 0
    q = lut.quantize(th)
    assert q.dtype == torch.float32
    assert torch.allclose(q, torch.tensor([0.0, math.pi / 2, math.pi / 2, math.pi, 0.0]), rtol=0, atol=1e-7)
    assert lut.quantize(torch.tensor([2, 3])).dtype == torch.float32  # integer phases: float32 levels
    assert lut.quantize(th.double()).dtype == torch.float64
    # plain distance on request: 2π − 0.01 displays the top level 3π/2, not gray 0
    assert float(lut.quantize(torch.tensor(TWO_PI - 0.01), wrap=False).detach()) == pytest.approx(1.5 * math.pi, abs=1e-6)
    q.sum().backward()
    # the gradient of the sum reaches each level once per pixel that displays it
    assert lut.levels_rad.grad.tolist() == [2.0, 2.0, 1.0, 0.0]


def test_gaussian_kernel_values_and_radius():
    from optics.slm import gaussian_kernel1d

    k = gaussian_kernel1d(1.0)
    j = torch.arange(-4, 5, dtype=torch.float64)
    want = torch.exp(-0.5 * j ** 2)
    assert k.dtype == torch.float64 and torch.allclose(k, want / want.sum(), rtol=1e-15, atol=0)
    # radius ceil(truncate·σ), at least 1
    assert gaussian_kernel1d(0.2).numel() == 3 and gaussian_kernel1d(0.3).numel() == 5
    assert gaussian_kernel1d(1.5, truncate=2.0).numel() == 7
    k32 = gaussian_kernel1d(torch.tensor(0.5, dtype=torch.float64), dtype=torch.float32)
    j = torch.arange(-2, 3, dtype=torch.float64)
    want = torch.exp(-2.0 * j ** 2)
    assert k32.dtype == torch.float32 and torch.allclose(k32.double(), want / want.sum(), rtol=1e-6, atol=0)


def test_blur_matrix_is_replicate_padded_convolution():
    from optics.slm import _blur_matrix

    a, b, c = 0.25, 0.5, 0.125
    T = _blur_matrix(4, torch.tensor([a, b, c], dtype=torch.float64), 1)
    want = torch.tensor([[a + b, c, 0, 0], [a, b, c, 0], [0, a, b, c], [0, 0, a, b + c]], dtype=torch.float64)
    assert torch.equal(T, want)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-15), (torch.float32, 1e-7)])
def test_gaussian_blur_of_a_delta_and_an_edge(dtype, tol):
    from optics.slm import gaussian_blur, gaussian_kernel1d

    k = gaussian_kernel1d(1.0)  # radius 4
    x = torch.zeros(2, 9, 11, dtype=dtype)
    x[:, 4, 5] = 1.0
    y = gaussian_blur(x, 1.0)
    want = torch.zeros(9, 11, dtype=torch.float64)
    want[:, 1:10] = torch.outer(k, k)  # the separable kernel centred on the delta
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.allclose(y.double(), want.expand(2, 9, 11), rtol=0, atol=tol)
    # replicate padding: a column of ones at the left edge keeps k_0 + … + k_4 of itself there
    e = torch.zeros(3, 9, dtype=dtype)
    e[:, 0] = 1.0
    row = gaussian_blur(e, 1.0)[1].double()
    assert float(row[0]) == pytest.approx(float(k[:5].sum()), abs=tol)
    assert float(row[3]) == pytest.approx(float(k[:2].sum()), abs=tol)  # sample 3 sees j − 3 ∈ {−4, −3} (+ edge)


def test_gaussian_blur_zero_sigma_and_wide_input():
    from optics.slm import gaussian_blur

    x = torch.rand(3, 4, dtype=torch.float64)
    assert gaussian_blur(x, 0.0) is x and gaussian_blur(x, -1.0) is x
    # wider than 2048 samples: the float64 convolution route, same operator (here a constant row)
    w = torch.full((1, 2049), 0.7, dtype=torch.float64)
    w[0, 1000] = 1.7
    y = gaussian_blur(w, 0.5)
    from optics.slm import gaussian_kernel1d
    k = gaussian_kernel1d(0.5)  # radius 2; the column blur of a single row is the identity
    assert float(y[0, 999]) == pytest.approx(0.7 + float(k[1]), abs=1e-14)
    assert float(y[0, 1000]) == pytest.approx(0.7 + float(k[2]), abs=1e-14)
    assert float(y[0, 0]) == pytest.approx(0.7, abs=1e-14)


def test_slm_constructor_messages():
    with pytest.raises(OpticsError, match=r"^SLM cannot fit \['gain'\]; it fits 'crosstalk_sigma_m', "
                                          r"'dead_phase_rad', 'lut'$"):
        SLM(pixel_pitch_m=8e-6, fit=("gain", "lut"))
    with pytest.raises(PitchRatioError, match=r"^upsample = 2 disagrees with pixel_pitch_m/sim_pitch_m = 4; "
                                              r"give one of them$"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, upsample=2)
    assert SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, upsample=4).upsample == 4
    with pytest.raises(PitchRatioError, match=r"choose sim_pitch_m = pixel_pitch_m / n for an integer n "
                                              r"\(e.g. 2.66667e-06 m\)$"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=3e-6)
    with pytest.raises(PitchRatioError, match=r"\(e.g. 1e-06 m\)$"):  # n rounds to 0: suggest n = 1
        SLM(pixel_pitch_m=1e-6, sim_pitch_m=3e-6)
    with pytest.raises(UnitsError, match="^sim_pitch_m must be a finite positive number in m"):
        SLM(pixel_pitch_m=8e-6, sim_pitch_m=0.0)
    with pytest.raises(UnitsError, match="^pixel_pitch_m = 8.0 m is over 10 cm"):
        SLM(pixel_pitch_m=8.0)
    for bad in (True, 0, 2.0, -1):
        with pytest.raises(ShapeError, match=r"^upsample must be an int >= 1 \(simulation samples per SLM pixel\), "
                                             rf"got {bad!r}$"):
            SLM(pixel_pitch_m=8e-6, upsample=bad)
    with pytest.raises(UnitsError, match=r"^fill_factor must be finite \(in area fraction\), got nan"):
        SLM(pixel_pitch_m=8e-6, fill_factor=float("nan"))
    with pytest.raises(UnitsError, match=r"\(a 93 % fill factor is 0.93\)$"):
        SLM(pixel_pitch_m=8e-6, fill_factor=93.0)
    with pytest.raises(ShapeError, match=r"^fill_factor = 0.05 with upsample = 2 leaves an active square of "
                                         r"round\(sqrt\(0.05\)·2\) = 0 samples; refine the simulation grid "
                                         r"\(smaller sim_pitch_m\) or raise fill_factor$"):
        SLM(pixel_pitch_m=8e-6, upsample=2, fill_factor=0.05)
    with pytest.raises(UnitsError, match=r"^dead_phase_rad must be finite \(in rad\)"):
        SLM(pixel_pitch_m=8e-6, dead_phase_rad=float("inf"))
    with pytest.raises(UnitsError, match=r"^crosstalk_sigma_m must be finite \(in m\)"):
        SLM(pixel_pitch_m=8e-6, crosstalk_sigma_m=float("nan"))
    with pytest.raises(UnitsError, match=r"\(0 disables crosstalk\); it is the std of the fringing-field blur, "
                                         r"typically 0.2–1 pixel pitch$"):
        SLM(pixel_pitch_m=8e-6, crosstalk_sigma_m=-1e-7)
    with pytest.raises(LUTError, match=r"^lut must be a PhaseLUT, got list; use PhaseLUT.linear/tabulated$"):
        SLM(pixel_pitch_m=8e-6, lut=[0.0, 1.0])
    with pytest.raises(OpticsError, match=r"^quantization must be one of \('ste', 'soft', 'exact', 'none'\), "
                                          r"got 'round'$"):
        SLM(pixel_pitch_m=8e-6, quantization="round")
    with pytest.raises(UnitsError, match="soft_temperature_rad must be a finite positive number in rad"):
        SLM(pixel_pitch_m=8e-6, soft_temperature_rad=0.0)


def test_slm_defaults_buffers_and_fit_parameters():
    slm = SLM(pixel_pitch_m=8e-6)
    assert slm.upsample == 1 and slm.sim_pitch_m == 8e-6 and slm.bit_depth == 8
    assert float(slm.dead_phase_rad) == 0.0 and float(slm.crosstalk_sigma_m) == 0.0
    assert slm.quantization == "ste" and slm.soft_temperature_rad == 0.1 and slm.fill_factor == 1.0
    assert slm.lut.levels_rad.tolist() == PhaseLUT.linear(8).levels_rad.tolist()
    s3 = SLM(pixel_pitch_m=9e-6, upsample=np.int64(3), crosstalk_sigma_m=0.0, dead_phase_rad=0.5, bit_depth=4)
    assert s3.upsample == 3 and s3.sim_pitch_m == pytest.approx(3e-6, rel=1e-15) and s3.bit_depth == 4
    bufs = dict(s3.named_buffers())
    assert bufs["dead_phase_rad"].dtype == torch.float64 and float(bufs["dead_phase_rad"]) == 0.5
    assert float(bufs["crosstalk_sigma_m"]) == 0.0 and not list(s3.parameters())
    fit = SLM(pixel_pitch_m=8e-6, sim_pitch_m=2e-6, crosstalk_sigma_m=3e-6, dead_phase_rad=0.25,
              fit=("crosstalk_sigma_m", "dead_phase_rad", "lut"))
    params = dict(fit.named_parameters())
    assert set(params) == {"crosstalk_sigma_m", "dead_phase_rad", "lut.levels_rad"}
    assert float(params["dead_phase_rad"].detach()) == 0.25 and params["crosstalk_sigma_m"].dtype == torch.float64
    assert float(fit.crosstalk_sigma_samples.detach()) == pytest.approx(1.5, rel=1e-12)  # σ / sim pitch
    learn = PhaseLUT(PhaseLUT.linear(3).levels_rad, learnable=True)
    assert SLM(pixel_pitch_m=8e-6, lut=learn, fit=("lut",)).lut is learn  # already learnable: kept
    assert SLM(pixel_pitch_m=8e-6, lut=learn).bit_depth == 3  # the LUT's depth, not bit_depth=8


def test_fill_factor_warning_and_odd_upsample_cell(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="optics.slm"):
        SLM(pixel_pitch_m=8e-6, upsample=4, fill_factor=0.55)  # 3²/4² = 0.5625: within 0.02, quiet
        SLM(pixel_pitch_m=8e-6, upsample=5, fill_factor=0.02)  # 1²/5² = 0.04: exactly 0.02 off (float64), quiet
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="optics.slm"):
        SLM(pixel_pitch_m=8e-6, upsample=4, fill_factor=0.5)  # 0.5625 is 0.0625 off: warned
    assert [r.getMessage() for r in caplog.records] == [
        "SLM fill_factor 0.5 is represented as 0.5625 (active square 3 of 4 samples); refine sim_pitch_m for a "
        "closer match"]
    # upsample 5, side round(0.4·5) = 2 at offset (5 − 2)//2 = 1
    slm = SLM(pixel_pitch_m=10e-6, upsample=5, fill_factor=0.16, quantization="none")
    assert slm.effective_fill_factor == pytest.approx(0.16, rel=1e-15)
    cell = torch.zeros(5, 5, dtype=torch.bool)
    cell[1:3, 1:3] = True
    assert torch.equal(slm.active_mask(2, 3), cell.repeat(2, 3))
    assert "active_cell" not in slm.state_dict()


def test_bind_checks_the_simulation_pitch():
    from optics.errors import GeometryError

    slm = SLM(pixel_pitch_m=8e-6, upsample=4)
    assert slm.bind(2e-6) is slm and slm.bind(2e-6 * (1 + 5e-7)) is slm
    with pytest.raises(GeometryError, match=r"^the SLM simulates its 8e-06 m pixels on a 2e-06 m grid \(upsample 4\) "
                                            r"but the system's simulation pitch is 4e-06 m; build the SLM with "
                                            r"upsample = pixel_pitch_m / pitch_m = 2 \(an integer\) and no "
                                            r"sim_pitch_m, or change the system's pitch_m$"):
        slm.bind(4e-6)
    with pytest.raises(GeometryError):
        slm.bind(2e-6 * (1 + 3e-6))
    with pytest.raises(UnitsError, match="sim_pitch_m must be a finite positive number"):
        slm.bind(-2e-6)


def test_slm_theta_checks_and_modulation():
    slm = SLM(pixel_pitch_m=8e-6, upsample=2, quantization="none")
    with pytest.raises(OpticsError, match=r"^theta must be real, got torch.complex64; SLM phases are radians; "
                                          r"pass torch.angle\(mask\)$"):
        slm(torch.ones(2, 2, dtype=torch.complex64))
    th = torch.tensor([[0.3, -2.0], [4.0, 1.0]], dtype=torch.float64)
    m = slm(th)
    assert torch.allclose(m, torch.polar(torch.ones(4, 4, dtype=torch.float64),
                                         th.repeat_interleave(2, -2).repeat_interleave(2, -1)), rtol=0, atol=1e-15)
    assert slm(torch.tensor([[1, 2]])).dtype == torch.complex64  # integer phases: float32 → complex64
    assert slm.quantize(th) is th  # "none": displayed as given, not even wrapped


def test_quantize_modes_in_training_and_eval():
    th = torch.tensor([[0.1, 0.8, 2.0, 6.2]], dtype=torch.float64)
    lut = PhaseLUT.linear(2)
    exact = lut.quantize(th)
    for mode in ("exact", "ste", "soft"):
        slm = SLM(pixel_pitch_m=8e-6, lut=lut, quantization=mode, soft_temperature_rad=0.5)
        slm.eval()
        assert torch.equal(slm.quantize(th), exact), mode
    slm = SLM(pixel_pitch_m=8e-6, lut=lut, quantization="exact", soft_temperature_rad=0.5).train()
    assert torch.equal(slm.quantize(th), exact)  # exact in training mode too
    # "soft" in training at T = 0.5 rad is visibly not the exact level (0.8 is 0.03 from gray-0/1's midpoint)
    soft = SLM(pixel_pitch_m=8e-6, lut=lut, quantization="soft", soft_temperature_rad=0.5).train().quantize(th)
    assert float((soft - exact).abs().max()) > 0.1


def _soft_reference(th, levels, T, wrap):
    d = th[..., None] - levels
    if wrap:
        d = wrap_phase(d)
    w = torch.softmax(-(d * d) / (2 * T * T), dim=-1)
    return th - (w * d).sum(-1)


@pytest.mark.parametrize("bits, T", [(3, 0.2), (8, 0.008)])  # all levels summed / the ±10T window
def test_soft_quantisation_of_a_non_circular_lut(bits, T):
    # q = Σ w_k φ_k over the levels of a LUT spanning [0, π] (no wrap), including phases past both ends,
    # where the window reaches off the table (those entries must carry no weight)
    lut = PhaseLUT.linear(bits, max_phase_rad=math.pi)
    assert not lut.wraps
    step = math.pi / (2 ** bits - 1)
    th = torch.tensor([[-0.5, 0.0, 0.3 * step, 0.5 * step, 1.0, math.pi - 0.4 * step, math.pi, 3.6]],
                      dtype=torch.float64)
    slm = SLM(pixel_pitch_m=8e-6, lut=lut, quantization="soft", soft_temperature_rad=T).train()
    got = slm.quantize(th)
    want = _soft_reference(th, lut.levels_rad, T, wrap=False)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)  # window truncation < e^{-50}
    # at T ≈ step the surrogate is far from the nearest level near the ends (a check on the reference)
    assert float((want - lut.quantize(th)).abs().max()) > 0.01 * step


@pytest.mark.parametrize("bits, T", [(8, 0.004), (8, 0.02), (3, 0.3), (8, 4.0)])
def test_soft_window_of_a_circular_lut_near_the_cut(bits, T):
    # 2π LUT, phases straddling φ_0 = 0 ≡ 2π (the window wraps around the table); 3 bits at T = 0.3 sums
    # all levels; T = 4 rad (a very hot surrogate) sums all 256 levels, every one of them weighs
    lut = PhaseLUT.linear(bits)
    step = TWO_PI / 2 ** bits
    th = torch.tensor([[-0.4 * step, 0.2 * step, 0.5 * step, TWO_PI - 0.7 * step, 3.0, -7.0]], dtype=torch.float64)
    slm = SLM(pixel_pitch_m=8e-6, lut=lut, quantization="soft", soft_temperature_rad=T).train()
    got = slm.quantize(th)
    want = _soft_reference(lut.reduce(th), lut.levels_rad, T, wrap=True)
    assert float(wrap_phase(got - want).abs().max()) < 1e-12


@pytest.mark.parametrize("bits, T", [(3, 0.3), (8, 0.02)])
def test_soft_quantisation_keeps_float32(bits, T):
    lut = PhaseLUT.linear(bits)
    th = torch.tensor([[0.1, 1.0, 3.3, 6.2]], dtype=torch.float32)
    got = SLM(pixel_pitch_m=8e-6, lut=lut, quantization="soft", soft_temperature_rad=T).train().quantize(th)
    assert got.dtype == torch.float32
    want = _soft_reference(lut.reduce(th.double()), lut.levels_rad, T, wrap=True)
    assert float(wrap_phase(got.double() - want).abs().max()) < 1e-5  # float32 arithmetic


def test_dead_phase_dtype_and_extra_repr():
    slm = SLM(pixel_pitch_m=8e-6, upsample=2, fill_factor=0.25, dead_phase_rad=-0.5, crosstalk_sigma_m=1e-6,
              quantization="none")
    assert slm.extra_repr() == ("upsample=2, fill_factor=0.25 (effective 0.25), crosstalk_sigma_m=1e-06, "
                                "quantization='none', lut=PhaseLUT(bit_depth=8, phase 0 … 6.259 rad, wraps=True)")
    nob = SLM(pixel_pitch_m=8e-6, upsample=2, fill_factor=0.25, dead_phase_rad=-0.5, quantization="none")
    phi = nob.phase(torch.tensor([[1.0]]))
    assert phi.dtype == torch.float32
    assert phi.tolist() == [[1.0, -0.5], [-0.5, -0.5]]  # side round(0.5·2) = 1 at offset 0
    # crosstalk σ = 1 µm on the 4 µm grid = 0.25 sample (radius 1): the kernel-weighted average
    from optics.slm import gaussian_blur
    got = slm.phase(torch.tensor([[1.0]], dtype=torch.float64))
    want = gaussian_blur(torch.tensor([[1.0, -0.5], [-0.5, -0.5]], dtype=torch.float64), 0.25)
    assert torch.allclose(got, want, rtol=0, atol=1e-15) and float(got[0, 0]) < 1.0


def test_blur_with_a_tensor_sigma_warns_nothing_and_passes_truncate():
    import warnings

    from optics.slm import gaussian_blur, gaussian_kernel1d

    sig = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    x = torch.zeros(1, 9, dtype=torch.float64)
    x[0, 4] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor with requires_grad" warning
        y = gaussian_blur(x, sig, truncate=2.0)
        k = gaussian_kernel1d(sig, truncate=2.0)
    assert k.numel() == 5  # radius ceil(2·1) = 2
    j = torch.arange(-2, 3, dtype=torch.float64)
    want = torch.exp(-0.5 * j ** 2)
    assert torch.allclose(y[0, 2:7].detach(), want / want.sum(), rtol=0, atol=1e-15)
    assert float(y[0, 1].detach()) == 0.0  # nothing beyond the truncated radius
