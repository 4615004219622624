"""STL relief for 3-D printing / two-photon lithography (numpy-stl): a closed, outward-oriented
triangle surface of the height map standing on a base plate.

Each cell ``(r, c)`` is the column ``x ∈ [c·p, (c+1)·p]``, ``y ∈ [(h−1−r)·p, (h−r)·p]`` (origin
bottom-left, y up, as in the GDSII) from ``z = 0`` to ``z = base + h(r, c)``. The surface is the
union of the columns: one top and one bottom face per cell (two triangles each) and a vertical
wall wherever neighbouring tops differ (and around the outside). Coordinates are in micrometres
(STL has no units; stated in the sidecar). Neighbouring walls meet at cell corners with
T-junctions (the surface is closed and consistently oriented — its enclosed volume is exact — but
not edge-manifold at those corners); slicers accept this, mesh repair tools can merge them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from optics.fileio import atomic_path

__all__ = ["relief_triangles", "write_stl"]


def _quads_to_triangles(q: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """``(n, 4, 3)`` quads → ``(2n, 3, 3)`` triangles, vertex order flipped where needed so that
    the right-hand normal points along ``normal`` (``(n, 3)``)."""
    t1 = q[:, [0, 1, 2]]
    t2 = q[:, [0, 2, 3]]
    tris = np.concatenate([t1, t2])
    nrm = np.concatenate([normal, normal])
    cross = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    flip = np.einsum("ij,ij->i", cross, nrm) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return tris


def relief_triangles(height_um: np.ndarray, *, cell_um: float, base_um: float) -> np.ndarray:
    """Triangles ``(n, 3, 3)`` (µm) of the closed relief surface (module docstring)."""
    t = np.asarray(height_um, dtype=np.float64) + base_um
    h, w = t.shape
    c = cell_um
    rr, cc = np.mgrid[0:h, 0:w]
    x0, x1 = cc.ravel() * c, (cc.ravel() + 1) * c
    y0, y1 = (h - 1 - rr.ravel()) * c, (h - rr.ravel()) * c
    z = t.ravel()
    parts = []
    for zz, nz in ((z, 1.0), (np.zeros_like(z), -1.0)):  # tops and bottoms
        q = np.stack([np.stack([x0, y0, zz], 1), np.stack([x1, y0, zz], 1),
                      np.stack([x1, y1, zz], 1), np.stack([x0, y1, zz], 1)], axis=1)
        parts.append(_quads_to_triangles(q, np.tile([0.0, 0.0, nz], (len(z), 1))))
    tp = np.zeros((h + 2, w + 2))
    tp[1:-1, 1:-1] = t
    # walls between columns j and j+1 of the padded map, at x = j·c
    a, b = tp[1:-1, :-1], tp[1:-1, 1:]
    r, j = np.nonzero(a != b)
    if r.size:
        lo, hi = np.minimum(a[r, j], b[r, j]), np.maximum(a[r, j], b[r, j])
        x = j * c
        ya, yb = (h - 1 - r) * c, (h - r) * c
        q = np.stack([np.stack([x, ya, lo], 1), np.stack([x, yb, lo], 1),
                      np.stack([x, yb, hi], 1), np.stack([x, ya, hi], 1)], axis=1)
        nx = np.where(a[r, j] > b[r, j], 1.0, -1.0)
        parts.append(_quads_to_triangles(q, np.stack([nx, 0 * nx, 0 * nx], 1)))
    # walls between rows i and i+1 of the padded map, at y = (h − i)·c (row i above row i+1)
    a, b = tp[:-1, 1:-1], tp[1:, 1:-1]
    i, cidx = np.nonzero(a != b)
    if i.size:
        lo, hi = np.minimum(a[i, cidx], b[i, cidx]), np.maximum(a[i, cidx], b[i, cidx])
        y = (h - i) * c
        xa, xb = cidx * c, (cidx + 1) * c
        q = np.stack([np.stack([xa, y, lo], 1), np.stack([xb, y, lo], 1),
                      np.stack([xb, y, hi], 1), np.stack([xa, y, hi], 1)], axis=1)
        ny = np.where(a[i, cidx] > b[i, cidx], -1.0, 1.0)  # the taller upper row faces −y
        parts.append(_quads_to_triangles(q, np.stack([0 * ny, ny, 0 * ny], 1)))
    return np.concatenate(parts)


def write_stl(path, height_um: np.ndarray, *, cell_um: float, base_um: float) -> dict:
    """Write the binary STL atomically; returns counts for the sidecar."""
    from stl import mesh

    tris = relief_triangles(height_um, cell_um=cell_um, base_um=base_um)
    data = np.zeros(len(tris), dtype=mesh.Mesh.dtype)
    data["vectors"] = tris.astype(np.float32)
    m = mesh.Mesh(data, remove_empty_areas=False)
    p = Path(path)
    with atomic_path(p, keep_partial=False) as tmp:
        with open(tmp, "wb") as fh:
            m.save(p.name, fh=fh, mode=mesh.stl.Mode.BINARY)
    return {"triangles": int(len(tris)), "units": "um", "base_um": float(base_um)}
