"""
Propagation methods against analytic results
============================================

phaseforge propagates scalar fields with three families of methods (:mod:`optics.propagation`):
the **Fraunhofer** far field (one FFT, output pitch ``λz/(N·dx)``), **Fresnel** (transfer
function ``fresnel-tf``, impulse response ``fresnel-ir``, single FFT ``fresnel-1fft``) and the
band-limited **angular spectrum** (``asm``). This example checks each against a closed-form
result and prints the error:

1. the Airy pattern ``(2 J₁(v)/v)²`` of a circular aperture (Fraunhofer);
2. the Fresnel diffraction of a square aperture (two crossed slits), from the Fresnel integrals
   (``fresnel-tf`` and ``asm``);
3. the width ``w(z) = w₀ √(1 + (z/z_R)²)`` of a Gaussian beam (``asm`` and ``fresnel-tf``).

Sizes are small so the whole example runs in a few seconds; the test suite
(``tests/optics/test_propagation.py``) runs the same comparisons at larger sizes with tight
tolerances.
"""
# %%
# Set-up
# ------
# Every physical argument is keyword-only and in SI units. Sample ``j`` of an ``N``-sample axis
# sits at ``(j − N//2)·dx``: the optical axis is the sample ``N//2``.
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.special import fresnel, j1, sici

import optics
from optics.grid import coords

LAM = 633e-9  # wavelength (m)

# %%
# 1. Fraunhofer: the Airy pattern
# -------------------------------
# A disk of radius ``a`` is sampled with area-weighted edge pixels (each pixel holds the
# fraction of its area inside the disk), so the sampled aperture is close to the continuous
# one. Its far-field intensity at distance ``z`` is ``I(r) ∝ (2 J₁(v)/v)²`` with
# ``v = 2π a r/(λz)`` (Goodman, *Introduction to Fourier Optics*, eq. 4-31).
n, dx, z = 512, 1e-6, 1.0
a_px = 24
j = torch.arange(n, dtype=torch.float64) - n // 2
sub = (torch.arange(4, dtype=torch.float64) + 0.5) / 4 - 0.5  # 4×4 sub-samples per pixel
yy = j[:, None, None, None] + sub[None, None, :, None]
xx = j[None, :, None, None] + sub[None, None, None, :]
disk = ((yy ** 2 + xx ** 2) <= a_px ** 2).double().mean((-1, -2)).to(torch.complex128)

