"""
A small CDP dataset
===================

``phaseforge simulate`` turns images into **coded diffraction patterns** (CDPs)
``y_l = |P(M_l ⊙ x)|²``: each object ``x`` is multiplied by ``L`` phase masks ``M_l`` and
propagated (here Fraunhofer, 2× oversampled), and a camera records the intensities with shot
noise. This example runs the same command a user types — through ``phaseforge.cli.main``, so the
options are exactly the command line's — on a tiny test set, reads the file back with
:class:`learning.h5io.dataset.CDPDataset` and :func:`learning.h5io.physics.physics_from_file`,
and checks that the stored measurements are the noisy version of what the stored physics
predicts.

Everything is written to a temporary folder.
"""
# %%
import tempfile
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch

from learning.h5io import CDPDataset, physics_from_file
from phaseforge.cli import main as phaseforge

tmp = Path(tempfile.mkdtemp(prefix="phaseforge_gallery_"))
data = tmp / "small.h5"

# %%
# Simulate
# --------
# Six 32×32 phase objects (values in ``[0, π]``) from the embedded images' *test* split, four
# random phase masks, 1,000 photons per pixel on average, a 12-bit camera with 2 e⁻ read noise
# and a gain of 4 e⁻ per DN (so the brightest speckles stay below the 4,095 DN full scale).
# ``--set key.path=value`` overrides one configuration key (``phaseforge config`` prints all of
# them with their defaults); the resolved configuration is written beside the file.
rc = phaseforge([
    "simulate", "--out", str(data),
    "--set", "data.n=6", "--set", "data.split=test", "--set", "data.size=32",
    "--set", "masks.n_masks=4", "--set", "sensor.mean_photons=1000",
    "--set", "sensor.bit_depth=12", "--set", "sensor.read_noise_e=2", "--set", "sensor.gain_e_per_dn=4",
])
assert rc == 0
print(sorted(p.name for p in tmp.iterdir()))

# %%
# Read it back
# ------------
# A dataset yields ``(x, y)``: the object ``(H, W)`` complex64 and its measurements
# ``(L, Mh, Mw)`` float32 in camera units (DN). The physics — operator, masks, sensor — comes
# from the file alone.
ds = CDPDataset(data)
x, y = ds[0]
operator, sensor = physics_from_file(data)
print(f"{len(ds)} samples; object {tuple(x.shape)} {x.dtype}; measurements {tuple(y.shape)} {y.dtype}")
print(f"operator: {type(operator).__name__}, sensor gain {float(sensor.gain_e_per_dn)} e⁻/DN")

# %%
# The measurements are the noisy version of the noiseless intensities ``|A x|²``: after the
# sensor's DN → photons conversion they differ from the operator's prediction (scaled to photons)
# by what Poisson shot noise and the read noise predict, ``√(Σ s|Ax|² + n·σ_read²)`` (plus the
# ADC's rounding to 4 e⁻ steps, variance 4²/12 per pixel).
with torch.no_grad():
    ideal = operator.intensity(x[None])[0].double()
photons = sensor.dn_to_photons(y).double()
scale = float((photons * ideal).sum() / (ideal * ideal).sum())  # photons per unit intensity
expected = scale * ideal
rel = float((photons - expected).norm() / expected.norm())
predicted = float(torch.sqrt(expected.sum() + expected.numel() * (2.0 ** 2 + 4.0 ** 2 / 12))
                  / expected.norm())
assert float(y.max()) < 4095  # nothing saturated
print(f"mean {float(photons.mean()):.0f} photons per detector pixel, brightest {float(photons.max()):.0f}")
print(f"‖photons − s·|Ax|²‖/‖s·|Ax|²‖ = {rel:.4f}; shot + read noise predict {predicted:.4f}")
assert abs(rel / predicted - 1) < 0.1

# %%
# The figure: four objects' phase, the four masks (phase) and the four CDPs of object 0 (log
# scale).
# The masks are stored in the file as ``/masks`` (L, H, W), the phase in rad of the effective
# modulation (after the SLM, when there is one).
with h5py.File(data, "r") as f:
    masks = f["masks"][...]
    print("file datasets:", sorted(f.keys()), "| masks units:", f["masks"].attrs["units"])
fig, axes = plt.subplots(3, 4, figsize=(10, 7.5))
for k in range(4):
    xk, _ = ds[k]
    axes[0, k].imshow(np.angle(xk.numpy()), cmap="twilight", vmin=-np.pi, vmax=np.pi)
    axes[0, k].set_title(f"object {k}: phase")
    axes[1, k].imshow(np.mod(masks[k], 2 * np.pi), cmap="twilight", vmin=0, vmax=2 * np.pi)
    axes[1, k].set_title(f"mask {k}")
    axes[2, k].imshow(np.log10(1 + y[k].numpy()), cmap="magma")
    axes[2, k].set_title(f"CDP {k} of object 0\n(log₁₀(1 + DN))")
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# Next: reconstruct these measurements with a classical solver
# (``phaseforge reconstruct --data small.h5 --solver wf --out DIR``; :doc:`../guide/reconstruct`),
# or read the file format in :doc:`../reference/formats`.
