"""
A toy teacher → student distillation
====================================

Single-snapshot distillation trains a **teacher** with ``L = 4`` learnable phase masks and a
reconstruction network, then a **student** that sees only **one** snapshot through a mask an SLM
can show (pixels 2× the simulation pitch, 4 phase levels), trained under the frozen teacher.
This example runs the same commands as the guide (:doc:`../guide/learning`) —
``phaseforge train``, ``phaseforge distill``, ``phaseforge evaluate`` — through
``phaseforge.cli.main``, with the shipped configurations ``data/configs/teacher.yaml`` and
``data/configs/student_distill.yaml``.

.. warning::

   This is a **toy size** so that it runs in well under a minute: 16 training steps per run on
   128 objects of 32×32, a 2-stage unfolded reconstructor with a narrow U-Net. The numbers it
   prints show that the pipeline works, not what distillation achieves; for that see the
   distillation benchmark on the :doc:`benchmark pages <../benchmarks/index>`.
"""
# %%
import csv
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from optics.design import read_design
from phaseforge.cli import main as phaseforge
from phaseforge.learn import CONFIG_DIR

torch.set_num_threads(1)



configs = CONFIG_DIR
runs = Path(tempfile.mkdtemp(prefix="phaseforge_gallery_"))

# The toy size: every ``--set`` overrides one key of the shipped configuration.
TOY = ["--set", "train.epochs=2", "--set", "train.n_train=128", "--set", "train.n_val=16",
       "--set", "model.n_stages=2", "--set", "model.n_warm=10", "--set", "model.widths=[8,16,32]",
       "--set", "train.grad_norm_every=4", "--no-progress"]

# %%
# The teacher
# -----------
# Four continuous learnable masks, 2× oversampled Fraunhofer CDPs of 32² phase objects in
# ``[0, π]``, 100 photons per pixel. The run folder gets ``config.yaml``, ``checkpoints/``,
# ``history.csv``, ``val.csv``, ``metrics.json``, figures and ``design.h5`` (the learned masks).
assert phaseforge(["train", "--config", str(configs / "teacher.yaml"), "--out", str(runs / "teacher"), *TOY]) == 0

# %%
# The distilled student
# ---------------------
# One mask on a 2-bit SLM (straight-through quantisation while training, exact levels in
# evaluation and export). ``distill`` checks that the teacher's geometry (wavelength, pitch,
# distance, method, oversampling, size, encoding) is the student's, then trains with the
# reconstruction loss plus the default mask loss (``distill.mask_loss: spectrum``: match the
# teacher masks' radially binned angular power spectrum).
assert phaseforge(["distill", "--teacher", str(runs / "teacher"),
                   "--config", str(configs / "student_distill.yaml"), "--out", str(runs / "student_kd"), *TOY]) == 0

# %%
# Evaluate
# --------
# Every system sees the same 16 test objects (the image source's *test* split, data seed 0) and
# the same noise; ER and WF (200 iterations from the same flat start) on each run's own masks
# are rows of the table too.
assert phaseforge(["evaluate", str(runs / "teacher"), str(runs / "student_kd"), "--n", "16",
                   "--out", str(runs / "eval"), "--no-progress"]) == 0
with open(runs / "eval" / "table.csv") as f:
    table = list(csv.DictReader(f))
print(sorted(p.name for p in (runs / "eval").iterdir()))

# %%
# The learned masks
# -----------------
# ``design.h5`` holds the masks on the SLM-pixel grid (:func:`optics.design.read_design`); the
# student's has 4 levels and is what ``phaseforge export slm`` takes (:doc:`../guide/export`).
teacher = read_design(runs / "teacher" / "design.h5")
student = read_design(runs / "student_kd" / "design.h5")
print(f"teacher: {teacher.n_masks} masks {teacher.shape}, pitch {teacher.pixel_pitch_m * 1e6:g} µm, "
      f"levels {teacher.levels}")
print(f"student: {student.n_masks} mask {student.shape}, pitch {student.pixel_pitch_m * 1e6:g} µm, "
      f"levels {student.levels}, distinct phases {np.unique(np.round(student.phase_rad, 4)).size}")
assert student.n_masks == 1 and student.levels == 4

fig, axes = plt.subplots(1, 5, figsize=(12, 2.9))
for k in range(4):
    axes[k].imshow(np.mod(teacher.mask(k), 2 * np.pi), cmap="twilight", vmin=0, vmax=2 * np.pi)
    axes[k].set_title(f"teacher mask {k}")
axes[4].imshow(np.mod(student.mask(0), 2 * np.pi), cmap="twilight", vmin=0, vmax=2 * np.pi)
axes[4].set_title("student mask (4 levels)")
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()

# The table: mean PSNR of every row (networks, and classical solvers on the same masks).
labels = [r["name"] for r in table]
values = [float(r["psnr_mean"]) for r in table]
for lab, r in zip(labels, table):
    print(f"{lab:32s} {r['kind']:14s} L = {r['n_masks']}  PSNR mean {float(r['psnr_mean']):6.2f} dB")
fig_table, ax_table = plt.subplots(figsize=(8, 3.5))
ax_table.barh(range(len(values)), values, color=["C0" if r["kind"] == "network" else "C7" for r in table])
ax_table.set_yticks(range(len(values)), labels, fontsize=9)
ax_table.invert_yaxis()
ax_table.set_xlabel("PSNR mean (dB), toy size")
fig_table.tight_layout()

# %%
# ``evaluate`` also draws the reconstructions of every system on one fixed scale:
fig2, ax = plt.subplots(figsize=(10, 6))
ax.imshow(plt.imread(runs / "eval" / "reconstructions.png"))
ax.set_axis_off()
plt.show()
