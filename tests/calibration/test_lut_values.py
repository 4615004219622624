"""Value tests of calibration.lut: the 2/Λ harmonic measured on synthetic frames against an
independent DFT, the grating law against its Fourier-series form, every refusal with its
numbers, the fitted uncertainties against an autograd covariance computed here, the grating
(crosstalk) fits recovering a known σ and LUT, and lut_from_capture on a stand-in capture
(frame selection, bias floor, frequency guess, grating settings, messages)."""
import math
import types

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  (see below)

import calibration.lut as lutmod
from calibration.errors import LUTFitError
from calibration.lut import (LUTResult, _bernstein, _phi_from_theta, fit_lut, grating_harmonic_model,
                             grating_harmonics, lut_from_capture)

# torch.optim's first step imports torch._dynamo (≈ 3 s); importing it with the module lets forked
# runs (mutation testing) share it instead of paying it per run.
F64 = torch.float64
LAM = 633e-9


def _t(v):
    return torch.tensor(v, dtype=F64)


# ------------------------------------------------------------------------------ grating_harmonics
def _hann(n):
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))


def _dft_amp(frame, iy, ix):
    """sqrt(Σ_{3×3 around (iy, ix)} |DFT of hann·(frame − mean)|²)/(Σhann·mean) by explicit sums."""
    ch, cw = frame.shape
    w = np.outer(_hann(ch), _hann(cw))
    d = (frame - frame.mean()) * w
    yy, xx = np.arange(ch)[:, None], np.arange(cw)[None, :]
    p = 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ky, kx = (iy + dy) % ch, (ix + dx) % cw
            p += abs(np.sum(d * np.exp(-2j * np.pi * (ky * yy / ch + kx * xx / cw)))) ** 2
    return math.sqrt(p) / (w.sum() * frame.mean())


def _same_freq(found, g):
    """The found (fy, fx) is the bin of g or of −g (the ± peaks are equivalent), to rounding."""
    return np.allclose(found, g, rtol=0, atol=1e-12) or np.allclose(found, (-g[0], -g[1]), rtol=0, atol=1e-12)


def _frames(specs, h=40, w=52, seed=0):
    """Frames mean·(1 + a·cos(2π(ky·y/ch + kx·x/cw) + ψ)) on the central 30×39 crop and noise
    outside it (which must not count)."""
    rng = np.random.default_rng(seed)
    ch, cw = int(h * 0.75), int(w * 0.75)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    yy, xx = np.arange(ch)[:, None], np.arange(cw)[None, :]
    out = rng.uniform(0, 5000, (len(specs), h, w))
    for i, (mean, a, ky, kx) in enumerate(specs):
        out[i, r0:r0 + ch, c0:c0 + cw] = mean * (1 + a * np.cos(2 * np.pi * (ky * yy / ch + kx * xx / cw) + 0.7))
    return out, (r0, c0, ch, cw)


def test_harmonic_amplitude_is_the_windowed_dft_power_around_the_peak():
    """Relative 1e-9 against explicit DFT sums on the 75 % crop (noise outside it), any mean;
    the frequency found is the peak bin (either sign: the ± peaks are equivalent)."""
    specs = [(1000.0, 0.3, 5, 9), (3000.0, 0.1, 5, 9), (200.0, 0.0, 5, 9), (50.0, 0.5, 5, 9)]
    im, (r0, c0, ch, cw) = _frames(specs)
    amps, (fy, fx) = grating_harmonics(im, freq_guess_cyc_per_px=(5 / 30, 9 / 39))
    assert (ch, cw) == (30, 39)
    assert _same_freq((fy, fx), (5 / 30, 9 / 39))
    exp = [_dft_amp(im[i, r0:r0 + ch, c0:c0 + cw], 5, 9) for i in range(4)]
    assert np.allclose(amps, exp, rtol=1e-9, atol=1e-15)
    # the estimate is proportional to the modulation and independent of the mean
    assert amps[0] / amps[1] == pytest.approx(3.0, rel=1e-9) and amps[2] < 1e-12
    assert amps[3] / amps[0] == pytest.approx(0.5 / 0.3, rel=1e-9)


def test_harmonic_neighbourhood_wraps_around_the_spectrum_edge():
    """A peak in the last column (kx = −1) and one in the last row: the 3×3 sum wraps."""
    im, (r0, c0, ch, cw) = _frames([(800.0, 0.4, 4, -1)])
    amps, (fy, fx) = grating_harmonics(im, freq_guess_cyc_per_px=(4 / 30, -1 / 39), search=0.1)
    assert _same_freq((fy, fx), (4 / 30, -1 / 39))
    assert amps[0] == pytest.approx(_dft_amp(im[0, r0:r0 + ch, c0:c0 + cw], 4, -1), rel=1e-9)
    im, (r0, c0, ch, cw) = _frames([(800.0, 0.4, -1, 6)])
    amps, _ = grating_harmonics(im, freq_guess_cyc_per_px=(-1 / 30, 6 / 39), search=0.1)
    assert amps[0] == pytest.approx(_dft_amp(im[0, r0:r0 + ch, c0:c0 + cw], -1, 6), rel=1e-9)


