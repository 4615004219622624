"""The solvers' shared core: problem set-up and validation, the iteration loop with its
stopping rules (stagnation, round-off floor, discrepancy principle), object-domain constraints
and the global-phase alignment of a start for real objects. One home for what every family
(:mod:`.projections`, :mod:`.gradient`, :mod:`.regularised`) uses; see the package docstring
for the scaling convention and the modes."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Protocol, Tuple, Union, runtime_checkable

import torch

from optics.operator import OperatorError
from optics.operator import estimate_norm_sq as _estimate_norm_sq

from ..errors import SolverError
from ..metrics import relative_error

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


#: the options that count iterations (checked as non-negative ints, not as numbers)
_COUNT_OPTIONS = ("n_iter", "n_init_iter", "n_power_iter", "cg_iter")


def _check_options(**kw):
    for k, v in kw.items():
        if k in _COUNT_OPTIONS:
            if not isinstance(v, int) or v < 0:
                raise SolverError(f"{k} must be a non-negative int, got {v!r}")
        elif v is not None and not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise SolverError(f"{k} must be a finite non-negative number or None, got {v!r}")


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
         finalize: Optional[Callable[[Tensor], Tensor]] = None,
         discrepancy: Optional[Tensor] = None) -> SolverResult:
    """The loop every solver shares: steps, residual history, stopping.

    Stopping (only when not ``differentiable``): every sample satisfies one of (a) relative
    residual ``≤ residual_tol``, (b) relative change of the residual ``≤ tol`` (stagnation),
    (c) with ``discrepancy`` (a per-sample relative residual target, see
    :func:`_discrepancy_target`) the residual reached it — such a sample is *frozen* at that
    iterate (its estimate is returned unchanged) while the others go on."""
    check = (not differentiable) and (tol is not None or residual_tol is not None
                                      or discrepancy is not None)
    need_res = history or check
    done = None
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
            if discrepancy is not None and not differentiable:
                # discrepancy principle: keep x_t (whose estimate scored r_t) once r_t ≤ target
                done = (r <= discrepancy) if done is None else done | (r <= discrepancy)
                if bool(done.any()):
                    x_next = torch.where(done[..., None, None], x, x_next)
                if bool(done.all()):
                    converged = True
            if check and prev is not None:
                ok = torch.zeros_like(r, dtype=torch.bool) if done is None else done.clone()
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


def _x_true(prob: _Problem, x_true):
    if x_true is None:
        return None
    if not isinstance(x_true, torch.Tensor) or tuple(x_true.shape[-2:]) != prob.in_shape:
        raise SolverError(f"x_true must be a tensor of shape (..., {prob.in_shape[0]}, "
                          f"{prob.in_shape[1]}); got "
                          f"{tuple(x_true.shape) if isinstance(x_true, torch.Tensor) else x_true!r}")
    return x_true


# --------------------------------------------------------------------------------------------
# projections: pseudo-inverse and object constraints
# --------------------------------------------------------------------------------------------
def _project_object(x: Tensor, support: Optional[Tensor], nonnegative: bool, real: bool) -> Tensor:
    """``P_C``: projection onto {support, real, non-negative} (whichever are requested)."""
    if nonnegative:
        x = torch.complex(torch.clamp(x.real, min=0.0), torch.zeros_like(x.real))
    elif real:
        x = torch.complex(x.real, torch.zeros_like(x.real))
    if support is not None:
        x = torch.where(support, x, torch.zeros_like(x))
    return x




def _align_real_start(x: Tensor, nonnegative: bool, real: bool) -> Tensor:
    """Rotate a start that is only defined up to a global phase (a spectral estimate) so that
    its projection onto real/non-negative objects loses least: for ``nonnegative`` objects
    ``Σ x`` must be real positive, so ``x ← x·e^{−i∠Σx}``; for ``real`` ones ``x e^{−iφ}`` is
    closest to real for ``φ = ∠(Σ x²)/2`` (it maximises ``‖Re(x e^{−iφ})‖``). Projecting a
    spectral start without this keeps a random fraction ``cos φ`` of it (none at
    ``φ = π/2``)."""
    if nonnegative:
        return x * torch.sgn(x.sum(dim=(-2, -1), keepdim=True)).conj()
    if real:
        ph = torch.angle((x * x).sum(dim=(-2, -1), keepdim=True)) / 2
        return x * torch.polar(torch.ones_like(ph), -ph).to(x.dtype)
    return x


# --------------------------------------------------------------------------------------------
# noise level and the discrepancy principle
# --------------------------------------------------------------------------------------------
#: stopping rules of the iterative solvers: ``"tol"`` (stagnation/round-off, the default) or
#: ``"discrepancy"`` (Morozov's discrepancy principle at the known amplitude noise level)
STOP_RULES = ("tol", "discrepancy")


def _noise_std(prob: _Problem, amplitude_noise_std) -> Optional[Tensor]:
    """The amplitude noise std ``σ_b`` (std of ``√y − |A x|``, in ``√y``'s units) as a tensor of
    the batch shape, or None."""
    if amplitude_noise_std is None:
        return None
    sd = torch.as_tensor(amplitude_noise_std, dtype=prob.y.dtype, device=prob.y.device).detach()
    if not bool(torch.isfinite(sd).all()) or bool((sd < 0).any()):
        raise SolverError(f"amplitude_noise_std must be finite and ≥ 0 (the std of √y − |Ax| in "
                          f"√y's units), got {amplitude_noise_std!r}; for y = |Ax|² + (α/255)|Ax|n "
                          f"it is ≈ α/510")
    try:
        return torch.broadcast_to(sd, prob.batch).clone()
    except RuntimeError as exc:
        raise SolverError(f"amplitude_noise_std has shape {tuple(sd.shape)}; pass a float or one "
                          f"value per sample (batch shape {prob.batch})") from exc


def _discrepancy_target(prob: _Problem, stop: str, amplitude_noise_std, factor: float,
                        differentiable: bool) -> Optional[Tensor]:
    """Relative residual target of the discrepancy principle (Morozov 1966): stop at the first
    iterate with ``‖|Ax_t| − √y‖ ≤ τ σ_b √m`` — as close to the data as the truth itself is in
    expectation (``E‖|Ax| − √y‖² = m σ_b²``), so the noise is not fitted. Returned as
    ``τ σ_b √m / ‖√y‖`` (the residual ``_run`` measures) per sample; None for ``stop="tol"``."""
    if stop not in STOP_RULES:
        raise SolverError(f"unknown stop rule {stop!r}; choose one of {STOP_RULES}")
    if stop == "tol":
        return None
    if differentiable:
        raise SolverError("stop='discrepancy' needs residual checks, which differentiable=True "
                          "does not make (it runs exactly n_iter iterations); use stop='tol' there")
    sd = _noise_std(prob, amplitude_noise_std)
    if sd is None:
        raise SolverError("stop='discrepancy' needs the noise level: pass amplitude_noise_std= "
                          "(the std of √y − |Ax|; ≈ α/510 for prDeep's α-noise)")
    if not (isinstance(factor, (int, float)) and factor > 0 and math.isfinite(factor)):
        raise SolverError(f"discrepancy_factor must be a positive number (τ ≈ 1), got {factor!r}")
    return factor * sd * math.sqrt(prob.m) / prob.y_sum[..., 0, 0, 0].sqrt()
