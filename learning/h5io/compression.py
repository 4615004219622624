"""Compression of the per-sample chunks of CDP dataset files.

Choices (:data:`COMPRESSIONS`; the one used is stored in the root attribute ``compression`` and,
as always in HDF5, in each dataset's filter pipeline, so readers need no configuration):

``"gzip"`` (default)
    byte shuffle + deflate level 4: every HDF5 reader can decode it. The writer compresses the
    chunks itself on a thread pool (the compressor releases the GIL) and stores them with
    ``write_direct_chunk`` — a zlib stream that HDF5's own shuffle + deflate filters decode,
    made on both cores. The deflate encoder is ``zlib-ng`` (package ``zlib-ng``, ≈ 1.7× faster
    than zlib at the same level, same format) when it is installed, else the standard ``zlib``.
``"lzf"``
    byte shuffle + LZF (built into h5py; other HDF5 readers need the LZF filter plugin):
    ≈ 5× faster than gzip, ≈ 25 % larger files.
``"zstd"``
    byte shuffle + Zstandard level 1 through the ``hdf5plugin`` package (HDF5 filter 32015):
    ≈ 10× faster than gzip and slightly smaller files; readers need ``hdf5plugin`` (Python:
    ``pip install hdf5plugin`` then ``import hdf5plugin``) or the filter plugin.
``"none"``
    uncompressed chunks (fastest, ≈ 2× larger).

:func:`check_filters` names the package (``hdf5plugin``) when a file's filter cannot be decoded.
"""
from __future__ import annotations

import zlib
from pathlib import Path

try:  # the same deflate format, ≈ 1.7× faster (optional)
    from zlib_ng import zlib_ng as _deflate_module
except ImportError:  # pragma: no cover — exercised where zlib-ng is not installed
    _deflate_module = zlib

import h5py
import numpy as np

from ..errors import DatasetFormatError, LearningError

__all__ = ["COMPRESSIONS", "DEFAULT_COMPRESSION", "COMPRESSION", "COMPRESSION_OPTS",
           "dataset_options", "encode_chunk", "check_filters", "compression_of"]

COMPRESSIONS = ("gzip", "lzf", "zstd", "none")
DEFAULT_COMPRESSION = "gzip"
#: The default filter and level (kept under the names of the single-file module).
COMPRESSION = "gzip"
COMPRESSION_OPTS = 4
ZSTD_LEVEL = 1
_PLUGIN_FILTERS = {32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32015: "zstd",
                   32026: "blosc2"}


def _check_name(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise LearningError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)} "
                            f"(gzip: portable default; lzf, zstd: faster; none: uncompressed)")
    return compression


def _hdf5plugin():
    try:
        import hdf5plugin  # noqa: F401 — importing registers the filters with HDF5
    except ImportError as exc:
        raise LearningError(
            "compression 'zstd' needs the hdf5plugin package: pip install hdf5plugin — or use "
            "compression 'gzip' (portable) or 'lzf' (built into h5py)") from exc
    return hdf5plugin


def dataset_options(compression: str) -> dict:
    """``h5py.Group.create_dataset`` keyword arguments of a compression choice."""
    _check_name(compression)
    if compression == "gzip":
        return dict(compression="gzip", compression_opts=COMPRESSION_OPTS, shuffle=True)
    if compression == "lzf":
        return dict(compression="lzf", shuffle=True)
    if compression == "zstd":
        return dict(shuffle=True, **_hdf5plugin().Zstd(clevel=ZSTD_LEVEL))
    return {}


def encode_chunk(compression: str, array: np.ndarray) -> bytes | None:
    """The stored bytes of one chunk (``array`` is exactly one chunk, C order) for choices the
    writer compresses itself ("gzip": HDF5's shuffle filter, then a level-4 zlib stream as
    HDF5's deflate filter expects it), or None when HDF5 applies the filter itself. Releases the
    GIL while compressing, so chunks can be encoded on a thread pool."""
    if compression != "gzip":
        return None
    a = np.ascontiguousarray(array)
    shuffled = a.reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize).T.tobytes()
    return _deflate_module.compress(shuffled, COMPRESSION_OPTS)


def compression_of(f: h5py.File) -> str:
    """The compression choice recorded in a file (files written before the attribute existed
    were all "gzip")."""
    v = f.attrs.get("compression", DEFAULT_COMPRESSION)
    return v.decode() if isinstance(v, bytes) else str(v)


def check_filters(dset: h5py.Dataset, path) -> None:
    """Raise :class:`DatasetFormatError` naming the filter and the package that provides it when
    ``dset`` is stored with a filter this HDF5 cannot decode (importing ``hdf5plugin`` first
    when it is installed, which registers its filters)."""
    if dset.is_virtual:
        return
    plist = dset.id.get_create_plist()
    missing = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(i)
        if h5py.h5z.filter_avail(code):
            continue
        if code in _PLUGIN_FILTERS:
            try:
                import hdf5plugin  # noqa: F401 — registers the plugin filters
            except ImportError:
                pass
            if h5py.h5z.filter_avail(code):
                continue
        label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        missing.append((code, _PLUGIN_FILTERS.get(code, label or "unknown")))
    if missing:
        code, label = missing[0]
        raise DatasetFormatError(
            f"{Path(path)}: dataset '{dset.name.lstrip('/')}' is compressed with the HDF5 filter "
            f"{label!r} (id {code}), which this HDF5 cannot decode; install the package that "
            f"provides it — pip install hdf5plugin (phaseforge imports it when reading) — or "
            f"re-simulate with data.compression=gzip")
