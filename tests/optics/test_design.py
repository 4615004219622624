"""The design file: round trip with its grid, refusals, validation listing every problem."""
import h5py
import numpy as np
import pytest
import torch

from optics.design import DesignError, read_design, write_design


def test_round_trip_keeps_phase_grid_and_provenance(tmp_path):
    rng = np.random.default_rng(0)
    ph = rng.uniform(0, 2 * np.pi, (2, 8, 6)).astype(np.float32)
    p = write_design(tmp_path / "d.h5", torch.from_numpy(ph), pixel_pitch_m=8e-6, wavelength_m=633e-9,
                     levels=4, z_m=0.1, method="fraunhofer", source="unit test", extra={"run": "x"})
    d = read_design(p)
    np.testing.assert_array_equal(d.phase_rad, ph)  # float32 stored bit-exactly
    assert (d.pixel_pitch_m, d.wavelength_m, d.levels, d.z_m, d.method) == (8e-6, 633e-9, 4, 0.1, "fraunhofer")
    assert d.source == "unit test" and d.extra == {"run": "x"} and d.created.endswith("+00:00")
    np.testing.assert_array_equal(d.mask(-1), ph[1])
    with h5py.File(p) as f:
        assert f["phase_rad"].attrs["units"] == "rad"
    assert not (tmp_path / "d.h5.tmp").exists()


def test_continuous_design_has_no_levels_and_2d_input_is_one_mask(tmp_path):
    p = write_design(tmp_path / "c.h5", np.zeros((4, 4)), pixel_pitch_m=4e-6, wavelength_m=532e-9)
    d = read_design(p)
    assert d.levels is None and d.n_masks == 1 and d.shape == (4, 4) and d.z_m is None


def test_refusals_name_the_fix(tmp_path):
    with pytest.raises(DesignError, match="NaN"):
        write_design(tmp_path / "n.h5", np.full((2, 2), np.nan), pixel_pitch_m=8e-6, wavelength_m=633e-9)
    with pytest.raises(ValueError, match="633e-9"):
        write_design(tmp_path / "w.h5", np.zeros((2, 2)), pixel_pitch_m=8e-6, wavelength_m=633)
    write_design(tmp_path / "e.h5", np.zeros((2, 2)), pixel_pitch_m=8e-6, wavelength_m=633e-9)
    with pytest.raises(DesignError, match="overwrite"):
        write_design(tmp_path / "e.h5", np.zeros((2, 2)), pixel_pitch_m=8e-6, wavelength_m=633e-9)
    with pytest.raises(DesignError, match="out of range"):
        read_design(tmp_path / "e.h5").mask(3)


def test_malformed_file_lists_every_problem(tmp_path):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("phase_rad", data=np.zeros((1, 2, 2), np.float32))
    with pytest.raises(DesignError) as ei:
        read_design(p)
    msg = str(ei.value)
    assert "format" in msg and "units" in msg and "pixel_pitch_m" in msg and "wavelength_m" in msg

