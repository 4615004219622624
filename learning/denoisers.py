r"""Denoisers ``D(x, σ)`` for plug-and-play reconstruction, behind one interface.

A denoiser is a :class:`Denoiser` module: ``forward(x, sigma) -> x_denoised`` with ``x`` a real
``(B, C, H, W)`` tensor and ``sigma`` the std of the (assumed additive white Gaussian) noise in
``x``'s own units — a float or one value per sample (a ``(B,)`` tensor). The output has ``x``'s
shape, dtype and device. Channels are denoised independently by the classical denoisers below
(for a complex object the solvers pass ``C = 2``: real and imaginary parts; a real object is
``C = 1``). ``sigma = 0`` returns ``x`` unchanged.

A learned network plugs in by subclassing :class:`Denoiser` (set ``differentiable = True`` when
its ``forward`` is built from torch operations, so solvers may backpropagate through it), e.g.::

    class CNNDenoiser(Denoiser):
        differentiable = True
        def __init__(self, net): super().__init__(); self.net = net
        def forward(self, x, sigma):
            s = self.sigma_map(x, sigma)             # (B, 1, H, W) noise-level map
            return x - self.net(torch.cat([x, s], 1))

and is then used as ``solve(op, y, "pnp", denoiser=CNNDenoiser(net))``.

Classical denoisers (numpy, from scikit-image; not differentiable; run on the CPU):

* ``"nlm"`` — :class:`NLMDenoiser`, non-local means (Buades, Coll & Morel 2005) via
  :func:`skimage.restoration.denoise_nl_means` with ``h = h_factor·σ`` and ``sigma=σ`` (the
  fast mode's distance then subtracts the expected noise contribution ``2σ²``).
* ``"wavelet"`` — :class:`WaveletDenoiser`, wavelet shrinkage (BayesShrink, Chang, Yu & Vetterli
  2000, or VisuShrink, Donoho & Johnstone 1994) via :func:`skimage.restoration.denoise_wavelet`;
  needs PyWavelets (a base dependency).
* ``"tv"`` — :class:`TVDenoiser`, total-variation denoising by Chambolle's projection algorithm
  (Chambolle 2004) via :func:`skimage.restoration.denoise_tv_chambolle`: the proximal map
  ``argmin_u ½‖u − x‖² + λ·TV(u)`` (isotropic TV, forward differences) with
  ``λ = weight_factor·σ`` or a fixed ``weight``.
* ``"bm3d"`` — :class:`BM3DDenoiser`, BM3D (Dabov et al. 2007) from the ``bm3d`` package, an
  optional extra (``pip install .[bm3d]``; its licence is non-commercial).

Registry: :data:`DENOISERS` (name → class) and :func:`make_denoiser`.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch import nn

from .errors import DenoiserError

__all__ = ["Denoiser", "NLMDenoiser", "WaveletDenoiser", "TVDenoiser", "BM3DDenoiser",
           "DENOISERS", "make_denoiser", "DenoiserError"]

Sigma = Union[float, torch.Tensor]


def _check_input(x, sigma) -> torch.Tensor:
    """Validate ``x`` (real ``(B, C, H, W)``) and ``sigma``; return sigma as a float64 ``(B,)``
    tensor on the CPU."""
    if not isinstance(x, torch.Tensor):
        raise DenoiserError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise DenoiserError(f"x must be a real floating-point tensor, got dtype {x.dtype}; pass a "
                            f"complex object as two channels, torch.view_as_real(z).movedim(-1, 1)")
    if x.ndim != 4:
        raise DenoiserError(f"x has shape {tuple(x.shape)}; expected (B, C, H, W) — add the batch "
                            f"and channel axes, e.g. x[None, None] for one (H, W) image")
    if not bool(torch.isfinite(x).all()):
        raise DenoiserError("x contains NaN/inf; a denoiser needs finite input")
    s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu()
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise DenoiserError(f"sigma has shape {tuple(s.shape)}; pass a float or one value per "
                            f"sample, shape ({x.shape[0]},)")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise DenoiserError(f"sigma must be finite and ≥ 0 (the noise std in x's units), got "
                            f"{sigma!r}")
    return s


class Denoiser(nn.Module):
    """Base class: ``forward(x, sigma) -> x_denoised`` (see the module docstring).

    ``differentiable``: whether ``forward`` supports autograd w.r.t. ``x`` (torch networks);
    the classical ones below are numpy code and set it False, and solvers refuse
    ``differentiable=True`` with them."""

    differentiable: bool = False

    def forward(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, sigma)")

    @staticmethod
    def sigma_map(x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``sigma`` as a ``(B, 1, H, W)`` map on ``x``'s device and dtype (the usual extra
        input channel of a noise-level-aware network such as FFDNet or DRUNet)."""
        s = _check_input(x, sigma).to(device=x.device, dtype=x.dtype)
        return s[:, None, None, None].expand(x.shape[0], 1, x.shape[2], x.shape[3])


