"""Registration of captures to simulated patterns (scikit-image), with a quality score.

:func:`register` aligns a captured image (``moving``) to a simulated one (``fixed``) on the
same pixel grid:

1. global translation by subpixel phase cross-correlation
   (:func:`skimage.registration.phase_cross_correlation`, Guizar-Sicairos et al., Opt. Lett. 33,
   156 (2008));
2. local translations of overlapping tiles (again phase correlation, starting from the global
   shift), giving point correspondences ``u → u + d(u)``;
3. a similarity or affine transform fitted to them (:func:`skimage.transform.estimate_transform`),
   with the tile residuals as a consistency check;
4. ``moving`` warped into ``fixed``'s frame (:func:`skimage.transform.warp`) and the **quality
   score**: the Pearson correlation of the two over the valid overlap.

Convention: the transform ``T`` maps *moving* pixel coordinates ``(x, y) = (col, row)`` to
*fixed* coordinates, ``moving(u) ≈ fixed(T(u))``. A match whose quality is below
``min_quality`` raises :class:`~calibration.errors.RegistrationError` saying how poor it is and
what to check (pattern id, nominal distance and pitches, orientation of the camera image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import RegistrationError

__all__ = ["Registration", "register", "pearson"]


@dataclass
class Registration:
    transform: object            # skimage GeometricTransform: moving (col, row) → fixed
    kind: str                    # "similarity" | "affine" | "translation"
    quality: float               # Pearson r of warped moving vs fixed on the overlap
    tile_rms_px: float           # rms misfit of the tile shifts to the transform
    n_tiles: int
    warped: np.ndarray           # moving resampled onto fixed's grid (NaN outside)

    @property
    def scale(self) -> float:
        m = self.transform.params
        return float(math.sqrt(abs(np.linalg.det(m[:2, :2]))))

    @property
    def rotation_rad(self) -> float:
        m = self.transform.params
        return float(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))

    def centred(self, shape):
        """(scale, rotation, (tx, ty)) of the transform about the pixel ``(W//2, H//2)``."""
        h, w = shape
        c = np.array([w // 2, h // 2], dtype=np.float64)
        t = self.transform(c[None])[0] - c
        return self.scale, self.rotation_rad, (float(t[0]), float(t[1]))


def pearson(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    m = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        m &= mask
    if m.sum() < 16:
        return float("nan")
    x, y = a[m] - a[m].mean(), b[m] - b[m].mean()
    d = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 0 else float("nan")


def _fill(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        a[bad] = np.nanmedian(a)
    return a


def _estimate(mv, fx, kind, tiles, upsample_factor):
    """One pass: global phase correlation, tile correspondences, transform fit."""
    from skimage.registration import phase_cross_correlation
    from skimage.transform import AffineTransform, estimate_transform

    h, w = mv.shape
    shift, _, _ = phase_cross_correlation(fx, mv, upsample_factor=upsample_factor, normalization=None)
    # the returned (row, col) shift registers moving onto the reference: moving(u) ≈ fixed(u + shift)
    g = np.array([shift[1], shift[0]])
    src, dst = [], []
    if kind != "translation" and tiles >= 2:
        size = int(2 * min(h, w) / (tiles + 1))
        gr, gc = int(round(shift[0])), int(round(shift[1]))
        for r0 in np.linspace(0, h - size, tiles).round().astype(int):
            for c0 in np.linspace(0, w - size, tiles).round().astype(int):
                r1, c1 = r0 + gr, c0 + gc  # the fixed tile where this moving tile should land
                if r1 < 0 or c1 < 0 or r1 + size > h or c1 + size > w:
                    continue
                s, _, _ = phase_cross_correlation(fx[r1:r1 + size, c1:c1 + size], mv[r0:r0 + size, c0:c0 + size],
                                                  upsample_factor=upsample_factor, normalization=None)
                cen = np.array([c0 + (size - 1) / 2, r0 + (size - 1) / 2])
                src.append(cen)
                dst.append(cen + np.array([gc + s[1], gr + s[0]]))
    if kind != "translation" and len(src) >= (3 if kind == "affine" else 2):
        src, dst = np.array(src), np.array(dst)
        T = estimate_transform(kind, src, dst)
        if T is not None and np.all(np.isfinite(T.params)):
            rms = float(np.sqrt(np.mean(np.sum((T(src) - dst) ** 2, axis=1))))
            return T, rms, len(src), kind
    return AffineTransform(translation=g), 0.0, 0, "translation"


def register(moving: np.ndarray, fixed: np.ndarray, *, kind: str = "similarity", tiles: int = 3,
             upsample_factor: int = 20, min_quality: float = 0.5, raise_on_poor: bool = True) -> Registration:
    """Align ``moving`` (capture) to ``fixed`` (simulation); see the module docstring."""
    from skimage.transform import warp

    if kind not in ("similarity", "affine", "translation"):
        raise RegistrationError(f"kind must be 'similarity', 'affine' or 'translation', got {kind!r}")
    mv, fx = _fill(moving), _fill(fixed)
    if mv.shape != fx.shape or mv.ndim != 2:
        raise RegistrationError(f"moving {mv.shape} and fixed {fx.shape} must be 2-D images of one shape; "
                                f"resample the simulation onto the camera grid first")
    mask_ok = np.isfinite(moving)
    T, rms, n_tiles, kind_used = _estimate(mv, fx, kind, tiles, upsample_factor)
    # refine: re-register the capture warped by the estimate; compose the residual transform
    for _ in range(2 if kind_used != "translation" else 0):
        w1 = warp(mv, T.inverse, order=1, mode="edge", preserve_range=True)
        R, rms, n_tiles, k2 = _estimate(w1, fx, kind, tiles, upsample_factor)
        if k2 != kind_used:
            break
        T = T + R  # apply T, then the residual R
    # moving → fixed frame: warped(v) = moving(T⁻¹(v))
    warped = warp(mv, T.inverse, order=1, mode="constant", cval=np.nan, preserve_range=True)
    valid = warp(mask_ok.astype(float), T.inverse, order=0, mode="constant", cval=0.0) > 0.5
    q = pearson(warped, fx, valid)
    reg = Registration(transform=T, kind=kind_used, quality=q, tile_rms_px=rms, n_tiles=n_tiles, warped=warped)
    if raise_on_poor and not (q >= min_quality):
        raise RegistrationError(
            f"registration quality r = {q:.3g} is below {min_quality:g} (Pearson correlation of the aligned "
            f"capture with the simulated pattern; 1 is perfect, 0 unrelated); tile misfit {rms:.3g} px. Check "
            f"that the frame shows the pattern named by its pattern_id, the nominal distance and camera/SLM "
            f"pitches, and the camera orientation (a flipped or transposed image does not register)")
    return reg
