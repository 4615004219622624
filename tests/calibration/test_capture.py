"""Capture files: writer/reader round trip, every problem listed at once, other programs'
files, truncation, pixel justification, packing from TIFF/PNG + YAML, the CLI."""
import shutil

import h5py
import numpy as np
import pytest

from calibration.capture import (Pattern, capture_info, file_sha256, pack_capture, pattern_sha256, read_capture,
                                 validate_capture, write_capture)
from calibration.errors import CaptureError
from phaseforge.cli import main

INSTR = {"wavelength_m": 633e-9, "camera_pitch_m": 5.5e-6, "slm_pitch_m": 8e-6, "distance_m": 2e-3,
         "slm_bit_depth": 8}


def _small(tmp_path, **kw):
    rng = np.random.default_rng(0)
    frames = rng.integers(100, 3000, size=(4, 8, 10)).astype(np.uint16)
    pats = {"p0": Pattern(rng.integers(0, 256, (6, 6)).astype(np.uint8), kind="random")}
    args = dict(frames=frames, image_key=[2, 1, 1, 0], exposure_s=[1e-3, 2e-3, 2e-3, 5e-3], bit_depth=12,
                instrument=INSTR, patterns=pats, pattern_id=["", "", "", "p0"],
                provenance={"instrument": "test bench", "camera_serial": "C1"})
    args.update(kw)
    return write_capture(tmp_path / "c.h5", **args), frames


def test_round_trip_and_provenance(tmp_path):
    path, frames = _small(tmp_path)
    cap = read_capture(path)
    assert np.array_equal(cap.frames, frames.astype(float))
    assert cap.bit_depth == 12 and list(cap.image_key) == [2, 1, 1, 0]
    assert cap.patterns["p0"].sha256 == pattern_sha256(cap.patterns["p0"].gray)
    assert cap.instrument["wavelength_m"] == pytest.approx(633e-9) and cap.instrument["magnification"] == 1.0
    assert cap.provenance["camera_serial"] == "C1" and cap.provenance["format"] == "phaseforge-capture"
    assert cap.sha256 == file_sha256(path)
    with h5py.File(path, "r") as f:  # units on every physical dataset
        assert f["exposure_s"].attrs["units"] == "s" and f["frames"].attrs["units"] == "DN"
        assert all(ds.attrs["units"] for ds in f["instrument"].values())
        assert f["frames"].chunks == (1, 8, 10)


def test_left_justified_12_bit_data_is_shifted(tmp_path):
    path, frames = _small(tmp_path, frames=(np.arange(4 * 80).reshape(4, 8, 10) * 16).astype(np.uint16),
                          pixel_justification="msb")
    assert np.array_equal(read_capture(path).frames, np.arange(4 * 80).reshape(4, 8, 10))
    # the same data declared 'lsb' exceeds the 12-bit full scale: named with the fix
    bad = tmp_path / "bad.h5"
    shutil.copyfile(path, bad)
    with h5py.File(bad, "a") as f:
        f["frames"].attrs["pixel_justification"] = "lsb"
    msgs = " ".join(p.message for p in validate_capture(bad))
    assert "exceed 4095 DN" in msgs and "msb" in msgs


def test_every_problem_is_listed_at_once_and_input_untouched(tmp_path):
    path, _ = _small(tmp_path)
    bad = tmp_path / "broken.h5"
    shutil.copyfile(path, bad)
    with h5py.File(bad, "a") as f:
        f["exposure_s"].attrs["units"] = "ms"                       # wrong units
        del f["instrument/wavelength_m"]                            # missing dataset
        fr = f["frames"][()].astype(np.float32)
        fr[1, 0, 0] = np.nan                                        # NaN frame (and float dtype)
        fr[2] = 4095                                                # all saturated
        del f["frames"]
        d = f.create_dataset("frames", data=fr)
        d.attrs.update({"units": "DN", "bit_depth": 12, "pixel_justification": "lsb"})
        del f["image_key"]
        f.create_dataset("image_key", data=np.array([2, 1, 1], np.int8))  # mismatched shape
        del f["pattern_id"]
        f.create_dataset("pattern_id", data=np.array(["", "", "", "nope"], dtype=object), dtype=h5py.string_dtype())
        f["patterns/p0"].attrs["sha256"] = "0" * 64                 # hash mismatch
    before = file_sha256(bad)
    with pytest.raises(CaptureError) as ei:
        read_capture(bad)
    msg = str(ei.value)
    for needle in ("expected 's'", "/instrument/wavelength_m", "NaN", "all pixels saturated", "uint8 or uint16",
                   "has 3 entries but /frames has 4", "unknown pattern id(s) ['nope']", "hash mismatch"):
        assert needle in msg, needle
    assert len(ei.value.problems) >= 8
    assert file_sha256(bad) == before  # never modified


