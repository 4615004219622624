"""Format constants, validation and readers of CDP dataset files (layout: :mod:`learning.h5io`)."""
from __future__ import annotations

from pathlib import Path

import h5py
import torch

from optics.fileio import tmp_path_for

from ..errors import (DatasetFormatError, DatasetIncompleteError, DatasetNotFoundError,
                      DatasetVersionError)
from .attrs import py_value, read_params_group
from .compression import check_filters

__all__ = ["FORMAT_VERSION", "SOFTWARE", "LIBVER", "AXES", "SHARD_ATTRS", "tmp_path", "shard_path",
           "validate", "open_cdp_file", "open_unchecked", "read_params", "read_masks", "read_attributes"]

FORMAT_VERSION = "1"
SOFTWARE = "phaseforge"
#: libver of the files the writer produces: the lowest bound ("earliest") keeps HDF5's
#: superblock free of the file-consistency flags that v110+ superblocks set while a file is
#: open for writing — after a hard kill those flags make HDF5 refuse to open the file at all
#: ("may use h5clear"). Files written with "v110" (phaseforge ≤ 0.1.0) read the same.
LIBVER = "earliest"
#: libver of merged files: virtual datasets need the 1.10 format.
LIBVER_VIRTUAL = "v110"
AXES = {"objects": "sample,y,x", "measurements": "sample,mask,y,x", "masks": "mask,y,x",
        "mask_amplitude": "mask,y,x"}
SHARD_ATTRS = ("shard_index", "shard_count", "sample_offset", "n_samples_total")
_REQUIRED = {
    "objects": (3, "c", "(N, H, W) complex64"),
    "measurements": (4, "f", "(N, L, Mh, Mw) float32"),
    "masks": (3, "f", "(L, Hm, Wm) float32 [rad]"),
}


def tmp_path(path) -> Path:
    """The temporary name a file is written under before it is complete: ``<name>.tmp``
    (the project-wide convention of :func:`optics.fileio.tmp_path_for`)."""
    return tmp_path_for(path)


def shard_path(path, index: int, count: int) -> Path:
    """``DATA.h5`` → ``DATA.shard-{index}-of-{count}.h5`` (same folder)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.shard-{index}-of-{count}{p.suffix}")


def validate(f: h5py.File, p: Path, allow_incomplete: bool) -> dict:
    """Check an open file against format 1; return ``{"n", "object_shape", "measurement_shape"}``."""
    a = f.attrs
    software = py_value(a.get("software", "unknown"))
    version = py_value(a.get("software_version", "unknown"))
    fv = a.get("format_version")
    if fv is None:
        raise DatasetVersionError(
            f"{p} has no format_version attribute (software: {software}); it is not a phaseforge "
            f"CDP dataset — simulate one with `phaseforge simulate`")
    fv = py_value(fv)
    if str(fv) != FORMAT_VERSION:
        raise DatasetVersionError(
            f"{p}: dataset format {fv} from software {software} {version}; this phaseforge "
            f"reads format {FORMAT_VERSION}; re-simulate with `phaseforge simulate`")
    if not allow_incomplete and not bool(py_value(a.get("complete", False))):
        raise DatasetIncompleteError(
            f"{p} is incomplete (interrupted run?): {py_value(a.get('n_written', '?'))} of "
            f"{py_value(a.get('n_samples', '?'))} samples written — resume with --resume "
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
        check_filters(d, p)
        shapes[name] = d.shape
    n = shapes["objects"][0]
    if shapes["measurements"][0] != n:
        raise DatasetFormatError(
            f"{p}: 'measurements' holds {shapes['measurements'][0]} samples but 'objects' holds "
            f"{n}; expected the same N")
    n_attr = py_value(a.get("n_samples"))
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
                if vs.file_name != ".":
                    with h5py.File(src, "r") as sf:
                        check_filters(sf[vs.dset_name], src)
    return {"n": n, "object_shape": tuple(shapes["objects"][1:]),
            "measurement_shape": tuple(shapes["measurements"][1:])}


def open_cdp_file(path, *, allow_incomplete: bool = False) -> h5py.File:
    """Open a CDP dataset read-only after checking it (return an open ``h5py.File``).

    Raises :class:`DatasetNotFoundError` (no file; points to ``--resume`` when a ``.tmp``
    exists), :class:`DatasetFormatError` (not HDF5; a required dataset missing or malformed;
    inconsistent N or L; a virtual dataset's shard missing; a compression filter this HDF5
    cannot decode, naming the package that provides it), :class:`DatasetVersionError`
    (``format_version`` missing or not "1"), :class:`DatasetIncompleteError` (``complete`` not
    True, unless ``allow_incomplete``). Use as a context manager.
    """
    p = Path(path)
    f = open_unchecked(p)
    try:
        validate(f, p, allow_incomplete)
    except BaseException:
        f.close()
        raise
    return f


def open_unchecked(path) -> h5py.File:
    """Open ``path`` read-only as HDF5 without checking the format (the existence and
    not-HDF5 errors of :func:`open_cdp_file`); follow with :func:`validate`."""
    p = Path(path)
    if not p.exists():
        t = tmp_path(p)
        if t.exists():
            raise DatasetNotFoundError(
                f"{p} does not exist but {t} does: the run writing it was interrupted; "
                f"resume with --resume (write_cdp_dataset(..., resume=True))")
        raise DatasetNotFoundError(f"{p} does not exist; simulate it with `phaseforge simulate`")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise DatasetFormatError(
            f"{p} is not an HDF5 file (or is damaged): {exc}; CDP datasets are written by "
            f"`phaseforge simulate`") from exc


def read_params(path, *, with_units: bool = True) -> dict:
    """The ``/parameters`` tree of a dataset as nested dicts (``<name>__units`` entries
    included unless ``with_units=False``)."""
    with open_cdp_file(path) as f:
        g = f.get("parameters")
        return {} if g is None else read_params_group(g, with_units)


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
        return {k: py_value(v) for k, v in f.attrs.items()}
