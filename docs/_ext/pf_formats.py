"""File-format reference tables that cannot drift from the writers.

:func:`write_samples` writes one small file of every format with the project's own writers
(``phaseforge simulate``, ``train``, ``calibrate``, ``export slm``/``doe``, :func:`optics.design.write_design`
through the run, the committed sample capture and model). :func:`inventory` lists every field those
files hold — HDF5 groups, datasets (dtype, rank, ``units`` attribute), attributes (units from the
``<name>__units`` sibling or the file's ``units`` map), JSON keys, CSV columns, checkpoint entries.
:func:`check` compares that list with the hand-written meanings in ``docs/reference/fields.yaml``:
a field the writer wrote that has no meaning there, or a documented (non-optional) field the writer no
longer writes, is a problem — a Sphinx warning in the docs build (``-W`` fails it) and a failure in
``tests/test_docs.py``.

``fields.yaml``: ``format → file → {field pattern: meaning}``. Patterns are :mod:`fnmatch` globs
over field names (``/parameters/*@*``); a leading ``?`` marks a field the sample may lack
(optional in the format). Field names: HDF5 ``/group/dataset``, ``/group/`` for a group,
``/path@attribute`` for an attribute; JSON ``key.sub``, ``key[]`` for a list, ``key[].sub`` for
the keys of its entries; CSV ``column``; checkpoints ``key`` and ``key.sub`` for a dict entry's keys;
a folder: the relative file paths.
"""
from __future__ import annotations

import csv
import fnmatch
import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIELDS_YAML = ROOT / "docs" / "reference" / "fields.yaml"

__all__ = ["Field", "write_samples", "inventory", "load_documented", "check", "render", "FORMATS"]

#: format key in fields.yaml → (title, files: relative path in the samples folder → kind)
FORMATS = {
    "dataset": ("Dataset file", {"DATA.h5": "h5"}),
    "capture": ("Capture file", {"capture.h5": "h5"}),
    "calibration": ("CALIBRATION.h5", {"cal/CALIBRATION.h5": "h5", "cal/CALIBRATION_lut.csv": "csv"}),
    "design": ("design.h5", {"run/design.h5": "h5"}),
    "export": ("Export sidecars", {"slm/mask.png.json": "json", "doe/doe.json": "json",
                                   "doe/relief_levels.csv": "csv"}),
    "run": ("Run folder", {"run": "dir", "run/metrics.json": "json", "run/history.csv": "csv",
                           "run/val.csv": "csv", "run/checkpoints/last.pt": "pt"}),
    "model": ("Model files", {"model.pt": "pt"}),
}


@dataclass
class Field:
    name: str
    kind: str       # group, dataset, attribute, key, column, entry, file
    type: str = ""
    units: str = ""


def _quiet_cli(argv):
    from phaseforge.cli import main
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        rc = main(list(argv))
    if rc != 0:
        raise RuntimeError(f"phaseforge {' '.join(argv)} exited with status {rc}")


def _synthetic_calibration(d: Path) -> None:
    """CALIBRATION.h5 and its LUT CSV with made-up values through the real writers
    (:func:`calibration.calibfile.write_example_calibration`; seconds instead of ~20 s)."""
    from calibration.calibfile import write_example_calibration
    from optics.lutfile import write_lut_csv
    lut = write_example_calibration(d / "CALIBRATION.h5", capture_path=ROOT / "data" / "sample_capture.h5",
                                    software="phaseforge (docs sample)",
                                    quality={"r_heldout": 0.9, "rms_residual_heldout": 1.0})
    write_lut_csv(d / "CALIBRATION_lut.csv", lut.gray, lut.phase_rad, phase_std_rad=lut.phase_std_rad, wavelength_m=633e-9,
                  comments=["SLM gray -> phase LUT (docs sample)"])


