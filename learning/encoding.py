"""Complex objects from images.

An image ``g`` (real, values in ``[0, 1]``, from :mod:`learning.images`) becomes a complex
object ``x`` (torch, ``(..., H, W)``, complex64 by default) by one of three encodings:

* ``"amplitude"``: ``x = g`` (real, non-negative; imaginary part 0).
* ``"phase"``: ``x = exp(i·(φ0 + g·(φ1 − φ0)))`` with ``(φ0, φ1) = phase_range_rad``, so
  ``|x| = 1``. The default range ``[0, π]`` keeps black and white distinguishable: with a span
  of 2π the values 0 and 1 map to the same phase, and a span above 2π maps different gray
  levels onto the same phase (wrapping), so it is refused.
* ``"complex"``: ``x = a·exp(i·(φ0 + p·(φ1 − φ0)))`` with amplitude ``a`` from the first
  image and ``p`` from a second, different image.

Inputs may be numpy arrays or torch tensors, one image ``(H, W)`` or a batch ``(..., H, W)``.
Values outside ``[0, 1]`` (beyond a 1e-6 rounding tolerance) or non-finite values are errors.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import EncodingError
from .images import sequence_index

__all__ = ["ENCODINGS", "DEFAULT_PHASE_RANGE_RAD", "encode", "check_phase_range",
           "ObjectSet", "partner_index"]

#: Encoding names accepted by :func:`encode` and :class:`ObjectSet`.
ENCODINGS = ("amplitude", "phase", "complex")
#: Default phase range (radians) of the "phase" and "complex" encodings.
DEFAULT_PHASE_RANGE_RAD = (0.0, math.pi)
_TOL = 1e-6
_PARTNER_STRIDE = 7919  # a prime: i ↦ (7919·i + 1 + seed) mod n spreads partners over the set


def check_phase_range(phase_range_rad) -> tuple[float, float]:
    """Validate ``(φ0, φ1)`` in radians: finite, ``φ1 ≠ φ0`` and ``|φ1 − φ0| ≤ 2π``."""
    try:
        p0, p1 = (float(v) for v in phase_range_rad)
    except (TypeError, ValueError) as exc:
        raise EncodingError(
            f"phase_range_rad must be two numbers (φ0, φ1) in radians; got {phase_range_rad!r}"
        ) from exc
    if not (math.isfinite(p0) and math.isfinite(p1)):
        raise EncodingError(f"phase_range_rad {phase_range_rad!r} must be finite (radians)")
    span = p1 - p0
    if span == 0.0:
        raise EncodingError(
            f"phase_range_rad ({p0}, {p1}) has zero span: every pixel would get the same phase; "
            f"use e.g. (0, π) = (0, {math.pi:.6f})")
    if abs(span) > 2 * math.pi + 1e-12:
        raise EncodingError(
            f"phase_range_rad ({p0}, {p1}) spans {abs(span):.6g} rad > 2π = {2 * math.pi:.6g} rad: "
            f"phases are defined modulo 2π, so different gray levels would wrap onto the same "
            f"phase and the object could not be recovered uniquely; use a span ≤ 2π, and "
            f"preferably < 2π (default (0, π)) so that 0 and 1 stay distinct")
    return p0, p1


def _as_real_tensor(img, name: str) -> torch.Tensor:
    t = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img, copy=True))
    if t.is_complex():
        raise EncodingError(f"{name} is complex ({t.dtype}); images must be real values in [0, 1]")
    if t.dtype == torch.bool:
        t = t.to(torch.float32)
    if not t.is_floating_point():
        raise EncodingError(
            f"{name} has integer dtype {t.dtype}; convert to float in [0, 1] first "
            f"(learning.images.to_unit_gray)")
    if t.ndim < 2:
        raise EncodingError(f"{name} has shape {tuple(t.shape)}; expected (H, W) or (..., H, W)")
    if t.numel() == 0:
        raise EncodingError(f"{name} is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        raise EncodingError(f"{name} contains NaN or inf; images must be finite values in [0, 1]")
    lo, hi = float(t.min()), float(t.max())
    if lo < -_TOL or hi > 1 + _TOL:
        raise EncodingError(
            f"{name} has values in [{lo:.6g}, {hi:.6g}], outside [0, 1]; normalise it "
            f"(learning.images.to_unit_gray) before encoding")
    return t.clamp(0.0, 1.0)


def encode(amplitude_img, phase_img=None, *, encoding: str = "amplitude",
           phase_range_rad=DEFAULT_PHASE_RANGE_RAD,
           dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Encode image(s) in ``[0, 1]`` as a complex object ``(..., H, W)`` (module docstring).

    * ``encoding="amplitude"``: ``x = amplitude_img``; ``phase_img`` must be None.
    * ``encoding="phase"``: ``x = exp(i(φ0 + g·(φ1 − φ0)))`` where ``g`` is the single image
      given (``amplitude_img``, or ``phase_img`` when ``amplitude_img`` is None).
    * ``encoding="complex"``: ``x = amplitude_img · exp(i(φ0 + phase_img·(φ1 − φ0)))``; both
      images are required and must have the same shape.

    Batches ``(B, H, W)`` (any leading axes) are encoded element-wise. ``phase_range_rad`` is
    ``(φ0, φ1)`` in radians (:func:`check_phase_range`). ``dtype`` is ``torch.complex64``
    (default) or ``torch.complex128``; the arithmetic runs in float64 and is cast at the end.
    """
    if encoding not in ENCODINGS:
        raise EncodingError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
    if dtype not in (torch.complex64, torch.complex128):
        raise EncodingError(f"dtype must be torch.complex64 or torch.complex128; got {dtype}")
    if encoding == "amplitude":
        if phase_img is not None:
            raise EncodingError(
                "encoding='amplitude' takes one image; a phase image was also given — use "
                "encoding='complex' to combine amplitude and phase")
        if amplitude_img is None:
            raise EncodingError("encoding='amplitude' needs an image; got None")
        a = _as_real_tensor(amplitude_img, "amplitude image").to(torch.float64)
        return torch.complex(a, torch.zeros_like(a)).to(dtype)
    p0, p1 = check_phase_range(phase_range_rad)
    if encoding == "phase":
        if amplitude_img is not None and phase_img is not None:
            raise EncodingError(
                "encoding='phase' takes one image but two were given; use encoding='complex' "
                "for amplitude and phase")
        g = amplitude_img if amplitude_img is not None else phase_img
        if g is None:
            raise EncodingError("encoding='phase' needs an image; got None")
        phi = p0 + _as_real_tensor(g, "phase image").to(torch.float64) * (p1 - p0)
        return torch.polar(torch.ones_like(phi), phi).to(dtype)
    if amplitude_img is None or phase_img is None:
        raise EncodingError(
            "encoding='complex' needs two images: amplitude_img (|x|) and phase_img "
            f"(arg x); got amplitude_img={'None' if amplitude_img is None else 'given'}, "
            f"phase_img={'None' if phase_img is None else 'given'}")
    a = _as_real_tensor(amplitude_img, "amplitude image").to(torch.float64)
    g = _as_real_tensor(phase_img, "phase image").to(torch.float64)
    if a.shape != g.shape:
        raise EncodingError(
            f"amplitude image {tuple(a.shape)} and phase image {tuple(g.shape)} differ in shape; "
            f"give images of the same size")
    return torch.polar(a, p0 + g * (p1 - p0)).to(dtype)


