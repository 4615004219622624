"""The training loop: learning, exact resume, frozen teacher, NaN stop, data parallel."""
import math

import pytest
import torch

from learning.losses import DistillationLoss, ReconstructionLoss
from learning.training import (CheckpointError, TrainSettings, TrainingError, encoded_psnr, load_checkpoint, train,
                               validate)

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**kw):
    base = dict(epochs=2, batch_size=8, lr_mask=0.05, lr_net=3e-3, progress=False, grad_norm_every=1)
    base.update(kw)
    return TrainSettings(**base)


def test_short_run_lowers_loss_on_fixed_batch(tiny_model, phase_objects, tmp_path):
    x = phase_objects[0][:8]
    model = tiny_model(n_masks=1, widths=(8, 16))
    before = validate(model, x, batch_size=8, seed=3, encoding="phase")["val_loss"]
    res = train(model, [ReconstructionLoss()], {}, x, x, _settings(epochs=12, batch_size=8, lr_net=1e-2),
                tmp_path / "run")
    after = res["final"]["val_loss"]
    assert after < 0.7 * before, (before, after)
    h = res["history"]
    assert all(r["grad_mask_recon"] > 0 for r in h)  # the mask gets a gradient every step
    for f in ("history.csv", "val.csv", "curves.png", "mask_grad_norms.png", "checkpoints/last.pt",
              "checkpoints/best.pt"):
        assert (tmp_path / "run" / f).is_file(), f


def _distill_setup(tiny_model, norm="batch"):
    teacher = tiny_model(n_masks=2, widths=(4, 8), role="teacher", norm=norm, seed=1)
    teacher.train()
    # give the teacher non-trivial BatchNorm statistics
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    student = tiny_model(n_masks=1, widths=(2, 4), role="student", slm_upsample=2, norm=norm)
    return teacher, student


def test_resume_equals_uninterrupted_and_teacher_frozen(tiny_model, phase_objects, tmp_path):
    tr, va = phase_objects[0][:16], phase_objects[1][:8]
    st = _settings(epochs=2, batch_size=8, balance=True, balance_warmup=1)
    w = {"recon": 1.0, "mask": 0.5, "feature": 0.1, "output": 0.2}

    def run(folder, **kw):
        teacher, student = _distill_setup(tiny_model)
        ref = {k: v.clone() for k, v in teacher.state_dict().items()}
        d = DistillationLoss(teacher, student, mask_kind="spectrum", feature_levels=[0, 1], use_output=True)
        res = train(student, [ReconstructionLoss(), d], w, tr, va, st, tmp_path / folder, **kw)
        return student, d, teacher, ref, res

    s1, d1, t1, ref, r1 = run("a")
    # the teacher stayed frozen: weights and BatchNorm buffers bit-identical, still in eval mode
    for k, v in t1.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert not t1.training
    _, _, _, _, part = run("b", stop_after_epoch=1)
    assert part["stopped_early"] and part["epochs_done"] == 1
    s2, d2, _, _, r2 = run("b", resume=True)
    assert r2["epochs_done"] == 2
    for k, v in s1.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k]), k
    for k, v in d1.state_dict().items():
        assert torch.equal(v, d2.state_dict()[k]), k
    assert r1["history"] == r2["history"]
    assert {"grad_mask_recon", "grad_mask_mask", "grad_mask_feature", "grad_mask_output"} <= set(r1["history"][0])


def test_nan_loss_stops_with_last_checkpoint_intact(tiny_model, phase_objects, tmp_path):
    tr, va = phase_objects[0][:16], phase_objects[1][:8]
    calls = {"n": 0}

    def poisoned(x_net, x, y, physics, model):
        calls["n"] += 1
        v = (x_net.x.real - x.real).pow(2).mean()
        return {"bad": v * float("nan") if calls["n"] > 3 else v}  # step 3 = epoch 1

    model = tiny_model(n_masks=1)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3 .*last\.pt is intact"):
        train(model, [ReconstructionLoss(), poisoned], {}, tr, va, _settings(epochs=3), tmp_path / "r")
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and all(math.isfinite(r["loss"]) for r in state["history"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_and_missing_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)


class _RunsCode:
    """Pickles as ``exec(source)``: an unpickler that builds it runs ``source``."""

    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        import builtins
        return (builtins.exec, (self.source,))


def test_checkpoint_holding_a_pickled_object_is_refused_and_runs_nothing(tmp_path):
    """A checkpoint someone sent may hold a pickled callable; weights-only loading refuses it
    before building anything: no code runs (the payload would create a file)."""
    marker = tmp_path / "ran"
    payload = _RunsCode(f"open({str(marker)!r}, 'w').write('ran')")
    path = tmp_path / "evil.pt"
    torch.save({"format": "phaseforge-checkpoint", "model": {}, "history": [payload]}, path)
    with pytest.raises(CheckpointError, match=r"pickled Python object \(exec\).*refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # any class, not only builtins: named in the message
    torch.save({"format": "phaseforge-checkpoint", "model": {}, "x": _RunsCode}, path)
    with pytest.raises(CheckpointError, match=r"_RunsCode.*refused"):
        load_checkpoint(path)


def test_save_checkpoint_refuses_objects_that_only_pickle_could_restore(tmp_path):
    """Whatever train writes must load weights-only: a numpy scalar, a Path or an object in the
    state is refused at save time, naming the entry; nothing is written."""
    import numpy as np
    from pathlib import Path
    from learning.training import save_checkpoint
    for bad, name in ((np.float64(1.0), "numpy.float64"), (Path("a"), "PosixPath"), (object(), "object")):
        with pytest.raises(CheckpointError, match=rf"state\['history'\]\[0\]\['psnr'\] .*{name}"):
            save_checkpoint(tmp_path / "c.pt", {"model": {}, "history": [{"psnr": bad}]})
        assert not (tmp_path / "c.pt").exists()
    ok = {"model": {"w": torch.ones(2)}, "history": [{"psnr": 1.5, "k": None}], "t": (1, "a"), "best": -math.inf}
    state = load_checkpoint(save_checkpoint(tmp_path / "c.pt", ok))
    assert state["history"] == ok["history"] and state["best"] == -math.inf and torch.equal(state["model"]["w"], torch.ones(2))
    # a damaged structure (model not a name → tensor mapping) is refused on load
    torch.save({"format": "phaseforge-checkpoint", "model": [1, 2]}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="'model' is not a mapping"):
        load_checkpoint(tmp_path / "d.pt")


def test_two_process_data_parallel_equals_single_process(phase_objects, tmp_path):
    import torch.multiprocessing as mp
    from learn_helpers import ddp_worker, make_tiny_model
    tr, va = phase_objects[0][:16], phase_objects[1][:4]
    model = make_tiny_model(n_masks=1, widths=(4, 8), norm="group", slm_upsample=2)
    train(model, [ReconstructionLoss()], {}, tr, va, _settings(epochs=2, batch_size=8), tmp_path / "single")
    out = tmp_path / "ddp_state.pt"
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(out), tr, va, tmp_path / "ddp"), nprocs=2)
    ddp = torch.load(out, weights_only=True)
    for k, v in model.state_dict().items():
        # same global batch, gradients averaged: equal up to float32 summation order
        assert torch.allclose(v, ddp[k], rtol=1e-4, atol=1e-5), (k, float((v - ddp[k]).abs().max()))


