"""
Classical solvers on the standard CDP protocol
==============================================

The published CDP benchmark (prDeep and the deep-unfolding papers) uses real images in
``[0, 1]``, ``L = 4`` uniform random phase masks, no oversampling, the unit-free operator
``A x = fft2(M ⊙ x)/N`` and noisy amplitudes ``b = √max(|Ax|² + (α/255)|Ax|·n, 0)``. This example
runs phaseforge's solvers on that protocol at α = 27 — error reduction (ER), HIO, Wirtinger flow
(WF), TV-regularised and plug-and-play (PnP, non-local-means denoiser) reconstruction — and the
shipped learned model ``data/models/cdp_unfolded_L4.pt``, all on the **same** measurements, and
scores them with the benchmark's metric (PSNR of the globally phase-aligned real part, data
range 1).

To stay within a minute on two cores it uses two of the held-out benchmark images at 64×64
(the benchmark itself runs eight at 128×128: ``python benchmarks/cdp_benchmark.py``; its table is
on the :doc:`benchmark pages <../benchmarks/index>`). Solver settings are the benchmark's.
"""
# %%
import time

import matplotlib.pyplot as plt
import torch

from learning.images import benchmark_images
from learning.metrics import align_global_phase, psnr
from learning.solvers import solve
from optics.cdp import CDPOperator
from optics.noise import PrDeepNoise
from phaseforge.learn import MODELS_DIR

torch.set_num_threads(1)



# %%
# The protocol
# ------------
# Held-out images (``learning.images.benchmark_images``: never used for training), random masks
# and a prDeep noise draw, both from fixed seeds. ``detector_order="fft"`` puts the zero frequency
# at index 0, as numpy and the published benchmark store it.
SIZE, ALPHA, L = 64, 27.0, 4
names, imgs = benchmark_images(SIZE)
pick = [0, 3]
names = [names[i] for i in pick]
x = torch.from_numpy(imgs[pick])                                         # (2, 64, 64) real in [0, 1]
theta = 2 * torch.pi * torch.rand(L, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
A = CDPOperator(theta, method="fft", detector_order="fft").eval()
noise = PrDeepNoise(ALPHA)
with torch.no_grad():
    y = noise.sample(A.intensity(x.to(torch.complex64)), generator=torch.Generator().manual_seed(1))
# The known noise level, as TV and PnP take it: the RMS of √y − |Ax| the model predicts.
sigma = float(noise.amplitude_mse(y).mean()) ** 0.5
print(f"images {names}; y {tuple(y.shape)}; α = {ALPHA:g}; amplitude noise rms {sigma:.3f}")

# %%
# The solvers
# -----------
# ``learning.solvers.solve`` runs any solver by name on ``(operator, intensities)``; real,
# non-negative objects get those constraints. Every solver starts from the same seed.
common = dict(real=True, nonnegative=True, generator=0, history=False)
settings = {
    "ER (200 it.)": ("er", dict(n_iter=200, tol=None)),
    "HIO (200 it.)": ("hio", dict(n_iter=200, tol=None)),
    "WF (500 it.)": ("wf", dict(n_iter=500)),
    "TV": ("tv", dict(amplitude_noise_std=sigma)),
    "PnP-NLM": ("pnp", dict(denoiser="nlm", amplitude_noise_std=sigma)),
}
results, seconds = {}, {}
for label, (name, kw) in settings.items():
    t0 = time.perf_counter()
    results[label] = solve(A, y, name, **common, **kw).x
    seconds[label] = time.perf_counter() - t0

# %%
# The learned model
# -----------------
# :func:`learning.unfolding.load_model` loads the shipped deep-unfolding reconstructor (weights
# only, no pickled code). It reads the noise level from the data (no α needed) and, with
# ``check=True``, refuses a noise level above 1.5× its trained maximum. It was trained on 48²
# patches and is fully convolutional, so 64² works.
from learning.unfolding import load_model  # noqa: E402

model, meta = load_model(MODELS_DIR / "cdp_unfolded_L4.pt")
t0 = time.perf_counter()
with torch.no_grad():
    results["learned (unfolded)"] = model(y, A, check=True).x
seconds["learned (unfolded)"] = time.perf_counter() - t0


# %%
# Scores
# ------
# The estimate is aligned to the truth by one global phase, its real part clipped to ``[0, 1]``,
# and PSNR computed with data range 1 per image.
def score(x_hat):
    est = align_global_phase(x_hat.detach().to(torch.complex128), x.to(torch.complex128)).real.clamp(0, 1)
    return est, [float(psnr(est[i], x[i].double(), data_range=1.0)) for i in range(len(x))]


scored = {label: score(xh) for label, xh in results.items()}
print(f"{'method':20s} " + " ".join(f"{n:>10s}" for n in names) + "   time (s)")
for label, (_, p) in scored.items():
    print(f"{label:20s} " + " ".join(f"{v:10.2f}" for v in p) + f"   {seconds[label]:8.2f}")
# the regularised and learned reconstructors beat plain ER at this noise level
mean_psnr = {label: sum(p) / len(p) for label, (_, p) in scored.items()}
assert mean_psnr["PnP-NLM"] > mean_psnr["ER (200 it.)"]
assert mean_psnr["learned (unfolded)"] > mean_psnr["ER (200 it.)"]

# %%
# The figure: truth and every reconstruction, PSNR in each title.
labels = list(scored)
fig, axes = plt.subplots(len(x), len(labels) + 1, figsize=(2.1 * (len(labels) + 1), 2.4 * len(x)))
for i in range(len(x)):
    axes[i, 0].imshow(x[i], cmap="gray", vmin=0, vmax=1)
    axes[i, 0].set_title(f"truth: {names[i]}", fontsize=9)
    for k, label in enumerate(labels):
        est, p = scored[label]
        axes[i, k + 1].imshow(est[i], cmap="gray", vmin=0, vmax=1)
        axes[i, k + 1].set_title(f"{label}\n{p[i]:.1f} dB", fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# The same comparison from the command line works on a file: simulate the protocol with
# ``phaseforge simulate --set optics.method=fft --set optics.oversampling=1 --set sensor.enabled=false
# --set noise.model=prdeep --set noise.alpha=27 --set data.encoding=amplitude …`` and run
# ``phaseforge reconstruct --solver pnp`` or ``--model data/models/cdp_unfolded_L4.pt`` on it
# (:doc:`../guide/reconstruct`).
