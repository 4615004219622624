"""Measurements from anywhere: CDPs and masks read from ``.npy``/``.npz``/HDF5/TIFF files.

``load_measured(measurements, masks, geometry=..., truth=...)`` reads intensity (or amplitude)
measurements that did not come from ``phaseforge simulate``, checks them, and returns them with
the linear operator they were measured through, ready for any solver or learned reconstructor
(``phaseforge reconstruct --measurements … --masks …`` is the command-line face of it).

Array specifications are ``PATH`` or ``PATH:KEY``: ``.npy`` (one array), ``.npz`` (``KEY`` names
the array; optional when the archive holds one), ``.h5``/``.hdf5`` (``KEY`` is the dataset path;
optional when the file holds one dataset), ``.tif``/``.tiff`` (a page stack). Nothing is
unpickled (``allow_pickle=False``).

Shapes: measurements ``(L, Mh, Mw)`` for one object or ``(N, L, Mh, Mw)``; masks ``(L, H, W)`` (or
``(H, W)`` for ``L = 1``), either complex modulations or real phases in rad; the optional ground
truth ``(H, W)`` or ``(N, H, W)``, real or complex. The detector window must be
``round(oversampling·H) × round(oversampling·W)``.

Geometry (:class:`Geometry`): the unit-free unitary FFT (``method="fft"``, the standard CDP
benchmark's ``A x = FFT2(M ⊙ x)/N``) or a physical propagator (``"fraunhofer"``, ``"asm"``, …
with ``pitch_m``, ``wavelength_m``, ``z_m``), the zero padding ``oversampling``, and the detector
sample order: ``"centered"`` (DC at ``(M//2, M//2)``, phaseforge's convention) or ``"fft"`` (DC at
``(0, 0)``, what ``numpy.fft.fft2`` returns and what the published benchmark stores).

Checks, each an error (:class:`MeasuredDataError`) naming the problem and the fix:
mismatched shapes; NaN/inf; negative intensities (dark subtraction: clamp them); **amplitudes
given where intensities are expected** — fully developed speckle (any CDP through a random or
diffuser-like mask) has intensity statistics with ``mean(y²)/mean(y)² ≈ 2`` (exponential) and
amplitude statistics ``≈ 4/π ≈ 1.27`` (Rayleigh), so a ratio below :data:`AMPLITUDE_RATIO`
(1.6) is reported as "these look like amplitudes" (``quantity="amplitude"`` squares them; pass
``check_quantity=False`` for a mask that does not make speckle); and a detector sample order that
does not match the data (:func:`optics.cdp.check_detector_order`, an error here unless the order
was given explicitly, :attr:`Geometry.order_given`).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import LearningError

__all__ = ["MeasuredDataError", "Geometry", "Measured", "load_array", "load_measured", "QUANTITIES",
           "AMPLITUDE_RATIO", "speckle_ratio"]

QUANTITIES = ("intensity", "amplitude")
#: ``mean(y²)/mean(y)²`` below which measurements declared as intensities are taken for amplitudes
#: (exponential speckle: 2; Rayleigh amplitudes: 4/π ≈ 1.27)
AMPLITUDE_RATIO = 1.6
DETECTOR_ORDERS = ("centered", "fft")


class MeasuredDataError(LearningError):
    """Measurements, masks or ground truth from a user's files that cannot be used as given."""


@dataclass
class Geometry:
    """How the measurements were made (module docstring). SI units for the physical values."""

    method: str = "fft"
    detector_order: str = "centered"
    oversampling: float = 1.0
    pitch_m: Optional[float] = None
    wavelength_m: Optional[float] = None
    z_m: Optional[float] = None
    quantity: str = "intensity"
    #: True when the user stated ``detector_order`` (then a mismatch is a warning, not an error)
    order_given: bool = False

    def check(self) -> "Geometry":
        from optics.propagation import METHODS
        methods = ("fft",) + tuple(m for m in METHODS if m != "auto")
        if self.method not in methods:
            raise MeasuredDataError(f"geometry.method = {self.method!r}; choose one of {methods} "
                                    f"('fft' = unit-free unitary FFT, no pitch/wavelength/distance)")
        if self.detector_order not in DETECTOR_ORDERS:
            raise MeasuredDataError(f"geometry.detector_order = {self.detector_order!r}; choose 'centered' "
                                    f"(DC at M//2) or 'fft' (DC at index 0, numpy.fft order)")
        if self.quantity not in QUANTITIES:
            raise MeasuredDataError(f"geometry.quantity = {self.quantity!r}; choose 'intensity' (|Ax|²) or "
                                    f"'amplitude' (|Ax|, squared on reading)")
        if not (isinstance(self.oversampling, (int, float)) and self.oversampling >= 1):
            raise MeasuredDataError(f"geometry.oversampling = {self.oversampling!r}; it is the detector "
                                    f"window over the object window, a number ≥ 1")
        if self.method != "fft":
            missing = [k for k in ("pitch_m", "wavelength_m", "z_m") if getattr(self, k) is None]
            if missing:
                raise MeasuredDataError(
                    f"geometry.method = {self.method!r} is physical and needs {', '.join(missing)} (SI: metres); "
                    f"give them, or use method 'fft' for a unit-free unitary FFT")
        return self

    @classmethod
    def from_mapping(cls, m: dict, where: str = "geometry") -> "Geometry":
        names = {f.name for f in dataclasses.fields(cls)} - {"order_given"}
        unknown = sorted(set(m) - names)
        if unknown:
            raise MeasuredDataError(f"{where}: unknown key(s) {unknown}; the geometry keys are {sorted(names)}")
        g = cls(**m)
        g.order_given = "detector_order" in m
        return g.check()


