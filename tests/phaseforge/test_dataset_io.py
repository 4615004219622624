"""``phaseforge simulate`` and the dataset layer together: hard kills resume to the same file,
compression choices, files written before the dataset-layer split, physics from the file."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from learning.errors import DatasetNotFoundError
from learning.h5io import CDPDataset, journal_path, open_cdp_file, physics_from_file, read_attributes
from learning.h5io.writer import KILL_ENV
from phaseforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "learning" / "data" / "format1_v010.h5"
SMALL = ["--set", "data.n=12", "--set", "data.size=16", "--set", "masks.n_masks=2", "--set", "batch_size=2",
         "--set", "sensor.read_noise_e=2.0", "--set", "sensor.bit_depth=12"]


def _datasets(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in ("objects", "measurements", "masks")}


def _same(a, b):
    for k in ("objects", "measurements", "masks"):
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def _cli(out, *extra, kill=None):
    """``phaseforge simulate`` in a fresh process; ``kill="event:count"`` makes it SIGKILL itself
    at that point of the writer (learning.h5io.writer.KILL_ENV)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    return subprocess.run([sys.executable, "-m", "phaseforge.cli", "simulate", "--out", str(out), "--no-progress",
                           *SMALL, *extra], env=env, capture_output=True, text=True, timeout=120)