far, pitch_out = optics.fraunhofer(disk, pitch_m=dx, wavelength_m=LAM, z_m=z)
inten = (far.abs() ** 2).numpy()
inten /= inten.max()
r_out = coords(n, pitch_out[1]).numpy()
v = 2 * np.pi * a_px * dx * r_out / (LAM * z)
v[v == 0] = 1e-12
airy = (2 * j1(v) / v) ** 2
row = inten[n // 2]
err_airy = np.abs(row - airy).max()
print(f"Fraunhofer output pitch: {pitch_out[1] * 1e6:.2f} µm (λz/(N·dx) = {LAM * z / (n * dx) * 1e6:.2f} µm)")
print(f"Airy pattern, max |I − I_airy| on the central row: {err_airy:.1e}")
# The residual is the pixel-integration envelope sinc²(f·dx) of a sampled aperture.
assert err_airy < 1e-3

# %%
# 2. Fresnel: diffraction of a square aperture
# ---------------------------------------------
# A slit of width ``2b`` diffracts into the Fresnel-integral field
# ``F(x) = [C(s(b − x)) − C(−s(b + x))] + i[S(s(b − x)) − S(−s(b + x))]`` with ``s = √(2/(λz))``;
# a square aperture (two crossed slits) gives ``U(x, y) = F(x) F(y) e^{ikz}/(2i)`` (Goodman
# eq. 4-28, in the ``e^{−iωt}`` convention). A sampled field is band-limited, so the input is
# the aperture low-passed at the grid's Nyquist frequency (``Si`` differences) rather than a hard
# edge, which would add aliasing that is no fault of the propagator. We compare where the
# continuous field is representable on the grid (the local frequency ``|x ± b|/(λz)`` stays
# below ``1/(2dx)``).
n, dx = 512, 4e-6
zc = n * dx ** 2 / LAM  # critical distance N·dx²/λ (≈ 12.9 mm here)
b = 48 * dx
x_in = coords(n, dx).numpy()
slit_1d = (sici(np.pi * (x_in + b) / dx)[0] - sici(np.pi * (x_in - b) / dx)[0]) / np.pi
square = torch.tensor(np.outer(slit_1d, slit_1d), dtype=torch.complex128)


def fresnel_square(x, half, z_m):
    s = math.sqrt(2 / (LAM * z_m))
    S2, C2 = fresnel(s * (half - x))
    S1, C1 = fresnel(-s * (half + x))
    F = (C2 - C1) + 1j * (S2 - S1)
    return np.outer(F, F) / 2j * np.exp(1j * 2 * np.pi / LAM * z_m)


z_slit = 0.5 * zc
ref = fresnel_square(x_in, b, z_slit)
ref_row = np.abs(ref[n // 2]) ** 2  # the central row, for the figure
ok1 = np.abs(x_in) + b <= LAM * z_slit / (2 * dx)
ok = np.outer(ok1, ok1)
square_rows = {}
for method in ("fresnel-tf", "asm"):
    out = optics.propagate(square, pitch_m=dx, wavelength_m=LAM, z_m=z_slit, method=method)
    u = out.field.numpy()
    err = np.abs(np.abs(u) - np.abs(ref))[ok].max() / np.abs(ref).max()
    print(f"square aperture, z = {z_slit * 1e3:.2f} mm, {method:10s}: max |U − U_ref|/max|U_ref| = {err:.1e}")
    assert err < 1e-2
    square_rows[method] = (np.abs(u[n // 2]) ** 2, err)

# %%
# 3. Angular spectrum and Fresnel: a Gaussian beam
# ------------------------------------------------
# A Gaussian waist ``w₀`` spreads as ``w(z) = w₀ √(1 + (z/z_R)²)``, ``z_R = π w₀²/λ``. The beam
# width is measured from the second moment of the propagated intensity
# (``⟨x²⟩ = w²/4`` for ``|u|² ∝ exp(−2x²/w²)``).
n, dx, w0 = 256, 4e-6, 20e-6
zr = math.pi * w0 ** 2 / LAM
u0 = optics.propagation.gaussian_beam((n, n), pitch_m=dx, waist_m=w0)
x = coords(n, dx)
zs = np.linspace(0, 3 * zr, 7)[1:]
beam = {}
for method in ("asm", "fresnel-tf"):
    widths = []
    for zz in zs:
        U = optics.propagate(u0, pitch_m=dx, wavelength_m=LAM, z_m=float(zz), method=method).field
        I = U.abs() ** 2
        widths.append(float(2 * torch.sqrt((I.sum(0) * x ** 2).sum() / I.sum())))
    widths = np.array(widths)
    rel = np.abs(widths / (w0 * np.sqrt(1 + (zs / zr) ** 2)) - 1).max()
    print(f"Gaussian beam, {method:10s}: max relative error of w(z) = {rel:.1e}")
    assert rel < 1e-3
    beam[method] = (widths, rel)

# %%
# The figure
# ----------
# Each method (coloured) on top of its analytic result (thick grey), the error in the legend.
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
ax = axes[0]
ax.semilogy(r_out * 1e3, airy + 1e-9, "k-", lw=2.5, alpha=0.4, label="(2J₁(v)/v)²")
ax.semilogy(r_out * 1e3, row + 1e-9, "C0--", lw=1, label="fraunhofer")
ax.set_xlim(0, r_out.max() * 1e3 * 0.3)
ax.set_ylim(1e-6, 1.5)
ax.set(xlabel="r (mm)", ylabel="I / I(0)", title=f"Airy pattern (max err {err_airy:.0e})")
ax.legend(fontsize=8)
ax = axes[1]
ax.plot(x_in * 1e6, ref_row, "k-", lw=2.5, alpha=0.4, label="Fresnel integrals")
for (method, (prof, err)), style in zip(square_rows.items(), ("C1--", "C2:")):
    ax.plot(x_in * 1e6, prof, style, lw=1.2, label=f"{method} ({err:.0e})")
ax.set_xlim(-2.5 * b * 1e6, 2.5 * b * 1e6)
ax.set(xlabel="x (µm)", ylabel="|U|² (central row)", title=f"{2 * b * 1e6:.0f} µm square at z = {z_slit * 1e3:.1f} mm")
ax.legend(fontsize=8)
ax = axes[2]
ax.plot(zs * 1e3, w0 * np.sqrt(1 + (zs / zr) ** 2) * 1e6, "k-", lw=2.5, alpha=0.4, label="w₀√(1+(z/z_R)²)")
for (method, (widths, rel)), marker in zip(beam.items(), ("o", "x")):
    ax.plot(zs * 1e3, widths * 1e6, marker, ls="none", label=f"{method} ({rel:.0e})")
ax.set(xlabel="z (mm)", ylabel="w(z) (µm)", title=f"Gaussian beam, z_R = {zr * 1e3:.2f} mm")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# Which method when?
# ------------------
# ``method="auto"`` picks by the critical distance ``z_c = N·dx²/λ`` (:func:`optics.propagation.choose_method`):
# same-grid methods (``fresnel-tf``, ``asm``) below it, and they pad the field by the lateral
# spread of the highest sampled angle; the far-field methods (``fraunhofer``, ``fresnel-1fft``)
# change the output pitch to ``λz/(N·dx)``. Sampling violations raise
# :class:`optics.errors.SamplingError` naming the criterion and the fix. See
# :doc:`../reference/conventions` for the sign and centring conventions.