@dataclass
class Measured:
    """Checked measurements with their operator (``y`` intensities ``(N, L, Mh, Mw)``)."""

    y: torch.Tensor
    operator: object
    truth: Optional[torch.Tensor]
    masks: torch.Tensor
    geometry: Geometry
    sources: dict


def _split_spec(spec) -> tuple[Path, Optional[str]]:
    s = str(spec)
    p = Path(s)
    if not p.exists() and ":" in s:
        head, key = s.rsplit(":", 1)
        return Path(head), key
    return p, None


def load_array(spec, what: str = "array") -> np.ndarray:
    """The array named by ``PATH`` or ``PATH:KEY`` (module docstring), never unpickling."""
    p, key = _split_spec(spec)
    if not p.is_file():
        raise MeasuredDataError(f"{what}: {p} does not exist (give PATH or PATH:KEY of a .npy/.npz/.h5/.tif file)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if key is None:
                    if len(keys) != 1:
                        raise MeasuredDataError(f"{what}: {p} holds arrays {keys}; name one as {p}:KEY")
                    key = keys[0]
                if key not in keys:
                    raise MeasuredDataError(f"{what}: {p} has no array {key!r}; it holds {keys}")
                return z[key]
        if suffix in (".h5", ".hdf5", ".hdf"):
            import h5py
            with h5py.File(p, "r") as f:
                if key is None:
                    found = []
                    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
                    if len(found) != 1:
                        raise MeasuredDataError(f"{what}: {p} holds datasets {found}; name one as {p}:DATASET")
                    key = found[0]
                d = f.get(key)
                if not isinstance(d, h5py.Dataset):
                    raise MeasuredDataError(f"{what}: {p} has no dataset {key!r}")
                return d[()]
        if suffix in (".tif", ".tiff"):
            import tifffile
            return tifffile.imread(p)
    except MeasuredDataError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise MeasuredDataError(f"{what}: cannot read {p}: {type(exc).__name__}: {exc}") from exc
    raise MeasuredDataError(f"{what}: {p} has suffix {suffix!r}; supported: .npy, .npz, .h5/.hdf5, .tif/.tiff")


def speckle_ratio(y: torch.Tensor) -> float:
    """``mean(y²)/mean(y)²`` over all values (2 for exponential speckle intensities, 4/π for
    Rayleigh amplitudes)."""
    y = y.to(torch.float64)
    m = float(y.mean())
    return float((y * y).mean()) / (m * m) if m > 0 else float("nan")


def _masks_tensor(a: np.ndarray, where: str) -> torch.Tensor:
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise MeasuredDataError(f"{where} has shape {a.shape}; expected (L, H, W) masks (or (H, W) for one)")
    if not np.all(np.isfinite(a)):
        raise MeasuredDataError(f"{where} holds NaN/inf values")
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_complex():
        return t.to(torch.complex64)
    if not t.is_floating_point():
        raise MeasuredDataError(f"{where} has dtype {a.dtype}; masks are complex modulations or real phases in rad")
    th = t.to(torch.float64)
    return torch.polar(torch.ones_like(th), th).to(torch.complex64)


def build_operator(masks: torch.Tensor, geometry: Geometry):
    """The operator of ``geometry`` for ``(L, H, W)`` complex masks (eval mode)."""
    from optics.cdp import CDPSystem
    g = geometry
    if g.method == "fft":
        return CDPSystem(masks, method="fft", oversampling=float(g.oversampling),
                         detector_order=g.detector_order).eval()
    return CDPSystem(masks, pitch_m=float(g.pitch_m), wavelength_m=float(g.wavelength_m), z_m=float(g.z_m),
                     method=g.method, oversampling=float(g.oversampling), detector_order=g.detector_order).eval()


def load_measured(measurements, masks, *, geometry: Geometry, truth=None, check_quantity: bool = True) -> Measured:
    """Read and check measurements, masks and an optional ground truth (module docstring).

    ``measurements``, ``masks``, ``truth``: array specifications (``PATH[:KEY]``) or arrays.
    Returns :class:`Measured` with float32 intensities ``(N, L, Mh, Mw)`` and the operator.
    """
    geometry.check()
    ya = load_array(measurements, "measurements") if not isinstance(measurements, np.ndarray) else measurements
    ma = load_array(masks, "masks") if not isinstance(masks, np.ndarray) else masks
    m = _masks_tensor(np.asarray(ma), "masks")
    L, H, W = m.shape
    ya = np.asarray(ya)
    if np.iscomplexobj(ya):
        raise MeasuredDataError("measurements are complex; give the measured intensities |Ax|² (or amplitudes "
                                "with quantity 'amplitude'), not the fields")
    if ya.ndim == 3:
        ya = ya[None]
    if ya.ndim != 4:
        raise MeasuredDataError(f"measurements have shape {ya.shape}; expected (L, Mh, Mw) or (N, L, Mh, Mw)")
    Mh, Mw = (int(round(geometry.oversampling * n)) for n in (H, W))
    if ya.shape[1] != L:
        raise MeasuredDataError(f"measurements hold {ya.shape[1]} patterns per object (shape {ya.shape}) but "
                                f"there are {L} masks; give one (Mh, Mw) pattern per mask, masks first")
    if tuple(ya.shape[2:]) != (Mh, Mw):
        raise MeasuredDataError(
            f"measurement patterns are {tuple(ya.shape[2:])} but masks of {H}×{W} with oversampling "
            f"{geometry.oversampling:g} give a {Mh}×{Mw} detector window; set geometry.oversampling to "
            f"{ya.shape[2] / H:g} or check that the masks belong to these measurements")
    y = torch.from_numpy(np.ascontiguousarray(ya)).to(torch.float32)
    bad = int((~torch.isfinite(y)).sum())
    if bad:
        raise MeasuredDataError(f"measurements hold {bad} NaN/inf value(s); repair or drop those frames")
    ymin = float(y.min())
    if ymin < 0:
        n_neg = int((y < 0).sum())
        raise MeasuredDataError(
            f"measurements hold {n_neg} negative value(s) (min {ymin:.4g}); {geometry.quantity}s are ≥ 0 — after "
            f"dark subtraction clamp them (numpy.clip(y, 0, None)) before reconstructing")
    if geometry.quantity == "amplitude":
        y = y * y
    elif check_quantity:
        r = speckle_ratio(y)
        if r < AMPLITUDE_RATIO:
            raise MeasuredDataError(
                f"the measurements look like amplitudes |Ax|, not intensities |Ax|²: mean(y²)/mean(y)² = {r:.3f} "
                f"(speckle intensities ≈ 2, amplitudes ≈ 4/π = 1.27, threshold {AMPLITUDE_RATIO}); pass quantity "
                f"'amplitude' (--quantity amplitude) to square them, or disable this check for a mask that does "
                f"not make speckle")
    op = build_operator(m, geometry)
    from optics.cdp import DetectorOrderWarning, check_detector_order
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DetectorOrderWarning)
        check_detector_order(y, op)
    for w in caught:
        if not issubclass(w.category, DetectorOrderWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif geometry.order_given:
            warnings.warn(str(w.message), DetectorOrderWarning, stacklevel=2)
        else:
            raise MeasuredDataError(f"{w.message} (detector_order was not given: set geometry.detector_order "
                                    f"explicitly to proceed with this order anyway)")
    x = None
    if truth is not None:
        ta = np.asarray(load_array(truth, "truth") if not isinstance(truth, np.ndarray) else truth)
        if ta.ndim == 2:
            ta = ta[None]
        if ta.ndim != 3 or tuple(ta.shape[1:]) != (H, W) or ta.shape[0] != y.shape[0]:
            raise MeasuredDataError(f"truth has shape {ta.shape}; expected ({y.shape[0]}, {H}, {W}): one object "
                                    f"per measurement set, on the masks' grid")
        if not np.all(np.isfinite(ta)):
            raise MeasuredDataError("truth holds NaN/inf values")
        x = torch.from_numpy(np.ascontiguousarray(ta))
        x = x.to(torch.complex64) if x.is_complex() else x.to(torch.float32).to(torch.complex64)
    return Measured(y=y, operator=op, truth=x, masks=m, geometry=geometry,
                    sources={"measurements": str(measurements) if not isinstance(measurements, np.ndarray) else "array",
                             "masks": str(masks) if not isinstance(masks, np.ndarray) else "array",
                             "truth": None if truth is None else (str(truth) if not isinstance(truth, np.ndarray)
                                                                  else "array")})
