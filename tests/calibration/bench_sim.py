"""An independent near-field bench simulator for calibration tests (numpy only).

It shares nothing with the fit's forward model (:class:`calibration.fit.NearFieldModel`, which
uses :class:`optics.slm.SLM` and :mod:`optics.propagation`), so a fit to its frames meets real
model error, as on a bench:

* **crosstalk, exact**: the piecewise-constant pixel phase convolved with a continuous Gaussian
  of std ``σ``, ``φ_σ(y, x) = Σ_ij φ(g_ij)·E_i(y)·E_j(x)`` with
  ``E_j(x) = Φ((x − a_j)/σ) − Φ((x − b_j)/σ)`` (``Φ`` the normal CDF, ``[a_j, b_j)`` the pixel);
  the fit uses a sampled kernel truncated at 4σ on a coarser grid;
* **propagation, exact angular spectrum** of the periodic window (``e^{i2πz·sqrt(1/λ² − f²)}``,
  evanescent waves decaying, not dropped) on a finer grid (``fine_upsample`` samples per SLM
  pixel, default 6) and a larger window than the fit's;
* **intensity, exact**: ``|u|²`` is formed from the field spectrum zero-padded ×2 (no aliasing of
  the doubled bandwidth), so the intensity is an exact trigonometric polynomial;
* **pixel integration, exact**: the camera pixel's footprint in the SLM plane is a rotated square
  of side ``p_cam/M``; its mean is the intensity's Fourier series times
  ``sinc(f·e₁·p/M)·sinc(f·e₂·p/M)``, evaluated at the pixel centres by a direct (non-uniform)
  Fourier sum — no interpolation anywhere;
* **camera**: Poisson shot noise plus Gaussian read noise, in electrons, plus a stray-light
  background.

Geometry convention (the one the fit documents): camera pixel centres ``u`` relative to pixel
``(H//2, W//2)`` (times the camera pitch) sit at ``X = R(α)·u/M + s`` in the SLM plane, ``s``
measured from the pattern centre. Frames are returned in electrons (what
:meth:`calibration.camera.CameraModel.correct` delivers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

__all__ = ["Bench", "random_bench", "bench_lut", "random_patterns", "irradiance", "frames_e"]


@dataclass
class Bench:
    wavelength_m: float
    slm_pitch_m: float
    camera_pitch_m: float
    camera_shape: tuple
    distance_m: float
    magnification: float
    rotation_rad: float
    shift_x_m: float
    shift_y_m: float
    crosstalk_sigma_m: float
    lut_phase_rad: np.ndarray
    background_e: float = 0.0
    mean_e: float = 4000.0          # mean signal electrons per pixel of a random frame
    read_noise_e: float = 5.0
    pattern_px: int = 16            # SLM pixels per side of a random pattern
    block_px: int = 2               # random patterns: blocks of block×block SLM pixels
    fine_upsample: int = 6          # simulation samples per SLM pixel
    extra: dict = field(default_factory=dict)

    def truth(self) -> dict:
        """The fit's parameters (``calibration.fit.PARAMS`` plus the background)."""
        return {"distance_m": self.distance_m, "magnification": self.magnification,
                "rotation_rad": self.rotation_rad, "shift_x_m": self.shift_x_m, "shift_y_m": self.shift_y_m,
                "crosstalk_sigma_m": self.crosstalk_sigma_m, "background_e": self.background_e}


def bench_lut(bit_depth: int, *, top_rad: float, bend: float) -> np.ndarray:
    """A smooth monotone LUT of another family than the sample's: ``top·(1 − e^{−b·x})/(1 − e^{−b})``
    (``x = g/g_max``; ``bend`` 0 gives the linear law)."""
    x = np.arange(2 ** bit_depth) / (2 ** bit_depth - 1)
    if abs(bend) < 1e-9:
        return top_rad * x
    return top_rad * (1 - np.exp(-bend * x)) / (1 - np.exp(-bend))


