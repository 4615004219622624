"""The design file ``design.h5``: learned (or any) phase masks ready for hardware export.

One reader/writer for the file that training writes and fabrication / calibration read.

Layout (HDF5)::

    /phase_rad          float32 (L, h, w)   phase per SLM pixel / DOE cell, radians
                        attrs: units = "rad"
    /  (root attributes)
        format           "phaseforge-design"
        format_version   "1"
        pixel_pitch_m    float   pitch of the phase grid (SLM pixel or DOE cell), metres
        wavelength_m     float   design wavelength, metres
        levels           int     number of equispaced phase levels (absent: continuous)
        z_m              float   mask-to-detector distance the design was made for, metres
        method           str     propagation method of the design (optics.propagation)
        units            JSON    {"pixel_pitch_m": "m", "wavelength_m": "m", "z_m": "m", ...}
        software         str     "phaseforge <version>"
        source           str     what produced it (a run folder, a .npy, a dataset ...)
        created          str     ISO-8601 UTC time
        extra            JSON    optional free-form provenance (run id, config hash ...)

Every array travels with its grid: a phase map without its pitch and wavelength cannot be
written. The file is written to ``design.h5.tmp`` and renamed when complete.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from . import _validate
from .errors import OpticsError, ShapeError
from .fileio import atomic_path, malformed_file, refuse_foreign_data

__all__ = ["Design", "DesignError", "write_design", "read_design", "FORMAT", "FORMAT_VERSION"]

FORMAT = "phaseforge-design"
FORMAT_VERSION = "1"
_UNITS = {"pixel_pitch_m": "m", "wavelength_m": "m", "z_m": "m", "phase_rad": "rad", "levels": "1"}


class DesignError(OpticsError):
    """A design file or design array is malformed; the message names what and the fix."""


@dataclass
class Design:
    """Phase masks with their grid: ``phase_rad`` (L, h, w) float32 radians on a square grid of
    ``pixel_pitch_m``, for ``wavelength_m``; ``levels`` equispaced phase levels or ``None``
    (continuous); the distance and method the design was made for; provenance."""

    phase_rad: np.ndarray
    pixel_pitch_m: float
    wavelength_m: float
    levels: Optional[int] = None
    z_m: Optional[float] = None
    method: Optional[str] = None
    source: str = ""
    software: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_masks(self) -> int:
        return int(self.phase_rad.shape[0])

    @property
    def shape(self):
        return tuple(int(s) for s in self.phase_rad.shape[-2:])

    def mask(self, index: int = 0) -> np.ndarray:
        """One ``(h, w)`` phase map; ``index`` counts from 0 (negative from the end)."""
        n = self.n_masks
        if not isinstance(index, (int, np.integer)) or not -n <= int(index) < n:
            raise DesignError(f"mask index {index!r} is out of range for a design with {n} mask(s); "
                              f"use an index in 0 … {n - 1}")
        return self.phase_rad[int(index)]


def _check_phase(phase_rad) -> np.ndarray:
    try:
        import torch
        if isinstance(phase_rad, torch.Tensor):
            if phase_rad.is_complex():
                raise DesignError("phase_rad must be real phases in radians, got a complex tensor; "
                                  "pass torch.angle(modulation)")
            phase_rad = phase_rad.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    a = np.asarray(phase_rad)
    if np.iscomplexobj(a):
        raise DesignError("phase_rad must be real phases in radians, got complex values; pass np.angle(mask)")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape) < 1:
        raise ShapeError(f"phase_rad must have shape (L, h, w) or (h, w), got {a.shape}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        bad = int((~np.isfinite(a)).sum())
        raise DesignError(f"phase_rad contains {bad} NaN/inf value(s); a design must be finite — "
                          f"repair the phase map (numpy.nan_to_num) or re-export it")
    return a


def _check_levels(levels) -> Optional[int]:
    if levels is None:
        return None
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or int(levels) < 2:
        raise DesignError(f"levels must be an int >= 2 (number of phase levels) or None for a "
                          f"continuous design, got {levels!r}")
    return int(levels)


def write_design(path: Union[str, Path], phase_rad, *, pixel_pitch_m: float, wavelength_m: float,
                 levels: Optional[int] = None, z_m: Optional[float] = None,
                 method: Optional[str] = None, source: str = "", extra: Optional[dict] = None,
                 overwrite: bool = False) -> Path:
    """Write a design file atomically (see the module docstring for the layout).

    ``phase_rad`` is ``(L, h, w)`` or ``(h, w)`` (numpy or torch), radians, on the grid of
    ``pixel_pitch_m``. An existing file is refused unless ``overwrite=True``.
    """
    import h5py

    p = Path(path)
    if p.exists() and not overwrite:
        raise DesignError(f"{p} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not p.parent.exists():
        raise DesignError(f"output folder {p.parent} does not exist; create it first (mkdir -p {p.parent})")
    a = _check_phase(phase_rad)
    dx = _validate.pitch("pixel_pitch_m", pixel_pitch_m)
    lam = _validate.wavelength(wavelength_m)
    lv = _check_levels(levels)
    z = None if z_m is None else _validate.finite_scalar("z_m", z_m)
    with atomic_path(p, keep_partial=False) as tmp:
        with h5py.File(tmp, "w") as f:
            d = f.create_dataset("phase_rad", data=a, chunks=(1,) + a.shape[1:], compression="gzip")
            d.attrs["units"] = "rad"
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["pixel_pitch_m"] = dx
            f.attrs["wavelength_m"] = lam
            if lv is not None:
                f.attrs["levels"] = lv
            if z is not None:
                f.attrs["z_m"] = z
            if method is not None:
                f.attrs["method"] = str(method)
            f.attrs["units"] = json.dumps({k: v for k, v in _UNITS.items() if k != "phase_rad"})
            f.attrs["software"] = f"phaseforge {_version()}"
            f.attrs["source"] = str(source)
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["extra"] = json.dumps(extra or {}, default=str)
    return p


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("phaseforge")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "unknown"


def read_design(path: Union[str, Path]) -> Design:
    """Read and validate a design file; every problem found is listed in one :class:`DesignError`."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise DesignError(f"design file {p} does not exist")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DesignError(f"{p} is not a readable HDF5 file ({exc}); is it a design.h5?") from exc
    with f, malformed_file(p, DesignError, what="design file"):
        refuse_foreign_data(f, p, DesignError, what="a design file")
        problems = []
        if f.attrs.get("format") != FORMAT:
            problems.append(f"root attribute format is {f.attrs.get('format')!r}, expected {FORMAT!r}")
        if "phase_rad" not in f:
            problems.append("dataset /phase_rad is missing")
        elif f["phase_rad"].attrs.get("units") != "rad":
            problems.append(f"/phase_rad has units {f['phase_rad'].attrs.get('units')!r}, expected 'rad'")
        for key in ("pixel_pitch_m", "wavelength_m"):
            if key not in f.attrs:
                problems.append(f"root attribute {key} is missing")
        if problems:
            raise DesignError(f"{p} is not a valid design file: " + "; ".join(problems))
        a = _check_phase(f["phase_rad"][...])
        lv = f.attrs.get("levels")
        z = f.attrs.get("z_m")
        method = f.attrs.get("method")
        try:
            extra = json.loads(f.attrs.get("extra", "{}"))
        except json.JSONDecodeError:
            extra = {}
        dx = float(f.attrs["pixel_pitch_m"])
        lam = float(f.attrs["wavelength_m"])
        try:
            _validate.pitch("pixel_pitch_m", dx)
            _validate.wavelength(lam)
        except OpticsError as exc:
            raise DesignError(f"{p}: {exc}") from exc
        return Design(phase_rad=a, pixel_pitch_m=dx, wavelength_m=lam,
                      levels=None if lv is None else int(lv),
                      z_m=None if z is None or not math.isfinite(float(z)) else float(z),
                      method=None if method is None else str(method),
                      source=str(f.attrs.get("source", "")), software=str(f.attrs.get("software", "")),
                      created=str(f.attrs.get("created", "")), extra=extra)
