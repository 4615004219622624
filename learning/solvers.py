r"""Classical phase-retrieval solvers for coded diffraction patterns (CDPs), in torch.

Problem: recover ``x ∈ ℂ^{H×W}`` from ``y_l = |A_l x|²``, ``l = 1..L``, where the linear
operator ``A x = (A_1 x, …, A_L x)`` is given by any object with ``A(x)`` mapping
``(..., H, W) → (..., L, Mh, Mw)`` and its exact adjoint ``A_adjoint(z)`` mapping back (see
:class:`LinearOperator`; :class:`optics.cdp.CDPSystem` is one). Everything is batched over the
leading axes, complex64 by default (complex128 when ``y`` is float64), and differentiable.

Scaling
-------
The theory of Wirtinger/amplitude flow is written for an operator normalised so that
``(1/m) AᴴA ≈ I`` (``m = L·Mh·Mw`` measurements, ``n = H·W`` unknowns); an un-normalised DFT of
octanary-masked images (Candès et al. 2015, §2) satisfies it in expectation. Physical operators
do not: Fraunhofer propagation carries ``dx²/(λz)`` (≈ 1e-3 for 8 µm pixels, 633 nm, 10 cm). The
solvers therefore work with the normalised operator ``Ã = κA``, ``ỹ = κ²y``,
``κ² = m / s`` where

    ``s = tr(AᴴA)/n``   (the mean eigenvalue of ``AᴴA``)

is measured once per call with a Hutchinson estimate ``s ≈ mean_k ‖A z_k‖²/n`` over unit-modulus
random-phase probes ``z_k`` (fixed internal seed, so repeated calls agree; exact when ``AᴴA`` is
diagonal, as for masks + Fraunhofer/FFT). Since ``|Ãx|² = ỹ`` has the same solutions, the
iterations in ``x`` are unchanged; only the step sizes absorb ``κ``. Pass ``norm_sq=s`` to skip
the estimate. With this, the published step sizes (``μ_max``, ``τ0``, AF's ``μ``) apply to
physical operators unchanged.

Modes
-----
``differentiable=False`` (default) runs under ``torch.no_grad()`` and may stop early (``tol``,
``residual_tol``); the stopping checks are the only host synchronisations. ``differentiable=True``
keeps the autograd graph through every iteration (memory ∝ ``n_iter``), runs exactly ``n_iter``
iterations, never calls ``.item()``, and uses no in-place updates, so losses on the output can be
differentiated w.r.t. ``y``, ``x0`` or the operator's parameters (e.g. learnable mask phases).
The scale estimate ``s`` and the pseudo-inverse check are constants (computed without gradient),
as step sizes are hyper-parameters.

References
----------
* E. J. Candès, X. Li, M. Soltanolkotabi, "Phase retrieval via Wirtinger flow: theory and
  algorithms", IEEE Trans. Inf. Theory 61(4), 1985–2007 (2015).
* E. J. Candès, X. Li, M. Soltanolkotabi, "Phase retrieval from coded diffraction patterns",
  Appl. Comput. Harmon. Anal. 39(2), 277–299 (2015).
* Y. Chen, E. J. Candès, "Solving random quadratic systems of equations is nearly as easy as
  solving linear systems", Comm. Pure Appl. Math. 70(5) (2017); NeurIPS 2015 (truncated WF).
* M. Mondelli, A. Montanari, "Fundamental limits of weak recovery with applications to phase
  retrieval", Found. Comput. Math. 19, 703–773 (2019); W. Luo, W. Alghamdi, Y. M. Lu, "Optimal
  spectral initialization for signal recovery with applications to phase retrieval", IEEE Trans.
  Signal Process. 67(9), 2347–2356 (2019).
* G. Wang, G. B. Giannakis, Y. C. Eldar, "Solving systems of random quadratic equations via
  truncated amplitude flow", IEEE Trans. Inf. Theory 64(2), 773–794 (2018).
* R. W. Gerchberg, W. O. Saxton, Optik 35, 237–246 (1972); J. R. Fienup, "Phase retrieval
  algorithms: a comparison", Appl. Opt. 21(15), 2758–2769 (1982).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Protocol, Tuple, Union, runtime_checkable

import torch

from optics.operator import PINV_MODES, OperatorError, PseudoInverse
from optics.operator import estimate_norm_sq as _estimate_norm_sq

from .errors import SolverError
from .metrics import relative_error

__all__ = [
    "SolverError", "LinearOperator", "SolverResult", "estimate_norm_sq", "spectral_init",
    "wirtinger_flow", "amplitude_flow", "error_reduction", "gerchberg_saxton", "hio", "solve",
    "SOLVERS",
]

Tensor = torch.Tensor
GeneratorLike = Union[torch.Generator, int, None]

_NORM_SEED = 20150402  # fixed seed of the internal probes (scale estimate, pinv check)


@runtime_checkable
class LinearOperator(Protocol):
    """What the solvers need from a measurement operator (duck-typed).

    * ``A(x)``: ``(..., H, W)`` complex → ``(..., L, Mh, Mw)`` complex, linear.
    * ``A_adjoint(z)``: ``(..., L, Mh, Mw)`` → ``(..., H, W)``, the exact adjoint (sums over l).

    Optional attributes, used for shape checks when present: ``n_masks`` (L), ``in_shape``
    ((H, W)) and ``out_shape`` ((Mh, Mw)). Without them the shapes are probed by applying
    ``A_adjoint``/``A`` once.
    """

    def A(self, x: Tensor) -> Tensor: ...

    def A_adjoint(self, z: Tensor) -> Tensor: ...


@dataclass
class SolverResult:
    """Output of every solver.

    * ``x``: the estimate, ``(..., H, W)`` complex (defined up to the trivial ambiguities).
    * ``history``: per-iteration tensors of shape ``(n_iter + 1, ...)`` (entry ``t`` belongs to
      iterate ``t``, the last to the returned ``x``): ``"residual"`` =
      ``‖|A x_t| − √y‖ / ‖√y‖`` and, when ``x_true`` was given, ``"relative_error"``
      (global-phase aligned, :func:`learning.metrics.relative_error`). Empty when
      ``history=False`` (then only the final residual is recorded).
    * ``n_iter``: iterations performed. ``converged``: True when the stopping rule fired,
      False when ``n_iter`` ran out, None in ``differentiable`` mode (no checks are made).
    * ``residual``: final relative residual per sample. ``solver``: the algorithm's name.
    """

    x: Tensor
    history: Dict[str, Tensor] = field(default_factory=dict)
    n_iter: int = 0
    converged: Optional[bool] = None
    residual: Optional[Tensor] = None
    solver: str = ""


# --------------------------------------------------------------------------------------------
# validation and set-up
# --------------------------------------------------------------------------------------------
def _generator(generator: GeneratorLike) -> Optional[torch.Generator]:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise SolverError(f"generator must be a torch.Generator, an int seed or None, got "
                      f"{type(generator).__name__}")


def _randn_complex(shape, gen: Optional[torch.Generator], dtype, device) -> Tensor:
    gdev = gen.device if gen is not None else device
    return torch.randn(tuple(shape), dtype=dtype, device=gdev, generator=gen).to(device)


def _rand_phase(shape, gen: Optional[torch.Generator], dtype, device) -> Tensor:
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    gdev = gen.device if gen is not None else device
    th = torch.rand(tuple(shape), dtype=real, device=gdev, generator=gen).to(device)
    return torch.polar(torch.ones_like(th), 2 * math.pi * th).to(dtype)


def _get_shape(op, name):
    v = getattr(op, name, None)
    if v is None:
        return None
    if isinstance(v, torch.Size):
        v = tuple(v)
    return v


@dataclass
class _Problem:
    op: object
    y: Tensor
    batch: Tuple[int, ...]
    in_shape: Tuple[int, int]
    meas_shape: Tuple[int, int, int]
    cdtype: torch.dtype
    m: int
    n: int
    s: float
    sqrt_y: Tensor
    y_sum: Tensor  # (..., 1, 1, 1)
    B: Callable = None   # the operator's magnitude pair (A = D·B, D unit-modulus diagonal):
    BH: Callable = None  # |Bx| = |Ax| and Bᴴ(w ⊙ Bx) = Aᴴ(w ⊙ Ax) for real w — all the solvers need


def _check_y(op, y) -> Tuple[Tensor, Tuple[int, int], Tuple[int, int, int]]:
    if not (hasattr(op, "A") and hasattr(op, "A_adjoint")):
        raise SolverError(f"the operator {type(op).__name__} lacks A(x)/A_adjoint(z); pass an "
                          f"object following learning.solvers.LinearOperator (e.g. "
                          f"optics.cdp.CDPSystem)")
    if not isinstance(y, torch.Tensor):
        raise SolverError(f"y must be a torch.Tensor of intensities, got {type(y).__name__}")
    if y.is_complex():
        raise SolverError("y must be real intensities |A x|², got a complex tensor; pass the "
                          "measured intensities (e.g. op.intensity(x)), not the fields")
    if not y.is_floating_point():
        y = y.to(torch.float32)
    n_masks = getattr(op, "n_masks", None)
    out_shape = _get_shape(op, "out_shape")
    in_shape = _get_shape(op, "in_shape")
    if n_masks is not None and out_shape is not None:
        expected = (int(n_masks), int(out_shape[0]), int(out_shape[1]))
        if y.ndim < 3 or tuple(y.shape[-3:]) != expected:
            raise SolverError(
                f"y has shape {tuple(y.shape)} but this operator produces (..., L, Mh, Mw) = "
                f"(..., {expected[0]}, {expected[1]}, {expected[2]}) (L = n_masks, (Mh, Mw) = "
                f"out_shape); pass one intensity image per mask with batch axes leading")
    elif y.ndim < 3:
        raise SolverError(f"y has shape {tuple(y.shape)}; expected (..., L, Mh, Mw) with one "
                          f"intensity image per mask (add the mask axis, e.g. y[None] for L = 1)")
    if not bool(torch.isfinite(y).all()):
        bad = int((~torch.isfinite(y)).sum())
        raise SolverError(f"y contains {bad} NaN/inf value(s); intensities must be finite — "
                          f"drop or repair the corrupted frames (torch.nan_to_num) first")
    ymin = float(y.detach().min())
    if ymin < 0:
        raise SolverError(f"y has negative intensities (min {ymin:.3g}); intensities are "
                          f"|A x|² ≥ 0 — clamp after dark subtraction with y.clamp(min=0)")
    if in_shape is None:
        with torch.no_grad():
            try:
                probe = op.A_adjoint(torch.zeros(y.shape[-3:], dtype=_cdtype(y), device=y.device))
            except Exception as exc:  # noqa: BLE001 - re-raised with context
                raise SolverError(f"the operator's A_adjoint rejected a measurement of shape "
                                  f"{tuple(y.shape[-3:])} (the trailing (L, Mh, Mw) of y): {exc}"
                                  ) from exc
        in_shape = tuple(probe.shape[-2:])
    in_shape = (int(in_shape[0]), int(in_shape[1]))
    if n_masks is None or out_shape is None:
        with torch.no_grad():
            probe = op.A(torch.zeros(in_shape, dtype=_cdtype(y), device=y.device))
        if probe.ndim < 3 or tuple(probe.shape[-3:]) != tuple(y.shape[-3:]):
            raise SolverError(f"y has shape {tuple(y.shape)} but the operator maps "
                              f"{in_shape} to {tuple(probe.shape)}: expected y of shape "
                              f"(..., {', '.join(str(d) for d in probe.shape[-3:])})")
    meas = tuple(int(d) for d in y.shape[-3:])
    if float(y.detach().sum(dim=(-3, -2, -1)).min()) <= 0:
        raise SolverError("y is all zero in at least one sample; there is nothing to recover — "
                          "check the exposure or drop empty frames")
    return y, in_shape, meas


def _cdtype(y: Tensor) -> torch.dtype:
    return torch.complex128 if y.dtype == torch.float64 else torch.complex64


def _safe_sqrt(y: Tensor) -> Tensor:
    """√y with a zero (not infinite) derivative at y = 0."""
    pos = y > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, y, torch.ones_like(y))),
                       torch.zeros_like(y))


def estimate_norm_sq(op, in_shape, *, dtype=torch.complex64, device=None, n_probes: int = 4
                     ) -> float:
    """``s = tr(AᴴA)/n`` (:func:`optics.operator.estimate_norm_sq`, re-raised as a
    :class:`SolverError`)."""
    try:
        return _estimate_norm_sq(op, in_shape, dtype=dtype, device=device, n_probes=n_probes)
    except OperatorError as exc:
        raise SolverError(str(exc)) from exc


def _pair(op):
    mp = getattr(op, "magnitude_pair", None)
    return mp() if callable(mp) else (op.A, op.A_adjoint)


class _Probe:
    def __init__(self, pair):
        self.A, self.A_adjoint = pair


def _setup(op, y, norm_sq) -> _Problem:
    y, in_shape, meas = _check_y(op, y)
    cdtype = _cdtype(y)
    if norm_sq is None:
        s = estimate_norm_sq(_Probe(_pair(op)), in_shape, dtype=cdtype, device=y.device)
    else:
        s = float(norm_sq)
        if not (s > 0 and math.isfinite(s)):
            raise SolverError(f"norm_sq must be a positive finite number (tr(AᴴA)/n), got "
                              f"{norm_sq!r}; leave it None to estimate it")
    m = meas[0] * meas[1] * meas[2]
    n = in_shape[0] * in_shape[1]
    B, BH = _pair(op)
    return _Problem(op=op, y=y, batch=tuple(y.shape[:-3]), in_shape=in_shape, meas_shape=meas,
                    cdtype=cdtype, m=m, n=n, s=s, sqrt_y=_safe_sqrt(y),
                    y_sum=y.sum(dim=(-3, -2, -1), keepdim=True), B=B, BH=BH)


def _abs2(z: Tensor) -> Tensor:
    """``|z|²`` as ``re·re + im·im`` (two passes, measured cheaper than ``abs()²`` or a
    reduction over the interleaved real/imaginary axis)."""
    return torch.addcmul(z.real * z.real, z.imag, z.imag)


def _times_real(z: Tensor, r: Tensor) -> Tensor:
    """``z ⊙ r`` for a real ``r`` without promoting ``r`` to complex (one pass)."""
    return torch.view_as_complex(torch.view_as_real(z) * r.unsqueeze(-1))


def _image_norm2(x: Tensor) -> Tensor:
    return (x.real ** 2 + x.imag ** 2).sum(dim=(-2, -1), keepdim=True)


def _residual(prob: _Problem, z: Tensor) -> Tensor:
    """``‖|z| − √y‖ / ‖√y‖`` per sample (shape = batch)."""
    d = z.abs() - prob.sqrt_y
    return torch.sqrt((d * d).sum(dim=(-3, -2, -1)) / prob.y_sum[..., 0, 0, 0])


def _prepare_x0(prob: _Problem, x0) -> Tensor:
    if not isinstance(x0, torch.Tensor):
        raise SolverError(f"x0 must be a torch.Tensor of shape (..., H, W), got "
                          f"{type(x0).__name__}")
    shape = prob.batch + prob.in_shape
    try:
        x0 = torch.broadcast_to(x0, shape)
    except RuntimeError as exc:
        raise SolverError(f"x0 has shape {tuple(x0.shape)}; expected {shape} = batch of y + "
                          f"the operator's in_shape") from exc
    if not bool(torch.isfinite(x0).all()):
        raise SolverError("x0 contains NaN/inf; pass a finite starting point or x0=None")
    return x0.to(prob.cdtype)


def _prepare_constraint(prob: _Problem, support) -> Optional[Tensor]:
    if support is None:
        return None
    support = torch.as_tensor(support, device=prob.y.device)
    if support.dtype != torch.bool:
        raise SolverError(f"support must be a bool mask of shape (..., H, W), got dtype "
                          f"{support.dtype}; convert with mask.bool()")
    try:
        torch.broadcast_shapes(support.shape, prob.batch + prob.in_shape)
    except RuntimeError as exc:
        raise SolverError(f"support has shape {tuple(support.shape)}; it must broadcast to "
                          f"{prob.batch + prob.in_shape} (batch + in_shape)") from exc
    if not bool(support.any()):
        raise SolverError("support is empty (all False); pass the object's support region")
    return support


def _check_options(**kw):
    for k, v in kw.items():
        if k in ("n_iter",):
            if not isinstance(v, int) or v < 0:
                raise SolverError(f"{k} must be a non-negative int, got {v!r}")
        elif v is not None and not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise SolverError(f"{k} must be a finite non-negative number or None, got {v!r}")


# --------------------------------------------------------------------------------------------
# spectral initialisation
# --------------------------------------------------------------------------------------------
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

    (``ã_r`` the rows of the normalised operator, module docstring), with ``t = y / mean(y)``
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


# --------------------------------------------------------------------------------------------
# shared iteration driver
# --------------------------------------------------------------------------------------------
# A step maps (x_t, t) -> (x_{t+1}, z_t, est_t[, frozen_t]): z_t = A(est_t) when available
# (else None and the driver computes it when it needs a residual), est_t the estimate scored
# at iteration t, and the optional bool tensor frozen_t marks samples whose x_t merely repeats
# x_{t-1} (a rejected step): an unchanged residual there is not stagnation.
Step = Callable[[Tensor, int], tuple]


def _run(prob: _Problem, step: Step, x: Tensor, *, name: str, n_iter: int, tol, residual_tol,
         history: bool, x_true, differentiable: bool, progress: bool,
         finalize: Optional[Callable[[Tensor], Tensor]] = None) -> SolverResult:
    check = (not differentiable) and (tol is not None or residual_tol is not None)
    need_res = history or check
    res_hist, err_hist = [], []
    if x_true is not None:
        x_true = x_true.detach()
    prev = None
    converged = False
    done_iter = 0
    it = range(n_iter)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(it, desc=name, leave=False)
        it = bar
    for t in it:
        out = step(x, t)
        x_next, z, est = out[:3]
        frozen = out[3] if len(out) > 3 else None
        if need_res:
            if z is None:
                z = prob.B(est)
            r = _residual(prob, z).detach()
            if history:
                res_hist.append(r)
                if x_true is not None:
                    err_hist.append(relative_error(est.detach(), x_true).to(r.dtype))
            if check and prev is not None:
                ok = torch.zeros_like(r, dtype=torch.bool)
                if residual_tol is not None:
                    ok = ok | (r <= residual_tol)
                if tol is not None:
                    stag = (prev - r).abs() <= tol * prev
                    if frozen is not None:
                        stag = stag & ~frozen
                    ok = ok | stag
                if bool(ok.all()):
                    converged = True
            if bar is not None and not differentiable and t % 25 == 0:
                bar.set_postfix(residual=f"{float(r.max()):.3e}")
            prev = r
        x = x_next
        done_iter = t + 1
        if converged:
            break
    x_out = finalize(x) if finalize is not None else x
    z = prob.B(x_out)
    r = _residual(prob, z).detach()
    hist: Dict[str, Tensor] = {}
    if history:
        res_hist.append(r)
        hist["residual"] = torch.stack(res_hist).cpu()
        if x_true is not None:
            err_hist.append(relative_error(x_out.detach(), x_true).to(r.dtype))
            hist["relative_error"] = torch.stack(err_hist).cpu()
    if bar is not None:
        bar.close()
    return SolverResult(x=x_out, history=hist, n_iter=done_iter,
                        converged=None if differentiable else converged, residual=r,
                        solver=name)


def _grad_context(differentiable: bool, op=None):
    """No autograd unless ``differentiable``; and the operator's modulation and kernels
    evaluated once for the whole call (``op.frozen()``, where the operator offers it)."""
    stack = contextlib.ExitStack()
    if not differentiable:
        stack.enter_context(torch.no_grad())
    frozen = getattr(op, "frozen", None)
    if callable(frozen):
        stack.enter_context(frozen())
    return stack


def _default_residual_tol(prob: _Problem, residual_tol):
    if residual_tol == "auto":
        return 10.0 * torch.finfo(prob.y.dtype).eps
    return residual_tol


def _init(prob: _Problem, x0, init: str, spectral_method: str, n_power_iter: int, gen,
          alpha_y: float, random_init: Optional[Callable[[], Tensor]] = None) -> Tensor:
    if x0 is not None:
        return _prepare_x0(prob, x0)
    if init == "spectral":
        return _spectral(prob, spectral_method, n_power_iter, gen, alpha_y)
    if init == "random":
        if random_init is not None:
            return random_init()
        x = _randn_complex(prob.batch + prob.in_shape, gen, prob.cdtype, prob.y.device)
        return x * torch.sqrt(prob.y_sum[..., 0] / prob.s / prob.n)
    raise SolverError(f"unknown init {init!r}; choose 'spectral' or 'random', or pass x0")


def _x_true(prob: _Problem, x_true):
    if x_true is None:
        return None
    if not isinstance(x_true, torch.Tensor) or tuple(x_true.shape[-2:]) != prob.in_shape:
        raise SolverError(f"x_true must be a tensor of shape (..., {prob.in_shape[0]}, "
                          f"{prob.in_shape[1]}); got "
                          f"{tuple(x_true.shape) if isinstance(x_true, torch.Tensor) else x_true!r}")
    return x_true


# --------------------------------------------------------------------------------------------
# Wirtinger flow
# --------------------------------------------------------------------------------------------
def wirtinger_flow(op, y: Tensor, *, n_iter: int = 1000, x0: Optional[Tensor] = None,
                   init: str = "spectral", spectral_method: str = "plain",
                   n_power_iter: int = 50, mu_max: float = 0.3, tau0: float = 330.0,
                   tol: Optional[float] = 1e-6, residual_tol="auto",
                   generator: GeneratorLike = None, history: bool = True,
                   x_true: Optional[Tensor] = None, differentiable: bool = False,
                   progress: bool = False, norm_sq: Optional[float] = None,
                   alpha_y: float = 3.0, safeguard: bool = True) -> SolverResult:
    r"""Wirtinger flow (Candès, Li & Soltanolkotabi 2015, Algorithm 1).

    Gradient descent on ``f(x) = (1/2m) Σ_r (|ã_rᴴ x|² − ỹ_r)²`` with the Wirtinger gradient

        ``∇f(x) = (1/m) Ãᴴ((|Ãx|² − ỹ) ⊙ Ãx) = (m/s²) Aᴴ((|Ax|² − y) ⊙ Ax)``

    and the update ``x_{t+1} = x_t − (μ_t/‖x_0‖²) ∇f(x_t)``,
    ``μ_t = min(1 − e^{−(t+1)/τ0}, μ_max)``, ``τ0 = 330`` as in the paper. ``Ã = κA`` is the
    normalised operator (module docstring), so the same ``μ`` works for a unitary FFT and for
    physically scaled Fraunhofer propagation (the iterates are invariant to ``A → cA``,
    ``y → c²y``).

    ``μ_max = 0.3`` (not the paper's 0.4 for CDPs): near the solution the iteration is stable
    only for ``μ_max < 2‖x‖²/λ_max(∇²f)``, and for 2-D octanary CDPs of random complex objects
    we measure ``λ_max(∇²f) ≈ 5.3–5.8‖x‖²`` (L = 6, 32×32; ≈ 4.7‖x‖² for unit-modulus masks),
    i.e. a limit of ≈ 0.35: with 0.4 every trial settles into a persistent oscillation at a
    relative error ≈ 0.1, with 0.3 all converge (≈ 350–420 iterations to the float32 floor).
    ``x_0`` is the spectral initialisation (``spectral_method``, ``n_power_iter`` power iterations), a scaled
    random vector (``init="random"``) or the given ``x0``.

    ``safeguard=True`` (default) adds a monotone safeguard the paper does not have: a step that
    increases the loss ``‖|Ax|² − y‖²`` (or makes it non-finite) is rejected for that sample
    and its step multiplier ``η`` (applied to ``μ_t``) halved; an accepted step lets ``η`` grow
    back by ×1.25 up to 1. It costs nothing extra (the ``A x_{t+1}`` it needs is the next
    iteration's) and left every iterate of our L = 6 runs unchanged, but keeps the quartic loss from
    diverging to inf/NaN when the spectral start is poor — e.g. with L ≤ 2 patterns, where the
    plain spectral vector's ``|Av|²`` is heavy-tailed (kurtosis ≈ 50–120 for L = 1) and the
    first, tiny-``μ`` step already overshoots. ``safeguard=False`` runs Algorithm 1 verbatim.
    Either way one ``A`` and one ``Aᴴ`` per iteration.

    Stopping (only when ``differentiable=False``): after iteration ``t`` when, for every sample,
    the relative residual ``r_t = ‖|Ax_t| − √y‖/‖√y‖`` is ≤ ``residual_tol`` (``"auto"``: 10·eps
    of y's dtype, the round-off floor) or changed by ≤ ``tol·r_{t−1}`` (stagnation, default
    1e-6; None switches either test off).
    Returns a :class:`SolverResult`.
    """
    _check_options(n_iter=n_iter, mu_max=mu_max, tau0=tau0, tol=tol, n_power_iter=n_power_iter)
    if not tau0 > 0:
        raise SolverError(f"tau0 must be positive, got {tau0!r}")
    with _grad_context(differentiable, op):
        prob = _setup(op, y, norm_sq)
        x_true = _x_true(prob, x_true)
        gen = _generator(generator)
        x = _init(prob, x0, init, spectral_method, n_power_iter, gen, alpha_y)
        x0n = _image_norm2(x)
        if bool((x0n.detach() <= 0).any()):
            raise SolverError("x0 is zero in at least one sample; WF's step is normalised by "
                              "‖x0‖², pass a non-zero start")
        scale = prob.m / (prob.s * prob.s) / x0n  # (m/s²)/‖x0‖², per sample
        y_ = prob.y

        def loss_grad_terms(z):
            r = _abs2(z).sub_(y_)  # in place on a fresh tensor (addcmul keeps no output for backward)
            return r, torch.linalg.vector_norm(r, dim=(-3, -2, -1)).square()

        B, BH = prob.B, prob.BH
        z = B(x)
        r, f = loss_grad_terms(z)
        st = {"z": z, "f": f, "g": BH(_times_real(z, r)),
              "eta": torch.ones_like(f), "rej": torch.zeros_like(f, dtype=torch.bool)}

        def step(x, t):
            z, f, g, eta, frozen = st["z"], st["f"], st["g"], st["eta"], st["rej"]
            mu = min(1.0 - math.exp(-(t + 1) / tau0), mu_max)
            x_new = x - (mu * scale * eta[..., None, None]).to(x.dtype) * g
            z_new = B(x_new)
            r_new, f_new = loss_grad_terms(z_new)
            if safeguard and not differentiable and bool((f_new <= f).all()):
                # every sample accepted (the usual case): no masking passes over the data
                st["g"] = BH(_times_real(z_new, r_new))
                st["z"], st["f"] = z_new, f_new
                st["eta"] = torch.clamp(eta * 1.25, max=1.0)
                st["rej"] = torch.zeros_like(frozen)
                return x_new, z, x, frozen
            if safeguard:
                acc = f_new <= f  # False for NaN/inf
                acc3 = acc[..., None, None, None]
                # rejected samples (including NaN/inf losses) contribute no gradient term; the
                # selection runs on the real residual with a scalar zero (no complex-size buffer)
                rz = _times_real(z_new, torch.where(acc3, r_new, torch.zeros((), dtype=r_new.dtype)))
                g_new = torch.where(acc[..., None, None], BH(rz), g)
                st["z"] = torch.where(acc3, z_new, z)
                st["f"] = torch.where(acc, f_new, f)
                st["eta"] = torch.where(acc, torch.clamp(eta * 1.25, max=1.0), eta * 0.5)
                x_new = torch.where(acc[..., None, None], x_new, x)
                st["rej"] = ~acc
            else:
                g_new = BH(_times_real(z_new, r_new))
                st["z"], st["f"] = z_new, f_new
            st["g"] = g_new
            return x_new, z, x, frozen

        return _run(prob, step, x, name="wirtinger_flow", n_iter=n_iter, tol=tol,
                    residual_tol=_default_residual_tol(prob, residual_tol), history=history,
                    x_true=x_true, differentiable=differentiable, progress=progress)


# --------------------------------------------------------------------------------------------
# amplitude flow
# --------------------------------------------------------------------------------------------
AF_WEIGHTINGS = ("none", "truncated")


def amplitude_flow(op, y: Tensor, *, n_iter: int = 1000, x0: Optional[Tensor] = None,
                   init: str = "spectral", spectral_method: str = "plain",
                   n_power_iter: int = 50, mu: float = 0.6, weighting: str = "none",
                   gamma: float = 0.7, tol: Optional[float] = 1e-6, residual_tol="auto",
                   generator: GeneratorLike = None, history: bool = True,
                   x_true: Optional[Tensor] = None, differentiable: bool = False,
                   progress: bool = False, norm_sq: Optional[float] = None,
                   alpha_y: float = 3.0) -> SolverResult:
    r"""Amplitude flow (Wang, Giannakis & Eldar 2018): gradient descent on the amplitude loss

        ``ℓ(x) = (1/2m) Σ_r (|ã_rᴴ x| − √ỹ_r)²``,
        ``∇ℓ(x) = (1/m) Ãᴴ(w ⊙ (Ãx − √ỹ ⊙ Ãx/|Ãx|)) = (1/s) Aᴴ(w ⊙ (Ax − √y ⊙ sgn(Ax)))``,

    ``x_{t+1} = x_t − μ ∇ℓ(x_t)``, constant ``μ = 0.6`` (TAF's default). ``weighting="none"`` is
    plain AF (``w = 1``); ``"truncated"`` is TAF's gradient truncation
    ``w_r = 1{|a_rᴴx| ≥ √y_r/(1+γ)}``, ``γ = 0.7``, which discards terms whose phase is
    unreliable. The loss is homogeneous of degree 2 in ``x``, so no ``‖x0‖²`` factor is needed.
    For ``AᴴA = s·I`` and ``μ = 1`` one step equals a Gerchberg–Saxton step; ``μ < 2s/λ_max(AᴴA)``
    keeps the iteration stable (≈ 0.75 for L = 6 octanary masks, whose per-pixel
    ``Σ_l|d_l|²/L`` reaches ≈ 2.6). Initialisation, stopping and modes as in
    :func:`wirtinger_flow`.
    """
    _check_options(n_iter=n_iter, mu=mu, gamma=gamma, tol=tol, n_power_iter=n_power_iter)
    if weighting not in AF_WEIGHTINGS:
        raise SolverError(f"unknown weighting {weighting!r}; choose one of {AF_WEIGHTINGS}")
    with _grad_context(differentiable, op):
        prob = _setup(op, y, norm_sq)
        x_true = _x_true(prob, x_true)
        gen = _generator(generator)
        x = _init(prob, x0, init, spectral_method, n_power_iter, gen, alpha_y)
        step_size = mu / prob.s
        sy = prob.sqrt_y
        sy_c = sy.to(prob.cdtype)
        B, BH = prob.B, prob.BH

        def step(x, t):
            z = B(x)
            resid = torch.addcmul(z, torch.sgn(z), sy_c, value=-1)  # z − √y ⊙ sgn(z), one pass
            if weighting == "truncated":
                keep = z.abs() >= sy / (1.0 + gamma)
                resid = torch.where(keep, resid, torch.zeros_like(resid))
            return x - step_size * BH(resid), z, x

        return _run(prob, step, x, name="amplitude_flow", n_iter=n_iter, tol=tol,
                    residual_tol=_default_residual_tol(prob, residual_tol), history=history,
                    x_true=x_true, differentiable=differentiable, progress=progress)


# --------------------------------------------------------------------------------------------
# projections: pseudo-inverse and object constraints
# --------------------------------------------------------------------------------------------
def _pinv(prob: _Problem, mode: str, cg_iter: int, check_tol: float) -> PseudoInverse:
    """The operator's least-squares pseudo-inverse (:class:`optics.operator.PseudoInverse`) on
    its magnitude pair, so that ``A⁺(√y ⊙ sgn(A x)) = B⁺(√y ⊙ sgn(B x))``."""
    if mode not in PINV_MODES:
        raise SolverError(f"unknown pinv mode {mode!r}; choose one of {PINV_MODES}")
    if mode == "auto" and getattr(prob.op, "normal_is_diagonal", lambda: None)() is False:
        mode = "cg"
    try:
        return PseudoInverse(prob.op, prob.in_shape, dtype=prob.cdtype, device=prob.y.device, mode=mode,
                             cg_iter=cg_iter, check_tol=check_tol, pair=(prob.B, prob.BH))
    except OperatorError as exc:
        raise SolverError(str(exc)) from exc


def _project_object(x: Tensor, support: Optional[Tensor], nonnegative: bool, real: bool) -> Tensor:
    """``P_C``: projection onto {support, real, non-negative} (whichever are requested)."""
    if nonnegative:
        x = torch.complex(torch.clamp(x.real, min=0.0), torch.zeros_like(x.real))
    elif real:
        x = torch.complex(x.real, torch.zeros_like(x.real))
    if support is not None:
        x = torch.where(support, x, torch.zeros_like(x))
    return x


def _fourier_setup(op, y, norm_sq, x_true, support, generator, x0, init, spectral_method,
                   n_power_iter, alpha_y, pinv_mode, cg_iter, check_tol, nonnegative, real):
    """Shared set-up of the object-domain solvers (ER/GS, HIO): the problem, the checked
    ``x_true`` and support, the measurement projection ``p_m`` and the initial iterate."""
    prob = _setup(op, y, norm_sq)
    x_true = _x_true(prob, x_true)
    support = _prepare_constraint(prob, support)
    gen = _generator(generator)
    pinv = _pinv(prob, pinv_mode, cg_iter, check_tol)
    sy = prob.sqrt_y
    sy_c = sy.to(prob.cdtype)

    def p_m(x):
        """Measurement projection ``A⁺(√y ⊙ sgn(A x))``; also returns ``B x`` (``|B x| = |A x|``)."""
        z = prob.B(x)
        u = torch.sgn(z).mul_(sy_c) if not torch.is_grad_enabled() else sy_c * torch.sgn(z)
        return pinv(u, x), z

    def random_init():
        u = sy.to(prob.cdtype) * _rand_phase(prob.batch + prob.meas_shape, gen, prob.cdtype,
                                            prob.y.device)
        warm = torch.zeros(prob.batch + prob.in_shape, dtype=prob.cdtype, device=prob.y.device)
        return _project_object(pinv(u, warm), support, nonnegative, real)

    x = _init(prob, x0, init, spectral_method, n_power_iter, gen, alpha_y, random_init)
    return prob, x_true, support, p_m, x


# --------------------------------------------------------------------------------------------
# error reduction / Gerchberg–Saxton
# --------------------------------------------------------------------------------------------
def error_reduction(op, y: Tensor, *, n_iter: int = 500, x0: Optional[Tensor] = None,
                    init: str = "spectral", support: Optional[Tensor] = None,
                    nonnegative: bool = False, real: bool = False,
                    spectral_method: str = "plain", n_power_iter: int = 50,
                    pinv: str = "auto", cg_iter: int = 10, pinv_check_tol: float = 1e-3,
                    tol: Optional[float] = 1e-6, residual_tol="auto",
                    generator: GeneratorLike = None, history: bool = True,
                    x_true: Optional[Tensor] = None, differentiable: bool = False,
                    progress: bool = False, norm_sq: Optional[float] = None,
                    alpha_y: float = 3.0) -> SolverResult:
    r"""Error reduction (Fienup 1982) = Gerchberg–Saxton alternating projections for CDPs:

        ``x_{k+1} = P_C(A⁺(√y ⊙ sgn(A x_k)))``

    ``sgn(z) = z/|z|`` (0 at 0), ``A⁺ = (AᴴA)⁻¹Aᴴ`` the least-squares pseudo-inverse of the
    stacked operator (see :class:`optics.operator.PseudoInverse`: the diagonal of ``AᴴA`` when it is diagonal — checked
    at start — else ``cg_iter`` CG steps), and ``P_C`` the object-domain projection onto
    ``support`` (bool ``(..., H, W)``), ``real`` and/or ``nonnegative`` (which implies real).
    With no object constraint this is Gerchberg–Saxton's alternating projection between the
    L measured amplitude planes (the classic two-plane GS with the object amplitude is the
    special case of a known-amplitude constraint, not offered here). With the diagonal
    pseudo-inverse both steps are exact projections (the constraints act pixel by pixel, so
    the ``D``-weighted and Euclidean projections coincide) and error reduction never increases
    ``‖|Ax| − √y‖`` (Fienup 1982); it stagnates easily from a random start on a single
    Fourier magnitude; use :func:`hio` first there. ``init="spectral"`` (default) or
    ``"random"`` (random detector phases, back-projected and constrained). Stopping and modes
    as in :func:`wirtinger_flow`.
    """
    _check_options(n_iter=n_iter, tol=tol, cg_iter=cg_iter, n_power_iter=n_power_iter)
    with _grad_context(differentiable, op):
        prob, x_true, sup, p_m, x = _fourier_setup(
            op, y, norm_sq, x_true, support, generator, x0, init, spectral_method, n_power_iter,
            alpha_y, pinv, cg_iter, pinv_check_tol, nonnegative, real)

        def step(x, t):
            xp, z = p_m(x)
            return _project_object(xp, sup, nonnegative, real), z, x

        return _run(prob, step, x, name="error_reduction", n_iter=n_iter, tol=tol,
                    residual_tol=_default_residual_tol(prob, residual_tol), history=history,
                    x_true=x_true, differentiable=differentiable, progress=progress)


def gerchberg_saxton(op, y: Tensor, **kwargs) -> SolverResult:
    """Gerchberg–Saxton for CDPs: :func:`error_reduction` with the same keywords (no object
    constraint by default — alternating projections between the measured amplitude planes)."""
    res = error_reduction(op, y, **kwargs)
    res.solver = "gerchberg_saxton"
    return res


# --------------------------------------------------------------------------------------------
# hybrid input-output
# --------------------------------------------------------------------------------------------
def hio(op, y: Tensor, *, n_iter: int = 500, beta: float = 0.9, x0: Optional[Tensor] = None,
        init: str = "random", support: Optional[Tensor] = None, nonnegative: bool = False,
        real: bool = False, spectral_method: str = "plain", n_power_iter: int = 50,
        pinv: str = "auto", cg_iter: int = 10, pinv_check_tol: float = 1e-3,
        tol: Optional[float] = 1e-6, residual_tol="auto", generator: GeneratorLike = None,
        history: bool = True, x_true: Optional[Tensor] = None, differentiable: bool = False,
        progress: bool = False, norm_sq: Optional[float] = None,
        alpha_y: float = 3.0) -> SolverResult:
    r"""Hybrid input–output (Fienup 1982), for object-domain constraints (a support,
    and optionally realness/positivity) on e.g. one oversampled diffraction pattern.

    With ``x'_k = A⁺(√y ⊙ sgn(A x_k))`` (as in :func:`error_reduction`), applied to the real
    and imaginary parts separately:

        ``x_{k+1} = x'_k``            where ``x'_k`` satisfies the constraints,
        ``x_{k+1} = x_k − β x'_k``    elsewhere (``β = 0.9``),

    where the real part "satisfies" inside the support (and, with ``nonnegative``, where
    ``Re x' ≥ 0``), and the imaginary part inside the support unless ``real``/``nonnegative``
    is set (then nowhere). The iterate ``x_k`` is a driving sequence, not an estimate: the
    returned ``x`` (and every ``history`` entry) is ``P_C(x'_k)``, which costs one extra ``A``
    per iteration when a residual is needed. Polish with a few :func:`error_reduction`
    iterations from ``result.x`` (HIO alone oscillates around the solution). ``init="random"``
    (default: random detector phases, back-projected) or ``"spectral"``. Uniqueness needs
    oversampling ≥ 2 per axis for one Fourier magnitude; the twin image ``conj(x(−r))`` and
    translations remain ambiguous unless the support excludes them (a tight support that is
    not centrosymmetric excludes both).

    The feedback acts on the operator's *input grid* only. An operator that zero-pads
    internally (e.g. ``CDPSystem(oversampling=2)``) hides the padded region from ``x``: those
    pixels are reset to zero every iteration (an error-reduction step there), which makes HIO
    stagnate like ER. For one oversampled pattern, give HIO the padded grid instead — an
    operator with ``oversampling=1`` on an object grid at least twice the support per axis,
    and the support as ``support`` (the classic Fienup set-up).
    """
    _check_options(n_iter=n_iter, beta=beta, tol=tol, cg_iter=cg_iter, n_power_iter=n_power_iter)
    with _grad_context(differentiable, op):
        prob, x_true, sup, p_m, x = _fourier_setup(
            op, y, norm_sq, x_true, support, generator, x0, init, spectral_method, n_power_iter,
            alpha_y, pinv, cg_iter, pinv_check_tol, nonnegative, real)
        inside = sup if sup is not None else torch.ones(prob.in_shape, dtype=torch.bool,
                                                        device=prob.y.device)

        def hio_update(x, xp):
            ok_re = inside & (xp.real >= 0) if nonnegative else inside
            re = torch.where(ok_re, xp.real, x.real - beta * xp.real)
            if real or nonnegative:
                im = x.imag - beta * xp.imag
            else:
                im = torch.where(inside, xp.imag, x.imag - beta * xp.imag)
            return torch.complex(re, im)

        def step(x, t):
            xp, _ = p_m(x)
            return hio_update(x, xp), None, _project_object(xp, sup, nonnegative, real)

        def finalize(x):
            return _project_object(p_m(x)[0], sup, nonnegative, real)

        return _run(prob, step, x, name="hio", n_iter=n_iter, tol=tol,
                    residual_tol=_default_residual_tol(prob, residual_tol), history=history,
                    x_true=x_true, differentiable=differentiable, progress=progress,
                    finalize=finalize)


# --------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------
#: the short solver names (config ``solver.name`` and ``reconstruct --solver`` take these)
SOLVER_NAMES = ("wf", "er", "gs", "hio", "af")
SOLVERS = {
    "wf": wirtinger_flow, "wirtinger_flow": wirtinger_flow,
    "af": amplitude_flow, "amplitude_flow": amplitude_flow,
    "er": error_reduction, "error_reduction": error_reduction,
    "gs": gerchberg_saxton, "gerchberg_saxton": gerchberg_saxton,
    "hio": hio,
}


def solve(op, y: Tensor, solver: str = "wf", **kwargs) -> SolverResult:
    """Run the solver named ``solver`` (``"wf"``, ``"af"``, ``"er"``, ``"gs"``, ``"hio"`` or
    the full function names) with the given keywords; see each function for its options."""
    fn = SOLVERS.get(solver)
    if fn is None:
        raise SolverError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    return fn(op, y, **kwargs)
