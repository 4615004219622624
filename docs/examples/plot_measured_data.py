"""
Reconstructing measurements from a file
=======================================

Measurements that ``phaseforge simulate`` did not write — a lab's, another simulator's, a published
benchmark's — go to ``phaseforge reconstruct --measurements … --masks …`` with their masks. This
example writes such files the way another program would (plain ``.npy`` arrays: intensities in
numpy's FFT order, the masks as phases in radians, the ground truth), reconstructs them, and shows
the two mistakes phaseforge refuses instead of silently reconstructing garbage: data stored in the
other detector order, and amplitudes passed as intensities. Everything is written to a temporary
folder.
"""
# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from skimage import data
from skimage.transform import resize

from phaseforge.cli import main as phaseforge

tmp = Path(tempfile.mkdtemp(prefix="phaseforge_gallery_"))

# %%
# Someone else's data
# -------------------
# Two 48×48 photographs as non-negative objects (scikit-image's *camera* and *moon*), four random
# phase masks, noiseless intensities ``y = |fft2(M ⊙ x, norm="ortho")|²`` with the zero frequency
# at index 0 (numpy's order). Only numpy and scikit-image — no phaseforge — make these files.
rng = np.random.default_rng(0)
n, L = 48, 4
x = np.stack([resize(img.astype(float) / 255.0, (n, n), anti_aliasing=True) for img in (data.camera(), data.moon())])
theta = rng.uniform(0, 2 * np.pi, size=(L, n, n))
y = np.abs(np.fft.fft2(np.exp(1j * theta)[None] * x[:, None], norm="ortho")) ** 2   # (2, 4, 48, 48)
np.save(tmp / "y.npy", y.astype(np.float32))
np.save(tmp / "masks.npy", theta.astype(np.float32))
np.save(tmp / "x.npy", x.astype(np.float32))

# %%
# Reconstruct
# -----------
# ``--detector-order fft`` says where the zero frequency sits, ``--object nonnegative`` adds the
# prior the objects satisfy. The geometry defaults to the unit-free operator ``method: fft`` with no
# oversampling, which is what these files hold. The outputs are the same files as for a dataset.
rc = phaseforge(["reconstruct", "--measurements", str(tmp / "y.npy"), "--masks", str(tmp / "masks.npy"),
                 "--truth", str(tmp / "x.npy"), "--detector-order", "fft", "--object", "nonnegative",
                 "--solver", "er", "--n-iter", "300", "--out", str(tmp / "rec"), "--no-progress"])
assert rc == 0
metrics = json.loads((tmp / "rec" / "metrics.json").read_text())
rec = np.load(tmp / "rec" / "reconstructions.npz")
print(sorted(p.name for p in (tmp / "rec").iterdir()), "| arrays:", rec.files)
summary = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
print(json.dumps(summary, indent=1, default=str)[:800])

# %%
# Two mistakes it refuses
# -----------------------
# **The other detector order.** The same FFT-order file without ``--detector-order``: the default
# is ``centered`` (DC at ``M//2``, phaseforge's convention), which is wrong for this file. An
# unconstrained solver would fit it just as well — the other order is the same operator applied to
# ``x ⊙ e^{iπ(j+k)}`` — so ``reconstruct`` checks where the objects' zero frequency sits
# (``optics.cdp.check_detector_order``) and, since the order was not given explicitly, stops with
# exit status 2 and a message naming the fix.
rc_order = phaseforge(["reconstruct", "--measurements", str(tmp / "y.npy"), "--masks", str(tmp / "masks.npy"),
                       "--out", str(tmp / "rec_wrong_order"), "--no-progress"])
print("FFT-order data read as centred: exit status", rc_order)
assert rc_order == 2

# %%
# **Amplitudes passed as intensities.** Speckle intensities have ``mean(y²)/mean(y)² ≈ 2``,
# amplitudes ``4/π ≈ 1.27``; below 1.6 the data "look like amplitudes", and ``--quantity amplitude``
# would square them.
np.save(tmp / "b.npy", np.sqrt(y).astype(np.float32))
rc_amp = phaseforge(["reconstruct", "--measurements", str(tmp / "b.npy"), "--masks", str(tmp / "masks.npy"),
                     "--detector-order", "fft", "--out", str(tmp / "rec_amp"), "--no-progress"])
print("amplitudes given as intensities: exit status", rc_amp)
assert rc_amp == 2
ratio = float(np.mean(y ** 2) / np.mean(y) ** 2)
ratio_b = float(np.mean(np.sqrt(y) ** 2) / np.mean(np.sqrt(y)) ** 2)
print(f"mean(y²)/mean(y)²: intensities {ratio:.2f}, amplitudes {ratio_b:.2f}")

# %%
# The figure: truth, one measurement (log scale, FFT order and centred) and the reconstruction.
key = rec.files[0]
x_hat = np.abs(rec[key])
fig, axes = plt.subplots(2, 4, figsize=(11, 5.6))
for i in range(2):
    axes[i, 0].imshow(x[i], cmap="gray", vmin=0, vmax=1)
    axes[i, 0].set_title(f"truth {i}")
    axes[i, 1].imshow(np.log10(1e-6 + y[i, 0]), cmap="magma")
    axes[i, 1].set_title("y (FFT order, log)")
    axes[i, 2].imshow(np.log10(1e-6 + np.fft.fftshift(y[i, 0])), cmap="magma")
    axes[i, 2].set_title("y fftshift-ed (centred)")
    axes[i, 3].imshow(x_hat[i], cmap="gray", vmin=0, vmax=1)
    axes[i, 3].set_title("ER reconstruction")
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
plt.show()
