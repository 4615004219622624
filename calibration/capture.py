"""The capture file: one HDF5 layout for lab captures, its writer, reader, validator and packer.

Layout (NeXus-inspired; every physical quantity is a dataset with a ``units`` attribute —
HDF5 attributes cannot carry attributes themselves, so attributes hold only unitless metadata):

==============================  ==========================  =====================================
path                            type / shape                meaning
==============================  ==========================  =====================================
``/`` attrs                     str                         ``format = "phaseforge-capture"``,
                                                            ``format_version = 1``, ``created``
                                                            (ISO-8601), ``instrument``,
                                                            ``camera_serial``, ``slm_serial``,
                                                            ``software``, ``description``
``/frames``                     (N, H, W) uint8 / uint16    raw camera frames, ``units = "DN"``;
                                                            attrs ``bit_depth`` (1…16) and
                                                            ``pixel_justification``: ``"lsb"``
                                                            (value in the low bits) or ``"msb"``
                                                            (left-justified: a 12-bit value × 16
                                                            in uint16, the classic trap); one
                                                            frame per chunk, gzip
``/image_key``                  (N,) int                    0 sample, 1 flat, 2 dark, 4 background
``/exposure_s``                 (N,) float64                exposure time, ``units = "s"``
``/gain_setting_db``            (N,) float64                camera analog gain setting,
                                                            ``units = "dB"`` (optional)
``/timestamp``                  (N,) str                    ISO-8601 acquisition time (optional)
``/pattern_id``                 (N,) str                    SLM pattern shown ("" for none); each
                                                            sample frame names one ``/patterns``
                                                            entry
``/patterns/<id>``              (h, w) uint8 / uint16       gray levels shown on the SLM,
                                                            ``units = "gray"``; attrs ``sha256``
                                                            (of the C-order little-endian bytes),
                                                            ``kind`` (``random``/``grating``/
                                                            ``uniform``); gratings also
                                                            ``gray_reference``, ``gray_level``,
                                                            ``period_px``
``/instrument/wavelength_m``    scalar float64              ``units = "m"``
``/instrument/camera_pitch_m``  scalar                      ``units = "m"``
``/instrument/slm_pitch_m``     scalar                      ``units = "m"``
``/instrument/distance_m``      scalar                      nominal SLM→camera distance, ``"m"``
``/instrument/magnification``   scalar                      nominal relay magnification, ``"1"``
``/instrument/slm_bit_depth``   scalar int                  SLM gray-level bits, ``"1"``
==============================  ==========================  =====================================

:func:`validate_capture` lists *every* problem at once (missing fields, wrong or missing units,
NaN, saturated fraction per frame, blank (all 0 DN) or constant frames, shape mismatches, unknown pattern ids, hash mismatches, a
file from another program, a truncated file); :func:`read_capture` raises
:class:`~calibration.errors.CaptureError` with that list when there is any error.
:func:`write_capture` writes atomically (``name.tmp`` then rename); :func:`pack_capture` builds a
file from a folder of TIFF/PNG frames plus a YAML of metadata. No function here modifies its input.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from optics.fileio import atomic_path, hdf5_foreign_data, malformed_file, sha256_file

from .errors import CaptureError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "IMAGE_KEYS", "INSTRUMENT_FIELDS", "Pattern", "Capture", "Problem",
    "pattern_sha256", "write_capture", "read_capture", "validate_capture", "capture_info",
    "pack_capture", "file_sha256",
]

FORMAT = "phaseforge-capture"
FORMAT_VERSION = 1
IMAGE_KEYS = {0: "sample", 1: "flat", 2: "dark", 4: "background"}
# name → (units, required)
INSTRUMENT_FIELDS: Dict[str, tuple] = {
    "wavelength_m": ("m", True),
    "camera_pitch_m": ("m", True),
    "slm_pitch_m": ("m", True),
    "distance_m": ("m", True),
    "magnification": ("1", False),
    "slm_bit_depth": ("1", True),
}
PLAUSIBLE = {"wavelength_m": (1e-8, 1e-4), "camera_pitch_m": (1e-7, 1e-3), "slm_pitch_m": (1e-7, 1e-3),
             "distance_m": (1e-5, 10.0), "magnification": (1e-3, 1e3), "slm_bit_depth": (1, 16)}
SATURATION_WARN = 0.01   # a frame with more than 1 % of its pixels at full scale is flagged


def pattern_sha256(gray: np.ndarray) -> str:
    """SHA-256 of a pattern's C-order little-endian bytes (shape and dtype are part of the id)."""
    a = np.ascontiguousarray(gray)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


