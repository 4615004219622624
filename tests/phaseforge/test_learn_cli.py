"""train / distill / evaluate from the CLI on tiny sizes: run folder, design file, bad input."""
import json

import numpy as np
import pytest
import torch

from optics.design import read_design
from phaseforge.cli import main
from phaseforge.config import ConfigError, load

TINY = ["--set", "data.size=16", "--set", "train.n_train=16", "--set", "train.n_val=4", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "--set", "model.n_unrolled=2", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(widths):
    return ["--set", f"model.widths={widths}"]


def test_train_distill_evaluate_end_to_end(tmp_path, capsys):
    t, s, d = tmp_path / "teacher", tmp_path / "student", tmp_path / "kd"
    assert main(["train", "--config", "data/configs/teacher.yaml", "--out", str(t), *TINY, *_tiny("[4,8]")]) == 0
    assert main(["train", "--config", "data/configs/student_e2e.yaml", "--out", str(s), *TINY, *_tiny("[2,4]")]) == 0
    # the paper's losses (mask + feature); the shipped default is the mask loss alone (issue 8)
    assert main(["distill", "--teacher", str(t), "--config", "data/configs/student_distill.yaml", "--out", str(d),
                 *TINY, *_tiny("[2,4]"), "--set", "distill.feature_weight=0.1"]) == 0
    for run in (t, s, d):
        for f in ("config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "history.csv", "val.csv",
                  "curves.png", "mask_grad_norms.png", "masks.png", "metrics.json", "design.h5"):
            assert (run / f).is_file(), (run, f)
    # the student's design: one mask, 4 levels, on the 16 µm SLM-pixel grid (8×8 pixels)
    des = read_design(d / "design.h5")
    assert des.phase_rad.shape == (1, 8, 8) and des.levels == 4
    assert des.pixel_pitch_m == pytest.approx(16e-6) and des.wavelength_m == pytest.approx(633e-9)
    assert np.all(np.isin(np.round(des.phase_rad / (np.pi / 2), 5), [0, 1, 2, 3]))
    tdes = read_design(t / "design.h5")
    assert tdes.phase_rad.shape == (4, 16, 16) and tdes.levels is None
    hist = (d / "history.csv").read_text().splitlines()[0]
    assert "grad_mask_mask" in hist and "grad_mask_feature" in hist and "grad_mask_recon" in hist
    capsys.readouterr()
    ev = tmp_path / "eval"
    assert main(["evaluate", str(t), str(s), str(d), "--out", str(ev), "--n", "4", "--classical-iters", "20",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "student" in out and "ER only" in out
    rep = json.loads((ev / "metrics.json").read_text())
    names = [r["name"] for r in rep["rows"]]
    assert names == [r + sfx for r in ("teacher", "student", "kd") for sfx in ("", " masks, ER only", " masks, WF only")]
    for f in ("table.csv", "reconstructions.png", "masks_cdps.png", "training.png"):
        assert (ev / f).is_file()
    # nothing is overwritten without --overwrite
    assert main(["train", "--config", "data/configs/teacher.yaml", "--out", str(t), *TINY]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # a teacher with another geometry is refused before training, naming the key
    assert main(["distill", "--teacher", str(t), "--config", "data/configs/student_distill.yaml",
                 "--out", str(tmp_path / "bad"), *TINY, *_tiny("[2,4]"), "--set", "optics.z_m=0.2"]) == 2
    err = capsys.readouterr().err
    assert "optics.z_m" in err and "teacher 0.1" in err
    assert not (tmp_path / "bad").exists()
    # feature levels the teacher's network lacks (teacher widths [4, 8]: levels 0 and 1)
    assert main(["distill", "--teacher", str(t), "--config", "data/configs/student_distill.yaml",
                 "--out", str(tmp_path / "bad"), *TINY, *_tiny("[2,4,8]"), "--set", "distill.feature_levels=[2]",
                 "--set", "distill.feature_weight=0.1"]) == 2
    assert "decoder level 2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # a corrupt checkpoint gives a clear error
    (t / "checkpoints" / "best.pt").write_bytes(b"garbage")
    assert main(["evaluate", str(t), "--out", str(tmp_path / "ev2"), "--n", "4", "--no-progress"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_train_on_user_folder_and_resume(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(folder / f"im{i:02d}.png")
    run = tmp_path / "run"
    args = ["train", "--config", "data/configs/student_e2e.yaml", "--out", str(run), *TINY, *_tiny("[2,4]"),
            "--set", f"data.source={folder}", "--set", "train.epochs=2"]
    assert main(args) == 0
    first = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["history"]
    # resume of a finished run reuses its config.yaml and changes nothing
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["history"] == first
    # resuming with a different configuration is refused, naming the key
    assert main([*args, "--resume", "--set", "train.lr_net=0.5"]) == 2
    assert "train.lr_net" in capsys.readouterr().err


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="distill.feature_levels\\[0\\]"):
        load(None, ["model.widths=[8,16]", "distill.feature_levels=[2]"])
    with pytest.raises(ConfigError, match="'train.lr_masks'"):
        load(None, ["train.lr_masks=0.1"])
    with pytest.raises(ConfigError, match="model.norm"):
        load(None, ["model.norm=layer"])
    with pytest.raises(ConfigError, match="distill.mask_loss"):
        load(None, ["distill.mask_loss=copy"])


def test_train_on_dataset_objects_checks_size(tmp_path, capsys):
    data = tmp_path / "d.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", "--set", "data.size=16", "--set", "data.n=40",
                 "--set", "data.split=all", "--set", "masks.n_masks=1"]) == 0
    run = tmp_path / "run"
    base = ["train", "--config", "data/configs/student_e2e.yaml", *TINY, *_tiny("[2,4]"),
            "--set", f"data.source={data}", "--set", "train.n_val=2"]
    assert main([*base, "--out", str(run)]) == 0
    assert (run / "design.h5").is_file()
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--set", "data.size=32"]) == 2
    assert "data.size" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


# ---- issue 18: evaluate's checkpoint, default test set, phase range, image folders; figures ----
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("runs") / "teacher"
    assert main(["train", "--config", "data/configs/teacher.yaml", "--out", str(run), *TINY, *_tiny("[2,4]"),
                 "--set", "masks.n_masks=2"]) == 0
    torch.set_num_threads(n)
    return run


EV = ["--classical-iters", "3", "--classical", "er", "--no-progress"]


def test_evaluate_never_swaps_the_checkpoint_silently(tiny_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "best.pt").unlink()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e"), "--n", "2", *EV]) == 2
    err = capsys.readouterr().err
    assert "no checkpoints/best.pt" in err and "--checkpoint last" in err
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e"), "--n", "2", "--checkpoint", "last", *EV]) == 0
    rep = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert rep["checkpoints"][str(run)]["file"].endswith("last.pt")
    assert rep["checkpoints"][str(run)]["checkpoint"] == "last"
    # --n 0 is an error, not "everything"
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e0"), "--n", "0", "--checkpoint", "last", *EV]) == 2
    assert "--n = 0" in capsys.readouterr().err


def test_default_test_set_is_the_same_for_every_run():
    from phaseforge.learn import DEFAULT_TEST_OBJECTS, _test_objects
    a = _test_objects(None, load(None, ["data.size=16", "seed=0"]), None)
    b = _test_objects(None, load(None, ["data.size=16", "seed=7"]), None)
    # 64 objects (the distillation benchmark's test set), independent of the run's own seed
    assert a.shape == (DEFAULT_TEST_OBJECTS, 16, 16) == (64, 16, 16)
    assert torch.equal(a, b)
    from phaseforge.learn import load_objects
    assert torch.equal(a, load_objects(load(None, ["data.size=16", "seed=0"]), "test", 64, "n"))


def test_evaluate_refuses_another_phase_range_and_takes_an_image_folder(tiny_run, tmp_path, capsys):
    data = tmp_path / "d.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", "--set", "data.size=16", "--set", "data.n=3",
                 "--set", "data.split=test", "--set", "data.phase_range_rad=[0, 6.283185307179586]"]) == 0
    assert main(["evaluate", str(tiny_run), "--data", str(data), "--out", str(tmp_path / "e"), *EV]) == 2
    err = capsys.readouterr().err
    assert "[0, 6.283]" in err and "[0, 3.142]" in err and "data.phase_range_rad" in err
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray((rng.random((24, 20)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    ev = tmp_path / "ev"
    assert main(["evaluate", str(tiny_run), "--data", str(folder), "--out", str(ev), *EV]) == 0
    rep = json.loads((ev / "metrics.json").read_text())
    assert rep["n_objects"] == 3 and rep["data"] == str(folder)
    assert rep["checkpoints"][str(tiny_run)]["checkpoint"] == "best"


def test_figures_keep_labels_whole_full_curves_and_fixed_amplitude_scale(tiny_run, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from phaseforge.figures import reconstruction_figure
    from phaseforge.learn import results_figure, run_curves

    cfg = load(None, ["data.size=16"])
    x = torch.polar(torch.ones(2, 16, 16), torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0)))
    name = "student_distill_with_a_long_name masks, WF only"
    res = {name: {"row": {"psnr_mean": 31.24}, "examples": x}}
    fig = results_figure(res, x, cfg)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in ax.texts]
    assert any("31.2 dB" in t.get_text() for t in texts)
    for t in texts:  # every row label lies inside the figure (none is cut off)
        bb = t.get_window_extent(r)
        assert bb.x0 >= 0 and bb.x1 <= fig.bbox.x1, t.get_text()
    # phase-only objects: |x| = 1 ± rounding is shown on a fixed [0, 1] scale, with a colour bar
    from learning.metrics import evaluate
    fig = reconstruction_figure(x, x, evaluate(x, x), title="t", n_show=2)
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 8 + 4  # 4 × 2 panels + one colour bar per row
    # training curves come from the run's CSV files, not from the (possibly earlier) checkpoint
    h, v = run_curves(tiny_run, {"history": [], "val_history": []})
    assert len(v) == 1 and v[0]["step"] == 2 and len(h) == 2 and isinstance(v[0]["val_psnr"], float)
    state_only = run_curves(tmp_path, {"history": [{"step": 0}], "val_history": []})
    assert state_only == ([{"step": 0}], [])
