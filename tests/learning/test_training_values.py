"""Values of the training module, function by function, on a toy model (fast: the mutation
selection of ``learning/training.py``).

The toy model is a 2×2 "system" with float64 parameters whose gradients are known in closed
form: mask phases ``theta`` (2×2, ``physics.theta``) and one network scalar ``w``; it returns
``x̂ = x·(1 + w)`` (times an optional ±ε phase pattern), so validation PSNRs and losses are
analytic, and it records every call (mode, batch, seeds, noise). AdamW's first step is
``p ← p·(1 − lr·wd) − lr·g/(|g| + 1e-8)``, i.e. ``lr·sign(g)`` up to 1e-8 relative: that is
what the optimiser checks below use. Tolerances: 1e-12 on float64 arithmetic, 1e-8 where
Adam's ε enters.
"""
import csv
import math
import re
import time
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import learning.training as T
from learning.training import (CheckpointError, TrainSettings, TrainingError, encoded_psnr, load_checkpoint,
                               save_checkpoint, step_seeds, train, validate)

pytestmark = pytest.mark.usefixtures("one_thread")

C128 = torch.complex128


class Toy(torch.nn.Module):
    """``model(x, seeds=…, noise=…) -> (|x|², out)`` with ``out.x = x·(1 + w + jitter·U)·rot``."""

    def __init__(self, *, theta0=1.0, w0=0.5, mask=True, net=True, eps=0.0, jitter=0.0):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.full((2, 2), float(theta0), dtype=torch.float64),
                                        requires_grad=mask)
        self.w = torch.nn.Parameter(torch.tensor(float(w0), dtype=torch.float64), requires_grad=net)
        self.physics = SimpleNamespace(theta=self.theta)
        self.mask, self.net, self.eps, self.jitter = mask, net, eps, jitter
        self.calls = []

    def mask_parameters(self):
        return [self.theta] if self.mask else []

    def network_parameters(self):
        return [self.w] if self.net else []

    def forward(self, x, *, seeds, noise):
        self.calls.append(dict(training=self.training, grad=torch.is_grad_enabled(), x=x.clone(),
                               seeds=list(seeds), noise=noise))
        scale = 1 + self.w
        if self.jitter and self.training:
            scale = scale + self.jitter * torch.rand((), dtype=torch.float64)  # global RNG
        rot = torch.ones(x.shape[-2:], dtype=C128)
        rot[0] = complex(math.cos(self.eps), math.sin(self.eps))
        rot[1] = complex(math.cos(self.eps), -math.sin(self.eps))
        return x.abs() ** 2, SimpleNamespace(x=x * scale * rot)


def objs(n, amp=None):
    """``n`` 2×2 unit-amplitude (or ``amp[i]``) objects, object i with phase 0.1·i (identifiable)."""
    a = torch.ones(n, dtype=torch.float64) if amp is None else torch.tensor(amp, dtype=torch.float64)
    ph = 0.1 * torch.arange(n, dtype=torch.float64)
    return (a * torch.exp(1j * ph))[:, None, None] * torch.ones(n, 2, 2, dtype=C128)


def st(**kw):
    base = dict(epochs=1, batch_size=2, lr_mask=0.1, lr_net=0.01, weight_decay=0.0, schedule="constant",
                progress=False, grad_norm_every=1)
    base.update(kw)
    return TrainSettings(**base)


def zgrad(p):
    """0 in value, gradient 1 per element: ``p − p.detach()`` summed."""
    return (p - p.detach()).sum()


class Scripted:
    """Loss whose term ``k`` at call ``s`` has value ``val[k][s]`` and gradient ``gth[k][s]`` per
    element of theta and ``gw[k][s]`` for w (lists; missing: 0 gradient)."""

    def __init__(self, val, gth=None, gw=None):
        self.val, self.gth, self.gw, self.n = val, gth or {}, gw or {}, 0

    def __call__(self, out, x, y, physics, model):
        s = self.n
        self.n += 1
        res = {}
        for k, v in self.val.items():
            t = torch.tensor(float(v[s]), dtype=torch.float64)
            if k in self.gth:
                t = t + self.gth[k][s] * zgrad(physics.theta)
            if k in self.gw:
                t = t + self.gw[k][s] * zgrad(model.w)
            res[k] = t
        return res


@pytest.fixture
def plots(monkeypatch):
    """Replace plot_history in the loop by a recorder (the figures are tested on their own)."""
    calls = []
    monkeypatch.setattr(T, "plot_history", lambda *a, **k: calls.append((a, k)))
    return calls


def _perm(seed, epoch, n):
    """The documented epoch order: randperm from a generator seeded with (seed, epoch)."""
    g = torch.Generator().manual_seed((seed * 7919 + epoch * 104_729 + 17) % 2 ** 63)
    return torch.randperm(n, generator=g)


def _seeds(seed, step, b):
    base = (seed * 1_000_003 + step * 65_537) % 2 ** 61
    return [(base * 31 + j * 2_654_435_761 + 1) % 2 ** 62 for j in range(b)]


# ----------------------------------------------------------------------------------------------
# seeds, order, dist_info
# ----------------------------------------------------------------------------------------------
def test_step_seeds_follow_the_documented_formula():
    """Pinned on purpose: the noise of every training run depends on these numbers, so a change
    silently changes every result of an existing configuration (hand-computed values)."""
    assert step_seeds(0, 0, 2) == [1, 2_654_435_762]
    base = 3 * 1_000_003 + 5 * 65_537
    assert step_seeds(3, 5, 3) == [base * 31 + 1, base * 31 + 2_654_435_762, base * 31 + 2 * 2_654_435_761 + 1]
    # both moduli are reached by large seeds / steps
    for seed in (123_456_789_012_345, 2 ** 61 - 1):
        big = step_seeds(seed, 0, 4)
        assert big == _seeds(seed, 0, 4) and all(0 <= s < 2 ** 62 for s in big)
        assert max(big) >= 2 ** 58 and (seed * 1_000_003 % 2 ** 61) * 31 >= 2 ** 62  # the reduction acts
    assert step_seeds(0, 2 ** 61, 1) == [1]          # step·65537 ≡ 0 mod 2^61
    assert step_seeds("7", 2.0, 1) == step_seeds(7, 2, 1)  # int() of each
    assert len(set(step_seeds(1, 2, 64))) == 64


def test_epoch_perm_is_randperm_of_the_seeded_generator():
    # (torch's CPU generator reads only the low 32 bits of a seed: the modulus 2^63 changes nothing)
    for seed, epoch in ((0, 0), (3, 2), (2 ** 62, 2 ** 62), (2 ** 63 - 1, 1)):
        assert torch.equal(T._epoch_perm(seed, epoch, 9), _perm(seed, epoch, 9))
    assert torch.equal(T._epoch_perm("3", 2.0, 9), _perm(3, 2, 9))
    assert not torch.equal(T._epoch_perm(0, 0, 9), T._epoch_perm(0, 1, 9))


def test_dist_info(monkeypatch):
    assert T.dist_info() == (0, 1)  # no process group
    import torch.distributed as dist
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 3)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    assert T.dist_info() == (3, 4)
    monkeypatch.setattr(dist, "is_available", lambda: False)
    assert T.dist_info() == (0, 1)