def test_harmonic_search_stays_near_the_guess_and_its_mirror():
    """A stronger second grating outside the search radius is ignored; the mirror −f of the
    guess is searched as well (found: the same amplitude)."""
    im, (r0, c0, ch, cw) = _frames([(1000.0, 0.0, 0, 0)])
    yy, xx = np.arange(ch)[:, None], np.arange(cw)[None, :]
    crop = 1000.0 * (1 + 0.1 * np.cos(2 * np.pi * (3 * yy / ch + 8 * xx / cw)) + 0.4 * np.cos(2 * np.pi * 12 * xx / cw))
    im[0, r0:r0 + ch, c0:c0 + cw] = crop
    g = (3 / 30, 8 / 39)
    a, f = grating_harmonics(im, freq_guess_cyc_per_px=g)
    assert a[0] == pytest.approx(_dft_amp(crop, 3, 8), rel=1e-9)
    assert _same_freq(f, g)
    a2, f2 = grating_harmonics(im, freq_guess_cyc_per_px=(-g[0], -g[1]))
    assert a2[0] == pytest.approx(a[0], rel=1e-12)
    # exactly at the radius: |Δf| = search·|g| is inside (≤): the strong peak at 12/39 is 0.3·|g| away
    g2 = (0.0, 12 / 39 / 1.3)
    a3, f3 = grating_harmonics(im, freq_guess_cyc_per_px=g2, search=0.3 / 1.0)
    assert abs(abs(f3[1]) - 12 / 39) < 1e-12 and a3[0] == pytest.approx(_dft_amp(crop, 0, 12), rel=1e-9)
    a4, f4 = grating_harmonics(im, freq_guess_cyc_per_px=g2, search=0.29)
    assert abs(abs(f4[1]) - 12 / 39) > 1e-3


def test_a_distractor_at_the_mirrored_axis_is_not_searched():
    """A stronger grating at (−fy, +fx) — the guess mirrored in one axis only — lies in neither
    search disk (around +f and −f): the amplitude is the guessed grating's."""
    im, (r0, c0, ch, cw) = _frames([(1000.0, 0.0, 0, 0)])
    yy, xx = np.arange(ch)[:, None], np.arange(cw)[None, :]
    crop = 1000.0 * (1 + 0.1 * np.cos(2 * np.pi * (6 * yy / ch + 9 * xx / cw))
                     + 0.4 * np.cos(2 * np.pi * (-6 * yy / ch + 9 * xx / cw)))
    im[0, r0:r0 + ch, c0:c0 + cw] = crop
    a, f = grating_harmonics(im, freq_guess_cyc_per_px=(6 / 30, 9 / 39))
    assert a[0] == pytest.approx(_dft_amp(crop, 6, 9), rel=1e-9) and _same_freq(f, (6 / 30, 9 / 39))
    a, f = grating_harmonics(im, freq_guess_cyc_per_px=(-6 / 30, 9 / 39))
    assert a[0] == pytest.approx(_dft_amp(crop, -6, 9), rel=1e-9) and a[0] > 3 * _dft_amp(crop, 6, 9)


def test_amplitudes_do_not_depend_on_the_units_of_the_frames():
    """Normalised by the mean: frames in e⁻ or scaled by 1e-6 (powers ≪ 1) give the same values."""
    im, _ = _frames([(1000.0, 0.3, 5, 9), (700.0, 0.1, 5, 9)])
    a, f = grating_harmonics(im, freq_guess_cyc_per_px=(5 / 30, 9 / 39))
    a6, f6 = grating_harmonics(im * 1e-6, freq_guess_cyc_per_px=(5 / 30, 9 / 39))
    assert np.allclose(a6, a, rtol=1e-9) and _same_freq(f6, f)


def test_defect_pixels_take_the_frame_median():
    im, (r0, c0, ch, cw) = _frames([(1000.0, 0.3, 5, 9), (500.0, 0.2, 5, 9)])
    bad = im.copy()
    bad[0, r0 + 3, c0 + 4] = np.nan
    bad[0, r0 + 10, c0 + 20] = np.inf
    bad[1, 0, 0] = np.nan                                          # outside the crop: irrelevant
    fixed = im.copy()
    crop0 = im[0, r0:r0 + ch, c0:c0 + cw].copy()
    crop0[3, 4] = crop0[10, 20] = np.nan
    fixed[0, r0 + 3, c0 + 4] = fixed[0, r0 + 10, c0 + 20] = np.nanmedian(crop0)
    a_bad, _ = grating_harmonics(bad, freq_guess_cyc_per_px=(5 / 30, 9 / 39))
    a_fix, _ = grating_harmonics(fixed, freq_guess_cyc_per_px=(5 / 30, 9 / 39))
    assert np.allclose(a_bad, a_fix, rtol=1e-12) and np.all(np.isfinite(a_bad))
    assert np.isnan(bad[0, r0 + 3, c0 + 4]) and np.isinf(bad[0, r0 + 10, c0 + 20])   # the caller's frames unchanged


def test_no_fourier_sample_near_the_guess_is_refused():
    im, _ = _frames([(1000.0, 0.3, 5, 9)])
    with pytest.raises(LUTFitError, match=r"^no Fourier sample within 25 % of the expected grating harmonic "
                                          r"0\.0001 cycles/px on a 30×39 crop; check the camera/SLM pitch and "
                                          r"magnification$"):
        grating_harmonics(im, freq_guess_cyc_per_px=(0.0, 1e-4))
    with pytest.raises(LUTFitError, match=r"within 10 % of .* 0\.005 cycles/px on a 15×15 crop"):
        grating_harmonics(im[:, :20, :20], freq_guess_cyc_per_px=(0.003, 0.004), search=0.1)
    with pytest.raises(LUTFitError, match=r"^no Fourier sample within 90 % of the expected grating harmonic 0\.01 "):
        grating_harmonics(im[:, :20, :20], freq_guess_cyc_per_px=(0.0, 0.01), search=0.9)


