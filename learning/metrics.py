"""Reconstruction metrics for phase retrieval, with the trivial ambiguities removed.

Phase retrieval from intensities ``y = |A x|²`` can only recover ``x`` up to a global phase
``x e^{iφ}`` (and, for a single Fourier magnitude, up to translation and the twin image
``conj(x(-r))``). Every metric here therefore *aligns* the estimate to the reference before it
compares them, and every PSNR uses a **fixed, caller-given data range** — never one inferred
from the data, which would make numbers from different images incomparable.

Metric conventions
------------------
* Images are torch tensors of shape ``(..., H, W)``; metrics reduce over the last two axes and
  return one value per sample (shape ``(...)``).
* Inner product: ``⟨a, b⟩ = Σ a · conj(b)`` over the last two axes (linear in the first argument).
* Global-phase alignment: ``x̂ ← x̂ · e^{-i∠⟨x̂, x⟩}``, the minimiser of ``‖x̂ e^{iφ} − x‖``.
* PSNR: ``10·log10(R² / MSE)`` with ``R`` the data range; capped at :data:`PSNR_CAP_DB`
  (200 dB) so that an exact recovery (MSE = 0 → ∞ dB) stays a finite, JSON-serialisable number.
  The cap is far above what float32 round-off allows (≈ 140 dB for unit-range data), so it only
  ever replaces "identical". A few exact recoveries still pull the *mean* PSNR of a batch up
  towards the cap; report the median alongside (``summarize`` does).

References
----------
* E. J. Candès, X. Li, M. Soltanolkotabi, "Phase retrieval via Wirtinger flow: theory and
  algorithms", IEEE Trans. Inf. Theory 61(4), 1985–2007 (2015) — relative error
  ``dist(x̂, x)/‖x‖`` with ``dist = min_φ ‖x̂ e^{iφ} − x‖``.
* Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE Trans. Image Process. 13(4), 600–612 (2004).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Union

import numpy as np
import torch

from .errors import MetricError

__all__ = [
    "MetricError", "PSNR_CAP_DB", "align_global_phase", "relative_error", "psnr",
    "psnr_amplitude", "psnr_phase", "ssim_amplitude", "ssim_phase", "success", "summarize",
    "evaluate",
]

#: PSNR values are clipped to this many dB (an exact recovery would otherwise give +inf).
PSNR_CAP_DB = 200.0

ArrayLike = Union[torch.Tensor, np.ndarray, Iterable[float]]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_tensor(name: str, t) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise MetricError(f"{name} must be a torch.Tensor or numpy array, got {type(t).__name__}")
    if t.ndim < 2:
        raise MetricError(f"{name} must have shape (..., H, W); got shape {tuple(t.shape)}")
    return t


def _pair(x_hat, x):
    x_hat = _as_tensor("x_hat", x_hat)
    x = _as_tensor("x", x)
    if x_hat.shape[-2:] != x.shape[-2:]:
        raise MetricError(
            f"x_hat has image shape {tuple(x_hat.shape[-2:])} but the reference x has "
            f"{tuple(x.shape[-2:])}; crop or resample the estimate to the reference grid"
        )
    try:
        torch.broadcast_shapes(x_hat.shape, x.shape)
    except RuntimeError as exc:
        raise MetricError(
            f"x_hat shape {tuple(x_hat.shape)} and x shape {tuple(x.shape)} do not broadcast; "
            f"give both the same leading (batch) axes"
        ) from exc
    return x_hat, x


def _complex(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t
    return t.to(torch.complex128 if t.dtype == torch.float64 else torch.complex64)


def _common_complex(x_hat: torch.Tensor, x: torch.Tensor):
    x_hat, x = _complex(x_hat), _complex(x)
    dt = torch.promote_types(x_hat.dtype, x.dtype)
    return x_hat.to(dt), x.to(dt)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``⟨a, b⟩ = Σ a·conj(b)`` over the last two axes, kept as (..., 1, 1)."""
    return (a * b.conj()).sum(dim=(-2, -1), keepdim=True)


def _sqnorm(a: torch.Tensor) -> torch.Tensor:
    """``‖a‖²`` over the last two axes, kept as (..., 1, 1); ``a`` is complex (callers promote)."""
    return (a.real ** 2 + a.imag ** 2).sum(dim=(-2, -1), keepdim=True)


