"""The one reader/writer of CDP (coded diffraction pattern) dataset files.

File layout, ``format_version`` "1"
===================================
One HDF5 file (written with ``libver="v110"``, i.e. readable by HDF5 ≥ 1.10)::

    /                                 root attributes:
        format_version    str   "1"
        software          str   "phaseforge"
        software_version  str   version of the software that wrote the file
        seed              int   the run's seed (per-sample generators derive from it, see below)
        n_samples         int   N, samples in this file
        n_written         int   samples written so far (updated after every batch; = N when done)
        complete          bool  True once every sample is written — set last
        config_yaml       str   the fully resolved config of the run ("" if none)
        rng               str   how the per-sample generators are seeded
      (shard files only)
        shard_index       int   i
        shard_count       int   n
        sample_offset     int   first global sample index of this shard, i·N_total // n
        n_samples_total   int   N_total, samples of the whole (unsharded) dataset
      (merged files only)
        merged_from       str[] shard files, relative to the merged file's folder

    /objects          (N, H, W)       complex64  units "1"     chunks (1, H, W)
    /measurements     (N, L, Mh, Mw)  float32    units "DN" | "photons" | "e-" | "arb" | …
                                                           chunks (1, L, Mh, Mw)
    /masks            (L, Hm, Wm)     float32    units "rad"   the phase of each modulation M_l
    /mask_amplitude   (L, Hm, Wm)     float32    units "1"     only when |M_l| is not 1
                                                               (e.g. octanary masks)
    /parameters/…     groups and attributes: the ``params`` tree (see below)

Every dataset also has an ``axes`` attribute naming its axes (``"sample,y,x"``,
``"sample,mask,y,x"``, ``"mask,y,x"``). Storage: one sample (or one mask) per chunk, gzip level 4
with the byte-shuffle filter (gzip rather than lzf because every HDF5 reader has it; shuffle
because it helps float data). In a merged file ``objects`` and ``measurements`` are HDF5 virtual
datasets over the shard files (relative paths: keep the shards next to the merged file).

The model: ``measurements[n, l] = simulate(objects[n])[l]``, e.g. ``|P(M_l ⊙ x_n)|²`` plus noise,
with ``M_l = mask_amplitude[l] · exp(i·masks[l])``.

Parameters and units
--------------------
``params`` is a nested dict. Each nested dict becomes an HDF5 group under ``/parameters``
(``params["optics"]["wavelength_m"]`` → attribute ``wavelength_m`` of group
``/parameters/optics``). Leaf values: ``bool``, ``int``, ``float``, ``str``, ``None`` (stored as
an empty attribute), lists/tuples/arrays of numbers or of strings. Read back, numbers come back
as Python scalars and lists/tuples/arrays as lists.

Units: an attribute whose name ends in a unit suffix gets a sibling string attribute
``<name>__units``::

    _m → "m"    _m2 → "m^2"   _per_m → "1/m"   _rad_per_m → "rad/m"   _s → "s"
    _rad → "rad"   _deg → "deg"   _e → "e-"   _dn → "DN"   _photons → "photons"
    _w → "W"    _hz → "Hz"    _j → "J"

(longest suffix wins, case-insensitive). A ``"<name>__units": "..."`` entry given in ``params``
is stored as is and takes precedence. :func:`read_params` returns the ``__units`` entries
(``with_units=False`` drops them), so ``write(read_params(f))`` reproduces the tree.

Randomness
----------
Sample ``i`` (global index, also in shard files) gets its own ``torch.Generator`` seeded with
:func:`sample_seed` ``(seed, i)`` — 63 bits from ``numpy.random.SeedSequence([seed, i])`` — so a
file's content does not depend on batch size, on where an interrupted run was resumed, or on
sharding, and different ``(seed, i)`` pairs do not collide the way ``seed·K + i`` would.

Writing protocol
----------------
Data go to ``<name>.tmp`` (``DATA.h5`` → ``DATA.h5.tmp``), batch by batch (memory does not grow
with N); after each batch ``n_written`` is updated and the file flushed. When all samples are
in, ``complete`` is set to True and the file is renamed to its final name with ``os.replace``,
so a file at the final name is always complete. ``resume=True`` continues an interrupted
``.tmp``; ``shard=(i, n)`` writes ``DATA.shard-i-of-n.h5``; :func:`merge_shards` joins shards
into one file of virtual datasets.
"""
from __future__ import annotations

import glob
import io
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py

from optics.fileio import tmp_path_for
import numpy as np
import torch

from .errors import (DatasetExistsError, DatasetFormatError, DatasetIncompleteError,
                     DatasetNotFoundError, DatasetVersionError, LearningError, ParamsError,
                     ResumeMismatchError, ShardError, SimulationOutputError)
from .images import sequence_index, split_indices

__all__ = [
    "FORMAT_VERSION", "SOFTWARE", "UNIT_SUFFIXES", "COMPRESSION", "COMPRESSION_OPTS",
    "write_cdp_dataset", "merge_shards", "shard_path", "shard_from_env", "tmp_path",
    "sample_seed", "sample_generator", "open_cdp_file", "read_params", "read_masks",
    "read_attributes", "unit_for", "CDPDataset",
]