def test_gradient_norm_balancing_equalises_mask_gradients(tiny_model, phase_objects, tmp_path):
    """Two terms with constant mask gradients a·1 and b·1: after the warm-up the balanced
    weight makes the 'mask' term send the recon term's gradient norm (times its weight)."""
    tr = phase_objects[0][:16]
    model = tiny_model(n_masks=1, widths=())

    def terms(x_net, x, y, physics, model):
        th = physics.theta
        return {"recon": 3.0 * th.sum(), "mask": 0.01 * th.sum()}

    st = _settings(epochs=2, batch_size=8, balance=True, balance_warmup=2)
    res = train(model, [terms], {"mask": 0.5}, tr, tr[:4], st, tmp_path / "r")
    h = res["history"]
    n = model.physics.theta.numel() ** 0.5
    assert h[0]["grad_mask_recon"] == pytest.approx(3.0 * n, rel=1e-5)
    assert h[0]["grad_mask_mask"] == pytest.approx(0.5 * 0.01 * n, rel=1e-5)  # before the warm-up
    assert h[-1]["grad_mask_mask"] == pytest.approx(0.5 * 3.0 * n, rel=1e-5)  # balanced


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_encoded_psnr_phase_has_the_absolute_value_of_the_phase_range(phase_objects, eps):
    """Absolute value, not a comparison: x̂ = x·e^{+iε} on one half of every object and x·e^{−iε}
    on the other makes ⟨x̂, x⟩ real and positive (equal halves cancel the phase), so the global-
    phase alignment is the identity and the phase error is ±ε everywhere: MSE = ε², PSNR =
    20·log10(π/ε) for the range (0, π). A range of 2π would read 20·log10(2) = 6.02 dB higher;
    a PSNR test that only compares two runs cannot see that. Tolerance 1e-6 dB: float64
    objects, so only the rounding of ε in complex128 remains."""
    x = phase_objects[0][:4].to(torch.complex128)
    h = x.shape[-2] // 2
    rot = torch.ones_like(x)
    rot[..., :h, :] = torch.polar(torch.ones(()), torch.tensor(eps)).to(x.dtype)
    rot[..., h:, :] = torch.polar(torch.ones(()), torch.tensor(-eps)).to(x.dtype)
    want = 20 * math.log10(math.pi / eps)
    got = encoded_psnr(x * rot, x, "phase", (0.0, math.pi))
    assert got.shape == (4,)
    assert torch.allclose(got, torch.full_like(got, want), atol=1e-6, rtol=0), (got, want)
    # the default range of encoded_psnr is the encoding's (0, π) too
    assert torch.allclose(encoded_psnr(x * rot, x, "phase"), got, atol=0, rtol=0)
    # and the range passed is the one used: (0, π/2) is 20·log10(2) dB lower
    half = encoded_psnr(x * rot, x, "phase", (0.0, math.pi / 2))
    assert torch.allclose(half, got - 20 * math.log10(2), atol=1e-6, rtol=0)


def test_distillation_mask_term_reaches_training_positive(tiny_model, phase_objects, tmp_path):
    """The "mask" term training minimises is +mask_term, measured in the loop's own history: with
    weight w and no balancing, term_mask at step 0 (before any update) = w·mask_term of the
    initial student, > 0 (a sign flip would make training maximise the mask distance)."""
    tr = phase_objects[0][:8]
    teacher = tiny_model(n_masks=4, widths=(4, 8), role="teacher", seed=1)
    student = tiny_model(n_masks=1, widths=(), role="student", slm_upsample=2)
    d = DistillationLoss(teacher, student, mask_kind="spectrum", feature_levels=[])
    with torch.no_grad():
        m0 = float(d.mask_term(student.physics))
    assert m0 > 0
    res = train(student, [ReconstructionLoss(), d], {"mask": 0.5}, tr, tr[:4],
                _settings(epochs=1, batch_size=8), tmp_path / "r")
    # float32 forward of the same masks: relative 1e-5
    assert res["history"][0]["term_mask"] == pytest.approx(0.5 * m0, rel=1e-5)
