"""The attribute/units codec of CDP dataset files: a nested ``params`` dict ↔ HDF5 groups and
attributes under ``/parameters``, with a ``<name>__units`` sibling for unit-suffixed names.

``params["optics"]["wavelength_m"]`` → attribute ``wavelength_m`` of group ``/parameters/optics``
plus ``wavelength_m__units = "m"``. Leaf values: ``bool``, ``int``, ``float``, ``str``, ``None``
(stored as an empty attribute), lists/tuples/arrays of numbers or of strings. Read back, numbers
come back as Python scalars and lists/tuples/arrays as lists. Unit suffixes
(:data:`UNIT_SUFFIXES`, case-insensitive)::

    _m → "m"    _m2 → "m^2"   _s → "s"   _rad → "rad"   _deg → "deg"   _e → "e-"
    _dn → "DN"   _photons → "photons"   _w → "W"   _hz → "Hz"   _j → "J"

and ratios ``_<a>_per_<b>`` → ``"<a>/<b>"`` of two of them, ``_per_<b>`` → ``"1/<b>"`` when no
unit precedes ``_per_``: ``dark_current_e_per_s`` → ``"e-/s"``, ``gain_e_per_dn`` → ``"e-/DN"``,
``gain_dn_per_e`` → ``"DN/e-"``, ``k_rad_per_m`` → ``"rad/m"``, ``freq_per_m`` → ``"1/m"`` (the
quantity is what the whole suffix says, never only its last word).

A ``"<name>__units": "..."`` entry given in ``params`` is stored as is and takes precedence;
:func:`read_params_group` returns the ``__units`` entries (``with_units=False`` drops them), so
writing what it returns reproduces the tree.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping

import h5py
import numpy as np

from ..errors import ParamsError

__all__ = ["UNIT_SUFFIXES", "UNITS_SUFFIX", "unit_for", "py_value", "write_params",
           "read_params_group", "normalize_params", "params_diff", "flatten"]

UNITS_SUFFIX = "__units"
#: Attribute-name suffix → unit of a single quantity (case-insensitive); ratios
#: ``_<a>_per_<b>`` of two of them are composed by :func:`unit_for`.
UNIT_SUFFIXES: dict[str, str] = {
    "_m2": "m^2", "_m": "m", "_s": "s", "_rad": "rad", "_deg": "deg", "_e": "e-", "_dn": "DN",
    "_photons": "photons", "_w": "W", "_hz": "Hz", "_j": "J",
}
_PER = "_per_"


def _single_unit(name: str) -> str | None:
    """The unit of a lower-case name ending in one :data:`UNIT_SUFFIXES` entry (``"_s"`` alone
    is no name, so the suffix needs something before it)."""
    for suffix, unit in UNIT_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return unit
    return None


def unit_for(name: str) -> str | None:
    """The unit implied by an attribute name's suffix, or None: a single unit
    (:data:`UNIT_SUFFIXES`), or a ratio ``_<a>_per_<b>`` → ``"<a>/<b>"`` (``_per_<b>`` after a
    word that is no unit → ``"1/<b>"``). ``dark_current_e_per_s`` is in e⁻/s, not s."""
    low = name.lower()
    cut = low.rfind(_PER)
    if cut >= 0 or low.startswith("per_"):
        head, tail = (low[:cut], low[cut + len(_PER):]) if cut >= 0 else ("", low[len("per_"):])
        den = UNIT_SUFFIXES.get("_" + tail)
        if den is not None:
            num = UNIT_SUFFIXES.get("_" + head) or _single_unit(head)  # "e_per_s" or "current_e_per_s"
            return f"{num}/{den}" if num is not None else f"1/{den}"
    return _single_unit(low)


def py_value(value):
    """An HDF5 attribute value as a plain Python value (empty → None, bytes → str, arrays →
    lists, numpy scalars → Python scalars)."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.tolist()] \
            if value.ndim == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attr_value(value, key: str):
    if value is None:
        return h5py.Empty("f8")
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        if not -(2**63) <= int(value) < 2**63:
            raise ParamsError(f"parameter {key} = {value} does not fit in 64 bits")
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.size == 0:
            return np.zeros(0, dtype=np.float64)
        if arr.dtype.kind == "U":
            return np.array(arr.tolist(), dtype=h5py.string_dtype())
        if arr.dtype.kind == "b":
            return arr.astype(np.bool_)
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        if arr.dtype.kind == "f":
            return arr.astype(np.float64)
        raise ParamsError(
            f"parameter {key} = {value!r} is a list of mixed or unsupported types "
            f"(dtype {arr.dtype}); use a list of numbers or a list of strings")
    raise ParamsError(
        f"parameter {key} has type {type(value).__name__}; store bool, int, float, str, None, "
        f"lists of those, or nested dicts (convert dataclasses with dataclasses.asdict)")


def write_params(group: h5py.Group, params: Mapping, prefix: str = "") -> None:
    """Write the nested dict ``params`` into ``group`` (sub-dicts → sub-groups, leaves →
    attributes, unit-suffixed names → ``__units`` siblings)."""
    if not isinstance(params, Mapping):
        raise ParamsError(f"{prefix or 'params'} must be a dict (nested dicts of values); got "
                          f"{type(params).__name__}")
    for key, value in params.items():
        kp = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise ParamsError(f"parameter key {kp!r} must be a non-empty string without '/'")
        if isinstance(value, Mapping):
            write_params(group.create_group(key, track_order=True), value, kp)
            continue
        if key.endswith(UNITS_SUFFIX) and not isinstance(value, str):
            raise ParamsError(f"parameter {kp} names a unit and must be a string; got {value!r}")
        group.attrs[key] = _attr_value(value, kp)
        if not key.endswith(UNITS_SUFFIX) and key + UNITS_SUFFIX not in params:
            unit = unit_for(key)
            if unit is not None:
                group.attrs[key + UNITS_SUFFIX] = unit


def read_params_group(group: h5py.Group, with_units: bool = True) -> dict:
    """The nested dict stored in ``group`` (inverse of :func:`write_params`)."""
    out: dict = {}
    for key, value in group.attrs.items():
        if not with_units and key.endswith(UNITS_SUFFIX):
            continue
        out[key] = py_value(value)
    for key, sub in group.items():
        if isinstance(sub, h5py.Group):
            out[key] = read_params_group(sub, with_units)
    return out


def normalize_params(params: Mapping) -> dict:
    """``params`` as :func:`read_params_group` would return it after writing (units added,
    tuples → lists, numpy scalars → Python); raises :class:`ParamsError` for what cannot be
    stored, before any file is touched."""
    with h5py.File(io.BytesIO(), "w") as f:
        g = f.create_group("parameters", track_order=True)
        write_params(g, params, "")
        return read_params_group(g)


def flatten(d: Mapping, prefix: str = "") -> dict:
    """A nested mapping as ``{"a.b.c": value}`` (dotted key paths, as configs name them)."""
    out = {}
    for k, v in d.items():
        kp = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(flatten(v, kp))
        else:
            out[kp] = v
    return out


def params_diff(old: Mapping, new: Mapping, old_name: str, new_name: str) -> list[str]:
    """One line per dotted key whose value differs between two parameter trees."""
    a, b = flatten(old), flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        va = repr(a[k]) if k in a else "absent"
        vb = repr(b[k]) if k in b else "absent"
        if k not in a or k not in b or a[k] != b[k]:
            diffs.append(f"parameter {k}: {va} ({old_name}) vs {vb} ({new_name})")
    return diffs
