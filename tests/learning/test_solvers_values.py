"""Value tests of learning.solvers on tiny problems: every update formula against an independent
reference written out here from the documented equations (not from the solver code), the
spectral start against the eigenvector of the explicitly built matrix, the Wirtinger gradient
against autograd, the stopping rules and iteration counts, and the error messages.

Set-up: a local masked unitary-FFT operator ``A_l x = c·FFT_ortho(M_l ⊙ x)`` with
non-uniform mask moduli, so ``AᴴA = c² Σ_l diag(|M_l|²)`` is diagonal but not a multiple of I
(the pseudo-inverse's diagonal then matters), or an explicit dense matrix. Everything in
float64/complex128, 2-3 samples of 4×4 objects, a few iterations: the references agree with
the solvers to round-off (≈ 1e-15 relative); tolerances are 1e-10 unless stated.
"""
import inspect
import math

import pytest
import torch

from learning.denoisers import Denoiser
from learning.solvers import (AF_WEIGHTINGS, SOLVER_NAMES, SOLVERS, SPECTRAL_METHODS, STOP_RULES,
                              SolverError, SolverResult, amplitude_flow, error_reduction,
                              gerchberg_saxton, hio, pnp, solve, spectral_init, tv,
                              wirtinger_flow)
from learning.solvers import _core, spectral

TOL = dict(rtol=1e-10, atol=1e-12)
C128 = torch.complex128


class MaskFFT:
    """``A_l x = c·FFT_ortho(M_l ⊙ x)``: ``AᴴA = c² Σ_l diag(|M_l|²)`` (diagonal)."""

    def __init__(self, masks, scale=1.0):
        self.masks, self.scale = masks, scale
        self.n_masks = masks.shape[0]
        self.in_shape = self.out_shape = tuple(masks.shape[-2:])

    def A(self, x):
        return self.scale * torch.fft.fft2(x.unsqueeze(-3) * self.masks.to(x.dtype), norm="ortho")

    def A_adjoint(self, z):
        u = torch.fft.ifft2(z, norm="ortho")
        return self.scale * (u * self.masks.to(u.dtype).conj()).sum(dim=-3)

    def diag(self):  # the diagonal of AᴴA
        return self.scale ** 2 * (self.masks.abs() ** 2).sum(0)

    def s(self):     # tr(AᴴA)/n
        return float(self.diag().mean())


class Dense:
    """``A x = M vec(x)`` for an explicit ``(L·Mh·Mw) × (H·W)`` matrix; no shape attributes."""

    def __init__(self, mat, meas, shape):
        self.mat, self.meas, self.shape = mat, tuple(meas), tuple(shape)

    def A(self, x):
        v = x.reshape(x.shape[:-2] + (-1,)).to(self.mat.dtype)
        return (v @ self.mat.T).reshape(x.shape[:-2] + self.meas)

    def A_adjoint(self, z):
        v = z.reshape(z.shape[:-3] + (-1,)).to(self.mat.dtype)
        return (v @ self.mat.conj()).reshape(z.shape[:-3] + self.shape)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _masks(L=3, n=4, seed=0):
    """Complex masks with moduli in [0.5, 1.5]: AᴴA is diagonal, not a multiple of I."""
    g = _gen(seed)
    mod = 0.5 + torch.rand(L, n, n, dtype=torch.float64, generator=g)
    return torch.polar(mod, 2 * math.pi * torch.rand(L, n, n, dtype=torch.float64, generator=g))


def _x(b=2, n=4, seed=1):
    return torch.randn(b, n, n, dtype=C128, generator=_gen(seed))


@pytest.fixture(scope="module")
def prob():
    op = MaskFFT(_masks(), scale=0.7)
    x = _x()
    y = op.A(x).abs() ** 2
    x0 = x + 0.4 * _x(seed=2)  # a start near, but not at, the truth
    return op, x, y, x0


# ------------------------------------------------------------------------------------------
# reference formulas (from the docstrings)
# ------------------------------------------------------------------------------------------
def ref_project(x, support=None, nonnegative=False, real=False):
    if nonnegative:
        x = torch.complex(x.real.clamp(min=0), torch.zeros_like(x.real))
    elif real:
        x = torch.complex(x.real, torch.zeros_like(x.real))
    if support is not None:
        x = x * support
    return x


def ref_pm(op, y, x):
    """``A⁺(√y ⊙ sgn(Ax))`` with ``A⁺ = (AᴴA)⁻¹Aᴴ`` (AᴴA diagonal)."""
    z = op.A(x)
    return op.A_adjoint(y.sqrt() * z / z.abs()) / op.diag()


def ref_residual(op, y, x):
    return ((op.A(x).abs() - y.sqrt()) ** 2).sum((-3, -2, -1)).sqrt() / y.sum((-3, -2, -1)).sqrt()


def ref_hio_update(x, xp, beta, inside, nonnegative, real):
    out = torch.empty_like(x)
    for idx in torch.cartesian_prod(*[torch.arange(d) for d in x.shape]):
        i = tuple(idx.tolist())
        ins = bool(inside[i[-2:]])
        ok_re = ins and (not nonnegative or xp[i].real >= 0)
        re = xp[i].real if ok_re else x[i].real - beta * xp[i].real
        ok_im = ins and not (real or nonnegative)
        im = xp[i].imag if ok_im else x[i].imag - beta * xp[i].imag
        out[i] = complex(re, im)
    return out


def ref_wf(op, y, x0, n_iter, *, s, mu_max=0.3, tau0=330.0, safeguard=True, proj=lambda x: x,
           iterates=False):
    """Wirtinger flow, Algorithm 1 with the documented safeguard, one sample at a time (all
    iterates x_0..x_n with ``iterates=True``, shape (n + 1, batch, H, W))."""
    m = y[0].numel()
    out = []
    for b in range(x0.shape[0]):
        x, yb = x0[b], y[b]
        seq = [x]
        nx0 = float((x0[b].abs() ** 2).sum())
        eta = 1.0

        def loss(v, yb=yb):
            return float(((op.A(v).abs() ** 2 - yb) ** 2).sum())

        for t in range(n_iter):
            mu = min(1 - math.exp(-(t + 1) / tau0), mu_max)
            z = op.A(x)
            grad = (m / s ** 2) * op.A_adjoint((z.abs() ** 2 - yb) * z)
            xn = proj(x - mu * eta / nx0 * grad)
            if not safeguard:
                x = xn
            elif loss(xn) <= loss(x):
                x, eta = xn, min(1.25 * eta, 1.0)
            else:
                eta *= 0.5
            seq.append(x)
        out.append(torch.stack(seq) if iterates else x)
    return torch.stack(out, dim=1 if iterates else 0)


def ref_af(op, y, x0, n_iter, *, s, mu=0.6, gamma=0.7, truncated=False, proj=lambda x: x):
    x = x0
    for _ in range(n_iter):
        z = op.A(x)
        r = z - y.sqrt() * z / z.abs()
        if truncated:
            r = r * (z.abs() >= y.sqrt() / (1 + gamma))
        x = proj(x - mu / s * op.A_adjoint(r))
    return x


# ------------------------------------------------------------------------------------------
# projections: ER / GS / HIO
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"real": True}, {"nonnegative": True}, {"support": "half"},
                                {"support": "half", "nonnegative": True}])
def test_error_reduction_steps_match_the_formula(prob, kw):
    """``x_{k+1} = P_C(A⁺(√y ⊙ sgn(A x_k)))`` with the diagonal pseudo-inverse, three steps;
    history entry t is the residual of x_t, the last that of the returned x."""
    op, x, y, x0 = prob
    kw = dict(kw)
    if kw.get("support") == "half":
        kw["support"] = torch.ones(4, 4, dtype=torch.bool)
        kw["support"][:, 2:] = False
    sup = kw.get("support")
    res = error_reduction(op, y, x0=x0, n_iter=3, tol=None, residual_tol=None, norm_sq=op.s(), **kw)
    xs = [x0]
    for _ in range(3):
        xs.append(ref_project(ref_pm(op, y, xs[-1]), sup, kw.get("nonnegative", False),
                              kw.get("real", False)))
    assert torch.allclose(res.x, xs[-1], **TOL)
    assert res.n_iter == 3 and res.converged is False and res.solver == "error_reduction"
    want = torch.stack([ref_residual(op, y, v) for v in xs])
    assert torch.allclose(res.history["residual"], want, **TOL)
    assert torch.allclose(res.residual, want[-1], **TOL)
    if sup is not None:
        assert bool((res.x[..., ~sup] == 0).all())


def test_gerchberg_saxton_is_error_reduction(prob):
    op, x, y, x0 = prob
    a = gerchberg_saxton(op, y, x0=x0, n_iter=2, tol=None, history=False)
    b = error_reduction(op, y, x0=x0, n_iter=2, tol=None, history=False)
    assert a.solver == "gerchberg_saxton" and torch.equal(a.x, b.x) and a.history == {}


@pytest.mark.parametrize("kw", [{}, {"real": True}, {"nonnegative": True},
                                {"support": "half", "nonnegative": True}, {"support": "half"}])
def test_hio_steps_match_the_formula(prob, kw):
    """HIO (Fienup 1982) per real/imaginary part, β = 0.4; the returned x is ``P_C(x'_n)`` and
    history entry t the residual of ``P_C(x'_t)``."""
    op, x, y, x0 = prob
    kw = dict(kw)
    inside = torch.ones(4, 4, dtype=torch.bool)
    if kw.get("support") == "half":
        inside[1:3, 1:] = False
        kw["support"] = inside
    nonneg, real = kw.get("nonnegative", False), kw.get("real", False)
    sup = kw.get("support")
    res = hio(op, y, x0=x0, n_iter=3, beta=0.4, tol=None, residual_tol=None, **kw)
    xk, est = x0, []
    for _ in range(3):
        xp = ref_pm(op, y, xk)
        est.append(ref_project(xp, sup, nonneg, real))
        xk = ref_hio_update(xk, xp, 0.4, inside, nonneg, real)
    final = ref_project(ref_pm(op, y, xk), sup, nonneg, real)
    assert torch.allclose(res.x, final, **TOL)
    assert res.solver == "hio" and res.n_iter == 3
    want = torch.stack([ref_residual(op, y, v) for v in est + [final]])
    assert torch.allclose(res.history["residual"], want, **TOL)


def test_hio_history_relative_error_and_default_beta(prob):
    """Default β = 0.9; ``relative_error`` history scores ``P_C(x'_t)`` against x_true."""
    op, x, y, x0 = prob
    res = hio(op, y, x0=x0, n_iter=2, tol=None, x_true=x)
    xk, est = x0, []
    for _ in range(2):
        xp = ref_pm(op, y, xk)
        est.append(xp)
        xk = ref_hio_update(xk, xp, 0.9, torch.ones(4, 4, dtype=torch.bool), False, False)
    final = ref_pm(op, y, xk)
    assert torch.allclose(res.x, final, **TOL)
    from learning.metrics import relative_error
    want = torch.stack([relative_error(v, x) for v in est + [final]])
    assert torch.allclose(res.history["relative_error"], want, **TOL)


def test_random_starts_are_back_projected_random_phases(prob):
    """``init="random"`` for ER/HIO: ``P_C(A⁺(√y ⊙ e^{2πiθ}))``, θ ~ U[0, 1) from the generator
    (drawn as one (batch, L, Mh, Mw) float64 block); with n_iter = 0 ER returns the start, HIO
    its estimate ``P_C(x'_0)``."""
    op, x, y, _ = prob
    th = torch.rand((2, 3, 4, 4), dtype=torch.float64, generator=_gen(7))
    u = y.sqrt() * torch.polar(torch.ones_like(th), 2 * math.pi * th)
    want = op.A_adjoint(u) / op.diag()
    start = ref_project(want, real=True)
    res = error_reduction(op, y, init="random", generator=7, n_iter=0, real=True)
    assert torch.allclose(res.x, start, **TOL)
    assert res.n_iter == 0 and res.history["residual"].shape == (1, 2)
    res = hio(op, y, init="random", generator=7, n_iter=0, real=True)
    assert torch.allclose(res.x, ref_project(ref_pm(op, y, start), real=True), **TOL)
    # hio defaults to the random start
    assert torch.allclose(hio(op, y, generator=7, n_iter=0).x, ref_pm(op, y, want), **TOL)


def test_cg_pseudo_inverse_is_warm_started_at_the_iterate(prob):
    """``pinv="cg"``: one CG step on ``AᴴA v = Aᴴu`` from ``v0 = x_k`` (hand-written: r = b −
    AᴴA v0, v = v0 + (rᴴr / rᴴAᴴA r) r); also chosen by ``"auto"`` when the operator reports
    ``normal_is_diagonal() is False``."""
    op, x, y, x0 = prob
    z = op.A(x0)
    b = op.A_adjoint(y.sqrt() * z / z.abs())
    d = op.diag()
    r = b - d * x0
    alpha = (r.abs() ** 2).sum((-2, -1), keepdim=True) / (d * r.abs() ** 2).sum((-2, -1), keepdim=True)
    want = x0 + alpha * r
    res = error_reduction(op, y, x0=x0, n_iter=1, pinv="cg", cg_iter=1, tol=None)
    assert torch.allclose(res.x, want, **TOL)

    class Flagged(MaskFFT):
        def normal_is_diagonal(self):
            return False

    res = error_reduction(Flagged(op.masks, op.scale), y, x0=x0, n_iter=1, cg_iter=1, tol=None)
    assert torch.allclose(res.x, want, **TOL)
    # diagonal explicitly: the exact pseudo-inverse, not the one CG step
    res = error_reduction(op, y, x0=x0, n_iter=1, pinv="diagonal", tol=None)
    assert torch.allclose(res.x, ref_pm(op, y, x0), **TOL)


