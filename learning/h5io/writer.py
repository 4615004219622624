"""The append-batch writer of CDP dataset files: atomic completion, resume, crash recovery.

:class:`CDPWriter` knows nothing about how samples are produced: a caller (a simulation, a
camera capture, a teacher network) appends batches ``(objects, measurements)`` in sample order
and closes it. The layout is in :mod:`learning.h5io`.

Writing protocol
----------------
Data go to ``<name>.tmp`` (``DATA.h5`` → ``DATA.h5.tmp``) batch by batch (memory does not grow
with N). Beside it, an append-only journal ``<name>.tmp.journal`` (JSON lines) records

* ``{"open": k}`` before a session creates or opens the file for writing,
* ``{"batch": [k0, k1], "crc32": [objects, measurements]}`` after samples ``k0..k1−1`` are in
  the file and flushed to the operating system (and, with ``durable=True``, ``fsync``-ed), with
  the CRC-32 of their raw bytes,
* ``{"closed": k}`` after the file was closed cleanly with ``k`` samples.

When all samples are in, ``complete`` is set to True, the file is closed, the journal removed and
the file renamed to its final name (:func:`optics.fileio.replace_durably`), so a file at the
final name is always complete. With ``write_behind`` (the default) each batch is compressed and
written on a background thread while the caller produces the next one; the journal still records
it only once it is in the file.

Resume after an interruption (``resume=True``):

* a cleanly closed ``.tmp`` (``--max-batches``, Ctrl-C, any Python exception — the writer closes
  the file on the way out) is reopened and continued;
* a ``.tmp`` left by a hard kill (SIGKILL, out-of-memory kill, power loss: the journal has no
  ``closed`` record) may hold half-written HDF5 metadata. It is **salvaged**: the batches the
  journal commits are read back, checked against their CRC-32 and copied chunk by chunk (no
  recompression) into a fresh file, which replaces the ``.tmp``; the caller produces the samples
  from the first batch that fails on again (``next_index`` starts there). A ``.tmp`` too damaged
  to open is started afresh (its content is determined by the inputs, so nothing but time is
  lost).

The files use ``libver="earliest"`` (see :data:`learning.h5io.format.LIBVER`): HDF5 ≥ 1.10's
file-consistency flags would otherwise make the library refuse to open a hard-killed file.

Either way the resumed file's datasets equal an uninterrupted run's, byte for byte, provided the
caller draws sample ``i``'s randomness from :func:`learning.h5io.sample_generator` ``(seed, i)``.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import torch

from optics.fileio import replace_durably, write_text

from ..errors import (DatasetExistsError, LearningError, OutputFolderError, ResumeMismatchError,
                      ShardError)
from .attrs import normalize_params, params_diff, py_value, read_params_group, write_params
from .compression import DEFAULT_COMPRESSION, compression_of, dataset_options, encode_chunk
from .format import AXES, FORMAT_VERSION, LIBVER, SHARD_ATTRS, SOFTWARE, shard_path, tmp_path
from .rng import RNG_DOC

__all__ = ["CDPWriter", "journal_path", "object_at", "check_int"]

log = logging.getLogger(__name__)
#: Test hook: ``"<event>:<count>"`` makes the writer SIGKILL its own process at the count-th
#: occurrence of an event ("create", "chunk", "flush", "journal", "salvage", "complete") — used
#: by the crash-recovery test to kill a real process at exact points (e.g. mid-batch).
KILL_ENV = "PHASEFORGE_H5IO_TEST_KILL"


def journal_path(path) -> Path:
    """The journal beside a working file: ``DATA.h5.tmp`` → ``DATA.h5.tmp.journal``."""
    p = tmp_path(path) if not str(path).endswith(".tmp") else Path(path)
    return p.with_name(p.name + ".journal")


def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LearningError(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    return int(value)


def object_at(objects, i: int, shape: tuple[int, int] | None) -> torch.Tensor:
    """Item ``i`` of an object sequence as a checked complex64 ``(H, W)`` tensor."""
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


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def _fsync_h5(f: h5py.File) -> None:
    try:
        fd = f.id.get_vfd_handle()
    except Exception:  # noqa: BLE001 — a driver without a file descriptor: flush is all we can do
        return
    if isinstance(fd, int):
        os.fsync(fd)


class CDPWriter:
    """Write a CDP dataset file batch by batch; see the module docstring for the protocol.

    Parameters
    ----------
    path : the final file, e.g. ``out/DATA.h5`` (its folder must exist). With ``shard=(i, n)``
        the file written is :func:`~learning.h5io.shard_path` ``(path, i, n)`` and holds samples
        ``[i·N//n, (i+1)·N//n)`` (``.start``, ``.stop``).
    n_samples : N, samples of the whole (unsharded) dataset.
    masks_rad, mask_amplitude : ``(L, Hm, Wm)`` phase [rad] and optional modulus of the masks.
    params, config_yaml : parameter tree (→ ``/parameters``) and resolved config text.
    software_version, seed : stored as root attributes; ``seed`` ≥ 0.
    measurement_units : units of ``measurements`` ("DN", "photons", "e-", "arb", …).
    compression : one of :data:`~learning.h5io.COMPRESSIONS` (stored in the file).
    resume : continue ``<file>.tmp`` left by an interrupted run (after checking it was written
        with the same seed, sizes, masks, params, config, compression and software version — else
        :class:`ResumeMismatchError` listing what differs); salvages a hard-killed file. Without
        a ``.tmp`` it starts afresh — or, when the final file exists, is complete and was written
        with the same inputs (the run was killed just after renaming it), does nothing.
    overwrite : replace an existing final file (the old one stays until the new one is
        complete) and discard a stale ``.tmp``. Without it an existing final file raises
        :class:`DatasetExistsError`, and so does a stale ``.tmp`` when ``resume`` is False.
    objects : optional: the object sequence (indexed by global sample index) a resumed file is
        checked against (its first and last written objects must be equal).
    durable : ``fsync`` the file and the journal after every batch (survives power loss, not
        only a killed process).
    threads : threads that compress chunks ("gzip") and compute checksums.
    write_behind : write each batch on a background thread while the caller produces the next
        one (HDF5 releases the GIL, and lzf/zstd compress inside HDF5); False writes in
        ``append`` itself. The file is the same either way.

    Notes
    -----
    Use: ``with CDPWriter(...) as w: for …: w.append(x, y)`` then ``path = w.close()`` (the final
    path when all samples are written, else the ``.tmp``). ``w.next_index`` is the global index of
    the next sample to append; ``w.n_written`` the samples in this file.
    """

    def __init__(self, path, *, n_samples: int, masks_rad, mask_amplitude=None, params: Mapping,
                 config_yaml: str = "", software_version: str, seed: int,
                 measurement_units: str = "DN", compression: str = DEFAULT_COMPRESSION,
                 resume: bool = False, overwrite: bool = False,
                 shard: tuple[int, int] | None = None, objects: Sequence | None = None,
                 durable: bool = True, threads: int = 2, write_behind: bool = True):
        path = Path(path)
        n_total = check_int(n_samples, "n_samples", 1)
        self.seed = check_int(seed, "seed", 0)
        self.threads = check_int(threads, "threads", 1)
        if not isinstance(measurement_units, str) or not measurement_units.strip():
            raise LearningError(f"measurement_units must be a non-empty string such as 'DN', "
                                f"'photons', 'e-' or 'arb'; got {measurement_units!r}")
        if not isinstance(config_yaml, str):
            raise LearningError(f"config_yaml must be a string (the resolved YAML text); got "
                                f"{type(config_yaml).__name__}")
        dataset_options(compression)  # checks the name (and hdf5plugin for zstd) up front
        self.compression = compression
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
            self.start, self.stop = si * n_total // sn, (si + 1) * n_total // sn
            self.final = shard_path(path, si, sn)
            self.shard_attrs = {"shard_index": si, "shard_count": sn,
                                "sample_offset": self.start, "n_samples_total": n_total}
        else:
            self.start, self.stop, self.final, self.shard_attrs = 0, n_total, path, {}
        self.n = self.stop - self.start
        self.tmp = tmp_path(self.final)
        self.journal = journal_path(self.final)
        self._salvage_path = self.tmp.with_name(self.tmp.name + ".salvage")
        folder = self.final.parent
        if not folder.is_dir():
            raise OutputFolderError(
                f"the output folder {folder} does not exist; create it (mkdir -p {folder}) or "
                f"choose an output path in an existing folder")
        self.masks = _mask_array(masks_rad, "masks_rad")
        self.mask_amp = None
        if mask_amplitude is not None:
            self.mask_amp = _mask_array(mask_amplitude, "mask_amplitude")
            if self.mask_amp.shape != self.masks.shape:
                raise LearningError(f"mask_amplitude has shape {self.mask_amp.shape} but "
                                    f"masks_rad has {self.masks.shape}; they describe the same "
                                    f"masks")
            if (self.mask_amp < 0).any():
                raise LearningError("mask_amplitude has negative values; it is a modulus (≥ 0)")
        self.params = params
        self.params_norm = normalize_params(params)
        self.config_yaml = config_yaml
        self.software_version = str(software_version)
        self.measurement_units = measurement_units
        self.durable = bool(durable)
        self.object_shape: tuple | None = None
        self.measurement_shape: tuple | None = None
        self.k = 0  # samples written and journaled
        self._appended = 0  # samples accepted by append (≥ k while a batch is in flight)
        self.write_behind = bool(write_behind)
        self._io: ThreadPoolExecutor | None = None
        self._inflight = None
        self._f: h5py.File | None = None
        self._jf = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._kill = self._parse_kill(os.environ.get(KILL_ENV))
        self._counts: dict[str, int] = {}
        if objects is not None:
            self.object_shape = tuple(object_at(objects, self.start, None).shape)

        self._finished = False
        if self.final.exists() and not overwrite:
            if resume and not self.tmp.exists() and self._finished_matches(objects):
                # the interrupted run had renamed the finished file already: nothing left to do
                self._finished = True
                self.k = self._appended = self.n
                return
            raise DatasetExistsError(
                f"{self.final} already exists; pass overwrite=True (--overwrite) to replace it, "
                f"or choose another output path")
        if self._salvage_path.exists():
            self._salvage_path.unlink()
        if self.tmp.exists():
            if resume:
                self._resume(objects)
            elif overwrite:
                self._discard()
            else:
                raise DatasetExistsError(
                    f"{self.tmp} is left from an interrupted run; pass resume=True (--resume) "
                    f"to continue it, or overwrite=True (--overwrite) to start again")
        elif self.journal.exists():  # left after the rename of a finished file
            self.journal.unlink()

    # -- public state ---------------------------------------------------------------------------
    @property
    def n_written(self) -> int:
        """Samples written to this file and journaled so far (a batch being written in the
        background is not counted yet)."""
        return self.k

    @property
    def next_index(self) -> int:
        """Global index of the next sample to append."""
        return self.start + self._appended

    @property
    def done(self) -> bool:
        """All samples appended (``close`` then completes the file)."""
        return self._appended >= self.n

    # -- test hook ------------------------------------------------------------------------------
    @staticmethod
    def _parse_kill(spec):
        if not spec:
            return None
        event, _, count = spec.partition(":")
        return event, int(count or 1)

    def _event(self, name: str) -> None:
        if self._kill is None:
            return
        self._counts[name] = c = self._counts.get(name, 0) + 1
        if self._kill == (name, c):
            import signal
            os.kill(os.getpid(), signal.SIGKILL)

    # -- journal --------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self._jf is None:
            self._jf = open(self.journal, "a", encoding="utf-8")
        self._jf.write(json.dumps(record) + "\n")
        self._jf.flush()
        if self.durable:
            os.fsync(self._jf.fileno())

    def _read_journal(self):
        """``(batch records, cleanly closed?)``, or None without a journal. A last line cut by
        the kill is ignored."""
        if not self.journal.exists():
            return None
        batches, closed = [], False
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "batch" in rec:
                batches.append(rec)
                closed = False
            elif "open" in rec:
                closed = False
            elif "closed" in rec:
                closed = True
        return batches, closed

    def _discard(self) -> None:
        for p in (self.tmp, self.journal):
            if p.exists():
                p.unlink()

    # -- creating and resuming ------------------------------------------------------------------
    def _create(self, tmp: Path, n_written: int = 0) -> h5py.File:
        f = h5py.File(tmp, "w", libver=LIBVER)
        try:
            a = f.attrs
            a["format_version"] = FORMAT_VERSION
            a["software"] = SOFTWARE
            a["software_version"] = self.software_version
            a["seed"] = np.int64(self.seed)
            a["n_samples"] = np.int64(self.n)
            a["n_written"] = np.int64(n_written)
            a["complete"] = np.bool_(False)
            a["config_yaml"] = self.config_yaml
            a["rng"] = RNG_DOC
            a["compression"] = self.compression
            for k, v in self.shard_attrs.items():
                a[k] = np.int64(v)
            comp = dataset_options(self.compression)
            d = f.create_dataset("objects", shape=(self.n, *self.object_shape),
                                 dtype=np.complex64, chunks=(1, *self.object_shape), **comp)
            d.attrs["units"] = "1"
            d.attrs["axes"] = AXES["objects"]
            d = f.create_dataset("measurements", shape=(self.n, *self.measurement_shape),
                                 dtype=np.float32, chunks=(1, *self.measurement_shape), **comp)
            d.attrs["units"] = self.measurement_units
            d.attrs["axes"] = AXES["measurements"]
            d = f.create_dataset("masks", data=self.masks, chunks=(1, *self.masks.shape[1:]),
                                 **comp)
            d.attrs["units"] = "rad"
            d.attrs["axes"] = AXES["masks"]
            if self.mask_amp is not None:
                d = f.create_dataset("mask_amplitude", data=self.mask_amp,
                                     chunks=(1, *self.mask_amp.shape[1:]), **comp)
                d.attrs["units"] = "1"
                d.attrs["axes"] = AXES["mask_amplitude"]
            write_params(f.create_group("parameters", track_order=True), self.params, "")
            self._event("create")
            f.flush()
        except BaseException:
            f.close()
            raise
        return f

    def _resume_diffs(self, f: h5py.File) -> list[str]:
        a = f.attrs
        diffs: list[str] = []

        def cmp(name, file_value, now_value):
            if file_value != now_value:
                diffs.append(f"{name}: {file_value!r} (the file) vs {now_value!r} (now)")

        cmp("format_version", py_value(a.get("format_version")), FORMAT_VERSION)
        cmp("seed", py_value(a.get("seed")), self.seed)
        cmp("n_samples", py_value(a.get("n_samples")), self.n)
        cmp("software_version", py_value(a.get("software_version")), self.software_version)
        cmp("config_yaml", py_value(a.get("config_yaml")), self.config_yaml)
        cmp("compression", compression_of(f), self.compression)
        for k in SHARD_ATTRS:
            cmp(k, py_value(a.get(k)), self.shard_attrs.get(k))
        for name in ("objects", "measurements", "masks", "parameters"):
            if name not in f:
                diffs.append(f"{name} missing from the file")
        if diffs:
            return diffs
        if self.object_shape is not None:
            cmp("object shape", tuple(f["objects"].shape[1:]), tuple(self.object_shape))
        cmp("measurement units", py_value(f["measurements"].attrs.get("units")),
            self.measurement_units)
        fm = f["masks"][...]
        if fm.shape != self.masks.shape or not np.array_equal(fm, self.masks):
            diffs.append(f"masks differ (file {fm.shape}, now {self.masks.shape})")
        has_amp = "mask_amplitude" in f
        if has_amp != (self.mask_amp is not None):
            diffs.append(f"mask_amplitude {'present' if has_amp else 'absent'} in the file, "
                         f"{'given' if self.mask_amp is not None else 'not given'} now")
        elif has_amp and not np.array_equal(f["mask_amplitude"][...], self.mask_amp):
            diffs.append("mask_amplitude differs")
        diffs += params_diff(read_params_group(f["parameters"]), self.params_norm, "the file",
                             "now")
        k = py_value(a.get("n_written"))
        if not isinstance(k, int) or not 0 <= k <= self.n:
            diffs.append(f"n_written = {k!r} is not in [0, {self.n}] (the file is damaged)")
        return diffs

    def _mismatch(self, diffs: list[str]) -> ResumeMismatchError:
        return ResumeMismatchError(
            f"cannot resume {self.tmp}: it was written with different inputs — "
            + "; ".join(diffs) + ". Rerun with the original settings, or pass overwrite=True "
            "(--overwrite) to start again from scratch")

    def _check_objects(self, f: h5py.File, objects, k: int) -> None:
        if objects is None or k == 0:
            return
        for j in sorted({0, k - 1}):
            now = object_at(objects, self.start + j, self.object_shape).numpy()
            if not np.array_equal(f["objects"][j], now):
                raise self._mismatch([f"object {self.start + j} differs from the one in the file "
                                      f"(the image source, split, encoding or their seed "
                                      f"changed)"])

    def _finished_matches(self, objects) -> bool:
        """True when the final file exists, is complete and was written with these inputs."""
        try:
            f = h5py.File(self.final, "r")
        except OSError:
            return False
        with f:
            try:
                if self._resume_diffs(f) or not bool(py_value(f.attrs.get("complete", False))):
                    return False
                if py_value(f.attrs["n_written"]) != self.n:
                    return False
                self._check_objects(f, objects, self.n)
            except (ResumeMismatchError, OSError, KeyError):
                return False
            self.object_shape = tuple(f["objects"].shape[1:])
            self.measurement_shape = tuple(f["measurements"].shape[1:])
        return True

    def _open_checked(self, objects) -> None:
        f = h5py.File(self.tmp, "r+")
        try:
            diffs = self._resume_diffs(f)
            if diffs:
                raise self._mismatch(diffs)
            k = int(py_value(f.attrs["n_written"]))
            self._check_objects(f, objects, k)
        except BaseException:
            f.close()
            raise
        self._f, self.k, self._appended = f, k, k
        self.object_shape = tuple(f["objects"].shape[1:])
        self.measurement_shape = tuple(f["measurements"].shape[1:])

    def _resume(self, objects) -> None:
        state = self._read_journal()
        if state is None:  # written without a journal (phaseforge ≤ 0.1.0): open as it is
            try:
                self._open_checked(objects)
            except OSError as exc:
                raise ResumeMismatchError(
                    f"cannot open the interrupted file {self.tmp} ({exc}); it was probably "
                    f"damaged by the interruption — pass overwrite=True (--overwrite) to start "
                    f"again") from exc
        else:
            batches, clean = state
            if not clean:
                self._salvage(batches)
            if self.tmp.exists():
                self._open_checked(objects)
        if self._f is not None:
            self._log({"open": self.k})

    def _salvage(self, batches: list[dict]) -> None:
        """Copy the journal's committed, checksum-verified batches of a hard-killed ``.tmp``
        into a fresh file that replaces it (see the module docstring)."""
        try:
            src = h5py.File(self.tmp, "r")
        except OSError as exc:
            log.warning("%s cannot be opened after the interruption (%s); starting it afresh "
                        "(its content is determined by the inputs)", self.tmp, exc)
            self._discard()
            return
        used = []
        with src:
            try:
                diffs = self._resume_diffs(src)
            except (OSError, KeyError, RuntimeError, TypeError) as exc:  # metadata torn apart
                diffs = None
                log.warning("%s is damaged beyond its header (%s); starting it afresh",
                            self.tmp, exc)
            if diffs is None:
                src.close()
                self._discard()
                return
            if diffs:
                raise self._mismatch(diffs)
            self.object_shape = tuple(src["objects"].shape[1:])
            self.measurement_shape = tuple(src["measurements"].shape[1:])
            dst = self._create(self._salvage_path)
            try:
                k = 0
                for rec in batches:
                    k0, k1 = rec["batch"]
                    if k0 != k or not k0 < k1 <= self.n:
                        break
                    try:
                        xo, ym = src["objects"][k0:k1], src["measurements"][k0:k1]
                    except Exception:  # noqa: BLE001 — damaged chunk or index: stop here
                        break
                    if [_crc(xo), _crc(ym)] != list(rec["crc32"]):
                        break
                    for name in ("objects", "measurements"):
                        s, d = src[name].id, dst[name].id
                        zeros = (0,) * (len(src[name].shape) - 1)
                        for j in range(k0, k1):
                            mask, data = s.read_direct_chunk((j, *zeros))
                            d.write_direct_chunk((j, *zeros), data, filter_mask=mask)
                    used.append(rec)
                    k = k1
                    self._event("salvage")
                dst.attrs["n_written"] = np.int64(k)
            finally:
                dst.close()
        replace_durably(self._salvage_path, self.tmp, fsync=self.durable)
        write_text(self.journal, "".join(json.dumps(r) + "\n" for r in used)
                   + json.dumps({"closed": k}) + "\n")
        log.warning("%s was left by a hard interruption: %d of its %d samples recovered "
                    "(checksums verified); continuing from sample %d", self.tmp, k, self.n,
                    self.start + k)

    # -- appending ------------------------------------------------------------------------------
    def _check_batch(self, objects, measurements):
        x = objects.detach().cpu() if isinstance(objects, torch.Tensor) else \
            torch.as_tensor(np.asarray(objects))
        if not x.is_complex() or x.ndim != 3:
            raise LearningError(f"objects batch has dtype {x.dtype} and shape {tuple(x.shape)}; "
                                f"expected a complex (B, H, W) batch")
        b = x.shape[0]
        if b < 1 or self._appended + b > self.n:
            raise LearningError(f"appending {b} samples to a file holding {self._appended} of "
                                f"{self.n}; append at most {self.n - self._appended} more (and at "
                                f"least 1)")
        if self.object_shape is not None and tuple(x.shape[1:]) != tuple(self.object_shape):
            raise LearningError(f"objects of shape {tuple(x.shape[1:])} appended to a file of "
                                f"objects {self.object_shape}")
        x = x.to(torch.complex64).numpy()
        y = measurements.detach().cpu() if isinstance(measurements, torch.Tensor) else \
            torch.as_tensor(np.asarray(measurements))
        L = self.masks.shape[0]
        if y.is_complex() or not y.is_floating_point() or y.ndim != 4 or y.shape[0] != b \
                or y.shape[1] != L:
            raise LearningError(f"measurements batch has dtype {y.dtype} and shape "
                                f"{tuple(y.shape)}; expected real (B={b}, L={L}, Mh, Mw)")
        if self.measurement_shape is not None and \
                tuple(y.shape[1:]) != tuple(self.measurement_shape):
            raise LearningError(f"measurements of shape {tuple(y.shape[1:])} appended to a file "
                                f"of measurements {self.measurement_shape}")
        y = y.to(torch.float32).numpy()
        if not np.isfinite(x.view(np.float32)).all() or not np.isfinite(y).all():
            raise LearningError(f"samples {self.next_index}..{self.next_index + b - 1} contain "
                                f"NaN or inf")
        if self.write_behind:  # the caller may reuse its buffers while the batch is written
            return np.array(x, order="C", copy=True), np.array(y, order="C", copy=True)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def append(self, objects, measurements) -> None:
        """Append a batch: complex ``(B, H, W)`` objects and real ``(B, L, Mh, Mw)``
        measurements (stored complex64 / float32) as samples ``next_index …``.

        With ``write_behind`` the batch is checked here, then compressed and written on a
        background thread while the caller produces the next batch (at most one batch in
        flight; an error of that write is raised by the next ``append`` or by ``close``)."""
        if self._closed:
            raise LearningError(f"{self.final}: the writer is closed; create a new one (with "
                                f"resume=True) to continue")
        x, y = self._check_batch(objects, measurements)
        b = x.shape[0]
        if self._f is None:
            self.object_shape = tuple(x.shape[1:])
            self.measurement_shape = tuple(y.shape[1:])
            self._log({"open": 0})
            self._f = self._create(self.tmp)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        self._wait()
        k = self._appended
        self._appended = k + b
        if self.write_behind:
            if self._io is None:
                self._io = ThreadPoolExecutor(max_workers=1)
            self._inflight = self._io.submit(self._commit, k, x, y)
        else:
            self._commit(k, x, y)

    def _wait(self) -> None:
        """Wait for the batch being written in the background (re-raising its error)."""
        if self._inflight is not None:
            job, self._inflight = self._inflight, None
            job.result()

    def _commit(self, k: int, x: np.ndarray, y: np.ndarray) -> None:
        """Compress and write samples ``k…`` of this file, flush, then journal them."""
        b = x.shape[0]
        pool = self._pool
        crc_x, crc_y = pool.submit(_crc, x), pool.submit(_crc, y)
        for name, arr in (("objects", x), ("measurements", y)):
            d = self._f[name]
            if self.compression == "gzip":
                chunks = list(pool.map(lambda c: encode_chunk("gzip", c), arr))
                zeros = (0,) * (arr.ndim - 1)
                for j, data in enumerate(chunks):
                    d.id.write_direct_chunk((k + j, *zeros), data)
                    self._event("chunk")
            else:
                d[k:k + b] = arr
                self._event("chunk")
        self._f.attrs["n_written"] = np.int64(k + b)
        self._f.flush()
        if self.durable:
            _fsync_h5(self._f)
        self._event("flush")
        self._log({"batch": [k, k + b], "crc32": [crc_x.result(), crc_y.result()]})
        self._event("journal")
        self.k = k + b

    # -- finishing ------------------------------------------------------------------------------
    def close(self) -> Path:
        """Close the file. Complete (all samples written): mark it complete and rename it to
        the final name; return that. Else leave the resumable ``.tmp`` and return its path."""
        if self._closed or self._finished:
            self._closed = True
            return self.final if self.final.exists() and not self.tmp.exists() else self.tmp
        self._closed = True
        error = None
        try:
            try:
                self._wait()
            except BaseException as exc:  # noqa: BLE001 — re-raised below, after a clean close
                error = exc
            if self._f is None:
                return self.tmp
            if self.k < self.n or error is not None:
                self._f.close()
                self._f = None
                self._log({"closed": self.k})
                if error is not None:
                    raise error
                return self.tmp
            self._f.attrs["complete"] = np.bool_(True)
            self._event("complete")
            self._f.close()
            self._f = None
            self._log({"closed": self.k})
            self._jf.close()
            self._jf = None
            self.journal.unlink()
            replace_durably(self.tmp, self.final, fsync=self.durable)
            return self.final
        finally:
            if self._f is not None:
                self._f.close()
                self._f = None
            if self._jf is not None:
                self._jf.close()
                self._jf = None
            if self._io is not None:
                self._io.shutdown()
                self._io = None
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def __enter__(self) -> "CDPWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_f", None) is not None or getattr(self, "_jf", None) is not None:
            try:
                self.close()
            except Exception:  # noqa: BLE001 — at interpreter shutdown
                pass
