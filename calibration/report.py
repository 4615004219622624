"""Calibration report figures (matplotlib, Agg): photon transfer, LUT fit, registration
overlay, residual maps. Each function returns a figure; :func:`write_report` saves them as PNG
next to ``report.json`` (atomic writes via :mod:`optics.fileio`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from optics.fileio import save_figure, write_json

__all__ = ["ptc_figure", "lut_figure", "registration_figure", "residual_figure", "write_report"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def ptc_figure(camera):
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    mu = np.array([p.mean_dn for p in camera.ptc])
    var = np.array([p.var_dn2 for p in camera.ptc])
    used = np.array([p.used for p in camera.ptc])
    ax[0].plot(mu[used], var[used], "o", label="fitted points")
    ax[0].plot(mu[~used], var[~used], "x", label="not used (> 70 % sat.)")
    xs = np.linspace(0, mu.max(), 100)
    ax[0].plot(xs, camera.gain_dn_per_e * xs, "-",
               label=f"K = {camera.gain_dn_per_e:.4g} ± {camera.std['gain_dn_per_e']:.2g} DN/e⁻")
    ax[0].set_xlabel("μ_y − μ_y.dark (DN)")
    ax[0].set_ylabel("σ²_y − σ²_y.dark (DN²)")
    ax[0].set_title("photon transfer (EMVA 1288)")
    ax[0].legend(fontsize=8)
    t = np.array([d[0] for d in camera.dark_ptc])
    v = np.array([d[2] for d in camera.dark_ptc])
    ax[1].plot(t * 1e3, v, "o")
    ax[1].set_xlabel("exposure (ms)")
    ax[1].set_ylabel("σ²_y.dark (DN²)")
    ax[1].set_title(f"dark: σ_r = {camera.read_noise_e:.3g} e⁻, D = {camera.dark_current_e_per_s:.3g} e⁻/s")
    fig.tight_layout()
    return fig


def lut_figure(lut, truth_rad: Optional[np.ndarray] = None):
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].errorbar(lut.measured_gray, lut.measured_h, yerr=lut.measured_h_std, fmt="o", ms=3, label="measured")
    ax[0].set_xlabel("gray level")
    ax[0].set_ylabel("2/Λ harmonic (rel.)")
    ax[0].set_title("grating harmonic vs gray level")
    ax[1].plot(lut.gray, lut.phase_rad, "-", label="fitted LUT")
    ax[1].fill_between(lut.gray, lut.phase_rad - 2 * lut.phase_std_rad, lut.phase_rad + 2 * lut.phase_std_rad,
                       alpha=0.3, label="±2σ")
    ax[1].plot(lut.measured_gray, lut.inverted_phase_rad, ".", label="pointwise sin² inversion (ignores crosstalk)")
    if truth_rad is not None:
        ax[1].plot(np.arange(len(truth_rad)), truth_rad, "--", label="truth")
    ax[1].set_xlabel("gray level")
    ax[1].set_ylabel("φ (rad)")
    ax[1].legend(fontsize=8)
    ax[1].set_title(f"LUT (χ²_red = {lut.chi2_reduced:.3g})")
    fig.tight_layout()
    return fig


def registration_figure(capture_e: np.ndarray, model_e: np.ndarray, quality: float, title: str = ""):
    plt = _plt()

    lo, hi = np.nanpercentile(np.concatenate([np.ravel(capture_e), np.ravel(model_e)]), [1, 99.5])

    def norm(a):  # one scale for both; masked (saturated) pixels shown at full brightness
        a = np.array(a, dtype=np.float64)
        return np.clip((np.nan_to_num(a, nan=hi) - lo) / max(hi - lo, 1e-12), 0, 1)

    fig, ax = plt.subplots(1, 3, figsize=(12, 4))
    ax[0].imshow(norm(capture_e), cmap="gray", vmin=0, vmax=1)
    ax[0].set_title("capture (e⁻; masked pixels white)")
    ax[1].imshow(norm(model_e), cmap="gray", vmin=0, vmax=1)
    ax[1].set_title("calibrated model (e⁻)")
    rgb = np.stack([norm(capture_e), norm(model_e), norm(capture_e)], -1)
    ax[2].imshow(rgb)
    ax[2].set_title(f"overlay (magenta capture, green model), r = {quality:.3f}")
    for a in ax:
        a.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def residual_figure(residuals: np.ndarray, chi2: float):
    plt = _plt()
    n = residuals.shape[0]
    cols = min(n, 4)
    rows = int(math.ceil(n / cols))
    fig, ax = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    lim = float(np.nanpercentile(np.abs(residuals), 99)) or 1.0
    for i in range(rows * cols):
        a = ax[i // cols][i % cols]
        a.set_axis_off()
        if i < n:
            im = a.imshow(residuals[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
            a.set_title(f"frame {i}: rms {np.sqrt(np.nanmean(residuals[i] ** 2)):.3g}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label="(data − model)/σ")
    fig.suptitle(f"normalised residuals, χ²_red = {chi2:.3g}")
    return fig


def write_report(folder, *, camera, lut, fit, numbers: Dict, registration_quality: float,
                 truth_lut: Optional[np.ndarray] = None) -> Dict[str, str]:
    """Save the four figures and ``report.json`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    out = {}
    for name, fig in (("photon_transfer.png", ptc_figure(camera)), ("lut_fit.png", lut_figure(lut, truth_lut)),
                      ("registration_overlay.png", registration_figure(fit.data_e[0], fit.model_e[0],
                                                                       registration_quality, "fit frame 0")),
                      ("residuals.png", residual_figure(fit.residuals, fit.chi2_reduced))):
        save_figure(fig, folder / name, dpi=100)
        plt.close(fig)
        out[name] = str(folder / name)
    write_json(folder / "report.json", numbers)
    out["report.json"] = str(folder / "report.json")
    return out
