"""A CDP dataset file as a ``torch.utils.data.Dataset`` yielding ``(x, y)``."""
from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from optics.fileio import malformed_file

from ..errors import DatasetFormatError, LearningError
from ..images import sequence_index, split_indices
from .attrs import py_value, read_params_group
from .compression import check_filters
from .format import open_unchecked, validate

__all__ = ["CDPDataset"]


class CDPDataset(torch.utils.data.Dataset):
    """A CDP dataset file as a ``torch.utils.data.Dataset``.

    ``ds[i]`` is ``(x, y)`` — the PyTorch imaging convention (object first, measurements second,
    as deepinv's datasets): ``x`` the complex64 object ``(H, W)`` and ``y`` its float32
    measurements ``(L, Mh, Mw)`` in :attr:`measurement_units`. With ``return_index=True`` it is
    ``(x, y, index)`` where ``index`` is the sample's row in the file (an ``int``; with a
    ``split`` this differs from ``i``); :meth:`sample` returns the dict
    ``{"x", "y", "index"}`` either way. The default ``DataLoader`` collation stacks these.

    The file is checked once with :func:`open_cdp_file` at construction, then opened lazily and
    read-only in each process (the owning pid is stored and the file reopened when it changes;
    the handle is never pickled), so it works with ``DataLoader(num_workers > 0)``.

    ``split`` ("train" | "val" | "test" | "all" | None) selects samples with
    :func:`learning.images.split_indices` (``N``, ``split``, ``split_seed`` — default: the
    file's seed, ``fractions``); None or "all" keeps every sample. ``in_memory=True`` loads the
    selected samples at construction (refused with a :class:`LearningError` if they would take
    more than 80 % of the available memory).
    """

    def __init__(self, path, *, in_memory: bool = False, split: str | None = None,
                 split_seed: int | None = None, fractions=(0.8, 0.1, 0.1),
                 return_index: bool = False):
        self.path = Path(path)
        with open_unchecked(self.path) as f, malformed_file(self.path, DatasetFormatError, what="CDP dataset"):
            info = validate(f, self.path, False)  # checked once, as open_cdp_file would
            self.attrs = {k: py_value(v) for k, v in f.attrs.items()}
            self._params = read_params_group(f["parameters"]) if "parameters" in f else {}
            self._masks = torch.from_numpy(f["masks"][...])
            self._mask_amp = (torch.from_numpy(f["mask_amplitude"][...])
                              if "mask_amplitude" in f else None)
            self.measurement_units = py_value(f["measurements"].attrs["units"])
        self.n_total = info["n"]
        self._object_shape = info["object_shape"]
        self._measurement_shape = info["measurement_shape"]
        if split is None or split == "all":
            self.indices = np.arange(self.n_total, dtype=np.int64)
        else:
            seed = self.attrs.get("seed", 0) if split_seed is None else split_seed
            self.indices = split_indices(self.n_total, split, seed, fractions)
        self.return_index = bool(return_index)
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
            self._dsets = (self._file["objects"], self._file["measurements"])
            for d in self._dsets:  # registers hdf5plugin's filters in a fresh worker process
                check_filters(d, self.path)
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
        objs = torch.empty((k, *self._object_shape), dtype=torch.complex64)
        meas = torch.empty((k, *self._measurement_shape), dtype=torch.float32)
        with h5py.File(self.path, "r") as f:
            do, dm = f["objects"], f["measurements"]
            block = 256
            for s in range(0, k, block):
                idx = self.indices[s:s + block]
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                sel = slice(lo, hi) if hi - lo == len(idx) else idx  # contiguous: one slab read
                objs[s:s + len(idx)] = torch.from_numpy(do[sel])
                meas[s:s + len(idx)] = torch.from_numpy(dm[sel])
        self._mem = (objs, meas)

    # -- Dataset protocol ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.indices.size)

    def _item(self, i):
        j = sequence_index(i, len(self), "sample")
        k = int(self.indices[j])
        if self._mem is not None:
            return self._mem[0][j], self._mem[1][j], k
        with malformed_file(self.path, DatasetFormatError, what=f"CDP dataset (sample {k})"):
            do, dm = self._datasets()
            return torch.from_numpy(do[k]), torch.from_numpy(dm[k]), k

    def __getitem__(self, i):
        x, y, k = self._item(i)
        return (x, y, k) if self.return_index else (x, y)

    def sample(self, i) -> dict:
        """Item ``i`` as ``{"x": object (H, W) complex64, "y": measurements (L, Mh, Mw) float32,
        "index": row of the sample in the file}``."""
        x, y, k = self._item(i)
        return {"x": x, "y": y, "index": k}

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
        return (f"<CDPDataset {self.path}: {len(self)} samples, objects {self._object_shape}, "
                f"measurements {self._measurement_shape} [{self.measurement_units}]>")