file_sha256 = sha256_file  # the capture file's hash, recorded in CALIBRATION.h5 (optics.fileio)


@dataclass
class Pattern:
    """One SLM pattern: integer gray levels plus its metadata (kind, grating levels)."""
    gray: np.ndarray
    kind: str = "random"
    attrs: Dict[str, object] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return pattern_sha256(self.gray)


@dataclass
class Problem:
    severity: str  # "error" | "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


@dataclass
class Capture:
    """A validated capture file in memory. ``frames`` are right-justified DN (float64)."""
    path: str
    frames: np.ndarray
    bit_depth: int
    image_key: np.ndarray
    exposure_s: np.ndarray
    pattern_id: List[str]
    patterns: Dict[str, Pattern]
    instrument: Dict[str, float]
    provenance: Dict[str, str]
    gain_setting_db: Optional[np.ndarray] = None
    timestamp: Optional[List[str]] = None
    sha256: str = ""
    warnings: List[str] = field(default_factory=list)

    @property
    def max_dn(self) -> int:
        return 2 ** self.bit_depth - 1

    @property
    def shape(self):
        return tuple(self.frames.shape[-2:])

    def indices(self, key: int, *, kind: Optional[str] = None) -> np.ndarray:
        """Frame indices with ``image_key == key`` (and, for sample frames, pattern ``kind``)."""
        idx = np.flatnonzero(self.image_key == key)
        if kind is not None:
            idx = np.array([i for i in idx if self.pattern_id[i] in self.patterns
                            and self.patterns[self.pattern_id[i]].kind == kind], dtype=np.int64)
        return idx


