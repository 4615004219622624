"""SLM phase-LUT files: the one reader/writer of gray → phase tables, shared by the layers
(calibration writes them, fabrication reads them; neither imports the other).

A table maps every gray level ``g`` to the displayed phase ``φ(g)`` in rad (strictly
increasing), optionally with its 1σ uncertainty and the wavelength it was measured at (the
export scales phases by ``λ_lut/λ``). Two forms of the same table:

* **CSV** — a header ``gray,phase_rad`` (optionally ``,phase_std_rad``), one row per gray
  level, ``#`` comment lines anywhere; a comment ``# wavelength_m = 6.33e-07`` records the
  wavelength. Written with 17 significant digits, so a table survives the round trip bit
  for bit (an export verified against the same LUT read from another file then matches).
* **HDF5** — a group (default ``/lut``) with datasets ``gray`` (``units`` "gray"),
  ``phase_rad`` (``units`` "rad") and optionally ``phase_std_rad`` (rad); the wavelength is
  the group attribute ``wavelength_m`` or, failing that, the file's ``/instrument/wavelength_m``
  dataset. This is the ``/lut`` group of CALIBRATION.h5 (written through
  :func:`write_lut_group`).

:func:`read_lut_file` tells the two apart by content (the HDF5 signature), not by the name.
Problems raise :class:`~optics.errors.LUTError` naming the file, the line or dataset and the fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .errors import LUTError
from .fileio import refuse_foreign_data, write_text
from .slm import PhaseLUT

__all__ = ["LUTTable", "write_lut_csv", "read_lut_csv", "write_lut_group", "read_lut_group", "read_lut_file",
           "CSV_COLUMNS"]

CSV_COLUMNS = ("gray", "phase_rad", "phase_std_rad")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class LUTTable:
    """A gray → phase table as stored (no interpolation yet; :meth:`phase_lut` builds the LUT)."""

    gray: np.ndarray                        # int64, strictly increasing
    phase_rad: np.ndarray                   # float64
    phase_std_rad: Optional[np.ndarray] = None
    wavelength_m: Optional[float] = None    # where the table was measured; None: not recorded
    source: str = ""

    def phase_lut(self, *, bit_depth: Optional[int] = None) -> PhaseLUT:
        """:meth:`optics.slm.PhaseLUT.tabulated` of this table (``bit_depth`` default: from the gray range)."""
        return PhaseLUT.tabulated(self.gray, self.phase_rad, bit_depth=bit_depth)


def _table(gray, phase_rad, phase_std_rad, wavelength_m, source: str) -> LUTTable:
    where = f"{source}: " if source else ""
    for name, v in (("gray", gray), ("phase_rad", phase_rad), ("phase_std_rad", phase_std_rad)):
        if v is not None and np.iscomplexobj(v):
            raise LUTError(f"{where}{name} holds complex values; a LUT is real (gray levels, phases in rad)")
    g = np.asarray(gray)
    p = np.asarray(phase_rad, dtype=np.float64)
    if g.ndim != 1 or p.shape != g.shape:
        raise LUTError(f"{where}gray and phase_rad must be 1-D of equal length, got shapes {g.shape} and {p.shape}")
    if g.size < 2:
        raise LUTError(f"{where}a LUT needs at least the two end gray levels, got {g.size} row(s)")
    gf = g.astype(np.float64)
    if not np.all(np.isfinite(gf)) or np.any(gf != np.round(gf)) or np.any(gf < 0):
        raise LUTError(f"{where}gray levels must be non-negative integers, got {g[:8].tolist()}…")
    if not np.all(np.isfinite(p)):
        i = int(np.flatnonzero(~np.isfinite(p))[0])
        raise LUTError(f"{where}phase_rad of gray {int(gf[i])} is {p[i]!r}; every phase must be finite")
    s = None
    if phase_std_rad is not None:
        s = np.asarray(phase_std_rad, dtype=np.float64)
        if s.shape != g.shape:
            raise LUTError(f"{where}phase_std_rad has shape {s.shape}, expected {g.shape} (one per gray level)")
    lam = None
    if wavelength_m is not None:
        lam = float(wavelength_m)
        if not (math.isfinite(lam) and 1e-7 <= lam <= 2e-5):
            raise LUTError(f"{where}wavelength_m = {lam!r} is not a wavelength in metres (100 nm … 20 µm); "
                           f"write it in SI units, e.g. 6.33e-07")
    return LUTTable(gf.astype(np.int64), p, s, lam, source)


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------
def write_lut_csv(path, gray, phase_rad, *, phase_std_rad=None, wavelength_m: Optional[float] = None,
                  comments: Iterable[str] = ()) -> Path:
    """Write a LUT CSV atomically (module docstring); ``comments`` become ``#`` lines on top."""
    t = _table(gray, phase_rad, phase_std_rad, wavelength_m, str(path))
    lines = [f"# {c}" for c in comments]
    if t.wavelength_m is not None:
        lines.append(f"# wavelength_m = {t.wavelength_m!r}")
    cols = CSV_COLUMNS if t.phase_std_rad is not None else CSV_COLUMNS[:2]
    lines.append(",".join(cols))
    for i in range(t.gray.size):
        row = [str(int(t.gray[i])), repr(float(t.phase_rad[i]))]
        if t.phase_std_rad is not None:
            row.append(repr(float(t.phase_std_rad[i])))
        lines.append(",".join(row))
    return write_text(path, "\n".join(lines) + "\n")


