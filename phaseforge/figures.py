"""Figures (matplotlib, Agg backend, PNG) of what people would rather look at than numbers."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def cdp_figure(obj, modulation, measurements, system):
    """Object amplitude/phase, the first mask's phase, and every CDP (log scale)."""
    obj, mod, y = _np(obj), _np(modulation), _np(measurements)
    L = y.shape[0]
    ncol = 3 + L
    fig, axes = plt.subplots(1, ncol, figsize=(2.6 * ncol, 2.9))
    ext_obj_mm = np.array([-0.5, 0.5, -0.5, 0.5]) * obj.shape[-1] * float(system.pitch_m) * 1e3
    im = axes[0].imshow(np.abs(obj), cmap="gray", extent=ext_obj_mm)
    axes[0].set_title("object |x|")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    im = axes[1].imshow(np.angle(obj), cmap="twilight", vmin=-math.pi, vmax=math.pi, extent=ext_obj_mm)
    axes[1].set_title("object ∠x [rad]")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    im = axes[2].imshow(np.mod(np.angle(mod[0]), 2 * math.pi), cmap="twilight", vmin=0, vmax=2 * math.pi,
                        extent=ext_obj_mm)
    axes[2].set_title("mask 1 phase [rad]")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    p_out = system.out_pitch_m[1]
    ext_det = np.array([-0.5, 0.5, -0.5, 0.5]) * y.shape[-1] * p_out * 1e3
    for l in range(L):
        ax = axes[3 + l]
        ax.imshow(np.log10(np.maximum(y[l], 0) + 1), cmap="magma", extent=ext_det)
        ax.set_title(f"CDP {l + 1}: log10(1+DN)")
    for ax in axes:
        ax.set_xlabel("mm")
    fig.suptitle(f"{system.method}, z = {system.z_m:g} m, λ = {system.wavelength_m * 1e9:.0f} nm, "
                 f"{system.oversampling:g}× oversampling", fontsize=10)
    fig.tight_layout()
    return fig


def estimate_figure(x_hat, residuals, *, title: str, n_show: int = 4):
    """Reconstructions without a ground truth: ``|x̂|`` and ``∠x̂`` per sample, with the final
    measurement residual ``‖|Ax̂| − √y‖/‖√y‖`` in the title (the only score there is)."""
    x_hat = _np(x_hat[:n_show])
    n = x_hat.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n + 0.8, 4.8), squeeze=False, layout="constrained")
    im_a = im_p = None
    for i in range(n):
        im_a = axes[0, i].imshow(np.abs(x_hat[i]), cmap="gray", vmin=0.0)
        r = residuals[i] if i < len(residuals) else float("nan")
        axes[0, i].set_title(f"|x̂| {i}\nresidual {r:.2e}")
        im_p = axes[1, i].imshow(np.angle(x_hat[i]), cmap="twilight", vmin=-math.pi, vmax=math.pi)
        axes[1, i].set_title(f"∠x̂ {i}")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.colorbar(im_a, ax=list(axes[0]), fraction=0.03, pad=0.02, label="|x̂|")
    fig.colorbar(im_p, ax=list(axes[1]), fraction=0.03, pad=0.02, label="rad")
    return fig


def reconstruction_figure(x, x_hat, metrics, *, title: str, n_show: int = 4):
    """Ground truth and reconstruction (amplitude and phase, global phase aligned) per sample."""
    from learning.metrics import align_global_phase

    x, x_hat = x[:n_show], x_hat[:n_show]
    aligned = _np(align_global_phase(x_hat, x))
    x = _np(x)
    n = x.shape[0]
    fig, axes = plt.subplots(4, n, figsize=(2.3 * n + 0.8, 9.2), squeeze=False, layout="constrained")
    rel = metrics["per_sample"]["relative_error"]
    # one fixed amplitude scale from 0 (autoscaling a phase-only object's |x| = 1 ± 1e-7 would show
    # its float rounding as an image) and one colour bar per row
    a_max = float(np.abs(x).max()) if x.size else 1.0
    a_max = 1.0 if a_max <= 1.0 + 1e-4 else a_max  # unit amplitude (up to float rounding) → [0, 1]
    for i in range(n):
        im_a = axes[0, i].imshow(np.abs(x[i]), cmap="gray", vmin=0.0, vmax=a_max)
        axes[0, i].set_title("true |x|")
        im_r = axes[1, i].imshow(np.abs(aligned[i]), cmap="gray", vmin=0.0, vmax=a_max)
        r = rel[i] if i < len(rel) else None
        axes[1, i].set_title("recovered |x̂|" + (f"\nrel. err {r:.2e}" if isinstance(r, float) else ""))
        im_p = axes[2, i].imshow(np.angle(x[i]), cmap="twilight", vmin=-math.pi, vmax=math.pi)
        axes[2, i].set_title("true ∠x")
        axes[3, i].imshow(np.angle(aligned[i]), cmap="twilight", vmin=-math.pi, vmax=math.pi)
        axes[3, i].set_title("recovered ∠x̂")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    for row, im, label in ((0, im_a, "|x|"), (1, im_r, "|x̂|"), (2, im_p, "rad"), (3, im_p, "rad")):
        fig.colorbar(im, ax=list(axes[row]), fraction=0.03, pad=0.02, label=label)
    return fig