# ------------------------------------------------------------------------------------------------
# writer
# ------------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_capture(path, *, frames: np.ndarray, image_key: Sequence[int], exposure_s: Sequence[float],
                  bit_depth: int, instrument: Mapping[str, float], patterns: Optional[Mapping[str, Pattern]] = None,
                  pattern_id: Optional[Sequence[str]] = None, gain_setting_db: Optional[Sequence[float]] = None,
                  timestamp: Optional[Sequence[str]] = None, provenance: Optional[Mapping[str, str]] = None,
                  pixel_justification: str = "lsb", overwrite: bool = False) -> Path:
    """Write a capture file atomically. ``frames`` are integer DN (N, H, W), stored as given
    (``pixel_justification="msb"`` declares left-justified data). The result is validated after
    writing; a problem raises :class:`CaptureError` and leaves no file at ``path``."""
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise CaptureError(path, ["the output file exists; pass overwrite=True (--overwrite) to replace it"])
    frames = np.asarray(frames)
    n = frames.shape[0] if frames.ndim == 3 else 0
    problems = []
    if frames.ndim != 3:
        problems.append(f"frames must be (N, H, W), got shape {frames.shape}")
    if frames.dtype not in (np.uint8, np.uint16):
        problems.append(f"frames dtype {frames.dtype} must be uint8 or uint16 (raw camera DN); "
                        f"convert with frames.astype(np.uint16)")
    if pixel_justification not in ("lsb", "msb"):
        problems.append(f"pixel_justification {pixel_justification!r} must be 'lsb' or 'msb'")
    patterns = dict(patterns or {})
    pattern_id = list(pattern_id) if pattern_id is not None else [""] * n
    for name, seq in (("image_key", image_key), ("exposure_s", exposure_s), ("pattern_id", pattern_id),
                      ("gain_setting_db", gain_setting_db), ("timestamp", timestamp)):
        if seq is not None and len(seq) != n:
            problems.append(f"{name} has {len(seq)} entries for {n} frames")
    if problems:
        raise CaptureError(path, problems)
    prov = {"created": _now(), "software": "phaseforge", "instrument": "", "camera_serial": "",
            "slm_serial": "", "description": ""}
    prov.update({k: str(v) for k, v in (provenance or {}).items()})
    with atomic_path(path, keep_partial=False) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            for k, v in prov.items():
                f.attrs[k] = v
            d = f.create_dataset("frames", data=frames, chunks=(1,) + frames.shape[1:], compression="gzip",
                                 compression_opts=4, shuffle=True)
            d.attrs["units"] = "DN"
            d.attrs["bit_depth"] = int(bit_depth)
            d.attrs["pixel_justification"] = pixel_justification
            k = f.create_dataset("image_key", data=np.asarray(image_key, dtype=np.int8))
            k.attrs["meaning"] = "0 sample, 1 flat, 2 dark, 4 background"
            e = f.create_dataset("exposure_s", data=np.asarray(exposure_s, dtype=np.float64))
            e.attrs["units"] = "s"
            if gain_setting_db is not None:
                g = f.create_dataset("gain_setting_db", data=np.asarray(gain_setting_db, dtype=np.float64))
                g.attrs["units"] = "dB"
            st = h5py.string_dtype()
            if timestamp is not None:
                f.create_dataset("timestamp", data=np.asarray(list(timestamp), dtype=object), dtype=st)
            f.create_dataset("pattern_id", data=np.asarray(pattern_id, dtype=object), dtype=st)
            pg = f.create_group("patterns")
            for pid, pat in patterns.items():
                gray = np.asarray(pat.gray)
                ds = pg.create_dataset(pid, data=gray, compression="gzip")
                ds.attrs["units"] = "gray"
                ds.attrs["sha256"] = pattern_sha256(gray)
                ds.attrs["kind"] = pat.kind
                for ak, av in pat.attrs.items():
                    ds.attrs[ak] = av
            ig = f.create_group("instrument")
            for name, value in instrument.items():
                if name not in INSTRUMENT_FIELDS:
                    raise CaptureError(path, [f"unknown instrument field {name!r}; known: {sorted(INSTRUMENT_FIELDS)}"])
                ds = ig.create_dataset(name, data=value)
                ds.attrs["units"] = INSTRUMENT_FIELDS[name][0]
        problems = [p for p in _validate(tmp) if p.severity == "error"]
        if problems:
            raise CaptureError(path, [f"{p.where}: {p.message}" for p in problems])
    return path


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def _attr_str(obj, name) -> Optional[str]:
    if name not in obj.attrs:
        return None
    v = obj.attrs[name]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v)


def _strings(ds) -> List[str]:
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in ds[()]]