def read_lut_csv(path) -> LUTTable:
    """Read a LUT CSV (module docstring); :class:`~optics.errors.LUTError` names the line."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LUTError(f"LUT file {p} is not UTF-8 text ({exc}); give a CSV 'gray,phase_rad' or a CALIBRATION.h5") from None
    header = None
    rows = []
    lam = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if body.replace(" ", "").startswith("wavelength_m="):
                try:
                    lam = float(body.split("=", 1)[1])
                except ValueError:
                    raise LUTError(f"{p}:{no}: cannot read the wavelength in {raw!r}; write "
                                   f"'# wavelength_m = 6.33e-07'") from None
            continue
        cells = [c.strip() for c in line.split(",")]
        if header is None:
            header = cells
            missing = [c for c in CSV_COLUMNS[:2] if c not in header]
            if missing:
                raise LUTError(f"{p}:{no}: header {line!r} lacks {missing}; write the LUT as CSV with the header "
                               f"'gray,phase_rad' (optionally ',phase_std_rad')")
            continue
        if len(cells) != len(header):
            raise LUTError(f"{p}:{no}: {len(cells)} value(s) but the header has {len(header)} columns")
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            raise LUTError(f"{p}:{no}: {line!r} is not a row of numbers") from None
    if header is None:
        raise LUTError(f"{p}: no header line; write the LUT as CSV with the header 'gray,phase_rad'")
    a = np.asarray(rows, dtype=np.float64).reshape(-1, len(header))
    col = {name: a[:, header.index(name)] for name in CSV_COLUMNS if name in header}
    return _table(col["gray"], col["phase_rad"], col.get("phase_std_rad"), lam, str(p))


# ------------------------------------------------------------------------------------------------
# HDF5
# ------------------------------------------------------------------------------------------------
def write_lut_group(group, gray, phase_rad, *, phase_std_rad=None, wavelength_m: Optional[float] = None) -> None:
    """Write the LUT datasets into an open ``h5py.Group`` (module docstring), with units."""
    t = _table(gray, phase_rad, phase_std_rad, wavelength_m, getattr(group, "name", ""))
    for name, data, units in (("gray", t.gray, "gray"), ("phase_rad", t.phase_rad, "rad"),
                              ("phase_std_rad", t.phase_std_rad, "rad")):
        if data is not None:
            ds = group.create_dataset(name, data=data)
            ds.attrs["units"] = units
    if t.wavelength_m is not None:
        group.attrs["wavelength_m"] = t.wavelength_m
        group.attrs["wavelength_m_units"] = "m"


def _units(ds) -> str:
    u = ds.attrs.get("units", "")
    return u.decode() if isinstance(u, bytes) else str(u)


def read_lut_group(group, *, source: str = "") -> LUTTable:
    """Read the LUT datasets of an open ``h5py.Group``; every problem is listed at once."""
    src = source or getattr(group, "name", "")
    problems = []
    for name, units in (("gray", "gray"), ("phase_rad", "rad"), ("phase_std_rad", "rad")):
        ds = group.get(name)
        if ds is None:
            if name != "phase_std_rad":
                problems.append(f"{group.name}/{name} is missing")
        elif _units(ds) != units:
            problems.append(f"{group.name}/{name} has units {_units(ds)!r}, expected {units!r}")
    if problems:
        raise LUTError(f"{src}: not a LUT group:\n  - " + "\n  - ".join(problems))
    lam = group.attrs.get("wavelength_m")
    if lam is None:
        inst = group.file.get("instrument/wavelength_m")
        if inst is not None and _units(inst) == "m":
            lam = inst[()]
    std = group["phase_std_rad"][()] if "phase_std_rad" in group else None
    return _table(group["gray"][()], group["phase_rad"][()], std, None if lam is None else float(lam), src)


def read_lut_file(path, *, group: str = "lut") -> LUTTable:
    """A LUT from a CSV or from the ``group`` of an HDF5 file (e.g. CALIBRATION.h5), told apart
    by the file's content."""
    p = Path(path)
    if not p.is_file():
        raise LUTError(f"LUT file {p} does not exist; give a CSV 'gray,phase_rad' or a CALIBRATION.h5")
    with open(p, "rb") as fh:
        head = fh.read(len(_HDF5_SIGNATURE))
    if head != _HDF5_SIGNATURE:
        return read_lut_csv(p)
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise LUTError(f"{p} is not a readable HDF5 file (truncated?): {exc}") from None
    with f:
        refuse_foreign_data(f, p, LUTError, what="a calibration file")
        g = f.get(group)
        if g is None or not isinstance(g, h5py.Group):
            raise LUTError(f"{p} has no /{group} group; give a CALIBRATION.h5 written by `phaseforge calibrate` "
                           f"or a CSV 'gray,phase_rad'")
        return read_lut_group(g, source=f"{p}:/{group}")