def write_samples(folder, *, real_calibration: bool = True) -> Path:
    """Write one small file of every documented format under ``folder`` (≈ 15 s; + ≈ 20 s for the
    real ``phaseforge calibrate`` of the sample capture, else the same writer with made-up values)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    cfg = str(ROOT / "data" / "configs" / "teacher.yaml")
    _quiet_cli(["simulate", "--out", str(d / "DATA.h5"), "--no-progress", "--set", "data.n=2", "--set", "data.size=16",
                "--set", "masks.n_masks=2", "--set", "batch_size=2"])
    _quiet_cli(["train", "--config", cfg, "--out", str(d / "run"), "--no-progress", "--set", "train.epochs=1",
                "--set", "train.n_train=4", "--set", "train.n_val=2", "--set", "train.batch_size=2", "--set",
                "data.size=16", "--set", "model.widths=[4,8]", "--set", "model.n_warm=2", "--set", "model.n_stages=1"])
    shutil.copyfile(ROOT / "data" / "sample_capture.h5", d / "capture.h5")
    shutil.copyfile(ROOT / "data" / "models" / "cdp_unfolded_L4.pt", d / "model.pt")
    (d / "cal").mkdir(exist_ok=True)
    if real_calibration:
        _quiet_cli(["calibrate", str(d / "capture.h5"), "--out", str(d / "cal" / "CALIBRATION.h5")])
    else:
        _synthetic_calibration(d / "cal")
    design = str(d / "run" / "design.h5")
    _quiet_cli(["export", "slm", design, "--device", "holoeye-pluto-2", "--out", str(d / "slm" / "mask.png")])
    _quiet_cli(["export", "doe", design, "--material", "fused-silica", "--levels", "8", "--out", str(d / "doe")])
    return d


# ---- inventory -------------------------------------------------------------------------------

def _py_type(v) -> str:
    if isinstance(v, bytes):
        return "str"
    if isinstance(v, np.ndarray):
        return f"{v.dtype} array" if v.ndim else str(v.dtype)
    if isinstance(v, np.generic):
        return str(v.dtype)
    return type(v).__name__


def _h5_inventory(path: Path):
    import h5py
    out = []

    def attrs_of(obj, prefix):
        a = obj.attrs
        units_map = {}
        if "units" in a and prefix == "/":
            try:
                units_map = json.loads(a["units"])
            except (TypeError, ValueError):
                units_map = {}
        for k in a:
            if k.endswith("__units"):
                if k[:-7] not in a:
                    out.append(Field(f"{prefix}@{k}", "attribute", "str"))
                continue
            units = a.get(f"{k}__units", units_map.get(k, ""))
            if isinstance(units, bytes):
                units = units.decode()
            out.append(Field(f"{prefix}@{k}", "attribute", _py_type(a[k]), str(units)))

    with h5py.File(path, "r") as f:
        attrs_of(f, "/")

        def visit(name, obj):
            p = "/" + name
            if isinstance(obj, h5py.Dataset):
                u = obj.attrs.get("units", "")
                u = u.decode() if isinstance(u, bytes) else str(u)
                out.append(Field(p, "dataset", f"{obj.dtype}, {obj.ndim}-D" if obj.ndim else f"{obj.dtype} scalar", u))
                for k in obj.attrs:
                    if k != "units":
                        out.append(Field(f"{p}@{k}", "attribute", _py_type(obj.attrs[k])))
            else:
                out.append(Field(p + "/", "group"))
                attrs_of(obj, p)
        f.visititems(visit)
    return out


def _tree_inventory(obj, prefix="", depth=0, max_depth=3):
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            typ = "object" if isinstance(v, dict) else "list" if isinstance(v, (list, tuple)) else _py_type(v)
            out.append(Field(name, "key", typ))
            if depth + 1 < max_depth:
                out.extend(_tree_inventory(v, name, depth + 1, max_depth))
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(e, dict) for e in obj):
        keys = {}
        for e in obj:
            for k, v in e.items():
                keys.setdefault(k, v)
        out.extend(_tree_inventory(keys, f"{prefix}[]", depth, max_depth))
    return out


def _csv_inventory(path: Path):
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    header = next(csv.reader(lines[:1]))
    return [Field(c, "column") for c in header]


def _pt_inventory(path: Path):
    import torch
    obj = torch.load(path, map_location="cpu", weights_only=True)
    out = []
    for k, v in obj.items():
        typ = "tensors" if k in ("model", "state_dict") else type(v).__name__
        out.append(Field(k, "entry", typ))
        if isinstance(v, dict) and k in ("config", "meta", "settings", "rng"):
            out.extend(Field(f"{k}.{s}", "entry", type(sv).__name__) for s, sv in v.items())
    return out


def _dir_inventory(path: Path):
    return [Field(str(p.relative_to(path)), "file") for p in sorted(path.rglob("*")) if p.is_file()]


def inventory(path, kind: str):
    """Every field of one written file (see the module docstring for the naming)."""
    path = Path(path)
    if kind == "h5":
        return _h5_inventory(path)
    if kind == "json":
        return _tree_inventory(json.loads(path.read_text()))
    if kind == "csv":
        return _csv_inventory(path)
    if kind == "pt":
        return _pt_inventory(path)
    if kind == "dir":
        return _dir_inventory(path)
    raise ValueError(f"unknown kind {kind!r}")


# ---- documented fields ------------------------------------------------------------------------

def load_documented(path=FIELDS_YAML) -> dict:
    import yaml
    return yaml.safe_load(Path(path).read_text())


def _split(pattern: str):
    return (pattern[1:], True) if pattern.startswith("?") else (pattern, False)


def check(samples, documented: dict | None = None):
    """Problems (strings) between the files in ``samples`` and ``fields.yaml``; [] when they agree."""
    documented = load_documented() if documented is None else documented
    problems = []
    for fmt, (_, files) in FORMATS.items():
        doc_files = documented.get(fmt) or {}
        for rel, kind in files.items():
            doc = doc_files.get(rel)
            if doc is None:
                problems.append(f"fields.yaml: {fmt}: no entry for {rel}")
                continue
            fields = inventory(Path(samples) / rel, kind)
            pats = {p: _split(p) for p in doc}
            for fld in fields:
                if not any(fnmatch.fnmatchcase(fld.name, pat) for pat, _ in pats.values()):
                    problems.append(f"{fmt}: {rel}: the writer wrote {fld.name!r} ({fld.kind}), which fields.yaml "
                                    f"does not document — add its meaning to docs/reference/fields.yaml")
            for raw, (pat, optional) in pats.items():
                if not optional and not any(fnmatch.fnmatchcase(f.name, pat) for f in fields):
                    problems.append(f"{fmt}: {rel}: fields.yaml documents {raw!r}, which the writer no longer "
                                    f"writes — remove it or mark it optional with a leading '?'")
        for rel in doc_files:
            if rel not in files:
                problems.append(f"fields.yaml: {fmt}: {rel} is not a file the docs build writes ({', '.join(files)})")
    for fmt in documented:
        if fmt not in FORMATS:
            problems.append(f"fields.yaml: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return problems


def _cell(s) -> str:
    return " ".join(str(s).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render(samples, fmt: str, documented: dict | None = None) -> str:
    """Markdown tables of one format: per file, every documented pattern with the fields the sample
    holds for it (type and units as written) and the meaning."""
    documented = load_documented() if documented is None else documented
    _, files = FORMATS[fmt]
    out = []
    for rel, kind in files.items():
        doc = documented[fmt][rel]
        fields = inventory(Path(samples) / rel, kind)
        shown = Path(rel).name if kind != "dir" else "run folder (files)"
        out.append(f"**`{shown}`** (written by this version; generated at build time)\n")
        if kind in ("csv", "dir"):
            out.append("| field | meaning |\n|---|---|")
        else:
            out.append("| field | type | units | meaning |\n|---|---|---|---|")
        for raw, meaning in doc.items():
            pat, optional = _split(raw)
            hits = [f for f in fields if fnmatch.fnmatchcase(f.name, pat)]
            name = f"`{pat}`" + (" (optional)" if optional else "")
            if kind in ("csv", "dir"):
                out.append(f"| {name} | {_cell(meaning)} |")
                continue
            types_ = sorted({f.type for f in hits if f.type})
            units = sorted({f.units for f in hits if f.units})
            typ = ", ".join(types_) if len(types_) <= 3 else "various"
            out.append(f"| {name} | {_cell(typ)} | {_cell(', '.join(f'`{u}`' for u in units))} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)
