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

Layout
------
One family per module, sharing one core:

* :mod:`._core` — set-up and validation, the iteration loop and its stopping rules
  (stagnation, round-off floor, the discrepancy principle ``stop="discrepancy"``), object
  constraints, the real-object alignment of a start;
* :mod:`.spectral` — spectral initialisation;
* :mod:`.projections` — error reduction / Gerchberg–Saxton, HIO;
* :mod:`.gradient` — Wirtinger flow, amplitude flow;
* :mod:`.regularised` — TV-regularised and plug-and-play reconstructors (no training needed;
  denoisers from :mod:`learning.denoisers`).

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
* V. A. Morozov, "On the solution of functional equations by the method of regularization",
  Soviet Math. Dokl. 7, 414–417 (1966) — the discrepancy principle.
* G. Wang, G. B. Giannakis, Y. C. Eldar, "Solving systems of random quadratic equations via
  truncated amplitude flow", IEEE Trans. Inf. Theory 64(2), 773–794 (2018).
* R. W. Gerchberg, W. O. Saxton, Optik 35, 237–246 (1972); J. R. Fienup, "Phase retrieval
  algorithms: a comparison", Appl. Opt. 21(15), 2758–2769 (1982).
"""
from __future__ import annotations

from ..errors import SolverError
from ._core import STOP_RULES, LinearOperator, SolverResult, estimate_norm_sq
from .gradient import AF_WEIGHTINGS, amplitude_flow, wirtinger_flow
from .projections import error_reduction, gerchberg_saxton, hio
from .regularised import pnp, tv
from .spectral import SPECTRAL_METHODS, spectral_init

__all__ = [
    "SolverError", "LinearOperator", "SolverResult", "estimate_norm_sq", "spectral_init",
    "wirtinger_flow", "amplitude_flow", "error_reduction", "gerchberg_saxton", "hio", "tv", "pnp",
    "solve", "SOLVERS", "SOLVER_NAMES", "STOP_RULES", "SPECTRAL_METHODS", "AF_WEIGHTINGS",
]

#: the short solver names (config ``solver.name`` and ``reconstruct --solver`` take these)
SOLVER_NAMES = ("wf", "er", "gs", "hio", "af", "tv", "pnp")
SOLVERS = {
    "wf": wirtinger_flow, "wirtinger_flow": wirtinger_flow,
    "af": amplitude_flow, "amplitude_flow": amplitude_flow,
    "er": error_reduction, "error_reduction": error_reduction,
    "gs": gerchberg_saxton, "gerchberg_saxton": gerchberg_saxton,
    "hio": hio,
    "tv": tv, "pnp": pnp,
}


def solve(op, y, solver: str = "wf", **kwargs) -> SolverResult:
    """Run the solver named ``solver`` (one of :data:`SOLVER_NAMES` or the full function
    names) with the given keywords; see each function for its options."""
    fn = SOLVERS.get(solver)
    if fn is None:
        raise SolverError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    return fn(op, y, **kwargs)