def test_other_program_truncated_and_non_hdf5_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros((2, 4, 4))
    msgs = [str(p) for p in validate_capture(other)]
    assert any("another program" in m for m in msgs) and any("/frames" in m for m in msgs)
    path, _ = _small(tmp_path)
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(path.read_bytes()[:1500])
    assert "truncated" in str(validate_capture(trunc)[0])
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    assert "not an HDF5 file" in str(validate_capture(txt)[0])


def test_pack_from_tiff_and_png_plus_yaml(tmp_path):
    import tifffile
    import yaml
    from PIL import Image

    rng = np.random.default_rng(1)
    a = rng.integers(0, 4095, (6, 7)).astype(np.uint16)
    b = rng.integers(0, 255, (6, 7)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "f0.tif", a)
    Image.fromarray(b).save(tmp_path / "f1.png")
    np.save(tmp_path / "p0.npy", rng.integers(0, 256, (4, 4)).astype(np.uint8))
    meta = {"bit_depth": 12, "instrument": INSTR, "provenance": {"instrument": "bench"},
            "patterns": {"p0": {"file": "p0.npy", "kind": "random"}},
            "frames": [{"file": "f0.tif", "image_key": 2, "exposure_s": 0.001},
                       {"file": "f1.png", "image_key": 0, "exposure_s": 0.002, "pattern_id": "p0"}]}
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump(meta))
    out = tmp_path / "packed.h5"
    assert main(["capture", "pack", str(tmp_path), "--metadata", str(tmp_path / "meta.yaml"), "--out", str(out)]) == 0
    cap = read_capture(out)
    assert np.array_equal(cap.frames[0], a) and np.array_equal(cap.frames[1], b)
    # a YAML naming a missing file and a missing key: both reported, nothing written
    meta["frames"].append({"file": "missing.tif", "image_key": 0})
    del meta["frames"][0]["exposure_s"]
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(CaptureError) as ei:
        pack_capture(tmp_path, tmp_path / "meta.yaml", tmp_path / "p2.h5")
    assert "missing.tif" in str(ei.value) and "exposure_s" in str(ei.value)
    assert not (tmp_path / "p2.h5").exists()