# ----------------------------------------------------------------------------------------------
# encoded_psnr, validate
# ----------------------------------------------------------------------------------------------
def test_encoded_psnr_amplitude_and_complex_values():
    """Amplitude: |x̂| = 1.1·|x| with a ±0.3 rad phase pattern → error 0.1, range 1 → 20 dB
    (1e-9; the complex PSNR of that x̂ is lower: |1.1·e^{±0.3i} − 1| > 0.1). Complex: a global
    phase alone is aligned away; the float64 reference keeps complex128 (error ≈ 1e-16, the
    200 dB cap) where a complex64 cast would leave ≈ 1e-8 (< 170 dB); x̂ = 1.1·x → 20 dB; a
    complex64 estimate is scored against the reference at its own precision (its own rounding
    of x is no error: 200 dB)."""
    x = objs(3)
    pm = torch.ones(2, 2, dtype=C128)
    pm[0], pm[1] = complex(math.cos(0.3), math.sin(0.3)), complex(math.cos(0.3), -math.sin(0.3))
    amp = encoded_psnr(x * 1.1 * pm, x, "amplitude")
    assert torch.allclose(amp, torch.full((3,), 20.0, dtype=torch.float64), atol=1e-9, rtol=0)
    assert torch.all(encoded_psnr(x * 1.1 * pm, x, "complex") < 12.0)
    ref = torch.full((2, 2, 2), 0.1, dtype=C128)  # 0.1 is not a float32: its rounding is ≈ 1.5e-9
    assert torch.all(encoded_psnr(ref.to(torch.complex64), ref, "complex") == 200.0)
    rot = x * complex(math.cos(0.7), math.sin(0.7))
    assert torch.all(encoded_psnr(rot, x, "complex") > 199.9)
    x64 = x.to(torch.complex64)
    assert torch.allclose(encoded_psnr(x64 * 1.1, x64, "complex"), torch.full((3,), 20.0, dtype=torch.float64),
                          atol=1e-4, rtol=0)
    assert torch.allclose(encoded_psnr(x * 1.1, x, "complex"), torch.full((3,), 20.0, dtype=torch.float64),
                          atol=1e-9, rtol=0)
    # phase, the range's order does not matter (absolute value)
    y = x.clone()
    y[:, 0] *= complex(math.cos(0.1), math.sin(0.1))
    y[:, 1] *= complex(math.cos(0.1), -math.sin(0.1))
    want = 20 * math.log10(math.pi / 0.1)
    for rng in ((0.0, math.pi), (math.pi, 0.0), (1.0, 1.0 + math.pi)):
        assert torch.allclose(encoded_psnr(y, x, "phase", rng), torch.full((3,), want, dtype=torch.float64),
                              atol=1e-9, rtol=0)


def test_validate_values_batches_seeds_and_mode():
    """x̂ = 1.5·x on objects of amplitude a_i: amplitude error 0.5·a_i → PSNR −20·log10(0.5·a_i);
    val_loss = mean over all pixels of |0.5·a_i|² (batches 2, 2, 1 weighted by their size);
    seeds seed·1000003 + index; eval mode, no grad, exact noise; the mode is restored."""
    a = [1.0, 0.2, 0.4, 0.1, 0.8]
    x = objs(5, a)
    m = Toy(w0=0.5)
    m.train()
    v = validate(m, x, batch_size=2, seed=7, encoding="amplitude")
    ps = sorted(-20 * math.log10(0.5 * ai) for ai in a)
    assert v["val_psnr"] == pytest.approx(sum(ps) / 5, abs=1e-9)
    assert v["val_psnr_median"] == pytest.approx(ps[2], abs=1e-9)
    assert v["val_loss"] == pytest.approx(sum(0.25 * ai ** 2 for ai in a) / 5, abs=1e-12)
    assert [c["x"].shape[0] for c in m.calls] == [2, 2, 1]
    assert [c["seeds"] for c in m.calls] == [[7_000_021, 7_000_022], [7_000_023, 7_000_024], [7_000_025]]
    assert all(not c["training"] and not c["grad"] and c["noise"] == "exact" for c in m.calls)
    assert m.training
    m.eval()
    validate(m, x, batch_size=8, seed=0, encoding="amplitude")
    assert not m.training
    assert m.calls[-1]["seeds"] == [0, 1, 2, 3, 4]
    # phase: ±ε pattern → 20·log10(range/ε), with the range passed (default (0, π))
    m = Toy(w0=0.0, eps=0.05)
    v = validate(m, objs(3), batch_size=3, seed=0, encoding="phase")
    assert v["val_psnr"] == pytest.approx(20 * math.log10(math.pi / 0.05), abs=1e-9)
    v = validate(m, objs(3), batch_size=3, seed=0, encoding="phase", phase_range_rad=(0.0, 2 * math.pi))
    assert v["val_psnr"] == pytest.approx(20 * math.log10(2 * math.pi / 0.05), abs=1e-9)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def test_not_plain_names_the_first_offending_entry():
    import numpy as np
    ok = {"a": [1, 2.0, "s", None, True, (torch.ones(1), {3: "x"})], 4: OrderedDict(b=-math.inf)}
    assert T._not_plain(ok, "state") is None
    assert T._not_plain(torch.ones(2), "s") is None
    assert T._not_plain(OrderedDict(a=np.float64(1)), "s") == "s['a'] (numpy.float64)"
    assert T._not_plain({1.5: 1}, "s") == "s key 1.5 (float)"
    assert T._not_plain({"a": 1, (1,): 2}, "s") == "s key (1,) (tuple)"
    assert T._not_plain({"a": {"b": [0, {"c": Path("p")}]}}, "st") == "st['a']['b'][1]['c'] (pathlib.PosixPath)"
    assert T._not_plain((1, 2, [3, object()]), "t") == "t[2][1] (builtins.object)"
    assert T._not_plain([1, {2, 3}], "l") == "l[1] (builtins.set)"
    # the first bad entry, in order; later entries are not looked at
    assert T._not_plain({"a": [1, Path("x")], "b": object()}, "s") == "s['a'][1] (pathlib.PosixPath)"
    assert T._not_plain([OrderedDict(), Path("y"), object()], "s") == "s[1] (pathlib.PosixPath)"


def test_save_checkpoint_message_atomic_and_format(tmp_path, monkeypatch):
    p = tmp_path / "sub" / "c.pt"
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(p, {"model": {}, "x": [Path("a")]})
    assert str(e.value) == (
        f"checkpoint {p}: state['x'][0] (pathlib.PosixPath) is not a tensor or plain data (dict, list, tuple, "
        f"str, int, float, bool, None); convert it (float(x), x.tolist(), str(path)) before saving, so the "
        f"checkpoint loads without unpickling objects")
    assert not p.exists()
    state = {"model": {"w": torch.arange(3.0)}, "n": 1}
    out = save_checkpoint(str(p), state)
    assert out == p and isinstance(out, Path)
    assert "format" not in state  # the caller's dict is not changed
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "phaseforge-checkpoint" and raw["n"] == 1
    assert sorted(x.name for x in p.parent.iterdir()) == ["c.pt"]
    # a write that fails leaves neither the final file changed nor a partial temporary file

    def fail(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, state)
    assert sorted(x.name for x in p.parent.iterdir()) == ["c.pt"]