def test_pinv_check_tol_is_passed_on():
    """A dense operator's AᴴA is not diagonal: refused with ``pinv="diagonal"`` unless the
    check tolerance is loosened past its deviation."""
    mat = torch.randn(24, 4, dtype=C128, generator=_gen(3))
    op = Dense(mat, (2, 3, 4), (2, 2))
    y = op.A(torch.randn(1, 2, 2, dtype=C128, generator=_gen(4))).abs() ** 2
    with pytest.raises(SolverError, match="not diagonal"):
        error_reduction(op, y, pinv="diagonal", n_iter=1)
    error_reduction(op, y, pinv="diagonal", pinv_check_tol=10.0, n_iter=1)
    with pytest.raises(SolverError, match="unknown pinv mode 'lsqr'"):
        error_reduction(op, y, pinv="lsqr")
    with pytest.raises(SolverError, match="unknown pinv mode 'lsqr'"):
        hio(op, y, pinv="lsqr")


# ------------------------------------------------------------------------------------------
# gradient flows
# ------------------------------------------------------------------------------------------
def test_wirtinger_gradient_is_half_the_autograd_gradient_of_the_normalised_loss(prob):
    """``∇f = (m/s²) Aᴴ((|Ax|² − y) ⊙ Ax)`` for ``f = (1/2m) Σ (κ²|Ax|² − κ²y)²``, κ² = m/s; torch's
    gradient of a real loss w.r.t. complex x is ``2 ∂f/∂x̄``. One unsafeguarded step with
    τ0 → 0 (μ = μ_max) is ``x0 − μ/‖x0‖² ∇f``."""
    op, x, y, x0 = prob
    s, m = op.s(), y[0].numel()
    xv = x0.clone().requires_grad_(True)
    k2 = m / s
    f = ((k2 * op.A(xv).abs() ** 2 - k2 * y) ** 2).sum() / (2 * m)
    (g,) = torch.autograd.grad(f, xv)
    mu = 0.05
    want = x0 - mu / (x0.abs() ** 2).sum((-2, -1), keepdim=True) * (g / 2)
    res = wirtinger_flow(op, y, x0=x0, n_iter=1, mu_max=mu, tau0=1e-9, safeguard=False, tol=None,
                         norm_sq=s)
    assert torch.allclose(res.x, want, **TOL)
    # the scale estimate is exact for a diagonal AᴴA: the same step without norm_sq
    res2 = wirtinger_flow(op, y, x0=x0, n_iter=1, mu_max=mu, tau0=1e-9, safeguard=False, tol=None)
    assert torch.allclose(res2.x, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("safeguard", [False, True])
def test_wirtinger_flow_matches_algorithm_1(prob, safeguard):
    """Six steps with the μ_t = min(1 − e^{−(t+1)/τ0}, μ_max) schedule (τ0 = 3 so that it
    moves), then steps so long (μ_max = 2) that the safeguard rejects some and halves η."""
    op, x, y, x0 = prob
    s = op.s()
    for mu_max, tau0 in ((0.3, 3.0), (2.0, 0.5)):
        res = wirtinger_flow(op, y, x0=x0, n_iter=6, mu_max=mu_max, tau0=tau0, safeguard=safeguard,
                             tol=None, residual_tol=None, norm_sq=s)
        want = ref_wf(op, y, x0, 6, s=s, mu_max=mu_max, tau0=tau0, safeguard=safeguard)
        assert torch.allclose(res.x, want, **TOL), (mu_max, tau0)


def test_wirtinger_safeguard_rejects_per_sample(prob):
    """One sample starts at the truth (zero gradient: every step accepted and x unchanged), the
    other far off with a step that overshoots: only that one is rejected, η halves, and the
    loss never increases; the rejected iterate repeats, which is not stagnation."""
    op, x, y, _ = prob
    s = op.s()
    x0 = torch.stack([x[0], 3.0 * _x(1, seed=5)[0]])
    for n in (1, 2, 3, 5):
        res = wirtinger_flow(op, y, x0=x0, n_iter=n, mu_max=3.0, tau0=1e-9, tol=None,
                             residual_tol=None, norm_sq=s)
        want = ref_wf(op, y, x0, n, s=s, mu_max=3.0, tau0=1e-9)
        assert torch.allclose(res.x, want, **TOL), n
    assert torch.allclose(res.x[0], x[0], **TOL)
    # a rejected step repeats the residual; with the stagnation test on it must not stop there
    r = wirtinger_flow(op, y, x0=x0[1:], n_iter=4, mu_max=3.0, tau0=1e-9, tol=1e-12,
                       residual_tol=None, norm_sq=s)
    h = r.history["residual"][:, 0]
    assert float(h[1]) == float(h[0])  # step 0 rejected
    assert r.n_iter == 4 and r.converged is False


@pytest.mark.parametrize("weighting", AF_WEIGHTINGS)
def test_amplitude_flow_matches_the_formula(prob, weighting):
    """``x ← x − (μ/s) Aᴴ(w ⊙ (Ax − √y ⊙ sgn(Ax)))``, w = 1 or TAF's truncation
    ``1{|Ax| ≥ √y/(1+γ)}`` (γ = 0.2 so that it drops terms from this start)."""
    op, x, y, x0 = prob
    s = op.s()
    tr = weighting == "truncated"
    start = x + 1.5 * _x(seed=2)
    z = op.A(start)
    assert 0 < int((z.abs() < y.sqrt() / 1.2).sum()) < z.numel()  # the truncation bites
    res = amplitude_flow(op, y, x0=start, n_iter=3, mu=0.8, gamma=0.2, weighting=weighting, tol=None,
                         norm_sq=s)
    assert torch.allclose(res.x, ref_af(op, y, start, 3, s=s, mu=0.8, gamma=0.2, truncated=tr), **TOL)
    # defaults: μ = 0.6, γ = 0.7
    res = amplitude_flow(op, y, x0=start, n_iter=2, weighting=weighting, tol=None, norm_sq=s)
    assert torch.allclose(res.x, ref_af(op, y, start, 2, s=s, truncated=tr), **TOL)
    assert res.solver == "amplitude_flow"


@pytest.mark.parametrize("fn", [wirtinger_flow, amplitude_flow])
def test_flows_project_every_iterate(prob, fn):
    """Projected gradient: ``x_{t+1} = P_C(x_t − step)``, and the given start is projected."""
    op, x, y, x0 = prob
    s = op.s()
    sup = torch.ones(4, 4, dtype=torch.bool)
    sup[0] = False
    for kw in ({"nonnegative": True}, {"real": True}, {"support": sup}):
        proj = lambda v, kw=kw: ref_project(v, kw.get("support"), kw.get("nonnegative", False),  # noqa: E731
                                            kw.get("real", False))
        res = fn(op, y, x0=x0, n_iter=2, tol=None, norm_sq=s, **kw)
        if fn is wirtinger_flow:
            want = ref_wf(op, y, proj(x0), 2, s=s, proj=proj)
        else:
            want = ref_af(op, y, proj(x0), 2, s=s, proj=proj)
        assert torch.allclose(res.x, want, **TOL), kw


def test_wirtinger_zero_start_is_refused(prob):
    op, x, y, _ = prob
    x0 = torch.stack([x[0], torch.zeros_like(x[0])])
    with pytest.raises(SolverError, match=r"x0 is zero.*‖x0‖²"):
        wirtinger_flow(op, y, x0=x0)
    with pytest.raises(SolverError, match="tau0 must be positive, got 0"):
        wirtinger_flow(op, y, tau0=0)
    with pytest.raises(SolverError, match=r"unknown weighting 'huber'.*'none', 'truncated'"):
        amplitude_flow(op, y, weighting="huber")


# ------------------------------------------------------------------------------------------
# spectral initialisation
# ------------------------------------------------------------------------------------------
def _explicit_Y(op, w, s, n_shape):
    """``Y = (1/s) Aᴴ diag(w) A`` as an n×n matrix (columns = Y applied to the unit vectors)."""
    n = n_shape[0] * n_shape[1]
    eye = torch.eye(n, dtype=C128).reshape(n, *n_shape)
    cols = op.A_adjoint(w * op.A(eye)) / s
    return cols.reshape(n, n).T


@pytest.fixture(scope="module")
def dense():
    """2×2 objects, L·Mh·Mw = 12 measurements through a random dense matrix (δ = 3)."""
    mat = torch.randn(12, 4, dtype=C128, generator=_gen(11))
    op = Dense(mat, (3, 2, 2), (2, 2))
    x = torch.randn(1, 2, 2, dtype=C128, generator=_gen(12))
    return op, x, op.A(x).abs() ** 2, float((mat.abs() ** 2).sum()) / 4


@pytest.mark.parametrize("method", SPECTRAL_METHODS)
def test_spectral_init_is_the_top_eigenvector_scaled(dense, method):
    """Power iterations converge to the eigenvector of the algebraically largest eigenvalue of
    the explicitly built Y (weights from the docstring; truncation α_y = 1.2 drops the
    brightest samples), scaled to ‖x0‖² = Σy/s."""
    op, x, y, s = dense
    t = y / y.mean()
    alpha = 1.2
    if method == "plain":
        w = t
    elif method == "truncated":
        w = t * (t <= alpha ** 2)
        assert 0 < int((t > alpha ** 2).sum()) < t.numel()
    else:
        w = (t - 1) / torch.clamp(t + math.sqrt(12 / 4) - 1, min=0.1)
    Y = _explicit_Y(op, w[0], s, (2, 2))
    evals, evecs = torch.linalg.eigh(Y)
    if method == "optimal":  # the negative end dominates in magnitude: the shift is needed
        assert abs(float(evals[0])) > float(evals[-1])
    u = evecs[:, -1]
    v = spectral_init(op, y, method=method, n_iter=300, generator=0, alpha_y=alpha, norm_sq=s)
    assert v.shape == (1, 2, 2)
    vv = v.reshape(-1)
    assert float((vv.conj() @ u).abs() / vv.norm()) == pytest.approx(1.0, abs=1e-9)
    assert float(vv.norm() ** 2) == pytest.approx(float(y.sum()) / s, rel=1e-12)


def test_spectral_weights_by_hand():
    """``t = y/mean(y)``; plain ``w = t``; truncated ``t·1{t ≤ α²}`` (t = α² kept); optimal
    ``(t − 1)/max(t + √δ − 1, 0.1)`` with δ = m/n."""
    y = torch.tensor([[[[0.0625, 0.6875], [1.0, 2.25]]]], dtype=torch.float64)  # mean exactly 1
    P = _core._Problem(op=None, y=y, batch=(1,), in_shape=(2, 2), meas_shape=(1, 2, 2),
                       cdtype=C128, m=4, n=4, s=1.0, sqrt_y=y.sqrt(), y_sum=y.sum((-3, -2, -1), keepdim=True))
    t = y / 1.0
    assert torch.equal(spectral._spectral_weights(P, "plain", 3.0), t)
    trunc = spectral._spectral_weights(P, "truncated", 1.0)  # α² = 1 = t of one sample: kept
    assert torch.equal(trunc, torch.tensor([[[[0.0625, 0.6875], [1.0, 0.0]]]], dtype=torch.float64))
    opt = spectral._spectral_weights(P, "optimal", 3.0)  # δ = 1: den = max(t, 0.1)
    want = torch.tensor([[[[(0.0625 - 1) / 0.1, (0.6875 - 1) / 0.6875], [0.0, 1.25 / 2.25]]]], dtype=torch.float64)
    assert torch.allclose(opt, want, **TOL)
    P.m = 16  # δ = 4: den = t + 1
    assert torch.allclose(spectral._spectral_weights(P, "optimal", 3.0), (t * 4 - 1) / (t * 4 + 1), **TOL)
    with pytest.raises(SolverError, match=r"unknown spectral method 'x'.*'plain', 'truncated', 'optimal'"):
        spectral._spectral_weights(P, "x", 3.0)


def test_negative_shift_is_one_and_a_half_times_the_dominant_negative_eigenvalue():
    """Rayleigh quotient after 20 power iterations on a diagonal Y: the dominant eigenvalue −2
    (ratio 1/2 to the next: converged to ≈ 1e-12) gives σ = 3; a positive dominant one σ = 0."""
    P = _core._Problem(op=None, y=torch.ones(2, 1, 2, 2, dtype=torch.float64), batch=(2,),
                       in_shape=(2, 2), meas_shape=(1, 2, 2), cdtype=C128, m=4, n=4, s=1.0,
                       sqrt_y=None, y_sum=None)
    d = torch.tensor([[[-2.0, 1.0], [0.5, 0.1]], [[2.0, -1.0], [0.5, 0.1]]], dtype=torch.float64)
    shift = spectral._negative_shift(P, lambda v: d * v)
    assert shift.shape == (2, 1, 1)
    assert float(shift[0]) == pytest.approx(3.0, rel=1e-9) and float(shift[1]) == 0.0
    # an all-zero Y: the normalisation is guarded (0, not NaN)
    assert float(spectral._negative_shift(P, lambda v: 0 * v).abs().max()) == 0.0


def test_zero_weights_give_a_zero_start_not_nan(dense):
    """Truncation that drops every sample leaves Y = 0; the guarded normalisation returns 0."""
    op, x, y, s = dense
    v = spectral_init(op, y, method="truncated", alpha_y=0.01, n_iter=3, generator=0, norm_sq=s)
    assert torch.equal(v, torch.zeros_like(v))


def test_random_init_of_the_flows_is_scaled_randn(prob):
    """``init="random"`` (WF/AF): complex randn from the generator times √(Σy/(s n))."""
    op, x, y, _ = prob
    s = op.s()
    want = torch.randn(2, 4, 4, dtype=C128, generator=_gen(3)) * (y.sum((-3, -2, -1)) / s / 16).sqrt()[:, None, None]
    res = amplitude_flow(op, y, init="random", generator=3, n_iter=0, norm_sq=s)
    assert torch.allclose(res.x, want, **TOL)
    with pytest.raises(SolverError, match=r"unknown init 'zeros'; choose 'spectral' or 'random'"):
        amplitude_flow(op, y, init="zeros")


def test_flows_start_from_the_rotated_spectral_estimate(prob):
    """Default start of WF/AF: the "optimal" spectral estimate with 150 power iterations; for
    non-negative objects rotated by ``e^{−i∠Σx0}`` and projected (n_iter = 0 returns it)."""
    op, x, y, _ = prob
    s = op.s()
    v = spectral_init(op, y, method="optimal", n_iter=150, generator=4, norm_sq=s)
    res = wirtinger_flow(op, y, generator=4, n_iter=0, norm_sq=s)
    assert torch.allclose(res.x, v, **TOL)
    rot = v * torch.sgn(v.sum((-2, -1), keepdim=True)).conj()
    res = amplitude_flow(op, y, generator=4, n_iter=0, norm_sq=s, nonnegative=True)
    assert torch.allclose(res.x, ref_project(rot, nonnegative=True), **TOL)
    # real: rotated by half the angle of Σx², then the real part kept
    ph = torch.angle((v * v).sum((-2, -1), keepdim=True)) / 2
    res = amplitude_flow(op, y, generator=4, n_iter=0, norm_sq=s, real=True, alpha_y=3.0)
    assert torch.allclose(res.x, ref_project(v * torch.exp(-1j * ph), real=True), **TOL)
    # ER/HIO with init="spectral": the "plain" estimate, 50 iterations, not rotated
    v = spectral_init(op, y, method="plain", n_iter=50, generator=4, norm_sq=s)
    assert torch.allclose(error_reduction(op, y, generator=4, n_iter=0, norm_sq=s).x, v, **TOL)
    res = hio(op, y, init="spectral", generator=4, n_iter=0, norm_sq=s)
    assert torch.allclose(res.x, ref_pm(op, y, v), **TOL)


def test_align_real_start_leaves_complex_objects_alone():
    x = _x(seed=9)
    assert torch.equal(_core._align_real_start(x, False, False), x)


# ------------------------------------------------------------------------------------------
# stopping rules, history, iteration counts
# ------------------------------------------------------------------------------------------
def test_stopping_rules_and_iteration_counts(prob):
    """Checks start after the first iteration (they compare with the previous residual):
    from the truth ER stops at t = 1 on the round-off floor (n_iter = 2); a loose stagnation
    tolerance stops it there too; with both off all n_iter run and ``converged`` is False."""
    op, x, y, x0 = prob
    res = error_reduction(op, y, x0=x, n_iter=10)
    assert res.n_iter == 2 and res.converged is True
    assert res.history["residual"].shape == (3, 2)
    res = error_reduction(op, y, x0=x0, n_iter=10, tol=1.0, residual_tol=None)
    assert res.n_iter == 2 and res.converged is True
    res = error_reduction(op, y, x0=x0, n_iter=10, tol=None, residual_tol=1.0)
    assert res.n_iter == 2 and res.converged is True
    res = error_reduction(op, y, x0=x0, n_iter=4, tol=None, residual_tol=None)
    assert res.n_iter == 4 and res.converged is False
    # a per-sample rule: all samples must satisfy it (sample 0 starts at the truth)
    both = torch.stack([x[0], x0[1]])
    res = error_reduction(op, y, x0=both, n_iter=5, tol=None)
    assert res.n_iter == 5 and res.converged is False
    # stagnation at relative change ≤ tol·r_{t−1}: ER from x0 changes by > 1e-3 early on
    r = error_reduction(op, y, x0=x0, n_iter=6, tol=None, residual_tol=None).history["residual"]
    rel = ((r[1:] - r[:-1]).abs() / r[:-1]).max(dim=1).values
    tol = float(rel[2]) * 1.0001  # just above the third change
    first = next(i for i in range(1, 6) if float(rel[i - 1]) <= tol) + 1
    res = error_reduction(op, y, x0=x0, n_iter=6, tol=tol, residual_tol=None)
    assert res.n_iter == first
    # residual_tol="auto" is 10·eps of y's dtype
    P = _core._setup(op, y, None)
    assert _core._default_residual_tol(P, "auto") == 10 * torch.finfo(torch.float64).eps
    assert _core._default_residual_tol(P, 0.5) == 0.5
    P32 = _core._setup(op, y.float(), None)
    assert _core._default_residual_tol(P32, "auto") == pytest.approx(10 * 1.1920929e-07)


def test_differentiable_mode_runs_every_iteration(prob):
    op, x, y, x0 = prob
    res = error_reduction(op, y, x0=x, n_iter=4, differentiable=True)
    assert res.n_iter == 4 and res.converged is None
    assert res.history["residual"].shape == (5, 2)


def test_history_residual_and_relative_error_by_hand(prob):
    """History entry t of ER = residual / relative error of x_t; x_true is detached."""
    op, x, y, x0 = prob
    xt = x.clone().requires_grad_(True)
    res = error_reduction(op, y, x0=x0, n_iter=2, tol=None, x_true=xt)
    from learning.metrics import relative_error
    xs = [x0, ref_pm(op, y, x0)]
    xs.append(ref_pm(op, y, xs[-1]))
    want = torch.stack([relative_error(v, x) for v in xs])
    h = res.history["relative_error"]
    assert torch.allclose(h, want, **TOL) and not h.requires_grad
    assert h.dtype == res.history["residual"].dtype == torch.float64
    # no history: only the final residual
    res = error_reduction(op, y, x0=x0, n_iter=2, tol=None, history=False, x_true=x)
    assert res.history == {} and torch.allclose(res.residual, ref_residual(op, y, xs[-1]), **TOL)


def test_progress_bar_shows_the_residual(prob, capsys):
    """``progress=True``: a tqdm bar named after the solver, the residual set at t = 0."""
    op, x, y, x0 = prob
    error_reduction(op, y, x0=x0, n_iter=1, tol=None, progress=True)
    err = capsys.readouterr().err
    assert "error_reduction" in err
    assert "residual=" in err and f"{float(ref_residual(op, y, x0).max()):.3e}" in err
    assert err.endswith("\r") and "100%" not in err  # leave=False: the bar is cleared at the end
    error_reduction(op, y, x0=x0, n_iter=1, tol=None)
    assert capsys.readouterr().err == ""


def test_discrepancy_target_value(prob):
    """``τ σ_b √m / ‖√y‖`` per sample; factor and noise broadcast per sample."""
    op, x, y, _ = prob
    P = _core._setup(op, y, None)
    sd = torch.tensor([0.1, 0.2], dtype=torch.float64)
    got = _core._discrepancy_target(P, "discrepancy", sd, 1.5, False)
    want = 1.5 * sd * math.sqrt(48) / y.sum((-3, -2, -1)).sqrt()
    assert torch.allclose(got, want, **TOL)
    assert _core._discrepancy_target(P, "tol", None, 1.0, False) is None
    got = _core._discrepancy_target(P, "discrepancy", 0.1, 2, False)  # an int factor is fine
    assert torch.allclose(got, 2 * 0.1 * math.sqrt(48) / y.sum((-3, -2, -1)).sqrt(), **TOL)
    for bad in (float("inf"), -1.0, "1"):
        with pytest.raises(SolverError, match=r"discrepancy_factor must be a positive number \(τ ≈ 1\)"):
            _core._discrepancy_target(P, "discrepancy", 0.1, bad, False)
    with pytest.raises(SolverError, match=r"unknown stop rule 'early'; choose one of \('tol', 'discrepancy'\)"):
        _core._discrepancy_target(P, "early", None, 1.0, False)
    with pytest.raises(SolverError, match="differentiable=True does not make"):
        _core._discrepancy_target(P, "discrepancy", 0.1, 1.0, True)
    with pytest.raises(SolverError, match=r"needs the noise level: pass amplitude_noise_std= .*α/510"):
        _core._discrepancy_target(P, "discrepancy", None, 1.0, False)


def test_discrepancy_stop_freezes_a_sample_at_its_first_iterate_below_target(prob):
    """Sample 0 starts at the truth (residual 0 ≤ target at t = 0: kept, never stepped), sample 1
    goes on for all n_iter; the run converges once both are below target."""
    op, x, y, x0 = prob
    both = torch.stack([x[0], x0[1]])
    res = error_reduction(op, y, x0=both, n_iter=3, tol=None, residual_tol=None, stop="discrepancy",
                          amplitude_noise_std=torch.tensor([1e-9, 1e-9]))
    assert torch.equal(res.x[0], x[0]) and res.n_iter == 3 and res.converged is False
    ref = error_reduction(op, y[1:], x0=x0[1:], n_iter=3, tol=None, residual_tol=None)
    assert torch.allclose(res.x[1], ref.x[0], **TOL)
    # a target every iterate meets: stop at t = 0 with the start returned
    res = error_reduction(op, y, x0=x0, n_iter=5, tol=None, residual_tol=None, stop="discrepancy",
                          amplitude_noise_std=1e3)
    assert res.n_iter == 1 and res.converged is True and torch.equal(res.x, x0)


def test_noise_std_validation(prob):
    op, x, y, _ = prob
    P = _core._setup(op, y, None)
    assert _core._noise_std(P, None) is None
    got = _core._noise_std(P, 0.25)
    assert got.shape == (2,) and torch.equal(got, torch.full((2,), 0.25, dtype=torch.float64))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(SolverError, match=r"amplitude_noise_std must be finite and ≥ 0 .*α/510"):
            _core._noise_std(P, bad)
    with pytest.raises(SolverError, match=r"amplitude_noise_std has shape \(3,\); .*batch shape \(2,\)"):
        _core._noise_std(P, [0.1, 0.2, 0.3])


# ------------------------------------------------------------------------------------------
# helpers of the core
# ------------------------------------------------------------------------------------------
def test_elementwise_helpers():
    z = torch.tensor([3 + 4j, -1j, 0j], dtype=C128)
    assert torch.equal(_core._abs2(z), torch.tensor([25.0, 1.0, 0.0], dtype=torch.float64))
    r = torch.tensor([2.0, -1.0, 5.0], dtype=torch.float64)
    assert torch.equal(_core._times_real(z, r), torch.tensor([6 + 8j, 1j, 0j], dtype=C128))
    img = torch.tensor([[[1 + 1j, 2], [0, -3j]]], dtype=C128)
    assert torch.equal(_core._image_norm2(img), torch.tensor([[[2.0 + 4 + 9]]], dtype=torch.float64))
    y = torch.tensor([4.0, 0.0, 2.25], dtype=torch.float64, requires_grad=True)
    sq = _core._safe_sqrt(y)
    assert torch.equal(sq.detach(), torch.tensor([2.0, 0.0, 1.5], dtype=torch.float64))
    (g,) = torch.autograd.grad(sq.sum(), y)
    assert torch.allclose(g, torch.tensor([0.25, 0.0, 1 / 3], dtype=torch.float64), **TOL)


def test_project_object_by_hand():
    x = torch.tensor([[1 + 2j, -3 + 1j], [-0.5j, 4 - 4j]], dtype=C128)
    sup = torch.tensor([[True, True], [False, True]])
    P = _core._project_object
    assert torch.equal(P(x, None, False, False), x)
    assert torch.equal(P(x, None, False, True), torch.tensor([[1, -3], [0, 4]], dtype=C128))
    assert torch.equal(P(x, None, True, False), torch.tensor([[1, 0], [0, 4]], dtype=C128))
    assert torch.equal(P(x, None, True, True), torch.tensor([[1, 0], [0, 4]], dtype=C128))
    assert torch.equal(P(x, sup, False, False), torch.tensor([[1 + 2j, -3 + 1j], [0, 4 - 4j]], dtype=C128))
    assert torch.equal(P(x, sup, False, True), torch.tensor([[1, -3], [0, 4]], dtype=C128))


def test_generator_argument():
    assert _core._generator(None) is None
    g = torch.Generator()
    assert _core._generator(g) is g
    a = _core._generator(5)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=_gen(5)))
    for bad in ("5", True, 1.5):
        with pytest.raises(SolverError, match=f"generator must be a torch.Generator, an int seed or None, got {type(bad).__name__}"):
            _core._generator(bad)


