"""Readers that survive any file (issue 20): property-based fuzzing of every reader a user may be
sent a file for — CDP dataset, capture, CALIBRATION.h5 (and its LUT), design.h5, LUT CSV, SLM
export sidecar, YAML configs, device files, training checkpoints.

Each example starts from a valid file written by the project's own writer and damages it:

* bytes: truncated at a drawn length, a few bits flipped, or a span overwritten;
* structure: in HDF5 a dataset deleted, replaced by another type (string, scalar), shape (extra
  axis, empty, cropped) or dtype, a group replaced by a dataset, an attribute deleted or given
  another type; in YAML/JSON a key deleted or its value replaced by another type; in CSV a cell,
  a row or a column changed.

The property: the reader either succeeds or raises one of the project's own error types (or an OS file
error such as IsADirectoryError: what the
CLI turns into ``phaseforge: error: …`` and exit 2), never another exception (a traceback, exit
3), and each case finishes within ``TIME_LIMIT_S`` (a hang fails the test). Budget: profile
``phaseforge-fuzz-ci`` (a few derandomized examples per test, a few seconds in all) in the normal
run; ``make fuzz`` runs profile ``phaseforge-fuzz-fuzz`` (hundreds per test; see conftest.py).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
PROFILE = settings.get_profile("phaseforge-fuzz-" + os.environ.get("PHASEFORGE_FUZZ_PROFILE", "ci"))
TIME_LIMIT_S = 20.0  # per case; a valid file reads in < 0.5 s, so only a hang reaches it


def project_errors() -> tuple:
    """What the CLI reports as ``phaseforge: error: …`` with exit 2: the packages' own error
    types, plus the OS's own file errors (a folder where a file should be: IsADirectoryError)."""
    from phaseforge.cli import user_errors
    return user_errors()


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def run_reader(read, folder: Path, what: str) -> None:
    """Call ``read(folder)``: success or a project error pass; anything else propagates (with the
    example that caused it, from hypothesis); longer than TIME_LIMIT_S fails as a hang."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        read(folder)
    except project_errors():
        pass
    except _Hang:
        pytest.fail(f"{what}: the reader ran longer than {TIME_LIMIT_S} s (hang?)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------------------------
# valid files, one folder per reader (written once per session by the project's own writers)
# ----------------------------------------------------------------------------------------------
def _make_dataset(d: Path) -> str:
    from learning.h5io import write_cdp_dataset
    g = torch.Generator().manual_seed(0)
    objs = [torch.polar(torch.rand(8, 8, generator=g), torch.rand(8, 8, generator=g) * 3) for _ in range(4)]
    masks = torch.rand(2, 8, 8, generator=g) * 2 * math.pi

    def simulate(x, gens):
        return torch.fft.fft2(x[:, None] * torch.polar(torch.ones_like(masks), masks)).abs().float() ** 2

    write_cdp_dataset(d / "DATA.h5", objects=objs, simulate=simulate, masks_rad=masks,
                      params={"optics": {"wavelength_m": 6.328e-7, "pitch_m": 8e-6}}, software_version="0",
                      seed=1, batch_size=2, progress=False)
    return "DATA.h5"


def _read_dataset(d: Path) -> None:
    from learning.h5io import CDPDataset, read_masks, read_params
    ds = CDPDataset(d / "DATA.h5")
    for i in {0, len(ds) - 1}:
        ds[i]
    read_params(d / "DATA.h5")
    read_masks(d / "DATA.h5")
    ds.close()


def _make_capture(d: Path) -> str:
    shutil.copyfile(ROOT / "data" / "sample_capture.h5", d / "capture.h5")
    return "capture.h5"


def _read_capture(d: Path) -> None:
    from calibration.capture import capture_info, read_capture
    read_capture(d / "capture.h5")
    capture_info(d / "capture.h5")


def _make_calibration(d: Path) -> str:
    from calibration.calibfile import write_example_calibration
    write_example_calibration(d / "CALIBRATION.h5", capture_path=d / "capture.h5", software="test", jackknife=False)
    return "CALIBRATION.h5"


def _read_calibration(d: Path) -> None:
    from calibration.calibfile import read_calibration
    from optics.lutfile import read_lut_file
    cal = read_calibration(d / "CALIBRATION.h5")
    cal.phase_lut()
    cal.sensor(exposure_s=0.01)
    read_lut_file(d / "CALIBRATION.h5")


def _make_design(d: Path) -> str:
    from optics.design import write_design
    ph = np.random.default_rng(0).random((2, 8, 8)) * 2 * math.pi
    write_design(d / "design.h5", ph, pixel_pitch_m=8e-6, wavelength_m=633e-9, levels=8, z_m=0.1,
                 method="fraunhofer", source="test")
    return "design.h5"


def _read_design(d: Path) -> None:
    from fabrication.designs import load_design
    from optics.design import read_design
    read_design(d / "design.h5")
    load_design(d / "design.h5", index=1)


def _make_lut_csv(d: Path) -> str:
    from optics.lutfile import write_lut_csv
    g = np.arange(256)
    write_lut_csv(d / "lut.csv", g, g * 2 * math.pi / 256, phase_std_rad=g * 0 + 0.01, wavelength_m=633e-9,
                  comments=["test LUT"])
    return "lut.csv"


def _read_lut_csv(d: Path) -> None:
    from fabrication.slm import read_lut_csv as fab_read
    from optics.lutfile import read_lut_csv
    read_lut_csv(d / "lut.csv")
    fab_read(d / "lut.csv", bit_depth=8)


PANEL_YAML = """
test-panel:
  name: test panel 32 x 24
  width_px: 32
  height_px: 24
  pixel_pitch_m: 8.0e-6
  bit_depth: 8
  phase_range_rad: 6.283185307179586
  file_format: png8
  source: unit test