def _check_range(name: str, data_range) -> float:
    if data_range is None:
        raise MetricError(
            f"{name} is required and is never inferred from the data (an inferred range makes "
            f"PSNRs of different images incomparable); pass the fixed range of the quantity, "
            f"e.g. data_range=1.0 for amplitudes in [0, 1] or 2*math.pi for phases"
        )
    try:
        r = float(data_range)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name} must be a positive number, got {data_range!r}") from exc
    if not math.isfinite(r) or r <= 0:
        raise MetricError(f"{name} must be a finite positive number, got {r!r}; pass the fixed "
                          f"range of the quantity (1.0 for unit amplitudes, 2π for phases)")
    return r


def align_global_phase(x_hat, x, *, align_scale: bool = False) -> torch.Tensor:
    """Remove the global-phase ambiguity of ``x_hat`` relative to the reference ``x``.

    ``x̂ ← x̂ · e^{−i∠⟨x̂, x⟩}`` with ``⟨a, b⟩ = Σ a·conj(b)`` over the last two axes, per sample
    (inputs ``(..., H, W)``, leading axes broadcast). This is the exact minimiser of
    ``‖x̂ e^{iφ} − x‖`` over φ. If ``⟨x̂, x⟩ = 0`` the phase is undefined and ``x̂`` is returned
    unchanged.

    ``align_scale=True`` fits the least-squares complex scale instead,
    ``α = argmin_α ‖α x̂ − x‖ = conj(⟨x̂, x⟩)/‖x̂‖²``, and returns ``α x̂``. Use it when the
    measurement scale is unknown (uncalibrated source power, exposure or detector gain: the
    intensities then fix ``x`` only up to a complex scalar). Do not use it to score a method
    that is supposed to recover the absolute scale — it hides scale errors.

    Returns a complex tensor (real inputs are promoted: the aligned estimate may be complex).
    """
    x_hat, x = _pair(x_hat, x)
    x_hat, x = _common_complex(x_hat, x)
    c = _inner(x_hat, x)
    if align_scale:
        n2 = _sqnorm(x_hat)
        alpha = torch.where(n2 > 0, c.conj() / torch.where(n2 > 0, n2, torch.ones_like(n2)),
                            torch.zeros_like(c))
        return alpha * x_hat
    mag = c.abs()
    phase = torch.where(mag > 0, c.conj() / torch.where(mag > 0, mag, torch.ones_like(mag)),
                        torch.ones_like(c))
    return x_hat * phase


def relative_error(x_hat, x, *, align_scale: bool = False) -> torch.Tensor:
    """Relative error after global-phase alignment, per sample:

    ``min_φ ‖x̂ e^{iφ} − x‖ / ‖x‖`` (Candès, Li & Soltanolkotabi 2015, eq. 1.4), evaluated as
    the norm of the aligned difference (not via ``‖x̂‖² + ‖x‖² − 2|⟨x̂, x⟩|``, which cancels
    catastrophically at small errors). ``align_scale=True`` also fits a complex scale (see
    :func:`align_global_phase`). Raises :class:`MetricError` for a zero reference.
    """
    x_hat, x = _pair(x_hat, x)
    xa = align_global_phase(x_hat, x, align_scale=align_scale)
    xc = xa.new_zeros(()) + _complex(x).to(xa.dtype)
    ref = _sqnorm(xc).sqrt()
    if bool((ref == 0).any()):
        raise MetricError("reference x has zero norm in at least one sample; the relative "
                          "error is undefined — drop empty samples or use an absolute error")
    err = _sqnorm(xa - xc).sqrt()
    return (err / ref)[..., 0, 0]


