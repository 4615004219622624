"""Format constants, validation and readers of CDP dataset files (layout: :mod:`learning.h5io`)."""
from __future__ import annotations

from pathlib import Path

import h5py
import torch

from optics.fileio import hdf5_foreign_data, malformed_file, refuse_foreign_data, tmp_path_for

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
    _check_foreign_data(f, p)  # before anything below touches a dataset (which follows links)
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
    return {"n": n, "object_shape": tuple(shapes["objects"][1:]),
            "measurement_shape": tuple(shapes["measurements"][1:])}


def _check_foreign_data(f: h5py.File, p: Path) -> None:
    """The format's rule for data in other files: none, except that a merged file's 'objects'
    and 'measurements' are virtual datasets over its shard set (``merged_from``, paths relative
    to the merged file's folder): every source must be listed there, be the same-named dataset of
    a shard of exactly that set (``shard_count`` = number of shards listed), and hold its data
    itself. Anything else — an external link, external raw storage, a virtual dataset in an
    unmerged file or pointing outside the shard set — is refused, never followed."""
    merged = py_value(f.attrs.get("merged_from"))
    shards = [str(m) for m in merged] if isinstance(merged, list) else []
    with malformed_file(p, DatasetFormatError, what="CDP dataset"):
        foreign = hdf5_foreign_data(f)
    for kind, name, target in foreign:
        if kind != "virtual":
            refuse_foreign_data(f, p, DatasetFormatError, what="a CDP dataset")
        if name not in ("objects", "measurements") or not shards:
            raise DatasetFormatError(
                f"{p}: dataset '{name}' is virtual ({target}) but only a merged file's 'objects' and "
                f"'measurements' may be, over the shards its 'merged_from' attribute lists; "
                f"re-simulate the dataset or merge its shards with merge_shards")
    for name in ("objects", "measurements"):
        d = f.get(name)
        if not isinstance(d, h5py.Dataset) or not d.is_virtual:
            continue
        for vs in d.virtual_sources():
            if vs.file_name not in shards or vs.dset_name.lstrip("/") != name:
                raise DatasetFormatError(
                    f"{p}: virtual dataset '{name}' reads {vs.file_name}:{vs.dset_name}, which is not "
                    f"'{name}' of a shard in its shard set (merged_from = {shards}); a merged file only "
                    f"reads its own shards — merge them again with merge_shards")
            src = Path(vs.file_name)
            src = src if src.is_absolute() else p.parent / src
            if not src.exists():
                raise DatasetFormatError(
                    f"{p}: dataset '{name}' is virtual and its source file {src} is "
                    f"missing; keep the shard files next to the merged file, or merge again")
            try:
                sf = h5py.File(src, "r")
            except OSError as exc:
                raise DatasetFormatError(f"{p}: shard {src} of virtual dataset '{name}' is not a readable "
                                         f"HDF5 file ({exc}); rewrite the shard and merge again") from exc
            with sf:
                count = py_value(sf.attrs.get("shard_count"))
                index = py_value(sf.attrs.get("shard_index"))
                if not (isinstance(count, int) and count == len(shards) and isinstance(index, int)
                        and 0 <= index < count):
                    raise DatasetFormatError(
                        f"{p}: virtual dataset '{name}' reads {src}, which is not a shard of this "
                        f"{len(shards)}-shard set (shard_index = {index!r}, shard_count = {count!r}); "
                        f"merge the right shards again with merge_shards")
                refuse_foreign_data(sf, src, DatasetFormatError, what="a shard of a CDP dataset")
                sd = sf.get(name)
                if not isinstance(sd, h5py.Dataset):
                    raise DatasetFormatError(f"{p}: shard {src} has no dataset '{name}'; rewrite the "
                                             f"shard and merge again")
                check_filters(sd, src)


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
        with malformed_file(p, DatasetFormatError, what="CDP dataset"):
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
    with open_cdp_file(path) as f, malformed_file(path, DatasetFormatError, what="CDP dataset"):
        g = f.get("parameters")
        return {} if g is None else read_params_group(g, with_units)


def read_masks(path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(masks_rad, mask_amplitude)`` as float32 tensors ``(L, Hm, Wm)``; the modulus is None
    for unit-modulus masks."""
    with open_cdp_file(path) as f, malformed_file(path, DatasetFormatError, what="CDP dataset"):
        masks = torch.from_numpy(f["masks"][...])
        amp = torch.from_numpy(f["mask_amplitude"][...]) if "mask_amplitude" in f else None
    return masks, amp


def read_attributes(path) -> dict:
    """The root attributes of a dataset as plain Python values (``config_yaml`` included)."""
    with open_cdp_file(path) as f, malformed_file(path, DatasetFormatError, what="CDP dataset"):
        return {k: py_value(v) for k, v in f.attrs.items()}