def random_bench(seed: int, **over) -> Bench:
    """A bench drawn from ``seed``: 532 nm, 6.4 µm SLM pixels, 4.5 µm camera pixels (the sample's are
    633 nm, 8 µm, 5.5 µm), distance 1.2–1.8 mm, magnification 0.97–1.03, rotation ±2°, shifts
    ±8 µm, crosstalk 1.0–2.0 µm, LUT top 1.7π–2π; ``over`` replaces any field."""
    rng = np.random.default_rng(10_000 + seed)
    kw = dict(wavelength_m=532e-9, slm_pitch_m=6.4e-6, camera_pitch_m=4.5e-6, camera_shape=(24, 24),
              distance_m=float(rng.uniform(1.2e-3, 1.8e-3)), magnification=float(rng.uniform(0.97, 1.03)),
              rotation_rad=float(np.radians(rng.uniform(-2, 2))), shift_x_m=float(rng.uniform(-8e-6, 8e-6)),
              shift_y_m=float(rng.uniform(-8e-6, 8e-6)), crosstalk_sigma_m=float(rng.uniform(1.0e-6, 2.0e-6)),
              lut_phase_rad=bench_lut(8, top_rad=float(rng.uniform(1.7, 2.0)) * math.pi,
                                      bend=float(rng.uniform(-1.0, 1.0))))
    kw.update(over)
    return Bench(**kw)


def random_patterns(bench: Bench, n: int, seed: int) -> list:
    """``n`` random gray patterns (uint8, blocks of ``block_px``) of ``pattern_px`` SLM pixels."""
    rng = np.random.default_rng(20_000 + seed)
    k = bench.pattern_px // bench.block_px
    one = np.ones((bench.block_px, bench.block_px), dtype=np.int64)
    return [np.kron(rng.integers(0, 2 ** 8, (k, k)), one).astype(np.uint8) for _ in range(n)]


def _window_slm_px(bench: Bench, pattern_px: int) -> int:
    """SLM pixels per side of the periodic window: the pattern plus twice the lateral reach of
    its finest detail (``z·λ/p``, angles up to one SLM period) plus the camera field, doubled
    margin, even."""
    reach = bench.distance_m * bench.wavelength_m / bench.slm_pitch_m
    cam = max(bench.camera_shape) * bench.camera_pitch_m / bench.magnification
    need = pattern_px * bench.slm_pitch_m + 2 * reach + cam
    n = int(math.ceil(need / bench.slm_pitch_m))
    return n + n % 2


def _edge_matrix(n_slm: int, up: int, sigma_samples: float) -> np.ndarray:
    """``E[k, j]``: the weight of SLM pixel ``j`` in fine sample ``k`` after the continuous
    Gaussian blur (exact: erf of the pixel edges; a sharp box when ``σ = 0``). Pixel ``j``
    covers fine samples ``j·up … (j+1)·up − 1``, edges half a sample outside them."""
    k = np.arange(n_slm * up, dtype=np.float64)[:, None]
    a = np.arange(n_slm, dtype=np.float64)[None, :] * up - 0.5
    b = a + up
    if sigma_samples <= 0:
        return ((k >= a) & (k < b)).astype(np.float64)
    # the window is periodic: add the wrapped images of each pixel (they only touch the border)
    n = n_slm * up
    return sum(ndtr((k - a - s) / sigma_samples) - ndtr((k - b - s) / sigma_samples) for s in (-n, 0, n))