FORMAT_VERSION = "1"
SOFTWARE = "phaseforge"
COMPRESSION = "gzip"
COMPRESSION_OPTS = 4
LIBVER = "v110"
UNITS_SUFFIX = "__units"
#: Attribute-name suffix → unit (longest match wins; case-insensitive).
UNIT_SUFFIXES: dict[str, str] = {
    "_rad_per_m": "rad/m", "_per_m": "1/m", "_m2": "m^2", "_m": "m", "_s": "s",
    "_rad": "rad", "_deg": "deg", "_e": "e-", "_dn": "DN", "_photons": "photons",
    "_w": "W", "_hz": "Hz", "_j": "J",
}
_SHARD_ATTRS = ("shard_index", "shard_count", "sample_offset", "n_samples_total")
_RNG_DOC = ("torch.Generator per sample i, manual_seed(learning.h5io.sample_seed(seed, i)) = "
            "63 bits of numpy.random.SeedSequence([seed, i]).generate_state(2, uint32)")
_AXES = {"objects": "sample,y,x", "measurements": "sample,mask,y,x", "masks": "mask,y,x",
         "mask_amplitude": "mask,y,x"}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def tmp_path(path) -> Path:
    """The temporary name a file is written under before it is complete: ``<name>.tmp``
    (the project-wide convention of :func:`optics.fileio.tmp_path_for`)."""
    return tmp_path_for(path)


def shard_path(path, index: int, count: int) -> Path:
    """``DATA.h5`` → ``DATA.shard-{index}-of-{count}.h5`` (same folder)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.shard-{index}-of-{count}{p.suffix}")


def sample_seed(seed: int, i: int) -> int:
    """The 63-bit seed of sample ``i``'s generator: ``SeedSequence([seed, i])`` → 2 words."""
    w = np.random.SeedSequence([int(seed), int(i)]).generate_state(2, dtype=np.uint32)
    return ((int(w[0]) << 32) | int(w[1])) & ((1 << 63) - 1)


