"""CALIBRATION.h5: contents, units, provenance, round trip into optics objects, bad files;
the input capture is never modified; simulate --calibration uses the fitted values."""
import h5py
import numpy as np
import pytest
import yaml

from calibration.calibfile import read_calibration
from calibration.capture import file_sha256
from calibration.errors import CalibrationFileError
from optics.sensor import Sensor
from optics.slm import PhaseLUT
from phaseforge.cli import main


def test_file_contents_units_and_provenance(calibrated):
    out, report, cap, before = calibrated
    assert file_sha256(cap) == before                      # the input is untouched
    cal = read_calibration(out)
    assert cal.attrs["capture_sha256"] == before
    assert cal.attrs["format"] == "phaseforge-calibration"
    with h5py.File(out, "r") as f:
        for g in ("camera", "fit"):
            for k, ds in f[g].items():
                if isinstance(ds, h5py.Dataset):
                    assert "units" in ds.attrs, f"/{g}/{k} has no units"
        assert f["fit/distance_m"].attrs["std"] > 0 and "nominal" in f["fit/distance_m"].attrs
    lut = cal.phase_lut()
    assert isinstance(lut, PhaseLUT) and lut.n_levels == 256
    s = cal.sensor(exposure_s=0.01)
    assert isinstance(s, Sensor) and s.gain_e_per_dn == pytest.approx(cal.camera["gain_e_per_dn"])
    for name in ("photon_transfer.png", "lut_fit.png", "registration_overlay.png", "residuals.png", "report.json"):
        assert (report / name).stat().st_size > 1000
    assert not list(out.parent.glob("*.tmp"))


def test_bad_calibration_files(tmp_path, sample_path):
    with pytest.raises(CalibrationFileError, match="another program"):
        read_calibration(sample_path)                       # a capture is not a calibration
    t = tmp_path / "t.h5"
    t.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CalibrationFileError, match="truncated"):
        read_calibration(t)
    e = tmp_path / "e.h5"
    with h5py.File(e, "w") as f:
        f.attrs["format"] = "phaseforge-calibration"
    with pytest.raises(CalibrationFileError) as ei:
        read_calibration(e)
    assert "/camera/gain_dn_per_e is missing" in str(ei.value) and "/lut/phase_rad is missing" in str(ei.value)


def test_simulate_uses_the_calibration(calibrated, tmp_path, capsys):
    out = calibrated[0]
    cal = read_calibration(out)
    data = tmp_path / "d.h5"
    rc = main(["simulate", "--calibration", str(out), "--out", str(data), "--no-progress",
               "--set", "data.n=2", "--set", "data.size=16", "--set", "masks.n_masks=2", "--set", "slm.enabled=true",
               "--set", "slm.pixel_pitch_m=16e-6", "--set", "sensor.read_noise_e=3.0"])
    assert rc == 0
    text = (tmp_path / "d.h5.config.yaml").read_text()
    assert "values from the calibration file" in text
    assert "optics.z_m  <-" in text and "sensor.read_noise_e  <-" not in text  # --set wins and is not claimed
    cfg = yaml.safe_load(text)
    assert cfg["optics"]["z_m"] == pytest.approx(cal.fit["distance_m"])
    assert cfg["sensor"]["gain_e_per_dn"] == pytest.approx(cal.camera["gain_e_per_dn"])
    assert cfg["sensor"]["read_noise_e"] == 3.0
    assert np.allclose(cfg["slm"]["lut"]["phase_rad"], cal.lut_phase_rad)
    assert cfg["slm"]["crosstalk_sigma_m"] == pytest.approx(cal.fit["crosstalk_sigma_m"])
    # what could not be applied is stated, with its value, in the config and on the console
    out = capsys.readouterr().out
    assert "applied: optics.z_m" in out and "overridden by --set: sensor.read_noise_e" in out
    for key in ("magnification", "rotation_rad", "shift_x_m", "shift_y_m", "background_e"):
        assert f"#   fit.{key} = " in text, key
    assert f"NOT applied: fit.magnification = {cal.fit['magnification']:.6g}, fit.rotation_rad = " in out
    assert "fit.shift_y_m" in out and "(bench camera placement" in out and "NOT applied: fit.background_e" in out
    assert "instrument.slm_pitch_m = 8e-06 m" in out