def test_sigkill_at_any_point_resumes_to_an_identical_file(tmp_path):
    ref = tmp_path / "ref.h5"
    assert main(["simulate", "--out", str(ref), "--no-progress", *SMALL]) == 0
    out = tmp_path / "run.h5"
    tmp = tmp_path / "run.h5.tmp"
    # 12 samples in batches of 2: 6 batches, 4 chunks (2 objects + 2 measurements) per batch
    # (each kill is a real SIGKILL of a real process, at an exact point chosen through the
    # writer's test hook, so that "mid-write" is hit every time)
    kills = ["create:1",     # while creating the file, before anything is flushed
             "chunk:3",      # mid-batch: batch 0's objects and half its measurements are written
             "flush:2",      # batch 1 flushed to the file but not yet in the journal
             "salvage:1",    # while salvaging the previous hard-killed file
             "complete:1"]   # everything written, marked complete, not yet renamed
    for i, spec in enumerate(kills):
        r = _cli(out, *(["--resume"] if i else []), kill=spec)
        assert r.returncode == -signal.SIGKILL, (spec, r.returncode, r.stderr[-2000:])
        # a killed run never leaves a file that looks complete
        assert not out.exists(), spec
        with pytest.raises(DatasetNotFoundError, match="--resume"):
            open_cdp_file(out)
    r = _cli(out, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(complete)" in r.stdout
    assert not tmp.exists() and not journal_path(out).exists()
    _same(_datasets(out), _datasets(ref))
    assert read_attributes(out)["complete"] is True


def test_missing_output_folder_is_created(tmp_path, capsys):
    # one output-folder policy for every command (issue 18 item 12): a missing folder is created
    missing = tmp_path / "no" / "such"
    assert main(["simulate", "--out", str(missing / "d.h5"), "--no-progress", *SMALL]) == 0
    assert (missing / "d.h5").is_file()
    assert main(["simulate", "--out", str(tmp_path / "s.h5"), "--no-progress", "--shard", "0/1", *SMALL]) == 0
    assert main(["merge", str(tmp_path / "s.shard-0-of-1.h5"), "--out", str(tmp_path / "m" / "n" / "merged.h5")]) == 0
    assert (tmp_path / "m" / "n" / "merged.h5").is_file()


@pytest.mark.parametrize("compression", ["lzf", "zstd", "none"])
def test_compression_choices_store_the_same_data(tmp_path, compression):
    ref = tmp_path / "gzip.h5"
    assert main(["simulate", "--out", str(ref), "--no-progress", *SMALL]) == 0
    out = tmp_path / f"{compression}.h5"
    assert main(["simulate", "--out", str(out), "--no-progress", *SMALL,
                 "--set", f"data.compression={compression}"]) == 0
    _same(_datasets(out), _datasets(ref))
    assert read_attributes(out)["compression"] == compression
    assert read_attributes(ref)["compression"] == "gzip"
    with h5py.File(out, "r") as f:
        filters = f["measurements"].id.get_create_plist()
        names = [filters.get_filter(i)[0] for i in range(filters.get_nfilters())]
    expected = {"lzf": [h5py.h5z.FILTER_SHUFFLE, 32000], "zstd": [h5py.h5z.FILTER_SHUFFLE, 32015], "none": []}
    assert names == expected[compression]
    # a resume with another compression is refused, naming it
    part = tmp_path / "part.h5"
    assert main(["simulate", "--out", str(part), "--no-progress", *SMALL, "--max-batches", "1"]) == 0
    assert main(["simulate", "--out", str(part), "--no-progress", *SMALL, "--resume",
                 "--set", f"data.compression={compression}"]) == 2


def test_bad_compression_key_is_refused(capsys):
    assert main(["config", "--set", "data.compression=bzip9"]) == 2
    err = capsys.readouterr().err
    assert "data.compression" in err and "zstd" in err


def test_file_written_before_the_split_reads_and_resimulates_identically(tmp_path):
    # tests/learning/data/format1_v010.h5: written by phaseforge 0.1.0 (single-module h5io,
    # libver v110, no 'compression' attribute); its stored config simulated again today must give
    # the same datasets, byte for byte (same per-sample generators, same sensor draw)
    attrs = read_attributes(FIXTURE)
    assert attrs["software_version"] == "0.1.0" and "compression" not in attrs
    ds = CDPDataset(FIXTURE, return_index=True)
    x, y, k = ds[2]
    assert k == 2 and x.shape == (8, 8) and y.shape == (2, 16, 16) and ds.measurement_units == "DN"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(attrs["config_yaml"])
    out = tmp_path / "again.h5"
    assert main(["simulate", "--config", str(cfg_file), "--out", str(out), "--no-progress"]) == 0
    _same(_datasets(out), _datasets(FIXTURE))


def test_physics_from_file_reproduces_the_simulation(tmp_path):
    system, sensor = physics_from_file(FIXTURE)
    ds = CDPDataset(FIXTURE)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    assert system.n_masks == 2 and tuple(system.in_shape) == (8, 8)
    with torch.no_grad():
        p = sensor.photons(system.intensity(x))  # expected photons per pixel (budget 1000)
    torch.testing.assert_close(p.mean(dim=(-3, -2, -1)), torch.full((3,), 1000.0), rtol=1e-4, atol=0)
    # measured photons = Poisson(p) + N(0, 2²) + rounding: z-scores of the unsaturated pixels
    # have mean 0 and variance 1; over 1,536 pixels the standard errors are 0.026 and 0.036
    z = (sensor.dn_to_photons(y) - p) / torch.sqrt(p + 2.0 ** 2 + 1 / 12)
    ok = y < 4095
    assert ok.float().mean() > 0.95
    assert abs(float(z[ok].mean())) < 5 * 0.026
    assert abs(float(z[ok].var()) - 1) < 5 * 0.036
    # a file without a sensor (measurements in "arb") gives None, and the noiseless operator
    out = tmp_path / "clean.h5"
    assert main(["simulate", "--out", str(out), "--no-progress", "--set", "data.n=2", "--set", "data.size=8",
                 "--set", "sensor.enabled=false"]) == 0
    system, sensor = physics_from_file(out)
    assert sensor is None
    x, y = CDPDataset(out)[1]
    with torch.no_grad():
        torch.testing.assert_close(system.intensity(x[None])[0], y, rtol=1e-5, atol=1e-5)


def test_threaded_noise_draw_equals_one_sample_after_the_other():
    # each sample's exact Sensor.sample from its own generator: threads change nothing, bit for bit
    from learning.h5io import sample_generator
    from phaseforge.build import system_from_config
    from phaseforge.config import load
    from phaseforge.pipeline import make_simulator

    system = system_from_config(load(None, ["data.size=16", "masks.n_masks=3", "sensor.read_noise_e=2.0",
                                            "sensor.bit_depth=12"]))
    x = torch.polar(torch.ones(5, 16, 16), torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(1)))
    ys = []
    for threads in (1, 2, 3):
        sim = make_simulator(system, threads=threads)
        ys.append(sim(x, [sample_generator(7, i) for i in range(5)]))
        sim.close()
    with torch.no_grad():
        inten = system.intensity(x)
    seq = torch.stack([system.sensor.sample(inten[b], generator=sample_generator(7, b)) for b in range(5)])
    for y in ys:
        assert torch.equal(y, seq)
    assert not torch.equal(seq[0], seq[1])  # distinct generators per sample


def _file_samples(path):
    ds = CDPDataset(path)
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs), torch.stack(ys)


