"""Sampling grids.

A :class:`Grid` is ``shape = (H, W)`` samples at a square ``pitch_m``. The optical axis sits at
pixel index ``(H // 2, W // 2)``, so the spatial coordinate of index ``j`` along an axis of
``N`` samples is ``(j - N // 2) * pitch_m``. Frequencies come from :func:`torch.fft.fftfreq`
(spacing ``1 / (N * pitch_m)``, a DC sample at index 0 for every ``N``); the *centred*
frequency axis is ``fftshift(fftfreq(N, pitch_m))`` whose DC sample is at index ``N // 2``,
matching the spatial convention.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from . import _validate
from .errors import ShapeError


def coords(n: int, pitch_m: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Sample positions ``(j - n // 2) * pitch_m`` for ``j = 0 … n-1`` (axis at ``n // 2``)."""
    return (torch.arange(n, dtype=dtype, device=device) - (n // 2)) * pitch_m


def freqs(n: int, pitch_m: float, *, centered: bool = False, dtype=torch.float64, device=None) -> torch.Tensor:
    """Spatial frequencies in cycles/m from ``torch.fft.fftfreq`` (DC at 0, or at ``n//2`` if centred)."""
    if isinstance(pitch_m, torch.Tensor):  # a tensor pitch (e.g. fitted) keeps its gradient
        f = torch.fft.fftfreq(n, dtype=dtype, device=device) / pitch_m.to(dtype)
    else:
        f = torch.fft.fftfreq(n, d=pitch_m, dtype=dtype, device=device)
    return torch.fft.fftshift(f) if centered else f


def fast_size(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are all in {2, 3, 5, 7} (fast FFT sizes)."""
    if n < 1:
        raise ShapeError(f"FFT size must be >= 1, got {n}")
    m = n
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def centered_fft2(u: torch.Tensor) -> torch.Tensor:
    """DFT with the axis at index N//2 on both sides: ``fftshift(fft2(ifftshift(u)))``."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(u, dim=dims)), dim=dims)


def centered_ifft2(u: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`centered_fft2` (``ifft2`` keeps its 1/(H·W) factor)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(u, dim=dims)), dim=dims)


def pad_centered(u: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two axes to ``shape`` keeping the axis sample at index N//2 → M//2."""
    h, w = u.shape[-2:]
    mh, mw = shape
    if mh < h or mw < w:
        raise ShapeError(f"pad_centered: target {shape} is smaller than the field {(h, w)}")
    top = mh // 2 - h // 2
    left = mw // 2 - w // 2
    out = u.new_zeros(u.shape[:-2] + (mh, mw))
    out[..., top:top + h, left:left + w] = u
    return out


def crop_centered(u: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """Adjoint of :func:`pad_centered`: take the centred ``shape`` window (axis M//2 → N//2)."""
    mh, mw = u.shape[-2:]
    h, w = shape
    if mh < h or mw < w:
        raise ShapeError(f"crop_centered: target {shape} is larger than the field {(mh, mw)}")
    top = mh // 2 - h // 2
    left = mw // 2 - w // 2
    return u[..., top:top + h, left:left + w]


@dataclass(frozen=True)
class Grid:
    """A square-pitch sampling grid of ``shape = (H, W)`` samples, axis at ``(H//2, W//2)``."""

    shape: Tuple[int, int]
    pitch_m: float

    def __post_init__(self):
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ShapeError(f"Grid.shape must be (H, W) with H, W >= 1, got {self.shape}")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        object.__setattr__(self, "pitch_m", _validate.pitch("pitch_m", self.pitch_m))

    @property
    def extent_m(self) -> Tuple[float, float]:
        """Window side lengths ``(H·pitch, W·pitch)`` in metres."""
        return (self.shape[0] * self.pitch_m, self.shape[1] * self.pitch_m)

    def y_m(self, **kw) -> torch.Tensor:
        return coords(self.shape[0], self.pitch_m, **kw)

    def x_m(self, **kw) -> torch.Tensor:
        return coords(self.shape[1], self.pitch_m, **kw)

    def fy(self, *, centered: bool = False, **kw) -> torch.Tensor:
        return freqs(self.shape[0], self.pitch_m, centered=centered, **kw)

    def fx(self, *, centered: bool = False, **kw) -> torch.Tensor:
        return freqs(self.shape[1], self.pitch_m, centered=centered, **kw)

    def meshgrid(self, **kw) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(Y, X)`` coordinate arrays of shape ``(H, W)`` in metres."""
        return torch.meshgrid(self.y_m(**kw), self.x_m(**kw), indexing="ij")


    def critical_distance_m(self, wavelength_m: float) -> float:
        """``N · pitch² / λ`` (N the larger side): below it transfer-function kernels are well
        sampled, above it impulse-response and single-FFT kernels are."""
        lam = _validate.wavelength(wavelength_m)
        return max(self.shape) * self.pitch_m ** 2 / lam
