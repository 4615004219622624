"""Designs in (design.h5, .npy, image, CDP dataset masks) and SLM device presets / custom YAML."""
import math

import h5py
import numpy as np
import pytest

from fabrication.designs import load_design
from fabrication.devices import get_device, load_devices
from fabrication.errors import DeviceError, FabricationError
from optics.design import write_design


def test_design_file_grid_comes_from_the_file(tmp_path):
    ph = np.random.default_rng(0).uniform(0, 6, (3, 5, 4)).astype(np.float32)
    p = write_design(tmp_path / "d.h5", ph, pixel_pitch_m=8e-6, wavelength_m=633e-9, levels=8, z_m=0.2,
                     method="fraunhofer")
    d = load_design(p, index=-1)
    np.testing.assert_array_equal(d.phase_rad, ph[2])
    assert (d.pixel_pitch_m, d.wavelength_m, d.levels, d.z_m, d.index, d.n_masks) == (8e-6, 633e-9, 8, 0.2, 2, 3)
    with pytest.raises(FabricationError, match="file's grid is authoritative"):
        load_design(p, pixel_pitch_m=4e-6)
    with pytest.raises(FabricationError, match="out of range.*0 … 2"):
        load_design(p, index=3)


def test_npy_needs_pitch_and_wavelength_named(tmp_path):
    p = tmp_path / "m.npy"
    np.save(p, np.zeros((4, 4)))
    with pytest.raises(FabricationError, match=r"--pitch-m .*and --wavelength-m"):
        load_design(p)
    with pytest.raises(FabricationError, match=r"--wavelength-m"):
        load_design(p, pixel_pitch_m=8e-6)
    d = load_design(p, pixel_pitch_m=8e-6, wavelength_m=532e-9)
    assert d.shape == (4, 4) and d.wavelength_m == 532e-9
    bad = np.zeros((4, 4))
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(FabricationError, match="NaN/inf.*row 1, column 2"):
        load_design(tmp_path / "nan.npy", pixel_pitch_m=8e-6, wavelength_m=532e-9)


def test_image_with_explicit_phase_scale(tmp_path):
    from PIL import Image
    g = np.array([[0, 64, 128, 192]], dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "m.png")
    with pytest.raises(FabricationError, match="--phase-per-gray-rad"):
        load_design(tmp_path / "m.png", pixel_pitch_m=8e-6, wavelength_m=633e-9)
    d = load_design(tmp_path / "m.png", pixel_pitch_m=8e-6, wavelength_m=633e-9, phase_per_gray_rad=2 * math.pi / 256)
    np.testing.assert_allclose(d.phase_rad[0], [0, math.pi / 2, math.pi, 3 * math.pi / 2])


def _dataset(path, masks, amplitude=None):
    with h5py.File(path, "w") as f:
        m = f.create_dataset("masks", data=masks.astype(np.float32))
        m.attrs["units"] = "rad"
        if amplitude is not None:
            f.create_dataset("mask_amplitude", data=amplitude)
        g = f.create_group("parameters").create_group("optics")
        g.attrs["pitch_m"] = 8e-6
        g.attrs["wavelength_m"] = 633e-9
        g.attrs["z_m"] = 0.1
        g.attrs["method"] = "fraunhofer"
    return path


def test_cdp_dataset_masks(tmp_path):
    masks = np.random.default_rng(1).uniform(0, 6, (4, 6, 6))
    d = load_design(_dataset(tmp_path / "data.h5", masks), index=2)
    np.testing.assert_allclose(d.phase_rad, masks[2].astype(np.float32))
    assert (d.pixel_pitch_m, d.wavelength_m, d.z_m, d.method, d.n_masks) == (8e-6, 633e-9, 0.1, "fraunhofer", 4)
    with pytest.raises(FabricationError, match="phase-only"):
        load_design(_dataset(tmp_path / "amp.h5", masks, np.ones_like(masks)))


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(FabricationError, match="does not exist"):
        load_design(tmp_path / "none.h5")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(FabricationError, match="unsupported design file type"):
        load_design(tmp_path / "x.txt")


def test_presets_cite_their_source_and_custom_devices_load(tmp_path):
    devs = load_devices()
    for key in ("holoeye-pluto-2", "meadowlark-hsp1920", "hamamatsu-x13138", "santec-slm-200", "thorlabs-exulus-hd"):
        src = devs[key].source.lower()
        assert "datasheet" in src or "specification" in src
    assert get_device("Holoeye_PLUTO-2").shape == (1080, 1920)
    assert get_device("santec-slm-200").bit_depth == 10 and get_device("santec-slm-200").file_format == "png16"
    y = tmp_path / "mine.yaml"
    y.write_text("my-slm:\n  name: mine\n  width_px: 100\n  height_px: 50\n  pixel_pitch_m: 4.0e-6\n  bit_depth: 12\n"
                 "  phase_range_rad: 6.283185307179586\n  file_format: png16\n  source: my lab\n")
    assert get_device("my-slm", y).pixel_pitch_m == 4e-6
    y.write_text("my-slm:\n  name: mine\n  width_px: 100\n")
    with pytest.raises(DeviceError, match="missing height_px"):
        get_device("my-slm", y)
    y.write_text("my-slm:\n  name: mine\n  width_px: 100\n  height_px: 50\n  pixel_pitch_m: 4.0e-6\n  bit_depth: 12\n"
                 "  phase_range_rad: 6.28\n  file_format: png8\n  source: x\n")
    with pytest.raises(DeviceError, match="needs file_format png16"):
        get_device("my-slm", y)