class _PerImageDenoiser(Denoiser):
    """A numpy denoiser applied to every (sample, channel) image with that sample's sigma."""

    def _denoise(self, img: np.ndarray, sigma: float) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        s = _check_input(x, sigma)
        if torch.is_grad_enabled() and x.requires_grad:
            raise DenoiserError(f"{type(self).__name__} is numpy code and cannot be "
                                f"differentiated; use a torch Denoiser for differentiable=True")
        xs = x.detach().cpu().to(torch.float64).numpy()
        out = np.empty_like(xs)
        for b in range(xs.shape[0]):
            for c in range(xs.shape[1]):
                sb = float(s[b])
                out[b, c] = xs[b, c] if sb == 0 else self._denoise(xs[b, c], sb)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def _positive(name: str, v, allow_none: bool = False):
    if v is None and allow_none:
        return v
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)):
        raise DenoiserError(f"{name} must be a positive number, got {v!r}")
    return float(v)


class NLMDenoiser(_PerImageDenoiser):
    """Non-local means (:func:`skimage.restoration.denoise_nl_means`), ``h = h_factor·σ``.

    ``patch_size = 5``, ``patch_distance = 6`` (an 13×13 search window), ``fast_mode = True``
    and ``h_factor = 0.8`` follow scikit-image's own guidance for a known ``σ``."""

    def __init__(self, *, h_factor: float = 0.8, patch_size: int = 5, patch_distance: int = 6,
                 fast_mode: bool = True):
        super().__init__()
        self.h_factor = _positive("h_factor", h_factor)
        for k, v in (("patch_size", patch_size), ("patch_distance", patch_distance)):
            if not (isinstance(v, int) and v >= 1):
                raise DenoiserError(f"{k} must be a positive int, got {v!r}")
        self.patch_size, self.patch_distance, self.fast_mode = patch_size, patch_distance, bool(fast_mode)

    def _denoise(self, img, sigma):
        from skimage.restoration import denoise_nl_means
        return denoise_nl_means(img, h=self.h_factor * sigma, sigma=sigma, patch_size=self.patch_size,
                                patch_distance=self.patch_distance, fast_mode=self.fast_mode)


WAVELET_METHODS = ("BayesShrink", "VisuShrink")


class WaveletDenoiser(_PerImageDenoiser):
    """Wavelet shrinkage (:func:`skimage.restoration.denoise_wavelet`) at the given ``σ``:
    ``method = "BayesShrink"`` (subband-adaptive soft thresholds) or ``"VisuShrink"`` (the
    universal threshold ``σ√(2 ln n)``, scaled by ``rescale_sigma``); ``wavelet = "db1"``,
    ``mode = "soft"``. Needs PyWavelets."""

    def __init__(self, *, wavelet: str = "db1", method: str = "BayesShrink", mode: str = "soft",
                 wavelet_levels: Optional[int] = None):
        super().__init__()
        try:
            import pywt
        except ImportError as exc:  # pragma: no cover - PyWavelets is a base dependency
            raise DenoiserError("the wavelet denoiser needs PyWavelets: pip install PyWavelets "
                                "(a base dependency of phaseforge: pip install .)") from exc
        if method not in WAVELET_METHODS:
            raise DenoiserError(f"unknown wavelet method {method!r}; choose one of {WAVELET_METHODS}")
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise DenoiserError(f"unknown wavelet {wavelet!r}; choose a discrete PyWavelets "
                                f"wavelet, e.g. 'db1', 'db2', 'sym4' (pywt.wavelist(kind='discrete'))")
        if mode not in ("soft", "hard"):
            raise DenoiserError(f"mode must be 'soft' or 'hard', got {mode!r}")
        self.wavelet, self.method, self.mode, self.wavelet_levels = wavelet, method, mode, wavelet_levels

    def _denoise(self, img, sigma):
        from skimage.restoration import denoise_wavelet
        return denoise_wavelet(img, sigma=sigma, wavelet=self.wavelet, method=self.method,
                               mode=self.mode, wavelet_levels=self.wavelet_levels, rescale_sigma=True)


