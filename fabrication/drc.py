"""Design-rule checks (DRC) of a DOE before it is written.

Rules (``None`` disables one):

* ``min_feature_m`` — per layer raster: a cell belongs to a sub-minimum feature if it vanishes
  under a morphological opening with a ``k × k`` square, ``k = ceil(min_feature/cell − 1e-9)``
  (features narrower than ``k`` cells in x or y). The design edge counts as empty;
* ``min_space_m`` — the same on the gaps: a closing with the ``k × k`` square fills gaps narrower
  than ``k`` cells; the cells it fills are violations;
* ``max_height_m`` — the tallest cell;
* ``max_aspect_ratio`` — wall height over feature width: along every row and column the height
  map is cut into runs of constant height; a run of ``n`` cells between walls of heights ``Δ₁``,
  ``Δ₂`` has aspect ratio ``max(Δ₁, Δ₂)/(n·cell)`` (a one-cell ridge 1.2 µm tall on a 1 µm grid:
  1.2);
* ``max_vertices`` — polygons with more vertices than this (8190: the classic GDSII limit of a
  boundary record). With ``fracture=True`` (default) they are split on writing (gdstk
  ``max_points``) and only reported; with ``fracture=False`` they are violations.

Every violation lists its count and locations (connected groups of offending cells, with their
rows, columns and layout coordinates in µm, origin bottom-left, y up). Violations are fatal
unless their rule is waived explicitly; waivers are recorded in the export's sidecar.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .errors import DRCError, FabricationError

__all__ = ["DRCRules", "Violation", "DRCReport", "run_drc", "RULES"]

RULES = ("min_feature", "min_space", "max_height", "max_aspect_ratio", "max_vertices")
MAX_LOCATIONS = 20


@dataclass
class DRCRules:
    min_feature_m: Optional[float] = None
    min_space_m: Optional[float] = None
    max_height_m: Optional[float] = None
    max_aspect_ratio: Optional[float] = None
    max_vertices: int = 8190
    fracture: bool = True

    def __post_init__(self):
        for name in ("min_feature_m", "min_space_m", "max_height_m", "max_aspect_ratio"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(float(v)) and float(v) > 0):
                raise FabricationError(f"DRC rule {name} = {v!r} must be a positive number (or unset)")
        if int(self.max_vertices) < 4:
            raise FabricationError(f"max_vertices = {self.max_vertices!r} must be >= 4 (a rectangle)")


@dataclass
class Violation:
    rule: str
    layer: Optional[int]
    count: int
    limit: float
    worst: float
    unit: str
    locations: List[dict] = field(default_factory=list)

    def line(self) -> str:
        where = "; ".join(f"row {l['row']}, col {l['col']} (x {l['x_um']:.3f} µm, y {l['y_um']:.3f} µm)"
                          for l in self.locations[:3])
        lay = f" on layer {self.layer}" if self.layer is not None else ""
        more = " …" if self.count > 3 else ""
        return (f"{self.rule}{lay}: {self.count} violation(s), worst {self.worst:.4g} {self.unit} vs limit "
                f"{self.limit:.4g} {self.unit}; at {where}{more}")


@dataclass
class DRCReport:
    rules: dict
    violations: List[Violation]
    fractured_polygons: int = 0
    waived: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def unwaived(self) -> List[Violation]:
        return [v for v in self.violations if v.rule not in self.waived]

    def to_dict(self) -> dict:
        return {"rules": self.rules, "ok": self.ok, "waived": list(self.waived),
                "fatal": [v.rule for v in self.unwaived()], "fractured_polygons": self.fractured_polygons,
                "violations": [asdict(v) for v in self.violations]}

    def enforce(self, waive=()) -> "DRCReport":
        """Record the waivers; raise :class:`DRCError` listing every unwaived violation."""
        waive = list(waive or ())
        bad = [w for w in waive if w not in RULES]
        if bad:
            raise FabricationError(f"unknown DRC rule(s) to waive: {', '.join(bad)}; rules: {', '.join(RULES)}")
        self.waived = sorted(set(waive))
        fatal = self.unwaived()
        if fatal:
            raise DRCError("design-rule check failed:\n  " + "\n  ".join(v.line() for v in fatal)
                           + f"\nfix the design (e.g. coarser features, fewer levels) or waive the rule explicitly "
                             f"(--waive {' --waive '.join(sorted({v.rule for v in fatal}))}); waivers are recorded "
                             f"in the sidecar", report=self)
        return self


def _locations(bad: np.ndarray, cell_um: float, value: Optional[np.ndarray] = None):
    from scipy import ndimage

    lab, n = ndimage.label(bad, structure=np.ones((3, 3)))
    if n == 0:
        return 0, []
    idx = np.arange(1, n + 1)
    com = ndimage.center_of_mass(bad, lab, idx)
    sl = ndimage.find_objects(lab)
    sizes = ndimage.sum(bad, lab, idx)
    h = bad.shape[0]
    worst = ndimage.maximum(value, lab, idx) if value is not None else None
    order = np.argsort(-np.asarray(worst if worst is not None else sizes))[:MAX_LOCATIONS]
    locs = []
    for i in order:
        r, c = com[i]
        s = sl[i]
        loc = {"row": int(round(r)), "col": int(round(c)), "rows": [s[0].start, s[0].stop - 1],
               "cols": [s[1].start, s[1].stop - 1], "cells": int(sizes[i]),
               "x_um": (c + 0.5) * cell_um, "y_um": (h - 0.5 - r) * cell_um}
        if worst is not None:
            loc["value"] = float(worst[i])
        locs.append(loc)
    return n, locs


def _opening_loss(mask: np.ndarray, k: int) -> np.ndarray:
    from scipy import ndimage

    pad = np.pad(mask, k, constant_values=False)
    opened = ndimage.binary_opening(pad, structure=np.ones((k, k), dtype=bool))
    return (pad & ~opened)[k:-k, k:-k]


def _closing_gain(mask: np.ndarray, k: int) -> np.ndarray:
    from scipy import ndimage

    pad = np.pad(mask, k, constant_values=False)
    closed = ndimage.binary_closing(pad, structure=np.ones((k, k), dtype=bool))
    return (closed & ~pad)[k:-k, k:-k]


def _run_aspect(height: np.ndarray, cell_m: float) -> np.ndarray:
    """Per cell: the largest aspect ratio of the row or column run it belongs to."""
    def along_rows(hm):
        h, w = hm.shape
        out = np.zeros_like(hm, dtype=np.float64)
        change = np.diff(hm, axis=1) != 0
        for r in range(h):
            cuts = np.flatnonzero(change[r]) + 1
            if cuts.size == 0:
                continue
            starts = np.concatenate([[0], cuts])
            ends = np.concatenate([cuts, [w]])
            steps = np.abs(np.diff(hm[r, :][np.concatenate([cuts - 1, cuts])].reshape(2, -1), axis=0))[0]
            left = np.concatenate([[0.0], steps])
            right = np.concatenate([steps, [0.0]])
            ar = np.maximum(left, right) / ((ends - starts) * cell_m)
            out[r] = np.repeat(ar, ends - starts)
        return out
    return np.maximum(along_rows(height), along_rows(height.T).T)


def run_drc(*, rasters: Dict[int, np.ndarray], height_m: np.ndarray, cell_m: float, rules: DRCRules,
            polygons: Optional[Dict[int, list]] = None) -> DRCReport:
    """Check ``rasters`` (layer → boolean cells), the height map and the polygons against ``rules``."""
    cell_um = cell_m * 1e6
    vio: List[Violation] = []
    for name, fn, lim in (("min_feature", _opening_loss, rules.min_feature_m),
                          ("min_space", _closing_gain, rules.min_space_m)):
        if lim is None:
            continue
        k = int(math.ceil(lim / cell_m - 1e-9))
        if k <= 1:
            continue  # every feature is at least one cell wide
        for layer, m in rasters.items():
            bad = fn(np.asarray(m, dtype=bool), k)
            if bad.any():
                n, locs = _locations(bad, cell_um)
                vio.append(Violation(name, layer, n, lim * 1e6, cell_um, "µm", locs))
                vio[-1].worst = _narrowest(bad, m if name == "min_feature" else ~np.asarray(m, bool), cell_um)
    if rules.max_height_m is not None:
        bad = height_m > rules.max_height_m * (1 + 1e-9)
        if bad.any():
            n, locs = _locations(bad, cell_um, height_m * 1e6)
            vio.append(Violation("max_height", None, n, rules.max_height_m * 1e6, float(height_m.max()) * 1e6, "µm", locs))
    if rules.max_aspect_ratio is not None:
        ar = _run_aspect(np.asarray(height_m, dtype=np.float64), cell_m)
        bad = ar > rules.max_aspect_ratio * (1 + 1e-9)
        if bad.any():
            n, locs = _locations(bad, cell_um, ar)
            vio.append(Violation("max_aspect_ratio", None, n, rules.max_aspect_ratio, float(ar.max()), "", locs))
    fractured = 0
    for layer, polys in (polygons or {}).items():
        big = [p for p in polys if len(p.points) > rules.max_vertices]
        if not big:
            continue
        if rules.fracture:
            fractured += len(big)
            continue
        locs = []
        for p in big[:MAX_LOCATIONS]:
            (x0, y0), (x1, y1) = p.bounding_box()
            locs.append({"row": -1, "col": -1, "x_um": (x0 + x1) / 2, "y_um": (y0 + y1) / 2,
                         "bbox_um": [x0, y0, x1, y1], "value": len(p.points)})
        vio.append(Violation("max_vertices", layer, len(big), rules.max_vertices,
                             max(len(p.points) for p in big), "vertices", locs))
    return DRCReport(rules=asdict(rules), violations=vio, fractured_polygons=fractured)


def _narrowest(bad: np.ndarray, region: np.ndarray, cell_um: float) -> float:
    """Narrowest run (cells × cell size) of ``region`` through the offending cells, in µm."""
    region = np.asarray(region, dtype=bool)
    best = np.inf
    for arr, b in ((region, bad), (region.T, bad.T)):
        pad = np.zeros((arr.shape[0], arr.shape[1] + 2), dtype=np.int8)
        pad[:, 1:-1] = arr
        d = np.diff(pad, axis=1)
        rs, cs = np.nonzero(d == 1)
        _, ce = np.nonzero(d == -1)
        lengths = ce - cs
        hit = np.array([b[r, c0:c1].any() for r, c0, c1 in zip(rs, cs, ce)], dtype=bool) if rs.size else np.zeros(0, bool)
        if hit.any():
            best = min(best, float(lengths[hit].min()))
    return best * cell_um if np.isfinite(best) else float("nan")
