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


def hdf5_foreign_data(f) -> list:
    """Everything in the open HDF5 file ``f`` that would read bytes from another file, found by
    walking its links **without following them**: ``(kind, name, target)`` with ``kind`` one of
    ``"external link"`` (target ``file:/path``), ``"external storage"`` (raw data in the named
    files) and ``"virtual"`` (one entry per source mapping, target ``file:dataset``; a file name
    ``"."`` is the file itself). Soft links inside the file are not foreign. The policy for every
    file a user may be sent: nothing foreign is followed unless the format says so
    (:func:`refuse_foreign_data`; CDP datasets allow only their merged shards)."""
    import h5py

    found = []

    def visit(name, link):
        if isinstance(link, h5py.ExternalLink):
            found.append(("external link", name, f"{link.filename}:{link.path}"))
            return None
        if not isinstance(link, h5py.HardLink):
            return None
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.external:
                found.append(("external storage", name, ", ".join(str(e[0]) for e in obj.external)))
            if obj.is_virtual:
                found.extend(("virtual", name, f"{vs.file_name}:{vs.dset_name}") for vs in obj.virtual_sources())
        return None

    f.visititems_links(visit)
    return found


def refuse_foreign_data(f, path, error: type, *, what: str = "this format") -> None:
    """Raise ``error`` naming the first items of :func:`hdf5_foreign_data` when there are any:
    ``what`` stores all its data in the file itself, so links to other files (which would make
    a file someone sent read files of this machine) are refused instead of followed."""
    with malformed_file(path, error, what=what):
        items = hdf5_foreign_data(f)
    if items:
        desc = "; ".join(f"'{n}' is {'an' if k[0] == 'e' else 'a'} {k} to {t}" if k != "external storage"
                         else f"'{n}' keeps its data in external files {t}" for k, n, t in items[:3])
        more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
        raise error(f"{path}: {desc}{more}; {what} keeps all its data inside the file, and data in other files "
                    f"is never followed — ask for a self-contained file (h5repack copies linked data in)")


_OWN_PACKAGES = ("optics", "learning", "fabrication", "calibration", "phaseforge")


@contextmanager
def malformed_file(path, make_error, *, what: str = "file"):
    """Turn what a damaged or malformed file makes a reader's parsing raise — h5py's ``OSError``
    / ``RuntimeError`` / ``KeyError`` for unreadable chunks or links, ``TypeError`` /
    ``ValueError`` / ``IndexError`` / ``AttributeError`` for a value of the wrong type or shape,
    ``UnicodeDecodeError`` for a text file that is not UTF-8, ``EOFError`` for a truncated one —
    into ``make_error(message)``, the reader's own error type (CLI exit 2, not a traceback). The
    packages' own errors pass unchanged. Wrap only the code that interprets the file's content,
    so that a bug elsewhere still shows as one."""
    try:
        yield
    except (OSError, RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError, EOFError,
            OverflowError, SystemError) as exc:  # SystemError: h5py's wrapper of an error inside its own callbacks
        if type(exc).__module__.split(".")[0] in _OWN_PACKAGES or isinstance(exc, FileNotFoundError):
            raise
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise make_error(f"{path}: the {what} is damaged or malformed ({type(exc).__name__}: {detail}); "
                         f"re-create it with the program that wrote it, or ask for an intact copy") from exc
