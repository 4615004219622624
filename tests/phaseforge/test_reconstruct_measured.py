"""`phaseforge reconstruct --measurements …`: measurements from anywhere, same outputs as a dataset."""
import json
import math

import h5py
import numpy as np
import pytest
import torch

from phaseforge.cli import main


def _write(tmp_path, *, L=4, size=16, oversampling=1, order="fft", n=2, seed=0, x=None):
    """Noiseless intensities of real non-negative objects (random, or ``x``) through random phase
    masks (numpy's own FFT)."""
    g = np.random.default_rng(seed)
    theta = g.uniform(0, 2 * math.pi, (L, size, size))
    x = 0.2 + 0.8 * g.random((n, size, size)) if x is None else np.asarray(x, dtype=np.float64)
    M = int(oversampling * size)
    field = np.zeros((n, L, M, M), complex)
    o = M // 2 - size // 2  # centred zero padding
    field[..., o:o + size, o:o + size] = np.exp(1j * theta) * x[:, None]
    y = np.abs(np.fft.fft2(np.fft.ifftshift(field, axes=(-2, -1)), norm="ortho")) ** 2
    if order == "centered":
        y = np.fft.fftshift(y, axes=(-2, -1))
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    np.save(tmp_path / "masks.npy", theta)
    np.save(tmp_path / "x.npy", x)
    return x, theta, y


