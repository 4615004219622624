"""The CLI end to end on small embedded data: simulate, resume, shards + merge, reconstruct."""
import json

import h5py
import numpy as np
import pytest

from phaseforge.cli import main

SMALL = ["--set", "data.n=6", "--set", "data.size=16", "--set", "masks.n_masks=3", "--set", "batch_size=2",
         "--set", "sensor.mean_photons=5000"]


def _read(path):
    with h5py.File(path, "r") as f:
        return f["objects"][...], f["measurements"][...], f["masks"][...]


def test_simulate_resume_equals_uninterrupted(tmp_path, capsys):
    full = tmp_path / "full.h5"
    assert main(["simulate", "--out", str(full), "--no-progress", *SMALL]) == 0
    part = tmp_path / "part.h5"
    assert main(["simulate", "--out", str(part), "--no-progress", "--max-batches", "1", *SMALL]) == 0
    assert not part.exists() and (tmp_path / "part.h5.tmp").exists()
    assert "incomplete" in capsys.readouterr().out
    assert main(["simulate", "--out", str(part), "--no-progress", "--resume", *SMALL]) == 0
    for a, b in zip(_read(full), _read(part)):
        assert np.array_equal(a, b)
    assert (tmp_path / "full.h5.config.yaml").exists()
    # an existing output is refused without --overwrite, with a one-line error
    assert main(["simulate", "--out", str(full), "--no-progress", *SMALL]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_shards_merge_to_the_same_dataset(tmp_path):
    one = tmp_path / "one.h5"
    assert main(["simulate", "--out", str(one), "--no-progress", *SMALL]) == 0
    out = tmp_path / "sharded.h5"
    for i in range(3):
        assert main(["simulate", "--out", str(out), "--no-progress", "--shard", f"{i}/3", *SMALL]) == 0
    shards = sorted(tmp_path.glob("sharded.shard-*-of-3.h5"))
    assert len(shards) == 3
    assert main(["merge", *map(str, shards), "--out", str(out)]) == 0
    for a, b in zip(_read(one), _read(out)):
        assert np.array_equal(a, b)
    with h5py.File(out, "r") as f:
        assert f["measurements"].is_virtual


def test_reconstruct_writes_metrics_figure_and_config(tmp_path):
    data = tmp_path / "d.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", *SMALL, "--set", "sensor.enabled=false",
                 "--set", "masks.n_masks=6", "--set", "data.encoding=complex"]) == 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--data", str(data), "--solver", "wf", "--out", str(out), "--n-iter", "600",
                 "--no-progress"]) == 0
    rep = json.loads((out / "metrics.json").read_text())
    # noiseless, L = 6 random phase masks: Wirtinger flow recovers the complex objects
    assert rep["metrics"]["summary"]["relative_error"]["median"] < 1e-3
    assert (out / "reconstructions.png").stat().st_size > 10_000
    assert (out / "config.yaml").exists() and (out / "reconstructions.npz").exists()


def test_reconstruct_refuses_physics_overrides_of_a_dataset(tmp_path, capsys):
    data = tmp_path / "d.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", *SMALL]) == 0
    for key in ("sensor.gain_e_per_dn=2", "optics.z_m=0.2"):
        assert main(["reconstruct", "--data", str(data), "--out", str(tmp_path / "r"), "--n", "2",
                     "--no-progress", "--set", key]) == 2
        err = capsys.readouterr().err
        assert key.split("=")[0] in err and "would not apply" in err and "simulate a new dataset" in err
    # solver settings may change (exit 1: it ran, but 5 iterations do not reconstruct, which it says)
    assert main(["reconstruct", "--data", str(data), "--out", str(tmp_path / "r"), "--n", "2", "--no-progress",
                 "--set", "solver.n_iter=5"]) in (0, 1)
    assert "relative error" in capsys.readouterr().out


