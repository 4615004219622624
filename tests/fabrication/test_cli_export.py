"""`phaseforge export …` end to end on a .npy phase map and on a design file."""
import json
import math

import numpy as np

from optics.design import read_design, write_design
from phaseforge.cli import main


def test_export_slm_and_doe_from_npy_and_design_file(tmp_path, capsys, device_file):
    y, x = np.mgrid[0:16, 0:24]
    ph = np.mod(((x - 12) ** 2 + (y - 8) ** 2) * 0.05, 2 * math.pi)
    np.save(tmp_path / "m.npy", ph)
    args = ["export", "slm", str(tmp_path / "m.npy"), "--pitch-m", "8e-6", "--wavelength-m", "633e-9",
            "--device", "test-panel", "--device-file", str(device_file), "--out", str(tmp_path / "m.png"),
            "--carrier-period-px", "0,4", "--verify"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "export slm: wrote" in out and "PASS" in out
    side = json.loads((tmp_path / "m.png.json").read_text())
    assert side["verification"][0]["passed"] and side["carrier"]["period_px"] == [0.0, 4.0]
    assert main(args) == 2  # exists → refused
    assert "--overwrite" in capsys.readouterr().err
    # a design file with two masks, mask 1 → DOE with verification
    d = write_design(tmp_path / "design.h5", np.stack([ph, ph[::-1]]), pixel_pitch_m=2e-6, wavelength_m=633e-9)
    before = d.read_bytes()
    assert main(["export", "doe", str(d), "--index", "1", "--material", "fused-silica", "--levels", "8",
                 "--gds-mode", "etch", "--out", str(tmp_path / "doe"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "h_2π = 1.385" in out and out.count("PASS") == 2
    assert d.read_bytes() == before and read_design(d).n_masks == 2  # the design file is never modified
    assert main(["export", "verify", str(tmp_path / "doe")]) == 0
    assert main(["export", "verify", str(tmp_path / "m.png")]) == 0
    # a wrong LUT at verification time fails with exit 3 and names it
    lut = tmp_path / "lut.csv"
    lut.write_text("gray,phase_rad\n0,0\n255,5.0\n")
    assert main(["export", "verify", str(tmp_path / "m.png"), "--lut", str(lut)]) == 3
    assert "LUT differs" in capsys.readouterr().out
    assert main(["export", "doe", str(d), "--levels", "6", "--gds-mode", "etch", "--out", str(tmp_path / "x")]) == 2
    assert "power-of-two" in capsys.readouterr().err
    assert main(["export", "devices"]) == 0
    assert "holoeye-pluto-2" in capsys.readouterr().out
