r"""Regularised reconstructors that need no training: TV-regularised amplitude fitting and
plug-and-play (PnP) with any :class:`learning.denoisers.Denoiser`.

Both run the same proximal-gradient loop on the amplitude loss of the normalised operator
(package docstring), ``ℓ(x) = (1/2s)‖|Ax| − √y‖²``, whose gradient step of length 1 is, for
``AᴴA = s·I`` (masks + unitary FFT/Fraunhofer), the measurement projection of error reduction:

    ``x − ∇ℓ(x) = A⁺(√y ⊙ sgn(A x))``,

followed by a denoising step and the object constraints ``P_C`` (support, real, non-negative):

    ``x_{k+1} = P_C(D(A⁺(√y ⊙ sgn(A x_k)), σ_k))``.

* :func:`tv`: ``D`` is the proximal map of ``λ·TV`` (:class:`learning.denoisers.TVDenoiser`),
  so the loop is proximal gradient descent (ISTA) on ``ℓ(x) + λ TV(x)`` with a fixed ``λ``
  (``= weight_factor·σ_x`` unless ``weight`` is given).
* :func:`pnp`: ``D`` is any denoiser (default non-local means), run at a noise level that falls
  geometrically from ``sigma_start·σ_x`` to ``sigma_end·σ_x`` over the iterations (Venkatakrishnan,
  Bouman & Wohlberg 2013; the decreasing schedule as in Zhang et al. 2017/2021).

``σ_x`` is the noise the measurement step leaves in each real channel of the object: for
amplitude noise of std ``σ_b`` (``amplitude_noise_std``, the std of ``√y − |Ax|``) and
``AᴴA = s·I``, ``A⁺`` averages it to a complex white noise of variance ``σ_b²/s`` per pixel, so

    ``σ_x = σ_b / √(2s)``

per real channel (measured on the L = 4 unitary-FFT protocol: 0.0063 / 0.0198 / 0.0586
against 0.0062 / 0.0187 / 0.0562 predicted at α = 9 / 27 / 81). Without ``amplitude_noise_std``
it is estimated from the start: ``σ̂_b = ‖|Ax_0| − √y‖ / √m`` from the error-reduction start
``x_0`` (which fits the data about as well as the truth does).

The denoiser sees the object's real part as one channel for real objects (``real`` or
``nonnegative``), else the real and imaginary parts as two channels; batch axes are
flattened to ``B``. The start is ``n_init_iter`` error-reduction iterations with the same
constraints (``init="er"``) or ``x0``.

References: S. V. Venkatakrishnan, C. A. Bouman, B. Wohlberg, "Plug-and-play priors for model
based reconstruction", GlobalSIP 2013; C. A. Metzler, P. Schniter, A. Veeraraghavan, R. G.
Baraniuk, "prDeep: robust phase retrieval with a flexible deep network", ICML 2018;
A. Chambolle, "An algorithm for total variation minimization and applications", J. Math.
Imaging Vis. 20, 89–97 (2004).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ..denoisers import Denoiser, DenoiserError, TVDenoiser, make_denoiser
from ..errors import SolverError
from ._core import (GeneratorLike, SolverResult, Tensor, _check_options, _default_residual_tol,
                    _discrepancy_target, _grad_context, _noise_std, _project_object,
                    _residual, _run)
from .projections import _fourier_setup, error_reduction

__all__ = ["tv", "pnp"]


def _as_denoiser(denoiser, options) -> Denoiser:
    if isinstance(denoiser, str):
        try:
            return make_denoiser(denoiser, **(options or {}))
        except DenoiserError as exc:
            raise SolverError(str(exc)) from exc
    if options:
        raise SolverError("denoiser_options apply to a denoiser given by name; configure a "
                          "Denoiser instance when you build it")
    if not isinstance(denoiser, Denoiser):
        raise SolverError(f"denoiser must be a name from learning.denoisers.DENOISERS or a "
                          f"learning.denoisers.Denoiser (forward(x, sigma)), got "
                          f"{type(denoiser).__name__}")
    return denoiser


def _apply_denoiser(den: Denoiser, v: Tensor, sigma: Tensor, real: bool) -> Tensor:
    """``D`` on the object ``v`` (batch + (H, W), complex): real part as one channel (real
    objects) or real and imaginary parts as two; ``sigma`` per sample (batch shape)."""
    batch, hw = v.shape[:-2], v.shape[-2:]
    vb = v.reshape((-1,) + tuple(hw))
    chans = vb.real[:, None] if real else torch.stack([vb.real, vb.imag], dim=1)
    out = den(chans, sigma.reshape(-1).to(chans.real.dtype))
    if not isinstance(out, torch.Tensor) or out.shape != chans.shape:
        raise SolverError(f"the denoiser {type(den).__name__} returned "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
                          f" for an input of shape {tuple(chans.shape)}; D(x, sigma) must keep x's shape")
    out = out.to(chans.dtype)
    z = torch.complex(out[:, 0], torch.zeros_like(out[:, 0])) if real else torch.complex(out[:, 0], out[:, 1])
    return z.reshape(tuple(batch) + tuple(hw)).to(v.dtype)


def _noise_from_residual(r: Tensor, y_sum: Tensor, m: int) -> Tensor:
    r"""``σ̂_b = ‖|Ax_0| − √y‖ / √m`` from the relative residual ``r`` of a start ``x_0`` that fits
    the data (an error-reduction result): its residual is about the truth's, whose expected
    value is ``σ_b√m``. Measured 0.94·σ_b on a 64² natural image, L = 4, α = 27 (ER fits a
    little of the noise; tests/learning/test_regularised.py)."""
    return r * torch.sqrt(y_sum / m)


def _regularised(op, y, *, name: str, den: Denoiser, sigma_factors, n_iter: int, x0, init: str,
                 n_init_iter: int, support, nonnegative: bool, real: bool, amplitude_noise_std,
                 spectral_method: str, n_power_iter: int, alpha_y: float, pinv: str, cg_iter: int,
                 pinv_check_tol: float, tol, residual_tol, stop: str, discrepancy_factor: float,
                 generator: GeneratorLike, history: bool, x_true, differentiable: bool,
                 progress: bool, norm_sq) -> SolverResult:
    """The loop shared by :func:`tv` and :func:`pnp` (module docstring)."""
    _check_options(n_iter=n_iter, n_init_iter=n_init_iter, tol=tol, cg_iter=cg_iter,
                   n_power_iter=n_power_iter)
    if differentiable and not getattr(den, "differentiable", False):
        raise SolverError(f"differentiable=True needs a differentiable denoiser; "
                          f"{type(den).__name__} is not (numpy code) — use a torch Denoiser with "
                          f"differentiable = True, or differentiable=False")
    if init not in ("er", "spectral", "random"):
        raise SolverError(f"unknown init {init!r}; choose 'er' (error reduction from a spectral "
                          f"start), 'spectral' or 'random', or pass x0")
    common = dict(support=support, nonnegative=nonnegative, real=real,
                  spectral_method=spectral_method, n_power_iter=n_power_iter, pinv=pinv,
                  cg_iter=cg_iter, pinv_check_tol=pinv_check_tol, norm_sq=norm_sq, alpha_y=alpha_y)
    if x0 is None and init == "er":
        x0 = error_reduction(op, y, n_iter=n_init_iter, tol=None, residual_tol=None, history=False,
                             generator=generator, differentiable=differentiable, **common).x
        init = "spectral"  # unused: x0 is given
    real_obj = bool(real or nonnegative)
    with _grad_context(differentiable, op):
        prob, x_true, sup, p_m, x = _fourier_setup(
            op, y, norm_sq, x_true, support, generator, x0, init, spectral_method, n_power_iter,
            alpha_y, pinv, cg_iter, pinv_check_tol, nonnegative, real)
        x = _project_object(x, sup, nonnegative, real)
        sd_b = _noise_std(prob, amplitude_noise_std)
        if sd_b is None:
            with torch.no_grad():
                r0 = _residual(prob, prob.B(x))
            sd_b = _noise_from_residual(r0, prob.y_sum[..., 0, 0, 0], prob.m)
        sigma_x = (sd_b / math.sqrt(2.0 * prob.s)).detach()
        target = _discrepancy_target(prob, stop, amplitude_noise_std if amplitude_noise_std is not None
                                     else sd_b, discrepancy_factor, differentiable)

        def step(x, t):
            v, z = p_m(x)
            xn = _apply_denoiser(den, v, sigma_x * sigma_factors(t), real_obj)
            return _project_object(xn, sup, nonnegative, real), z, x

        res = _run(prob, step, x, name=name, n_iter=n_iter, tol=tol,
                   residual_tol=_default_residual_tol(prob, residual_tol), history=history,
                   x_true=x_true, differentiable=differentiable, progress=progress,
                   discrepancy=target)
        if history:
            res.history["amplitude_noise_std"] = sd_b.detach().cpu()
        return res


def _geometric(start: float, end: float, n_iter: int):
    def f(t):
        return start * (end / start) ** (t / max(n_iter - 1, 1))
    return f


_COMMON_DOC = """
    Common options: ``amplitude_noise_std`` (σ_b, std of ``√y − |Ax|``; estimated when None —
    module docstring), ``x0`` or ``init="er"`` with ``n_init_iter`` error-reduction iterations
    (or ``"spectral"``/``"random"``), object constraints ``support``/``real``/``nonnegative`` as
    in :func:`learning.solvers.error_reduction`, the pseudo-inverse options ``pinv``,
    ``cg_iter``, ``pinv_check_tol``, the stopping options ``tol``/``residual_tol`` (default
    None: all ``n_iter`` iterations run, the denoiser schedule needs them) and
    ``stop="discrepancy"``, and ``history``/``x_true``/``progress``/``generator``/``norm_sq``
    as in :func:`learning.solvers.wirtinger_flow`. ``history["amplitude_noise_std"]`` records the
    σ_b used (with ``history=True``). ``differentiable=True`` needs a differentiable denoiser (a torch network).
    Returns a :class:`SolverResult`."""


def tv(op, y: Tensor, *, weight: Optional[float] = None, weight_factor: float = 1.0,
       n_iter: int = 40, amplitude_noise_std=None, x0: Optional[Tensor] = None, init: str = "er",
       n_init_iter: int = 50, support: Optional[Tensor] = None, nonnegative: bool = False,
       real: bool = False, tv_eps: float = 2e-4, tv_max_iter: int = 200,
       spectral_method: str = "plain", n_power_iter: int = 50, alpha_y: float = 3.0,
       pinv: str = "auto", cg_iter: int = 10, pinv_check_tol: float = 1e-3,
       tol: Optional[float] = None, residual_tol=None, stop: str = "tol",
       discrepancy_factor: float = 1.0, generator: GeneratorLike = None, history: bool = True,
       x_true: Optional[Tensor] = None, differentiable: bool = False, progress: bool = False,
       norm_sq: Optional[float] = None) -> SolverResult:
    r"""TV-regularised phase retrieval: proximal gradient (ISTA, step 1) on

        ``(1/2s)‖|Ax| − √y‖² + λ·TV(x)``,   ``x_{k+1} = P_C(prox_{λTV}(A⁺(√y ⊙ sgn(A x_k))))``

    with isotropic TV (per real channel) and ``λ = weight`` or ``weight_factor·σ_x`` (default 1,
    chosen on the tuning images of ``benchmarks/solvers.py --protocol --images tuning``, never
    the benchmark ones: factors 0.5 / 1 / 2 gave 41.9 / 41.3 / 38.4 dB at α = 9, 33.9 / 34.7 /
    32.3 at α = 27, 25.8 / 27.2 / 26.7 at α = 81); the prox by
    Chambolle's algorithm (:class:`learning.denoisers.TVDenoiser`, ``tv_eps``, ``tv_max_iter``).
    """ + _COMMON_DOC
    if weight is not None and not (isinstance(weight, (int, float)) and weight > 0):
        raise SolverError(f"weight (λ) must be a positive number in x's units, got {weight!r}")
    try:
        den = TVDenoiser(weight_factor=weight_factor, weight=weight, eps=tv_eps,
                         max_num_iter=tv_max_iter)
    except DenoiserError as exc:
        raise SolverError(str(exc)) from exc
    return _regularised(op, y, name="tv", den=den, sigma_factors=lambda t: 1.0, n_iter=n_iter,
                        x0=x0, init=init, n_init_iter=n_init_iter, support=support,
                        nonnegative=nonnegative, real=real, amplitude_noise_std=amplitude_noise_std,
                        spectral_method=spectral_method, n_power_iter=n_power_iter, alpha_y=alpha_y,
                        pinv=pinv, cg_iter=cg_iter, pinv_check_tol=pinv_check_tol, tol=tol,
                        residual_tol=residual_tol, stop=stop, discrepancy_factor=discrepancy_factor,
                        generator=generator, history=history, x_true=x_true,
                        differentiable=differentiable, progress=progress, norm_sq=norm_sq)


def pnp(op, y: Tensor, *, denoiser: Union[str, Denoiser] = "nlm",
        denoiser_options: Optional[dict] = None, sigma_start: float = 5.0, sigma_end: float = 1.0,
        n_iter: int = 40, amplitude_noise_std=None, x0: Optional[Tensor] = None, init: str = "er",
        n_init_iter: int = 50, support: Optional[Tensor] = None, nonnegative: bool = False,
        real: bool = False, spectral_method: str = "plain", n_power_iter: int = 50,
        alpha_y: float = 3.0, pinv: str = "auto", cg_iter: int = 10, pinv_check_tol: float = 1e-3,
        tol: Optional[float] = None, residual_tol=None, stop: str = "tol",
        discrepancy_factor: float = 1.0, generator: GeneratorLike = None, history: bool = True,
        x_true: Optional[Tensor] = None, differentiable: bool = False, progress: bool = False,
        norm_sq: Optional[float] = None) -> SolverResult:
    r"""Plug-and-play proximal gradient: ``x_{k+1} = P_C(D(A⁺(√y ⊙ sgn(A x_k)), σ_k))`` with
    ``σ_k = σ_x · sigma_start · (sigma_end/sigma_start)^{k/(n_iter−1)}`` (default 5 → 1, chosen
    on tuning images, never the benchmark ones).

    ``denoiser``: a name from :data:`learning.denoisers.DENOISERS` (``"nlm"`` default,
    ``"wavelet"``, ``"tv"``, ``"bm3d"``; built with ``denoiser_options``) or any
    :class:`learning.denoisers.Denoiser` — a trained network plugs in here.
    """ + _COMMON_DOC
    for k, v in (("sigma_start", sigma_start), ("sigma_end", sigma_end)):
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise SolverError(f"{k} must be a positive factor of σ_x, got {v!r}")
    den = _as_denoiser(denoiser, denoiser_options)
    return _regularised(op, y, name="pnp", den=den,
                        sigma_factors=_geometric(float(sigma_start), float(sigma_end), n_iter),
                        n_iter=n_iter, x0=x0, init=init, n_init_iter=n_init_iter, support=support,
                        nonnegative=nonnegative, real=real, amplitude_noise_std=amplitude_noise_std,
                        spectral_method=spectral_method, n_power_iter=n_power_iter, alpha_y=alpha_y,
                        pinv=pinv, cg_iter=cg_iter, pinv_check_tol=pinv_check_tol, tol=tol,
                        residual_tol=residual_tol, stop=stop, discrepancy_factor=discrepancy_factor,
                        generator=generator, history=history, x_true=x_true,
                        differentiable=differentiable, progress=progress, norm_sq=norm_sq)