def test_rand_helpers_draw_from_the_generator():
    ph = _core._rand_phase((2, 3), _gen(1), torch.complex64, None)
    th = torch.rand(2, 3, dtype=torch.float32, generator=_gen(1))
    assert ph.dtype == torch.complex64
    assert torch.allclose(ph, torch.polar(torch.ones_like(th), 2 * math.pi * th), atol=1e-6)
    ph = _core._rand_phase((2, 3), _gen(1), C128, None)
    th = torch.rand(2, 3, dtype=torch.float64, generator=_gen(1))
    assert ph.dtype == C128 and torch.allclose(ph, torch.polar(torch.ones_like(th), 2 * math.pi * th), **TOL)
    r = _core._randn_complex((2,), _gen(2), C128, "cpu")
    assert torch.equal(r, torch.randn(2, dtype=C128, generator=_gen(2)))


def test_check_options_messages():
    """Iteration counts must be ints (n_power_iter = 2.5 used to pass the check and fail later
    in ``range``; n_init_iter = 2.5 was reported as ER's ``n_iter``), the rest finite numbers."""
    _core._check_options(n_iter=0, tol=None, mu=0, x=2.5, cg_iter=3)
    for k in ("n_iter", "n_init_iter", "n_power_iter", "cg_iter"):
        for v in (-1, 2.5, "3"):
            with pytest.raises(SolverError, match=f"{k} must be a non-negative int, got {v!r}"):
                _core._check_options(**{k: v})
    for v in (-0.5, float("inf"), float("nan"), "1e-3"):
        with pytest.raises(SolverError, match=r"tol must be a finite non-negative number or None, got "):
            _core._check_options(tol=v)
    op = MaskFFT(_masks())
    y = op.A(_x()).abs() ** 2
    for fn, kw in ((wirtinger_flow, "mu_max"), (wirtinger_flow, "tau0"), (amplitude_flow, "mu"),
                   (amplitude_flow, "gamma"), (hio, "beta"), (error_reduction, "cg_iter"),
                   (spectral_init, "alpha_y"), (spectral_init, "n_iter"), (tv, "n_init_iter"),
                   (pnp, "n_power_iter"), (hio, "tol"), (error_reduction, "n_power_iter")):
        with pytest.raises(SolverError, match=f"{kw} must be a"):
            fn(op, y, **{kw: -1})


