"""Projection methods: error reduction / Gerchberg–Saxton and hybrid input–output, with the
least-squares pseudo-inverse as the measurement projection."""
from __future__ import annotations

from typing import Optional

import torch

from optics.operator import PINV_MODES, OperatorError, PseudoInverse

from ..errors import SolverError
from ._core import (GeneratorLike, SolverResult, Tensor, _check_options, _default_residual_tol,
                    _discrepancy_target, _generator, _grad_context, _prepare_constraint,
                    _Problem, _project_object, _rand_phase, _run, _setup, _x_true)
from .spectral import _init

__all__ = ["error_reduction", "gerchberg_saxton", "hio"]

# --------------------------------------------------------------------------------------------
# pseudo-inverse and shared set-up
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
                    alpha_y: float = 3.0, stop: str = "tol", amplitude_noise_std=None,
                    discrepancy_factor: float = 1.0) -> SolverResult:
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
    ``"random"`` (random detector phases, back-projected and constrained). Stopping (including
    ``stop="discrepancy"`` with ``amplitude_noise_std``) and modes as in
    :func:`wirtinger_flow`.
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
                    x_true=x_true, differentiable=differentiable, progress=progress,
                    discrepancy=_discrepancy_target(prob, stop, amplitude_noise_std,
                                                    discrepancy_factor, differentiable))


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
        alpha_y: float = 3.0, stop: str = "tol", amplitude_noise_std=None,
        discrepancy_factor: float = 1.0) -> SolverResult:
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

    ``stop="discrepancy"`` (with ``amplitude_noise_std``) scores the estimate ``P_C(x'_k)``, as
    in :func:`wirtinger_flow`.
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
                    discrepancy=_discrepancy_target(prob, stop, amplitude_noise_std,
                                                    discrepancy_factor, differentiable),
                    finalize=finalize)


