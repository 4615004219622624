"""Verification figure: design phase, phase rebuilt from the file, wrapped error, both CDPs."""
from __future__ import annotations

import numpy as np

__all__ = ["verification_figure"]


def verification_figure(result):
    """A matplotlib figure (Agg) of one :class:`fabrication.verify.VerificationResult`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = result.arrays
    fig, ax = plt.subplots(1, 5, figsize=(17, 3.6), constrained_layout=True)
    for k, (key, title) in enumerate((("design_rad", "design phase (rad)"), ("file_rad", "phase from the file (rad)"))):
        im = ax[k].imshow(np.mod(a[key], 2 * np.pi), cmap="twilight", vmin=0, vmax=2 * np.pi, interpolation="nearest")
        ax[k].set_title(title)
        fig.colorbar(im, ax=ax[k], shrink=0.8)
    e = a["error_rad"]
    lim = max(float(np.abs(e).max()), 1e-12)
    im = ax[2].imshow(e, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax[2].set_title(f"wrapped error: RMS {result.phase_rms_rad:.3g}, max {result.phase_max_rad:.3g}")
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    lo = np.log10(max(float(a["cdp_design"].max()), 1e-30)) - 6
    for k, (key, title) in enumerate((("cdp_design", "CDP of the design (log10)"),
                                      ("cdp_file", f"CDP from the file, rel. diff {result.cdp_rel_diff:.3g}")), start=3):
        im = ax[k].imshow(np.log10(np.maximum(a[key], 1e-30)), vmin=lo, cmap="magma", interpolation="nearest")
        ax[k].set_title(title)
        fig.colorbar(im, ax=ax[k], shrink=0.8)
    for x in ax:
        x.set_xticks([])
        x.set_yticks([])
    fig.suptitle(f"{result.kind}: {result.file} — {'PASS' if result.passed else 'FAIL'}", fontsize=10)
    return fig
