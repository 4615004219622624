"""
SLM quantisation, fill factor and crosstalk
===========================================

A phase-only spatial light modulator (SLM) does not show the phase you ask for:
:class:`optics.slm.SLM` models what it shows instead, in this order — **quantisation** to the
levels of its look-up table (LUT), **upsampling** of each SLM pixel onto the finer simulation
grid, the inter-pixel gap of the **fill factor** (an area fraction; the gap shows
``dead_phase_rad``) and the **crosstalk** of the fringing fields (a Gaussian blur of the phase
profile of standard deviation ``crosstalk_sigma_m``, which smears every ``2π → 0`` wrap into a
*flyback* region).

We display a blazed grating — the carrier that steers light into the first diffraction
order — and measure the first-order **diffraction efficiency** in the far field
(:func:`optics.propagation.fraunhofer`) against closed-form results:

* an ``N``-level staircase has efficiency ``sinc²(1/N)`` (``sinc(t) = sin(πt)/(πt)``), divided
  by ``sinc²(1/P)`` on a grid of ``P`` samples per period (the sampled staircase's Dirichlet
  kernel; ``P = 256`` here, a 5e-5 correction);
* a fill factor scales the first-order amplitude by about the active area fraction (exactly:
  the active width fraction times the ratio of the active and full pixel apertures' transforms
  at the grating frequency), so the efficiency falls as ``ff²``.

Crosstalk has no such simple law; the example shows the flyback it makes and the efficiency
it costs.
"""
# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import optics
from optics.slm import SLM, PhaseLUT

PIXEL = 8e-6        # SLM pixel pitch (m)
UP = 8              # simulation samples per SLM pixel (simulation pitch 1 µm)
LAM, Z = 633e-9, 0.1
W_PX, PERIOD_PX = 64, 32   # SLM pixels across, grating period in SLM pixels
ORDER_BIN = W_PX // PERIOD_PX  # the first order sits this many far-field bins from the axis

# a blazed grating along x, in SLM pixels: φ = 2π (j + ½) / Λ (wrapped; the half-pixel offset
# keeps every pixel off the midpoint between two levels), 4 identical rows
j = torch.arange(W_PX, dtype=torch.float64)
theta = (2 * np.pi * (j + 0.5) / PERIOD_PX).remainder(2 * np.pi).expand(4, W_PX).contiguous()