def test_setup_values_and_norm_sq_validation(prob):
    op, x, y, _ = prob
    P = _core._setup(op, y, 2.5)
    assert (P.s, P.m, P.n, P.batch, P.in_shape, P.meas_shape) == (2.5, 48, 16, (2,), (4, 4), (3, 4, 4))
    assert P.cdtype == C128 and torch.equal(P.sqrt_y, y.sqrt())
    assert torch.equal(P.y_sum, y.sum((-3, -2, -1), keepdim=True))
    assert _core._setup(op, y, None).s == pytest.approx(op.s(), rel=1e-12)
    assert _core._setup(op, y.float(), None).cdtype == torch.complex64
    yi = torch.ones(1, 3, 4, 4, dtype=torch.int64)  # integer counts are promoted to float32
    assert _core._setup(op, yi, 1.0).y.dtype == torch.float32
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SolverError, match=r"norm_sq must be a positive finite number \(tr\(AᴴA\)/n\), got .*leave it None"):
            _core._setup(op, y, bad)


def test_estimate_norm_sq_reraises_operator_errors():
    op = MaskFFT(torch.zeros(2, 4, 4, dtype=C128))
    with pytest.raises(SolverError, match="not a positive finite number"):
        _core.estimate_norm_sq(op, (4, 4))
    assert _core.estimate_norm_sq(MaskFFT(_masks(), 2.0), (4, 4), dtype=C128) == pytest.approx(
        MaskFFT(_masks(), 2.0).s(), rel=1e-12)


def test_check_y_messages(prob):
    op, x, y, _ = prob
    with pytest.raises(SolverError, match=r"the operator object lacks A\(x\)/A_adjoint\(z\); .*LinearOperator"):
        error_reduction(object(), y)
    with pytest.raises(SolverError, match=r"y must be a torch.Tensor of intensities, got list"):
        error_reduction(op, [1.0])
    with pytest.raises(SolverError, match=r"y has shape \(2, 2, 4, 4\) but this operator produces .*\(\.\.\., 3, 4, 4\)"):
        error_reduction(op, y[:, :2])
    bad = y.clone()
    bad[0, 0, 0, :2] = float("inf")
    with pytest.raises(SolverError, match=r"y contains 2 NaN/inf value\(s\).*nan_to_num"):
        error_reduction(op, bad)
    with pytest.raises(SolverError, match=r"negative intensities \(min -0.5\).*clamp\(min=0\)"):
        error_reduction(op, y - 0.5 - y)
    zero = y.clone()
    zero[1] = 0
    with pytest.raises(SolverError, match="all zero in at least one sample"):
        error_reduction(op, zero)
    # attribute-free operators: shapes probed through A_adjoint and A
    mat = torch.randn(12, 4, dtype=C128, generator=_gen(3))
    d = Dense(mat, (3, 2, 2), (2, 2))
    yd = d.A(torch.randn(1, 2, 2, dtype=C128, generator=_gen(4))).abs() ** 2
    assert _core._check_y(d, yd)[1:] == ((2, 2), (3, 2, 2))
    with pytest.raises(SolverError, match=r"y has shape \(2, 2\); expected \(\.\.\., L, Mh, Mw\).*y\[None\]"):
        error_reduction(d, yd[0, 0])
    with pytest.raises(SolverError, match=r"A_adjoint rejected a measurement of shape \(3, 2, 3\) .*: "):
        error_reduction(d, torch.ones(1, 3, 2, 3, dtype=torch.float64))

    class Wide(Dense):
        def A_adjoint(self, z):
            return torch.zeros(z.shape[:-3] + (2, 2), dtype=z.dtype)

    with pytest.raises(SolverError, match=r"y has shape \(1, 2, 2, 2\) but the operator maps \(2, 2\) to "
                                          r"\(3, 2, 2\): expected y of shape \(\.\.\., 3, 2, 2\)"):
        error_reduction(Wide(mat, (3, 2, 2), (2, 2)), torch.ones(1, 2, 2, 2, dtype=torch.float64))