def test_fft_order_measurements_with_truth_reconstruct_exactly(tmp_path):
    _write(tmp_path)
    rc = main(["reconstruct", "--measurements", str(tmp_path / "y.npy"), "--masks", str(tmp_path / "masks.npy"),
               "--truth", str(tmp_path / "x.npy"), "--detector-order", "fft", "--object", "nonnegative",
               "--solver", "er", "--n-iter", "300", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    rep = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # noiseless, L = 4 masks, non-negative objects: ER recovers them (float32 round-off floor ≈ 1e-6)
    assert max(rep["metrics"]["per_sample"]["relative_error"]) < 1e-3 and rep["n_failed"] == 0
    assert rep["geometry"]["method"] == "fft" and rep["object"] == "nonnegative"
    z = np.load(tmp_path / "out" / "reconstructions.npz")
    assert set(z.files) == {"x_hat", "x"} and (tmp_path / "out" / "reconstructions.png").stat().st_size > 0


def test_oversampled_centred_data_from_hdf5_and_a_geometry_yaml(tmp_path):
    x, theta, y = _write(tmp_path, oversampling=2, order="centered", L=2)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["entry/data"] = y
        f["entry/masks"] = theta
    (tmp_path / "geom.yaml").write_text("method: fft\noversampling: 2\ndetector_order: centered\n")
    rc = main(["reconstruct", "--measurements", f"{tmp_path / 'm.h5'}:entry/data", "--masks",
               f"{tmp_path / 'm.h5'}:entry/masks", "--truth", str(tmp_path / "x.npy"), "--geometry",
               str(tmp_path / "geom.yaml"), "--object", "nonnegative", "--solver", "er", "--n-iter", "400",
               "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    rep = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert max(rep["metrics"]["per_sample"]["relative_error"]) < 1e-2  # solved on the padded grid with support


def test_without_truth_the_residual_is_reported(tmp_path, capsys):
    _write(tmp_path)
    rc = main(["reconstruct", "--measurements", str(tmp_path / "y.npy"), "--masks", str(tmp_path / "masks.npy"),
               "--detector-order", "fft", "--object", "nonnegative", "--solver", "er", "--n-iter", "300",
               "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0 and "no ground truth" in capsys.readouterr().out
    rep = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "metrics" not in rep and max(rep["final_residual"]) < 1e-3
    assert np.load(tmp_path / "out" / "reconstructions.npz").files == ["x_hat"]


def test_a_known_noise_level_reaches_the_regularised_solver(tmp_path):
    x, theta, y = _write(tmp_path, size=32)
    g = torch.Generator().manual_seed(1)
    from optics.noise import PrDeepNoise
    yn = PrDeepNoise(27.0).sample(torch.from_numpy(y).float(), generator=g)
    np.save(tmp_path / "yn.npy", yn.numpy())
    rc = main(["reconstruct", "--measurements", str(tmp_path / "yn.npy"), "--masks", str(tmp_path / "masks.npy"),
               "--truth", str(tmp_path / "x.npy"), "--detector-order", "fft", "--object", "nonnegative",
               "--solver", "tv", "--set", "noise.model=prdeep", "--set", "noise.alpha=27",
               "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    rep = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert rep["noise"] == {"model": "prdeep", "alpha": 27.0}


@pytest.mark.parametrize("args, match", [
    (["--detector-order", "fft"], "needs --masks"),
    (["--masks", "MASKS", "--quantity", "intensity"], "detector_order"),   # order not given: named
    (["--masks", "MASKS", "--detector-order", "fft", "--method", "fraunhofer"], "needs pitch_m"),
    (["--masks", "MASKS", "--detector-order", "fft", "--oversampling", "2"], "detector window"),
])
def test_bad_measurement_input_is_one_named_error(tmp_path, capsys, args, match):
    _write(tmp_path)
    args = [a.replace("MASKS", str(tmp_path / "masks.npy")) for a in args]
    rc = main(["reconstruct", "--measurements", str(tmp_path / "y.npy"), *args, "--out", str(tmp_path / "o"),
               "--no-progress"])
    assert rc == 2 and match in capsys.readouterr().err


def test_amplitudes_are_named_and_geometry_options_are_refused_with_a_dataset(tmp_path, capsys):
    x, theta, y = _write(tmp_path, size=32)
    np.save(tmp_path / "amp.npy", np.sqrt(y))
    rc = main(["reconstruct", "--measurements", str(tmp_path / "amp.npy"), "--masks", str(tmp_path / "masks.npy"),
               "--detector-order", "fft", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "look like amplitudes" in capsys.readouterr().err
    rc = main(["reconstruct", "--data", str(tmp_path / "none.h5"), "--masks", str(tmp_path / "masks.npy"),
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "carries its own physics" in capsys.readouterr().err


def test_the_shipped_learned_model_reconstructs_protocol_measurements_and_refuses_others(tmp_path, capsys):
    from pathlib import Path
    model = Path(__file__).resolve().parents[2] / "data" / "models" / "cdp_unfolded_L4.pt"
    from learning.images import benchmark_images
    x, theta, y = _write(tmp_path, size=32, L=4, x=benchmark_images(32)[1][:2])  # natural images (camera, astronaut)
    from optics.noise import PrDeepNoise
    yn = PrDeepNoise(27.0).sample(torch.from_numpy(y).float(), generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "yn.npy", yn.numpy())
    common = ["--measurements", str(tmp_path / "yn.npy"), "--masks", str(tmp_path / "masks.npy"), "--truth",
              str(tmp_path / "x.npy"), "--detector-order", "fft", "--no-progress"]
    assert main(["reconstruct", *common, "--object", "nonnegative", "--model", str(model),
                 "--out", str(tmp_path / "learned")]) == 0
    assert main(["reconstruct", *common, "--object", "nonnegative", "--solver", "er", "--n-iter", "200",
                 "--out", str(tmp_path / "er")]) == 0
    learned = json.loads((tmp_path / "learned" / "metrics.json").read_text())
    er = json.loads((tmp_path / "er" / "metrics.json").read_text())
    assert learned["solver"] == "learned (cdp_unfolded_L4.pt)"
    # α = 27: the learned model denoises where ER fits the noise (benchmark: +5.6 dB at 128²)
    assert learned["metrics"]["summary"]["relative_error"]["median"] < er["metrics"]["summary"]["relative_error"]["median"]
    capsys.readouterr()
    assert main(["reconstruct", *common, "--object", "complex", "--model", str(model), "--out", str(tmp_path / "c")]) == 2
    assert "complex objects" in capsys.readouterr().err
    _write(tmp_path, size=32, L=2, n=2)  # two masks
    assert main(["reconstruct", "--measurements", str(tmp_path / "y.npy"), "--masks", str(tmp_path / "masks.npy"),
                 "--detector-order", "fft", "--object", "nonnegative", "--model", str(model), "--out",
                 str(tmp_path / "l2"), "--no-progress"]) == 2
    assert "2 masks (trained for 4)" in capsys.readouterr().err


def test_a_protocol_dataset_reconstructs_with_pnp_and_the_learned_model(tmp_path):
    """A dataset simulated with the standard protocol (unit-free FFT, prDeep noise, amplitude objects):
    TV/PnP get the file's noise level and the objects' realness and positivity, and every sweep of
    their schedule (no stagnation stop); both, and the shipped model, beat ER at α = 27."""
    from pathlib import Path
    data = tmp_path / "p.h5"
    assert main(["simulate", "--out", str(data), "--no-progress", "--set", "optics.method=fft", "--set",
                 "optics.oversampling=1", "--set", "sensor.enabled=false", "--set", "noise.model=prdeep", "--set",
                 "noise.alpha=27", "--set", "data.encoding=amplitude", "--set", "data.size=32", "--set", "data.n=2",
                 "--set", "data.split=test", "--set", "masks.n_masks=4"]) == 0
    model = Path(__file__).resolve().parents[2] / "data" / "models" / "cdp_unfolded_L4.pt"
    err = {}
    for name, extra in (("er", ["--solver", "er"]), ("pnp", ["--solver", "pnp", "--n-iter", "40"]),
                        ("learned", ["--model", str(model)])):
        assert main(["reconstruct", "--data", str(data), *extra, "--out", str(tmp_path / name), "--no-progress"]) == 0
        err[name] = json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]["summary"]["relative_error"]["median"]
    assert err["pnp"] < err["er"] and err["learned"] < err["er"], err


def test_single_snapshot_model_takes_the_known_noise_level_or_stops(tmp_path, capsys):
    """The shipped L = 1 model takes the noise level as an input: without a noise section
    ``reconstruct`` exits 2 naming the fix; with it, a smooth object is recovered (relative error
    0.015 measured) where error reduction on the same single snapshot fails (0.53 > 0.5: exit 1)."""
    from pathlib import Path
    model = Path(__file__).resolve().parents[2] / "data" / "models" / "cdp_unfolded_L1_4level.pt"
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    x = 0.5 + 0.4 * np.sin(2 * math.pi * xx) * np.cos(2 * math.pi * yy)
    _write(tmp_path, L=1, size=32, n=1, x=x[None])
    common = ["--measurements", str(tmp_path / "y.npy"), "--masks", str(tmp_path / "masks.npy"), "--truth",
              str(tmp_path / "x.npy"), "--detector-order", "fft", "--object", "nonnegative"]
    assert main(["reconstruct", *common, "--model", str(model), "--out", str(tmp_path / "a")]) == 2
    assert "--set noise.model=prdeep" in capsys.readouterr().err
    noise = ["--set", "noise.model=prdeep", "--set", "noise.alpha=9"]
    assert main(["reconstruct", *common, *noise, "--model", str(model), "--out", str(tmp_path / "b")]) == 0
    # error reduction on one snapshot fails (relative error > 0.5: exit 1), the learned model does not
    assert main(["reconstruct", *common, *noise, "--solver", "er", "--out", str(tmp_path / "c")]) == 1
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["n_failed"] == 0 and "cdp_unfolded_L1_4level" in m["solver"]  # measured: relative error 0.015