def _validate(path, *, frame_stats: Optional[list] = None) -> List[Problem]:
    """Every problem of the file at ``path`` (never raises for content problems)."""
    import h5py

    P: List[Problem] = []
    err = lambda where, msg: P.append(Problem("error", where, msg))  # noqa: E731
    warn = lambda where, msg: P.append(Problem("warning", where, msg))  # noqa: E731
    path = Path(path)
    if not path.is_file():
        err(str(path), "file does not exist")
        return P
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head == b"\x89HDF\r\n\x1a\n":
            err("/", f"HDF5 signature present but the file cannot be opened (truncated or damaged: {exc}); "
                     f"re-copy or re-write it")
        else:
            err("/", f"not an HDF5 file (first bytes {head!r}); a capture file is HDF5 written by "
                     f"write_capture or `phaseforge capture pack`")
        return P
    with f:
        foreign = hdf5_foreign_data(f)
        for kind, name, target in foreign:
            err(f"/{name}", f"is {'external storage in' if kind == 'external storage' else 'a ' + kind + ' to'} "
                            f"{target}; a capture keeps all its data inside the file and data in other files "
                            f"is never followed — ask for a self-contained file")
        if foreign:
            return P
        fmt = _attr_str(f, "format")
        if fmt != FORMAT:
            err("/@format", f"is {fmt!r}, expected {FORMAT!r}: the file was written by another program; "
                            f"convert it with `phaseforge capture pack` or write_capture")
        ver = f.attrs.get("format_version")
        if fmt == FORMAT and (ver is None or int(ver) > FORMAT_VERSION):
            err("/@format_version", f"is {ver!r}; this reader understands versions <= {FORMAT_VERSION}")
        created = _attr_str(f, "created")
        if created is None:
            warn("/@created", "missing provenance time (ISO-8601)")
        else:
            try:
                _dt.datetime.fromisoformat(created)
            except ValueError:
                warn("/@created", f"{created!r} is not an ISO-8601 time")
        n = None
        bit_depth = None
        just = "lsb"
        if "frames" not in f:
            err("/frames", "missing dataset (N, H, W) of raw camera frames")
        else:
            fr = f["frames"]
            if fr.ndim != 3:
                err("/frames", f"shape {fr.shape} must be (N, H, W)")
            else:
                n, h, w = fr.shape
                if n == 0:
                    err("/frames", "holds no frames")
            if _attr_str(fr, "units") is None:
                err("/frames@units", "missing; must be 'DN'")
            elif _attr_str(fr, "units") != "DN":
                err("/frames@units", f"is {_attr_str(fr, 'units')!r}; raw frames are in 'DN'")
            if fr.dtype not in (np.uint8, np.uint16):
                err("/frames", f"dtype {fr.dtype} must be uint8 or uint16 (raw camera DN)")
            if "bit_depth" not in fr.attrs:
                err("/frames@bit_depth", "missing; the ADC bits (e.g. 12) are needed to find saturation")
            else:
                bit_depth = int(fr.attrs["bit_depth"])
                cap = 8 * fr.dtype.itemsize if fr.dtype.kind in "ui" else 16
                if not 1 <= bit_depth <= cap:
                    err("/frames@bit_depth", f"is {bit_depth}, must be 1 … {cap} for dtype {fr.dtype}")
                    bit_depth = None
            just = _attr_str(fr, "pixel_justification")
            if just is None:
                err("/frames@pixel_justification", "missing; 'lsb' (right-justified) or 'msb' (left-justified, "
                                                   "e.g. 12-bit data × 16 in uint16)")
                just = "lsb"
            elif just not in ("lsb", "msb"):
                err("/frames@pixel_justification", f"is {just!r}; must be 'lsb' or 'msb'")
                just = "lsb"
            if n and bit_depth is not None and fr.ndim == 3:
                full = 2 ** bit_depth - 1
                shift = (8 * fr.dtype.itemsize - bit_depth) if just == "msb" else 0
                for i in range(n):
                    try:
                        a = fr[i]
                    except (OSError, RuntimeError) as exc:
                        err(f"/frames[{i}]", f"cannot be read (truncated file?): {exc}")
                        continue
                    if a.dtype.kind == "f":
                        nan = int(np.count_nonzero(~np.isfinite(a)))
                        if nan:
                            err(f"/frames[{i}]", f"{nan} NaN/inf pixel(s) of {a.size}; raw frames are integers")
                        a = np.nan_to_num(a)
                    a = a.astype(np.int64)
                    if just == "msb" and shift > 0:
                        low = int(np.count_nonzero(a & ((1 << shift) - 1)))
                        if low:
                            err(f"/frames[{i}]", f"{low} pixel(s) have non-zero low bits although "
                                                 f"pixel_justification='msb' for {bit_depth}-bit data; the data is "
                                                 f"probably right-justified: set pixel_justification='lsb'")
                        a = a >> shift
                    over = int(np.count_nonzero(a > full))
                    if over:
                        err(f"/frames[{i}]", f"{over} pixel(s) exceed {full} DN, the {bit_depth}-bit full scale; "
                                             f"wrong bit_depth, or left-justified data (pixel_justification='msb')")
                    sat = float(np.count_nonzero(a >= full)) / a.size
                    if frame_stats is not None:
                        frame_stats.append({"index": i, "mean_dn": float(a.mean()), "min_dn": int(a.min()),
                                            "max_dn": int(a.max()), "saturated_fraction": sat})
                    if sat >= 1.0 - 1e-12:
                        err(f"/frames[{i}]", f"all pixels saturated ({full} DN); reduce exposure or gain")
                    elif a.size and int(a.max()) == 0:
                        err(f"/frames[{i}]", "all pixels are 0 DN: a blank frame (camera not triggered, a failed "
                                             "transfer, an empty placeholder) or, for a dark frame, a black level of "
                                             "0 that clips the read noise; recapture it (raise the camera's offset)")
                    elif a.size > 1 and int(a.min()) == int(a.max()):
                        err(f"/frames[{i}]", f"all pixels are {int(a.min())} DN: a real exposure always shows read "
                                             f"and shot noise, so this is not raw camera data; recapture it")
                    elif sat > SATURATION_WARN:
                        warn(f"/frames[{i}]", f"{100 * sat:.2f} % of pixels saturated")

        def per_frame(name, units=None, required=True):
            if name not in f:
                if required:
                    err(f"/{name}", "missing dataset (one entry per frame)")
                return None
            ds = f[name]
            if units is not None:
                u = _attr_str(ds, "units")
                if u is None:
                    err(f"/{name}@units", f"missing; must be {units!r}")
                elif u != units:
                    err(f"/{name}@units", f"is {u!r}, expected {units!r} (SI); convert the values and the attribute")
            if ds.ndim != 1:
                err(f"/{name}", f"shape {ds.shape} must be (N,)")
                return None
            if n is not None and ds.shape[0] != n:
                err(f"/{name}", f"has {ds.shape[0]} entries but /frames has {n} frames")
                return None
            return ds

        ik = per_frame("image_key")
        keys = None
        if ik is not None:
            keys = np.asarray(ik[()]).astype(np.int64)
            bad = sorted(set(keys.tolist()) - set(IMAGE_KEYS))
            if bad:
                err("/image_key", f"unknown value(s) {bad}; allowed {IMAGE_KEYS}")
        ex = per_frame("exposure_s", "s")
        if ex is not None:
            e = np.asarray(ex[()], dtype=np.float64)
            badi = np.flatnonzero(~(np.isfinite(e) & (e > 0)))
            if badi.size:
                err("/exposure_s", f"non-positive or non-finite at frame(s) {badi[:10].tolist()}")
            elif e.max() > 1e3:
                err("/exposure_s", f"maximum {e.max():g} s is implausible; values must be in seconds")
        per_frame("gain_setting_db", "dB", required=False)
        ts = per_frame("timestamp", required=False)
        if ts is not None:
            for i, t in enumerate(_strings(ts)):
                try:
                    _dt.datetime.fromisoformat(t)
                except ValueError:
                    warn(f"/timestamp[{i}]", f"{t!r} is not ISO-8601")
                    break
        pid = per_frame("pattern_id")
        ids = _strings(pid) if pid is not None else None
        pats = f.get("patterns")
        known = set()
        if pats is None:
            err("/patterns", "missing group of SLM patterns")
        else:
            for name, ds in pats.items():
                if not isinstance(ds, h5py.Dataset):
                    err(f"/patterns/{name}", "is a group, expected a (h, w) gray-level dataset")
                    continue
                known.add(name)
                if ds.ndim != 2:
                    err(f"/patterns/{name}", f"shape {ds.shape} must be (h, w)")
                    continue
                if ds.dtype.kind not in "ui":
                    err(f"/patterns/{name}", f"dtype {ds.dtype} must be an integer gray level")
                u = _attr_str(ds, "units")
                if u != "gray":
                    err(f"/patterns/{name}@units", f"is {u!r}, expected 'gray'")
                sha = _attr_str(ds, "sha256")
                if sha is None:
                    err(f"/patterns/{name}@sha256", "missing pattern hash")
                elif sha != pattern_sha256(ds[()]):
                    err(f"/patterns/{name}@sha256", f"hash mismatch: stored {sha[:12]}…, content "
                                                    f"{pattern_sha256(ds[()])[:12]}…; the pattern was altered or "
                                                    f"belongs to another file")
                kind = _attr_str(ds, "kind")
                if kind not in ("random", "grating", "uniform"):
                    err(f"/patterns/{name}@kind", f"is {kind!r}; must be random, grating or uniform")
                if kind == "grating":
                    for a in ("gray_reference", "gray_level", "period_px"):
                        if a not in ds.attrs:
                            err(f"/patterns/{name}@{a}", "missing (grating patterns need it)")
        if ids is not None:
            unknown = sorted({p for p in ids if p and p not in known})
            if unknown:
                err("/pattern_id", f"unknown pattern id(s) {unknown[:8]} (not in /patterns)")
            if keys is not None:
                missing = [i for i, (k, p) in enumerate(zip(keys, ids)) if k == 0 and not p]
                if missing:
                    err("/pattern_id", f"sample frame(s) {missing[:10]} name no SLM pattern")
        ins = f.get("instrument")
        if ins is None:
            err("/instrument", "missing group (wavelength_m, camera_pitch_m, slm_pitch_m, distance_m, slm_bit_depth)")
        else:
            for name, (units, required) in INSTRUMENT_FIELDS.items():
                if name not in ins:
                    if required:
                        err(f"/instrument/{name}", f"missing (units {units!r})")
                    continue
                ds = ins[name]
                u = _attr_str(ds, "units")
                if u is None:
                    err(f"/instrument/{name}@units", f"missing; must be {units!r}")
                elif u != units:
                    err(f"/instrument/{name}@units", f"is {u!r}, expected {units!r} (SI)")
                try:
                    v = float(ds[()])
                except (TypeError, ValueError):
                    err(f"/instrument/{name}", f"is not a number: {ds[()]!r}")
                    continue
                lo, hi = PLAUSIBLE[name]
                if not (np.isfinite(v) and lo <= v <= hi):
                    err(f"/instrument/{name}", f"= {v!r} {units} is outside the plausible range [{lo:g}, {hi:g}]; "
                                               f"values are SI (633 nm is 6.33e-07 m)")
    return P