def first_order_efficiency(slm: SLM):
    """Displayed phase (one row), far-field intensity (one row) and first-order efficiency."""
    slm.eval()
    with torch.no_grad():
        m = slm(theta)                                   # complex modulation on the simulation grid
        far, _ = optics.fraunhofer(m, pitch_m=slm.sim_pitch_m, wavelength_m=LAM, z_m=Z)
    inten = far.abs() ** 2
    cy, cx = inten.shape[-2] // 2, inten.shape[-1] // 2   # the optical axis (DC) sample
    eta = float(inten[cy, cx + ORDER_BIN] / inten.sum())  # order (1, 0) over all the light
    # the displayed phase along a row through the middle of a pixel row (row 0 may be the gap)
    return slm.phase(theta)[UP // 2].numpy(), inten[cy].numpy() / float(inten.sum()), eta


def sinc2(t):
    return np.sinc(t) ** 2


# %%
# Quantisation: the LUT's levels
# ------------------------------
# :meth:`optics.slm.PhaseLUT.linear` gives ``2^b`` levels ``2π g/2^b`` when the range is 2π (0 and
# 2π are the same phase). The 32-pixel grating then becomes a staircase of
# ``N = min(2^b, 32)`` equal steps, so the first-order efficiency is ``sinc²(1/N)`` (over
# ``sinc²(1/P)``, ``P = 256`` simulation samples per period).
P_SAMPLES = PERIOD_PX * UP
bits = [1, 2, 3, 4, 8]
rows_q, eta_q = {}, []
for b in bits:
    slm = SLM(pixel_pitch_m=PIXEL, upsample=UP, lut=PhaseLUT.linear(b), quantization="exact")
    phase, spec, eta = first_order_efficiency(slm)
    rows_q[b] = (phase, spec)
    eta_q.append(eta)
    n_steps = min(2 ** b, PERIOD_PX)
    law = sinc2(1 / n_steps) / sinc2(1 / P_SAMPLES)
    print(f"{b} bit(s): efficiency {eta:.6f}, sinc²(1/{n_steps})/sinc²(1/{P_SAMPLES}) = {law:.6f}")
    assert abs(eta - law) < 1e-9

# %%
# Fill factor: the inter-pixel gap
# --------------------------------
# The active square of each pixel has ``round(√ff · upsample)`` samples a side, so the simulation
# grid represents ``ff`` only to ``1/upsample²`` (``SLM.effective_fill_factor``; a warning is
# logged when it is off by more than 0.02, e.g. 0.9 at 8 samples per pixel is shown as 1). The
# values below are chosen to be representable. With the gap at phase 0,
# the first-order amplitude is ``(a/p)·sin(πa/P)/sin(πp/P)`` of the full-fill one (``a`` the
# active width and ``p`` the pixel in samples, ``P`` samples per period): the ``a/p`` of the rows
# (the light the gaps' vertical grating sends into orders off the x axis) times the active
# aperture's transform at the grating frequency — ``≈ ff_eff`` for ``a ≪ P``, so the efficiency
# falls as ``ff²``.
eta_full = eta_q[-1]
ffs = [1.0, 0.77, 0.56, 0.39, 0.25]  # active squares of 8, 7, 6, 5, 4 samples
rows_f, eta_f, eta_f_pred = {}, [], []
for ff in ffs:
    slm = SLM(pixel_pitch_m=PIXEL, upsample=UP, fill_factor=ff, lut=PhaseLUT.linear(8), quantization="exact")
    phase, spec, eta = first_order_efficiency(slm)
    a = slm.active_side  # active width in simulation samples
    pred = eta_full * ((a / UP) * np.sin(np.pi * a / P_SAMPLES) / np.sin(np.pi * UP / P_SAMPLES)) ** 2
    rows_f[ff] = (phase, spec)
    eta_f.append(eta)
    eta_f_pred.append(pred)
    print(f"fill factor {ff:.2f} (effective {slm.effective_fill_factor:.4f}): efficiency {eta:.4f}, "
          f"predicted {pred:.4f}")
    assert abs(eta - pred) < 1e-9

# %%
# Crosstalk: the flyback
# ----------------------
# The blur acts on the phase *profile*, so the 2π jump of each grating period becomes a ramp
# back down over a few σ, which sends light into the wrong orders.
sigmas = [0.0, 1e-6, 2e-6, 4e-6, 8e-6]
rows_x, eta_x = {}, []
for s in sigmas:
    slm = SLM(pixel_pitch_m=PIXEL, upsample=UP, crosstalk_sigma_m=s, lut=PhaseLUT.linear(8), quantization="exact")
    phase, spec, eta = first_order_efficiency(slm)
    rows_x[s] = (phase, spec)
    eta_x.append(eta)
    print(f"crosstalk σ = {s * 1e6:.0f} µm: efficiency {eta:.4f}")
assert all(a >= b for a, b in zip(eta_x, eta_x[1:]))  # more blur, less light in the first order

# %%
# The figure
# ----------
# Top: the displayed phase along one row (the first two grating periods, on the simulation
# grid); bottom: the far-field spectrum around the axis and the efficiencies with their laws.
x_um = np.arange(W_PX * UP) * PIXEL / UP * 1e6
sl = slice(0, 2 * PERIOD_PX * UP)
fig, axes = plt.subplots(2, 3, figsize=(13, 7))
for b in (1, 2, 3, 8):
    axes[0, 0].plot(x_um[sl], rows_q[b][0][sl], label=f"{b} bit")
axes[0, 0].set(title="quantisation", xlabel="x (µm)", ylabel="phase (rad)")
axes[0, 0].legend(fontsize=8)
for ff in (1.0, 0.56, 0.25):
    axes[0, 1].plot(x_um[:3 * PERIOD_PX * UP // 8], rows_f[ff][0][:3 * PERIOD_PX * UP // 8], label=f"ff {ff}")
axes[0, 1].set(title="fill factor (zoom: 12 pixels)", xlabel="x (µm)")
axes[0, 1].legend(fontsize=8)
for s in (0.0, 2e-6, 8e-6):
    axes[0, 2].plot(x_um[sl], rows_x[s][0][sl], label=f"σ {s * 1e6:.0f} µm")
axes[0, 2].set(title="crosstalk (flyback)", xlabel="x (µm)")
axes[0, 2].legend(fontsize=8)

c = W_PX * UP // 2
orders = np.arange(-8, 9)
for b in (1, 2, 8):
    spec = rows_q[b][1]
    axes[1, 0].semilogy(orders / ORDER_BIN, spec[c + orders] + 1e-12, "o-", ms=3, label=f"{b} bit")
axes[1, 0].set(title="far field (fraction per order)", xlabel="diffraction order", ylim=(1e-5, 1.5))
axes[1, 0].legend(fontsize=8)

axes[1, 1].plot(bits, eta_q, "o", label="simulated, bits")
bb = np.linspace(1, 8, 200)
axes[1, 1].plot(bb, sinc2(1 / np.minimum(2 ** np.floor(bb), PERIOD_PX)) / sinc2(1 / P_SAMPLES), "k-",
                alpha=0.4, label="sinc²(1/N)/sinc²(1/P)")
axes[1, 1].set(title="first-order efficiency vs bit depth", xlabel="bits", ylabel="efficiency")
axes[1, 1].legend(fontsize=8)

axes[1, 2].plot(ffs, eta_f, "o", label="simulated, fill factor")
axes[1, 2].plot(ffs, eta_f_pred, "k+", ms=12, label="ff_eff² law")
axes[1, 2].plot(np.array(sigmas) / PIXEL, eta_x, "s-", label="crosstalk σ / pixel (x axis)")
axes[1, 2].set(title="efficiency vs fill factor and crosstalk", xlabel="fill factor  |  σ/pixel pitch",
               ylabel="efficiency")
axes[1, 2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# In a simulation these settings are the ``slm.*`` keys of a configuration (``phaseforge config``
# prints them); the calibration (:doc:`../guide/calibrate`) measures the LUT and the crosstalk of
# a real panel.