def test_a_bug_shows_its_traceback(monkeypatch, capsys):
    from phaseforge import pipeline

    def broken(*a, **k):
        raise ValueError("an internal inconsistency")  # a plain ValueError is not a user error

    monkeypatch.setattr(pipeline, "simulate", broken)
    assert main(["simulate", "--out", "x.h5"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug" in err and "an internal inconsistency" in err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.h5"), "--set", "optics.zz=1"]) == 2
    assert "unknown key 'optics.zz'" in capsys.readouterr().err
    assert main(["reconstruct", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "missing.h5" in err
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert main(["reconstruct", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.h5" in capsys.readouterr().err


def test_simulate_from_a_user_folder(tmp_path):
    from skimage.io import imsave

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        imsave(folder / f"im{i}.png", (rng.random((40, 40)) * 255).astype(np.uint8), check_contrast=False)
    out = tmp_path / "u.h5"
    assert main(["simulate", "--out", str(out), "--no-progress", "--set", f"data.source={folder}",
                 "--set", "data.split=all", "--set", "data.n=null", "--set", "data.size=16",
                 "--set", "data.encoding=amplitude", "--set", "masks.n_masks=2"]) == 0
    obj, meas, masks = _read(out)
    assert obj.shape == (5, 16, 16) and meas.shape == (5, 2, 32, 32) and masks.shape == (2, 16, 16)
    # amplitude encoding of [0, 1] images: real, non-negative, at most 1
    assert np.all(obj.imag == 0) and obj.real.min() >= 0 and obj.real.max() <= 1


def test_hio_and_gs_recover_nonnegative_objects_from_one_oversampled_cdp(tmp_path):
    # one random-phase CDP, 2× oversampling, real non-negative objects: HIO on the padded grid
    # with the object window as support and positivity (Fienup) recovers them
    data = tmp_path / "one.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", "--set", "data.n=3", "--set", "data.size=24",
                 "--set", "masks.n_masks=1", "--set", "sensor.enabled=false", "--set", "data.encoding=amplitude",
                 "--set", "data.split=test"]) == 0
    for solver in ("hio", "gs"):  # GS/ER also succeeds here: the random mask breaks the symmetries
        out = tmp_path / solver
        assert main(["reconstruct", "--data", str(data), "--solver", solver, "--out", str(out), "--n-iter", "800",
                     "--no-progress"]) == 0
        rep = json.loads((out / "metrics.json").read_text())
        assert rep["metrics"]["summary"]["relative_error"]["max"] < 1e-3, solver


def test_sensor_binning_uses_the_detector_plane_pitch(tmp_path, capsys):
    # Fraunhofer: detector samples are λz/(M·dx) apart, not optics.pitch_m
    det = 633e-9 * 0.1 / (32 * 8e-6)
    common = ["--no-progress", "--set", "data.n=2", "--set", "data.size=16", "--set", "masks.n_masks=2"]
    out = tmp_path / "binned.h5"
    assert main(["simulate", "--out", str(out), *common, "--set", f"sensor.pitch_m={2 * det!r}"]) == 0
    _, meas, _ = _read(out)
    assert meas.shape == (2, 2, 16, 16)  # 32² detector samples binned 2×2
    assert main(["simulate", "--out", str(tmp_path / "bad.h5"), *common, "--set", "sensor.pitch_m=5.5e-6"]) == 2
    assert "not an integer multiple of the detector-plane sample pitch" in capsys.readouterr().err
    assert main(["reconstruct", "--data", str(out), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "binned 2×2" in capsys.readouterr().err


# ---- issue 18: the README example, geometry check, reconstruct failures and overwrite, parsing ----
README_SIM = ["--set", "data.split=all", "--set", "optics.method=asm", "--set",
              "masks.n_masks=8", "--set", "sensor.bit_depth=12", "--set", "sensor.read_noise_e=2"]


def _image_folder(path, n=4):
    """``n`` of scikit-image's sample photographs as 8-bit PNGs (the README's "your own images")."""
    import skimage.data
    from PIL import Image

    from learning.images import to_unit_gray
    path.mkdir()
    for name in ("camera", "coins", "moon", "astronaut", "coffee", "chelsea")[:n]:
        a = (to_unit_gray(getattr(skimage.data, name)()) * 255).astype(np.uint8)
        Image.fromarray(a).save(path / f"{name}.png")
    return path


def test_readme_example_geometry_is_refused_with_the_numbers(tmp_path, capsys):
    # the old README example: z = 5 cm is 15.5 critical distances at 32² and 8 µm; the detector
    # records 1.7 % of the coded light (optics.sampling), and simulate now says so instead of
    # writing a dataset no solver can invert (relative errors 0.975 / 0.997 before)
    folder = _image_folder(tmp_path / "imgs", 2)
    out = tmp_path / "mine.h5"
    sim = ["--set", f"data.source={folder}", "--set", "data.n=2", *README_SIM, "--set", "optics.z_m=0.05"]
    assert main(["simulate", "--out", str(out), "--no-progress", *sim]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1.68 %" in err and "optics.z_m <=" in err and "data.size" in err
    assert not out.exists()
    # --allow-light-loss simulates it with a one-line warning; reconstruct then reports the failure,
    # names the geometry as the cause, and exits 1
    assert main(["simulate", "--out", str(out), "--no-progress", "--allow-light-loss", *sim]) == 0
    assert "phaseforge: warning:" in capsys.readouterr().err
    rec = tmp_path / "rec"
    assert main(["reconstruct", "--data", str(out), "--solver", "wf", "--out", str(rec), "--n-iter", "50",
                 "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "phaseforge: warning:" in captured.err and "1.68 %" in captured.err  # before the solve
    text = captured.out
    assert "FAILED on 2 of 2 samples" in text and "records only 1.68 %" in text
    rep = json.loads((rec / "metrics.json").read_text())
    assert rep["n_failed"] == 2 and rep["failed"] == [0, 1]
    assert rep["geometry"]["captured_fraction"] == pytest.approx(0.01678, abs=1e-4)


def test_readme_example_reconstructs_its_images(tmp_path, capsys):
    # README "Command line" example as written there (2 images instead of 200, HIO 100 iterations
    # instead of 1000 to keep the suite fast): z = 5 mm (1.5 critical distances), 91 % of the coded
    # light on the detector. Limits: WF median relative error < 0.2 (measured 0.14: WF's own noise
    # floor here, the same with 1000 iterations) and HIO < 0.1 (measured 0.044); a failure is ≈ 1
    folder = _image_folder(tmp_path / "imgs", 2)
    data = tmp_path / "data" / "mine.h5"   # the output folder does not exist: it is created
    assert main(["simulate", "--out", str(data), "--no-progress", "--set", f"data.source={folder}",
                 "--set", "data.n=2", *README_SIM, "--set", "optics.z_m=0.005"]) == 0
    for solver, extra, limit in (("wf", [], 0.2), ("hio", ["--set", "solver.n_iter=100"], 0.1)):
        out = tmp_path / "out" / f"mine_{solver}"
        assert main(["reconstruct", "--data", str(data), "--solver", solver, "--out", str(out), "--no-progress",
                     *extra]) == 0
        rep = json.loads((out / "metrics.json").read_text())
        assert rep["n_failed"] == 0
        assert rep["metrics"]["summary"]["relative_error"]["median"] < limit, solver
    assert "FAILED" not in capsys.readouterr().out


def test_reconstruct_refuses_to_overwrite_and_shows_iterations(tmp_path, capsys):
    data = tmp_path / "d.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", *SMALL]) == 0
    out = tmp_path / "r"
    # progress: the solver's iterations advance inside the (single) batch
    assert main(["reconstruct", "--data", str(data), "--out", str(out), "--n", "2", "--n-iter", "7",
                 "--solver", "er"]) in (0, 1)
    err = capsys.readouterr().err
    assert "error_reduction:" in err and "0/7" in err and "batch" in err  # an inner bar of n_iter steps
    before = (out / "metrics.json").read_text()
    assert main(["reconstruct", "--data", str(data), "--out", str(out), "--n", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a reconstruction" in err and "--overwrite" in err
    assert (out / "metrics.json").read_text() == before
    assert main(["reconstruct", "--data", str(data), "--out", str(out), "--n", "2", "--n-iter", "3",
                 "--no-progress", "--overwrite"]) in (0, 1)
    assert json.loads((out / "metrics.json").read_text())["n_iter"] == 3
    assert main(["reconstruct", "--data", str(data), "--out", str(tmp_path / "z"), "--n", "0",
                 "--no-progress"]) == 2


def test_negative_pairs_and_repeated_waivers_parse():
    from phaseforge.cli import _parser, join_negative_values

    p = _parser()
    argv = ["export", "slm", "d.h5", "--device", "x", "--out", "o.png", "--offset-px", "-7,11",
            "--carrier-period-px", "-8,0"]
    a = p.parse_args(join_negative_values(argv, p))
    assert a.offset_px == (-7, 11) and a.carrier_period_px == (-8.0, 0.0)
    a = p.parse_args(["export", "doe", "d.h5", "--out", "o", "--waive", "min_feature", "min_space",
                      "--waive", "max_height"])
    assert a.waive == ["min_feature", "min_space", "max_height"]
    # a negative *number* and other words are left alone
    assert join_negative_values(["--set", "optics.z_m=-1", "--n", "-3"], p) == ["--set", "optics.z_m=-1", "--n=-3"]


def test_one_line_errors_for_calibrate_pack_and_broken_yaml(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "c.h5"), "--out", str(tmp_path / "cal.h5"), "--starts", "0"]) == 2
    err = capsys.readouterr().err
    assert "--starts = 0" in err and "NaN" not in err
    assert main(["capture", "pack", str(tmp_path), "--metadata", str(tmp_path / "meta.yaml"),
                 "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err
    assert "metadata YAML does not exist" in err and "capture file" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("optics:\n  z_m: 0.1\n  method: [asm\n")
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:4:1:" in err and "not valid YAML" in err
    (tmp_path / "meta.yaml").write_text("frames: [a,\n")
    assert main(["capture", "pack", str(tmp_path), "--metadata", str(tmp_path / "meta.yaml"),
                 "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "meta.yaml:" in err and "not valid YAML" in err