"""


def _design():
    from fabrication.designs import PhaseDesign
    y, x = np.mgrid[0:12, 0:16]
    return PhaseDesign(((x - 8) ** 2 + (y - 6) ** 2) * 0.02, 8e-6, 633e-9, z_m=0.1, method="fraunhofer", source="lens")


def _make_sidecar(d: Path) -> str:
    from fabrication.slm import export_slm
    (d / "devices.yaml").write_text(PANEL_YAML)
    export_slm(_design(), "test-panel", d / "slm.png", device_file=d / "devices.yaml")
    return "slm.png.json"


def _read_sidecar(d: Path) -> None:
    from fabrication.verify import verify_path
    verify_path(d / "slm.png", design=_design())


def _make_config(d: Path) -> str:
    shutil.copyfile(ROOT / "data" / "configs" / "student_distill.yaml", d / "config.yaml")
    return "config.yaml"


def _read_config(d: Path) -> None:
    from phaseforge.config import load
    load(d / "config.yaml")


def _make_devices(d: Path) -> str:
    (d / "devices.yaml").write_text(PANEL_YAML)
    return "devices.yaml"


def _read_devices(d: Path) -> None:
    from fabrication.devices import get_device, load_devices
    load_devices(d / "devices.yaml")
    get_device("test-panel", d / "devices.yaml")


def _make_checkpoint(d: Path) -> str:
    from learning.training import save_checkpoint
    g = torch.Generator().manual_seed(0)
    save_checkpoint(d / "last.pt", {"model": {"w": torch.randn(4, 4, generator=g), "b": torch.zeros(4)},
                                    "history": [{"step": 0, "loss": 1.5}], "epoch": 1, "best": -math.inf,
                                    "rng": {"torch": torch.get_rng_state()}, "config": {"a": [1, 2]}})
    return "last.pt"


def _read_checkpoint(d: Path) -> None:
    from learning.training import load_checkpoint
    load_checkpoint(d / "last.pt")


#: name → (writer of a valid file into a folder (returns the file name to damage), reader of the folder, kind)
READERS = {
    "dataset": (_make_dataset, _read_dataset, "h5"),
    "capture": (_make_capture, _read_capture, "h5"),
    "calibration": (_make_calibration, _read_calibration, "h5"),
    "design": (_make_design, _read_design, "h5"),
    "lut_csv": (_make_lut_csv, _read_lut_csv, "csv"),
    "sidecar": (_make_sidecar, _read_sidecar, "json"),
    "config": (_make_config, _read_config, "yaml"),
    "devices": (_make_devices, _read_devices, "yaml"),
    "checkpoint": (_make_checkpoint, _read_checkpoint, "bytes"),
}


@pytest.fixture(scope="session")
def valid(tmp_path_factory):
    """name → (folder with the valid file, file name); each written once, lazily."""
    cache = {}

    def get(name):
        if name not in cache:
            d = tmp_path_factory.mktemp(f"valid_{name}")
            cache[name] = (d, READERS[name][0](d))
        return cache[name]

    return get


class _Case:
    """A fresh copy of a valid folder per example (the valid file is never modified)."""

    def __init__(self, root: Path):
        self.root, self.n = root, 0

    def copy(self, src: Path) -> Path:
        self.n += 1
        dst = self.root / f"case{self.n}"
        shutil.copytree(src, dst)
        return dst


@pytest.fixture
def cases(tmp_path):
    return _Case(tmp_path)


# ----------------------------------------------------------------------------------------------
# mutations
# ----------------------------------------------------------------------------------------------
def byte_mutation(data: st.DataObject, n: int):
    kind = data.draw(st.sampled_from(["truncate", "flip", "overwrite"]), label="kind")
    if kind == "truncate":
        return kind, data.draw(st.integers(0, max(0, n - 1)), label="length")
    if kind == "flip":
        return kind, data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=8),
                               label="bits")
    lo = data.draw(st.integers(0, n - 1), label="at")
    return kind, (lo, data.draw(st.binary(min_size=1, max_size=64), label="bytes"))


def apply_bytes(raw: bytes, mutation) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return raw[:arg]
    b = bytearray(raw)
    if kind == "flip":
        for pos, bit in arg:
            b[pos] ^= 1 << bit
        return bytes(b)
    lo, chunk = arg
    b[lo:lo + len(chunk)] = chunk
    return bytes(b[:len(raw)])


ODD_VALUES = [None, "x", "", -1, 0, 1e308, float("nan"), float("inf"), True, [], {}, [1, "a"], 2 ** 70,
              "../../../etc/passwd", {"a": {"b": 1}}]


def _h5_slots(path: Path):
    """Every node and attribute of an HDF5 file: ("node", name) and ("attr", name, key)."""
    slots = []
    with h5py.File(path, "r") as f:
        slots += [("attr", "/", k) for k in f.attrs]

        def visit(name, obj):
            slots.append(("node", name))
            slots.extend(("attr", name, k) for k in obj.attrs)
        f.visititems(visit)
    return slots


H5_NODE_ACTIONS = ["delete", "string", "scalar", "extra_axis", "empty", "crop", "int8", "complex", "bool", "group",
                   "nan"]
H5_ATTR_ACTIONS = ["delete", "string", "nan", "negative", "array", "empty", "huge", "bytes", "bool"]


def apply_h5(path: Path, slot, action) -> None:
    with h5py.File(path, "r+") as f:
        if slot[0] == "attr":
            _, name, key = slot
            attrs = f[name].attrs
            val = {"string": "x", "nan": np.nan, "negative": -1, "array": np.arange(3.0), "empty": h5py.Empty("f8"),
                   "huge": np.int64(2 ** 62), "bytes": np.void(b"\x00\xff"), "bool": np.bool_(True)}.get(action)
            if action == "delete":
                del attrs[key]
            else:
                attrs[key] = val
            return
        name = slot[1]
        obj = f[name]
        attrs = dict(obj.attrs)
        if isinstance(obj, h5py.Group):
            del f[name]
            if action != "delete":
                f[name] = np.zeros(3)
            return
        shape, dtype = obj.shape, obj.dtype
        del f[name]
        if action == "delete":
            return
        if action == "string":
            new = f.create_dataset(name, data="not data")
        elif action == "scalar":
            new = f.create_dataset(name, data=1.0)
        elif action == "extra_axis":
            new = f.create_dataset(name, shape=(1, *shape), dtype=dtype)
        elif action == "empty":
            new = f.create_dataset(name, shape=(0, *shape[1:]), dtype=dtype)
        elif action == "crop":
            new = f.create_dataset(name, shape=tuple(max(0, s // 2) for s in shape), dtype=dtype)
        elif action == "group":
            new = f.create_group(name)
        else:
            dt = {"int8": np.int8, "complex": np.complex64, "bool": np.bool_, "nan": np.float64}[action]
            new = f.create_dataset(name, shape=shape, dtype=dt)
            if action == "nan" and shape:
                new[...] = np.nan
        for k, v in attrs.items():
            new.attrs[k] = v


def _tree_paths(obj, path=()):
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _tree_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _tree_paths(v, path + (i,))
    return out


def apply_tree(tree, path, action, value):
    if not path:
        return value if action == "replace" else None
    node = tree
    for k in path[:-1]:
        node = node[k]
    if action == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree


CSV_TOKENS = ["", "nan", "x", "-1", "1e999", "0x10", " ", "1,2", "#", "3.5", "256", "-inf"]


def apply_csv(text: str, action, row: int, col: int, token: str) -> str:
    lines = text.splitlines()
    row = row % len(lines)
    if action == "delete_row":
        del lines[row]
    elif action == "duplicate_row":
        lines.insert(row, lines[row])
    elif action == "drop_column":
        lines = [",".join(c for j, c in enumerate(ln.split(",")) if j != col) for ln in lines]
    else:
        cells = lines[row].split(",")
        cells[col % len(cells)] = token
        lines[row] = ",".join(cells)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# the properties
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(READERS))
def test_valid_files_read(valid, name):
    """The starting points are valid: the reader accepts each unchanged (else the fuzzing below
    would only exercise the first check)."""
    d, _ = valid(name)
    READERS[name][1](d)


@pytest.mark.parametrize("name", sorted(READERS))
@PROFILE
@given(data=st.data())
def test_damaged_bytes_give_a_named_error(valid, cases, name, data):
    d, fname = valid(name)
    raw = (d / fname).read_bytes()
    mutation = byte_mutation(data, len(raw))
    case = cases.copy(d)
    (case / fname).write_bytes(apply_bytes(raw, mutation))
    run_reader(READERS[name][1], case, f"{name} with {mutation[0]}")


@pytest.mark.parametrize("name", sorted(n for n, r in READERS.items() if r[2] != "bytes"))
@PROFILE
@given(data=st.data())
def test_wrong_types_and_shapes_give_a_named_error(valid, cases, name, data):
    d, fname = valid(name)
    kind = READERS[name][2]
    case = cases.copy(d)
    p = case / fname
    if kind == "h5":
        slot = data.draw(st.sampled_from(_h5_slots(d / fname)), label="slot")
        action = data.draw(st.sampled_from(H5_ATTR_ACTIONS if slot[0] == "attr" else H5_NODE_ACTIONS), label="action")
        apply_h5(p, slot, action)
    elif kind == "csv":
        action = data.draw(st.sampled_from(["cell", "cell", "delete_row", "duplicate_row", "drop_column"]), label="action")
        p.write_text(apply_csv(p.read_text(), action, data.draw(st.integers(0, 300), label="row"),
                               data.draw(st.integers(0, 3), label="col"), data.draw(st.sampled_from(CSV_TOKENS))))
    else:
        load, dump = (json.loads, json.dumps) if kind == "json" else (yaml.safe_load, yaml.safe_dump)
        tree = load(p.read_text())
        path = data.draw(st.sampled_from(_tree_paths(tree)), label="path")
        action = data.draw(st.sampled_from(["replace", "replace", "delete"]), label="action")
        value = data.draw(st.sampled_from(ODD_VALUES), label="value")
        p.write_text(dump(apply_tree(tree, path, action, value)))
    run_reader(READERS[name][1], case, f"{name} with a changed structure")


@pytest.mark.parametrize("name", sorted(READERS))
def test_another_kind_of_file_gives_a_named_error(valid, cases, name):
    """Every reader handed every other reader's valid file (same name), an empty file and a
    folder where its file should be."""
    d, fname = valid(name)
    others = [valid(o) for o in sorted(READERS) if o != name]
    for od, ofname in others:
        case = cases.copy(d)
        shutil.copyfile(od / ofname, case / fname)
        run_reader(READERS[name][1], case, f"{name} given {ofname}")
    case = cases.copy(d)
    (case / fname).write_bytes(b"")
    run_reader(READERS[name][1], case, f"{name} given an empty file")
    case = cases.copy(d)
    (case / fname).unlink()
    (case / fname).mkdir()
    run_reader(READERS[name][1], case, f"{name} given a folder")


def test_hdf5_readers_refuse_links_to_other_files(valid, cases, tmp_path):
    """The link policy, reader by reader: an external link added anywhere in a valid file is
    refused with the reader's own error (a CDP dataset's own rule is tested in test_h5io.py)."""
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["x"] = np.arange(3.0)
    for name in ("dataset", "capture", "calibration", "design"):
        d, fname = valid(name)
        case = cases.copy(d)
        with h5py.File(case / fname, "r+") as f:
            f["linked"] = h5py.ExternalLink(str(secret), "/x")
        with pytest.raises(project_errors(), match="external link"):
            READERS[name][1](case)


def test_cli_reports_damaged_files_with_exit_2(valid, cases, capsys):
    """End to end: a damaged file handed to the CLI is one line ``phaseforge: error: …`` and exit
    status 2 (a traceback would be exit 3)."""
    from phaseforge.cli import main
    checks = []
    d, fname = valid("capture")
    case = cases.copy(d)
    raw = (case / fname).read_bytes()
    (case / fname).write_bytes(raw[:len(raw) // 2])
    checks.append(["calibrate", str(case / fname), "--out", str(case / "C.h5"), "--no-progress"])
    d, fname = valid("config")
    case = cases.copy(d)
    (case / fname).write_bytes(b"\x80\x81 not text")
    checks.append(["config", "--config", str(case / fname)])
    d, fname = valid("sidecar")
    case = cases.copy(d)
    (case / fname).write_text("[1, 2]")
    checks.append(["export", "verify", str(case / "slm.png")])
    d, fname = valid("design")
    case = cases.copy(d)
    with h5py.File(case / fname, "r+") as f:
        f.attrs["pixel_pitch_m"] = "x"
    checks.append(["export", "slm", str(case / fname), "--device", "test-panel", "--device-file",
                   str(valid("devices")[0] / "devices.yaml"), "--out", str(case / "out.png")])
    for argv in checks:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "phaseforge: error:" in err and "Traceback" not in err, (argv, err)
