"""LUT files (optics.lutfile): CSV and HDF5 forms round-trip bit for bit with their wavelength,
the reader tells them apart by content, and bad files name the line or dataset and the fix."""
import math

import h5py
import numpy as np
import pytest

from optics.errors import LUTError
from optics.lutfile import read_lut_file, write_lut_csv, write_lut_group


def _table():
    g = np.arange(256)
    x = g / 255
    phase = 1.9 * math.pi * (0.62 * x + 0.38 * x ** 2) + 0.06 * np.sin(2 * math.pi * x)
    return g, phase, 0.01 + 0.001 * x


def test_csv_round_trip_is_exact_and_keeps_the_wavelength(tmp_path):
    g, phase, std = _table()
    p = write_lut_csv(tmp_path / "lut.csv", g, phase, phase_std_rad=std, wavelength_m=633e-9,
                      comments=["measured on bench 2"])
    text = p.read_text()
    assert text.startswith("# measured on bench 2\n# wavelength_m = 6.33e-07\ngray,phase_rad,phase_std_rad\n")
    t = read_lut_file(p)
    assert np.array_equal(t.gray, g) and np.array_equal(t.phase_rad, phase) and np.array_equal(t.phase_std_rad, std)
    assert t.wavelength_m == 633e-9
    lut = t.phase_lut()
    assert lut.bit_depth == 8 and np.array_equal(lut.levels_rad.numpy(), phase)
    assert not list(tmp_path.glob("*.tmp"))
    # a hand-written table without std or wavelength; sparse points are interpolated by PhaseLUT
    q = tmp_path / "hand.csv"
    q.write_text("# vendor table\ngray,phase_rad\n0,0\n\n255,6.0\n")
    t = read_lut_file(q)
    assert t.wavelength_m is None and t.phase_std_rad is None
    assert float(t.phase_lut(bit_depth=8).levels_rad[51]) == pytest.approx(6.0 * 51 / 255)


def test_hdf5_group_round_trip_and_instrument_wavelength_fallback(tmp_path):
    g, phase, std = _table()
    p = tmp_path / "cal.h5"
    with h5py.File(p, "w") as f:
        write_lut_group(f.create_group("lut"), g, phase, phase_std_rad=std, wavelength_m=532e-9)
        assert f["lut/phase_rad"].attrs["units"] == "rad" and f["lut/gray"].attrs["units"] == "gray"
    t = read_lut_file(p)
    assert np.array_equal(t.phase_rad, phase) and np.array_equal(t.phase_std_rad, std) and t.wavelength_m == 532e-9
    q = tmp_path / "old.h5"   # no wavelength attribute on the group: the file's /instrument/wavelength_m
    with h5py.File(q, "w") as f:
        write_lut_group(f.create_group("lut"), g, phase)
        ds = f.create_dataset("instrument/wavelength_m", data=633e-9)
        ds.attrs["units"] = "m"
    assert read_lut_file(q).wavelength_m == 633e-9
    # the name does not matter, the content does
    r = tmp_path / "lut.h5.csv"
    r.write_bytes(p.read_bytes())
    assert read_lut_file(r).wavelength_m == 532e-9


def test_bad_lut_files_name_the_problem(tmp_path):
    with pytest.raises(LUTError, match="does not exist"):
        read_lut_file(tmp_path / "none.csv")
    cases = {
        "gray;phase\n0;0\n": r":1: header 'gray;phase' lacks \['gray', 'phase_rad'\]",
        "gray,phase_rad\n0,0\n128,x\n": r":3: '128,x' is not a row of numbers",
        "gray,phase_rad\n0,0,1\n": r":2: 3 value\(s\) but the header has 2 columns",
        "# just a comment\n": "no header line",
        "gray,phase_rad\n0,0\n": "at least the two end gray levels",
        "gray,phase_rad\n0,0\n1.5,2\n": "non-negative integers",
        "# wavelength_m = 633\ngray,phase_rad\n0,0\n1,3\n": "not a wavelength in metres",
        "# wavelength_m = red\ngray,phase_rad\n0,0\n1,3\n": ":1: cannot read the wavelength",
    }
    for i, (text, msg) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.csv"
        p.write_text(text)
        with pytest.raises(LUTError, match=msg):
            read_lut_file(p)
    h = tmp_path / "nolut.h5"
    with h5py.File(h, "w") as f:
        f.create_group("data")
    with pytest.raises(LUTError, match="no /lut group"):
        read_lut_file(h)
    with h5py.File(h, "a") as f:
        f.create_dataset("lut/gray", data=np.arange(4))            # no units, no phase
    with pytest.raises(LUTError) as ei:
        read_lut_file(h)
    assert "/lut/gray has units '', expected 'gray'" in str(ei.value) and "/lut/phase_rad is missing" in str(ei.value)