def test_training_uses_the_calibration(calibrated, tmp_path, capsys):
    """train --calibration: the run's config holds the calibrated physics and says so."""
    out = calibrated[0]
    cal = read_calibration(out)
    run = tmp_path / "student"
    rc = main(["train", "--config", "data/configs/student_e2e.yaml", "--calibration", str(out), "--out", str(run),
               "--set", "data.size=16", "--set", "train.n_train=8", "--set", "train.n_val=4", "--set", "train.epochs=1",
               "--set", "train.batch_size=8", "--set", "model.n_unrolled=1", "--set", "model.widths=[2,4]",
               "--no-progress"])
    assert rc == 0
    text = (run / "config.yaml").read_text()
    assert "values from the calibration file" in text and "optics.z_m  <-" in text
    cfg = yaml.safe_load(text)
    assert cfg["optics"]["z_m"] == pytest.approx(cal.fit["distance_m"])
    assert cfg["sensor"]["gain_e_per_dn"] == pytest.approx(cal.camera["gain_e_per_dn"])
    assert np.allclose(cfg["slm"]["lut"]["phase_rad"], cal.lut_phase_rad)
    assert "train: from CALIBRATION.h5 applied: optics.z_m" in capsys.readouterr().out
    # resuming keeps the run's own (calibrated) config; --calibration there is refused
    assert main(["train", "--out", str(run), "--resume", "--calibration", str(out), "--no-progress"]) == 2


PANEL = """
bench-slm:
  name: the sample bench's SLM (64 x 48 crop)
  width_px: 64
  height_px: 48
  pixel_pitch_m: 8.0e-6
  bit_depth: 8
  phase_range_rad: 6.283185307179586
  file_format: png8
  source: unit test
"""


def test_lut_hand_off_to_export_round_trip(calibrated, tmp_path, capsys):
    """calibrate → CALIBRATION_lut.csv (same table as /lut, bit for bit, with its wavelength) →
    export slm with that LUT → export verify against CALIBRATION.h5 passes. The sample SLM
    reaches only 1.9π at its 633 nm, so a 633 nm design is refused at export (range too small) and
    a 590 nm one (the LUT scaled by 633/590 covers 2π) passes."""
    import json
    import math

    from optics.lutfile import read_lut_file
    from phaseforge.calibration_jobs import lut_csv_path

    out = calibrated[0]
    csv = lut_csv_path(out)
    assert csv == out.with_name("CALIBRATION_lut.csv")
    cal = read_calibration(out)
    t = read_lut_file(csv)
    assert np.array_equal(t.phase_rad, cal.lut_phase_rad) and np.array_equal(t.gray, cal.lut_gray)
    assert np.array_equal(t.phase_std_rad, cal.lut_phase_std_rad)
    assert t.wavelength_m == cal.lut_wavelength_m == cal.instrument["wavelength_m"]
    dev = tmp_path / "devices.yaml"
    dev.write_text(PANEL)
    y, x = np.mgrid[0:16, 0:24]
    np.save(tmp_path / "m.npy", np.mod(((x - 12) ** 2 + (y - 8) ** 2) * 0.05, 2 * math.pi))
    base = ["export", "slm", str(tmp_path / "m.npy"), "--pitch-m", "8e-6", "--device", "bench-slm",
            "--device-file", str(dev), "--lut", str(csv)]
    assert main(base + ["--wavelength-m", "590e-9", "--out", str(tmp_path / "m590.png")]) == 0
    side = json.loads((tmp_path / "m590.png.json").read_text())
    assert side["lut"]["wavelength_m"] == pytest.approx(633e-9)            # taken from the LUT file
    assert side["lut"]["levels_rad"] == pytest.approx(list(cal.lut_phase_rad), abs=0)
    capsys.readouterr()
    assert main(["export", "verify", str(tmp_path / "m590.png"), "--lut", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    # at 633 nm the export itself refuses (no --verify needed); accepted with --rms-tol-rad, the
    # verification names the cause
    assert main(base + ["--wavelength-m", "633e-9", "--out", str(tmp_path / "m633.png")]) == 2
    assert "cannot reach the design's phases" in capsys.readouterr().err
    assert main(base + ["--wavelength-m", "633e-9", "--out", str(tmp_path / "m633.png"), "--rms-tol-rad", "1"]) == 0
    assert main(["export", "verify", str(tmp_path / "m633.png"), "--lut", str(out)]) == 3
    assert "LUT range too small" in capsys.readouterr().out