def _damaged_as_capture_error(fn):
    """A damaged file (unreadable chunk, wrong-typed value) raises CaptureError, not a traceback."""
    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        with malformed_file(path, lambda msg: CaptureError(path, [msg]), what="capture file"):
            return fn(path, *args, **kwargs)
    return wrapper


def validate_capture(path, *, frame_stats: Optional[list] = None) -> List[Problem]:
    """All problems of a capture file (errors and warnings), in file order. Never raises for
    content (a damaged file is one error problem); pass a list as ``frame_stats`` to collect
    per-frame statistics."""
    try:
        return _damaged_as_capture_error(_validate)(path, frame_stats=frame_stats)
    except CaptureError as exc:
        return [Problem("error", "/", m) for m in exc.problems]


# ------------------------------------------------------------------------------------------------
# reader
# ------------------------------------------------------------------------------------------------
@_damaged_as_capture_error
def read_capture(path) -> Capture:
    """Read and validate a capture file (read-only). Raises :class:`CaptureError` listing every
    error; warnings are kept in ``Capture.warnings``."""
    import h5py

    problems = _validate(path)
    errors = [f"{p.where}: {p.message}" for p in problems if p.severity == "error"]
    if errors:
        raise CaptureError(path, errors)
    with h5py.File(path, "r") as f:
        fr = f["frames"]
        bit_depth = int(fr.attrs["bit_depth"])
        raw = fr[()].astype(np.int64)
        if _attr_str(fr, "pixel_justification") == "msb":
            raw = raw >> (8 * fr.dtype.itemsize - bit_depth)
        patterns = {}
        for name, ds in f["patterns"].items():
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in ds.attrs.items()
                     if k not in ("units", "sha256", "kind")}
            patterns[name] = Pattern(ds[()], kind=_attr_str(ds, "kind"), attrs=attrs)
        instrument = {k: float(ds[()]) for k, ds in f["instrument"].items()}
        instrument.setdefault("magnification", 1.0)
        prov = {k: _attr_str(f, k) for k in f.attrs if k not in ("format_version",)}
        cap = Capture(
            path=str(path), frames=raw.astype(np.float64), bit_depth=bit_depth,
            image_key=np.asarray(f["image_key"][()]).astype(np.int64),
            exposure_s=np.asarray(f["exposure_s"][()], dtype=np.float64),
            pattern_id=_strings(f["pattern_id"]), patterns=patterns, instrument=instrument, provenance=prov,
            gain_setting_db=(np.asarray(f["gain_setting_db"][()], dtype=np.float64) if "gain_setting_db" in f else None),
            timestamp=(_strings(f["timestamp"]) if "timestamp" in f else None),
            sha256=file_sha256(path), warnings=[str(p) for p in problems])
    return cap


