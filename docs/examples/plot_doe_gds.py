"""
A DOE height map to GDSII
=========================

A diffractive optical element (DOE) shows a phase map as a surface relief: height
``h = φλ/(2π(n(λ) − n₀))`` in a material of index ``n`` (here fused silica in air). For
lithography the relief is quantised to ``L`` levels, ``l = round(wrap(φ)·L/2π) mod L``, and each
level becomes a layer of polygons in a GDSII layout. ``phaseforge export doe`` writes the float
height TIFF, the GDSII (traced polygons, never one rectangle per pixel), a level table, and a
sidecar with the design-rule check; ``--verify`` reads the files back and compares the phase and
the CDPs with the design.

This example exports an 8-level Fresnel lens, checks the heights against the formula and the
GDSII polygons' area against the level map, and draws the layers. Everything is written to a
temporary folder.
"""
# %%
import csv
import json
import tempfile
from pathlib import Path

import gdstk
import matplotlib.pyplot as plt
import numpy as np
import tifffile

from optics.materials import get_material
from phaseforge.cli import main as phaseforge

tmp = Path(tempfile.mkdtemp(prefix="phaseforge_gallery_"))

# %%
# The design: a lens of focal length 20 mm, 128 × 128 pixels of 4 µm, for 633 nm.
n_px, pitch, lam, f = 128, 4e-6, 633e-9, 0.02
yy, xx = (np.mgrid[0:n_px, 0:n_px] - n_px // 2) * pitch
phase = -np.pi * (xx ** 2 + yy ** 2) / (lam * f)
np.save(tmp / "lens.npy", phase.astype(np.float32))

# %%
# Export
# ------
# ``--levels 8`` quantises; ``--gds-mode levels`` (the default) puts level ``l`` on layer
# ``layer0 + l``; the design rules (minimum feature and space per layer, maximum height and aspect
# ratio, maximum vertices per polygon) run before anything is written, and a violation is fatal
# unless waived with ``--waive RULE``.
out = tmp / "doe"
rc = phaseforge(["export", "doe", str(tmp / "lens.npy"), "--pitch-m", str(pitch), "--wavelength-m", str(lam),
                 "--material", "fused-silica", "--levels", "8", "--min-feature-m", "2e-6", "--min-space-m", "2e-6",
                 "--out", str(out), "--verify", "--no-progress"])
assert rc == 0
print(sorted(p.name for p in out.iterdir()))

# %%
# Heights against the formula
# ---------------------------
# The 2π height of fused silica at 633 nm is ``λ/(n − 1)`` ≈ 1.385 µm; level ``l`` of 8 is
# ``l/8`` of it.
n_fs = float(get_material("fused-silica").n(lam))  # Sellmeier (Malitson 1965)
h2pi_um = lam / (n_fs - 1.0) * 1e6
level = np.round(np.mod(phase, 2 * np.pi) * 8 / (2 * np.pi)).astype(int) % 8
height = tifffile.imread(out / "height_um.tif")
print(f"n(633 nm) = {n_fs:.4f}, h_2π = {h2pi_um:.4f} µm; TIFF {height.shape} {height.dtype}")
err = np.abs(height - level * h2pi_um / 8).max()
print(f"max |h_TIFF − l·h_2π/8| = {err:.2e} µm")
assert err < 1e-5

with open(out / "relief_levels.csv") as fcsv:
    rows = list(csv.DictReader(fcsv))
print("level table:", rows[0], "…", sep="\n")
side = json.loads((out / "doe.json").read_text())
print("DRC:", json.dumps(side.get("drc", {}), default=str)[:300])

# %%
# The GDSII layout
# ----------------
# One polygon per 4-connected region of a level (holes as keyholes), corners only. The user unit
# is 1 µm, the database unit 1 nm; the origin is the bottom-left corner with y up, so array row 0
# is at the top. The area of each layer's polygons equals the level's pixel count times the
# pixel area.
lib = gdstk.read_gds(out / "relief.gds")
cell = lib.top_level()[0]
by_layer: dict = {}
for poly in cell.polygons:
    by_layer.setdefault(poly.layer, []).append(poly)
n_vertices = sum(len(p.points) for p in cell.polygons)
print(f"{len(cell.polygons)} polygons, {n_vertices} vertices (one rectangle per pixel would be "
      f"{n_px * n_px} rectangles, {4 * n_px * n_px} vertices)")
layer0 = min(by_layer)
for layer in sorted(by_layer):
    area = sum(p.area() for p in by_layer[layer])
    expect = (level == layer - layer0).sum() * (pitch * 1e6) ** 2
    assert abs(area - expect) < 1e-6 * max(expect, 1), (layer, area, expect)
print("every layer's polygon area equals its pixel count × 16 µm²")

# %%
# The figure: the continuous phase, the level map, the height profile along the central row
# against ``l·h_2π/8``, and the GDSII polygons coloured by layer (their outlines drawn).
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
axes[0].imshow(np.mod(phase, 2 * np.pi), cmap="twilight")
axes[0].set_title("design phase (wrapped)")
axes[1].imshow(level, cmap="viridis")
axes[1].set_title("8 levels")
x_um = (np.arange(n_px) - n_px // 2) * pitch * 1e6
axes[2].step(x_um, height[n_px // 2], where="mid", label="TIFF")
axes[2].plot(x_um, np.mod(phase[n_px // 2], 2 * np.pi) / (2 * np.pi) * h2pi_um, "k-", alpha=0.3, label="continuous")
axes[2].set(xlabel="x (µm)", ylabel="height (µm)", title="central row")
axes[2].legend(fontsize=8)
cmap = plt.get_cmap("viridis", 8)
for layer, polys in by_layer.items():
    for p in polys:
        pts = np.asarray(p.points)
        axes[3].fill(pts[:, 0], pts[:, 1], color=cmap(layer - layer0), ec="k", lw=0.2)
axes[3].set_aspect("equal")
axes[3].set(title="relief.gds (µm)", xlabel="x (µm)", ylabel="y (µm)")
for ax in axes[:2]:
    ax.set_axis_off()
fig.tight_layout()
plt.show()
