"""Design → DOE relief: height maps (TIFF, grayscale-lithography bitmap), GDSII layouts, level tables.

Height of a thin element in a medium of index ``n₀`` (:mod:`optics.materials`):

``h = φ λ / (2π (n(λ) − n₀))``, so a full turn needs ``h_2π = λ/(n(λ) − n₀)``
(fused silica at 633 nm: n = 1.4570, h_2π ≈ 1.385 µm).

The phase is wrapped to ``[0, 2π)``. Continuous export keeps ``h = h_2π·φ/2π``; with ``L`` levels
the cell gets level ``l = round(φ·L/2π) mod L`` and height ``l·h_2π/L`` (the nearest level in the
wrapped sense, so ``2π − ε`` goes to level 0).

Outputs (in the output folder):

* ``height_um.tif`` — 32-bit float heights in micrometres (tifffile), resolution tags in pixels
  per centimetre, the sidecar's key facts in the ImageDescription;
* ``height_gray.png`` — 8- or 16-bit grayscale for grayscale lithography, through a contrast
  curve CSV ``gray,height_um`` (the height a dose/gray value leaves after development; strictly
  monotone, either direction), inverted by linear interpolation and rounded to the nearest gray;
* ``relief.gds`` — GDSII via gdstk (:mod:`fabrication.gds`), one layer per level or the ``k``
  binary etch masks, cell ``DOE``, user unit 1 µm, database unit 1 nm (``precision_m``);
* ``relief.stl`` (optional) — the relief on a base plate (default ``h_2π`` thick) as a closed
  binary STL in µm (:mod:`fabrication.stl`), for 3-D printing and two-photon writers;
* ``relief_levels.csv`` — level → layer, phase, height, etch depth from the top surface;
  ``relief_masks.csv`` in etch mode — mask → layer, etch depth;
* ``doe.json`` — the sidecar: design, material, n(λ), h_2π, levels, files with SHA-256, DRC report
  and waivers, software, time.

Design rules (:mod:`fabrication.drc`) run before anything is written; violations are fatal
unless waived.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from optics import materials
from optics.fileio import atomic_path, write_json, write_text

from ._io import check_outputs, sha256_array, sha256_file, software_version, utc_now
from .bitmap import write_bitmap
from .designs import PhaseDesign
from .drc import DRCRules, run_drc
from .errors import FabricationError
from .gds import GDS_MODES, etch_masks, layer_rasters, raster_polygons

__all__ = ["DOEOptions", "DOEExport", "export_doe", "quantize_levels", "read_dose_curve", "heights_to_gray",
           "gray_to_heights", "FILES", "level_table", "SIDECAR_FORMAT"]

TWO_PI = 2.0 * math.pi
SIDECAR_FORMAT = "phaseforge-doe"
FILES = {"tiff": "height_um.tif", "gray": "height_gray.png", "gds": "relief.gds", "stl": "relief.stl",
         "levels_csv": "relief_levels.csv", "masks_csv": "relief_masks.csv", "sidecar": "doe.json"}


@dataclass
class DOEOptions:
    material: object = "fused_silica"
    levels: Optional[int] = None            # None: continuous (TIFF / grayscale only)
    n_medium: float = 1.0
    tiff: bool = True
    gds: bool = True                        # needs levels
    gds_mode: str = "levels"
    layer0: int = 1
    precision_m: float = 1e-9
    dose_curve: Optional[str] = None        # CSV gray,height_um → height_gray.png
    gray_bits: int = 8
    stl: bool = False                       # relief.stl (µm) on a base plate
    stl_base_m: Optional[float] = None      # base plate thickness; default h_2π
    drc: DRCRules = field(default_factory=DRCRules)
    waive: tuple = ()


@dataclass
class DOEExport:
    out_dir: Path
    files: dict
    sidecar: dict
    level_map: Optional[np.ndarray]
    height_m: np.ndarray
    h2pi_m: float


def quantize_levels(phase_rad: np.ndarray, levels: int) -> np.ndarray:
    """Level index ``round(wrap(φ)·L/2π) mod L`` (int64)."""
    w = np.mod(phase_rad, TWO_PI)
    return np.mod(np.rint(w * (levels / TWO_PI)).astype(np.int64), levels)


def level_table(levels: int, h2pi_m: float, mode: str, layer0: int):
    """Rows ``(level, layer, phase_rad, height_um, etch_depth_um)``; layer −1 in etch mode."""
    top = (levels - 1) * h2pi_m / levels
    rows = []
    for l in range(levels):
        h = l * h2pi_m / levels
        rows.append((l, layer0 + l if mode == "levels" else -1, TWO_PI * l / levels, h * 1e6, (top - h) * 1e6))
    return rows


def read_dose_curve(path):
    """``(gray, height_um)`` of a contrast-curve CSV (header ``gray,height_um``), sorted by gray."""
    p = Path(path)
    if not p.is_file():
        raise FabricationError(f"dose curve {p} does not exist")
    try:
        data = np.genfromtxt(p, delimiter=",", names=True, comments="#")
    except ValueError as exc:
        raise FabricationError(f"{p}: cannot parse as CSV with a 'gray,height_um' header ({exc})") from None
    names = data.dtype.names or ()
    if "gray" not in names or "height_um" not in names:
        raise FabricationError(f"{p}: columns {names} lack 'gray' and 'height_um'; the contrast curve is a CSV "
                               f"with the header 'gray,height_um' (height left after development per gray value)")
    g, h = np.atleast_1d(data["gray"]).astype(np.float64), np.atleast_1d(data["height_um"]).astype(np.float64)
    if g.size < 2 or not (np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
        raise FabricationError(f"{p}: the contrast curve needs at least 2 finite rows")
    o = np.argsort(g)
    g, h = g[o], h[o]
    dh = np.diff(h)
    if not (np.all(dh > 0) or np.all(dh < 0)) or np.any(np.diff(g) == 0):
        i = int(np.flatnonzero(~(dh * np.sign(dh[0]) > 0) | (np.diff(g) == 0))[0]) + 1  # (g.size ≥ 2: dh is not empty)
        raise FabricationError(f"{p}: the contrast curve must be strictly monotone in gray (one height per gray), "
                               f"row with gray {g[i]:g} breaks it; smooth or re-measure the curve")
    return g, h


def heights_to_gray(height_um: np.ndarray, curve, bits: int) -> np.ndarray:
    g, h = curve
    lo, hi = float(h.min()), float(h.max())
    if height_um.min() < lo - 1e-9 or height_um.max() > hi + 1e-9:
        raise FabricationError(f"heights {height_um.min():.4g} … {height_um.max():.4g} µm are outside the contrast "
                               f"curve's {lo:.4g} … {hi:.4g} µm; use a curve that covers the relief, fewer levels "
                               f"or a higher-contrast material")
    if g.min() < 0 or g.max() > 2 ** bits - 1:
        raise FabricationError(f"the contrast curve's gray values {g.min():g} … {g.max():g} exceed the {bits}-bit "
                               f"range 0 … {2 ** bits - 1}; choose --gray-bits 16 or rescale the curve")
    o = np.argsort(h)
    return np.rint(np.interp(height_um, h[o], g[o])).astype(np.int64)


def gray_to_heights(gray: np.ndarray, curve) -> np.ndarray:
    g, h = curve
    return np.interp(gray.astype(np.float64), g, h)


def _write_tiff(path: Path, height_um: np.ndarray, pitch_m: float, description: dict) -> None:
    import tifffile

    px_per_cm = 1e-2 / pitch_m
    with atomic_path(path, keep_partial=False) as tmp:
        with open(tmp, "wb") as fh:
            tifffile.imwrite(fh, height_um.astype(np.float32), photometric="minisblack",
                             resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
                             description=json.dumps(description), metadata=None)


def _write_gds(path: Path, polygons: dict, *, precision_m: float, max_points: int, cell_name: str = "DOE") -> None:
    import gdstk

    lib = gdstk.Library(name="phaseforge", unit=1e-6, precision=precision_m)
    cell = lib.new_cell(cell_name)
    for polys in polygons.values():
        cell.add(*polys)
    with atomic_path(path, keep_partial=False) as tmp:
        lib.write_gds(str(tmp), max_points=max_points)


def export_doe(design: PhaseDesign, out_dir, *, options: Optional[DOEOptions] = None,
               overwrite: bool = False, progress: bool = False) -> DOEExport:
    """Export ``design`` as a DOE into ``out_dir`` (files in :data:`FILES`); DRC first.
    ``progress`` shows a tqdm bar over the traced GDS layers (seconds each for megapixel designs)."""
    opt = options or DOEOptions()
    out = Path(out_dir)
    mat = materials.get_material(opt.material)
    lam = design.wavelength_m
    n = float(mat.n(lam))  # raises WavelengthRangeError outside the Sellmeier range
    h2pi = materials.height_for_2pi(wavelength_m=lam, material=mat, n_medium=opt.n_medium)
    L = opt.levels
    if L is not None and (isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 2):
        raise FabricationError(f"levels must be an integer >= 2 (or None for continuous), got {L!r}")
    if opt.gds and L is None:
        raise FabricationError("GDSII needs discrete height levels; pass --levels (e.g. 8) or --no-gds")
    if opt.gds and opt.gds_mode not in GDS_MODES:
        raise FabricationError(f"gds mode must be one of {GDS_MODES}, got {opt.gds_mode!r}")
    if opt.gds and opt.gds_mode == "etch":
        etch_masks(np.zeros((1, 1), np.int64), L)  # power-of-two check with its message
    if opt.gray_bits not in (8, 16):
        raise FabricationError(f"gray_bits must be 8 or 16, got {opt.gray_bits!r}")
    if not (opt.tiff or opt.gds or opt.dose_curve or opt.stl):
        raise FabricationError("nothing to write: enable the TIFF, the GDSII, the STL or a grayscale (dose curve) output")
    if opt.stl_base_m is not None and not (math.isfinite(opt.stl_base_m) and opt.stl_base_m > 0):
        raise FabricationError(f"stl_base_m = {opt.stl_base_m!r} must be a positive thickness in metres")
    targets = {"sidecar": out / FILES["sidecar"]}
    if opt.tiff:
        targets["tiff"] = out / FILES["tiff"]
    if opt.dose_curve:
        targets["gray"] = out / FILES["gray"]
    if opt.stl:
        targets["stl"] = out / FILES["stl"]
    if opt.gds:
        targets["gds"] = out / FILES["gds"]
        targets["levels_csv"] = out / FILES["levels_csv"]
        if opt.gds_mode == "etch":
            targets["masks_csv"] = out / FILES["masks_csv"]
    check_outputs(targets.values(), overwrite)
    curve = read_dose_curve(opt.dose_curve) if opt.dose_curve else None

    phase = design.phase_rad
    if L is None:
        level_map = None
        height = np.mod(phase, TWO_PI) * (h2pi / TWO_PI)
    else:
        level_map = quantize_levels(phase, L)
        height = level_map * (h2pi / L)
    cell_m = design.pixel_pitch_m
    cell_um = cell_m * 1e6
    # layers and DRC (before writing anything)
    rasters, polygons = {}, {}
    if opt.gds:
        from tqdm.auto import tqdm
        layer_maps = layer_rasters(level_map, L, opt.gds_mode)
        for i, m in enumerate(tqdm(layer_maps, desc="trace GDS layers", unit="layer", disable=not progress)):
            layer = opt.layer0 + i
            rasters[layer] = m
            polygons[layer] = raster_polygons(m, cell_um=cell_um, layer=layer, precision_um=opt.precision_m * 1e6)
    else:
        keys = np.unique(level_map) if level_map is not None else []
        rasters = {int(l): level_map == l for l in keys}
    report = run_drc(rasters=rasters, height_m=height, cell_m=cell_m, rules=opt.drc, polygons=polygons)
    report.enforce(opt.waive)

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    gray = None
    if curve is not None:
        gray = heights_to_gray(height * 1e6, curve, opt.gray_bits)
    desc = {"format": SIDECAR_FORMAT, "units": "um", "pixel_pitch_m": cell_m, "wavelength_m": lam,
            "material": mat.name, "h_2pi_um": h2pi * 1e6, "levels": L}
    if opt.tiff:
        _write_tiff(targets["tiff"], height * 1e6, cell_m, desc)
        files["tiff"] = {"path": FILES["tiff"], "dtype": "float32", "units": "um",
                         "sha256": sha256_file(targets["tiff"])}
    if gray is not None:
        write_bitmap(targets["gray"], gray, bit_depth=opt.gray_bits, justify="lsb",
                     text={"phaseforge-doe": f"gray levels of {opt.dose_curve}"})
        files["gray"] = {"path": FILES["gray"], "bits": opt.gray_bits, "dose_curve": str(opt.dose_curve),
                         "dose_curve_gray": curve[0].tolist(), "dose_curve_height_um": curve[1].tolist(),
                         "pixel_sha256": sha256_array(gray.astype("<u2")), "sha256": sha256_file(targets["gray"])}
    if opt.stl:
        from .stl import write_stl
        base = h2pi if opt.stl_base_m is None else opt.stl_base_m
        files["stl"] = {"path": FILES["stl"], **write_stl(targets["stl"], height * 1e6, cell_um=cell_um, base_um=base * 1e6),
                        "origin": "bottom-left corner of the design, y up, z = 0 at the bottom of the base plate",
                        "sha256": sha256_file(targets["stl"])}
    if opt.gds:
        _write_gds(targets["gds"], polygons, precision_m=opt.precision_m, max_points=opt.drc.max_vertices)
        rows = level_table(L, h2pi, opt.gds_mode, opt.layer0)
        write_text(targets["levels_csv"], "level,layer,phase_rad,height_um,etch_depth_um\n" + "".join(
            f"{l},{lay},{ph:.9g},{h:.9g},{e:.9g}\n" for l, lay, ph, h, e in rows))
        layers = {}
        if opt.gds_mode == "etch":
            k = int(round(math.log2(L)))
            write_text(targets["masks_csv"], "mask,layer,etch_depth_um\n" + "".join(
                f"{j},{opt.layer0 + j - 1},{h2pi / 2 ** j * 1e6:.9g}\n" for j in range(1, k + 1)))
            files["masks_csv"] = {"path": FILES["masks_csv"]}
        for layer, polys in polygons.items():
            layers[str(layer)] = {"polygons": len(polys), "vertices": int(sum(len(p.points) for p in polys)),
                                  "cells": int(rasters[layer].sum())}
        steps = cell_m / opt.precision_m
        grid_exact = bool(abs(steps - round(steps)) <= 1e-6 * steps)
        files["gds"] = {"path": FILES["gds"], "mode": opt.gds_mode, "cell": "DOE", "user_unit_m": 1e-6,
                        "database_unit_m": opt.precision_m, "cell_size_um": cell_um, "layer0": opt.layer0,
                        "grid_exact": grid_exact,
                        "grid_note": ("the cell size is a whole number of database units: every vertex is exact"
                                      if grid_exact else
                                      "the cell size is not a whole number of database units: vertices are rounded "
                                      "to the database unit (choose a finer --db-unit-m)"),
                        "origin": "bottom-left corner of the design, y up, array row 0 at the top",
                        "max_points": opt.drc.max_vertices, "layers": layers,
                        "naive_rectangles": int(np.prod(design.shape)),
                        "sha256": sha256_file(targets["gds"])}
        files["levels_csv"] = {"path": FILES["levels_csv"]}
    sidecar = {
        "format": SIDECAR_FORMAT, "format_version": "1",
        "design": design.describe(),
        "material": {"name": mat.name, "sellmeier_b": mat.sellmeier_b, "sellmeier_c_um2": mat.sellmeier_c_um2,
                     "constant_n": mat.constant_n, "wavelength_range_m": mat.wavelength_range_m,
                     "n": n, "n_medium": opt.n_medium, "wavelength_m": lam,
                     "h_2pi_m": h2pi, "formula": "h = φλ/(2π(n(λ) − n₀))"},
        "levels": L, "quantisation": "continuous" if L is None else "l = round(wrap(φ)·L/2π) mod L, h = l·h_2π/L",
        "height": {"max_um": float(height.max()) * 1e6, "min_um": float(height.min()) * 1e6,
                   "sha256": sha256_array(np.asarray(height * 1e6, dtype="<f4")), "hashed_as": "float32 µm, C order"},
        "level_map_sha256": None if level_map is None else sha256_array(level_map.astype("<i8")),
        "files": files, "drc": report.to_dict(),
        "software": f"phaseforge {software_version()}", "created": utc_now(),
    }
    write_json(targets["sidecar"], sidecar)
    return DOEExport(out, {k: str(v) for k, v in targets.items()}, sidecar, level_map, height, h2pi)