def test_load_checkpoint_messages(tmp_path, monkeypatch):
    missing = tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(missing))
    assert str(e.value) == (f"checkpoint {missing} does not exist; train the run first "
                            f"(phaseforge train --out {tmp_path / 'run'}) or check the path")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "dir.pt")
    p = tmp_path / "x.pt"
    torch.save([1, 2], p)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(e.value) == f"{p} is not a phaseforge checkpoint (no format='phaseforge-checkpoint')"
    torch.save({"format": "other", "model": {}}, p)
    with pytest.raises(CheckpointError, match="is not a phaseforge checkpoint"):
        load_checkpoint(p)
    torch.save({"model": {}}, p)
    with pytest.raises(CheckpointError, match="is not a phaseforge checkpoint"):
        load_checkpoint(p)
    damaged = (f"{p}: entry 'model' is not a mapping of parameter names to tensors; the checkpoint is "
               f"damaged — delete it and retrain")
    for model in ({"w": 1.0}, {1: torch.ones(1)}, None, [torch.ones(1)]):
        torch.save({"format": "phaseforge-checkpoint", "model": model}, p)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(p)
        assert str(e.value) == damaged
    good = {"format": "phaseforge-checkpoint", "model": {"a": torch.ones(2), "b": torch.zeros(1)}, "k": [1]}
    torch.save(good, p)
    got = load_checkpoint(p)
    assert got["k"] == [1] and torch.equal(got["model"]["a"], torch.ones(2))
    # torch's message: the reason after "WeightsUnpickler error:", first non-empty line, ≤ 200 chars
    real_load = torch.load

    def raising(msg, exc=RuntimeError):
        def f(*a, **k):
            raise exc(msg)
        return f

    monkeypatch.setattr(torch, "load", raising("Weights only load failed.\nWeightsUnpickler error:\n\n  Bad op 7 \nmore"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(e.value) == (f"checkpoint {p} is corrupt or not a torch file (RuntimeError: Bad op 7); delete it "
                            f"and retrain, or resume from another checkpoint")
    monkeypatch.setattr(torch, "load", raising("  " + "y" * 300 + "\nz", ValueError))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert f"(ValueError: {'y' * 200}); delete" in str(e.value)
    # the reason after the FIRST marker (torch's text may quote the marker again further down)
    monkeypatch.setattr(torch, "load", raising("A\nWeightsUnpickler error: first\nWeightsUnpickler error: second"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert "(RuntimeError: first); delete" in str(e.value)
    monkeypatch.setattr(torch, "load", raising("\n\n"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert "(RuntimeError: ); delete" in str(e.value)
    # older torch names a refused class "Unsupported class …" without the global's path
    monkeypatch.setattr(torch, "load", raising("WeightsUnpickler error: Unsupported class numpy.core.X"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(e.value) == (
        f"checkpoint {p} holds a pickled Python object (a Python class), not only tensors and plain data; "
        f"loading it could run code, so it is refused and nothing in it was run. phaseforge checkpoints "
        f"never hold such objects: retrain the run, or ask whoever sent the file for a checkpoint written "
        f"by phaseforge")
    monkeypatch.setattr(torch, "load", raising("Unsupported global: GLOBAL my_mod.Cls was not allowed"))
    with pytest.raises(CheckpointError, match=r"^checkpoint .* holds a pickled Python object \(my_mod\.Cls\), not"):
        load_checkpoint(p)
    # weights-only, on the CPU: what torch.load is asked for
    seen = {}

    def spy(*a, **k):
        seen.update(k, args=a)
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(p)
    assert seen["weights_only"] is True and str(seen["map_location"]) == "cpu" and seen["args"] == (p,)


# ----------------------------------------------------------------------------------------------
# files and figures
# ----------------------------------------------------------------------------------------------
def test_write_csv_union_of_keys_in_order_and_empty_for_missing(tmp_path):
    rows = [{"a": 1, "b": None}, {"c": 2.5, "a": 3}, {}]
    T._write_csv(tmp_path / "h.csv", rows)
    text = (tmp_path / "h.csv").read_text()
    assert list(csv.reader(text.splitlines())) == [["a", "b", "c"], ["1", "", ""], ["3", "", "2.5"], ["", "", ""]]


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_plot_history_draws_the_logged_values(tmp_path, monkeypatch):
    """The figures' data (captured before saving): every loss/term curve per step on a log axis
    (values ≤ 1e-12 drawn at 1e-12), validation PSNR per epoch, and one mask-gradient curve per
    term over the steps that logged it. Layout (size, dpi, line width, legend font) is pinned."""
    saved = []

    def capture(fig, path, **kw):
        saved.append((fig, Path(path), kw))

    monkeypatch.setattr(T, "save_figure", capture)
    hist = [{"step": 5, "loss": 2.0, "term_recon": 0.0, "lr_mask": 0.1, "grad_mask_recon": 0.5, "grad_mask_mask": None},
            {"step": 6, "loss": 1.0, "term_recon": 1e-3, "lr_mask": 0.1, "grad_mask_recon": "", "grad_mask_mask": 0.0},
            {"step": 8, "loss": 0.5, "term_recon": 2e-3, "lr_mask": 0.1, "grad_mask_recon": 0.25, "grad_mask_mask": None}]
    val = [{"step": 1, "val_psnr": 10.0}, {"step": 3, "val_psnr": 12.5}]
    T.plot_history(str(tmp_path), hist, val, title="run A")
    assert [(p, kw) for _, p, kw in saved] == [(tmp_path / "curves.png", {"dpi": 100}),
                                               (tmp_path / "mask_grad_norms.png", {"dpi": 100})]
    fig, _, _ = saved[0]
    a0, a1 = fig.axes
    assert tuple(fig.get_size_inches()) == pytest.approx((10, 3.6))
    p0, p1 = a0.get_position(), a1.get_position()
    assert p0.x1 < p1.x0 and p0.y0 == pytest.approx(p1.y0)  # side by side
    assert fig._suptitle.get_text() == "run A"
    assert a0.get_yscale() == "log" and a0.get_xlabel() == "step" and a0.get_ylabel() == "weighted loss"
    lines = {ln.get_label(): ln for ln in a0.get_lines()}
    assert list(lines) == ["loss", "recon"]
    assert list(lines["loss"].get_xdata()) == [5, 6, 8] and list(lines["loss"].get_ydata()) == [2.0, 1.0, 0.5]
    assert list(lines["recon"].get_ydata()) == [1e-12, 1e-3, 2e-3]
    assert all(ln.get_linewidth() == 1 for ln in lines.values())
    leg = a0.get_legend()
    assert [t.get_text() for t in leg.get_texts()] == ["loss", "recon"] and leg.get_texts()[0].get_fontsize() == 8
    (vl,) = a1.get_lines()
    assert list(vl.get_xdata()) == [1, 3] and list(vl.get_ydata()) == [10.0, 12.5]
    assert vl.get_marker() == "o" and vl.get_linestyle() == "-"
    assert a1.get_xlabel() == "step" and a1.get_ylabel() == "validation PSNR (dB)"
    fig2, _, _ = saved[1]
    (ax,) = fig2.axes
    assert tuple(fig2.get_size_inches()) == pytest.approx((5.5, 3.6))
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step" and ax.get_ylabel() == "‖∂(weighted term)/∂θ‖"
    assert ax.get_title() == "gradient reaching the mask phases"
    g = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(g) == ["recon", "mask"]
    assert list(g["recon"].get_xdata()) == [5, 8] and list(g["recon"].get_ydata()) == [0.5, 0.25]
    assert list(g["mask"].get_xdata()) == [6] and list(g["mask"].get_ydata()) == [1e-16]
    assert all(ln.get_linewidth() == 1 for ln in g.values())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["recon", "mask"]
    assert ax.get_legend().get_texts()[0].get_fontsize() == 8
    # empty history: both figures still written, no curve, no legend on the gradient figure
    saved.clear()
    T.plot_history(tmp_path, [], [])
    assert len(saved) == 2 and saved[0][0].axes[0].get_lines() == [] and saved[0][0].axes[1].get_lines() == []
    assert saved[1][0].axes[0].get_legend() is None and saved[0][0]._suptitle.get_text() == ""
    import matplotlib.pyplot as plt
    plt.close("all")


def test_plot_history_writes_png_files(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt
    plt.close("all")
    keep = plt.figure()  # the caller's figure stays open
    matplotlib.use("pdf")
    T.plot_history(tmp_path, [{"step": 0, "loss": 1.0, "grad_mask_recon": 0.1}], [{"step": 1, "val_psnr": 3.0}])
    assert matplotlib.get_backend().lower() == "agg"
    from PIL import Image
    assert Image.open(tmp_path / "curves.png").size == (1000, 360)
    assert Image.open(tmp_path / "mask_grad_norms.png").size == (550, 360)
    assert plt.get_fignums() == [keep.number]  # both figures closed, only those
    plt.close(keep)


# ----------------------------------------------------------------------------------------------
# settings, schedule, all-reduce
# ----------------------------------------------------------------------------------------------
def test_lr_lambda_values():
    """Linear warm-up (s+1)/W for s < W, then 1 (constant) or ½(1 + cos(π·min(1, (s−W)/(N−W))))."""
    f = T._lr_lambda(st(schedule="cosine", warmup_steps=4), 12)
    for s in range(4):
        assert f(s) == (s + 1) / 4
    for s in (4, 6, 8, 12, 15):
        assert f(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * min(1.0, (s - 4) / 8))), abs=1e-15)
    assert f(4) == 1.0 and f(8) == pytest.approx(0.5, abs=1e-15) and f(12) == 0.0 and f(20) == 0.0
    f = T._lr_lambda(st(schedule="constant", warmup_steps=2), 10)
    assert [f(s) for s in (0, 1, 2, 9, 50)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    f = T._lr_lambda(st(schedule="cosine", warmup_steps=0), 4)
    assert [f(s) for s in range(5)] == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                                      0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0], abs=1e-15)
    f = T._lr_lambda(st(schedule="cosine", warmup_steps=-3), 2)  # negative warm-up: none
    assert f(0) == 1.0 and f(1) == pytest.approx(0.5, abs=1e-15)
    f = T._lr_lambda(st(schedule="cosine", warmup_steps=5), 5)  # no step after the warm-up: t = (s − W)/1
    assert f(4) == 1.0 and f(5) == 1.0 and f(6) == 0.0
    f = T._lr_lambda(st(schedule="cosine", warmup_steps=2.7), 6)  # int(warm-up)
    assert f(1) == 1.0 and f(2) == 1.0 and f(4) == pytest.approx(0.5, abs=1e-15)


def test_check_settings_messages_and_steps_per_epoch():
    assert T._check_settings(st(batch_size=4), 11, 1) == 2
    assert T._check_settings(st(batch_size=4), 4, 2) == 1
    assert T._check_settings(st(epochs=1, batch_size=1, lr_mask=0.0, lr_net=0.0), 1, 1) == 1
    cases = [
        (st(schedule="step"), 8, 1, "train.schedule = 'step' is not one of ('cosine', 'constant')"),
        (st(epochs=0), 8, 1, "train.epochs must be >= 1, got 0"),
        (st(batch_size=0), 8, 1, "train.batch_size must be >= 1, got 0"),
        (st(lr_mask=-0.1), 8, 1, "train.lr_mask must be a finite learning rate >= 0, got -0.1"),
        (st(lr_net=math.inf), 8, 1, "train.lr_net must be a finite learning rate >= 0, got inf"),
        (st(lr_net=math.nan), 8, 1, "train.lr_net must be a finite learning rate >= 0, got nan"),
        (st(batch_size=3), 8, 2, "train.batch_size = 3 is not divisible by the 2 processes; choose a global "
                                 "batch that is a multiple of WORLD_SIZE"),
        (st(batch_size=4), 3, 1, "only 3 training objects for train.batch_size = 4; raise train.n_train (or "
                                 "data.n) or lower the batch size"),
    ]
    for s, n, world, msg in cases:
        with pytest.raises(TrainingError) as e:
            T._check_settings(s, n, world)
        assert str(e.value) == msg


class FakeDist:
    """torch.distributed as seen by one process of ``world`` identical ones: all_reduce(SUM)
    multiplies by ``world``; records what is reduced and the barriers."""

    def __init__(self, monkeypatch, world):
        import torch.distributed as dist
        self.world, self.reduced, self.barriers = world, [], 0

        def all_reduce(t, op=None):
            assert op == dist.ReduceOp.SUM
            self.reduced.append(t)
            t.mul_(world)

        def barrier():
            self.barriers += 1

        monkeypatch.setattr(dist, "all_reduce", all_reduce)
        monkeypatch.setattr(dist, "barrier", barrier)


def test_allreduce_averages_and_skips_one_process(monkeypatch):
    fd = FakeDist(monkeypatch, 4)
    a, b = torch.tensor([1.0, 2.0]), torch.tensor(3.0)
    T._allreduce_([a, b], 1)
    assert fd.reduced == [] and torch.equal(a, torch.tensor([1.0, 2.0]))
    T._allreduce_([a, b], 4)
    assert fd.reduced == [a, b]
    assert torch.equal(a, torch.tensor([1.0, 2.0])) and torch.equal(b, torch.tensor(3.0))  # (4·v)/4


# ----------------------------------------------------------------------------------------------
# the loop, on the toy model
# ----------------------------------------------------------------------------------------------
def test_first_step_is_adamw_with_per_group_rates_and_decay(tmp_path, plots):
    """One step of loss 2·(3·Σθ − 2w) (weight 2): θ 1 → 1 − 0.1 (no decay on masks), w 0.5 →
    0.5·(1 − 0.01·0.5) + 0.01; the row, the validation (amplitude error w) and the checkpoint."""
    m = Toy(theta0=1.0, w0=0.5)
    loss = lambda out, x, y, physics, model: {"recon": 3.0 * physics.theta.sum() - 2.0 * model.w}  # noqa: E731
    s = st(epochs=1, batch_size=2, lr_mask=0.1, lr_net=0.01, weight_decay=0.5)
    t0 = time.perf_counter()
    res = train(m, [loss], {"recon": 2.0, "unused": 9.0}, objs(2), objs(3), s, tmp_path, encoding="amplitude",
                config={"model": {"a": 1}}, title="t1")
    wall = time.perf_counter() - t0
    assert torch.allclose(m.theta.detach(), torch.full((2, 2), 0.9, dtype=torch.float64), atol=1e-8, rtol=0)
    w1 = 0.5 * (1 - 0.01 * 0.5) + 0.01
    assert m.w.item() == pytest.approx(w1, abs=1e-9)
    (row,) = res["history"]
    assert set(row) == {"step", "epoch", "loss", "term_recon", "lr_mask", "lr_net", "grad_mask_recon"}
    assert row["step"] == 0 and row["epoch"] == 0
    assert row["loss"] == pytest.approx(22.0, abs=1e-12) and row["term_recon"] == pytest.approx(22.0, abs=1e-12)
    assert row["lr_mask"] == 0.1 and row["lr_net"] == 0.01
    assert row["grad_mask_recon"] == pytest.approx(2 * 3.0 * 2, abs=1e-12)  # ‖2·3·1‖ over 4 elements
    (v,) = res["val_history"]
    assert v["val_psnr"] == pytest.approx(-20 * math.log10(w1), abs=1e-6)
    assert v["val_loss"] == pytest.approx(w1 ** 2, abs=1e-9)
    assert v["epoch"] == 0 and v["step"] == 1 and 0 < v["seconds"] <= res["seconds"] <= wall
    assert res["epochs_done"] == 1 and res["steps"] == 1 and res["final"] == v and not res["stopped_early"]
    assert res["best_val_psnr"] == v["val_psnr"]
    assert set(res) == {"epochs_done", "steps", "final", "best_val_psnr", "seconds", "stopped_early", "history",
                        "val_history"}
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and ck["step"] == 1 and ck["history"] == res["history"]
    assert ck["val_history"] == res["val_history"] and ck["best"] == v["val_psnr"]
    assert ck["balance"] == {"ema": {}, "scale": {}} and ck["losses"] == []
    assert ck["config"] == {"model": {"a": 1}} and ck["settings"] == s.__dict__
    assert set(ck["model"]) == {"theta", "w"} and torch.equal(ck["model"]["w"], m.w.detach())
    g = ck["optimizer"]["param_groups"]
    assert [(x["name"], x["lr"], x["weight_decay"], x["params"]) for x in g] == [("mask", 0.1, 0.0, [0]),
                                                                              ("net", 0.01, 0.5, [1])]
    assert ck["scheduler"]["last_epoch"] == 1 and ck["scheduler"]["base_lrs"] == [0.1, 0.01]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 1
    rows = list(csv.DictReader((tmp_path / "history.csv").read_text().splitlines()))
    assert [r["loss"] for r in rows] == ["22.0"]
    assert list(csv.DictReader((tmp_path / "val.csv").read_text().splitlines()))[0]["step"] == "1"
    assert plots == [((tmp_path, res["history"], res["val_history"]), {"title": "t1"})]
    # config=None is stored as {}
    train(Toy(), [loss], {}, objs(2), objs(1), s, tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["config"] == {}


def test_global_rng_is_seeded_and_stored(tmp_path, plots):
    """The loop seeds torch's global generator with train.seed (the toy consumes none of it), so
    the stored RNG state is that of manual_seed(seed); a jittered toy consumes it."""
    torch.manual_seed(999)
    train(Toy(), [lambda *a: {"recon": zgrad(a[4].w)}], {}, objs(2), objs(1), st(seed=5), tmp_path)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    torch.manual_seed(5)
    assert torch.equal(ck["rng"]["torch"], torch.get_rng_state())


def test_schedule_order_seeds_and_noise_over_two_epochs(tmp_path, plots):
    """5 objects, batch 2 → 2 steps per epoch (the 5th object is left out of each epoch), 4 steps;
    warm-up 1 then cosine over the remaining 3. Batches follow the seeded epoch order, seeds
    step_seeds(seed, step), the noise setting; validation batch = the batch."""
    m = Toy(w0=0.0)
    tr, va = objs(5), objs(3) * 0.5
    loss = lambda out, x, y, physics, model: {"recon": zgrad(physics.theta) + zgrad(model.w)}  # noqa: E731
    s = st(epochs=2, batch_size=2, lr_mask=0.2, lr_net=0.02, schedule="cosine", warmup_steps=1, seed=11,
           noise="exact", val_seed=4)
    seen = []

    def record(out, x, y, physics, model):
        seen.append((x, y, physics, model))
        return {}

    res = train(m, [loss, record], {}, tr, va, s, tmp_path)
    for (x, y, physics, model), c in zip(seen, [c for c in m.calls if c["training"]]):
        assert torch.equal(x, c["x"]) and torch.equal(y, c["x"].abs() ** 2) and physics is m.physics and model is m
    assert len(seen) == 4
    f = [1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 3)), 0.5 * (1 + math.cos(2 * math.pi / 3))]
    assert [r["lr_mask"] for r in res["history"]] == pytest.approx([0.2 * x for x in f], abs=1e-15)
    assert [r["lr_net"] for r in res["history"]] == pytest.approx([0.02 * x for x in f], abs=1e-15)
    assert [r["step"] for r in res["history"]] == [0, 1, 2, 3]
    assert [r["epoch"] for r in res["history"]] == [0, 0, 1, 1]
    assert [(v["epoch"], v["step"]) for v in res["val_history"]] == [(0, 2), (1, 4)]
    train_calls = [c for c in m.calls if c["training"]]
    assert len(train_calls) == 4
    for step, c in enumerate(train_calls):
        perm = _perm(11, step // 2, 5)
        b = step % 2
        assert torch.equal(c["x"], tr[perm[2 * b:2 * b + 2]]), step
        assert c["seeds"] == _seeds(11, step, 2) and c["noise"] == "exact" and c["grad"]
    val_calls = [c for c in m.calls if not c["training"]]
    assert [c["seeds"] for c in val_calls] == [[4_000_012, 4_000_013], [4_000_014]] * 2
    # the ±lr·sign steps: θ, w have gradient 1 → each moves by −lr_s per step
    assert m.w.item() == pytest.approx(-0.02 * sum(f), abs=1e-9)
    assert m.theta[0, 0].item() == pytest.approx(1.0 - 0.2 * sum(f), abs=1e-8)


def test_grad_norm_logging_every_k_steps_and_per_term(tmp_path, plots):
    """Several terms: ‖∂(w_k·term_k)/∂θ‖ every k-th step — 2·3·2 for 'a' (weight 2, gradient 3 on
    4 elements), 0 for a constant term and for one that reaches only w; absent on other steps."""
    m = Toy()
    loss = lambda out, x, y, physics, model: {  # noqa: E731
        "a": 3.0 * physics.theta.sum(), "b": torch.tensor(5.0, dtype=torch.float64), "c": 2.0 * model.w}
    res = train(m, [loss], {"a": 2.0}, objs(6), objs(3), st(epochs=1, batch_size=1, grad_norm_every=2), tmp_path)
    assert [c["x"].shape[0] for c in m.calls if not c["training"]] == [1, 1, 1]  # validation batch = the batch
    h = res["history"]
    for r in h[::2]:
        assert (r["grad_mask_a"], r["grad_mask_b"], r["grad_mask_c"]) == (pytest.approx(12.0, abs=1e-12), 0.0, 0.0)
    assert all(not any(k.startswith("grad_mask") for k in r) for r in h[1::2])
    assert h[0]["term_b"] == 5.0 and h[0]["term_a"] == pytest.approx(24.0, abs=1e-12)
    assert h[0]["loss"] == pytest.approx(h[0]["term_a"] + h[0]["term_b"] + h[0]["term_c"], abs=1e-12)
    assert h[0]["term_c"] == pytest.approx(2.0 * 0.5, abs=1e-12)
    # one term: the gradient of the total; 0 when it does not reach θ
    res = train(Toy(), [lambda *a: {"a": 3.0 * a[3].theta.sum()}], {"a": 0.5}, objs(2), objs(1),
                st(epochs=1, batch_size=1, grad_norm_every=3), tmp_path / "b")
    assert [r.get("grad_mask_a") for r in res["history"]] == [pytest.approx(3.0, abs=1e-12), None]
    res = train(Toy(), [lambda *a: {"c": 2.0 * a[4].w}], {}, objs(1), objs(1), st(epochs=1, batch_size=1),
                tmp_path / "c")
    assert res["history"][0]["grad_mask_c"] == 0.0
    # never: grad_norm_every = 0, or no learnable mask
    for model, k in ((Toy(), 0), (Toy(mask=False), 1)):
        res = train(model, [loss], {}, objs(1), objs(1), st(epochs=1, batch_size=1, grad_norm_every=k),
                    tmp_path / f"n{k}")
        assert not any(key.startswith("grad_mask") for key in res["history"][0])


def test_balancing_ema_and_scale_values(tmp_path, plots):
    """raw norms recon 2·c_s, mask 2·d_s (gradient c_s, d_s on 4 elements); EMA 0.9·old + 0.1·new
    (the first value as it is); from step balance_warmup = 1 on, scale_mask = EMA_recon/EMA_mask,
    applied from the next step on; a term that never reaches θ (EMA 0) is not scaled."""
    c, d = [1.0, 2.0, 4.0], [1.0, 1.0, 2.0]
    loss = Scripted({"recon": [1.0] * 3, "mask": [10.0] * 3, "z": [0.0] * 3},
                    gth={"recon": c, "mask": d}, gw={"z": [1.0] * 3})
    s = st(epochs=1, batch_size=1, balance=True, balance_warmup=1)
    res = train(Toy(), [loss], {"mask": 0.5}, objs(3), objs(1), s, tmp_path)
    h = res["history"]
    ema_r = [2.0, 0.9 * 2.0 + 0.1 * 4.0, 0.9 * 2.2 + 0.1 * 8.0]
    ema_m = [2.0, 0.9 * 2.0 + 0.1 * 2.0, 0.9 * 2.0 + 0.1 * 4.0]
    scale = [1.0, 1.0, ema_r[1] / ema_m[1]]          # scale used at step s (set at the end of step s-1)
    for i in range(3):
        assert h[i]["term_mask"] == pytest.approx(0.5 * scale[i] * 10.0, abs=1e-12), i
        assert h[i]["grad_mask_mask"] == pytest.approx(0.5 * scale[i] * 2 * d[i], abs=1e-12), i
        assert h[i]["grad_mask_recon"] == pytest.approx(2 * c[i], abs=1e-12), i
        assert h[i]["grad_mask_z"] == 0.0
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["balance"]["ema"] == pytest.approx({"recon": ema_r[2], "mask": ema_m[2], "z": 0.0}, abs=1e-12)
    assert ck["balance"]["scale"] == pytest.approx({"mask": ema_r[2] / ema_m[2]}, abs=1e-12)
    # no "recon" term: nothing to balance against; before the warm-up: no scale either
    for val, warm in (({"a": [1.0] * 3, "b": [1.0] * 3}, 1), ({"recon": [1.0] * 3, "b": [1.0] * 3}, 3)):
        loss = Scripted(val, gth={k: [1.0, 2.0, 3.0] for k in val})
        train(Toy(), [loss], {}, objs(3), objs(1), st(epochs=1, batch_size=1, balance=True, balance_warmup=warm),
              tmp_path / f"w{warm}")
        ck = load_checkpoint(tmp_path / f"w{warm}" / "checkpoints" / "last.pt")
        assert ck["balance"]["scale"] == {} and set(ck["balance"]["ema"]) == set(val)
    # small gradients (EMA < 1) are balanced too
    loss = Scripted({"recon": [1.0] * 2, "m": [1.0] * 2}, gth={"recon": [1.0, 1.0], "m": [0.1, 0.1]})
    train(Toy(), [loss], {}, objs(2), objs(1), st(epochs=1, batch_size=1, balance=True, balance_warmup=0),
          tmp_path / "small")
    ck = load_checkpoint(tmp_path / "small" / "checkpoints" / "last.pt")
    assert ck["balance"]["ema"]["m"] == pytest.approx(0.2, abs=1e-12)
    assert ck["balance"]["scale"] == pytest.approx({"m": 2.0 / 0.2}, abs=1e-9)
    # one term: no EMA (nothing to balance against)
    loss = Scripted({"recon": [1.0] * 2}, gth={"recon": [1.0, 3.0]})
    train(Toy(), [loss], {}, objs(2), objs(1), st(epochs=1, batch_size=1, balance=True, balance_warmup=0),
          tmp_path / "one")
    ck = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert ck["balance"] == {"ema": {}, "scale": {}}


def test_gradient_clipping_bounds_the_global_norm(tmp_path, plots):
    """Gradients (θ: 25 on 4 elements, w: 0) then (θ: 0.5, w: 0): clipped to a global norm of 1
    both are unit-norm gradients in the same direction, so Adam moves θ by lr per step
    (2·lr in all); unclipped the second step is m̂/√v̂ = 0.677·lr for θ."""
    def run(clip, folder):
        loss = Scripted({"recon": [0.0, 0.0]}, gth={"recon": [25.0, 0.5]})
        m = Toy(theta0=0.0)
        train(m, [loss], {}, objs(2), objs(1), st(epochs=1, batch_size=1, lr_mask=0.1, grad_clip=clip), folder)
        return m.theta[0, 0].item()

    assert run(1.0, tmp_path / "a") == pytest.approx(-0.2, abs=1e-8)
    g = [50.0, 1.0]  # the norms over 4 elements
    m1 = 0.9 * 0.1 * g[0] + 0.1 * g[1]
    v1 = 0.999 * 0.001 * g[0] ** 2 + 0.001 * g[1] ** 2
    second = 0.1 * (m1 / 0.19) / math.sqrt(v1 / (1 - 0.999 ** 2))
    assert run(0.0, tmp_path / "b") == pytest.approx(-(0.1 + second), abs=1e-8)
    assert run(100.0, tmp_path / "c") == pytest.approx(-(0.1 + second), abs=1e-8)


def test_non_finite_loss_stops_before_the_step_with_the_documented_message(tmp_path, plots):
    m = Toy(theta0=1.0)
    loss = Scripted({"recon": [math.nan], "b": [2.0]}, gth={"recon": [1.0]})
    with pytest.raises(TrainingError) as e:
        train(m, [loss], {"b": 3.0}, objs(2), objs(1), st(epochs=2, batch_size=2), tmp_path)
    assert str(e.value) == (
        "non-finite loss at step 0 (epoch 0): {'loss': nan, 'recon': nan, 'b': 6.0}; training stopped before "
        "the optimiser step. The last good checkpoint (none yet) is intact. Lower train.lr_mask / "
        "train.lr_net, enable train.grad_clip, or check the objects for NaN")
    assert torch.equal(m.theta.detach(), torch.ones(2, 2, dtype=torch.float64))
    loss = Scripted({"recon": [1.0, 1.0, -math.inf]}, gth={"recon": [1.0] * 3})
    with pytest.raises(TrainingError) as e:
        train(Toy(), [loss], {}, objs(2), objs(1), st(epochs=3, batch_size=1), tmp_path / "b")
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    assert "non-finite loss at step 2 (epoch 1): {'loss': -inf, 'recon': -inf}; " in str(e.value)
    assert f"The last good checkpoint {last} is intact." in str(e.value)
    assert load_checkpoint(last)["step"] == 2


def test_best_checkpoint_only_on_strict_improvement(tmp_path, plots):
    """lr = 0: nothing moves, every epoch has the same PSNR → best.pt stays the first epoch's."""
    loss = lambda *a: {"recon": zgrad(a[4].w)}  # noqa: E731
    res = train(Toy(w0=0.1), [loss], {}, objs(2), objs(2), st(epochs=3, lr_mask=0.0, lr_net=0.0), tmp_path,
                encoding="amplitude")
    assert [v["val_psnr"] for v in res["val_history"]] == pytest.approx([20.0] * 3, abs=1e-9)
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3
    # w driven away from 0 (gradient −1): every epoch worse → best stays epoch 1; then better
    res = train(Toy(w0=0.1), [lambda *a: {"recon": -zgrad(a[4].w)}], {}, objs(2), objs(2),
                st(epochs=2, lr_net=0.01), tmp_path / "b", encoding="amplitude")
    assert res["best_val_psnr"] == res["val_history"][0]["val_psnr"] > res["val_history"][1]["val_psnr"]
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "best.pt")["epoch"] == 1
    res = train(Toy(w0=0.1), [lambda *a: {"recon": zgrad(a[4].w)}], {}, objs(2), objs(2),
                st(epochs=2, lr_net=0.01), tmp_path / "c", encoding="amplitude")
    assert load_checkpoint(tmp_path / "c" / "checkpoints" / "best.pt")["epoch"] == 2


class Adapter(torch.nn.Module):
    """A loss module with a trainable and a frozen parameter (like distillation adapters)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.frozen = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64), requires_grad=False)

    def forward(self, out, x, y, physics, model):
        return {"adapt": (self.a * out.x.abs()).mean() + physics.theta.pow(2).sum() + self.frozen}


def _jitter_run(tmp_path, folder, **kw):
    m = Toy(w0=0.2, jitter=0.1)
    ad = Adapter()
    # w is driven up (−mean|x̂| outweighs 0.3·a·mean|x̂|): validation gets worse, the best epoch is the first
    loss = lambda out, x, y, physics, model: {"recon": -out.x.abs().mean() + physics.theta.sum()}  # noqa: E731
    s = st(epochs=3, batch_size=2, schedule="cosine", warmup_steps=1, balance=True, balance_warmup=1, seed=3,
           weight_decay=0.1)
    res = train(m, [loss, ad], {"adapt": 0.3}, objs(4), objs(2), s, tmp_path / folder, encoding="amplitude", **kw)
    return m, ad, res


def _same(a, b):
    """Nested equality with bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_resume_restores_everything_exactly(tmp_path, plots):
    """Interrupted after epoch 1 and resumed = uninterrupted, bit for bit: parameters, adapter,
    history (the toy's jitter draws from the global RNG), balancing, best, optimizer."""
    m1, a1, r1 = _jitter_run(tmp_path, "a")
    m2, a2, part = _jitter_run(tmp_path, "b", stop_after_epoch=1)
    assert part["stopped_early"] and part["epochs_done"] == 1 and part["steps"] == 2
    assert len(plots) == 1  # no figures for an interrupted run
    m3, a3, r3 = _jitter_run(tmp_path, "b", resume=True)
    assert not r3["stopped_early"] and r3["epochs_done"] == 3 and r3["steps"] == 6
    assert torch.equal(m1.theta, m3.theta) and torch.equal(m1.w, m3.w)
    assert torch.equal(a1.a, a3.a) and a3.frozen.item() == 2.0 and a3.a.item() != 1.0
    assert r3["history"] == r1["history"]
    assert [v["val_psnr"] for v in r3["val_history"]] == [v["val_psnr"] for v in r1["val_history"]]
    assert r3["best_val_psnr"] == r1["best_val_psnr"] == r1["val_history"][0]["val_psnr"]
    assert len({r["loss"] for r in r1["history"]}) == 6
    c1, c3 = (load_checkpoint(tmp_path / f / "checkpoints" / "last.pt") for f in ("a", "b"))
    assert c1["balance"] == c3["balance"] and c1["balance"]["scale"]
    assert c1["best"] == c3["best"] and c1["epoch"] == c3["epoch"] == 3
    assert torch.equal(c1["rng"]["torch"], c3["rng"]["torch"])
    assert _same(c1["optimizer"], c3["optimizer"]) and c1["scheduler"] == c3["scheduler"]
    assert c1["optimizer"]["state"][0]["step"] == 6
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "best.pt")["epoch"] == 1
    # the resumed run's training calls started at step 2 (epoch 1), with that step's seeds
    assert [c["seeds"] for c in m3.calls if c["training"]][0] == _seeds(3, 2, 2)
    # resuming a finished run does nothing more and reports the stored state
    m4, _, r4 = _jitter_run(tmp_path, "b", resume=True)
    assert m4.calls == [] and r4["steps"] == 6 and r4["epochs_done"] == 3 and r4["history"] == r1["history"]
    assert r4["best_val_psnr"] == r1["best_val_psnr"] and r4["final"] == r3["final"]


def test_default_encoding_is_phase_over_0_to_pi(tmp_path, plots):
    """Validation PSNR of a ±ε phase error with train's defaults: phase, range (0, π) →
    20·log10(π/ε) (amplitude would read the 200 dB cap, range 2π 6.02 dB more)."""
    res = train(Toy(w0=0.0, eps=0.05), [lambda *a: {"r": zgrad(a[4].w)}], {}, objs(2), objs(2),
                st(lr_net=0.0, lr_mask=0.0), tmp_path)
    assert res["final"]["val_psnr"] == pytest.approx(20 * math.log10(math.pi / 0.05), abs=1e-9)
    res = train(Toy(w0=0.0, eps=0.05), [lambda *a: {"r": zgrad(a[4].w)}], {}, objs(2), objs(2),
                st(lr_net=0.0, lr_mask=0.0), tmp_path / "b", phase_range_rad=(0.0, 2 * math.pi))
    assert res["final"]["val_psnr"] == pytest.approx(20 * math.log10(2 * math.pi / 0.05), abs=1e-9)


def test_resume_of_a_checkpoint_without_validation_reports_none(tmp_path, plots):
    """A finished checkpoint whose validation list is empty (written by hand, or by a converter):
    nothing left to train, 0 epochs of validation reported, an empty final entry."""
    loss = lambda *a: {"r": zgrad(a[4].w)}  # noqa: E731
    train(Toy(), [loss], {}, objs(2), objs(1), st(), tmp_path)
    path = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["val_history"] = []
    save_checkpoint(path, state)
    res = train(Toy(), [loss], {}, objs(2), objs(1), st(), tmp_path, resume=True)
    assert res["epochs_done"] == 0 and res["final"] == {} and res["steps"] == 1


def test_stop_after_epoch_boundaries(tmp_path, plots):
    loss = lambda *a: {"recon": zgrad(a[4].w)}  # noqa: E731
    for stop, epochs, done, early in ((2, 3, 2, True), (3, 3, 3, False), (5, 3, 3, False), (None, 2, 2, False)):
        res = train(Toy(), [loss], {}, objs(2), objs(1), st(epochs=epochs), tmp_path / f"{stop}_{epochs}",
                    stop_after_epoch=stop)
        assert (res["epochs_done"], res["stopped_early"]) == (done, early), (stop, epochs)
    assert len(plots) == 3


def test_loss_module_parameters_join_the_network_group(tmp_path, plots):
    """Trainable parameters of loss modules are optimised with lr_net and the network's decay,
    frozen ones are not; a model without network trains only its masks; nothing → error."""
    ad = Adapter()
    m = Toy(net=False)
    ad.eval()
    m.eval()
    train(m, [ad], {}, objs(2), objs(1), st(lr_net=0.01, weight_decay=0.5), tmp_path)
    assert ad.training and m.training and m.calls[0]["training"]  # both in training mode
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    g = ck["optimizer"]["param_groups"]
    assert [(x["name"], len(x["params"]), x["weight_decay"]) for x in g] == [("mask", 1, 0.0), ("net", 1, 0.5)]
    assert ad.a.item() == pytest.approx(1.0 * (1 - 0.01 * 0.5) - 0.01, abs=1e-9)  # gradient mean|x̂| = 1.5 > 0
    assert m.w.item() == 0.5 and ad.frozen.item() == 2.0
    assert list(ck["losses"][0]) == ["a", "frozen"] and float(ck["losses"][0]["a"]) == ad.a.item()
    train(Toy(mask=False), [lambda *a: {"r": zgrad(a[4].w)}], {}, objs(2), objs(1), st(), tmp_path / "n")
    g = load_checkpoint(tmp_path / "n" / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [x["name"] for x in g] == ["net"]
    with pytest.raises(TrainingError, match="^nothing to train: the masks are fixed and the model has no network$"):
        train(Toy(mask=False, net=False), [lambda *a: {"r": torch.zeros(())}], {}, objs(2), objs(1), st(),
              tmp_path / "z")
    with pytest.raises(TrainingError, match="only 1 training objects"):
        train(Toy(), [lambda *a: {"r": torch.zeros(())}], {}, objs(1), objs(1), st(), tmp_path / "y")


def test_zero_grad_sets_to_none(tmp_path, plots):
    """A parameter that gets a gradient at step 0 only is left alone afterwards (its gradient is
    None, AdamW skips it); a zeroed gradient would let momentum and decay move it."""
    m = Toy(theta0=0.0)
    n = []

    def no_theta_after_0(out, x, y, physics, model):
        n.append(1)
        return {"recon": zgrad(model.w) + (zgrad(physics.theta) if len(n) == 1 else 0.0)}

    train(m, [no_theta_after_0], {}, objs(3), objs(1), st(epochs=1, batch_size=1, lr_mask=0.1), tmp_path)
    assert torch.allclose(m.theta.detach(), torch.full((2, 2), -0.1, dtype=torch.float64), atol=1e-8, rtol=0)


def test_progress_bar(tmp_path, plots, capsys):
    """Title, total and unit on stderr; the loss every 10 steps (the loss of step 9 here); a
    resumed run starts the bar at its step; progress=False prints nothing."""
    loss = Scripted({"recon": list(range(12))}, gth={"recon": [1.0] * 12})
    train(Toy(), [loss], {}, objs(6), objs(1), st(epochs=2, batch_size=1, progress=True), tmp_path, title="toy")
    err = capsys.readouterr().err
    assert re.search(r"(^|\r)toy: ", err) and "12/12" in err and re.search(r"(step/s|s/step)\]", err)
    assert "loss=9" in err and "loss=8" not in err and "loss=10" not in err
    capsys.readouterr()
    loss = Scripted({"recon": [1.0] * 12}, gth={"recon": [1.0] * 12})
    train(Toy(), [loss], {}, objs(6), objs(1), st(epochs=2, batch_size=1, progress=True), tmp_path / "r",
          stop_after_epoch=1)
    capsys.readouterr()
    train(Toy(), [loss], {}, objs(6), objs(1), st(epochs=2, batch_size=1, progress=True), tmp_path / "r",
          resume=True)
    err = capsys.readouterr().err
    assert re.search(r"(^|\r)train: ", err) and re.search(r"\b6/12\b", err) and "12/12" in err and " 0/12" not in err
    train(Toy(), [lambda *a: {"r": zgrad(a[4].w)}], {}, objs(2), objs(1), st(epochs=1, batch_size=1), tmp_path / "q")
    assert capsys.readouterr().err == ""


def test_data_parallel_rank_takes_its_share(tmp_path, plots, monkeypatch, capsys):
    """Rank 1 of 2 (faked process group, the other process identical): its half of each global
    batch with its half of the seeds, the model wrapped once (broadcast_buffers=False), the
    logged values and the loss modules' gradients all-reduced by hand — not the model's, DDP
    averages those —, a barrier per epoch, and no file written, nothing printed."""
    fd = FakeDist(monkeypatch, 2)
    wraps = []

    class FakeDDP:
        def __init__(self, module, **kw):
            wraps.append(kw)
            self.module = module

        def __call__(self, *a, **k):
            return self.module(*a, **k)

    import torch.nn.parallel
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    monkeypatch.setattr(T, "dist_info", lambda: (1, 2))
    m, ad = Toy(), Adapter()
    tr = objs(8)
    loss = lambda out, x, y, physics, model: {"recon": 3.0 * physics.theta.sum() + zgrad(model.w)}  # noqa: E731
    s = st(epochs=2, batch_size=4, seed=2, progress=True)
    res = train(m, [loss, ad], {}, tr, objs(3), s, tmp_path / "r1")
    assert wraps == [{"broadcast_buffers": False}]
    calls = [c for c in m.calls if c["training"]]
    assert len(calls) == 4
    for step, c in enumerate(calls):
        perm = _perm(2, step // 2, 8)
        b = step % 2
        assert torch.equal(c["x"], tr[perm[4 * b + 2:4 * b + 4]]), step
        assert c["seeds"] == _seeds(2, step, 4)[2:4]
    assert [c["x"].shape[0] for c in m.calls if not c["training"]] == [2, 1, 2, 1]
    assert fd.barriers == 2
    assert not (tmp_path / "r1").exists() and plots == [] and capsys.readouterr().err == ""
    # per step: the logged values (loss + 2 terms), θ's gradient per term (2), the adapter's grad
    shapes = [tuple(t.shape) for t in fd.reduced]
    assert shapes == [(3,), (2, 2), (2, 2), ()] * 4
    assert res["history"][0]["grad_mask_recon"] == pytest.approx(6.0, abs=1e-12)  # averaged: (2·6)/2
    assert res["history"][0]["term_recon"] == pytest.approx(12.0, abs=1e-12)
    # rank 0 writes the files; a model with nothing trainable is not wrapped
    monkeypatch.setattr(T, "dist_info", lambda: (0, 2))
    m0 = Toy(mask=False, net=False)
    ad0 = Adapter()
    fd.reduced.clear()
    train(m0, [ad0], {}, tr, objs(3), st(epochs=1, batch_size=4), tmp_path / "r0")
    assert wraps == [{"broadcast_buffers": False}]
    assert (tmp_path / "r0" / "checkpoints" / "last.pt").is_file() and len(plots) == 1
    assert (tmp_path / "r0" / "history.csv").is_file() and (tmp_path / "r0" / "val.csv").is_file()
    assert [tuple(t.shape) for t in fd.reduced] == [(2,), ()] * 2  # values, then the adapter's gradient
    assert torch.equal(m0.calls[0]["x"], tr[_perm(0, 0, 8)[0:2]])
