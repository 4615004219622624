"""Spectral initialisation of the phase-retrieval solvers (plain, truncated, optimal weights)."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..errors import SolverError
from ._core import (GeneratorLike, Tensor, _align_real_start, _check_options, _generator,
                    _image_norm2, _NORM_SEED, _prepare_x0, _Problem, _randn_complex, _setup)

__all__ = ["SPECTRAL_METHODS", "spectral_init"]

SPECTRAL_METHODS = ("plain", "truncated", "optimal")


def _spectral_weights(prob: _Problem, method: str, alpha_y: float) -> Tensor:
    t = prob.y / (prob.y_sum / prob.m)  # y / mean(y), per sample
    if method == "plain":
        return t
    if method == "truncated":
        return t * (t <= alpha_y ** 2).to(t.dtype)
    if method == "optimal":
        sd = math.sqrt(prob.m / prob.n)
        den = torch.clamp(t + (sd - 1.0), min=0.1)
        return (t - 1.0) / den
    raise SolverError(f"unknown spectral method {method!r}; choose one of {SPECTRAL_METHODS}")


def _negative_shift(prob: _Problem, apply, n_iter: int = 20) -> Tensor:
    """Shift ``σ = max(0, −1.5·λ̂)`` with ``λ̂`` the Rayleigh quotient after ``n_iter`` power
    iterations on ``Ỹ`` (fixed-seed start), i.e. its eigenvalue of largest magnitude: when that
    one is negative, ``Ỹ + σI`` has the algebraically largest eigenvalue dominant. Power
    iteration underestimates ``|λ_min|``, hence the 1.5 margin (a correct result needs only
    ``σ > (|λ_min| − λ_max)/2``). Kept in the autograd graph (no host synchronisation)."""
    gen = torch.Generator().manual_seed(_NORM_SEED + 1)
    v = _randn_complex(prob.batch + prob.in_shape, gen, prob.cdtype, prob.y.device)
    lam = None
    for _ in range(n_iter):
        v = v / torch.clamp(_image_norm2(v).sqrt(), min=torch.finfo(v.real.dtype).tiny)
        u = apply(v)
        lam = (u * v.conj()).sum(dim=(-2, -1), keepdim=True).real
        v = u
    return torch.clamp(-1.5 * lam, min=0.0)


def _spectral(prob: _Problem, method: str, n_iter: int, gen, alpha_y: float) -> Tensor:
    w = _spectral_weights(prob, method, alpha_y)
    w_c = w.to(prob.cdtype)
    B, BH = prob.B, prob.BH

    def apply(v):
        # Ỹ v = (1/m) Ãᴴ diag(w) Ã v = (1/s) Aᴴ (w ⊙ A v)  (= Bᴴ(w ⊙ B v): w is real)
        return BH(w_c * B(v)) / prob.s

    shift = _negative_shift(prob, apply) if method == "optimal" else None
    v = _randn_complex(prob.batch + prob.in_shape, gen, prob.cdtype, prob.y.device)
    v = v / _image_norm2(v).sqrt()
    for _ in range(n_iter):
        u = apply(v)
        if shift is not None:
            u = u + shift.to(u.dtype) * v
        v = u / torch.clamp(_image_norm2(u).sqrt(), min=torch.finfo(u.real.dtype).tiny)
    # ‖x‖² ≈ Σy / s (Candès et al. 2015: λ² = n Σ y_r / Σ_r ‖a_r‖²)
    scale = torch.sqrt(prob.y_sum[..., 0] / prob.s)
    return v * scale.to(v.dtype)


def spectral_init(op, y: Tensor, *, method: str = "plain", n_iter: int = 50,
                  generator: GeneratorLike = None, alpha_y: float = 3.0,
                  norm_sq: Optional[float] = None) -> Tensor:
    r"""Spectral initialisation: leading eigenvector of a weighted data matrix, scaled.

    Power iterations (``n_iter``, random start from ``generator``) on

        ``Y = (1/m) Σ_r w(y_r) ã_r ã_rᴴ = (1/s) Aᴴ diag(w) A``

    (``ã_r`` the rows of the normalised operator, package docstring), with ``t = y / mean(y)``
    (mean over the sample's ``m = L·Mh·Mw`` measurements) and weights

    * ``"plain"`` (Candès et al. 2015): ``w = t``.
    * ``"truncated"`` (Chen & Candès 2015, truncated WF): ``w = t · 1{t ≤ α_y²}``, ``α_y = 3``
      (``alpha_y``) — drops the few very bright samples that bias the plain estimate.
    * ``"optimal"`` (Mondelli & Montanari 2019; Luo, Alghamdi & Lu 2019):
      ``w = (t − 1)/(t + √δ − 1)``, ``δ = m/n``; the denominator is clipped at 0.1 (only active
      for δ < 1.1) to keep weights bounded. These weights are negative for ``t < 1`` and the
      most negative eigenvalue of ``Y`` can dominate (≈ −0.5 against a top eigenvalue ≈ 0.3
      for L = 6 octanary CDPs), so the iteration runs on ``Y + σI``, ``σ = max(0, −1.5 λ̂)``
      with ``λ̂`` from 20 extra power iterations on ``Y`` (the eigenvalue of largest
      magnitude).

    The unit eigenvector ``v`` is scaled to the norm estimate ``‖x0‖² = Σ y / s`` with
    ``s = tr(AᴴA)/n`` — Candès et al.'s ``λ² = n Σ_r y_r / Σ_r ‖a_r‖²`` (``= (1/m) Σ ỹ``),
    unbiased when ``x`` is uncorrelated with the diagonal of ``AᴴA``. (Matching the energy of
    ``v`` itself, ``Σ y / Σ |A v|²``, is biased low for CDPs: the top eigenvector leans towards
    pixels where ``Σ_l |M_l|²`` is large; measured ≈ 0.78·‖x‖ for L = 6 octanary masks.)
    Returns ``(..., H, W)``.
    Differentiable w.r.t. ``y`` and the operator when autograd is enabled.
    """
    if method not in SPECTRAL_METHODS:
        raise SolverError(f"unknown spectral method {method!r}; choose one of {SPECTRAL_METHODS}")
    _check_options(n_iter=n_iter, alpha_y=alpha_y)
    prob = _setup(op, y, norm_sq)
    return _spectral(prob, method, n_iter, _generator(generator), alpha_y)


def _init(prob: _Problem, x0, init: str, spectral_method: str, n_power_iter: int, gen,
          alpha_y: float, random_init: Optional[Callable[[], Tensor]] = None, *,
          nonnegative: bool = False, real: bool = False) -> Tensor:
    """The start: ``x0`` as given, or a spectral estimate (rotated for real/non-negative objects,
    :func:`._core._align_real_start`), or a random one."""
    if x0 is not None:
        return _prepare_x0(prob, x0)
    if init == "spectral":
        return _align_real_start(_spectral(prob, spectral_method, n_power_iter, gen, alpha_y),
                                 nonnegative, real)
    if init == "random":
        if random_init is not None:
            return random_init()
        x = _randn_complex(prob.batch + prob.in_shape, gen, prob.cdtype, prob.y.device)
        return x * torch.sqrt(prob.y_sum[..., 0] / prob.s / prob.n)
    raise SolverError(f"unknown init {init!r}; choose 'spectral' or 'random', or pass x0")


