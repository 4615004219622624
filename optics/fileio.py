"""The one atomic-write helper of phaseforge (lowest layer, so every package can use it).

``with atomic_path(final) as tmp:`` yields ``final + ".tmp"``; the caller writes there and, when
the block ends without an exception, the file is renamed to ``final`` with ``os.replace`` (atomic
on POSIX). On an exception the partial file stays as ``*.tmp`` (a resumable run may pick it up;
nothing at the final name looks complete).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def tmp_path_for(path: PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".tmp")


@contextmanager
def atomic_path(path: PathLike, *, keep_partial: bool = True) -> Iterator[Path]:
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    try:
        yield tmp
    except BaseException:
        if not keep_partial and tmp.exists():
            tmp.unlink()
        raise
    os.replace(tmp, final)


def replace_durably(tmp: PathLike, final: PathLike, *, fsync: bool = True) -> Path:
    """Finish an atomic write whose temporary file was filled elsewhere (e.g. over several
    sessions, as a resumable HDF5 writer does): flush ``tmp`` to disk (``os.fsync``), rename it
    to ``final`` with ``os.replace`` and flush the folder entry, so that after a crash or power
    loss ``final`` is either absent or complete. ``fsync=False`` skips both flushes (the rename
    alone is atomic against a killed process, not against power loss)."""
    tmp, final = Path(tmp), Path(final)
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, final)
    if fsync:
        try:
            dfd = os.open(final.parent, os.O_RDONLY)
        except OSError:  # a platform without directory handles (Windows): the rename is enough
            return final
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return final


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (the one file hash every layer records:
    capture files in calibrations, designs and pixel data in export sidecars)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf written as strings, JSON has none)."""
    def fix(v):
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return str(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    with atomic_path(path, keep_partial=False) as tmp:
        tmp.write_text(json.dumps(fix(obj), indent=2))
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path, keep_partial=False) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(fig, path: PathLike, *, close: bool = True, **kw) -> Path:
    """``fig.savefig`` to a temporary name, then rename (format from the final suffix).

    ``close`` (default): the figure is closed afterwards, so that pyplot does not keep every
    saved figure alive in a long-running process (a training sweep, a notebook loop)."""
    p = Path(path)
    try:
        with atomic_path(p, keep_partial=False) as tmp:
            fig.savefig(tmp, format=p.suffix.lstrip(".") or "png", **kw)
    finally:
        if close:
            import matplotlib.pyplot as plt
            plt.close(fig)
    return p


def save_npz(path: PathLike, **arrays) -> Path:
    """``numpy.savez_compressed`` to a temporary name, then rename."""
    import numpy as np

    with atomic_path(path, keep_partial=False) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)