class TVDenoiser(_PerImageDenoiser):
    """Total-variation denoising, the proximal map of ``λ·TV``:

        ``D(x) = argmin_u ½‖u − x‖² + λ Σ_pixels ‖∇u‖₂``

    (isotropic TV, forward differences), by Chambolle's (2004) algorithm in
    :func:`skimage.restoration.denoise_tv_chambolle` (its ``weight`` is ``λ``; stopping at a
    relative change ``eps`` of the objective, at most ``max_num_iter`` iterations).
    ``λ = weight`` when given (``sigma`` is then ignored), else ``λ = weight_factor·σ``."""

    def __init__(self, *, weight_factor: float = 1.0, weight: Optional[float] = None,
                 eps: float = 2e-4, max_num_iter: int = 200):
        super().__init__()
        self.weight_factor = _positive("weight_factor", weight_factor)
        self.weight = _positive("weight", weight, allow_none=True)
        self.eps = _positive("eps", eps)
        if not (isinstance(max_num_iter, int) and max_num_iter >= 1):
            raise DenoiserError(f"max_num_iter must be a positive int, got {max_num_iter!r}")
        self.max_num_iter = max_num_iter

    def forward(self, x, sigma):
        _check_input(x, sigma)
        return super().forward(x, 1.0 if self.weight is not None else sigma)

    def _denoise(self, img, sigma):
        from skimage.restoration import denoise_tv_chambolle
        lam = self.weight if self.weight is not None else self.weight_factor * sigma
        return denoise_tv_chambolle(img, weight=lam, eps=self.eps, max_num_iter=self.max_num_iter)


class BM3DDenoiser(_PerImageDenoiser):
    """BM3D (Dabov, Foi, Katkovnik & Egiazarian 2007) from the ``bm3d`` package, at the given
    ``σ`` (``sigma_psd``). An optional extra: ``pip install .[bm3d]`` (non-commercial licence)."""

    def __init__(self):
        super().__init__()
        try:
            import bm3d  # noqa: F401
        except ImportError as exc:
            raise DenoiserError("the 'bm3d' denoiser needs the optional bm3d package (non-commercial "
                                "licence): pip install .[bm3d] (or pip install bm3d)") from exc

    def _denoise(self, img, sigma):
        import bm3d
        return np.asarray(bm3d.bm3d(img, sigma_psd=sigma), dtype=np.float64)


#: name → denoiser class (``make_denoiser(name, **options)``; ``solve(..., "pnp", denoiser=name)``)
DENOISERS: Dict[str, type] = {"nlm": NLMDenoiser, "wavelet": WaveletDenoiser, "tv": TVDenoiser,
                              "bm3d": BM3DDenoiser}


def make_denoiser(name: str, **options) -> Denoiser:
    """The denoiser registered as ``name`` (:data:`DENOISERS`), built with ``options``."""
    cls = DENOISERS.get(name)
    if cls is None:
        raise DenoiserError(f"unknown denoiser {name!r}; choose one of {sorted(DENOISERS)} or pass "
                            f"a learning.denoisers.Denoiser instance")
    try:
        return cls(**options)
    except TypeError as exc:
        raise DenoiserError(f"bad options for the {name!r} denoiser: {exc}") from exc