def sample_generator(seed: int, i: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for sample ``i`` of a run with ``seed`` (:func:`sample_seed`)."""
    return torch.Generator().manual_seed(sample_seed(seed, i))


def unit_for(name: str) -> str | None:
    """The unit implied by an attribute name's suffix (:data:`UNIT_SUFFIXES`), or None."""
    low = name.lower()
    for suffix in sorted(UNIT_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix) and len(low) > len(suffix):
            return UNIT_SUFFIXES[suffix]
    return None


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` from torchrun's environment, or None when ``WORLD_SIZE`` is unset
    or 1 (single process)."""
    env = os.environ if environ is None else environ
    ws = env.get("WORLD_SIZE")
    if ws is None or ws.strip() in ("", "1"):
        return None
    rank = env.get("RANK")
    try:
        n = int(ws)
        i = int(rank) if rank is not None else None
    except ValueError as exc:
        raise ShardError(f"WORLD_SIZE={ws!r} and RANK={rank!r} must be integers "
                         f"(as set by torchrun)") from exc
    if i is None:
        raise ShardError(f"WORLD_SIZE={n} is set but RANK is not; launch with torchrun, or "
                         f"unset WORLD_SIZE for a single-process run")
    if n < 1 or not 0 <= i < n:
        raise ShardError(f"RANK={i} must satisfy 0 ≤ RANK < WORLD_SIZE={n}")
    return i, n


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LearningError(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    return int(value)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _py(value):
    """An HDF5 attribute value as a plain Python value."""
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


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------
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


def _write_params(group: h5py.Group, params: Mapping, prefix: str) -> None:
    if not isinstance(params, Mapping):
        raise ParamsError(f"{prefix or 'params'} must be a dict (nested dicts of values); got "
                          f"{type(params).__name__}")
    for key, value in params.items():
        kp = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise ParamsError(f"parameter key {kp!r} must be a non-empty string without '/'")
        if isinstance(value, Mapping):
            _write_params(group.create_group(key, track_order=True), value, kp)
            continue
        if key.endswith(UNITS_SUFFIX) and not isinstance(value, str):
            raise ParamsError(f"parameter {kp} names a unit and must be a string; got {value!r}")
        group.attrs[key] = _attr_value(value, kp)
        if not key.endswith(UNITS_SUFFIX) and key + UNITS_SUFFIX not in params:
            unit = unit_for(key)
            if unit is not None:
                group.attrs[key + UNITS_SUFFIX] = unit


def _read_params_group(group: h5py.Group, with_units: bool = True) -> dict:
    out: dict = {}
    for key, value in group.attrs.items():
        if not with_units and key.endswith(UNITS_SUFFIX):
            continue
        out[key] = _py(value)
    for key, sub in group.items():
        if isinstance(sub, h5py.Group):
            out[key] = _read_params_group(sub, with_units)
    return out


def _normalize_params(params: Mapping) -> dict:
    """``params`` as :func:`read_params` would return it after writing (units added, tuples →
    lists, numpy scalars → Python)."""
    with h5py.File(io.BytesIO(), "w") as f:
        g = f.create_group("parameters", track_order=True)
        _write_params(g, params, "")
        return _read_params_group(g)


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        kp = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(_flatten(v, kp))
        else:
            out[kp] = v
    return out


def _params_diff(old: Mapping, new: Mapping, old_name: str, new_name: str) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        va = repr(a[k]) if k in a else "absent"
        vb = repr(b[k]) if k in b else "absent"
        if k not in a or k not in b or a[k] != b[k]:
            diffs.append(f"parameter {k}: {va} ({old_name}) vs {vb} ({new_name})")
    return diffs


# --------------------------------------------------------------------------------------------
# validation of inputs to the writer
# --------------------------------------------------------------------------------------------
def _mask_array(m, name: str) -> np.ndarray:
    t = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if np.iscomplexobj(t):
        raise LearningError(f"{name} is complex; pass the phase in radians (real) and, if the "
                            f"modulation is not unit-modulus, its modulus as mask_amplitude")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.size == 0:
        raise LearningError(f"{name} has shape {t.shape}; expected (L, Hm, Wm)")
    t = t.astype(np.float32)
    if not np.all(np.isfinite(t)):
        raise LearningError(f"{name} contains NaN or inf")
    return t


def _object_at(objects, i: int, shape: tuple[int, int] | None) -> torch.Tensor:
    x = objects[i]
    x = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not x.is_complex():
        raise LearningError(
            f"object {i} has dtype {x.dtype}; objects must be complex (H, W) tensors — build "
            f"them with learning.encoding.ObjectSet / encode")
    if x.ndim != 2 or (shape is not None and tuple(x.shape) != shape):
        exp = f"{shape}" if shape is not None else "(H, W)"
        raise LearningError(f"object {i} has shape {tuple(x.shape)}; expected {exp} like object 0")
    x = x.to(torch.complex64)
    if not bool(torch.isfinite(torch.view_as_real(x)).all()):
        raise LearningError(f"object {i} contains NaN or inf")
    return x


def _check_measurements(y, b: int, n_masks: int, expected: tuple | None,
                        idx: range) -> np.ndarray:
    where = f"samples {idx.start}..{idx.stop - 1}"
    if not isinstance(y, torch.Tensor):
        raise SimulationOutputError(
            f"simulate returned {type(y).__name__} for {where}; it must return a torch tensor "
            f"(B, L, Mh, Mw)")
    if y.is_complex() or not y.is_floating_point():
        raise SimulationOutputError(f"simulate returned dtype {y.dtype} for {where}; measurements "
                                    f"must be real floating point (intensities)")
    if y.ndim != 4 or y.shape[0] != b or y.shape[1] != n_masks:
        raise SimulationOutputError(
            f"simulate returned shape {tuple(y.shape)} for {where}; expected (B={b}, L={n_masks}, "
            f"Mh, Mw) — one measurement per mask for every object of the batch")
    if expected is not None and tuple(y.shape[1:]) != expected:
        raise SimulationOutputError(
            f"simulate returned measurements of shape {tuple(y.shape[1:])} for {where} but "
            f"earlier samples have {expected}")
    y = y.detach().to("cpu", torch.float32).numpy()
    if not np.all(np.isfinite(y)):
        bad = [idx.start + k for k in range(b) if not np.all(np.isfinite(y[k]))]
        raise SimulationOutputError(f"simulate returned NaN or inf for samples {bad[:10]}")
    return y


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------
def _create_file(tmp: Path, *, n: int, obj_shape, meas_shape, masks, mask_amp, params,
                 config_yaml, software_version, seed, measurement_units,
                 shard_attrs: dict) -> h5py.File:
    f = h5py.File(tmp, "w", libver=LIBVER)
    try:
        a = f.attrs
        a["format_version"] = FORMAT_VERSION
        a["software"] = SOFTWARE
        a["software_version"] = str(software_version)
        a["seed"] = np.int64(seed)
        a["n_samples"] = np.int64(n)
        a["n_written"] = np.int64(0)
        a["complete"] = np.bool_(False)
        a["config_yaml"] = config_yaml
        a["rng"] = _RNG_DOC
        for k, v in shard_attrs.items():
            a[k] = np.int64(v)
        comp = dict(compression=COMPRESSION, compression_opts=COMPRESSION_OPTS, shuffle=True)
        d = f.create_dataset("objects", shape=(n, *obj_shape), dtype=np.complex64,
                             chunks=(1, *obj_shape), **comp)
        d.attrs["units"] = "1"
        d.attrs["axes"] = _AXES["objects"]
        d = f.create_dataset("measurements", shape=(n, *meas_shape), dtype=np.float32,
                             chunks=(1, *meas_shape), **comp)
        d.attrs["units"] = measurement_units
        d.attrs["axes"] = _AXES["measurements"]
        d = f.create_dataset("masks", data=masks, chunks=(1, *masks.shape[1:]), **comp)
        d.attrs["units"] = "rad"
        d.attrs["axes"] = _AXES["masks"]
        if mask_amp is not None:
            d = f.create_dataset("mask_amplitude", data=mask_amp, chunks=(1, *mask_amp.shape[1:]),
                                 **comp)
            d.attrs["units"] = "1"
            d.attrs["axes"] = _AXES["mask_amplitude"]
        _write_params(f.create_group("parameters", track_order=True), params, "")
        f.flush()
    except BaseException:
        f.close()
        raise
    return f


def _resume_check(f: h5py.File, tmp: Path, *, n, obj_shape, masks, mask_amp, params_norm,
                  config_yaml, software_version, seed, measurement_units, shard_attrs,
                  objects, start) -> int:
    a = f.attrs
    diffs: list[str] = []

    def cmp(name, file_value, now_value):
        if file_value != now_value:
            diffs.append(f"{name}: {file_value!r} (the file) vs {now_value!r} (now)")

    cmp("format_version", _py(a.get("format_version")), FORMAT_VERSION)
    cmp("seed", _py(a.get("seed")), seed)
    cmp("n_samples", _py(a.get("n_samples")), n)
    cmp("software_version", _py(a.get("software_version")), str(software_version))
    cmp("config_yaml", _py(a.get("config_yaml")), config_yaml)
    for k in _SHARD_ATTRS:
        cmp(k, _py(a.get(k)), shard_attrs.get(k))
    for name in ("objects", "measurements", "masks", "parameters"):
        if name not in f:
            diffs.append(f"{name} missing from the file")
    if diffs:
        raise _resume_error(tmp, diffs)
    cmp("object shape", tuple(f["objects"].shape[1:]), tuple(obj_shape))
    cmp("measurement units", _py(f["measurements"].attrs.get("units")), measurement_units)
    fm = f["masks"][...]
    if fm.shape != masks.shape or not np.array_equal(fm, masks):
        diffs.append(f"masks differ (file {fm.shape}, now {masks.shape})")
    has_amp = "mask_amplitude" in f
    if has_amp != (mask_amp is not None):
        diffs.append(f"mask_amplitude {'present' if has_amp else 'absent'} in the file, "
                     f"{'given' if mask_amp is not None else 'not given'} now")
    elif has_amp and not np.array_equal(f["mask_amplitude"][...], mask_amp):
        diffs.append("mask_amplitude differs")
    diffs += _params_diff(_read_params_group(f["parameters"]), params_norm, "the file", "now")
    k = _py(a.get("n_written"))
    if not isinstance(k, int) or not 0 <= k <= n:
        diffs.append(f"n_written = {k!r} is not in [0, {n}] (the file is damaged)")
    if not diffs and k > 0:
        for j in sorted({0, k - 1}):
            now = _object_at(objects, start + j, tuple(obj_shape)).numpy()
            if not np.array_equal(f["objects"][j], now):
                diffs.append(f"object {start + j} differs from the one in the file (the image "
                             f"source, split, encoding or their seed changed)")
                break
    if diffs:
        raise _resume_error(tmp, diffs)
    return k


def _resume_error(tmp: Path, diffs: list[str]) -> ResumeMismatchError:
    return ResumeMismatchError(
        f"cannot resume {tmp}: it was written with different inputs — " + "; ".join(diffs)
        + ". Rerun with the original settings, or pass overwrite=True (--overwrite) to start "
          "again from scratch")


def write_cdp_dataset(path, *, objects: Sequence,
                      simulate: Callable[[torch.Tensor, list[torch.Generator]], torch.Tensor],
                      masks_rad, mask_amplitude=None, params: Mapping, config_yaml: str = "",
                      software_version: str, seed: int, measurement_units: str = "DN",
                      batch_size: int = 16, resume: bool = False, overwrite: bool = False,
                      shard: tuple[int, int] | None = None, progress: bool = True,
                      max_batches: int | None = None) -> Path:
    """Simulate and write a CDP dataset (layout in the module docstring); return its path.

    Parameters
    ----------
    path : the final file, e.g. ``out/DATA.h5``. With ``shard=(i, n)`` the file written is
        :func:`shard_path` ``(path, i, n)`` and holds samples ``[i·N//n, (i+1)·N//n)``.
    objects : a sequence of complex ``(H, W)`` tensors (e.g. :class:`learning.encoding.ObjectSet`);
        ``N = len(objects)``. Stored as complex64.
    simulate : ``simulate(x, generators) -> y`` with ``x`` a complex64 ``(B, H, W)`` batch,
        ``generators[k]`` the generator of sample ``k`` of the batch (:func:`sample_generator`
        of the global index) and ``y`` a real ``(B, L, Mh, Mw)`` tensor (stored float32). It
        runs under ``torch.no_grad()`` and is never given more than ``batch_size`` samples.
    masks_rad, mask_amplitude : ``(L, Hm, Wm)`` phase [rad] and optional modulus of the masks.
    params, config_yaml : parameter tree (→ ``/parameters``) and resolved config text.
    software_version, seed : stored as root attributes; ``seed`` ≥ 0 seeds every sample.
    measurement_units : units of ``measurements`` ("DN", "photons", "e-", "arb", …).
    batch_size : samples per ``simulate`` call; the file content does not depend on it.
    resume : continue ``<file>.tmp`` left by an interrupted run (after checking it was written
        with the same seed, sizes, masks, params, config and software version — else
        :class:`ResumeMismatchError` listing what differs). Without a ``.tmp`` it starts afresh.
        The result equals an uninterrupted run's.
    overwrite : replace an existing final file (the old one stays until the new one is
        complete) and discard a stale ``.tmp``. Without it an existing final file raises
        :class:`DatasetExistsError`, and so does a stale ``.tmp`` when ``resume`` is False.
    progress : show a tqdm progress bar.
    max_batches : stop after this many batches of this call, leaving the ``.tmp`` incomplete
        exactly like an interruption (for tests and deliberate stops).

    Returns the final path when the file is complete, else the ``.tmp`` path (``max_batches``).
    """
    path = Path(path)
    n_total = len(objects)
    if n_total < 1:
        raise LearningError("objects is empty; nothing to simulate (check the image source)")
    seed = _check_int(seed, "seed", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if max_batches is not None:
        max_batches = _check_int(max_batches, "max_batches", 1)
    if not isinstance(measurement_units, str) or not measurement_units.strip():
        raise LearningError(f"measurement_units must be a non-empty string such as 'DN', "
                            f"'photons', 'e-' or 'arb'; got {measurement_units!r}")
    if not isinstance(config_yaml, str):
        raise LearningError(f"config_yaml must be a string (the resolved YAML text); got "
                            f"{type(config_yaml).__name__}")
    if shard is not None:
        try:
            si, sn = (int(v) for v in shard)
        except (TypeError, ValueError) as exc:
            raise ShardError(f"shard must be (index, count); got {shard!r}") from exc
        if sn < 1 or not 0 <= si < sn:
            raise ShardError(f"shard {shard!r}: need 0 ≤ index < count")
        if sn > n_total:
            raise ShardError(f"shard count {sn} exceeds the {n_total} samples; use at most "
                             f"{n_total} shards (processes)")
        start, stop = si * n_total // sn, (si + 1) * n_total // sn
        final = shard_path(path, si, sn)
        shard_attrs = {"shard_index": si, "shard_count": sn, "sample_offset": start,
                       "n_samples_total": n_total}
    else:
        start, stop, final, shard_attrs = 0, n_total, path, {}
    n = stop - start
    tmp = tmp_path(final)
    if final.exists() and not overwrite:
        raise DatasetExistsError(
            f"{final} already exists; pass overwrite=True (--overwrite) to replace it, or "
            f"choose another output path")
    masks = _mask_array(masks_rad, "masks_rad")
    mask_amp = None
    if mask_amplitude is not None:
        mask_amp = _mask_array(mask_amplitude, "mask_amplitude")
        if mask_amp.shape != masks.shape:
            raise LearningError(f"mask_amplitude has shape {mask_amp.shape} but masks_rad has "
                                f"{masks.shape}; they describe the same masks")
        if (mask_amp < 0).any():
            raise LearningError("mask_amplitude has negative values; it is a modulus (≥ 0)")
    params_norm = _normalize_params(params)
    obj_shape = tuple(_object_at(objects, start, None).shape)
    n_masks = masks.shape[0]

    f: h5py.File | None = None
    k = 0
    meas_shape = None
    if tmp.exists():
        if resume:
            try:
                f = h5py.File(tmp, "r+")
            except OSError as exc:
                raise ResumeMismatchError(
                    f"cannot open the interrupted file {tmp} ({exc}); it was probably damaged "
                    f"by the interruption — pass overwrite=True (--overwrite) to start again"
                ) from exc
            try:
                k = _resume_check(f, tmp, n=n, obj_shape=obj_shape, masks=masks,
                                  mask_amp=mask_amp, params_norm=params_norm,
                                  config_yaml=config_yaml, software_version=software_version,
                                  seed=seed, measurement_units=measurement_units,
                                  shard_attrs=shard_attrs, objects=objects, start=start)
            except BaseException:
                f.close()
                raise
            meas_shape = tuple(f["measurements"].shape[1:])
        elif overwrite:
            tmp.unlink()
        else:
            raise DatasetExistsError(
                f"{tmp} is left from an interrupted run; pass resume=True (--resume) to "
                f"continue it, or overwrite=True (--overwrite) to start again")

    from tqdm.auto import tqdm

    bar = tqdm(total=n, initial=k, disable=not progress, desc=final.name, unit="sample",
               dynamic_ncols=True)
    try:
        batches = 0
        while k < n and (max_batches is None or batches < max_batches):
            b = min(batch_size, n - k)
            idx = range(start + k, start + k + b)
            x = torch.stack([_object_at(objects, j, obj_shape) for j in idx])
            gens = [sample_generator(seed, j) for j in idx]
            with torch.no_grad():
                y = simulate(x, gens)
            y = _check_measurements(y, b, n_masks, meas_shape, idx)
            if f is None:
                meas_shape = tuple(y.shape[1:])
                f = _create_file(tmp, n=n, obj_shape=obj_shape, meas_shape=meas_shape,
                                 masks=masks, mask_amp=mask_amp, params=params,
                                 config_yaml=config_yaml, software_version=software_version,
                                 seed=seed, measurement_units=measurement_units,
                                 shard_attrs=shard_attrs)
            f["objects"][k:k + b] = x.numpy()
            f["measurements"][k:k + b] = y
            k += b
            f.attrs["n_written"] = np.int64(k)
            f.flush()
            batches += 1
            bar.update(b)
        if k < n:
            return tmp
        f.attrs["complete"] = np.bool_(True)
        f.close()
        f = None
        _fsync(tmp)
        os.replace(tmp, final)
        return final
    finally:
        bar.close()
        if f is not None:
            f.close()


# --------------------------------------------------------------------------------------------
# reading and validation
# --------------------------------------------------------------------------------------------
_REQUIRED = {
    "objects": (3, "c", "(N, H, W) complex64"),
    "measurements": (4, "f", "(N, L, Mh, Mw) float32"),
    "masks": (3, "f", "(L, Hm, Wm) float32 [rad]"),
}


def _validate(f: h5py.File, p: Path, allow_incomplete: bool) -> dict:
    a = f.attrs
    software = _py(a.get("software", "unknown"))
    version = _py(a.get("software_version", "unknown"))
    fv = a.get("format_version")
    if fv is None:
        raise DatasetVersionError(
            f"{p} has no format_version attribute (software: {software}); it is not a phaseforge "
            f"CDP dataset — simulate one with `phaseforge simulate`")
    fv = _py(fv)
    if str(fv) != FORMAT_VERSION:
        raise DatasetVersionError(
            f"{p}: dataset format {fv} from software {software} {version}; this phaseforge "
            f"reads format {FORMAT_VERSION}; re-simulate with `phaseforge simulate`")
    if not allow_incomplete and not bool(_py(a.get("complete", False))):
        raise DatasetIncompleteError(
            f"{p} is incomplete (interrupted run?): {_py(a.get('n_written', '?'))} of "
            f"{_py(a.get('n_samples', '?'))} samples written — resume with --resume "
            f"(write_cdp_dataset(..., resume=True))")
    found = ", ".join(f"{k} {v.shape}" if isinstance(v, h5py.Dataset) else k
                      for k, v in f.items()) or "nothing"
    shapes = {}
    for name, (ndim, kind, expected) in _REQUIRED.items():
        d = f.get(name)
        if not isinstance(d, h5py.Dataset):
            raise DatasetFormatError(
                f"{p}: required dataset '{name}' is missing (expected {expected}); the file "
                f"holds: {found}")
        if d.ndim != ndim or d.dtype.kind != kind:
            raise DatasetFormatError(
                f"{p}: dataset '{name}' is malformed: expected {expected}, found shape "
                f"{d.shape} dtype {d.dtype}")
        if "units" not in d.attrs:
            raise DatasetFormatError(f"{p}: dataset '{name}' has no 'units' attribute "
                                     f"(format {FORMAT_VERSION} requires one)")
        shapes[name] = d.shape
    n = shapes["objects"][0]
    if shapes["measurements"][0] != n:
        raise DatasetFormatError(
            f"{p}: 'measurements' holds {shapes['measurements'][0]} samples but 'objects' holds "
            f"{n}; expected the same N")
    n_attr = _py(a.get("n_samples"))
    if n_attr != n:
        raise DatasetFormatError(f"{p}: attribute n_samples = {n_attr!r} but datasets hold {n}")
    if shapes["masks"][0] != shapes["measurements"][1]:
        raise DatasetFormatError(
            f"{p}: 'masks' holds {shapes['masks'][0]} masks but 'measurements' has "
            f"L = {shapes['measurements'][1]} per sample; expected the same L")
    amp = f.get("mask_amplitude")
    if amp is not None and (not isinstance(amp, h5py.Dataset) or amp.shape != shapes["masks"]):
        raise DatasetFormatError(
            f"{p}: dataset 'mask_amplitude' is malformed: expected shape {shapes['masks']} "
            f"like 'masks', found {getattr(amp, 'shape', type(amp).__name__)}")
    for name in ("objects", "measurements"):
        d = f[name]
        if d.is_virtual:
            for vs in d.virtual_sources():
                src = Path(vs.file_name)
                src = src if src.is_absolute() else p.parent / src
                if vs.file_name != "." and not src.exists():
                    raise DatasetFormatError(
                        f"{p}: dataset '{name}' is virtual and its source file {src} is "
                        f"missing; keep the shard files next to the merged file, or merge again")
    return {"n": n, "object_shape": tuple(shapes["objects"][1:]),
            "measurement_shape": tuple(shapes["measurements"][1:])}


def open_cdp_file(path, *, allow_incomplete: bool = False) -> h5py.File:
    """Open a CDP dataset read-only after checking it (return an open ``h5py.File``).

    Raises :class:`DatasetNotFoundError` (no file; points to ``--resume`` when a ``.tmp``
    exists), :class:`DatasetFormatError` (not HDF5; a required dataset missing or malformed;
    inconsistent N or L; a virtual dataset's shard missing), :class:`DatasetVersionError`
    (``format_version`` missing or not "1"), :class:`DatasetIncompleteError` (``complete`` not
    True, unless ``allow_incomplete``). Use as a context manager.
    """
    p = Path(path)
    if not p.exists():
        t = tmp_path(p)
        if t.exists():
            raise DatasetNotFoundError(
                f"{p} does not exist but {t} does: the run writing it was interrupted; "
                f"resume with --resume (write_cdp_dataset(..., resume=True))")
        raise DatasetNotFoundError(f"{p} does not exist; simulate it with `phaseforge simulate`")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DatasetFormatError(
            f"{p} is not an HDF5 file (or is damaged): {exc}; CDP datasets are written by "
            f"`phaseforge simulate`") from exc
    try:
        _validate(f, p, allow_incomplete)
    except BaseException:
        f.close()
        raise
    return f


def read_params(path, *, with_units: bool = True) -> dict:
    """The ``/parameters`` tree of a dataset as nested dicts (``<name>__units`` entries
    included unless ``with_units=False``)."""
    with open_cdp_file(path) as f:
        g = f.get("parameters")
        return {} if g is None else _read_params_group(g, with_units)


def read_masks(path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(masks_rad, mask_amplitude)`` as float32 tensors ``(L, Hm, Wm)``; the modulus is None
    for unit-modulus masks."""
    with open_cdp_file(path) as f:
        masks = torch.from_numpy(f["masks"][...])
        amp = torch.from_numpy(f["mask_amplitude"][...]) if "mask_amplitude" in f else None
    return masks, amp


def read_attributes(path) -> dict:
    """The root attributes of a dataset as plain Python values (``config_yaml`` included)."""
    with open_cdp_file(path) as f:
        return {k: _py(v) for k, v in f.attrs.items()}


# --------------------------------------------------------------------------------------------
# shards
# --------------------------------------------------------------------------------------------
def _shard_info(p: Path) -> dict:
    with open_cdp_file(p) as f:
        a = f.attrs
        missing = [k for k in _SHARD_ATTRS if k not in a]
        if missing:
            raise ShardError(f"{p} is not a shard (no {', '.join(missing)} attribute); merge only "
                             f"files written with shard=(i, n)")
        info = {k: _py(a[k]) for k in _SHARD_ATTRS}
        info.update(
            path=p, n=int(f["objects"].shape[0]), seed=_py(a["seed"]),
            software_version=_py(a.get("software_version")),
            config_yaml=_py(a.get("config_yaml", "")),
            params=_read_params_group(f["parameters"]) if "parameters" in f else {},
            object_shape=tuple(f["objects"].shape[1:]),
            measurement_shape=tuple(f["measurements"].shape[1:]),
            measurement_units=_py(f["measurements"].attrs["units"]),
            masks=f["masks"][...],
            mask_amplitude=f["mask_amplitude"][...] if "mask_amplitude" in f else None,
        )
    return info


def _resolve_shards(shards) -> list[Path]:
    if isinstance(shards, (str, os.PathLike)):
        s = os.fspath(shards)
        if glob.has_magic(s):
            paths = [Path(q) for q in sorted(glob.glob(s))]
            if not paths:
                raise ShardError(f"no shard files match {s!r}")
            return paths
        return [Path(s)]
    paths = [Path(q) for q in shards]
    if not paths:
        raise ShardError("no shard files given to merge")
    return paths


def _sibling_shard(p: Path, i: int, count: int) -> Path:
    """The name shard ``i`` would have next to shard file ``p``."""
    name, k = re.subn(r"\.shard-\d+-of-\d+", f".shard-{i}-of-{count}", p.name)
    return p.with_name(name) if k else shard_path(p, i, count)


def merge_shards(shards, out_path, *, overwrite: bool = False) -> Path:
    """Join complete shard files into one dataset of HDF5 virtual datasets; return its path.

    ``shards`` is a list of shard paths or a glob pattern (``"out/DATA.shard-*-of-4.h5"``).
    The shards must be complete and consistent (same shard count, total N, seed, software
    version, config, params, masks, shapes and units) and cover samples ``0..N−1`` exactly once
    (else :class:`ShardError` naming the missing or duplicated shard). ``objects`` and
    ``measurements`` of the output are virtual datasets mapping the shards' datasets (source
    paths relative to the output's folder, so the folder can be moved; nothing is copied);
    ``masks``, ``mask_amplitude``, ``/parameters`` and the root attributes are copied, and
    ``merged_from`` lists the shards. Written to ``<out>.tmp`` and renamed when complete.
    """
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise DatasetExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to "
                                 f"replace it, or choose another output path")
    infos = [_shard_info(p) for p in _resolve_shards(shards)]
    ref = infos[0]
    diffs: list[str] = []
    for info in infos[1:]:
        for key in ("shard_count", "n_samples_total", "seed", "software_version", "config_yaml",
                    "object_shape", "measurement_shape", "measurement_units"):
            if info[key] != ref[key]:
                diffs.append(f"{key}: {ref[key]!r} in {ref['path']}, {info[key]!r} in "
                             f"{info['path']}")
        diffs += _params_diff(ref["params"], info["params"], str(ref["path"]), str(info["path"]))
        if not np.array_equal(ref["masks"], info["masks"]):
            diffs.append(f"masks differ between {ref['path']} and {info['path']}")
        ra, ia = ref["mask_amplitude"], info["mask_amplitude"]
        if (ra is None) != (ia is None) or (ra is not None and not np.array_equal(ra, ia)):
            diffs.append(f"mask_amplitude differs between {ref['path']} and {info['path']}")
    if diffs:
        raise ShardError("shards are inconsistent (written by different runs?): "
                         + "; ".join(diffs[:10]))
    count, total = ref["shard_count"], ref["n_samples_total"]
    by_index: dict[int, dict] = {}
    for info in infos:
        i = info["shard_index"]
        lo, hi = i * total // count, (i + 1) * total // count
        if (info["sample_offset"], info["n"]) != (lo, hi - lo):
            raise ShardError(f"{info['path']} claims shard {i} of {count} but holds samples "
                             f"{info['sample_offset']}..{info['sample_offset'] + info['n'] - 1} "
                             f"instead of {lo}..{hi - 1}; the file is damaged — rewrite it")
        if i in by_index:
            raise ShardError(
                f"{by_index[i]['path']} and {info['path']} are both shard {i} of {count} "
                f"(samples {lo}..{hi - 1} overlap); pass each shard once")
        by_index[i] = info
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        i = missing[0]
        lo, hi = i * total // count, (i + 1) * total // count
        raise ShardError(
            f"shard {i} of {count} (samples {lo}..{hi - 1}) is missing"
            + (f" (and shards {missing[1:]})" if len(missing) > 1 else "")
            + f": expected a file like {_sibling_shard(ref['path'], i, count)}; write it with "
              f"shard=({i}, {count}) and merge again")

    tmp = tmp_path(out)
    if tmp.exists():
        tmp.unlink()
    folder = out.resolve().parent
    ordered = [by_index[i] for i in range(count)]
    rel = [os.path.relpath(info["path"].resolve(), folder) for info in ordered]
    oshape, mshape = ref["object_shape"], ref["measurement_shape"]
    lay_o = h5py.VirtualLayout(shape=(total, *oshape), dtype=np.complex64)
    lay_m = h5py.VirtualLayout(shape=(total, *mshape), dtype=np.float32)
    for info, r in zip(ordered, rel):
        lo, k = info["sample_offset"], info["n"]
        lay_o[lo:lo + k] = h5py.VirtualSource(r, "objects", shape=(k, *oshape))
        lay_m[lo:lo + k] = h5py.VirtualSource(r, "measurements", shape=(k, *mshape))
    try:
        with h5py.File(ordered[0]["path"], "r") as src, h5py.File(tmp, "w", libver=LIBVER) as f:
            for k, v in src.attrs.items():
                if k not in _SHARD_ATTRS:
                    f.attrs[k] = v
            f.attrs["n_samples"] = np.int64(total)
            f.attrs["n_written"] = np.int64(total)
            f.attrs["complete"] = np.bool_(False)
            f.attrs["merged_from"] = np.array(rel, dtype=h5py.string_dtype())
            for name, lay in (("objects", lay_o), ("measurements", lay_m)):
                d = f.create_virtual_dataset(name, lay)
                for k, v in src[name].attrs.items():
                    d.attrs[k] = v
            for name in ("masks", "mask_amplitude", "parameters"):
                if name in src:
                    src.copy(src[name], f, name=name)
            f.attrs["complete"] = np.bool_(True)
        _fsync(tmp)
        os.replace(tmp, out)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return out


# --------------------------------------------------------------------------------------------
# torch Dataset
# --------------------------------------------------------------------------------------------
class CDPDataset(torch.utils.data.Dataset):
    """A CDP dataset file as a ``torch.utils.data.Dataset``.

    ``ds[i]`` is ``(measurement, object)``: a float32 tensor ``(L, Mh, Mw)`` and a complex64
    tensor ``(H, W)``. The file is checked with :func:`open_cdp_file` at construction, then
    opened lazily and read-only in each process (the owning pid is stored and the file reopened
    when it changes; the handle is never pickled), so it works with
    ``DataLoader(num_workers > 0)``.

    ``split`` ("train" | "val" | "test" | "all" | None) selects samples with
    :func:`learning.images.split_indices` (``N``, ``split``, ``split_seed`` — default: the
    file's seed, ``fractions``); None or "all" keeps every sample. ``in_memory=True`` loads the
    selected samples at construction (refused with a :class:`LearningError` if they would take
    more than 80 % of the available memory).
    """

    def __init__(self, path, *, in_memory: bool = False, split: str | None = None,
                 split_seed: int | None = None, fractions=(0.8, 0.1, 0.1)):
        self.path = Path(path)
        with open_cdp_file(self.path) as f:
            info = _validate(f, self.path, False)
            self.attrs = {k: _py(v) for k, v in f.attrs.items()}
            self._params = _read_params_group(f["parameters"]) if "parameters" in f else {}
            self._masks = torch.from_numpy(f["masks"][...])
            self._mask_amp = (torch.from_numpy(f["mask_amplitude"][...])
                              if "mask_amplitude" in f else None)
            self.measurement_units = _py(f["measurements"].attrs["units"])
        self.n_total = info["n"]
        self._object_shape = info["object_shape"]
        self._measurement_shape = info["measurement_shape"]
        if split is None or split == "all":
            self.indices = np.arange(self.n_total, dtype=np.int64)
        else:
            seed = self.attrs.get("seed", 0) if split_seed is None else split_seed
            self.indices = split_indices(self.n_total, split, seed, fractions)
        self.in_memory = bool(in_memory)
        self._file = None
        self._dsets = None
        self._pid = None
        self._mem = None
        if self.in_memory:
            self._load_all()

    # -- lazy file handle ---------------------------------------------------------------------
    def _datasets(self):
        if self._dsets is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._dsets = (self._file["measurements"], self._file["objects"])
            self._pid = os.getpid()
        return self._dsets

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 — closing at interpreter shutdown may fail
                pass
        self._file = self._dsets = self._pid = None

    def __del__(self):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = state["_dsets"] = state["_pid"] = None
        return state

    def _load_all(self) -> None:
        k = len(self.indices)
        per = (math.prod(self._measurement_shape) * 4 + math.prod(self._object_shape) * 8)
        need = k * per
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
        if avail is not None and need > 0.8 * avail:
            raise LearningError(
                f"in_memory=True needs {need / 2**30:.2f} GiB for {k} samples of {self.path} but "
                f"only {avail / 2**30:.2f} GiB are available; use in_memory=False (read lazily)")
        meas = torch.empty((k, *self._measurement_shape), dtype=torch.float32)
        objs = torch.empty((k, *self._object_shape), dtype=torch.complex64)
        with h5py.File(self.path, "r") as f:
            dm, do = f["measurements"], f["objects"]
            block = 256
            for s in range(0, k, block):
                idx = self.indices[s:s + block]
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                if hi - lo == len(idx):  # contiguous: one slab read
                    meas[s:s + len(idx)] = torch.from_numpy(dm[lo:hi])
                    objs[s:s + len(idx)] = torch.from_numpy(do[lo:hi])
                else:
                    meas[s:s + len(idx)] = torch.from_numpy(dm[idx])
                    objs[s:s + len(idx)] = torch.from_numpy(do[idx])
        self._mem = (meas, objs)

    # -- Dataset protocol ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i):
        j = sequence_index(i, len(self), "sample")
        if self._mem is not None:
            return self._mem[0][j], self._mem[1][j]
        dm, do = self._datasets()
        k = int(self.indices[j])
        return torch.from_numpy(dm[k]), torch.from_numpy(do[k])

    # -- metadata -----------------------------------------------------------------------------
    @property
    def n_masks(self) -> int:
        """L, measurements (masks) per sample."""
        return int(self._measurement_shape[0])

    @property
    def object_shape(self) -> tuple[int, int]:
        """(H, W) of the objects."""
        return self._object_shape

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        """(L, Mh, Mw) of one sample's measurements."""
        return self._measurement_shape

    @property
    def params(self) -> dict:
        """The ``/parameters`` tree (with ``__units`` entries), as :func:`read_params`."""
        return self._params

    @property
    def masks_rad(self) -> torch.Tensor:
        """Mask phases ``(L, Hm, Wm)`` float32 [rad]."""
        return self._masks

    @property
    def mask_amplitude(self) -> torch.Tensor | None:
        """Mask moduli ``(L, Hm, Wm)`` float32, or None for unit-modulus masks."""
        return self._mask_amp

    def __repr__(self) -> str:
        return (f"<CDPDataset {self.path}: {len(self)} samples, measurements "
                f"{self._measurement_shape} [{self.measurement_units}], objects "
                f"{self._object_shape}>")
