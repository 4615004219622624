r"""Losses for training and distilling phase-retrieval systems.

Contract (deepinv's): a loss is called as ``loss(x_net, x, y, physics, model)`` with ``x_net``
the :class:`~learning.systems.ReconOutput` of ``model(y, physics)`` (its ``.x``, ``.features``,
``.seeds``), ``x`` the ground truth, ``y`` the measurements. Every loss returns a dict
``{term name: unweighted scalar}``; the training loop weights and sums the terms (and measures
the gradient each term sends to the mask phases).

* :class:`ReconstructionLoss` — MSE or L1 after global-phase alignment (phase retrieval cannot
  recover the global phase; comparing unaligned fields would penalise a correct answer).
* :class:`DistillationLoss` — holds a frozen teacher (``requires_grad = False`` **and** eval
  mode, so its BatchNorm statistics cannot drift) and returns the knowledge-transfer terms:

  - ``"mask"``: :func:`gram_mask_loss` (the coherence form of Fonseca et al., ICIP 2025) or the
    non-degenerate :func:`spectrum_mask_loss` (``mask_kind``), on the student's
    **pre-quantisation** phase (see :meth:`DistillationLoss.mask_term` for the grids);
  - ``"feature"``: :func:`feature_loss` on chosen decoder levels (MSE, L1 or cosine) through
    learnable 1×1 adapters where the widths differ;
  - ``"output"``: the student's estimate against the teacher's (global-phase aligned).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LearningError
from .metrics import align_global_phase

__all__ = ["LossError", "MASK_LOSSES", "FEATURE_KINDS", "RECON_KINDS", "ReconstructionLoss",
           "recon_error", "gram_mask_loss", "gram_mask_loss_explicit", "spectrum_mask_loss",
           "radial_power_profile", "feature_loss", "DistillationLoss"]

MASK_LOSSES = ("gram", "spectrum", "none")
FEATURE_KINDS = ("mse", "l1", "cosine")
RECON_KINDS = ("mse", "l1")


class LossError(LearningError):
    """A loss configured or called in a way that cannot work; the message names the fix."""


# ----------------------------------------------------------------------------------------------
# reconstruction
# ----------------------------------------------------------------------------------------------
def recon_error(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean ``|x̂ e^{iφ*} − x|²`` (``"mse"``) or ``|·|`` (``"l1"``) with ``φ*`` the optimal
    global phase (:func:`learning.metrics.align_global_phase`); invariant to ``x̂ → x̂ e^{iα}``."""
    if kind not in RECON_KINDS:
        raise LossError(f"reconstruction loss kind {kind!r} is not one of {RECON_KINDS}")
    d = align_global_phase(x_hat, x) - x.to(torch.promote_types(x_hat.dtype, torch.complex64))
    a2 = d.real ** 2 + d.imag ** 2
    if kind == "mse":
        return a2.mean()
    return torch.sqrt(a2 + 1e-12).mean()


class ReconstructionLoss(nn.Module):
    """``{"recon": recon_error(x_net.x, x)}`` (global-phase invariant)."""

    def __init__(self, kind: str = "mse"):
        super().__init__()
        if kind not in RECON_KINDS:
            raise LossError(f"train.recon_loss = {kind!r} is not one of {RECON_KINDS}")
        self.kind = kind

    def forward(self, x_net, x, y, physics, model) -> Dict[str, torch.Tensor]:
        return {"recon": recon_error(x_net.x, x, self.kind)}


# ----------------------------------------------------------------------------------------------
# mask losses
# ----------------------------------------------------------------------------------------------
def _flat(phi: torch.Tensor) -> torch.Tensor:
    if phi.ndim == 2:
        phi = phi[None]
    return phi.reshape(phi.shape[0], -1)