def _band(C: np.ndarray, tol: float) -> np.ndarray:
    """Indices (FFT order) of the smallest symmetric band ``|index| <= m`` (both axes) outside which
    ``Σ|C| <= tol·|C[0, 0]|``."""
    N = C.shape[0]
    a = np.abs(C)
    order = np.minimum(np.arange(N), N - np.arange(N))            # |frequency index|
    ring = np.maximum(order[:, None], order[None, :])
    mass = np.bincount(ring.ravel(), weights=a.ravel(), minlength=N // 2 + 1)
    outside = mass[::-1].cumsum()[::-1]                            # Σ over rings >= m
    ok = np.nonzero(np.append(outside[1:], 0.0) <= tol * a[0, 0])[0]
    m = int(ok[0]) if ok.size else N // 2
    return np.nonzero(order <= m)[0]


def irradiance(bench: Bench, gray_patterns, *, tol: float = 1e-5) -> np.ndarray:
    """Noiseless pixel-integrated camera irradiance (arbitrary units: a unit plane wave gives 1),
    shape (P, H, W), for gray patterns (each (h, w), even sizes) centred on the SLM. ``tol``
    bounds the error of the band-limited Fourier sum relative to the mean irradiance."""
    pats = [np.asarray(g, dtype=np.int64) for g in gray_patterns]
    up = int(bench.fine_upsample)
    n_slm = _window_slm_px(bench, max(max(p.shape) for p in pats))
    n = n_slm * up
    d = bench.slm_pitch_m / up
    E = _edge_matrix(n_slm, up, bench.crosstalk_sigma_m / d)
    # fine sample k sits at x_k = (k + 1/2)·d − (n_slm/2)·p: symmetric about the pattern centre 0
    x0 = 0.5 * d - 0.5 * n_slm * bench.slm_pitch_m
    f = np.fft.fftfreq(n, d=d)
    fz2 = 1.0 / bench.wavelength_m ** 2 - f[:, None] ** 2 - f[None, :] ** 2
    kz = np.sqrt(fz2.astype(np.complex128))          # imaginary (decaying) for evanescent waves
    H = np.exp(2j * math.pi * bench.distance_m * kz)
    # camera pixel centres in the SLM plane and the pixel-footprint transfer on the 2n grid
    h, w = bench.camera_shape
    c, s = math.cos(bench.rotation_rad), math.sin(bench.rotation_rad)
    uy = (np.arange(h) - h // 2) * bench.camera_pitch_m
    ux = (np.arange(w) - w // 2) * bench.camera_pitch_m
    UY, UX = np.meshgrid(uy, ux, indexing="ij")
    X = ((c * UX - s * UY) / bench.magnification + bench.shift_x_m - x0).reshape(-1)
    Y = ((s * UX + c * UY) / bench.magnification + bench.shift_y_m - x0).reshape(-1)
    f2 = np.fft.fftfreq(2 * n, d=d / 2)
    FY, FX = np.meshgrid(f2, f2, indexing="ij")
    side = bench.camera_pitch_m / bench.magnification
    pix = np.sinc(side * (FX * c + FY * s)) * np.sinc(side * (-FX * s + FY * c))
    ey = np.exp(2j * math.pi * f2[:, None] * Y[None, :])       # (2n, K)
    ex = np.exp(2j * math.pi * f2[:, None] * X[None, :])       # (2n, K)
    out = []
    for g in pats:
        full = np.zeros((n_slm, n_slm), dtype=np.int64)
        r0, c0 = n_slm // 2 - g.shape[0] // 2, n_slm // 2 - g.shape[1] // 2
        full[r0:r0 + g.shape[0], c0:c0 + g.shape[1]] = g
        phi = E @ bench.lut_phase_rad[full] @ E.T
        U = np.fft.fft2(np.exp(1j * phi)) * H
        # zero-pad the spectrum ×2: the field is the trigonometric polynomial of frequencies
        # −n/2 … n/2 − 1 through its samples, so |u|² (frequencies −(n−1) … n−1) fits the 2n grid exactly
        U2 = np.zeros((2 * n, 2 * n), dtype=np.complex128)
        hn = n // 2
        idx = np.r_[0:hn, 2 * n - hn:2 * n]
        U2[np.ix_(idx, idx)] = U
        u2 = np.fft.ifft2(U2) * 4                                   # the field on the 2× finer grid
        C = np.fft.fft2(np.abs(u2) ** 2) / (2 * n) ** 2 * pix      # Fourier series of the pixel mean
        # direct Fourier sum at the pixel centres, Σ_fy e^{2πi fy Y} Σ_fx C e^{2πi fx X}, over the
        # band |f_x|, |f_y| <= F that leaves out Σ|C| <= tol·C₀ (a bound on every pixel's error)
        keep = _band(C, tol)
        vals = np.einsum("ak,ak->k", ey[keep], C[np.ix_(keep, keep)] @ ex[keep]).real
        out.append(vals.reshape(h, w))
    return np.stack(out)


def frames_e(bench: Bench, gray_patterns, seed: int) -> np.ndarray:
    """Noisy frames in electrons: ``Poisson(a·irradiance + background) + N(0, read_noise²)`` with
    ``a`` chosen so the random frames average ``bench.mean_e`` signal electrons."""
    irr = irradiance(bench, gray_patterns)
    a = bench.mean_e / irr.mean()
    rng = np.random.default_rng(30_000 + seed)
    mu = a * irr + bench.background_e
    bench.extra["intensity_scale"] = float(a)
    return rng.poisson(np.clip(mu, 0, None)).astype(np.float64) + bench.read_noise_e * rng.standard_normal(mu.shape)
