r"""Stronger knowledge transfers than the paper's two losses (issue 8 §3).

:class:`UnlabelledDistillation` — distil the frozen teacher's **reconstructions of extra
unlabelled objects** into the student. A lab typically has many captures of objects without
ground truth; the multi-snapshot teacher reconstructs them well (it sees ``L`` times more
measurements), so its estimates are pseudo-labels for the single-snapshot student. Each call:

1. once, at construction: the teacher measures every pool object through **its** optics (exact
   noise, object ``i`` from seed ``i + 7777``: one capture per object, as in a lab) and
   reconstructs it — the pseudo-labels, stored and never recomputed;
2. each call takes ``B`` pool objects (``B`` = the labelled batch size; which ones is a
   deterministic function of the batch's noise seeds, so a resumed run draws the same);
3. the student measures them through its own optics (differentiable noise from per-sample
   seeds ``seed + 31337``, so gradients reach the mask phases) and reconstructs them;
4. returns ``{"unlabelled": recon_error(student estimate, pseudo-label)}`` (global-phase aligned
   MSE; the teacher's global phase is as arbitrary as the student's).

The ground truth of the pool never enters a loss: only measurements are simulated from it. Caveat
(simulation vs lab): the student's measurements of the pool objects are simulated through its
*current* mask, which in a lab needs either a fixed student mask (capture once) or hardware in the
loop; the teacher's side is exactly a lab's (one multi-snapshot capture per object). The pool must
not contain test objects; :func:`phaseforge.learn.train_run` takes it from the training split
(the objects after the ``n_train`` labelled ones).

Contract as every loss: ``loss(x_net, x, y, physics, model) -> {term: scalar}``; the frozen
teacher is held outside the module's parameters and ``state_dict`` and never leaves eval mode.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from .losses import LossError, recon_error

__all__ = ["UnlabelledDistillation"]


class UnlabelledDistillation(nn.Module):
    """Pseudo-label distillation on unlabelled objects (module docstring).

    Parameters
    ----------
    teacher
        A trained :class:`~learning.systems.PhaseRetrievalModel` (frozen here).
    objects
        ``(N, H, W)`` complex pool of unlabelled objects (only their measurements are used).
    teacher_noise
        Noise of the teacher's measurements: ``"exact"`` (default), ``"differentiable"``, ``"none"``.
    """

    SEED_OFFSET = 31337
    TEACHER_SEED_OFFSET = 7777

    def __init__(self, teacher, objects: torch.Tensor, *, teacher_noise: str = "exact"):
        super().__init__()
        if objects.ndim != 3 or objects.shape[0] < 1:
            raise LossError(f"unlabelled objects must be a non-empty (N, H, W) stack, got shape "
                            f"{tuple(objects.shape)}; set distill.n_unlabelled >= 1")
        if tuple(objects.shape[-2:]) != tuple(teacher.physics.in_shape):
            raise LossError(f"unlabelled objects are {tuple(objects.shape[-2:])} but the teacher images "
                            f"{tuple(teacher.physics.in_shape)} objects; use the same data.size")
        teacher.requires_grad_(False)
        teacher.eval()
        self._teacher = [teacher]  # not a submodule: no parameters, no state_dict
        self.register_buffer("objects", objects, persistent=False)
        self.teacher_noise = teacher_noise
        self.register_buffer("labels", self.pseudo_labels(teacher, objects, teacher_noise=teacher_noise),
                             persistent=False)

    @classmethod
    def pseudo_labels(cls, teacher, objects: torch.Tensor, *, teacher_noise: str = "exact",
                      batch_size: int = 32) -> torch.Tensor:
        """The teacher's reconstructions of ``objects`` from one capture each (object ``i``'s
        noise from seed ``i + TEACHER_SEED_OFFSET``), without gradient."""
        from .systems import sample_generators
        out = []
        with torch.no_grad():
            for i in range(0, objects.shape[0], batch_size):
                xb = objects[i:i + batch_size]
                gens = None
                if teacher_noise != "none" and teacher.physics.noisy:
                    gens = sample_generators([i + j + cls.TEACHER_SEED_OFFSET for j in range(xb.shape[0])],
                                             device=xb.device)
                y_t = teacher.physics.measure(xb, noise=teacher_noise, generators=gens)
                out.append(teacher.reconstructor(y_t, teacher.physics).x)
        return torch.cat(out)

    @property
    def teacher(self):
        return self._teacher[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return out

    def pick(self, seeds) -> torch.Tensor:
        """Indices into the pool for a batch with these noise seeds (deterministic)."""
        n = self.objects.shape[0]
        return torch.tensor([(int(s) * 2_654_435_761 + 12345) % n for s in seeds], dtype=torch.long)

    def forward(self, x_net, x, y, physics, model) -> Dict[str, torch.Tensor]:
        seeds = x_net.seeds
        if seeds is None:
            raise LossError("unlabelled distillation needs the per-sample noise seeds of the batch "
                            "(x_net.seeds); call the model with seeds=[...]")
        idx = self.pick(seeds).to(self.objects.device)
        noise = "differentiable" if model.training else "exact"
        _, s_out = model(self.objects[idx], seeds=[int(s) + self.SEED_OFFSET for s in seeds], noise=noise)
        return {"unlabelled": recon_error(s_out.x, self.labels[idx])}
