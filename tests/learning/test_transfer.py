"""Unlabelled distillation (learning.transfer): pseudo-labels from the frozen teacher."""
import pytest
import torch

from learn_helpers import make_tiny_model
from learning.losses import LossError, recon_error
from learning.transfer import UnlabelledDistillation


def _pool(n=6, size=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    ph = torch.rand(n, size, size, generator=g) * torch.pi
    return torch.polar(torch.ones_like(ph), ph)


def test_term_matches_teacher_pseudo_labels_and_reaches_the_mask():
    teacher = make_tiny_model(n_masks=4, widths=(8, 16), role="teacher")
    student = make_tiny_model(n_masks=1, widths=(4, 8), slm_upsample=2)
    pool = _pool()
    loss = UnlabelledDistillation(teacher, pool)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert list(loss.parameters()) == [] and "objects" not in loss.state_dict()
    student.train()
    x = _pool(2, seed=9)
    seeds = [11, 12]
    y, out = student(x, seeds=seeds)
    term = loss(out, x, y, student.physics, student)["unlabelled"]
    # the same quantity by hand: the student and the teacher measure the picked pool objects
    idx = loss.pick(seeds)
    assert idx.tolist() == loss.pick(seeds).tolist() and all(0 <= i < 6 for i in idx.tolist())
    s_seeds = [s + loss.SEED_OFFSET for s in seeds]
    with torch.no_grad():
        _, s_out = student(pool[idx], seeds=s_seeds, noise="differentiable")
        # pseudo-labels: the teacher's reconstruction of pool object i from its capture with seed i + 7777
        _, t_out = teacher(pool, seeds=[i + loss.TEACHER_SEED_OFFSET for i in range(6)], noise="exact")
    assert torch.allclose(loss.labels, t_out.x, atol=1e-6)
    assert float(term.detach()) == pytest.approx(float(recon_error(s_out.x, t_out.x[idx])), rel=1e-5)
    (g,) = torch.autograd.grad(term, student.physics.theta)
    assert float(g.norm()) > 0  # the pseudo-label term sends a gradient to the student's mask
    # ground truth of the batch does not enter: replacing x changes nothing
    term2 = loss(out, torch.zeros_like(x), y, student.physics, student)["unlabelled"]
    assert float(term2.detach()) == pytest.approx(float(term.detach()), rel=1e-6)


def test_bad_pool_and_config_errors():
    teacher = make_tiny_model(n_masks=4, widths=(8, 16), role="teacher")
    with pytest.raises(LossError, match="use the same data.size"):
        UnlabelledDistillation(teacher, _pool(size=8))
    from phaseforge.config import ConfigError, load
    with pytest.raises(ConfigError, match="distill.n_unlabelled"):
        load(None, ["distill.unlabelled_weight=1.0"])