@_damaged_as_capture_error
def capture_info(path, *, problems: Optional[list] = None) -> str:
    """A human-readable summary (frames per image key, exposures, patterns, instrument, problems).

    A file that cannot be summarised — missing, not HDF5, truncated, from another program, no
    readable frames — raises :class:`CaptureError` listing every problem. Pass a list as
    ``problems`` to collect the :class:`Problem` entries of a file that can (``capture info``
    exits 1 when one is an error, like ``capture validate``)."""
    stats: list = []
    found = _validate(path, frame_stats=stats)
    if problems is not None:
        problems.extend(found)
    errors = [p for p in found if p.severity == "error"]
    if errors and not stats:
        raise CaptureError(path, [f"{p.where}: {p.message}" for p in errors])
    lines = [f"capture file {path}"]
    import h5py

    with h5py.File(path, "r") as f:
        lines.append(f"  format {_attr_str(f, 'format')!r} v{f.attrs.get('format_version')}, created "
                     f"{_attr_str(f, 'created')}, instrument {_attr_str(f, 'instrument')!r}, camera "
                     f"{_attr_str(f, 'camera_serial')!r}, SLM {_attr_str(f, 'slm_serial')!r}, software "
                     f"{_attr_str(f, 'software')!r}")
        fr = f["frames"]
        lines.append(f"  frames {fr.shape} {fr.dtype}, {fr.attrs.get('bit_depth')}-bit, "
                     f"{_attr_str(fr, 'pixel_justification')}-justified")
        if "image_key" in f and "exposure_s" in f:
            keys = np.asarray(f["image_key"][()])
            exp = np.asarray(f["exposure_s"][()])
            for k, name in IMAGE_KEYS.items():
                sel = keys == k
                if sel.any():
                    sat = [s["saturated_fraction"] for s in stats if s["index"] < len(keys) and keys[s["index"]] == k]
                    mean = [s["mean_dn"] for s in stats if s["index"] < len(keys) and keys[s["index"]] == k]
                    lines.append(f"  {name:10s} {int(sel.sum()):3d} frames, exposure {exp[sel].min():.4g} … "
                                 f"{exp[sel].max():.4g} s, mean {min(mean, default=0):.1f} … {max(mean, default=0):.1f} DN, "
                                 f"max saturated fraction {max(sat, default=0):.4f}")
        if "patterns" in f:
            kinds: Dict[str, int] = {}
            for ds in f["patterns"].values():
                kinds[_attr_str(ds, "kind") or "?"] = kinds.get(_attr_str(ds, "kind") or "?", 0) + 1
            lines.append(f"  patterns: {len(f['patterns'])} ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})")
        if "instrument" in f:
            lines.append("  instrument: " + ", ".join(
                f"{k} = {float(ds[()]):.6g} {_attr_str(ds, 'units')}" for k, ds in f["instrument"].items()))
    lines.append(f"  {len(errors)} error(s), {len(found) - len(errors)} warning(s)")
    lines += [f"    {p}" for p in found]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# pack: a folder of TIFF/PNG frames + YAML metadata → capture file