# -------------------------------------------------------------------------- grating law values
def _kappa_series(z, period_m, period_px, wavelength_m, dphi, spp=4):
    """The 2/Λ intensity harmonic relative to the mean from the field's Fourier series:
    c₂ = Σₘ uₘ u*ₘ₋₂ with uₘ the propagated coefficients (exp(i2πz·sqrt(1/λ² − m²/Λ²)),
    evanescent ones dropped), c₀ = Σ|uₘ|²."""
    n = period_px * spp
    sq = (np.arange(n) >= n // 2).astype(float)
    u = np.fft.fft(np.exp(1j * dphi * sq)) / n
    m = np.fft.fftfreq(n, d=1.0 / n)
    f = m / period_m
    prop = np.abs(f) < 1 / wavelength_m
    kz = 2 * np.pi * np.sqrt(np.clip(1 / wavelength_m ** 2 - f ** 2, 0, None))
    u = np.where(prop, u * np.exp(1j * kz * z), 0)
    c2 = sum(u[i] * np.conj(u[(i - 2) % n]) for i in range(n))
    return 2 * abs(c2) / np.sum(np.abs(u) ** 2)


@pytest.mark.parametrize("z, period_m, period_px, lam", [(0.9e-3, 64e-6, 8, LAM), (3.1e-3, 40e-6, 5, LAM),
                                                        (5e-6, 1.2e-6, 8, LAM), (3e-6, 2.0 ** -20, 8, 2.0 ** -20)])
def test_unblurred_law_is_the_fourier_series_of_the_propagated_grating(z, period_m, period_px, lam):
    """Relative 1e-9; the third case has evanescent harmonics (|m|/Λ > 1/λ), which carry nothing;
    in the last, Λ = λ exactly (powers of two): the ±1 orders are exactly at 1/λ (grazing, kz = 0),
    not propagating waves either, so only the mean is left and the harmonic is 0."""
    d = np.array([0.4, 1.7, math.pi, 5.0])
    h = grating_harmonic_model(_t(d), sigma_m=_t(0.0), z_m=z, period_m=period_m, wavelength_m=lam,
                               period_px=period_px)
    exp = [_kappa_series(z, period_m, period_px, lam, x) for x in d]
    assert np.allclose(h.numpy(), exp, rtol=1e-9, atol=1e-12)
    assert h.dtype == F64 and h.shape == (4,)
    # the default sampling is 4 samples per SLM pixel
    h4 = grating_harmonic_model(_t(d), sigma_m=_t(0.0), z_m=z, period_m=period_m, wavelength_m=lam,
                                period_px=period_px, samples_per_px=4)
    assert torch.equal(h, h4)


def _blurred_series(z, period_m, period_px, sigma, dphi, spp):
    """As _kappa_series, with the square wave's Fourier coefficients times the Gaussian's
    transfer exp(−2π²σ²f²) before the phase is exponentiated (the documented blur)."""
    n = period_px * spp
    sq = (np.arange(n) >= n // 2).astype(float)
    fq = np.fft.fftfreq(n, d=period_m / n)
    sb = np.fft.ifft(np.fft.fft(sq) * np.exp(-2 * np.pi ** 2 * sigma ** 2 * fq ** 2)).real
    u = np.fft.fft(np.exp(1j * dphi * sb)) / n
    kz = 2 * np.pi * np.sqrt(np.clip(1 / LAM ** 2 - fq ** 2, 0, None))
    u = np.where(np.abs(fq) < 1 / LAM, u * np.exp(1j * kz * z), 0)
    c2 = sum(u[i] * np.conj(u[(i - 2) % n]) for i in range(n))
    return 2 * abs(c2) / np.sum(np.abs(u) ** 2)


def test_blurred_law_values():
    """σ = 3 µm on a 64 µm period (32 samples): relative 1e-9 against the series form."""
    d = np.array([0.5, 2.0, math.pi, 5.5])
    h = grating_harmonic_model(_t(d), sigma_m=_t(3e-6), z_m=1.3e-3, period_m=64e-6, wavelength_m=LAM, period_px=8)
    exp = [_blurred_series(1.3e-3, 64e-6, 8, 3e-6, x, 4) for x in d]
    assert np.allclose(h.numpy(), exp, rtol=1e-9)
    h0 = grating_harmonic_model(_t(d), sigma_m=_t(0.0), z_m=1.3e-3, period_m=64e-6, wavelength_m=LAM, period_px=8)
    assert float((h - h0).abs().max()) > 1e-3                     # the blur matters at this σ


# ------------------------------------------------------------------------------- fit_lut checks
def _truth(top=255):
    x = np.arange(top + 1) / top
    return 1.8 * math.pi * (0.5 * x + 0.5 * x ** 2)


def _plain_data(n=12, top=255, noise=0.002, c=0.6, seed=0):
    g = np.round(np.linspace(0, top, n))
    h = c * np.sin(_truth(top)[g.astype(int)] / 2) ** 2
    h = np.abs(h + noise * np.random.default_rng(seed).standard_normal(n))
    return g, h, np.full(n, noise)


def test_fit_lut_refuses_too_few_or_badly_spread_levels_and_bad_harmonics():
    g, h, s = _plain_data(n=9)
    with pytest.raises(LUTFitError, match=r"^8 grating gray levels cannot fit a degree-6 monotone LUT plus its scale; "
                                          r"capture >= 9 levels spread over 0 … 255$"):
        fit_lut(g[:8], h[:8], s[:8], bit_depth=8)
    with pytest.raises(LUTFitError, match=r"^5 grating gray levels cannot fit a degree-3 monotone LUT plus its scale; "
                                          r"capture >= 6 levels spread over 0 … 63$"):
        fit_lut(np.linspace(0, 63, 5), h[:5], s[:5], bit_depth=6, degree=3)
    r = fit_lut(np.linspace(0, 63, 6), h[:6], s[:6], bit_depth=6, degree=3, n_starts=1)   # exactly enough
    assert r.gray.size == 64 and r.degree == 3
    g2 = np.linspace(0, 255, 9)
    for lo, hi in ((25.5, 255.0), (0.0, 229.5)):                   # ends exactly at 10 %: accepted
        r = fit_lut(np.linspace(lo, hi, 9), h, s, bit_depth=8, degree=2, n_starts=1)
        assert r.measured_gray[0] == lo and r.measured_gray[-1] == hi
    for lo, hi in ((26.0, 255.0), (0.0, 229.0), (30.0, 200.0)):
        with pytest.raises(LUTFitError, match=rf"^grating gray levels span {lo:.0f} … {hi:.0f}; they must cover the "
                                              r"range 0 … 255 \(ends within 10 %\) to determine the LUT$"):
            fit_lut(np.linspace(lo, hi, 9), h, s, bit_depth=8)
    for bad in (np.where(np.arange(9) == 3, np.nan, h), np.where(np.arange(9) == 3, np.inf, h), np.zeros(9), -h):
        with pytest.raises(LUTFitError, match=r"^grating harmonics are not finite and positive; check the grating "
                                              r"frames$"):
            fit_lut(g2, bad, s, bit_depth=8)
    h1 = np.zeros(9)
    h1[4] = 0.3                                                   # one positive value is enough to try
    fit_lut(g2, h1, s, bit_depth=8, degree=2, n_starts=1)


def test_fit_lut_without_any_finite_start_says_so():
    g, h, s = _plain_data(n=9)
    with pytest.raises(LUTFitError, match=r"^the LUT fit did not converge from any start; check the grating "
                                          r"harmonics$"):
        fit_lut(g, h, np.full(9, np.nan), bit_depth=8, n_starts=1)


def _independent_uncertainty(res, g, h, s, *, grating=None, sig_free=False):
    """The documented covariance, computed here: residuals w·(h − C·M(φ(g))) with the fitted
    parameters, autograd Jacobian, cov = pinv(JᵀJ)·max(χ²_red, 1), propagated to every level."""
    top = res.gray.size - 1
    deg = res.degree
    B = _bernstein(torch.as_tensor(g / top), deg)
    Ball = _bernstein(torch.arange(top + 1, dtype=F64) / top, deg)
    sw = torch.as_tensor(1.0 / np.maximum(s, 1e-6 * h.max()))
    y = torch.as_tensor(h)
    if grating:
        gkw = {k: grating[k] for k in ("z_m", "period_m", "wavelength_m", "period_px")}
        g_pi = float(grating_harmonic_model(_t([math.pi]), sigma_m=_t(0.0), **gkw)[0])

    def model(q):
        phi = _phi_from_theta(q[:deg], B)
        if not grating:
            return q[deg] * torch.sin(phi / 2) ** 2
        sig = q[deg + 1] if sig_free else _t(res.extra["crosstalk_sigma_m"])
        return q[deg] * grating_harmonic_model(phi, sigma_m=sig, **gkw) / g_pi

    # parameters: θ, then log C (C here directly: the Jacobian is taken in the fit's own
    # coordinates below), then the crosstalk logit when free
    q = [torch.as_tensor(res.theta), _t([math.log(res.scale_c)])]
    if sig_free:
        sm = float(grating["slm_pitch_m"])
        sg = res.extra["crosstalk_sigma_m"] / sm
        q.append(_t([math.log(sg / (1 - sg))]))
    p = torch.cat(q)

    def model_fit_coords(pp):
        qq = torch.cat([pp[:deg], torch.exp(pp[deg:deg + 1])])
        if sig_free:
            qq = torch.cat([qq, float(grating["slm_pitch_m"]) * torch.sigmoid(pp[deg + 1:deg + 2])])
        return model(qq)

    r = sw * (y - model_fit_coords(p))
    chi2 = float((r ** 2).sum()) / max(g.size - p.numel(), 1)
    J = torch.autograd.functional.jacobian(lambda pp: sw * (y - model_fit_coords(pp)), p)
    cov = torch.linalg.pinv(J.T @ J) * max(chi2, 1.0)
    Jphi = torch.autograd.functional.jacobian(lambda pp: _phi_from_theta(pp[:deg], Ball), p)
    std = torch.sqrt(torch.einsum("ip,pq,iq->i", Jphi, cov, Jphi).clamp_min(0)).numpy()
    # stationarity of the weighted least squares: max |Jᵀr| relative to max_k |J_k|·|r| (a parameter
    # saturated in its sigmoid/softmax has a vanishing column and gradient; it is not counted apart)
    stat = float((J.T @ r).abs().max() / (J.norm(dim=0).max() * r.norm()))
    return chi2, std, cov, p, stat


def test_plain_fit_values_uncertainty_and_outputs():
    """Recovery of a known LUT (rms < 0.05 rad at 0.3 % noise); χ² and the per-level σ equal the
    documented covariance computed here (rel 1e-6); the table is the Bernstein curve of θ plus
    the 1e-9 rad/level tie-breaker; inputs are kept as float64."""
    g, h, s = _plain_data(n=14, noise=0.003, seed=4)
    s = (s / 2).astype(np.float32)                          # stated σ half the noise: χ² ≈ 4
    res = fit_lut(g.astype(int).tolist(), h.astype(np.float32), s, bit_depth=8, degree=5, n_starts=1)
    assert res.chi2_reduced > 2
    assert np.sqrt(np.mean((res.phase_rad - _truth()) ** 2)) < 0.05
    assert res.measured_gray.dtype == np.float64 and res.measured_h.dtype == np.float64
    assert res.measured_h_std.dtype == np.float64
    assert np.array_equal(res.measured_gray, g) and np.array_equal(res.measured_h_std, s)
    assert np.array_equal(res.gray, np.arange(256)) and res.degree == 5 and res.theta.shape == (5,)
    assert res.grating is None and res.extra == {}
    curve = _phi_from_theta(torch.as_tensor(res.theta), _bernstein(torch.arange(256, dtype=F64) / 255, 5)).numpy()
    assert np.allclose(res.phase_rad, curve + np.arange(256) * 1e-9, rtol=0, atol=1e-12)
    chi2, std, _, _, stat = _independent_uncertainty(res, g, h.astype(np.float32).astype(np.float64),
                                                     s.astype(np.float64))
    assert res.chi2_reduced == pytest.approx(chi2, rel=1e-6) and stat < 1e-5
    assert np.allclose(res.phase_std_rad, std, rtol=1e-5, atol=1e-12)
    assert res.phase_std_rad[0] < 1e-12 and res.phase_std_rad[128] > 1e-4
    assert res.scale_c == pytest.approx(0.6, rel=0.05)
    lut = res.phase_lut()
    assert lut.bit_depth == 8 and np.allclose(lut.levels_rad.detach().numpy(), res.phase_rad, atol=1e-12)


def test_uncertainty_scales_with_chi2_only_above_one():
    """Noise-free data (χ² ≈ 0): cov = pinv(JᵀJ), not shrunk by χ² < 1; degree 4, 6 levels
    (dof = 1)."""
    g = np.round(np.linspace(0, 63, 7))
    x = g / 63
    h = 0.5 * np.sin(math.pi * (0.4 * x + 0.6 * x ** 2) / 2) ** 2 + 0.01
    s = np.full(7, 0.01)
    res = fit_lut(g, h, s, bit_depth=6, degree=4, n_starts=1)
    chi2, std, _, _, stat = _independent_uncertainty(res, g, h, s)
    assert res.chi2_reduced == pytest.approx(chi2, rel=1e-5, abs=1e-12) and chi2 < 1 and stat < 1e-5
    assert np.allclose(res.phase_std_rad, std, rtol=1e-5, atol=1e-12)


def test_zero_sigmas_are_floored_at_a_millionth_of_the_largest_harmonic():
    """h_std = 0 everywhere: every weight is 1/(1e-6·max h)², so χ² is the loss in those units
    (the quadratic truth is not a degree-3 Bernstein curve: χ² ≫ 1)."""
    g = np.round(np.linspace(0, 63, 8))
    x = g / 63
    h = 2.5 * np.sin(math.pi * (0.3 * x + 0.9 * x ** 2) / 2) ** 2 + 0.05
    s = np.zeros(8)
    res = fit_lut(g, h, s, bit_depth=6, degree=3, n_starts=1)
    chi2, std, _, _, stat = _independent_uncertainty(res, g, h, s)
    assert chi2 > 10 and res.chi2_reduced == pytest.approx(chi2, rel=1e-6) and stat < 1e-5
    assert np.allclose(res.phase_std_rad, std, rtol=1e-5, atol=1e-12)


def test_defaults_are_degree_six_three_starts_seed_zero_plain_law(monkeypatch):
    seen = {}
    monkeypatch.setattr(lutmod, "_fit_lut", lambda *a, **k: seen.update(args=a, kw=k) or "result")
    g, h, s = _plain_data(n=10)
    assert fit_lut(g, h, s, bit_depth=8) == "result"
    assert seen["kw"] == {"degree": 6, "n_starts": 3, "seed": 0, "grating": None, "top": 255}
    assert [np.asarray(x).dtype for x in seen["args"]] == [np.float64] * 3
    fit_lut(g, h, s, bit_depth=7, degree=4, n_starts=2, seed=5, grating={"z_m": 1.0})
    assert seen["kw"] == {"degree": 4, "n_starts": 2, "seed": 5, "grating": {"z_m": 1.0}, "top": 127}


# ------------------------------------------------------------------------ grating-law (crosstalk) fits
GR = {"z_m": 1.1e-3, "period_m": 64e-6, "wavelength_m": LAM, "period_px": 8, "slm_pitch_m": 8e-6}


def _grating_data(sigma, n=12, c=0.5, noise=0.002, seed=1):
    g = np.round(np.linspace(0, 255, n))
    gkw = {k: GR[k] for k in ("z_m", "period_m", "wavelength_m", "period_px")}
    m = grating_harmonic_model(_t(_truth()[g.astype(int)]), sigma_m=_t(sigma), **gkw).numpy()
    g_pi = float(grating_harmonic_model(_t([math.pi]), sigma_m=_t(0.0), **gkw)[0])
    h = c * m / g_pi + noise * np.random.default_rng(seed).standard_normal(n)
    return g, np.abs(h), np.full(n, noise)


def test_grating_fit_with_known_crosstalk_recovers_the_lut():
    g, h, s = _grating_data(2.5e-6)
    grating = dict(GR, sigma_m=2.5e-6)
    res = fit_lut(g, h, s, bit_depth=8, degree=5, n_starts=1, grating=grating)
    assert np.sqrt(np.mean((res.phase_rad - _truth()) ** 2)) < 0.05
    assert res.scale_c == pytest.approx(0.5, rel=0.03)
    assert res.extra == {"crosstalk_sigma_m": 2.5e-6, "crosstalk_sigma_std_m": 0.0, "crosstalk_sigma_fixed": 1.0}
    assert res.grating == grating and res.grating is not grating
    chi2, std, _, _, stat = _independent_uncertainty(res, g, h, s, grating=grating)
    assert res.chi2_reduced == pytest.approx(chi2, rel=1e-6) and stat < 1e-5
    assert np.allclose(res.phase_std_rad, std, rtol=1e-5, atol=1e-12)
    # the plain sin² law on the same data is worse (the blur bends the law near π)
    plain = fit_lut(g, h, s, bit_depth=8, degree=5, n_starts=1)
    assert plain.chi2_reduced > 2 * res.chi2_reduced


def test_grating_fit_with_free_crosstalk_recovers_sigma_and_its_error():
    g, h, s = _grating_data(3e-6, n=16, noise=0.001)
    res = fit_lut(g, h, s, bit_depth=8, degree=4, n_starts=1, grating=dict(GR, sigma_m=None))
    sig = res.extra["crosstalk_sigma_m"]
    assert sig == pytest.approx(3e-6, rel=0.15)
    assert set(res.extra) == {"crosstalk_sigma_m", "crosstalk_sigma_std_m"}
    chi2, std, cov, p, stat = _independent_uncertainty(res, g, h, s, grating=GR, sig_free=True)
    assert res.chi2_reduced == pytest.approx(chi2, rel=1e-6) and stat < 1e-5
    assert np.allclose(res.phase_std_rad, std, rtol=1e-4, atol=1e-12)
    # σ_std = |dσ/dq|·sqrt(cov_qq), dσ/dq = σ_max·s(1 − s)
    sm = GR["slm_pitch_m"]
    sg = sig / sm
    exp = sm * sg * (1 - sg) * math.sqrt(float(cov[-1, -1]))
    assert res.extra["crosstalk_sigma_std_m"] == pytest.approx(exp, rel=1e-4)
    assert 0 < res.extra["crosstalk_sigma_std_m"] < sig
    # without a sigma_m entry at all: the same free fit
    res2 = fit_lut(g, h, s, bit_depth=8, degree=4, n_starts=1, grating=dict(GR))
    assert res2.extra["crosstalk_sigma_m"] == pytest.approx(sig, rel=1e-9)
    # the fewest levels (degree + 3) leave one degree of freedom: χ² = loss/1
    k5 = [0, 4, 8, 12, 15]
    g5, h5, s5 = g[k5], h[k5], s[k5]
    r5 = fit_lut(g5, h5, s5, bit_depth=8, degree=2, n_starts=1, grating=dict(GR))
    chi2, _, _, p5, _ = _independent_uncertainty(r5, g5, h5, s5, grating=GR, sig_free=True)
    assert p5.numel() == 4 and r5.chi2_reduced == pytest.approx(chi2, rel=1e-6)


# ------------------------------------------------------------------------------ lut_from_capture
class _Pattern:
    def __init__(self, kind, **attrs):
        self.kind, self.attrs = kind, attrs


def _capture(levels, *, ref=0, period=4, inst=None, extra_patterns=()):
    """A stand-in capture: optional non-grating sample frames first, then sample frames
    (image_key 0) of the given grating levels (pattern ids 1…), then a dark frame."""
    pats, pid, key = {}, [], []
    for j, kind in enumerate(extra_patterns):
        pats[100 + j] = _Pattern(kind, gray_level=0)
        pid.append(100 + j)
        key.append(0)
    for i, lv in enumerate(levels):
        r = ref[i] if isinstance(ref, (list, tuple)) else ref
        pr = period[i] if isinstance(period, (list, tuple)) else period
        pats[i + 1] = _Pattern("grating", gray_reference=r, gray_level=lv, period_px=pr)
        pid.append(i + 1)
        key.append(0)
    pid.append(-1)
    key.append(2)                                                          # a dark frame
    instrument = {"slm_pitch_m": 8e-6, "camera_pitch_m": 5.5e-6, "wavelength_m": LAM, "distance_m": 1e-3,
                  "slm_bit_depth": 8.0}
    instrument.update(inst or {})
    cap = types.SimpleNamespace(path="cap.h5", patterns=pats, pattern_id=np.array(pid), image_key=np.array(key),
                                instrument=instrument)
    cap.indices = lambda k, kind=None: np.array(
        [i for i in np.flatnonzero(cap.image_key == k) if kind is None or
         (cap.pattern_id[i] in cap.patterns and cap.patterns[cap.pattern_id[i]].kind == kind)], dtype=np.int64)
    return cap


def _grating_frames(levels, amps, *, f, rot=0.0, shape=(48, 48), mean=2000.0, extra=0, seed=0):
    """``extra`` frames of non-grating patterns (all NaN: they must not count) first, then
    frames mean·(1 + a·cos(2π f·(x cos α + y sin α))) with noise-free fringes, then a dark frame."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    out = [np.full(shape, np.nan)] * extra
    out += [mean * (1 + a * np.cos(2 * np.pi * f * (xx * math.cos(rot) + yy * math.sin(rot)))) for a in amps]
    out += [np.zeros(shape)]
    return np.array(out)


@pytest.fixture
def spy(monkeypatch):
    """Replace fit_lut by a recorder (the fit itself is tested above) returning a minimal result."""
    calls = {}

    def fake(levels, hval, h_std, *, bit_depth, grating=None, **kw):
        calls.update(levels=levels, h=hval, h_std=h_std, bit_depth=bit_depth, grating=grating, kw=kw)
        return LUTResult(gray=np.arange(4), phase_rad=np.arange(4.0), phase_std_rad=np.zeros(4),
                         measured_gray=levels, measured_h=hval, measured_h_std=h_std, scale_c=1.0, chi2_reduced=1.0,
                         degree=2, extra={"kept": 1.0})

    monkeypatch.setattr(lutmod, "fit_lut", fake)
    return calls


def test_capture_harmonics_are_bias_corrected_sorted_and_passed_to_the_fit(spy):
    """Frames in shuffled gray order, one flat non-grating frame and a dark frame (ignored):
    the fit receives the levels sorted, h = sqrt(amp² − floor²) with the g = 0 frame's amplitude
    as the floor, σ_h = floor + 1 % of h, the capture's bit depth, and the grating settings."""
    levels = [128, 0, 255, 64, 10]
    amps = [0.3, 0.02, 0.1, 0.2, 0.01]                           # gray 10: below the floor → h = 0
    f = 2 * 5.5e-6 / (1.0 * 4 * 8e-6)                           # 2/Λ on the camera: 0.34375 cyc/px
    frames = _grating_frames(levels, amps, f=f, extra=1)
    cap = _capture(levels, extra_patterns=("random",))
    res = lut_from_capture(cap, frames, crosstalk_sigma_m=1.1e-6)
    a, found = grating_harmonics(frames[1:6], freq_guess_cyc_per_px=(0.0, f))
    order = np.argsort(levels)
    floor = a[1]
    assert np.array_equal(spy["levels"], [0.0, 10.0, 64.0, 128.0, 255.0]) and spy["levels"].dtype == np.float64
    exp_h = np.sqrt(np.clip(a[order] ** 2 - floor ** 2, 0, None))
    assert np.allclose(spy["h"], exp_h, rtol=1e-12) and spy["h"][0] == 0.0 and spy["h"][1] == 0.0
    assert np.allclose(spy["h_std"], floor + 0.01 * exp_h, rtol=1e-12)
    assert spy["bit_depth"] == 8 and isinstance(spy["bit_depth"], int) and spy["kw"] == {}
    assert spy["grating"] == {"z_m": 1e-3, "period_m": 32e-6, "wavelength_m": LAM, "period_px": 4,
                              "slm_pitch_m": 8e-6, "sigma_m": 1.1e-6}
    assert isinstance(spy["grating"]["period_px"], int) and isinstance(spy["grating"]["z_m"], float)
    assert res.extra == {"kept": 1.0, "harmonic_freq_y_cyc_per_px": found[0], "harmonic_freq_x_cyc_per_px": found[1],
                         "noise_floor": floor, "grating_period_m": 32e-6}
    assert abs(abs(found[1]) - f) < 1 / 36 and found[0] == 0.0


def test_capture_options_distance_magnification_rotation_and_plain_law(spy):
    levels = [0, 100, 255]
    mag, rot = 0.8, 0.8
    f = 2 * 5.5e-6 / (mag * 4 * 8e-6)
    frames = _grating_frames(levels, [0.0, 0.2, 0.4], f=f, rot=rot, mean=900.0)
    cap = _capture(levels, inst={"magnification": mag, "distance_m": 2e-3})
    res = lut_from_capture(cap, frames, distance_m=1.5e-3, rotation_rad=rot)
    a, found = grating_harmonics(frames[:3], freq_guess_cyc_per_px=(f * math.sin(rot), f * math.cos(rot)))
    assert np.allclose(spy["h"], a, rtol=1e-12)                 # floor 0: a noise-free g = 0 frame
    assert res.extra["noise_floor"] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(spy["h_std"], 1e-6 + 0.01 * a, rtol=1e-9)          # the floor's 1e-6 minimum
    assert spy["grating"]["z_m"] == 1.5e-3 and spy["grating"]["sigma_m"] is None
    assert (res.extra["harmonic_freq_y_cyc_per_px"], res.extra["harmonic_freq_x_cyc_per_px"]) == found
    # the rotation is needed: without it the search finds only leakage; the instrument's distance
    # is the default; a magnification argument overrides the instrument's
    lut_from_capture(cap, frames, rotation_rad=rot)
    assert spy["grating"]["z_m"] == 2e-3
    lut_from_capture(cap, frames, rotation_rad=0.0)
    assert spy["h"][-1] < 0.5 * a[-1]
    cap1 = _capture(levels)                                      # no magnification: 1.0
    fr1 = _grating_frames(levels, [0.0, 0.2, 0.4], f=2 * 5.5e-6 / (4 * 8e-6))
    lut_from_capture(cap1, fr1)
    good = spy["h"].copy()
    lut_from_capture(cap1, fr1, magnification=0.6)
    assert spy["h"][-1] < 0.5 * good[-1]
    lut_from_capture(cap, frames, magnification=mag, rotation_rad=rot, crosstalk=False)
    assert spy["grating"] is None and np.allclose(spy["h"], a, rtol=1e-12)


def test_capture_without_zero_level_has_no_floor(spy):
    levels = [10, 128, 255]
    f = 2 * 5.5e-6 / (4 * 8e-6)
    frames = _grating_frames(levels, [0.05, 0.2, 0.3], f=f)
    res = lut_from_capture(_capture(levels), frames)
    a, _ = grating_harmonics(frames[:3], freq_guess_cyc_per_px=(0.0, f))
    assert res.extra["noise_floor"] == 0.0 and np.allclose(spy["h"], a, rtol=1e-12)


def test_capture_refusals_name_the_problem():
    f = 2 * 5.5e-6 / (4 * 8e-6)
    with pytest.raises(LUTFitError, match=r"^cap\.h5: no grating frames \(sample frames whose pattern has "
                                          r"kind='grating'\); capture binary gratings of gray g against a reference "
                                          r"level to fit the LUT$"):
        lut_from_capture(_capture([], extra_patterns=("random",)), np.zeros((2, 8, 8)))
    frames = _grating_frames([0, 1, 2], [0, 0.1, 0.2], f=f)
    with pytest.raises(LUTFitError, match=r"^grating frames use several reference levels \[0, 3\]; use one; grating "
                                          r"frames use several periods \[4, 6\] px; use one$"):
        lut_from_capture(_capture([0, 1, 2], ref=[0, 3, 0], period=[4, 6, 4]), frames)
    with pytest.raises(LUTFitError, match=r"^grating frames use several periods \[4, 6\] px; use one$"):
        lut_from_capture(_capture([0, 1, 2], period=[4, 6, 4]), frames)
    with pytest.raises(LUTFitError, match=r"^grating frames use several reference levels \[0, 3\]; use one$"):
        lut_from_capture(_capture([0, 1, 2], ref=[0, 3, 0]), frames)
    with pytest.raises(LUTFitError, match=r"^grating reference gray level is 5; this fit measures φ\(g\) − φ\(0\) and "
                                          r"needs reference 0$"):
        lut_from_capture(_capture([0, 1, 2], ref=5), frames)


def test_capture_with_clipped_frames_is_refused_with_the_worst_frame(spy):
    f = 2 * 5.5e-6 / (4 * 8e-6)
    levels = [0, 100, 200, 255]
    frames = _grating_frames(levels, [0, 0.1, 0.2, 0.3], f=f, shape=(20, 20), extra=1)   # frame 0: all NaN
    frames[3, :2, :] = np.nan                                    # 40 of 400 = 10 %
    frames[2, 0, :4] = np.inf                                    # 1 %
    cap = _capture(levels, extra_patterns=("random",))
    with pytest.raises(LUTFitError, match=r"^grating frame 3 \(gray 200\) has 10\.0 % saturated or defect pixels "
                                          r"\(limit 2 %\); clipped fringes bias the harmonic — record the gratings "
                                          r"at a shorter exposure$"):
        lut_from_capture(cap, frames)
    frames[3] = _grating_frames([200], [0.2], f=f, shape=(20, 20))[0]
    frames[3, 0, :8] = np.nan                                    # 2 %: exactly the limit, accepted
    lut_from_capture(cap, frames)
    with pytest.raises(LUTFitError, match=r"grating frame 3 \(gray 200\) has 2\.0 % .* \(limit 1 %\)"):
        lut_from_capture(cap, frames, max_masked_fraction=0.01)
    frames[3, :19] = np.nan                                      # 95 %
    with pytest.raises(LUTFitError, match=r"grating frame 3 \(gray 200\) has 95\.0 % .* \(limit 90 %\)"):
        lut_from_capture(cap, frames, max_masked_fraction=0.9)


def test_capture_to_lut_end_to_end_plain_law():
    """Noise-free fringes whose modulation follows C·sin²(φ(g)/2) for a known φ: the LUT comes
    back within 0.05 rad rms (degree-6 Bernstein vs the quadratic truth)."""
    levels = [int(v) for v in np.round(np.linspace(0, 255, 12))]
    f = 2 * 5.5e-6 / (4 * 8e-6)
    amps = 0.4 * np.sin(_truth()[levels] / 2) ** 2
    frames = _grating_frames(levels, amps, f=f, shape=(40, 40))
    res = lut_from_capture(_capture(levels), frames, crosstalk=False)
    assert np.sqrt(np.mean((res.phase_rad - _truth()) ** 2)) < 0.05
    assert res.grating is None and res.extra["grating_period_m"] == 32e-6


def test_more_starts_than_the_start_table_cycles_through_it():
    """n_starts beyond the 6 top-phase and 3 crosstalk start values reuse them cyclically: 7 plain
    starts and 4 free-crosstalk starts fit (the best start is kept: no worse than one start)."""
    g = np.round(np.linspace(0, 63, 6))
    x = g / 63
    h = 0.5 * np.sin(math.pi * (0.4 * x + 0.6 * x ** 2) / 2) ** 2 + 0.01
    s = np.full(6, 0.01)
    r7 = fit_lut(g, h, s, bit_depth=6, degree=2, n_starts=7)
    r1 = fit_lut(g, h, s, bit_depth=6, degree=2, n_starts=1)
    assert r7.chi2_reduced <= r1.chi2_reduced * (1 + 1e-9)
    gg, hh, ss = _grating_data(3e-6, n=6, noise=0.002)
    r4 = fit_lut(gg, hh, ss, bit_depth=8, degree=2, n_starts=4, grating=dict(GR))
    assert 0 < r4.extra["crosstalk_sigma_m"] < GR["slm_pitch_m"]
