"""Designs in: one phase map (radians) with its grid, from any of the accepted sources.

* a design file ``design.h5`` (:mod:`optics.design`, the one reader): grid from the file;
* a CDP dataset (HDF5 written by ``learning/h5io.py``): ``/masks`` ``(L, Hm, Wm)`` phases in rad
  on the simulation grid, pitch ``/parameters/optics`` ``pitch_m``, wavelength ``wavelength_m``,
  distance ``z_m``, method ``method`` (read here with h5py; fabrication never imports learning).
  Masks with a ``/mask_amplitude`` (``|M| ≠ 1``) cannot be shown by a phase-only device: refused;
* a ``.npy`` phase map in radians, ``(h, w)`` or ``(L, h, w)``: pitch and wavelength must be given
  (CLI ``--pitch-m``, ``--wavelength-m``);
* an image (``.png``, ``.bmp``, ``.tif``/``.tiff``): gray values ``g`` times an explicit phase
  scale, ``φ = g · phase_per_gray_rad`` (CLI ``--phase-per-gray-rad``, e.g. ``2π/256`` for an
  8-bit SLM picture), plus pitch and wavelength.

A grid given on the command line for a file that carries its own grid must agree with it (the
file's physics comes from the file). ``index`` picks one mask of several (negative from the end).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from optics.design import FORMAT as DESIGN_FORMAT
from optics.design import read_design
from optics.fileio import refuse_foreign_data

from . import _io as _v
from .errors import FabricationError

__all__ = ["PhaseDesign", "load_design", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


@dataclass
class PhaseDesign:
    """One phase map ``phase_rad`` (h, w) float64 radians on a square grid of ``pixel_pitch_m``
    for ``wavelength_m``, with what it was designed for and where it came from."""

    phase_rad: np.ndarray
    pixel_pitch_m: float
    wavelength_m: float
    levels: Optional[int] = None
    z_m: Optional[float] = None
    method: Optional[str] = None
    source: str = ""
    index: int = 0
    n_masks: int = 1
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.phase_rad = _check_finite(self.phase_rad, f"design {self.source or '(in memory)'}")
        self.pixel_pitch_m = _v.pitch("pixel_pitch_m", self.pixel_pitch_m)
        self.wavelength_m = _v.wavelength("wavelength_m", self.wavelength_m)

    @property
    def shape(self):
        return tuple(int(s) for s in self.phase_rad.shape)

    def phase_sha256(self) -> str:
        """SHA-256 of the phase map (float64 little-endian, C order): identifies the exported design."""
        import hashlib
        return hashlib.sha256(np.ascontiguousarray(self.phase_rad, dtype="<f8").tobytes()).hexdigest()

    def describe(self) -> dict:
        return {"source": self.source, "index": self.index, "n_masks": self.n_masks,
                "phase_sha256": self.phase_sha256(), "phase_hashed_as": "float64 little-endian rad, C order",
                "shape_px": list(self.shape), "pixel_pitch_m": self.pixel_pitch_m,
                "wavelength_m": self.wavelength_m, "levels": self.levels, "z_m": self.z_m,
                "method": self.method, "provenance": self.provenance}


def _pick(stack: np.ndarray, index: int, what: str) -> np.ndarray:
    n = stack.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= int(index) < n:
        raise FabricationError(f"--index {index!r} is out of range: {what} holds {n} mask(s); "
                               f"use an index in 0 … {n - 1}")
    return stack[int(index)]


def _check_finite(a: np.ndarray, what: str) -> np.ndarray:
    if np.iscomplexobj(a):
        raise FabricationError(f"{what} is complex; a design is real phases in radians (np.angle(mask))")
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or min(a.shape) < 1:
        raise FabricationError(f"{what} must be a 2-D phase map (h, w), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        r, c = (int(v) for v in bad[0])
        raise FabricationError(f"{what} contains {len(bad)} NaN/inf value(s) (first at row {r}, column {c}); "
                               f"repair the phase map (numpy.nan_to_num) before exporting")
    return a


def _grid_from_options(pixel_pitch_m, wavelength_m, what: str):
    missing = [opt for opt, v in (("--pitch-m (pixel_pitch_m)", pixel_pitch_m),
                                  ("--wavelength-m (wavelength_m)", wavelength_m)) if v is None]
    if missing:
        raise FabricationError(f"{what} carries no grid: give {' and '.join(missing)}; a phase map "
                               f"without its pitch and wavelength cannot be exported")
    return _v.pitch("pixel_pitch_m", pixel_pitch_m), _v.wavelength("wavelength_m", wavelength_m)


def _agree(name: str, given, stored: float, path) -> None:
    if given is not None and not math.isclose(float(given), stored, rel_tol=1e-9):
        raise FabricationError(f"{name} = {given!r} was given but {path} stores {stored!r}; the file's "
                               f"grid is authoritative — drop the option or export another file")


def load_design(path, *, index: int = 0, pixel_pitch_m: Optional[float] = None,
                wavelength_m: Optional[float] = None, phase_per_gray_rad: Optional[float] = None,
                z_m: Optional[float] = None, method: Optional[str] = None) -> PhaseDesign:
    """Load mask ``index`` of a design from ``path`` (see the module docstring for the sources)."""
    p = Path(path)
    if p.is_file():
        p = p.resolve()  # the sidecar records where the design came from; `export verify` reloads it
    if not p.is_file():
        raise FabricationError(f"design {p} does not exist (expected design.h5, a CDP dataset .h5, "
                               f"a .npy phase map or an image)")
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        import h5py
        try:
            with h5py.File(p, "r") as f:
                fmt = f.attrs.get("format")
                is_dataset = "masks" in f and "parameters" in f
        except OSError as exc:
            raise FabricationError(f"{p} is not a readable HDF5 file ({exc})") from exc
        if fmt == DESIGN_FORMAT:
            d = read_design(p)
            _agree("pixel_pitch_m", pixel_pitch_m, d.pixel_pitch_m, p)
            _agree("wavelength_m", wavelength_m, d.wavelength_m, p)
            ph = _check_finite(_pick(d.phase_rad, index, str(p)), str(p))
            return PhaseDesign(ph, d.pixel_pitch_m, d.wavelength_m, levels=d.levels,
                               z_m=d.z_m if z_m is None else float(z_m),
                               method=d.method if method is None else method, source=str(p),
                               index=int(index) % d.n_masks, n_masks=d.n_masks,
                               provenance={"kind": "design", "software": d.software, "created": d.created,
                                           "design_source": d.source, "extra": d.extra})
        if is_dataset:
            return _from_dataset(p, index, pixel_pitch_m, wavelength_m, z_m, method)
        raise FabricationError(f"{p} is neither a design file (format {DESIGN_FORMAT!r}) nor a CDP "
                               f"dataset (/masks and /parameters); write designs with optics.design.write_design")
    if suffix == ".npy":
        a = np.load(p, allow_pickle=False)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise FabricationError(f"{p} holds an array of shape {a.shape}; expected (h, w) or (L, h, w) phases in rad")
        dx, lam = _grid_from_options(pixel_pitch_m, wavelength_m, str(p))
        ph = _check_finite(_pick(a, index, str(p)), str(p))
        return PhaseDesign(ph, dx, lam, z_m=z_m, method=method, source=str(p), index=int(index) % a.shape[0],
                           n_masks=int(a.shape[0]), provenance={"kind": "npy"})
    if suffix in IMAGE_SUFFIXES:
        if phase_per_gray_rad is None:
            raise FabricationError(f"{p} is an image: give its phase scale --phase-per-gray-rad (phase = gray × "
                                   f"scale, e.g. {2 * math.pi / 256:.6g} for an 8-bit 2π picture)")
        k = _v.positive("phase_per_gray_rad", phase_per_gray_rad, unit="rad")
        g = _read_gray_image(p)
        dx, lam = _grid_from_options(pixel_pitch_m, wavelength_m, str(p))
        ph = _check_finite(g.astype(np.float64) * k, str(p))
        return PhaseDesign(ph, dx, lam, z_m=z_m, method=method, source=str(p),
                           provenance={"kind": "image", "phase_per_gray_rad": k, "image_dtype": str(g.dtype)})
    raise FabricationError(f"unsupported design file type {p.suffix!r} for {p}; use design.h5, a CDP dataset "
                           f".h5, a .npy phase map in rad, or an image ({', '.join(IMAGE_SUFFIXES)})")


def _read_gray_image(p: Path) -> np.ndarray:
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        g = tifffile.imread(p)
    else:
        from PIL import Image
        with Image.open(p) as im:
            if im.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "P", "F"):
                raise FabricationError(f"{p} is a {im.mode} image; a phase picture must be single-channel "
                                       f"grayscale (8 or 16 bit)")
            if im.mode == "P":
                im = im.convert("L")
            g = np.asarray(im)
    g = np.asarray(g)
    if g.ndim != 2:
        raise FabricationError(f"{p} has shape {g.shape}; a phase picture must be single-channel grayscale")
    return g


def _from_dataset(p: Path, index, pixel_pitch_m, wavelength_m, z_m, method) -> PhaseDesign:
    import h5py
    with h5py.File(p, "r") as f:
        refuse_foreign_data(f, p, FabricationError, what="a CDP dataset")
        if "mask_amplitude" in f:
            raise FabricationError(f"{p}: the masks have a modulus |M| ≠ 1 (/mask_amplitude); a phase-only SLM "
                                   f"or DOE cannot show them — export a phase-only design")
        masks = f["masks"]
        if masks.attrs.get("units", "rad") != "rad" or masks.ndim != 3:
            raise FabricationError(f"{p}: /masks must be (L, H, W) phases with units 'rad'")
        n = masks.shape[0]
        ph = masks[int(_pick(np.arange(n), index, str(p)))]
        g = f["parameters"].get("optics")
        if g is None:
            raise FabricationError(f"{p}: /parameters/optics is missing; cannot tell the masks' pitch and wavelength")
        attrs = {k: g.attrs[k] for k in g.attrs}
    def num(key):
        v = attrs.get(key)
        if v is None or isinstance(v, h5py.Empty):
            return None
        return float(np.asarray(v).reshape(-1)[0])
    dx, lam = num("pitch_m"), num("wavelength_m")
    if dx is None or lam is None:
        raise FabricationError(f"{p}: /parameters/optics lacks pitch_m or wavelength_m")
    _agree("pixel_pitch_m", pixel_pitch_m, dx, p)
    _agree("wavelength_m", wavelength_m, lam, p)
    stored_method = attrs.get("method")
    if isinstance(stored_method, bytes):
        stored_method = stored_method.decode()
    return PhaseDesign(_check_finite(ph, str(p)), dx, lam, z_m=num("z_m") if z_m is None else float(z_m),
                       method=(str(stored_method) if stored_method is not None else None) if method is None else method,
                       source=str(p), index=int(index) % n, n_masks=int(n),
                       provenance={"kind": "cdp-dataset", "note": "masks on the simulation grid (pitch_m)"})