def test_simulate_honours_sensor_noise(tmp_path):
    # issue 18: with sensor.noise = none the file held exact Poisson draws (6.3e-3 off the model's
    # measure(noise='none')); now each sensor noise model is what the file stores. The noiseless
    # file equals expected DN to complex64 FFT + photon-budget round-off (measured 7e-6 relative;
    # tolerance 1e-4, while Poisson draws at ~1000 photons per pixel differ by ~3 %)
    small = ["--set", "data.n=3", "--set", "data.size=8", "--set", "masks.n_masks=2", "--set", "sensor.read_noise_e=2.0"]
    out = tmp_path / "none.h5"
    assert main(["simulate", "--out", str(out), "--no-progress", *small, "--set", "sensor.noise=none"]) == 0
    system, sensor = physics_from_file(out)
    assert sensor.noise == "none"
    x, y = _file_samples(out)
    with torch.no_grad():
        expected = sensor.expected_dn(system.intensity(x)).float()
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=0)
    # gaussian: the sensor's differentiable draw from each sample's own generator, bit for bit
    from learning.h5io import sample_generator
    from phaseforge.config import load

    out = tmp_path / "gauss.h5"
    assert main(["simulate", "--out", str(out), "--no-progress", *small, "--set", "sensor.noise=gaussian"]) == 0
    system, sensor = physics_from_file(out)
    x, y = _file_samples(out)
    seed = load(None, []).seed
    with torch.no_grad():
        inten = system.intensity(x.to(torch.complex64))
        draws = torch.stack([sensor.sample_differentiable(inten[i], generator=sample_generator(seed, i)) for i in range(3)])
    assert torch.equal(y, draws.float())


@pytest.mark.parametrize("model, extra, expect", [
    ("prdeep", ["--set", "noise.alpha=27"], {"model": "prdeep", "alpha": 27.0}),
    ("poisson", ["--set", "noise.alpha=81"], {"model": "poisson", "photons_per_unit": (255 / 81) ** 2}),
    ("gaussian", ["--set", "noise.sigma=0.01"], {"model": "gaussian", "sigma": 0.01}),
])
def test_benchmark_protocol_file_rebuilds_the_same_operator_and_noise(tmp_path, model, extra, expect):
    # the standard protocol: unit-free FFT, FFT detector order, real non-negative objects, a noise
    # model on the intensity; physics_from_file rebuilds operator + noise, and the stored draws are
    # that model's draws from each sample's own generator (exactly)
    from learning.h5io import read_params, sample_generator
    from optics.cdp import check_detector_order
    from optics.noise import make_noise_model

    out = tmp_path / f"{model}.h5"
    assert main(["simulate", "--out", str(out), "--no-progress", "--set", "data.n=3", "--set", "data.size=16",
                 "--set", "optics.method=fft", "--set", "optics.oversampling=1", "--set", "optics.detector_order=fft",
                 "--set", "data.encoding=amplitude", "--set", "sensor.enabled=false", "--set", f"noise.model={model}",
                 *extra]) == 0
    params = read_params(out)
    assert params["noise"] == expect
    assert params["optics"] == {"method": "fft", "oversampling": 1.0, "detector_order": "fft", "n_masks": 4}
    system, sensor = physics_from_file(out)
    assert sensor is None and system.unit_free and system.detector_order == "fft"
    assert system.noise_model == make_noise_model(model, **{k: v for k, v in expect.items() if k != "model"})
    x, y = _file_samples(out)
    with torch.no_grad():
        inten = system.intensity(x.to(torch.complex64))
    draws = torch.stack([system.noise_model.sample(inten[i], generator=sample_generator(0, i)) for i in range(3)])
    # not bit-equal: the file's modulation is the stored phase (float32 angle, mod 2π), which moves
    # |A x|² by ~1e-7 relative; the same generator then gives the same draw to that round-off
    # (another seed's draw differs by the noise itself, ≥ 1e-2 here)
    torch.testing.assert_close(y, draws.float(), rtol=1e-4, atol=1e-6)
    other = system.noise_model.sample(inten[0], generator=sample_generator(0, 1))
    assert float((other - y[0]).abs().max()) > 1e-2
    assert check_detector_order(y, system).looks_like == "fft"  # stored in the order the file says


def test_files_written_before_noise_models_read_as_centred_sensor_files():
    system, sensor = physics_from_file(FIXTURE)
    assert system.detector_order == "centered" and system.noise_model is None and not system.unit_free
    assert sensor is not None and sensor.noise == "poisson"