def test_cli_validate_and_info(tmp_path, sample_path, capsys):
    assert main(["capture", "validate", str(sample_path)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.h5"
    shutil.copyfile(sample_path, bad)
    with h5py.File(bad, "a") as f:
        f["instrument/distance_m"].attrs["units"] = "mm"
    assert main(["capture", "validate", str(bad)]) == 1
    assert "expected 'm'" in capsys.readouterr().out
    assert main(["capture", "info", str(sample_path)]) == 0
    out = capsys.readouterr().out
    assert "dark" in out and "17 grating" in out
    assert "flat" in capture_info(sample_path)


def test_calibrate_refuses_a_capture_without_a_photon_transfer_series(tmp_path, capsys):
    path, _ = _small(tmp_path)
    out = tmp_path / "CAL.h5"
    assert main(["calibrate", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dark frames at 1 exposure(s)" in err and "photon-transfer curve needs >= 4" in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_sample_round_trips_through_tiff_folder_and_pack(tmp_path, sample_path):
    """The sample capture exported as TIFF frames + .npy patterns + YAML and packed again holds
    the same frames, keys, exposures, patterns and instrument (the lab path into phaseforge)."""
    import tifffile
    import yaml

    cap = read_capture(sample_path)
    frames = []
    for i in range(len(cap.image_key)):
        name = f"frame_{i:03d}.tif"
        tifffile.imwrite(tmp_path / name, cap.frames[i].astype(np.uint16))
        frames.append({"file": name, "image_key": int(cap.image_key[i]), "exposure_s": float(cap.exposure_s[i]),
                       "pattern_id": cap.pattern_id[i]})
    pats = {}
    for pid, p in cap.patterns.items():
        np.save(tmp_path / f"{pid}.npy", p.gray)
        pats[pid] = {"file": f"{pid}.npy", "kind": p.kind, **{k: int(v) for k, v in p.attrs.items()}}
    meta = {"bit_depth": cap.bit_depth, "instrument": cap.instrument, "patterns": pats, "frames": frames,
            "provenance": {"instrument": "re-packed sample"}}
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump(meta))
    out = pack_capture(tmp_path, tmp_path / "meta.yaml", tmp_path / "repacked.h5")
    back = read_capture(out)
    assert np.array_equal(back.frames, cap.frames)
    assert np.array_equal(back.image_key, cap.image_key) and np.allclose(back.exposure_s, cap.exposure_s)
    assert back.pattern_id == cap.pattern_id
    assert all(np.array_equal(back.patterns[k].gray, v.gray) and back.patterns[k].attrs == v.attrs
               for k, v in cap.patterns.items())
    assert back.instrument == pytest.approx(cap.instrument)


def test_cli_info_on_a_missing_or_non_hdf5_file_is_an_error(tmp_path, capsys):
    """`capture info` used to print the problem and exit 0; a file it cannot summarise is now a
    one-line error with status 2 naming the problem (validate: status 1, as before)."""
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    for path, needle in ((tmp_path / "missing.h5", "file does not exist"), (txt, "not an HDF5 file")):
        assert main(["capture", "info", str(path)]) == 2
        err = capsys.readouterr().err
        assert needle in err and str(path) in err
        assert main(["capture", "validate", str(path)]) == 1
        assert needle in capsys.readouterr().out
        with pytest.raises(CaptureError, match=needle):
            capture_info(path)


def test_cli_info_exits_1_on_a_readable_capture_with_errors(tmp_path, capsys):
    path, _ = _small(tmp_path)
    with h5py.File(path, "a") as f:
        f["exposure_s"].attrs["units"] = "ms"
    assert main(["capture", "info", str(path)]) == 1
    out = capsys.readouterr().out
    assert "1 error(s)" in out and "expected 's'" in out and "frames (4, 8, 10)" in out  # summary still shown


@pytest.mark.parametrize("value", [0, 100])
def test_blank_and_constant_frames_are_errors(tmp_path, capsys, value):
    """A capture whose frames are all 0 DN (or all one value) passed validation; a camera frame
    always shows read and shot noise, so each such frame is an error."""
    path, _ = _small(tmp_path)
    with h5py.File(path, "a") as f:
        f["frames"][...] = np.full((4, 8, 10), value, np.uint16)
    errors = [p for p in validate_capture(path) if p.severity == "error"]
    assert [p.where for p in errors] == [f"/frames[{i}]" for i in range(4)]
    assert all((f"all pixels are {value} DN") in p.message for p in errors)
    assert main(["capture", "validate", str(path)]) == 1
    capsys.readouterr()
    one_blank = tmp_path / "one.h5"  # a single blank frame among real ones is named alone
    shutil.copyfile(path, one_blank)
    with h5py.File(one_blank, "a") as f:
        f["frames"][...] = np.random.default_rng(1).integers(100, 3000, (4, 8, 10)).astype(np.uint16)
        f["frames"][2] = np.zeros((8, 10), np.uint16)
    assert [p.where for p in validate_capture(one_blank) if p.severity == "error"] == ["/frames[2]"]