def gram_mask_loss(phi_t: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
    r"""``‖Σ_l φ_l φ_lᴴ − Σ_k ψ_k ψ_kᴴ‖²_F / n²`` for teacher masks ``φ`` ``(L, H, W)`` and
    student masks ``ψ`` ``(K, H, W)`` (complex modulations, ``n = H·W``), without the
    ``n × n`` matrices: with ``P`` (``L × n``) and ``Q`` (``K × n``) the stacked masks,

        ``‖PᴴP − QᴴQ‖²_F = ‖P Pᴴ‖²_F − 2‖P Qᴴ‖²_F + ‖Q Qᴴ‖²_F``

    (``tr(AB) = tr(BA)``), i.e. only ``L×L``, ``L×K`` and ``K×K`` inner products:
    ``O((L+K)² n)`` time, ``O(n)`` memory.

    **Degeneracy for unit-modulus masks.** For one student mask (``K = 1``) ``‖Q Qᴴ‖²_F =
    ⟨ψ, ψ⟩² = n²`` is fixed by the unit modulus, and ``‖P Pᴴ‖²_F`` does not depend on the
    student, so

        ``loss = const − (2/n²) Σ_l |⟨φ_l, ψ⟩|²``:

    the loss only rewards overlap with the teacher's masks, and is minimised by copying the
    teacher's principal mask (a unit-modulus approximation of the top eigenvector of ``PᴴP``;
    with nearly orthogonal random teacher masks, any one of them). A random student starts with
    overlaps ``|⟨φ_l, ψ⟩|² ≈ n``, i.e. within ``2L/n`` of the loss's maximum (orthogonal masks)
    where the gradient ``∝ Σ_l Re(...)`` is ``O(1/√n)`` relative to its value at a copy: the mask
    signal is tiny exactly when it is needed. Tested in ``tests/learning/test_losses.py``; use
    :func:`spectrum_mask_loss` for a transfer that does not degenerate.
    """
    p, q = _flat(phi_t), _flat(phi_s)
    dt = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.complex64)
    p, q = p.to(dt), q.to(dt)   # one complex dtype (a real mask is a real-valued modulation)
    n = p.shape[-1]
    pp = p @ p.conj().T
    pq = p @ q.conj().T
    qq = q @ q.conj().T

    def sq(m):
        return (m.real ** 2 + m.imag ** 2).sum()

    return (sq(pp) - 2 * sq(pq) + sq(qq)) / (n * n)


