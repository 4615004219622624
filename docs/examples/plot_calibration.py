"""
Calibration of the sample capture
=================================

``phaseforge calibrate`` fits the simulator to lab captures: the camera (EMVA 1288 photon
transfer), the SLM's gray → phase look-up table (LUT) from binary gratings, and the physical
parameters of the bench (distance, magnification, rotation, shift, crosstalk width, intensity
scale and background) from random-pattern frames, each with an uncertainty that covers model
error as well as noise. It writes ``CALIBRATION.h5``, the LUT as CSV, and a report folder.

The repository ships a synthetic capture, ``data/sample_capture.h5`` (made by
``python data/make_sample_capture.py`` from its own truth model, which differs from the fit's),
with the truth stored in ``/truth`` — never read by the calibration. This example calibrates it
and compares every fitted value with the truth in units of its reported σ. It takes ≈ 25 s of
CPU time (the distance multistart and the fine fit). See :doc:`../guide/calibrate` for what a
capture must contain and what the numbers mean.
"""
# %%
import json
import tempfile
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch

from phaseforge.cli import main as phaseforge
from phaseforge.calibration_jobs import SAMPLE_CAPTURE

torch.set_num_threads(1)



capture = SAMPLE_CAPTURE
tmp = Path(tempfile.mkdtemp(prefix="phaseforge_gallery_"))

# %%
# Check the capture, then calibrate
# ---------------------------------
# ``capture info`` summarises the frames per image key (0 sample, 1 flat, 2 dark, 4 background),
# exposures, patterns and instrument; ``capture validate`` lists every problem at once.
assert phaseforge(["capture", "info", str(capture)]) == 0
assert phaseforge(["calibrate", str(capture), "--out", str(tmp / "CALIBRATION.h5"),
                   "--report", str(tmp / "report"), "--no-progress"]) == 0
print(sorted(p.name for p in tmp.iterdir()), sorted(p.name for p in (tmp / "report").iterdir()))

# %%
# Fitted against true
# -------------------
# ``report.json`` holds every number; for each fitted parameter the total σ and its two parts,
# ``std_statistical`` (noise, cluster-robust) and ``std_model`` (the change between a coarse and
# the fine model). With the truth known, ``(fitted − true)/σ`` should mostly lie within ±2.
report = json.loads((tmp / "report" / "report.json").read_text())
fit, truth_cmp = report["fit"], report["truth_comparison"]
names, z, rows = [], [], []
for name, entry in fit.items():
    if name not in truth_cmp:
        continue  # intensity scale and background have no stored truth (the background's is 0)
    true = truth_cmp[name]["truth"]
    d = (entry["value"] - true) / entry["std"]
    names.append(name)
    z.append(d)
    rows.append(f"{name:18s} fitted {entry['value']:.6g}  true {true:.6g}  σ {entry['std']:.2g} "
                f"(stat {entry['std_statistical']:.2g}, model {entry['std_model']:.2g})  Δ/σ {d:+.2f}")
bg = fit["background_e"]
rows.append(f"{'background_e':18s} fitted {bg['value']:.4g} e⁻  true 0  σ {bg['std']:.3g}  Δ/σ {bg['value'] / bg['std']:+.2f}")
names.append("background_e")
z.append(bg["value"] / bg["std"])
print("\n".join(rows))
cam = report["camera"]
print("camera:", {k: round(v, 5) for k, v in cam.items() if not k.endswith("_std") and isinstance(v, float)})
q = report["quality"]
print(f"held-out reduced χ² nominal {q['heldout_chi2_nominal']:.0f} → calibrated {q['heldout_chi2_calibrated']:.2f}; "
      f"Pearson r {q['heldout_pearson_nominal']:.2f} → {q['heldout_pearson_calibrated']:.3f}")
assert sum(abs(v) <= 2 for v in z) >= len(z) - 1

# %%
# The LUT against the truth
# -------------------------
# The fitted LUT with its ±2σ band (``CALIBRATION.h5``: ``/lut/gray``, ``/lut/phase_rad``,
# ``/lut/phase_std_rad``) against the capture's true LUT (a nonlinear curve up to 1.9π).
with h5py.File(tmp / "CALIBRATION.h5", "r") as f:
    gray = f["lut/gray"][...]
    phase = f["lut/phase_rad"][...]
    phase_std = f["lut/phase_std_rad"][...]
with h5py.File(capture, "r") as f:
    lut_true = f["truth/lut_phase_rad"][...]
lut_err = phase - lut_true
print(f"LUT rms error {np.sqrt(np.mean(lut_err ** 2)):.4f} rad; largest σ {phase_std.max():.3f} rad; "
      f"levels within 2σ: {np.mean(np.abs(lut_err) <= 2 * phase_std):.0%}")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
axes[0].barh(range(len(z)), z, color=["C0" if abs(v) <= 2 else "C3" for v in z])
axes[0].axvspan(-2, 2, color="0.9", zorder=0)
axes[0].set_yticks(range(len(z)), names, fontsize=8)
axes[0].set(xlabel="(fitted − true) / σ", title="fitted vs true, in σ")
axes[1].fill_between(gray, phase - 2 * phase_std, phase + 2 * phase_std, alpha=0.3, label="fitted ± 2σ")
axes[1].plot(gray, phase, "C0-", lw=1, label="fitted")
axes[1].plot(gray, lut_true, "k--", lw=1, label="true")
axes[1].set(xlabel="gray level", ylabel="phase (rad)", title="SLM LUT")
axes[1].legend(fontsize=8)
axes[2].plot(gray, lut_err, "C0-", lw=1, label="fitted − true")
axes[2].fill_between(gray, -2 * phase_std, 2 * phase_std, color="0.85", label="± 2σ")
axes[2].set(xlabel="gray level", ylabel="rad", title="LUT error")
axes[2].legend(fontsize=8)
fig.tight_layout()

# %%
# The report folder has its own figures; here is the photon-transfer curve of the camera step.
fig2, ax = plt.subplots(figsize=(8, 5))
ax.imshow(plt.imread(tmp / "report" / "photon_transfer.png"))
ax.set_axis_off()
plt.show()

# %%
# Next: ``phaseforge simulate --calibration CALIBRATION.h5`` simulates this bench, and
# ``phaseforge export slm DESIGN --device NAME --lut CALIBRATION.h5`` uses the measured LUT.