def test_x0_support_and_x_true_messages(prob):
    op, x, y, _ = prob
    with pytest.raises(SolverError, match=r"x0 must be a torch.Tensor of shape \(\.\.\., H, W\), got list"):
        error_reduction(op, y, x0=[0])
    with pytest.raises(SolverError, match=r"x0 has shape \(3, 4, 4\); expected \(2, 4, 4\) = batch of y"):
        error_reduction(op, y, x0=_x(3))
    nanx = x.clone()
    nanx[0, 0, 0] = float("nan")
    with pytest.raises(SolverError, match="x0 contains NaN/inf"):
        wirtinger_flow(op, y, x0=nanx)
    # a broadcastable x0 is broadcast and cast to the working dtype
    res = error_reduction(op, y, x0=x[0].to(torch.complex64), n_iter=0)
    assert res.x.shape == (2, 4, 4) and res.x.dtype == C128
    with pytest.raises(SolverError, match=r"support must be a bool mask .*got dtype torch.int64; .*mask.bool\(\)"):
        error_reduction(op, y, support=torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(SolverError, match=r"support has shape \(3, 3\); it must broadcast to \(2, 4, 4\)"):
        hio(op, y, support=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(SolverError, match="support is empty"):
        wirtinger_flow(op, y, support=torch.zeros(4, 4, dtype=torch.bool))
    sup = [[True] * 4] * 4  # lists are accepted (as_tensor)
    assert error_reduction(op, y, support=sup, x0=x, n_iter=0).x.shape == (2, 4, 4)
    with pytest.raises(SolverError, match=r"x_true must be a tensor of shape \(\.\.\., 4, 4\); got \(2, 3, 3\)"):
        error_reduction(op, y, x_true=_x(2, 3))
    with pytest.raises(SolverError, match=r"x_true must be .*; got 'x'"):
        amplitude_flow(op, y, x_true="x")


def test_operator_hooks_are_used(prob):
    """``magnitude_pair()`` replaces (A, Aᴴ) for the iterations (A = D·B, |D| = 1: same result),
    and ``frozen()`` is entered once per call."""
    op, x, y, x0 = prob
    D = torch.polar(torch.ones(3, 4, 4, dtype=torch.float64), torch.rand(3, 4, 4, dtype=torch.float64, generator=_gen(8)))

    class Hooked(MaskFFT):
        calls = {"B": 0, "frozen": 0}

        def A(self, x):
            return D * super().A(x)

        def A_adjoint(self, z):
            return super().A_adjoint(D.conj() * z)

        def magnitude_pair(self):
            def B(v):
                self.calls["B"] += 1
                return MaskFFT.A(self, v)
            return B, lambda z: MaskFFT.A_adjoint(self, z)

        def frozen(self):
            import contextlib
            self.calls["frozen"] += 1
            return contextlib.nullcontext()

    h = Hooked(op.masks, op.scale)
    for name in ("er", "wf", "af", "hio"):
        a = solve(h, y, name, x0=x0, n_iter=2, tol=None)
        b = solve(op, y, name, x0=x0, n_iter=2, tol=None)
        assert torch.allclose(a.x, b.x, **TOL), name
    assert h.calls["B"] > 0 and h.calls["frozen"] == 4


def test_solver_result_defaults():
    r = SolverResult(x=torch.zeros(1))
    assert (r.history, r.n_iter, r.converged, r.residual, r.solver) == ({}, 0, None, None, "")


def test_solve_dispatch_and_names(prob):
    op, x, y, x0 = prob
    assert SOLVER_NAMES == ("wf", "er", "gs", "hio", "af", "tv", "pnp")
    assert STOP_RULES == ("tol", "discrepancy") and AF_WEIGHTINGS == ("none", "truncated")
    want = {"wf": "wirtinger_flow", "wirtinger_flow": "wirtinger_flow", "af": "amplitude_flow",
            "amplitude_flow": "amplitude_flow", "er": "error_reduction",
            "error_reduction": "error_reduction", "gs": "gerchberg_saxton",
            "gerchberg_saxton": "gerchberg_saxton", "hio": "hio", "tv": "tv", "pnp": "pnp"}
    assert {k: v.__name__ for k, v in SOLVERS.items()} == want
    for name in ("wf", "af", "er", "gs", "hio"):
        assert solve(op, y, name, x0=x0, n_iter=0).solver == want[name]
    with pytest.raises(SolverError, match=r"unknown solver 'newton'; choose one of \['af', 'amplitude_flow'"):
        solve(op, y, "newton")
    assert solve(op, y, x0=x0, n_iter=0).solver == "wirtinger_flow"  # the default


def test_documented_defaults():
    """The defaults the docstrings and README state (β = 0.9, τ0 = 330, μ_max = 0.3, AF μ = 0.6,
    γ = 0.7, α_y = 3, the spectral starts, the stopping defaults, TV/PnP schedules)."""
    def d(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    common = dict(x0=None, tol=1e-6, residual_tol="auto", generator=None, history=True,
                  x_true=None, differentiable=False, progress=False, norm_sq=None, alpha_y=3.0,
                  support=None, nonnegative=False, real=False, stop="tol",
                  amplitude_noise_std=None, discrepancy_factor=1.0)
    assert d(wirtinger_flow) == dict(common, n_iter=1000, init="spectral", spectral_method="optimal",
                                     n_power_iter=150, mu_max=0.3, tau0=330.0, safeguard=True)
    assert d(amplitude_flow) == dict(common, n_iter=1000, init="spectral", spectral_method="optimal",
                                     n_power_iter=150, mu=0.6, weighting="none", gamma=0.7)
    proj = dict(common, n_iter=500, spectral_method="plain", n_power_iter=50, pinv="auto",
                cg_iter=10, pinv_check_tol=1e-3)
    assert d(error_reduction) == dict(proj, init="spectral")
    assert d(hio) == dict(proj, init="random", beta=0.9)
    reg = dict(proj, n_iter=40, init="er", n_init_iter=50, tol=None, residual_tol=None)
    assert d(tv) == dict(reg, weight=None, weight_factor=1.0, tv_eps=2e-4, tv_max_iter=200)
    assert d(pnp) == dict(reg, denoiser="nlm", denoiser_options=None, sigma_start=5.0, sigma_end=1.0)
    assert d(spectral_init) == dict(method="plain", n_iter=50, generator=None, alpha_y=3.0, norm_sq=None)
    assert d(_core.estimate_norm_sq) == dict(dtype=torch.complex64, device=None, n_probes=4)


# ------------------------------------------------------------------------------------------
# regularised (TV, PnP)
# ------------------------------------------------------------------------------------------
class Shrink(Denoiser):
    """``D(x, σ) = x/(1 + σ)`` per sample (records σ); differentiable."""
    differentiable = True

    def __init__(self):
        super().__init__()
        self.sigmas = []

    def forward(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)
        self.sigmas.append(s.clone())
        return x / (1 + s[:, None, None, None])


def test_pnp_step_schedule_and_channels(prob):
    """``x_{k+1} = P_C(D(A⁺(√y ⊙ sgn(A x_k)), σ_k))``, ``σ_k = σ_x·5·(1/5)^{k/(n−1)}``,
    ``σ_x = σ_b/√(2s)``; complex objects: real and imaginary parts denoised alike."""
    op, x, y, x0 = prob
    s = op.s()
    sb = torch.tensor([0.3, 0.6], dtype=torch.float64)
    den = Shrink()
    res = pnp(op, y, denoiser=den, x0=x0, n_iter=3, amplitude_noise_std=sb, norm_sq=s)
    sx = sb / math.sqrt(2 * s)
    sig = [sx * 5 * (1 / 5) ** (k / 2) for k in range(3)]
    xk = x0
    for k in range(3):
        xk = ref_pm(op, y, xk) / (1 + sig[k][:, None, None])
    assert torch.allclose(res.x, xk, **TOL)
    for got, want in zip(den.sigmas, sig):
        assert torch.allclose(got, want, **TOL)
    assert res.solver == "pnp" and res.n_iter == 3
    assert torch.equal(res.history["amplitude_noise_std"], sb)
    # one iteration: the schedule starts (and stays) at sigma_start
    den = Shrink()
    pnp(op, y, denoiser=den, x0=x0, n_iter=1, amplitude_noise_std=sb, norm_sq=s, sigma_start=2.0)
    assert torch.allclose(den.sigmas[0], 2 * sx, **TOL)


def test_pnp_real_objects_and_estimated_noise(prob):
    """Real objects: one channel, imaginary part zero, the constraints applied after D; without
    ``amplitude_noise_std`` σ̂_b = r0·‖√y‖/√m from the (projected) start's residual."""
    op, x, y, x0 = prob
    s = op.s()

    class OneChannel(Shrink):
        def forward(self, x, sigma):
            assert x.shape[1] == 1
            return super().forward(x, sigma) - 0.01

    den = OneChannel()
    sup = torch.ones(4, 4, dtype=torch.bool)
    sup[3] = False
    res = pnp(op, y, denoiser=den, x0=x0, n_iter=2, nonnegative=True, support=sup, norm_sq=s,
              sigma_start=1.0, sigma_end=1.0)
    start = ref_project(x0, sup, nonnegative=True)
    sb = ref_residual(op, y, start) * (y.sum((-3, -2, -1)) / 48).sqrt()
    assert torch.allclose(res.history["amplitude_noise_std"], sb, **TOL)
    sx = sb / math.sqrt(2 * s)
    xk = start
    for _ in range(2):
        v = ref_pm(op, y, xk).real / (1 + sx[:, None, None]) - 0.01
        xk = ref_project(v.to(C128), sup, nonnegative=True)
    assert torch.allclose(res.x, xk, **TOL)
    assert torch.allclose(den.sigmas[0], sx, **TOL)


def test_regularised_init_is_error_reduction(prob):
    """``init="er"``: ``n_init_iter`` ER iterations (no early stop) from the spectral start with
    the same constraints, then the loop."""
    op, x, y, x0 = prob
    s = op.s()
    start = error_reduction(op, y, n_iter=3, tol=None, residual_tol=None, generator=2, norm_sq=s,
                            real=True).x
    den = Shrink()
    res = pnp(op, y, denoiser=den, n_init_iter=3, n_iter=0, generator=2, norm_sq=s, real=True,
              amplitude_noise_std=0.1)
    assert torch.allclose(res.x, start, **TOL)
    res = pnp(op, y, denoiser=den, init="spectral", n_iter=0, generator=2, norm_sq=s,
              amplitude_noise_std=0.1)
    assert torch.allclose(res.x, spectral_init(op, y, generator=2, norm_sq=s), **TOL)


def test_tv_step_is_chambolle_prox_at_lambda(prob):
    """One TV step: ``P_C(prox_{λTV}(A⁺(√y ⊙ sgn(Ax0))))`` with ``λ = weight_factor·σ_x`` (or
    ``weight``), computed with scikit-image's Chambolle directly."""
    from skimage.restoration import denoise_tv_chambolle
    op, x, y, x0 = prob
    s = op.s()
    sb = 0.5
    v = ref_pm(op, y, ref_project(x0, real=True))  # the start is projected first
    lam = 2.0 * sb / math.sqrt(2 * s)
    want = torch.stack([torch.from_numpy(denoise_tv_chambolle(v[b].real.numpy(), weight=lam, eps=1e-3,
                                                              max_num_iter=7)) for b in range(2)])
    res = tv(op, y, x0=x0, n_iter=1, real=True, weight_factor=2.0, amplitude_noise_std=sb, norm_sq=s,
             tv_eps=1e-3, tv_max_iter=7)
    assert torch.allclose(res.x.real, want, **TOL) and res.solver == "tv"
    assert res.x.imag.abs().max() == 0
    res = tv(op, y, x0=x0, n_iter=1, real=True, weight=lam, amplitude_noise_std=9.0, norm_sq=s,
             tv_eps=1e-3, tv_max_iter=7)
    assert torch.allclose(res.x.real, want, **TOL)
    # tv_eps reaches Chambolle's stopping test (here it stops before the 200-iteration cap)
    want = torch.stack([torch.from_numpy(denoise_tv_chambolle(v[b].real.numpy(), weight=lam, eps=0.05))
                        for b in range(2)])
    res = tv(op, y, x0=x0, n_iter=1, real=True, weight=lam, tv_eps=0.05, amplitude_noise_std=0.1)
    assert torch.allclose(res.x.real, want, **TOL)
    # positivity and differentiability reach the loop
    res = tv(op, y, x0=x0, n_iter=1, nonnegative=True, weight=lam, amplitude_noise_std=0.1)
    want = torch.stack([torch.from_numpy(denoise_tv_chambolle(ref_pm(op, y, ref_project(x0, nonnegative=True))[b]
                                                              .real.numpy(), weight=lam, eps=2e-4))
                        for b in range(2)])
    assert torch.allclose(res.x, ref_project(want.to(C128), nonnegative=True), **TOL)
    with pytest.raises(SolverError, match="differentiable=True needs a differentiable denoiser; TVDenoiser"):
        tv(op, y, differentiable=True)
    with pytest.raises(SolverError, match=r"weight \(λ\) must be a positive number in x's units, got 0"):
        tv(op, y, weight=0)
    with pytest.raises(SolverError, match="max_num_iter must be a positive int"):
        tv(op, y, tv_max_iter=0)


def test_regularised_stops_on_discrepancy(prob):
    """``stop="discrepancy"`` with the given (or estimated) σ_b: a huge σ_b stops at t = 0."""
    op, x, y, x0 = prob
    res = pnp(op, y, denoiser=Shrink(), x0=x0, n_iter=5, amplitude_noise_std=1e3, stop="discrepancy")
    assert res.n_iter == 1 and res.converged is True
    res = pnp(op, y, denoiser=Shrink(), x0=x0, n_iter=3, stop="discrepancy", discrepancy_factor=1e6)
    assert res.n_iter == 1 and res.converged is True
    res = pnp(op, y, denoiser=Shrink(), x0=x0, n_iter=3, stop="discrepancy", discrepancy_factor=1e-6)
    assert res.n_iter == 3 and res.converged is False


def test_regularised_options_and_messages(prob):
    op, x, y, x0 = prob

    class Bad(Denoiser):
        def forward(self, x, sigma):
            return x[:, :1]

    with pytest.raises(SolverError, match=r"the denoiser Bad returned \(2, 1, 4, 4\) for an input of shape "
                                          r"\(2, 2, 4, 4\); D\(x, sigma\) must keep x's shape"):
        pnp(op, y, denoiser=Bad(), x0=x0, n_iter=1, amplitude_noise_std=0.1)

    class NotTensor(Denoiser):
        def forward(self, x, sigma):
            return 0

    with pytest.raises(SolverError, match=r"returned int for an input"):
        pnp(op, y, denoiser=NotTensor(), x0=x0, n_iter=1, amplitude_noise_std=0.1)
    with pytest.raises(SolverError, match=r"differentiable=True needs a differentiable denoiser; NLMDenoiser"):
        pnp(op, y, denoiser="nlm", differentiable=True)
    with pytest.raises(SolverError, match=r"unknown init 'zeros'; choose 'er'"):
        pnp(op, y, denoiser=Shrink(), init="zeros")
    with pytest.raises(SolverError, match=r"bad options for the 'nlm' denoiser"):
        pnp(op, y, denoiser="nlm", denoiser_options={"nonsense": 1})
    with pytest.raises(SolverError, match=r"denoiser must be a name from learning.denoisers.DENOISERS .*got int"):
        pnp(op, y, denoiser=3)
    for k in ("sigma_start", "sigma_end"):
        for bad in (0, -1.0, float("inf"), "5"):
            with pytest.raises(SolverError, match=f"{k} must be a positive factor of σ_x, got"):
                pnp(op, y, **{k: bad})
    # a denoiser given by name, with options (σ = 0: identity, so PnP = ER)
    xr = ref_project(x0, real=True)
    res = pnp(op, y, denoiser="tv", denoiser_options={"weight_factor": 2.0}, x0=xr, n_iter=2,
              amplitude_noise_std=0.0, real=True)
    assert torch.allclose(res.x, error_reduction(op, y, x0=xr, n_iter=2, tol=None, real=True).x, **TOL)
    # differentiable: gradients reach y through the loop and the ER start
    yl = y.clone().requires_grad_(True)
    res = pnp(op, yl, denoiser=Shrink(), n_iter=2, n_init_iter=2, differentiable=True, n_power_iter=3,
              amplitude_noise_std=0.1)
    assert res.converged is None and res.x.requires_grad
    # options are checked
    with pytest.raises(SolverError, match="n_init_iter must be a non-negative int"):
        tv(op, y, n_init_iter=-1)


# ------------------------------------------------------------------------------------------
# edge cases and options found by mutation testing
# ------------------------------------------------------------------------------------------
def test_zero_intensities_and_partial_shape_attributes(prob):
    """Exact zeros in y are valid intensities (only negatives are refused); an operator with
    only some shape attributes has the rest probed."""
    op, x, y, x0 = prob
    y0 = y.clone()
    y0[0, 0, 0, 0] = 0.0
    assert error_reduction(op, y0, x0=x0, n_iter=1, tol=None).n_iter == 1

    class OnlyL(MaskFFT):
        def __init__(self, masks):
            super().__init__(masks)
            del self.out_shape

    res = error_reduction(OnlyL(op.masks), y, x0=x0, n_iter=1, tol=None)
    assert res.x.shape == (2, 4, 4)


def test_pinv_diagonal_is_kept_when_the_operator_reports_non_diagonal(prob):
    """Only ``"auto"`` falls back to CG on ``normal_is_diagonal() is False``: an explicit
    ``"diagonal"`` is checked and used as such (here AᴴA is in fact diagonal)."""
    op, x, y, x0 = prob

    class Flagged(MaskFFT):
        def normal_is_diagonal(self):
            return False

    res = error_reduction(Flagged(op.masks, op.scale), y, x0=x0, n_iter=1, pinv="diagonal", cg_iter=1,
                          tol=None)
    assert torch.allclose(res.x, ref_pm(op, y, x0), **TOL)


def test_spectral_init_without_iterations_is_the_scaled_random_start(dense):
    op, x, y, s = dense
    v = spectral_init(op, y, n_iter=0, generator=1, norm_sq=s)
    g = torch.randn(1, 2, 2, dtype=C128, generator=_gen(1))
    want = g / g.norm() * math.sqrt(float(y.sum()) / s)
    assert torch.allclose(v, want, **TOL)


def test_negative_shift_is_the_rayleigh_quotient_after_20_iterations():
    """Eigenvalues −2 and 1.9 (ratio 0.95: not converged after 20 iterations), so the value
    pins the documented procedure: 20 normalised power iterations from the fixed-seed
    (``_NORM_SEED + 1``) complex normal start, ``σ = max(0, −1.5 λ̂)``."""
    P = _core._Problem(op=None, y=torch.ones(1, 1, 2, 2, dtype=torch.float64), batch=(1,),
                       in_shape=(2, 2), meas_shape=(1, 2, 2), cdtype=C128, m=4, n=4, s=1.0,
                       sqrt_y=None, y_sum=None)
    d = torch.tensor([[[-2.0, 1.9], [0.5, 0.1]]], dtype=torch.float64)
    v = torch.randn(1, 2, 2, dtype=C128, generator=_gen(_core._NORM_SEED + 1))
    for _ in range(20):
        v = v / v.norm()
        u = d * v
        lam = float((u * v.conj()).sum().real)
        v = u
    assert -2.0 < lam < -1.0  # not converged: the count matters
    got = spectral._negative_shift(P, lambda w: d * w)
    assert float(got) == pytest.approx(-1.5 * lam, rel=1e-12)


def test_progress_in_differentiable_mode_shows_no_residual(prob, capsys):
    """Differentiable mode makes no host synchronisation: no residual on the bar."""
    op, x, y, x0 = prob
    error_reduction(op, y, x0=x0, n_iter=2, progress=True, differentiable=True)
    err = capsys.readouterr().err
    assert "error_reduction" in err and "residual=" not in err


def test_noise_std_keeps_y_dtype(prob):
    op, x, y, _ = prob
    P = _core._setup(op, y.float(), None)
    assert _core._noise_std(P, 0.25).dtype == torch.float32
    assert _core._noise_std(_core._setup(op, y, None), 0.25).dtype == torch.float64


def test_every_option_is_checked(prob):
    op, x, y, _ = prob
    checked = {wirtinger_flow: ("n_iter", "mu_max", "tau0", "tol", "n_power_iter"),
               amplitude_flow: ("n_iter", "mu", "gamma", "tol", "n_power_iter"),
               error_reduction: ("n_iter", "tol", "cg_iter", "n_power_iter"),
               hio: ("n_iter", "beta", "tol", "cg_iter", "n_power_iter"),
               tv: ("n_iter", "n_init_iter", "tol", "cg_iter", "n_power_iter"),
               pnp: ("n_iter", "n_init_iter", "tol", "cg_iter", "n_power_iter"),
               spectral_init: ("n_iter", "alpha_y")}
    for fn, keys in checked.items():
        for k in keys:
            with pytest.raises(SolverError, match=f"^{k} must be a"):
                fn(op, y, **{k: -1})


def test_regularised_er_start_gets_every_option(prob):
    """The ``init="er"`` start is ``error_reduction`` with the same spectral, pseudo-inverse and
    constraint options (checked against a direct call), and is differentiable when asked."""
    op, x, y, x0 = prob
    kw = dict(spectral_method="truncated", n_power_iter=7, alpha_y=1.1, pinv="cg", cg_iter=2,
              norm_sq=1.3 * op.s(), nonnegative=True, generator=5)
    start = error_reduction(op, y, n_iter=2, tol=None, residual_tol=None, **kw).x
    res = pnp(op, y, denoiser=Shrink(), n_init_iter=2, n_iter=0, amplitude_noise_std=0.1, **kw)
    assert torch.allclose(res.x, start, **TOL)
    # pinv_check_tol reaches the start: a dense operator passes "diagonal" only with a loose check
    mat = torch.randn(24, 4, dtype=C128, generator=_gen(3))
    d = Dense(mat, (2, 3, 4), (2, 2))
    yd = d.A(torch.randn(1, 2, 2, dtype=C128, generator=_gen(4))).abs() ** 2
    r = tv(d, yd, pinv="diagonal", pinv_check_tol=10.0, n_init_iter=1, n_iter=0, amplitude_noise_std=0.1)
    assert r.x.shape == (1, 2, 2)
    yl = y.clone().requires_grad_(True)
    res = pnp(op, yl, denoiser=Shrink(), n_iter=0, n_init_iter=1, differentiable=True, n_power_iter=2,
              amplitude_noise_std=0.1)
    assert res.x.requires_grad
    res = pnp(op, y, denoiser=Shrink(), x0=x0, n_iter=1, amplitude_noise_std=0.1, history=False)
    assert res.history == {}


def test_pnp_schedule_with_two_iterations(prob):
    """``σ_k = σ_x·start·(end/start)^{k/(n−1)}``: with n = 2 the second is exactly ``end``."""
    op, x, y, x0 = prob
    den = Shrink()
    pnp(op, y, denoiser=den, x0=x0, n_iter=2, amplitude_noise_std=0.2, sigma_start=3.0, sigma_end=0.5,
        norm_sq=op.s())
    sx = 0.2 / math.sqrt(2 * op.s())
    assert torch.allclose(torch.stack(den.sigmas), torch.tensor([3.0, 0.5], dtype=torch.float64)[:, None] * sx
                          * torch.ones(2, 2, dtype=torch.float64), **TOL)


# ------------------------------------------------------------------------------------------
# defaults and option plumbing, observed through behaviour (mutmut's trampolines hide default
# values from inspect.signature, so test_documented_defaults alone cannot see them change)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spiky(prob):
    """``prob``'s data with one bright outlier per sample (t = y/mean(y) ≈ 12, between the
    α_y² = 9 of the default truncation and 16): the truncated weights then depend on α_y."""
    op, x, y, x0 = prob
    ys = y.clone()
    ys[:, 0, 1, 1] = 0.0
    ys[:, 0, 1, 1] = 12.5 * ys.mean((-3, -2, -1)) * 48 / 47.5
    t = ys / ys.mean((-3, -2, -1), keepdim=True)
    assert bool(((t > 9) & (t < 16)).any(dim=(-3, -2, -1)).all())
    return op, ys


def test_default_iteration_counts(prob):
    """n_iter: 500 for ER/HIO, 1000 for WF/AF, 40 for TV/PnP (stopping switched off)."""
    op, x, y, x0 = prob
    off = dict(x0=x0, tol=None, residual_tol=None, history=False)
    assert error_reduction(op, y, **off).n_iter == 500
    assert hio(op, y, **off).n_iter == 500
    assert wirtinger_flow(op, y, **off).n_iter == 1000
    assert amplitude_flow(op, y, **off).n_iter == 1000
    assert pnp(op, y, denoiser=Shrink(), amplitude_noise_std=0.1, **off).n_iter == 40
    r = tv(op, y, x0=x0, history=False, amplitude_noise_std=0.0)
    assert r.n_iter == 40 and r.converged is False  # tol/residual_tol default to None here


def test_default_start_iterations_and_weights(prob, spiky):
    """Power iterations: 50 (spectral_init, ER, HIO, TV, PnP), 150 (WF, AF); α_y = 3."""
    op, x, y, _ = prob
    s = 1.3 * op.s()
    assert torch.allclose(spectral_init(op, y, generator=1), spectral_init(op, y, generator=1, n_iter=50), **TOL)
    assert not torch.allclose(spectral_init(op, y, generator=1, n_iter=49), spectral_init(op, y, generator=1, n_iter=50), **TOL)
    for fn in (error_reduction, lambda *a, **k: hio(*a, init="spectral", **k)):
        v = spectral_init(op, y, generator=1, n_iter=50, norm_sq=s)
        assert torch.allclose(ref_pm(op, y, v) if fn is not error_reduction else v,
                              fn(op, y, generator=1, n_iter=0, norm_sq=s).x, **TOL)
    for fn in (wirtinger_flow, amplitude_flow):
        v = spectral_init(op, y, method="optimal", generator=1, n_iter=150, norm_sq=s)
        assert torch.allclose(fn(op, y, generator=1, n_iter=0, norm_sq=s).x, v, **TOL)
    for fn in (tv, pnp):
        v = spectral_init(op, y, generator=1, n_iter=50, norm_sq=s)
        kw = dict(denoiser=Shrink()) if fn is pnp else {}
        assert torch.allclose(fn(op, y, init="spectral", generator=1, n_iter=0, norm_sq=s,
                                 amplitude_noise_std=0.1, **kw).x, v, **TOL)
    op, ys = spiky
    want = spectral_init(op, ys, method="truncated", alpha_y=3.0, generator=1, norm_sq=s)
    assert not torch.allclose(want, spectral_init(op, ys, method="truncated", alpha_y=4.0, generator=1,
                                                  norm_sq=s), **TOL)
    assert torch.allclose(spectral_init(op, ys, method="truncated", generator=1, norm_sq=s), want, **TOL)
    for fn in (error_reduction, wirtinger_flow, amplitude_flow):
        got = fn(op, ys, spectral_method="truncated", n_power_iter=50, generator=1, n_iter=0, norm_sq=s).x
        assert torch.allclose(got, want, **TOL), fn
    got = hio(op, ys, init="spectral", spectral_method="truncated", generator=1, n_iter=0, norm_sq=s).x
    assert torch.allclose(got, ref_pm(op, ys, want), **TOL)
    for fn, kw in ((tv, {}), (pnp, {"denoiser": Shrink()})):
        got = fn(op, ys, init="spectral", spectral_method="truncated", generator=1, n_iter=0, norm_sq=s,
                 amplitude_noise_std=0.1, **kw).x
        assert torch.allclose(got, want, **TOL), fn


def _slightly_blurred(op, eps=0.05):
    class Blurred(MaskFFT):
        def A(self, x):
            return super().A(x + eps * torch.roll(x, 1, dims=-1))

        def A_adjoint(self, z):
            u = super().A_adjoint(z)
            return u + eps * torch.roll(u, -1, dims=-1)

    return Blurred(op.masks, op.scale)


def test_default_pinv_options(prob):
    """``pinv_check_tol = 1e-3`` refuses a 5 % blur for ``pinv="diagonal"`` (deviation ≈ 0.1);
    ``cg_iter = 10`` CG steps (optics.operator.cg, the pseudo-inverse's definition)."""
    from optics.operator import cg
    op, x, y, x0 = prob
    bl = _slightly_blurred(op)
    yb = bl.A(x).abs() ** 2
    for fn, kw in ((error_reduction, {}), (hio, {}), (tv, {"amplitude_noise_std": 0.1, "x0": x0}),
                   (pnp, {"denoiser": Shrink(), "amplitude_noise_std": 0.1, "x0": x0})):
        with pytest.raises(SolverError, match="not diagonal"):
            fn(bl, yb, pinv="diagonal", n_iter=1, **kw)
        fn(bl, yb, pinv="diagonal", pinv_check_tol=0.5, n_iter=1, **dict(kw, x0=x0))
    z = op.A(x0)
    b = op.A_adjoint(y.sqrt() * z / z.abs())
    want = cg(lambda v: op.diag() * v, b, x0, 10)
    assert not torch.allclose(want, cg(lambda v: op.diag() * v, b, x0, 11), **TOL)
    assert torch.allclose(error_reduction(op, y, x0=x0, n_iter=1, pinv="cg", tol=None).x, want, **TOL)
    # HIO with pinv="cg", cg_iter=1: both measurement projections one CG step from their warm start
    def pm1(v):
        zz = op.A(v)
        bb = op.A_adjoint(y.sqrt() * zz / zz.abs())
        return cg(lambda u: op.diag() * u, bb, v, 1)
    x1 = ref_hio_update(x0, pm1(x0), 0.9, torch.ones(4, 4, dtype=torch.bool), False, False)
    res = hio(op, y, x0=x0, n_iter=1, pinv="cg", cg_iter=1, tol=None)
    assert torch.allclose(res.x, pm1(x1), **TOL)
    for fn, kw in ((tv, {"amplitude_noise_std": 0.0}), (pnp, {"denoiser": Shrink(), "amplitude_noise_std": 0.0})):
        got = fn(op, y, x0=x0, n_iter=1, pinv="cg", **kw).x
        assert torch.allclose(got, want, **TOL), fn
        got = fn(op, y, x0=x0, n_iter=1, pinv="cg", cg_iter=1, **kw).x
        assert torch.allclose(got, pm1(x0), **TOL), fn


def test_defaults_progress_history_constraints_and_discrepancy_factor(prob, capsys):
    """No bar, a history, complex (unconstrained) results and τ = 1 unless asked otherwise."""
    op, x, y, x0 = prob
    outs = [solve(op, y, name, x0=x0, n_iter=1, **({"denoiser": Shrink(), "amplitude_noise_std": 0.1}
                                                   if name == "pnp" else {"amplitude_noise_std": 0.1}
                                                   if name == "tv" else {}))
            for name in ("wf", "af", "er", "hio", "tv", "pnp")]
    assert capsys.readouterr().err == ""
    for r in outs:
        assert r.history["residual"].shape == (2, 2), r.solver
        assert float(r.x.imag.abs().max()) > 0 and float(r.x.real.min()) < 0, r.solver
    # τ = 1: a target between r0/2 and r0 is not met by the start with τ = 1 (met with τ = 2)
    r0 = ref_residual(op, y, x0)
    sd = (r0 / 1.5 * y.sum((-3, -2, -1)).sqrt() / math.sqrt(48)).tolist()
    for name in ("wf", "af", "er", "hio", "tv", "pnp"):
        kw = {"denoiser": Shrink()} if name == "pnp" else {}
        if name == "hio":  # HIO scores P_C(x'_0), not x0
            continue
        r = solve(op, y, name, x0=x0, n_iter=1, stop="discrepancy", amplitude_noise_std=sd, **kw)
        assert r.converged is False, name
        r = solve(op, y, name, x0=x0, n_iter=1, stop="discrepancy", amplitude_noise_std=sd,
                  discrepancy_factor=2.0, **kw)
        assert r.converged is True, name


@pytest.mark.parametrize("fn", [tv, pnp])
def test_regularised_pass_their_options_on(prob, fn, capsys):
    """tol, residual_tol, x_true, progress, norm_sq, alpha_y, generator, support, history reach
    the loop (each observed through its effect)."""
    op, x, y, x0 = prob
    kw = dict(denoiser=Shrink()) if fn is pnp else {}
    base = dict(x0=x0, amplitude_noise_std=0.0, **kw)
    assert fn(op, y, n_iter=5, tol=1.0, **base).n_iter == 2
    assert fn(op, y, n_iter=5, residual_tol=1.0, **base).n_iter == 2
    r = fn(op, y, n_iter=1, x_true=x, **base)
    assert r.history["relative_error"].shape == (2, 2)
    fn(op, y, n_iter=1, progress=True, **base)
    assert fn.__name__ in capsys.readouterr().err
    sup = torch.ones(4, 4, dtype=torch.bool)
    sup[2] = False
    r = fn(op, y, n_iter=1, support=sup, **base)
    assert torch.allclose(r.x, ref_project(ref_pm(op, y, ref_project(x0, sup)), sup), **TOL)
    # norm_sq sets σ_x = σ_b/√(2s)
    den = Shrink()
    s = 1.3 * op.s()
    if fn is pnp:
        fn(op, y, x0=x0, n_iter=1, amplitude_noise_std=0.2, norm_sq=s, denoiser=den, sigma_start=1.0)
        assert torch.allclose(den.sigmas[0], torch.full((2,), 0.2 / math.sqrt(2 * s), dtype=torch.float64), **TOL)
    # alpha_y, generator, spectral options reach the spectral start
    want = spectral_init(op, y, method="truncated", alpha_y=0.9, n_iter=9, generator=3, norm_sq=s)
    got = fn(op, y, init="spectral", spectral_method="truncated", alpha_y=0.9, n_power_iter=9,
             generator=3, norm_sq=s, n_iter=0, amplitude_noise_std=0.1, **kw).x
    assert torch.allclose(got, want, **TOL)
    # history off: no history at all
    assert fn(op, y, n_iter=1, history=False, **base).history == {}


def test_projection_solvers_pass_their_options_on(prob, capsys):
    """ER/HIO: norm_sq and alpha_y reach the spectral start, differentiable keeps the graph,
    nonnegative reaches the random start, progress shows a bar."""
    op, x, y, x0 = prob
    s = 1.3 * op.s()
    v = spectral_init(op, y, method="truncated", alpha_y=0.9, n_iter=9, generator=3, norm_sq=s)
    kw = dict(init="spectral", spectral_method="truncated", alpha_y=0.9, n_power_iter=9, generator=3,
              norm_sq=s, n_iter=0)
    assert torch.allclose(error_reduction(op, y, **kw).x, v, **TOL)
    assert torch.allclose(hio(op, y, **kw).x, ref_pm(op, y, v), **TOL)
    yl = y.clone().requires_grad_(True)
    for fn in (error_reduction, hio, wirtinger_flow, amplitude_flow):
        assert fn(op, yl, n_iter=1, differentiable=True, n_power_iter=2).x.requires_grad, fn
        assert not fn(op, yl, n_iter=1, n_power_iter=2).x.requires_grad, fn
    th = torch.rand((2, 3, 4, 4), dtype=torch.float64, generator=_gen(7))
    start = ref_project(op.A_adjoint(y.sqrt() * torch.polar(torch.ones_like(th), 2 * math.pi * th)) / op.diag(),
                        nonnegative=True)
    res = hio(op, y, generator=7, n_iter=0, nonnegative=True)
    assert torch.allclose(res.x, ref_project(ref_pm(op, y, start), nonnegative=True), **TOL)
    res = error_reduction(op, y, init="random", generator=7, n_iter=0, nonnegative=True)
    assert torch.allclose(res.x, start, **TOL)
    for fn in (hio, wirtinger_flow, amplitude_flow):
        fn(op, y, x0=x0, n_iter=1, progress=True)
        assert fn.__name__ in capsys.readouterr().err


def test_as_denoiser_messages():
    with pytest.raises(SolverError, match=r"^denoiser_options apply to a denoiser given by name; configure a "
                                          r"Denoiser instance when you build it$"):
        pnp(MaskFFT(_masks()), torch.ones(1, 3, 4, 4), denoiser=Shrink(), denoiser_options={"a": 1})


def test_hio_zero_real_part_counts_as_nonnegative():
    """``Re x' ≥ 0`` (not > 0) satisfies positivity: on a 1×2 Hadamard operator with y = (1, 1)
    and x0 = (2, 1.5), x'_0 = H(1, 1) = (√2, 0) exactly, so x_1 = (√2, 0) and the result is
    P_C(x'_1) = (√2, 0); treating 0 as a violation would keep x_1 = (√2, 1.5), flip the sign
    of (Hx_1)_2 and return (0, √2)."""

    class Hadamard:
        n_masks, in_shape, out_shape = 1, (1, 2), (1, 2)

        def A(self, x):
            a, b = x[..., 0:1], x[..., 1:2]
            return (torch.cat([a + b, a - b], dim=-1) / math.sqrt(2)).unsqueeze(-3)

        def A_adjoint(self, z):
            z = z[..., 0, :, :]
            a, b = z[..., 0:1], z[..., 1:2]
            return torch.cat([a + b, a - b], dim=-1) / math.sqrt(2)

    y = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    x0 = torch.tensor([[[2.0, 1.5]]], dtype=C128)
    res = hio(Hadamard(), y, x0=x0, n_iter=1, nonnegative=True, tol=None)
    assert torch.allclose(res.x, torch.tensor([[[math.sqrt(2), 0.0]]], dtype=C128), **TOL)


def test_hio_scale_and_stopping_options_reach_the_loop(prob):
    """The feedback ``x − βx'`` depends on the start's scale (norm_sq sets it); tol,
    residual_tol (incl. "auto") and differentiable reach HIO's loop."""
    op, x, y, x0 = prob
    s = 1.3 * op.s()
    inside = torch.ones(4, 4, dtype=torch.bool)
    inside[0] = False
    v = spectral_init(op, y, generator=3, norm_sq=s)
    x1 = ref_hio_update(v, ref_pm(op, y, v), 0.9, inside, False, False)
    res = hio(op, y, init="spectral", generator=3, norm_sq=s, n_iter=1, support=inside, tol=None)
    assert torch.allclose(res.x, ref_project(ref_pm(op, y, x1), inside), **TOL)
    assert hio(op, y, x0=x0, n_iter=5, tol=1.0, residual_tol=None).n_iter == 2
    assert hio(op, y, x0=x0, n_iter=5, tol=None, residual_tol=1.0).n_iter == 2
    r = hio(op, y, x0=x, n_iter=5, tol=None)  # from the truth: the round-off floor at t = 1
    assert r.n_iter == 2 and r.converged is True
    r = hio(op, y, x0=x, n_iter=3, differentiable=True)
    assert r.n_iter == 3 and r.converged is None
    with pytest.raises(SolverError, match="differentiable=True does not make"):
        hio(op, y, stop="discrepancy", amplitude_noise_std=0.1, differentiable=True)
    # the default cg_iter = 10 for HIO as for ER
    from optics.operator import cg

    def pm10(w):
        zz = op.A(w)
        return cg(lambda u: op.diag() * u, op.A_adjoint(y.sqrt() * zz / zz.abs()), w, 10)

    x1 = ref_hio_update(x0, pm10(x0), 0.9, torch.ones(4, 4, dtype=torch.bool), False, False)
    assert torch.allclose(hio(op, y, x0=x0, n_iter=1, pinv="cg", tol=None).x, pm10(x1), **TOL)


def test_tv_defaults_are_the_documented_prox(prob):
    """λ = 1·σ_x, Chambolle with eps = 2e-4 and at most 200 iterations: on a 16×16 integrated-noise
    image with λ = 10 Chambolle needs more than 200 (the cap changes the result)."""
    from skimage.restoration import denoise_tv_chambolle
    op, x, y, x0 = prob
    s = op.s()
    v = ref_pm(op, y, ref_project(x0, real=True)).real
    sx = 0.5 / math.sqrt(2 * s)
    want = torch.stack([torch.from_numpy(denoise_tv_chambolle(v[b].numpy(), weight=sx, eps=2e-4,
                                                              max_num_iter=200)) for b in range(2)])
    res = tv(op, y, x0=x0, n_iter=1, real=True, amplitude_noise_std=0.5, norm_sq=s)
    assert torch.allclose(res.x.real, want, **TOL)
    g = torch.randn(1, 16, 16, dtype=torch.float64, generator=_gen(0))
    img = g.cumsum(-1).cumsum(-2) / 16
    one = MaskFFT(torch.ones(1, 16, 16, dtype=C128))
    yi = one.A(img.to(C128)).abs() ** 2
    v = ref_pm(one, yi, img.to(C128)).real
    want = torch.from_numpy(denoise_tv_chambolle(v[0].numpy(), weight=10.0, eps=2e-4, max_num_iter=200))
    assert not torch.allclose(want, torch.from_numpy(denoise_tv_chambolle(v[0].numpy(), weight=10.0, eps=2e-4,
                                                                          max_num_iter=201)), **TOL)
    res = tv(one, yi, x0=img, n_iter=1, real=True, weight=10.0, amplitude_noise_std=0.1)
    assert torch.allclose(res.x.real[0], want, **TOL)


def test_regularised_default_start_is_50_er_iterations():
    """``init="er"`` runs ``n_init_iter = 50`` ER iterations. Inconsistent data (y from another
    object's masks) keeps ER moving, so 50 and 51 iterations differ."""
    op = MaskFFT(_masks(L=2, seed=4))
    y = MaskFFT(_masks(L=2, seed=5)).A(_x(1, seed=6)).abs() ** 2
    kw = dict(tol=None, residual_tol=None, generator=2, history=False)
    e50 = error_reduction(op, y, n_iter=50, **kw).x
    assert not torch.allclose(e50, error_reduction(op, y, n_iter=51, **kw).x, **TOL)
    assert torch.allclose(tv(op, y, n_iter=0, generator=2, amplitude_noise_std=0.1).x, e50, **TOL)
    assert torch.allclose(pnp(op, y, denoiser=Shrink(), n_iter=0, generator=2, amplitude_noise_std=0.1).x,
                          e50, **TOL)


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_wirtinger_safeguard_on_oscillating_runs(prob, scale):
    """With μ_t = 1 (τ0 → 0) these starts alternate accepted and rejected steps (×1: R A R A R A
    A R; ×0.3: three rejections in a row first), so the comparison uses the loss of the last
    *accepted* iterate and consecutive rejections keep the held state."""
    op, x, y, _ = prob
    s = op.s()
    x0 = scale * _x(1, seed=5)
    res = wirtinger_flow(op, y[1:], x0=x0, n_iter=8, mu_max=1.0, tau0=1e-9, tol=None, residual_tol=None,
                         norm_sq=s)
    want = ref_wf(op, y[1:], x0, 8, s=s, mu_max=1.0, tau0=1e-9)
    assert torch.allclose(res.x, want, **TOL)
    h = res.history["residual"][:, 0]
    rejected = [float(h[i + 1]) == float(h[i]) for i in range(8)]
    assert rejected[0] and sum(rejected) >= 3


def test_wirtinger_stagnation_test_resumes_after_an_accepted_step(prob):
    """Step 0 is rejected (x_1 = x_0: the unchanged residual is not stagnation), step 1 accepted;
    with a loose tol = 0.99 the check at t = 2 then stops the run (n_iter = 3)."""
    op, x, y, _ = prob
    res = wirtinger_flow(op, y[1:], x0=_x(1, seed=5), n_iter=8, mu_max=1.0, tau0=1e-9, tol=0.99,
                         residual_tol=None, norm_sq=op.s())
    h = res.history["residual"][:, 0]
    assert float(h[1]) == float(h[0]) and float(h[2]) != float(h[1])
    assert res.n_iter == 3 and res.converged is True


def test_wirtinger_defaults_and_small_starts(prob):
    """μ_max = 0.3 (with τ0 → 0 every μ_t = μ_max); the default stagnation tol 1e-6 does not stop a
    run that still moves; any non-zero start is accepted (‖x0‖² < 1 included), x_true recorded."""
    op, x, y, x0 = prob
    s = op.s()
    res = wirtinger_flow(op, y, x0=x0, n_iter=3, tau0=1e-9, tol=None, safeguard=False, norm_sq=s)
    assert torch.allclose(res.x, ref_wf(op, y, x0, 3, s=s, mu_max=0.3, tau0=1e-9, safeguard=False), **TOL)
    for fn in (wirtinger_flow, amplitude_flow, error_reduction, hio):
        r = fn(op, y, x0=x0, n_iter=4, residual_tol=None, x_true=x)
        assert r.n_iter == 4 and r.history["relative_error"].shape == (5, 2), fn
    small = 0.05 * x0
    assert float((small.abs() ** 2).sum((-2, -1)).max()) < 1
    assert wirtinger_flow(op, y, x0=small, n_iter=1).n_iter == 1
    with pytest.raises(SolverError, match=r"^x0 is zero in at least one sample; WF's step is normalised by "
                                          r"‖x0‖², pass a non-zero start$"):
        wirtinger_flow(op, y, x0=torch.zeros_like(x0))


@pytest.mark.parametrize("name", ["wf", "af", "er", "hio", "pnp"])
def test_batch_axes_are_independent(prob, name):
    """No batch axis, one, or two: every sample gets the result it gets alone."""
    op, x, y, x0 = prob
    kw = dict(n_iter=3, tol=None, **({"denoiser": Shrink(), "amplitude_noise_std": 0.1} if name == "pnp" else {}))
    full = solve(op, y, name, x0=x0, **kw)
    one = solve(op, y[0], name, x0=x0[0], **kw)
    assert one.x.shape == (4, 4) and one.residual.shape == ()
    assert torch.allclose(one.x, full.x[0], **TOL)
    two = solve(op, y.reshape(2, 1, 3, 4, 4), name, x0=x0.reshape(2, 1, 4, 4), **kw)
    assert torch.allclose(two.x.reshape(2, 4, 4), full.x, **TOL)
    assert two.history["residual"].shape == (4, 2, 1)


@pytest.mark.parametrize("safeguard", [True, False])
def test_wirtinger_history_follows_mixed_acceptance(prob, safeguard):
    """Two samples whose steps are accepted/rejected at different times (R A R A … and R A A A …):
    history entry t is the residual of each sample's own x_t (the held ``A x`` of the accepted
    iterate, not a stale one)."""
    op, x, y, _ = prob
    s = op.s()
    x0 = torch.stack([_x(1, seed=5)[0], 3.0 * _x(1, seed=5)[0]])
    yy = torch.stack([y[1], y[1]])
    res = wirtinger_flow(op, yy, x0=x0, n_iter=6, mu_max=1.0, tau0=1e-9, tol=None, residual_tol=None,
                         norm_sq=s, safeguard=safeguard)
    its = ref_wf(op, yy, x0, 6, s=s, mu_max=1.0, tau0=1e-9, safeguard=safeguard, iterates=True)
    assert torch.allclose(res.x, its[-1], **TOL)
    want = torch.stack([ref_residual(op, yy, v) for v in its])
    assert torch.allclose(res.history["residual"], want, **TOL)


@pytest.mark.parametrize("name", ["wf", "af", "er", "hio"])
def test_every_solver_honours_the_stopping_options(prob, name):
    """From the truth the round-off floor (residual_tol "auto") stops at t = 1; residual_tol = 1
    or tol = 1 stops any run there; with both off all iterations run."""
    op, x, y, x0 = prob
    r = solve(op, y, name, x0=x, n_iter=6, tol=None)
    assert (r.n_iter, r.converged) == (2, True)
    assert solve(op, y, name, x0=x0, n_iter=6, tol=None, residual_tol=1.0).n_iter == 2
    assert solve(op, y, name, x0=x0, n_iter=6, tol=1.0, residual_tol=None).n_iter == 2
    r = solve(op, y, name, x0=x, n_iter=6, tol=None, residual_tol=None)
    assert (r.n_iter, r.converged) == (6, False)


class Identity:
    """``A x = x`` (one "mask", detector = object grid): ER from the truth of y = (1, 4) stays at
    x = (1, 2) with residual exactly 0 in floating point."""
    n_masks, in_shape, out_shape = 1, (1, 2), (1, 2)

    def A(self, x):
        return x.unsqueeze(-3)

    def A_adjoint(self, z):
        return z[..., 0, :, :]


def test_stopping_rules_include_their_boundaries():
    """``r ≤ residual_tol`` and ``|r_{t−1} − r_t| ≤ tol·r_{t−1}`` hold with equality at an exactly
    zero residual: residual_tol = 0 or any tol stops at t = 1."""
    y = torch.tensor([[[[1.0, 4.0]]]], dtype=torch.float64)
    x = torch.tensor([[[1.0, 2.0]]], dtype=C128)
    op = Identity()
    r = error_reduction(op, y, x0=x, n_iter=5, tol=None, residual_tol=0.0)
    assert float(r.history["residual"].abs().max()) == 0.0
    assert (r.n_iter, r.converged) == (2, True)
    r = error_reduction(op, y, x0=x, n_iter=5, tol=0.5, residual_tol=None)
    assert (r.n_iter, r.converged) == (2, True)
    # stopping needs residuals even without a history
    r = error_reduction(op, y, x0=x, n_iter=5, tol=0.5, residual_tol=None, history=False)
    assert (r.n_iter, r.converged, r.history) == (2, True, {})


def test_progress_bar_updates_the_residual_every_25_iterations(prob, capsys):
    op, x, y, x0 = prob
    r = error_reduction(op, y, x0=x0, n_iter=27, tol=None, residual_tol=None, progress=True)
    err = capsys.readouterr().err
    h = r.history["residual"]
    assert f"residual={float(h[25].max()):.3e}" in err
    assert f"residual={float(h[26].max()):.3e}" not in err


def test_non_square_grids(prob):
    """4×6 objects and detectors (masks (3, 4, 6)) and an attribute-free 2×3 → (2, 3, 2) operator:
    every axis is taken from the right place."""
    masks = _masks(3, 6, seed=2)[:, :4, :]
    op = MaskFFT(masks)
    x = torch.randn(2, 4, 6, dtype=C128, generator=_gen(3))
    y = op.A(x).abs() ** 2
    P = _core._setup(op, y, None)
    assert (P.in_shape, P.meas_shape, P.m, P.n) == ((4, 6), (3, 4, 6), 72, 24)
    res = error_reduction(op, y, x0=x, n_iter=1, tol=None)
    assert torch.allclose(res.x, ref_pm(op, y, x), **TOL)
    with pytest.raises(SolverError, match=r"y has shape \(2, 3, 6, 4\) but this operator produces .*"
                                          r"\(\.\.\., 3, 4, 6\)"):
        error_reduction(op, y.transpose(-1, -2))
    mat = torch.randn(12, 6, dtype=C128, generator=_gen(4))
    d = Dense(mat, (2, 3, 2), (2, 3))
    yd = d.A(torch.randn(1, 2, 3, dtype=C128, generator=_gen(5))).abs() ** 2
    assert _core._check_y(d, yd)[1:] == ((2, 3), (2, 3, 2))
    P = _core._setup(d, yd, None)
    assert (P.m, P.n) == (12, 6)
    with pytest.raises(SolverError, match=r"y has shape \(1, 2, 2, 3\) but the operator maps \(2, 3\) to "
                                          r"\(2, 3, 2\): expected y of shape \(\.\.\., 2, 3, 2\)"):
        error_reduction(d, yd.transpose(-1, -2))


def test_operator_without_adjoint_is_refused(prob):
    op, x, y, _ = prob

    class OnlyForward:
        def A(self, x):
            return op.A(x)

    with pytest.raises(SolverError, match=r"the operator OnlyForward lacks A\(x\)/A_adjoint\(z\)"):
        error_reduction(OnlyForward(), y)


def test_truncation_keeps_terms_at_the_threshold():
    """TAF keeps ``|a_rᴴx| ≥ √y_r/(1+γ)`` including equality: on the identity operator with
    x0 = (1, 1), y = (4, 4), γ = 1 both terms sit exactly on the threshold and are kept, so one
    step with μ = 0.5 (s = 1) gives x0 − 0.5·(x0 − 2) = (1.5, 1.5)."""
    y = torch.tensor([[[[4.0, 4.0]]]], dtype=torch.float64)
    x0 = torch.tensor([[[1.0, 1.0]]], dtype=C128)
    r = amplitude_flow(Identity(), y, x0=x0, n_iter=1, mu=0.5, gamma=1.0, weighting="truncated", tol=None)
    assert torch.equal(r.x, torch.tensor([[[1.5, 1.5]]], dtype=C128))


def test_flows_refuse_discrepancy_in_differentiable_mode(prob):
    op, x, y, _ = prob
    for fn in (wirtinger_flow, amplitude_flow, error_reduction):
        with pytest.raises(SolverError, match="differentiable=True does not make"):
            fn(op, y, stop="discrepancy", amplitude_noise_std=0.1, differentiable=True, n_iter=1)


def test_regularised_check_their_own_options_without_an_er_start(prob):
    """With x0 given no ER start runs, so the loop's own check must catch bad counts."""
    op, x, y, x0 = prob
    for fn, kw in ((tv, {}), (pnp, {"denoiser": Shrink()})):
        for k in ("cg_iter", "n_power_iter"):
            with pytest.raises(SolverError, match=f"^{k} must be a non-negative int, got -1"):
                fn(op, y, x0=x0, amplitude_noise_std=0.1, **{k: -1}, **kw)


def test_regularised_er_start_runs_all_its_iterations_with_the_support(prob):
    """The ER start never stops early (the default stagnation test would stop this inconsistent
    problem at iteration 251 of 400, 4e-3 away), projects every ER iterate onto the support, and
    ``init="random"`` gives ER's random start."""
    op = MaskFFT(_masks(L=2, seed=4))
    y = MaskFFT(_masks(L=2, seed=5)).A(_x(1, seed=6)).abs() ** 2
    full = error_reduction(op, y, n_iter=400, tol=None, residual_tol=None, generator=2, history=False)
    assert error_reduction(op, y, n_iter=400, residual_tol=None, generator=2).n_iter < 400
    got = pnp(op, y, denoiser=Shrink(), n_init_iter=400, n_iter=0, generator=2, amplitude_noise_std=0.1)
    assert torch.allclose(got.x, full.x, **TOL)
    op, x, y, x0 = prob
    sup = torch.ones(4, 4, dtype=torch.bool)
    sup[:, 0] = False
    start = error_reduction(op, y, n_iter=3, tol=None, residual_tol=None, generator=2, support=sup).x
    res = tv(op, y, n_init_iter=3, n_iter=0, generator=2, support=sup, amplitude_noise_std=0.1)
    assert torch.allclose(res.x, start, **TOL)
    rnd = error_reduction(op, y, init="random", generator=7, n_iter=0).x
    for fn, kw in ((tv, {}), (pnp, {"denoiser": Shrink()})):
        res = fn(op, y, init="random", generator=7, n_iter=0, amplitude_noise_std=0.1, **kw)
        assert torch.allclose(res.x, rnd, **TOL), fn


def test_regularised_hooks_graph_and_stopping(prob):
    """TV/PnP enter ``op.frozen()`` once, build no graph unless differentiable, accept
    residual_tol="auto" (from the truth: the round-off floor at t = 1) and refuse the
    discrepancy stop in differentiable mode."""
    op, x, y, x0 = prob

    class Hooked(MaskFFT):
        entered = 0

        def frozen(self):
            import contextlib
            Hooked.entered += 1
            return contextlib.nullcontext()

    h = Hooked(op.masks, op.scale)
    tv(h, y, x0=x0, n_iter=1, amplitude_noise_std=0.1)
    pnp(h, y, x0=x0, n_iter=1, amplitude_noise_std=0.1, denoiser=Shrink())
    assert Hooked.entered == 2
    yl = y.clone().requires_grad_(True)
    assert not pnp(op, yl, x0=x0, n_iter=1, amplitude_noise_std=0.1, denoiser=Shrink()).x.requires_grad
    for fn, kw in ((tv, {}), (pnp, {"denoiser": Shrink()})):
        r = fn(op, y, x0=x, n_iter=5, residual_tol="auto", amplitude_noise_std=0.0, **kw)
        assert (r.n_iter, r.converged) == (2, True), fn
    with pytest.raises(SolverError, match="differentiable=True does not make"):
        pnp(op, y, x0=x0, denoiser=Shrink(), differentiable=True, stop="discrepancy", amplitude_noise_std=0.1)


def test_estimate_norm_sq_passes_the_probe_count():
    """Hutchinson with ``n_probes`` probes (default 4), as optics.operator.estimate_norm_sq: for a
    non-diagonal AᴴA the count changes the estimate."""
    from optics.operator import estimate_norm_sq as ref
    mat = torch.randn(12, 4, dtype=C128, generator=_gen(13))
    d = Dense(mat, (3, 2, 2), (2, 2))
    e4 = ref(d, (2, 2), dtype=C128, n_probes=4)
    assert e4 != ref(d, (2, 2), dtype=C128, n_probes=5)
    assert _core.estimate_norm_sq(d, (2, 2), dtype=C128) == e4
    assert _core.estimate_norm_sq(d, (2, 2), dtype=C128, n_probes=7) == ref(d, (2, 2), dtype=C128, n_probes=7)


def test_x0_nan_message(prob):
    op, x, y, _ = prob
    bad = x.clone()
    bad[1, 2, 2] = float("inf")
    with pytest.raises(SolverError, match=r"^x0 contains NaN/inf; pass a finite starting point or x0=None$"):
        error_reduction(op, y, x0=bad)


def test_discrepancy_rule_details(prob):
    """The discrepancy stop needs residuals even without a history; ``r ≤ target`` includes
    equality (exact zero residual with σ_b = 0, at t = 0 and at a later t); a sample that is done
    counts as converged while the others meet residual_tol."""
    y1 = torch.tensor([[[[1.0, 4.0]]]], dtype=torch.float64)
    op1 = Identity()
    exact = torch.tensor([[[1.0, 2.0]]], dtype=C128)
    r = error_reduction(op1, y1, x0=exact, n_iter=5, tol=None, residual_tol=None, stop="discrepancy",
                        amplitude_noise_std=0.0)
    assert (r.n_iter, r.converged) == (1, True)
    # from (3, 5): x_1 = √y ⊙ sgn(x_0) = (1, 2) exactly, residual 0 = target at t = 1
    r = error_reduction(op1, y1, x0=torch.tensor([[[3.0, 5.0]]], dtype=C128), n_iter=5, tol=None,
                        residual_tol=None, stop="discrepancy", amplitude_noise_std=0.0)
    assert (r.n_iter, r.converged) == (2, True) and torch.equal(r.x, exact)
    op, x, y, x0 = prob
    r = error_reduction(op, y, x0=x0, n_iter=5, tol=None, residual_tol=None, stop="discrepancy",
                        amplitude_noise_std=1e3, history=False)
    assert (r.n_iter, r.converged, r.history) == (1, True, {})
    # sample 0 done at t = 0 (huge σ_b; its residual ≈ 0.3 stays above residual_tol), sample 1
    # next to the truth below residual_tol = 1e-3 but never below its tiny target: converged at t = 1
    both = torch.stack([x0[0], x[1] + 1e-6 * _x(1, seed=8)[0]])
    r = error_reduction(op, y, x0=both, n_iter=6, tol=None, residual_tol=1e-3, stop="discrepancy",
                        amplitude_noise_std=torch.tensor([1e3, 1e-300], dtype=torch.float64))
    assert float(r.history["residual"][-1, 0]) > 1e-3
    assert (r.n_iter, r.converged) == (2, True)


def test_history_relative_error_has_the_residual_dtype(prob):
    """float32 data with a float64 x_true: the relative-error history is float32 like the
    residuals (one history dtype)."""
    op, x, y, x0 = prob
    r = error_reduction(op, y.float(), x0=x0.to(torch.complex64), n_iter=2, tol=None, x_true=x)
    assert r.history["relative_error"].dtype == r.history["residual"].dtype == torch.float32


def test_differentiable_measurement_projection_matches_the_formula(prob):
    """The autograd branch of the measurement projection gives the same step as the in-place one."""
    op, x, y, x0 = prob
    yl = y.clone().requires_grad_(True)
    for diff in (True, False):
        r = error_reduction(op, yl, x0=x0, n_iter=1, differentiable=diff)
        assert torch.allclose(r.x.detach(), ref_pm(op, y, x0), **TOL), diff
    r = hio(op, yl, x0=x0, n_iter=1, differentiable=True)
    x1 = ref_hio_update(x0, ref_pm(op, y, x0), 0.9, torch.ones(4, 4, dtype=torch.bool), False, False)
    assert torch.allclose(r.x.detach(), ref_pm(op, y, x1), **TOL)


def test_random_start_with_cg_pseudo_inverse(prob):
    """The random start's back-projection with ``pinv="cg"``: ``cg_iter`` CG steps from zero in
    the working (complex128) precision."""
    from optics.operator import cg
    op, x, y, _ = prob
    th = torch.rand((2, 3, 4, 4), dtype=torch.float64, generator=_gen(7))
    b = op.A_adjoint(y.sqrt() * torch.polar(torch.ones_like(th), 2 * math.pi * th))
    want = cg(lambda v: op.diag() * v, b, torch.zeros_like(b), 3)
    r = error_reduction(op, y, init="random", generator=7, n_iter=0, pinv="cg", cg_iter=3)
    assert torch.allclose(r.x, want, **TOL)


def test_more_messages(prob):
    op, x, y, _ = prob
    with pytest.raises(SolverError, match=r"^support is empty \(all False\); pass the object's support region$"):
        error_reduction(op, y, support=torch.zeros(4, 4, dtype=torch.bool))
    wide = MaskFFT(_masks(3, 6, seed=2)[:, :4, :])
    yw = wide.A(torch.randn(1, 4, 6, dtype=C128, generator=_gen(3))).abs() ** 2
    with pytest.raises(SolverError, match=r"^x_true must be a tensor of shape \(\.\.\., 4, 6\); got \(1, 6, 4\)$"):
        error_reduction(wide, yw, x_true=torch.zeros(1, 6, 4, dtype=C128))


class Recording(Dense):
    """Dense operator that records every all-zero input (the shape probes) with its dtype/shape."""

    def __init__(self, *a, attrs=None):
        super().__init__(*a)
        self.probes = []
        for k, v in (attrs or {}).items():
            setattr(self, k, v)

    def A(self, x):
        if not bool(x.abs().any()):
            self.probes.append(("A", x.dtype, tuple(x.shape)))
        return super().A(x)

    def A_adjoint(self, z):
        if not bool(z.abs().any()):
            self.probes.append(("AH", z.dtype, tuple(z.shape)))
        return super().A_adjoint(z)


def test_shape_probes():
    """Declared shapes (tuples or torch.Size) are used as they are; missing ones are probed once
    with a zero measurement stack (L, Mh, Mw) / object (H, W) of the working complex dtype;
    unbatched y is fine; a partially declared operator is still checked against y."""
    mat = torch.randn(12, 6, dtype=C128, generator=_gen(4))
    yd = Dense(mat, (2, 3, 2), (2, 3)).A(torch.randn(2, 2, 3, dtype=C128, generator=_gen(5))).abs() ** 2
    full = Recording(mat, (2, 3, 2), (2, 3), attrs=dict(n_masks=2, in_shape=torch.Size([2, 3]),
                                                        out_shape=torch.Size([3, 2])))
    assert _core._check_y(full, yd)[1:] == ((2, 3), (2, 3, 2)) and full.probes == []
    with pytest.raises(SolverError, match=r"this operator produces \(\.\.\., L, Mh, Mw\) = \(\.\.\., 2, 3, 2\)"):
        _core._check_y(full, yd[..., :1])
    bare = Recording(mat, (2, 3, 2), (2, 3))
    assert _core._check_y(bare, yd)[1:] == ((2, 3), (2, 3, 2))
    assert bare.probes == [("AH", C128, (2, 3, 2)), ("A", C128, (2, 3))]
    bare.probes.clear()
    assert _core._check_y(bare, yd[0])[1:] == ((2, 3), (2, 3, 2))  # no batch axis
    assert _core._check_y(bare, yd.float())[1:] == ((2, 3), (2, 3, 2))
    assert [p[1] for p in bare.probes] == [C128, C128, torch.complex64, torch.complex64]
    part = Recording(mat, (2, 3, 2), (2, 3), attrs=dict(n_masks=2))
    assert _core._check_y(part, yd)[1:] == ((2, 3), (2, 3, 2))
    with pytest.raises(SolverError, match=r"but the operator maps \(2, 3\) to \(2, 3, 2\)"):
        _core._check_y(part, torch.ones(1, 2, 2, 3, dtype=torch.float64))
    part = Recording(mat, (2, 3, 2), (2, 3), attrs=dict(out_shape=(3, 2), in_shape=(2, 3)))
    _core._check_y(part, yd)
    assert part.probes == [("A", C128, (2, 3))]


def test_check_y_and_discrepancy_messages_in_full(prob):
    op, x, y, _ = prob
    with pytest.raises(SolverError, match=r"^y must be real intensities \|A x\|², got a complex tensor; pass the "
                                          r"measured intensities \(e\.g\. op\.intensity\(x\)\), not the fields$"):
        error_reduction(op, y.to(C128))
    with pytest.raises(SolverError, match=r"^y is all zero in at least one sample; there is nothing to recover — "
                                          r"check the exposure or drop empty frames$"):
        error_reduction(op, torch.zeros_like(y))
    with pytest.raises(SolverError, match=r"^stop='discrepancy' needs the noise level: pass amplitude_noise_std= "
                                          r"\(the std of √y − \|Ax\|; ≈ α/510 for prDeep's α-noise\)$"):
        error_reduction(op, y, stop="discrepancy")