# ------------------------------------------------------------------------------------------------
def _read_image(p: Path) -> np.ndarray:
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        return np.asarray(tifffile.imread(p))
    from PIL import Image
    with Image.open(p) as im:
        return np.asarray(im)


def pack_capture(folder, metadata, out, *, overwrite: bool = False) -> Path:
    """Build a capture file from a folder of frames plus a YAML of metadata.

    The YAML (``metadata``, a path) holds::

        bit_depth: 12
        pixel_justification: lsb          # or msb
        instrument: {wavelength_m: 6.33e-7, camera_pitch_m: 5.5e-6, slm_pitch_m: 8e-6,
                     distance_m: 0.002, slm_bit_depth: 8}
        provenance: {instrument: bench 2, camera_serial: "…", slm_serial: "…"}
        patterns:                         # gray-level arrays as .npy/.png/.tif files in the folder
          p0: {file: p0.npy, kind: random}
          g16: {file: g16.png, kind: grating, gray_reference: 0, gray_level: 16, period_px: 8}
        frames:                           # one entry per frame file, in order
          - {file: dark_000.tif, image_key: 2, exposure_s: 0.001}
          - {file: img_000.png, image_key: 0, exposure_s: 0.002, pattern_id: p0, gain_setting_db: 0}

    Every problem in the YAML and the files is collected before anything is written.
    """
    import yaml

    folder = Path(folder)
    problems = []
    try:
        meta = yaml.safe_load(Path(metadata).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CaptureError(metadata, [f"cannot read the metadata YAML: {exc}"]) from exc
    if not isinstance(meta, dict):
        raise CaptureError(metadata, ["the metadata YAML must be a mapping (bit_depth, instrument, frames, …)"])
    for key in ("bit_depth", "instrument", "frames"):
        if key not in meta:
            problems.append(f"metadata key {key!r} is missing")
    frames, keys, exps, pids, gains = [], [], [], [], []
    for i, fr in enumerate(meta.get("frames") or []):
        if not isinstance(fr, dict) or "file" not in fr:
            problems.append(f"frames[{i}] must be a mapping with 'file'")
            continue
        p = folder / str(fr["file"])
        if not p.is_file():
            problems.append(f"frames[{i}]: file {str(p)!r} does not exist")
            continue
        try:
            a = _read_image(p)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a problem to list
            problems.append(f"frames[{i}]: cannot read {str(p)!r}: {exc}")
            continue
        if a.ndim != 2:
            problems.append(f"frames[{i}]: {p.name} has shape {a.shape}; frames must be single-channel (H, W)")
            continue
        if frames and a.shape != frames[0].shape:
            problems.append(f"frames[{i}]: {p.name} has shape {a.shape}, the first frame {frames[0].shape}")
            continue
        for k in ("image_key", "exposure_s"):
            if k not in fr:
                problems.append(f"frames[{i}]: missing {k!r}")
        frames.append(a)
        keys.append(int(fr.get("image_key", -1)))
        exps.append(float(fr.get("exposure_s", float("nan"))))
        pids.append(str(fr.get("pattern_id", "")))
        gains.append(float(fr.get("gain_setting_db", 0.0)))
    patterns = {}
    for pid, spec in (meta.get("patterns") or {}).items():
        if not isinstance(spec, dict) or "file" not in spec:
            problems.append(f"patterns.{pid} must be a mapping with 'file'")
            continue
        p = folder / str(spec["file"])
        if not p.is_file():
            problems.append(f"patterns.{pid}: file {str(p)!r} does not exist")
            continue
        if p.suffix == ".npy":
            try:
                gray = np.load(p, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                problems.append(f"patterns.{pid}: {str(p)!r} is not a numeric .npy array ({type(exc).__name__}: {exc})")
                continue
        else:
            gray = _read_image(p)
        patterns[pid] = Pattern(np.asarray(gray), kind=str(spec.get("kind", "random")),
                                attrs={k: v for k, v in spec.items() if k not in ("file", "kind")})
    if not frames and not problems:
        problems.append("no frames listed")
    if problems:
        raise CaptureError(out, problems)
    stack = np.stack(frames)
    if stack.dtype not in (np.uint8, np.uint16):
        if stack.dtype.kind in "ui" and stack.max(initial=0) <= 65535 and stack.min(initial=0) >= 0:
            stack = stack.astype(np.uint16)
        else:
            raise CaptureError(out, [f"frame files hold {stack.dtype} data; raw frames must be 8/16-bit integers"])
    return write_capture(out, frames=stack, image_key=keys, exposure_s=exps, bit_depth=int(meta["bit_depth"]),
                         instrument=meta["instrument"], patterns=patterns, pattern_id=pids, gain_setting_db=gains,
                         provenance=meta.get("provenance") or {},
                         pixel_justification=str(meta.get("pixel_justification", "lsb")), overwrite=overwrite)
