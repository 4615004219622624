"""SLM gray-level → phase LUT from binary-grating captures.

Physics. A binary phase grating (50 % duty, period ``Λ``) alternating the reference gray level
(phase ``0``) and gray ``g`` (phase ``Δφ = φ(g) − φ(0)``) under a plane wave is
``t(x) = a₀ + b·s(x)`` with ``a₀ = (1 + e^{iΔφ})/2``, ``b = (e^{iΔφ} − 1)/2`` and ``s`` the
±1 square wave (odd harmonics only). Its diffraction orders ``±1, ±3, …`` all carry
``|b|² = sin²(Δφ/2)`` (the classic first-order efficiency ``(4/π²)·sin²(Δφ/2)``). After any
free-space distance ``z`` the intensity harmonic at ``2/Λ`` is built only from pairs of odd
orders ``(n, n−2)``, because ``s`` has no even harmonic to pair with ``a₀``; hence its
amplitude is ``|b|²·|Σₙ sₙ s*ₙ₋₂ e^{iπλz(n² − (n−2)²)/Λ²}| = C·sin²(Δφ/2)`` with a constant
``C`` that depends on ``z`` and the optics but not on ``g``. This lets a near-field camera
measure the first-order law directly: for each grating frame we take the magnitude of the
corrected image's Fourier component at ``2/Λ`` (located once on the camera grid; Hann window,
background-bias removed with the ``g = 0`` frame, normalised by the frame's mean to cancel
laser drift), then fit

    ``H(g) = C·sin²(φ(g)/2)``,  ``φ(g) = Σₖ βₖ·Bₖ,ₙ(g/g_max)``, ``0 = β₀ <= β₁ <= … <= βₙ <= 2π``

(a Bernstein polynomial with non-decreasing coefficients is monotone; Lorentz, *Bernstein
Polynomials* (1953)) by weighted least squares with several starts. Uncertainties come from
the Jacobian at the optimum (``cov = s²(JᵀJ)⁻¹``, ``s²`` the reduced χ²), propagated to every
gray level.

Limits (stated, not hidden): ``sin²(Δφ/2)`` cannot tell ``φ`` from ``2πk ± φ``; the fit assumes
a monotone LUT with ``φ(0) = 0`` and ``φ(g_max) <= 2π`` (the usual "2π" SLM). Crosstalk and
pixel gaps make a real grating not perfectly binary, which bends the law slightly near
``Δφ ≈ π``. The split-screen fringe-shift method is not implemented here.

The result is written as a tabulated LUT (all ``2^b`` levels) that
:meth:`optics.slm.PhaseLUT.tabulated` reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from optics.slm import PhaseLUT

from ._threads import single_thread
from .capture import Capture
from .errors import LUTFitError

__all__ = ["LUTResult", "grating_harmonics", "fit_lut", "lut_from_capture"]

TWO_PI = 2.0 * math.pi


@dataclass
class LUTResult:
    gray: np.ndarray            # every gray level 0 … 2^b − 1
    phase_rad: np.ndarray       # fitted φ(g)
    phase_std_rad: np.ndarray   # 1σ from the Jacobian
    measured_gray: np.ndarray
    measured_h: np.ndarray      # normalised 2/Λ harmonic amplitudes
    measured_h_std: np.ndarray
    scale_c: float
    chi2_reduced: float
    degree: int
    extra: Dict[str, float] = field(default_factory=dict)
    theta: Optional[np.ndarray] = None      # Bernstein shape parameters (see _phi_from_theta)
    grating: Optional[dict] = None          # the grating-law settings used (z, period, …)

    def phase_lut(self) -> PhaseLUT:
        return PhaseLUT.tabulated(self.gray, self.phase_rad, bit_depth=int(round(math.log2(len(self.gray)))))

    @property
    def inverted_phase_rad(self) -> np.ndarray:
        """Point-wise inversion ``2·asin(sqrt(H/C))`` on the branch of the fitted curve."""
        s = np.clip(self.measured_h / self.scale_c, 0.0, 1.0)
        base = 2 * np.arcsin(np.sqrt(s))
        fit_at = np.interp(self.measured_gray, self.gray, self.phase_rad)
        return np.where(fit_at > math.pi, TWO_PI - base, base)


def _hann2(h, w):
    return np.outer(np.hanning(h), np.hanning(w))


def grating_harmonics(images_e: np.ndarray, *, freq_guess_cyc_per_px, search: float = 0.25, crop: float = 0.75):
    """Amplitude of the ``2/Λ`` intensity harmonic of each image (N, H, W) in electrons,
    normalised by the image mean. ``freq_guess_cyc_per_px`` is ``(fy, fx)`` in cycles/pixel;
    the peak is located on the sum of the power spectra within ``search`` (relative) of the
    guess. Returns ``(amplitudes, (fy, fx) found)``."""
    n, h, w = images_e.shape
    ch, cw = int(h * crop), int(w * crop)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    im = images_e[:, r0:r0 + ch, c0:c0 + cw].copy()
    for k in range(n):  # NaN (defect) pixels → frame median
        bad = ~np.isfinite(im[k])
        if bad.any():
            im[k][bad] = np.nanmedian(im[k])
    means = im.mean(axis=(1, 2))
    win = _hann2(ch, cw)
    F = np.fft.fft2((im - means[:, None, None]) * win)
    P = np.abs(F) ** 2
    fy = np.fft.fftfreq(ch)[:, None]
    fx = np.fft.fftfreq(cw)[None, :]
    gy, gx = freq_guess_cyc_per_px
    g = math.hypot(gy, gx)
    # both ±f peaks are equivalent; search around +f and its mirror
    near = (np.hypot(fy - gy, fx - gx) <= search * g) | (np.hypot(fy + gy, fx + gx) <= search * g)
    total = P.sum(0)
    if not near.any():
        raise LUTFitError(f"no Fourier sample within {100 * search:.0f} % of the expected grating harmonic "
                          f"{g:.4g} cycles/px on a {ch}×{cw} crop; check the camera/SLM pitch and magnification")
    iy, ix = np.unravel_index(np.argmax(np.where(near, total, -1.0)), total.shape)
    # 3×3 neighbourhood power (leakage of the Hann window), summed
    amp = np.zeros(n)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            amp += P[:, (iy + dy) % ch, (ix + dx) % cw]
    norm = (win.sum() * means) ** 2
    return np.sqrt(amp / norm), (float(np.fft.fftfreq(ch)[iy]), float(np.fft.fftfreq(cw)[ix]))


def _bernstein(x: torch.Tensor, n: int) -> torch.Tensor:
    k = torch.arange(n + 1, dtype=x.dtype)
    coef = torch.tensor([math.comb(n, int(i)) for i in k], dtype=x.dtype)
    return coef * x[:, None] ** k * (1 - x[:, None]) ** (n - k)


def _phi_from_theta(theta: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """β₀ = 0, βₖ non-decreasing, βₙ = 2π·sigmoid(θ₀) <= 2π: increments are a softmax share."""
    # theta = [logit(top/2π), n−1 free logits]; the n increments are top × softmax([logits, 0])
    top = TWO_PI * torch.sigmoid(theta[0])
    share = torch.softmax(torch.cat([theta[1:], torch.zeros(1, dtype=theta.dtype)]), 0)
    beta = torch.cat([torch.zeros(1, dtype=theta.dtype), top * torch.cumsum(share, 0)])
    return B @ beta


def grating_harmonic_model(dphi: torch.Tensor, *, sigma_m: torch.Tensor, z_m: float, period_m: float,
                           wavelength_m: float, period_px: int, samples_per_px: int = 4) -> torch.Tensor:
    """Amplitude of the ``2/Λ`` intensity harmonic (relative to the mean) of a binary phase
    grating whose phase profile ``Δφ·S(x)`` is blurred by the crosstalk Gaussian (std
    ``sigma_m``) before ``exp(i·)``, after propagating ``z_m`` (exact angular spectrum of the
    periodic field: harmonic ``n`` gets ``exp(i2πz·sqrt(1/λ² − n²/Λ²))``). One period is
    sampled with ``period_px·samples_per_px`` points. With ``sigma_m = 0`` it is exactly
    ``κ(z)·sin²(Δφ/2)`` (module docstring); differentiable in ``dphi`` and ``sigma_m``."""
    n = period_px * samples_per_px
    x = torch.arange(n, dtype=torch.float64)
    square = (x >= n // 2).to(torch.float64)                       # 0 on the first half, 1 on the second
    f = torch.fft.fftfreq(n, d=period_m / n, dtype=torch.float64)  # 1/m
    blur = torch.exp(-2 * math.pi ** 2 * sigma_m ** 2 * f ** 2)
    s_blur = torch.fft.ifft(torch.fft.fft(square) * blur).real     # periodic Gaussian blur
    phase = dphi.reshape(-1, 1) * s_blur
    u = torch.polar(torch.ones_like(phase), phase)
    arg = (1.0 / wavelength_m ** 2 - f ** 2).clamp_min(0.0)
    H = torch.polar(torch.ones_like(f), 2 * math.pi * z_m * torch.sqrt(arg)) * (f.abs() < 1 / wavelength_m)
    v = torch.fft.ifft(torch.fft.fft(u) * H)
    inten = v.real ** 2 + v.imag ** 2
    c = torch.fft.fft(inten) / n
    return 2 * c[:, 2].abs() / c[:, 0].real


def fit_lut(gray: np.ndarray, h: np.ndarray, h_std: np.ndarray, *, bit_depth: int, degree: int = 6,
            n_starts: int = 3, seed: int = 0, grating: Optional[dict] = None) -> LUTResult:
    """Fit ``H(g) = C·M(φ(g))`` with a monotone Bernstein ``φ`` (module docstring); ``M`` is
    ``sin²(Δφ/2)`` when ``grating`` is None, else :func:`grating_harmonic_model` with the
    crosstalk width fitted too (``grating`` = dict of ``z_m``, ``period_m``, ``wavelength_m``,
    ``period_px``, ``slm_pitch_m``, optionally ``sigma_m``: a known crosstalk width, then held
    fixed — the grating data alone can trade crosstalk against LUT shape at some distances)."""
    gray = np.asarray(gray, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    h_std = np.asarray(h_std, dtype=np.float64)
    top = 2 ** bit_depth - 1
    if gray.size < degree + 3:
        raise LUTFitError(f"{gray.size} grating gray levels cannot fit a degree-{degree} monotone LUT plus its scale; "
                          f"capture >= {degree + 3} levels spread over 0 … {top}")
    if gray.min() > 0.1 * top or gray.max() < 0.9 * top:
        raise LUTFitError(f"grating gray levels span {gray.min():.0f} … {gray.max():.0f}; they must cover the "
                          f"range 0 … {top} (ends within 10 %) to determine the LUT")
    if not np.all(np.isfinite(h)) or h.max() <= 0:
        raise LUTFitError("grating harmonics are not finite and positive; check the grating frames")
    with single_thread():  # tiny tensors: extra threads only add overhead
        return _fit_lut(gray, h, h_std, degree=degree, n_starts=n_starts, seed=seed, grating=grating, top=top)


def _fit_lut(gray, h, h_std, *, degree, n_starts, seed, grating, top) -> LUTResult:
    x = torch.tensor(gray / top)
    B = _bernstein(x, degree)
    y = torch.tensor(h)
    wt = torch.tensor(1.0 / np.maximum(h_std, 1e-6 * h.max()) ** 2)
    gen = torch.Generator().manual_seed(seed)
    best = None
    sig_max = float(grating["slm_pitch_m"]) if grating else 0.0
    if grating:
        gkw = {k: grating[k] for k in ("z_m", "period_m", "wavelength_m", "period_px")}
        g_pi = float(grating_harmonic_model(torch.tensor([math.pi], dtype=torch.float64),
                                            sigma_m=torch.tensor(0.0, dtype=torch.float64), **gkw)[0])

    sig_fixed = None if not grating or grating.get("sigma_m") is None else float(grating["sigma_m"])

    def model(q, Bm):
        phi = _phi_from_theta(q[:degree], Bm)
        if not grating:
            return torch.exp(q[degree]) * torch.sin(phi / 2) ** 2
        if sig_fixed is not None:
            return torch.exp(q[degree]) * grating_harmonic_model(
                phi, sigma_m=torch.tensor(sig_fixed, dtype=torch.float64), **gkw) / g_pi
        sig = sig_max * torch.sigmoid(q[degree + 1])
        return torch.exp(q[degree]) * grating_harmonic_model(phi, sigma_m=sig, **gkw) / g_pi

    for s in range(n_starts):
        th = torch.zeros(degree, dtype=torch.float64)
        th[0] = torch.logit(torch.tensor([0.6, 0.8, 0.95, 0.7, 0.9, 0.99][s % 6], dtype=torch.float64))
        th[1:] = 0.3 * torch.randn(degree - 1, generator=gen, dtype=torch.float64)
        logc = torch.tensor([math.log(h.max())], dtype=torch.float64)
        extra = (torch.logit(torch.tensor([(0.1, 0.3, 0.2)[s % 3]], dtype=torch.float64))
                 if grating and sig_fixed is None else torch.zeros(0, dtype=torch.float64))
        p = torch.cat([th, logc, extra]).requires_grad_(True)
        opt = torch.optim.LBFGS([p], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def closure(opt=opt, p=p):
            opt.zero_grad()
            r = y - model(p, B)
            loss = (wt * r * r).sum()
            loss.backward()
            return loss

        try:
            opt.step(closure)
        except RuntimeError:
            continue
        with torch.no_grad():
            loss = float((wt * (y - model(p, B)) ** 2).sum())
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, p.detach().clone())
    if best is None:
        raise LUTFitError("the LUT fit did not converge from any start; check the grating harmonics")
    loss, p = best
    dof = max(gray.size - p.numel(), 1)
    chi2 = loss / dof
    # Jacobian of the weighted residuals → covariance of p → std of φ at every level
    sw = torch.sqrt(wt)
    J = torch.autograd.functional.jacobian(lambda q: sw * (y - model(q, B)), p)
    JTJ = J.T @ J
    cov = torch.linalg.pinv(JTJ, hermitian=True) * max(chi2, 1.0)
    g_all = torch.arange(top + 1, dtype=torch.float64)
    B_all = _bernstein(g_all / top, degree)
    Jphi = torch.autograd.functional.jacobian(lambda q: _phi_from_theta(q[:degree], B_all), p)
    var = torch.einsum("ip,pq,iq->i", Jphi, cov, Jphi).clamp_min(0)
    extra = {}
    if grating and sig_fixed is not None:
        extra = {"crosstalk_sigma_m": sig_fixed, "crosstalk_sigma_std_m": 0.0, "crosstalk_sigma_fixed": 1.0}
    elif grating:
        js = torch.autograd.functional.jacobian(lambda q: sig_max * torch.sigmoid(q[degree + 1]), p)
        extra = {"crosstalk_sigma_m": float(sig_max * torch.sigmoid(p[degree + 1])),
                 "crosstalk_sigma_std_m": float(torch.sqrt((js @ cov @ js).clamp_min(0)))}
    with torch.no_grad():
        phi_all = _phi_from_theta(p[:degree], B_all).numpy()
    # strictly increasing for PhaseLUT (a flat stretch of the Bernstein curve gets a tiny slope)
    phi_all = np.maximum.accumulate(phi_all) + np.arange(top + 1) * 1e-9
    return LUTResult(gray=np.arange(top + 1), phase_rad=phi_all, phase_std_rad=np.sqrt(var.numpy()),
                     measured_gray=gray, measured_h=h, measured_h_std=h_std, scale_c=float(torch.exp(p[degree])),
                     chi2_reduced=float(chi2), degree=degree, extra=extra, theta=p[:degree].numpy().copy(),
                     grating=dict(grating) if grating else None)


def lut_from_capture(cap: Capture, electrons: np.ndarray, *, magnification: Optional[float] = None,
                     rotation_rad: float = 0.0, distance_m: Optional[float] = None,
                     crosstalk: bool = True, crosstalk_sigma_m: Optional[float] = None,
                     max_masked_fraction: float = 0.02) -> LUTResult:
    """The LUT from a capture's grating frames (``kind == "grating"``); ``electrons`` are the
    corrected frames (all N) from :meth:`calibration.camera.CameraModel.correct`.

    ``crosstalk=True`` fits the blurred-grating law :func:`grating_harmonic_model` at the
    distance ``distance_m`` (default the nominal one) with the crosstalk width
    ``crosstalk_sigma_m`` (fitted when None); ``False`` the plain ``sin²(Δφ/2)`` law."""
    idx = cap.indices(0, kind="grating")
    if idx.size == 0:
        raise LUTFitError(f"{cap.path}: no grating frames (sample frames whose pattern has kind='grating'); "
                          f"capture binary gratings of gray g against a reference level to fit the LUT")
    problems: List[str] = []
    refs, levels, periods = set(), [], set()
    for i in idx:
        a = cap.patterns[cap.pattern_id[i]].attrs
        refs.add(int(a["gray_reference"]))
        levels.append(int(a["gray_level"]))
        periods.add(int(a["period_px"]))
    if len(refs) != 1:
        problems.append(f"grating frames use several reference levels {sorted(refs)}; use one")
    if len(periods) != 1:
        problems.append(f"grating frames use several periods {sorted(periods)} px; use one")
    if problems:
        raise LUTFitError("; ".join(problems))
    ref = refs.pop()
    if ref != 0:
        raise LUTFitError(f"grating reference gray level is {ref}; this fit measures φ(g) − φ(0) and needs "
                          f"reference 0")
    period_m = periods.pop() * cap.instrument["slm_pitch_m"]
    mag = cap.instrument.get("magnification", 1.0) if magnification is None else magnification
    # the grating varies along SLM x; 2/Λ on the camera (cycles per camera pixel)
    f = 2.0 * cap.instrument["camera_pitch_m"] / (mag * period_m)
    guess = (f * math.sin(rotation_rad), f * math.cos(rotation_rad))
    masked = np.mean(~np.isfinite(electrons[idx]), axis=(1, 2))
    if masked.max() > max_masked_fraction:
        worst = int(np.argmax(masked))
        raise LUTFitError(
            f"grating frame {int(idx[worst])} (gray {levels[worst]}) has {100 * masked[worst]:.1f} % saturated or "
            f"defect pixels (limit {100 * max_masked_fraction:.0f} %); clipped fringes bias the harmonic — record the "
            f"gratings at a shorter exposure")
    amps, found = grating_harmonics(electrons[idx], freq_guess_cyc_per_px=guess)
    levels = np.asarray(levels, dtype=np.float64)
    order = np.argsort(levels)
    levels, amps = levels[order], amps[order]
    # bias: the reference frame (g = 0) has no 2/Λ harmonic; its amplitude is the noise floor
    floor = float(amps[levels == 0].mean()) if np.any(levels == 0) else 0.0
    hval = np.sqrt(np.clip(amps ** 2 - floor ** 2, 0.0, None))
    # noise of an amplitude estimate ≈ the floor (Rayleigh scale) plus 1 % systematic
    h_std = np.full_like(hval, max(floor, 1e-6)) + 0.01 * hval
    grating = None
    if crosstalk:
        grating = {"z_m": float(distance_m or cap.instrument["distance_m"]), "period_m": period_m,
                   "wavelength_m": cap.instrument["wavelength_m"], "period_px": int(round(period_m / cap.instrument["slm_pitch_m"])),
                   "slm_pitch_m": cap.instrument["slm_pitch_m"], "sigma_m": crosstalk_sigma_m}
    res = fit_lut(levels, hval, h_std, bit_depth=int(cap.instrument["slm_bit_depth"]), grating=grating)
    res.extra.update({"harmonic_freq_y_cyc_per_px": found[0], "harmonic_freq_x_cyc_per_px": found[1],
                      "noise_floor": floor, "grating_period_m": period_m})
    return res
