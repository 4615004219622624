r"""The linear-operator contract every measurement model and solver in phaseforge shares.

A :class:`LinearOperator` maps an object ``x`` of shape ``(..., H, W)`` (``in_shape``) to
fields ``A x`` and has the exact adjoint ``A_adjoint``; on top of these two it provides

* :meth:`~LinearOperator.norm_sq` — ``s = tr(AᴴA)/n``, the mean eigenvalue of ``AᴴA``
  (Hutchinson estimate with unit-modulus probes; exact when ``AᴴA`` is diagonal), the scale
  that normalises step sizes (:func:`estimate_norm_sq`);
* :meth:`~LinearOperator.A_dagger` — the least-squares pseudo-inverse ``(AᴴA)⁻¹Aᴴ``: the
  diagonal of ``AᴴA`` when ``AᴴA`` is diagonal (checked numerically once), conjugate
  gradients otherwise (:class:`PseudoInverse`);
* :meth:`~LinearOperator.adjointness_error` — the dot-product test
  ``|⟨Ax, z⟩ − ⟨x, Aᴴz⟩| / (‖Ax‖‖z‖)`` (:func:`adjointness_error`);
* :meth:`~LinearOperator.magnitude_pair` — an operator pair ``(B, Bᴴ)`` with ``A = D B`` for a
  diagonal unit-modulus ``D`` (the output phase factors of a Fourier-transform propagator).
  Then ``|A x| = |B x|``, ``Aᴴ(w ⊙ A x) = Bᴴ(w ⊙ B x)`` for real ``w`` and
  ``Aᴴ(w ⊙ sgn(A x)) = Bᴴ(w ⊙ sgn(B x))``: everything phase retrieval evaluates, at the cost
  of one elementwise pass less per transform. The default is ``(A, A_adjoint)``; ``A`` itself
  always stays the exact physical field.

The free functions take any object with ``A``/``A_adjoint`` (duck typing, as the solvers do),
so user-written operators get the same tools. Model: deepinv's ``LinearPhysics`` (``A``,
``A_adjoint``, ``A_dagger``, ``compute_sqnorm``, ``adjointness_test``); read, not copied.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .errors import OpticsError

__all__ = ["LinearOperator", "OperatorError", "estimate_norm_sq", "PseudoInverse", "cg",
           "adjointness_error", "PINV_MODES"]

Tensor = torch.Tensor
_PROBE_SEED = 20150402  # fixed seed of the internal probes (scale estimate, diagonality check)
PINV_MODES = ("auto", "diagonal", "cg")


class OperatorError(OpticsError):
    """An operator does not satisfy what a tool asked of it (e.g. a diagonal ``AᴴA``)."""


def _rand_phase(shape, seed: int, dtype, device) -> Tensor:
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    g = torch.Generator().manual_seed(seed)
    th = torch.rand(tuple(shape), dtype=real, generator=g).to(device)
    return torch.polar(torch.ones_like(th), 2 * math.pi * th).to(dtype)


def _randn_complex(shape, seed: int, dtype, device) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), dtype=dtype, generator=g).to(device)


def _norm2(x: Tensor) -> Tensor:
    return (x.real ** 2 + x.imag ** 2).sum(dim=(-2, -1), keepdim=True)


def estimate_norm_sq(op, in_shape, *, dtype=torch.complex64, device=None, n_probes: int = 4) -> float:
    """Hutchinson estimate of ``s = tr(AᴴA)/n``, the mean eigenvalue of ``AᴴA``.

    ``s ≈ (1/(K n)) Σ_k ‖A z_k‖²`` with unit-modulus random-phase probes ``z_k`` (fixed seed):
    unbiased for any ``A`` (``E[z zᴴ] = I``) and exact for diagonal ``AᴴA`` (masks + Fraunhofer
    or FFT propagation), since then ``zᴴ D z = Σ D_ii |z_i|² = tr D``. No gradient.
    """
    h, w = int(in_shape[0]), int(in_shape[1])
    with torch.no_grad():
        z = _rand_phase((n_probes, h, w), _PROBE_SEED, dtype, device)
        az = op.A(z)
        s = float((az.real ** 2 + az.imag ** 2).sum()) / (n_probes * h * w)
    if not (s > 0 and math.isfinite(s)):
        raise OperatorError(f"the operator's mean squared norm tr(AᴴA)/n = {s!r} is not a positive "
                            f"finite number; check the masks and propagation parameters")
    return s


def cg(normal: Callable[[Tensor], Tensor], b: Tensor, x: Tensor, n_iter: int) -> Tensor:
    """Batched conjugate gradient for the Hermitian PSD system ``N x = b`` (no in-place ops, so
    it can sit inside an autograd graph), warm-started at ``x``."""
    def dot(a, c):
        return (a.conj() * c).sum(dim=(-2, -1), keepdim=True).real

    r = b - normal(x)
    p = r
    rs = dot(r, r)
    for _ in range(n_iter):
        q = normal(p)
        den = dot(p, q)
        alpha = torch.where(den > 0, rs / torch.where(den > 0, den, torch.ones_like(den)),
                            torch.zeros_like(den))
        x = x + alpha.to(x.dtype) * p
        r = r - alpha.to(r.dtype) * q
        rs_new = dot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = r + beta.to(r.dtype) * p
        rs = rs_new
    return x


class PseudoInverse:
    r"""Least-squares pseudo-inverse ``A⁺ = (AᴴA)⁻¹Aᴴ`` of a stacked operator.

    For masks and propagation with ``PᴴP = c·I`` on the (zero-padded) support — Fraunhofer and
    single-FFT Fresnel — ``AᴴA = c Σ_l diag(|M_l|²)`` is diagonal; its diagonal is
    ``D = Re Aᴴ A 1``. That is verified once, ``‖AᴴA e − D e‖ ≤ check_tol·‖AᴴA e‖`` for a random
    ``e``; when it fails (``mode="auto"``) ``A⁺u`` is computed by ``cg_iter`` conjugate-gradient
    steps on ``AᴴA v = Aᴴu`` warm-started at ``warm``. Pixels with ``D ≤ 1e-6·max D``
    (unilluminated) map to 0. ``pair=(B, Bᴴ)`` (see :meth:`LinearOperator.magnitude_pair`)
    may replace ``(A, Aᴴ)`` where the caller feeds ``B``-domain data.
    """

    def __init__(self, op, in_shape, *, dtype=torch.complex64, device=None, mode: str = "auto",
                 cg_iter: int = 10, check_tol: float = 1e-3, pair=None):
        if mode not in PINV_MODES:
            raise OperatorError(f"unknown pinv mode {mode!r}; choose one of {PINV_MODES}")
        fwd, adj = pair if pair is not None else (op.A, op.A_adjoint)
        self.fwd, self.adj, self.cg_iter = fwd, adj, cg_iter
        in_shape = (int(in_shape[0]), int(in_shape[1]))
        diag_ok = False
        d = None
        if mode in ("auto", "diagonal"):
            ones = torch.ones(in_shape, dtype=dtype, device=device)
            d = adj(fwd(ones)).real
            with torch.no_grad():
                e = _randn_complex(in_shape, _PROBE_SEED + 2, dtype, device)
                lhs = adj(fwd(e))
                err = float(_norm2(lhs - d.detach().to(e.dtype) * e).sqrt() / _norm2(lhs).sqrt())
            diag_ok = err <= check_tol
            if mode == "diagonal" and not diag_ok:
                raise OperatorError(
                    f"AᴴA is not diagonal for this operator (relative deviation {err:.2e} > "
                    f"{check_tol:.1e}): propagation is not unitary up to scale on the padded "
                    f"support; use pinv='cg' (or 'auto')")
        self.diagonal = diag_ok
        if diag_ok:
            dmax = d.detach().max()
            ok = d > 1e-6 * dmax
            self.dinv = torch.where(ok, 1.0 / torch.where(ok, d, torch.ones_like(d)),
                                    torch.zeros_like(d)).to(dtype)
        else:
            self.dinv = None

    def __call__(self, u: Tensor, warm: Optional[Tensor] = None) -> Tensor:
        b = self.adj(u)
        if self.diagonal:
            return self.dinv * b
        if warm is None:
            warm = torch.zeros_like(b)
        return cg(lambda v: self.adj(self.fwd(v)), b, warm, self.cg_iter)


def adjointness_error(A, A_adjoint, x: Tensor, y: Tensor) -> float:
    """Relative dot-product-test error ``|⟨Ax, y⟩ − ⟨x, Aᴴy⟩| / (‖Ax‖‖y‖)`` (0 for an exact adjoint)."""
    ax = A(x)
    aty = A_adjoint(y)
    lhs = torch.vdot(ax.reshape(-1), y.reshape(-1).to(ax.dtype))
    rhs = torch.vdot(x.reshape(-1).to(aty.dtype), aty.reshape(-1))
    return float(((lhs - rhs).abs() / (ax.norm() * y.norm())).detach())


class LinearOperator(nn.Module):
    """Base class of linear measurement operators (see the module docstring).

    Subclasses define ``A(x)`` and ``A_adjoint(z)`` (the exact adjoint; checked by
    :meth:`adjointness_error`) and set ``in_shape`` ``(H, W)``; they may override :meth:`magnitude_pair` and :meth:`normal_is_diagonal`.
    """

    in_shape: Tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def magnitude_pair(self):
        """``(B, Bᴴ)`` with ``A = D B``, ``D`` diagonal and unit-modulus (default ``(A, Aᴴ)``)."""
        return self.A, self.A_adjoint

    def normal_is_diagonal(self) -> Optional[bool]:
        """Whether ``AᴴA`` is diagonal by construction (``None``: unknown, check numerically)."""
        return None

    def norm_sq(self, *, dtype=torch.complex64, device=None, n_probes: int = 4) -> float:
        """``s = tr(AᴴA)/n`` (:func:`estimate_norm_sq`)."""
        return estimate_norm_sq(self, self.in_shape, dtype=dtype, device=device, n_probes=n_probes)

    def pseudo_inverse(self, *, dtype=torch.complex64, device=None, mode: str = "auto",
                       cg_iter: int = 10, check_tol: float = 1e-3, magnitude: bool = False) -> PseudoInverse:
        """A reusable :class:`PseudoInverse` (``magnitude=True``: of the :meth:`magnitude_pair`)."""
        if mode == "auto" and self.normal_is_diagonal() is False:
            mode = "cg"
        pair = self.magnitude_pair() if magnitude else None
        return PseudoInverse(self, self.in_shape, dtype=dtype, device=device, mode=mode, cg_iter=cg_iter,
                             check_tol=check_tol, pair=pair)

    def A_dagger(self, z: Tensor, **kw) -> Tensor:
        """Least-squares ``(AᴴA)⁻¹Aᴴ z`` (one-off; keep :meth:`pseudo_inverse` for repeated use)."""
        return self.pseudo_inverse(dtype=z.dtype, device=z.device, **kw)(z)

    def adjointness_error(self, *, dtype=torch.complex128, seed: int = 0) -> float:
        """Dot-product test on random complex ``x`` and ``z`` (:func:`adjointness_error`)."""
        with torch.no_grad():
            x = _randn_complex(self.in_shape, seed, dtype, None)
            ax = self.A(x)
            z = _randn_complex(ax.shape, seed + 1, dtype, None)
        return adjointness_error(self.A, self.A_adjoint, x, z)
