"""Level maps → GDSII through gdstk, with merged polygons, and back (rasterisation) for verification.

Geometry: design pixel ``(row r, column c)`` of an ``h × w`` map is the square
``x ∈ [c·p, (c+1)·p]``, ``y ∈ [(h−1−r)·p, (h−r)·p]`` (``p`` the cell size): the origin is the
bottom-left corner of the design, ``y`` points up, array row 0 is the top edge. The library user
unit is 1 µm and the database unit 1 nm by default (``precision_m``); every coordinate is a
multiple of the cell size, so a cell size that is a multiple of the database unit is exact.

Polygons: each boolean raster (a level, or a binary etch mask) is traced into its boundary
loops (:func:`trace_loops`: vectorised edge linking and loop ordering, only corners kept), one polygon per
4-connected component: never one rectangle per pixel. The polygons do not overlap; holes are
kept as GDSII allows, by a cut line joining each hole to its outer boundary (a "keyhole",
``gdstk.boolean(outer, holes, "not")``). Polygons with more vertices than ``max_points`` (8190, the
classic GDSII record limit) are fractured by gdstk on writing.

Layouts:

* ``mode="levels"`` — layer ``layer0 + l`` holds the cells of height level ``l`` (``l = 0 … L−1``,
  level 0 included so that the layout covers the whole design);
* ``mode="etch"`` — the ``k = log2 L`` binary masks of multilevel lithography: the substrate
  starts at the top height ``(L−1)·h_2π/L``, mask ``j = 1 … k`` (layer ``layer0 + j − 1``) opens
  the cells etched by ``h_2π/2^j``; a cell of level ``l`` is etched by ``m = L − 1 − l`` steps of
  ``h_2π/L``, i.e. mask ``j`` is open where bit ``k − j`` of ``m`` is 1.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .errors import FabricationError

__all__ = ["trace_loops", "raster_polygons", "etch_masks", "layer_rasters", "rasterize_polygons",
           "GDS_MODES", "read_layer_rasters"]

GDS_MODES = ("levels", "etch")


_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def trace_loops(mask: np.ndarray) -> List[np.ndarray]:
    """Boundary loops of a boolean raster as integer corner lists ``(n, 2)`` of lattice points
    ``(x, y)`` (cell units, origin bottom-left, y up): outer boundaries counter-clockwise, holes
    clockwise, the raster's interior always on the left.

    Every cell side between an inside and an outside cell is a directed unit edge (the bottom
    side of an inside cell runs +x, its right side +y, top −x, left −y). At each lattice point
    the next edge is the left turn if there is one, else straight on, else the right turn; at a
    point where two inside cells touch only diagonally this keeps them apart (4-connectivity), so
    each 4-connected component has exactly one counter-clockwise loop. Only corners are kept.
    Every loop starts with the bottom side of an inside cell, run +x (the loop's first such side
    in the raster's row-major order), so the cell above its first corner ``(x, y)`` — row
    ``h − 1 − y``, column ``x`` — is inside and belongs to the loop's component.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    p = np.zeros((h + 2, w + 2), dtype=bool)
    p[1:-1, 1:-1] = m
    inside = p[1:-1, 1:-1]
    sides = ((p[2:, 1:-1], 0, 0, 0), (p[1:-1, 2:], 1, 1, 0), (p[:-2, 1:-1], 2, 1, 1), (p[1:-1, :-2], 3, 0, 1))
    sx, sy, dd = [], [], []
    for neighbour, direction, ox, oy in sides:
        r, c = np.nonzero(inside & ~neighbour)
        sx.append(c + ox)
        sy.append(h - 1 - r + oy)
        dd.append(np.full(r.size, direction))
    sx, sy, d = np.concatenate(sx), np.concatenate(sy), np.concatenate(dd)
    n = sx.size
    if n == 0:
        return []
    w1 = w + 1
    key = (sy * w1 + sx) * 4 + d                       # (start vertex, direction) → edge, by binary search
    by_key = np.argsort(key)
    sorted_key = key[by_key]
    end = (sy + _DY[d]) * w1 + (sx + _DX[d])

    def lookup(k):
        pos = np.minimum(np.searchsorted(sorted_key, k), n - 1)
        return np.where(sorted_key[pos] == k, by_key[pos], -1)

    nxt = lookup(end * 4 + (d + 1) % 4)                # left turn
    for turn in (0, 3):                                # straight on, right turn
        miss = nxt < 0
        nxt[miss] = lookup(end[miss] * 4 + (d[miss] + turn) % 4)
    if (nxt < 0).any():  # pragma: no cover - impossible for a closed boundary
        raise FabricationError("internal error: open boundary while tracing a raster")
    # order the edges loop by loop without a Python loop: pointer jumping gives every edge its
    # loop label (the smallest edge index on the loop) and, with each loop cut before its label
    # edge, its distance to the loop's last edge (list ranking)
    idx = np.arange(n)
    label = idx.copy()
    jump = nxt.copy()
    steps = 1
    while steps < n:
        np.minimum(label, label[jump], out=label)
        jump = jump[jump]
        steps *= 2
        if np.array_equal(label[nxt], label):  # constant on every loop: the loop minimum
            break
    succ = nxt.copy()
    prev = np.empty(n, dtype=np.int64)
    prev[nxt] = idx
    tail = prev[idx[label == idx]]            # the edge before each label edge ends its loop
    succ[tail] = tail
    dist = (succ != idx).astype(np.int64)
    for _ in range(int(np.ceil(np.log2(max(n, 2)))) + 1):
        dist = dist + dist[succ]
        succ = succ[succ]
        if np.array_equal(succ, succ[succ]):  # every edge points at its loop's tail
            break
    order = np.lexsort((-dist, label))
    corner = d != d[prev]                     # an edge whose direction differs from its predecessor's starts at a corner
    order = order[corner[order]]
    xy = np.stack([sx[order], sy[order]], axis=1)
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    return np.split(xy, cuts)


def _signed_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def raster_polygons(mask: np.ndarray, *, cell_um: float, layer: int, datatype: int = 0,
                    precision_um: float = 1e-3) -> list:
    """Merged, non-overlapping gdstk polygons of a boolean raster (see the module docstring):
    one polygon per 4-connected component; a component with holes becomes
    ``gdstk.boolean(outer, holes, "not")`` (keyhole cuts)."""
    import gdstk
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    h = m.shape[0]
    loops = trace_loops(m)
    if not loops:
        return []
    labels, _ = ndimage.label(m)
    groups: Dict[int, list] = {}
    for lp in loops:
        # every loop starts with the bottom side of an inside cell, run +x (trace_loops): that
        # cell, above the loop's first corner, identifies the loop's component
        x0, y0 = lp[0]
        groups.setdefault(int(labels[h - 1 - y0, x0]), []).append(lp)
    out = []
    for lps in groups.values():
        if len(lps) == 1:
            out.append(gdstk.Polygon(lps[0] * cell_um, layer=layer, datatype=datatype))
            continue
        i = int(np.argmax([_signed_area(lp) for lp in lps]))
        outer = gdstk.Polygon(lps[i] * cell_um)
        holes = [gdstk.Polygon(lp * cell_um) for j, lp in enumerate(lps) if j != i]
        out.extend(gdstk.boolean(outer, holes, "not", precision=precision_um, layer=layer, datatype=datatype))
    return out


def etch_masks(level_map: np.ndarray, levels: int) -> List[np.ndarray]:
    """The ``k`` binary etch masks (open = True) of a ``2^k``-level map (module docstring)."""
    k = int(round(np.log2(levels))) if levels >= 2 else 0  # (log2 of 0 or a negative count is no integer)
    if levels < 2 or 2 ** k != levels:
        raise FabricationError(f"binary etch masks need a power-of-two level count (2, 4, 8, 16 …), got {levels}; "
                               f"use --levels {2 ** max(1, int(np.ceil(np.log2(max(levels, 2)))))} or --gds-mode levels")
    m = (levels - 1) - level_map.astype(np.int64)
    return [((m >> (k - j)) & 1).astype(bool) for j in range(1, k + 1)]


def layer_rasters(level_map: np.ndarray, levels: int, mode: str) -> List[np.ndarray]:
    """One boolean raster per GDS layer, in layer order."""
    if mode == "levels":
        return [level_map == l for l in range(levels)]
    if mode == "etch":
        return etch_masks(level_map, levels)
    raise FabricationError(f"gds mode must be one of {GDS_MODES}, got {mode!r}")


def rasterize_polygons(polygons, shape, *, cell_um: float) -> np.ndarray:
    """Inverse of :func:`raster_polygons`: which cell centres lie inside the polygons (even-odd
    rule, scan lines through the cell-centre rows; keyhole cuts cancel, being crossed twice).
    Vectorised over all edges of all polygons."""
    h, w = shape
    a_list, b_list = [], []
    for poly in polygons:
        pts = np.asarray(poly.points if hasattr(poly, "points") else poly, dtype=np.float64)
        if len(pts) >= 3:
            a_list.append(pts)
            b_list.append(np.roll(pts, -1, axis=0))
    if not a_list:
        return np.zeros((h, w), dtype=bool)
    a, b = np.concatenate(a_list), np.concatenate(b_list)
    dy = b[:, 1] - a[:, 1]
    keep = dy != 0
    a, b, dy = a[keep], b[keep], dy[keep]
    ylo, yhi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    # row r has its centre at y = (h − 0.5 − r)·cell; an edge covers the rows with centre in [ylo, yhi)
    r_hi = np.clip(np.floor(h - 0.5 - ylo / cell_um + 1e-9).astype(np.int64), -1, h - 1)
    r_lo = np.clip(np.floor(h - 0.5 - yhi / cell_um + 1e-9).astype(np.int64) + 1, 0, h)
    n = np.maximum(r_hi - r_lo + 1, 0)
    acc = np.zeros((h, w + 1), dtype=np.int64)
    if n.sum():
        e = np.repeat(np.arange(len(a)), n)
        start = np.repeat(np.cumsum(n) - n, n)
        rows = r_lo[e] + (np.arange(e.size) - start)
        yc = (h - 0.5 - rows) * cell_um
        xcross = a[e, 0] + (yc - a[e, 1]) / dy[e] * (b[e, 0] - a[e, 0])
        col = np.clip(np.ceil(xcross / cell_um - 0.5 - 1e-9).astype(np.int64), 0, w)
        np.add.at(acc, (rows, col), 1)
    return (np.cumsum(acc, axis=1)[:, :w] % 2).astype(bool)


def read_layer_rasters(path, shape, *, cell_um: float, layers) -> Dict[int, np.ndarray]:
    """Read a GDSII file with gdstk and rasterise each of ``layers`` (all cells' polygons, datatype ignored)."""
    import gdstk

    try:
        lib = gdstk.read_gds(str(path))
    except Exception as exc:  # noqa: BLE001 - gdstk raises RuntimeError/OSError on bad files
        raise FabricationError(f"{path} cannot be read as GDSII ({exc}); the file is corrupted — export it again") from exc
    unit_ratio = lib.unit / 1e-6
    by_layer: Dict[int, list] = {l: [] for l in layers}
    for cell in lib.top_level():
        for poly in cell.get_polygons():
            if poly.layer in by_layer:
                by_layer[poly.layer].append(poly.points * unit_ratio)
    return {l: rasterize_polygons(p, shape, cell_um=cell_um) for l, p in by_layer.items()}
