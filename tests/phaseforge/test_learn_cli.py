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