def partner_index(i: int, n: int, seed: int = 0) -> int:
    """Index of the image that gives the phase of object ``i`` in a "complex" :class:`ObjectSet`.

    ``j = (7919·i + 1 + seed) mod n``, and ``j + 1 mod n`` if that is ``i``: deterministic,
    never ``i`` itself when ``n > 1`` (``n = 1`` pairs the image with itself).
    """
    if n < 1:
        raise EncodingError(f"partner_index needs n ≥ 1 images; got n={n}")
    j = (_PARTNER_STRIDE * int(i) + 1 + int(seed)) % n
    if j == i and n > 1:
        j = (j + 1) % n
    return j


class ObjectSet(Sequence):
    """A sequence of complex objects built on access from a sequence of images.

    ``images`` is any sequence of ``(H, W)`` images in ``[0, 1]`` (an
    :class:`learning.images.ImageSet`, a list, a ``(N, H, W)`` array or tensor). Item ``i`` is
    ``encode(images[i], …)`` for "amplitude" and "phase", and
    ``encode(images[i], images[partner_index(i, n, seed)], encoding="complex", …)`` for
    "complex" — amplitude from image ``i``, phase from a deterministic, different image.
    Items are complex tensors ``(H, W)`` of ``dtype`` (complex64 by default).
    """

    def __init__(self, images, *, encoding: str = "amplitude",
                 phase_range_rad=DEFAULT_PHASE_RANGE_RAD, seed: int = 0,
                 dtype: torch.dtype = torch.complex64):
        if encoding not in ENCODINGS:
            raise EncodingError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
        if encoding != "amplitude":
            phase_range_rad = check_phase_range(phase_range_rad)
        if len(images) < 1:
            raise EncodingError("ObjectSet needs at least one image; the image source is empty")
        self.images = images
        self.encoding = encoding
        self.phase_range_rad = tuple(float(v) for v in phase_range_rad)
        self.seed = int(seed)
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.images)

    def partner(self, i: int) -> int:
        """Index of the phase image of object ``i`` (meaningful for ``encoding="complex"``)."""
        return partner_index(i, len(self), self.seed)

    def __getitem__(self, i) -> torch.Tensor:
        j = sequence_index(i, len(self), "object")
        if self.encoding == "complex":
            return encode(self.images[j], self.images[self.partner(j)], encoding="complex",
                          phase_range_rad=self.phase_range_rad, dtype=self.dtype)
        return encode(self.images[j], encoding=self.encoding,
                      phase_range_rad=self.phase_range_rad, dtype=self.dtype)

    def __repr__(self) -> str:
        return (f"<ObjectSet {len(self)} objects, encoding={self.encoding}, "
                f"phase_range_rad={self.phase_range_rad}>")