def gram_mask_loss_explicit(phi_t: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
    """The same quantity with the explicit ``n × n`` matrices (tests only; memory ``O(n²)``)."""
    p, q = _flat(phi_t), _flat(phi_s)
    n = p.shape[-1]
    m = p.T @ p.conj() - q.T @ q.conj()
    return (m.real ** 2 + m.imag ** 2).sum() / (n * n)


def radial_power_profile(phi: torch.Tensor) -> torch.Tensor:
    r"""Radially binned angular power spectrum of masks ``(L, H, W)`` → ``(L, R)``.

    ``P(k) = |FFT φ(k)|² / Σ_k |FFT φ|²`` (a distribution over spatial frequencies, sums to 1),
    summed over rings of integer radius ``r = round(|k|)`` in frequency samples
    (``k`` from :func:`torch.fft.fftfreq` times the side), ``R = round(√2·N/2) + 1`` rings.
    """
    if phi.ndim == 2:
        phi = phi[None]
    h, w = phi.shape[-2:]
    spec = torch.fft.fft2(phi)
    p = spec.real ** 2 + spec.imag ** 2
    p = p / p.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    ky = torch.fft.fftfreq(h, device=phi.device) * h
    kx = torch.fft.fftfreq(w, device=phi.device) * w
    r = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long()
    nb = int(r.max()) + 1
    out = torch.zeros(p.shape[0], nb, dtype=p.dtype, device=p.device)
    return out.index_add(1, r.reshape(-1), p.reshape(p.shape[0], -1))


def spectrum_mask_loss(phi_t: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
    r"""Match the masks' mean radial angular power spectra (non-degenerate mask transfer).

    ``loss = ‖p̄_s − p̄_t‖² / ‖p̄_t‖²`` with ``p̄`` the mean over the masks of
    :func:`radial_power_profile`.

    Reasoning: a CDP records ``|F(φ ⊙ x)|² = |Fφ ∗ Fx|²``: the mask's spectrum is the kernel
    that spreads the object's spectrum over the detector, and its power spectrum ``|Fφ|²``
    decides how far each object frequency is spread (how strongly neighbouring detector samples
    are coupled, hence how well-posed the phase retrieval is). That statistic transfers from
    ``L`` masks to one: it needs no pairing of masks, is invariant to their order, to a global
    phase and to translations (a shift only multiplies ``Fφ`` by a linear phase), and — unlike
    :func:`gram_mask_loss` — its value is not pinned by the unit modulus (Parseval fixes only
    the total, not its distribution over frequencies), so a random student (flat spectrum) gets a
    gradient of the size of the mismatch rather than one of relative size ``O(1/√n)``. The radial
    binning drops the speckle of each individual mask's spectrum (copying the exact speckle of
    one teacher mask would be the Gram degeneracy again) and keeps its scale content.
    """
    pt = radial_power_profile(phi_t).mean(0)
    ps = radial_power_profile(phi_s.to(phi_t.dtype) if phi_t.is_complex() else phi_s).mean(0)
    return ((ps - pt) ** 2).sum() / (pt ** 2).sum().clamp_min(1e-30)


# ----------------------------------------------------------------------------------------------
# feature loss
# ----------------------------------------------------------------------------------------------
def feature_loss(f_s: torch.Tensor, f_t: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Distance between feature maps ``(B, C, h, w)`` of equal shape: ``"mse"``, ``"l1"`` or
    ``"cosine"`` (``1 − cos`` between the per-pixel channel vectors, averaged)."""
    if kind not in FEATURE_KINDS:
        raise LossError(f"feature loss kind {kind!r} is not one of {FEATURE_KINDS}")
    if f_s.shape != f_t.shape:
        raise LossError(f"feature maps differ in shape: student {tuple(f_s.shape)} vs teacher "
                        f"{tuple(f_t.shape)}; use an adapter or a level both networks have")
    if kind == "mse":
        return F.mse_loss(f_s, f_t)
    if kind == "l1":
        return F.l1_loss(f_s, f_t)
    return (1.0 - F.cosine_similarity(f_s, f_t, dim=1, eps=1e-8)).mean()


# ----------------------------------------------------------------------------------------------
# distillation
# ----------------------------------------------------------------------------------------------
class DistillationLoss(nn.Module):
    """Knowledge-transfer terms from a frozen teacher (module docstring).

    Parameters
    ----------
    teacher, student
        :class:`~learning.systems.PhaseRetrievalModel`\\ s on the same object grid. The teacher
        is frozen here (``requires_grad_(False)``, ``eval()``) and kept out of this module's
        parameters and ``state_dict`` (only the adapters are trained and saved).
    mask_kind
        ``"gram"``, ``"spectrum"`` or ``"none"``.
    feature_levels, feature_kind
        Decoder levels (``k`` at ``H/2^k``) and the distance; ``[]`` disables the term.
    use_output
        Add the ``"output"`` term (student estimate vs teacher estimate).
    teacher_noise
        Noise of the teacher's own measurements of the same objects: ``"exact"`` (default),
        ``"differentiable"`` or ``"none"``; sample ``b`` uses seed ``seeds[b] + 7777`` (an
        independent stream, reproducible).
    """

    TEACHER_SEED_OFFSET = 7777

    def __init__(self, teacher, student, *, mask_kind: str = "spectrum",
                 feature_levels: Sequence[int] = (0,), feature_kind: str = "mse",
                 use_output: bool = False, teacher_noise: str = "exact"):
        super().__init__()
        if mask_kind not in MASK_LOSSES:
            raise LossError(f"distill.mask_loss = {mask_kind!r} is not one of {MASK_LOSSES}")
        if feature_kind not in FEATURE_KINDS:
            raise LossError(f"distill.feature_kind = {feature_kind!r} is not one of {FEATURE_KINDS}")
        if tuple(teacher.physics.in_shape) != tuple(student.physics.in_shape):
            raise LossError(f"teacher objects are {teacher.physics.in_shape}, student objects "
                            f"{student.physics.in_shape}; distil between systems of the same image size")
        self.mask_kind = mask_kind
        self.feature_kind = feature_kind
        self.use_output = bool(use_output)
        self.teacher_noise = teacher_noise
        self.feature_levels = [int(k) for k in feature_levels]
        ct = teacher.reconstructor.feature_channels
        cs = student.reconstructor.feature_channels
        for k in self.feature_levels:
            if not (0 <= k < len(ct)) or not (0 <= k < len(cs)):
                raise LossError(
                    f"distill.feature_levels asks for decoder level {k}, but the teacher has levels "
                    f"0 … {len(ct) - 1} and the student 0 … {len(cs) - 1} (level k at H/2^k); "
                    f"choose levels both networks have")
        self.adapters = nn.ModuleDict({
            str(k): (nn.Conv2d(cs[k], ct[k], 1) if cs[k] != ct[k] else nn.Identity())
            for k in self.feature_levels})
        teacher.requires_grad_(False)
        teacher.eval()
        self._teacher = [teacher]  # a list: not a submodule (no parameters, no state_dict)
        with torch.no_grad():
            if mask_kind != "none":
                self.register_buffer("teacher_masks", torch.polar(
                    torch.ones_like(teacher.physics.mask_phase()), teacher.physics.mask_phase()))
            else:
                self.teacher_masks = None

    @property
    def teacher(self):
        return self._teacher[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # never leaves eval mode
        return self

    def _apply(self, fn, *args, **kwargs):
        # Module.to(<real dtype>) casts complex buffers to that real dtype and drops the imaginary
        # part; the teacher's modulation is converted as its (…, 2) real view instead, so it stays
        # complex (complex128 after .to(torch.float64) or .double(), on the new device)
        tm = self._buffers.pop("teacher_masks", None)
        try:
            out = super()._apply(fn, *args, **kwargs)
        finally:
            if tm is not None:
                self._buffers["teacher_masks"] = tm
        if tm is not None:
            ri = fn(torch.view_as_real(tm))
            self._buffers["teacher_masks"] = fn(tm) if ri.is_complex() else torch.view_as_complex(ri.contiguous())
        self.teacher._apply(fn, *args, **kwargs)
        return out

    def mask_term(self, physics) -> torch.Tensor:
        """Gram: on the simulation grid (the student's pre-quantisation phase repeated over each
        SLM pixel). Spectrum: on the student's SLM-pixel grid — the teacher's modulation averaged
        over each ``u × u`` pixel block vs ``e^{iθ}`` per SLM pixel — so that only the frequencies
        the student can display are compared (on the simulation grid the pixel's sinc envelope
        makes a flat teacher spectrum unreachable: measured, the loss then stalls at ≈ 0.66)."""
        if self.mask_kind == "gram":
            th = physics.mask_phase()
            return gram_mask_loss(self.teacher_masks, torch.polar(torch.ones_like(th), th))
        u = physics.upsample
        tm = self.teacher_masks
        if u > 1:
            L, h, w = tm.shape
            tm = tm.reshape(L, h // u, u, w // u, u).mean(dim=(2, 4))
        th = physics.theta
        return spectrum_mask_loss(tm, torch.polar(torch.ones_like(th), th))

    def teacher_output(self, x: torch.Tensor, seeds):
        from .systems import sample_generators
        t = self.teacher
        with torch.no_grad():
            gens = None
            if self.teacher_noise != "none" and t.physics.noisy:
                if seeds is None:
                    raise LossError("the teacher's noisy measurements need the per-sample seeds "
                                    "of the student's batch (x_net.seeds)")
                gens = sample_generators([s + self.TEACHER_SEED_OFFSET for s in seeds], device=x.device)
            y_t = t.physics.measure(x, noise=self.teacher_noise, generators=gens)
            return t.reconstructor(y_t, t.physics)

    def forward(self, x_net, x, y, physics, model) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        if self.mask_kind != "none":
            out["mask"] = self.mask_term(physics)
        if self.feature_levels or self.use_output:
            t_out = self.teacher_output(x, x_net.seeds)
            if self.feature_levels:
                if not x_net.features:
                    raise LossError("feature distillation needs a student with a network (model.widths)")
                vals = [feature_loss(self.adapters[str(k)](x_net.features[k]), t_out.features[k],
                                     self.feature_kind) for k in self.feature_levels]
                out["feature"] = torch.stack(vals).mean()
            if self.use_output:
                out["output"] = recon_error(x_net.x, t_out.x.detach())
        return out