def success(x_hat, x, tol: float = 1e-4, *, align_scale: bool = False) -> torch.Tensor:
    """Exact-recovery indicator per sample: ``relative_error(x̂, x) < tol`` (bool tensor).

    ``tol = 1e-4`` is a noiseless exact-recovery criterion (Candès et al. 2015 declare success
    below 1e-5 in their experiments); pass a looser tol for noisy data.
    """
    if not (tol > 0):
        raise MetricError(f"tol must be positive, got {tol!r}")
    return relative_error(x_hat, x, align_scale=align_scale) < tol


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------
def psnr(a, b, *, data_range=None) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample, ``10·log10(R² / mean|a − b|²)`` in dB.

    ``data_range`` (``R``) is **required** and never inferred from the data; a missing or
    non-positive value raises :class:`MetricError`. The mean runs over the last two axes.
    Results are clipped at :data:`PSNR_CAP_DB` (= 200 dB): identical inputs give 200, not inf.
    Example: ``a = b + 0.1`` with ``data_range = 1`` gives exactly 20 dB.
    """
    r = _check_range("data_range", data_range)
    a, b = _pair(a, b)
    d = a - b
    mse = (d.real ** 2 + d.imag ** 2 if d.is_complex() else d ** 2).mean(dim=(-2, -1))
    mse = mse.to(torch.float64)
    floor = r * r * 10.0 ** (-PSNR_CAP_DB / 10.0)
    out = 10.0 * torch.log10(r * r / torch.clamp(mse, min=floor))
    return torch.clamp(out, max=PSNR_CAP_DB)


def psnr_amplitude(x_hat, x, data_range: float = 1.0) -> torch.Tensor:
    """PSNR of the amplitudes ``|x̂|`` vs ``|x|`` (global-phase invariant by construction).

    ``data_range = 1.0`` assumes amplitudes normalised to [0, 1] (the dataset convention); pass
    the fixed maximum amplitude of your data otherwise — it is never inferred.
    """
    x_hat, x = _pair(x_hat, x)
    return psnr(x_hat.abs(), x.abs(), data_range=data_range)


def _phase_difference(x_hat, x) -> torch.Tensor:
    """Wrap-aware phase difference ``∠(x̂_aligned · conj(x)) ∈ (−π, π]`` after alignment."""
    xa = align_global_phase(x_hat, x)
    return torch.angle(xa * _complex(x).to(xa.dtype).conj())


def psnr_phase(x_hat, x, data_range: float = 2 * math.pi, *, mask=None) -> torch.Tensor:
    """PSNR of the phase, after global-phase alignment and with a wrap-aware difference.

    ``Δ = ∠(x̂ e^{iφ*} · conj(x)) ∈ (−π, π]`` (so −π+ε vs π−ε counts as 2ε, not 2π − 2ε) and
    ``PSNR = 10·log10(R² / mean Δ²)``. ``data_range = 2π`` (default) is the full range of a
    wrapped phase; pass the actual phase range of your objects (e.g. π for phase objects in
    [0, π]) to compare with papers that use it — it is never inferred.

    ``mask`` (bool, broadcastable to ``(..., H, W)``) restricts the mean to pixels where the
    phase is meaningful (e.g. ``|x| > 0.05``): the phase of a near-zero amplitude is noise.
    Capped at :data:`PSNR_CAP_DB`.
    """
    r = _check_range("data_range", data_range)
    dphi = _phase_difference(x_hat, x).to(torch.float64)
    if mask is None:
        mse = (dphi ** 2).mean(dim=(-2, -1))
    else:
        m = torch.as_tensor(mask, device=dphi.device).to(torch.float64)
        m = torch.broadcast_to(m, dphi.shape)
        cnt = m.sum(dim=(-2, -1))
        if bool((cnt == 0).any()):
            raise MetricError("psnr_phase mask selects no pixel in at least one sample; "
                              "lower the amplitude threshold that built the mask")
        mse = (dphi ** 2 * m).sum(dim=(-2, -1)) / cnt
    floor = r * r * 10.0 ** (-PSNR_CAP_DB / 10.0)
    out = 10.0 * torch.log10(r * r / torch.clamp(mse, min=floor))
    return torch.clamp(out, max=PSNR_CAP_DB)


# --------------------------------------------------------------------------------------------
# SSIM (scikit-image)
# --------------------------------------------------------------------------------------------
def _ssim_batch(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    from skimage.metrics import structural_similarity

    a, b = torch.broadcast_tensors(a, b)
    lead = a.shape[:-2]
    h, w = a.shape[-2:]
    side = min(h, w)
    if side < 3:
        raise MetricError(f"SSIM needs images of at least 3×3 pixels, got {h}×{w}; use PSNR "
                          f"or the relative error for such small images")
    win = min(7, side if side % 2 == 1 else side - 1)
    an = a.detach().to(torch.float64).cpu().reshape(-1, h, w).numpy()
    bn = b.detach().to(torch.float64).cpu().reshape(-1, h, w).numpy()
    vals = [structural_similarity(p, q, data_range=data_range, win_size=win)
            for p, q in zip(an, bn)]
    return torch.tensor(vals, dtype=torch.float64).reshape(lead)


def ssim_amplitude(x_hat, x, data_range: float = 1.0) -> torch.Tensor:
    """SSIM (Wang et al. 2004, via ``skimage.metrics.structural_similarity``) of ``|x̂|`` vs
    ``|x|`` per sample, with the explicit, fixed ``data_range`` (default 1.0: unit amplitudes).

    Uniform 7×7 window (skimage default), shrunk to the largest odd size that fits
    images smaller than 7 pixels. Not differentiable (numpy); returns float64 of shape ``(...)``.
    """
    r = _check_range("data_range", data_range)
    x_hat, x = _pair(x_hat, x)
    return _ssim_batch(x_hat.abs(), x.abs(), r)


def ssim_phase(x_hat, x, data_range: float = 2 * math.pi) -> torch.Tensor:
    """SSIM of the phase after global-phase alignment, wrap-aware.

    The estimate's phase is unwrapped *relative to the reference*:
    ``φ̂' = φ + wrap(φ̂_aligned − φ)``, so a pixel at −π+ε vs π−ε differs by 2ε. SSIM is then
    computed between ``φ̂'`` and ``φ = ∠x`` with the fixed ``data_range`` (default 2π).
    """
    r = _check_range("data_range", data_range)
    x_hat, x = _pair(x_hat, x)
    phi = torch.angle(_complex(x))
    dphi = _phase_difference(x_hat, x)
    return _ssim_batch(phi + dphi.to(phi.dtype), phi, r)


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------
def _to_numpy_1d(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to(torch.float64).cpu().reshape(-1).numpy()
    return np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                      dtype=np.float64).reshape(-1)


def summarize(values: ArrayLike) -> Dict[str, float]:
    """Summary statistics of per-sample values as plain Python numbers (JSON-serialisable):
    ``{"mean", "median", "std", "min", "max", "n"}``. ``std`` is the population standard
    deviation (ddof = 0). An empty input gives NaN statistics and ``n = 0``. Boolean inputs
    (e.g. :func:`success`) give the success rate as ``mean``.
    """
    v = _to_numpy_1d(values)
    if v.size == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "std": nan, "min": nan, "max": nan, "n": 0}
    return {"mean": float(np.mean(v)), "median": float(np.median(v)), "std": float(np.std(v)),
            "min": float(np.min(v)), "max": float(np.max(v)), "n": int(v.size)}


def evaluate(x_hat, x, *, amplitude_range: float = 1.0, phase_range_rad: float = 2 * math.pi,
             tol: float = 1e-4, align_scale: bool = False) -> dict:
    """All metrics for a batch of reconstructions, as a JSON-serialisable dict.

    Returns ``{"per_sample": {name: [float, ...]}, "summary": {name: summarize(...)},
    "success_rate": float, "n": int, "settings": {...}}`` with names ``relative_error``,
    ``psnr_amplitude`` (range ``amplitude_range``), ``psnr_phase`` (range ``phase_range_rad``),
    ``ssim_amplitude``, ``ssim_phase`` and ``success`` (relative error < ``tol``; booleans).
    Batch axes are flattened in C order. PSNRs are capped at :data:`PSNR_CAP_DB` (see module
    docstring); with several exact recoveries the mean PSNR is dominated by the cap, so read
    the median.
    """
    amplitude_range = _check_range("amplitude_range", amplitude_range)
    phase_range_rad = _check_range("phase_range_rad", phase_range_rad)
    x_hat, x = _pair(x_hat, x)
    x_hat, x = torch.broadcast_tensors(_complex(x_hat.detach()), _complex(x.detach()))
    rel = relative_error(x_hat, x, align_scale=align_scale)
    xa = align_global_phase(x_hat, x, align_scale=align_scale) if align_scale else x_hat
    per = {
        "relative_error": rel,
        "psnr_amplitude": psnr_amplitude(xa, x, amplitude_range),
        "psnr_phase": psnr_phase(xa, x, phase_range_rad),
        "ssim_amplitude": ssim_amplitude(xa, x, amplitude_range),
        "ssim_phase": ssim_phase(xa, x, phase_range_rad),
    }
    ok = rel < tol
    per_lists = {k: [float(v) for v in _to_numpy_1d(t)] for k, t in per.items()}
    per_lists["success"] = [bool(b) for b in ok.reshape(-1).tolist()]
    summary = {k: summarize(t) for k, t in per.items()}
    n = len(per_lists["success"])
    return {
        "per_sample": per_lists,
        "summary": summary,
        "success_rate": float(sum(per_lists["success"]) / n) if n else float("nan"),
        "n": n,
        "settings": {"amplitude_range": amplitude_range, "phase_range_rad": phase_range_rad,
                     "tol": float(tol), "align_scale": bool(align_scale),
                     "psnr_cap_db": PSNR_CAP_DB},
    }
