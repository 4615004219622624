"""Shared fixtures: the committed sample capture and ONE calibration of it (run once per
session through the CLI, ~20 s on a busy 2-core machine), reused by the recovery tests."""
import shutil
from pathlib import Path

import h5py
import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_capture.h5"


@pytest.fixture(scope="session")
def sample_path():
    assert SAMPLE.is_file(), "data/sample_capture.h5 missing: run `python data/make_sample_capture.py`"
    return SAMPLE


@pytest.fixture(scope="session")
def truth(sample_path):
    with h5py.File(sample_path, "r") as f:
        g = f["truth"]
        return {k: (ds[()] if ds.ndim else float(ds[()])) for k, ds in g.items()}


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory, sample_path):
    """(CALIBRATION.h5 path, report folder, a copy of the capture, capture sha256 before) —
    calibrated from a *copy*, so the test can check that the input is left untouched."""
    from calibration.capture import file_sha256
    from phaseforge.cli import main

    d = tmp_path_factory.mktemp("calib")
    cap = d / "capture.h5"
    shutil.copyfile(sample_path, cap)
    before = file_sha256(cap)
    out = d / "CALIBRATION.h5"
    rc = main(["calibrate", str(cap), "--out", str(out), "--report", str(d / "report"), "--no-progress"])
    assert rc == 0
    return out, d / "report", cap, before
