"""Shared output helpers of :mod:`fabrication`: refusal of existing outputs, hashes, JSON sidecars."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from optics.fileio import sha256_file  # noqa: F401  (re-exported: the export modules import it from here)

from .errors import OutputExistsError


def check_outputs(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` listing every existing output unless ``overwrite``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"output(s) exist: {', '.join(existing)}; pass overwrite=True "
                                f"(CLI: --overwrite) to replace them, or choose another --out")


def sha256_array(a: np.ndarray) -> str:
    """SHA-256 of an array's values: C order, little-endian, its dtype (stated beside the hash)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()




def sidecar_path(path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")


def software_version() -> str:
    try:
        from importlib.metadata import version
        return version("phaseforge")
    except Exception:  # noqa: BLE001 - running from a checkout, not installed
        return "unknown"


def utc_now() -> str:
    import datetime as _dt
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def positive(name: str, value, *, unit: str, lo: float = 0.0, hi: float = float("inf"), hint: str = "") -> float:
    """A finite number in ``(lo, hi]`` (SI units), else :class:`FabricationError` naming value, range and fix."""
    import math

    from .errors import FabricationError
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FabricationError(f"{name} must be a number in {unit}, got {value!r}") from None
    if not (math.isfinite(v) and lo < v <= hi):
        raise FabricationError(f"{name} = {value!r} {unit} is outside ({lo:g}, {hi:g}] {unit}{'; ' + hint if hint else ''}")
    return v


def pitch(name: str, value) -> float:
    return positive(name, value, unit="m", hi=0.1, hint="pitches are in metres (8 µm is 8e-6)")


def wavelength(name: str, value) -> float:
    return positive(name, value, unit="m", lo=1e-9 * (1 - 1e-12), hi=1e-3,
                    hint="wavelengths are in metres (633 nm is 633e-9)")
