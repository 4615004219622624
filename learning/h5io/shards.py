"""Shards (one file per process, ``DATA.shard-i-of-n.h5``) and merging them into one file of
HDF5 virtual datasets."""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from optics.fileio import replace_durably

from ..errors import DatasetExistsError, OutputFolderError, ShardError
from .attrs import params_diff, py_value, read_params_group
from .compression import compression_of
from .format import LIBVER_VIRTUAL, SHARD_ATTRS, open_cdp_file, shard_path, tmp_path

__all__ = ["shard_from_env", "merge_shards"]


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


def _shard_info(p: Path) -> dict:
    with open_cdp_file(p) as f:
        a = f.attrs
        missing = [k for k in SHARD_ATTRS if k not in a]
        if missing:
            raise ShardError(f"{p} is not a shard (no {', '.join(missing)} attribute); merge only "
                             f"files written with shard=(i, n)")
        info = {k: py_value(a[k]) for k in SHARD_ATTRS}
        info.update(
            path=p, n=int(f["objects"].shape[0]), seed=py_value(a["seed"]),
            software_version=py_value(a.get("software_version")),
            config_yaml=py_value(a.get("config_yaml", "")), compression=compression_of(f),
            params=read_params_group(f["parameters"]) if "parameters" in f else {},
            object_shape=tuple(f["objects"].shape[1:]),
            measurement_shape=tuple(f["measurements"].shape[1:]),
            measurement_units=py_value(f["measurements"].attrs["units"]),
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
    if not out.parent.is_dir():
        raise OutputFolderError(f"the output folder {out.parent} does not exist; create it "
                                f"(mkdir -p {out.parent}) or choose another output path")
    if out.exists() and not overwrite:
        raise DatasetExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to "
                                 f"replace it, or choose another output path")
    infos = [_shard_info(p) for p in _resolve_shards(shards)]
    ref = infos[0]
    diffs: list[str] = []
    for info in infos[1:]:
        for key in ("shard_count", "n_samples_total", "seed", "software_version", "config_yaml",
                    "object_shape", "measurement_shape", "measurement_units", "compression"):
            if info[key] != ref[key]:
                diffs.append(f"{key}: {ref[key]!r} in {ref['path']}, {info[key]!r} in "
                             f"{info['path']}")
        diffs += params_diff(ref["params"], info["params"], str(ref["path"]), str(info["path"]))
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
        with h5py.File(ordered[0]["path"], "r") as src, \
                h5py.File(tmp, "w", libver=LIBVER_VIRTUAL) as f:
            for k, v in src.attrs.items():
                if k not in SHARD_ATTRS:
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
        replace_durably(tmp, out)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return out


# --------------------------------------------------------------------------------------------
