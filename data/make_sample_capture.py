"""Generate the synthetic sample capture ``data/sample_capture.h5`` from a known ground truth.

    PYTHONPATH=. python data/make_sample_capture.py [--out data/sample_capture.h5] [--seed 0]

The bench: a plane-ish Gaussian beam (λ = 633 nm) lights a phase-only SLM (8 µm pixels,
8-bit, a *nonlinear* gray→phase LUT, 90 % fill factor, fringing-field crosstalk); the SLM plane
is imaged with a small relay magnification, rotation and shift onto a 12-bit camera (5.5 µm
pixels) at a near-field distance of 2.0 mm, so the diffraction pattern depends strongly on the
distance. The file holds dark frames (4 exposures), a flat-field photon-transfer series
(uniform SLM, 10 exposures, pairs), random-pattern sample frames (fit + held-out) and
binary-grating frames (17 gray levels against gray 0) for the LUT.

Avoiding the inverse crime (the fit must not be handed its own model): the truth is computed
on a 2 µm grid (the coarse fit uses 4 µm) over a larger window, with a Gaussian illumination
envelope and an *exact* crosstalk blur — the pixelated phase convolved with a continuous
Gaussian, evaluated analytically from the pixel edges (:func:`slm_phase`), where the fit uses
:class:`optics.slm.SLM`'s sampled kernel truncated at 4σ — then *integrated* over each camera
pixel (4×4 sub-samples; the fit uses 3×3 or a Gaussian) — the fit models none of the
envelope's propagation or the exact pixel integration. The camera adds Poisson shot noise, dark
current, read noise, PRNU and DSNU fixed patterns, a few dead and hot pixels, full-well
saturation and 12-bit quantisation; quantum efficiency 0.6 (calibration works in electrons).

The ground truth is stored in the file's ``/truth`` group (units on every dataset) so tests can
check the recovery; calibration never reads it.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import ndtr
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.capture import Pattern, write_capture  # noqa: E402
from optics.fileio import atomic_path  # noqa: E402
from optics.propagation import propagate  # noqa: E402

TRUTH = {
    "wavelength_m": 633e-9,
    "slm_pitch_m": 8e-6,
    "slm_bit_depth": 8,
    "camera_pitch_m": 5.5e-6,
    "camera_shape": (64, 64),
    "distance_m": 2.0e-3,
    "distance_nominal_m": 2.08e-3,     # what the lab wrote down (4 % off)
    "magnification": 1.02,
    "magnification_nominal": 1.0,
    "rotation_rad": math.radians(1.2),
    "shift_x_m": 10e-6,                 # SLM-plane shift of the camera centre from the pattern centre
    "shift_y_m": -6e-6,
    "crosstalk_sigma_m": 2.5e-6,
    "fill_factor": 1.0,                 # (the 4-sample fine grid cannot draw a 90 % gap)
    "beam_waist_m": 700e-6,
    "gain_dn_per_e": 0.25,              # EMVA K
    "offset_dn": 100.0,
    "read_noise_e": 6.0,
    "dark_current_e_per_s": 300.0,
    "dsnu_dn": 1.0,
    "prnu": 0.01,
    "full_well_e": 13000.0,
    "quantum_efficiency": 0.6,
    "camera_bit_depth": 12,
    "pattern_px": 48,                   # SLM pixels per side of a pattern
    "pattern_block_px": 2,              # random patterns: blocks of 2×2 SLM pixels
    "grating_period_px": 8,
    "grating_px": 64,                   # SLM pixels per side of a grating pattern
    "sample_exposure_s": 0.01,
    "grating_exposure_s": 0.004,
    "sample_mean_e": 5000.0,            # mean electrons per pixel of a sample frame
}
FINE_PITCH_M = 2e-6
FINE_N = 320
SUB = 4


def true_lut(bit_depth: int = 8) -> np.ndarray:
    """Nonlinear, monotone LUT reaching 1.9π at gray 255 (an SLM slightly short of 2π)."""
    x = np.arange(2 ** bit_depth) / (2 ** bit_depth - 1)
    return 1.9 * math.pi * (0.62 * x + 0.38 * x ** 2) + 0.06 * np.sin(2 * math.pi * x)


def _similarity_coords(shape, cam_pitch, mag, rot, sx, sy, sub):
    """SLM-plane (x, y) of camera sub-samples: x = R(rot)·u/mag + shift."""
    h, w = shape
    off = (np.arange(sub) + 0.5) / sub - 0.5
    uy = ((np.arange(h) - h // 2)[:, None] + off[None, :]).reshape(-1) * cam_pitch
    ux = ((np.arange(w) - w // 2)[:, None] + off[None, :]).reshape(-1) * cam_pitch
    UY, UX = np.meshgrid(uy, ux, indexing="ij")
    c, s = math.cos(rot), math.sin(rot)
    centre = -0.5 * FINE_PITCH_M  # the even pattern's centre sits half a sample before the axis sample
    X = (c * UX - s * UY) / mag + sx + centre
    Y = (s * UX + c * UY) / mag + sy + centre
    return X, Y


def camera_irradiance(intensity: torch.Tensor, t: dict) -> np.ndarray:
    """Pixel-integrated irradiance on the camera: mean of SUB×SUB bilinear sub-samples."""
    h, w = t["camera_shape"]
    X, Y = _similarity_coords((h, w), t["camera_pitch_m"], t["magnification"], t["rotation_rad"],
                              t["shift_x_m"], t["shift_y_m"], SUB)
    n = intensity.shape[-1]
    gx = (X / FINE_PITCH_M + n // 2) / (n - 1) * 2 - 1
    gy = (Y / FINE_PITCH_M + n // 2) / (n - 1) * 2 - 1
    grid = torch.from_numpy(np.stack([gx, gy], -1))[None].to(intensity.dtype)
    out = F.grid_sample(intensity.reshape(-1, 1, n, n), grid.expand(intensity.reshape(-1, 1, n, n).shape[0], -1, -1, -1),
                        mode="bilinear", align_corners=True)
    out = out.reshape(-1, h, SUB, w, SUB).mean(dim=(2, 4))
    return out.numpy()


def slm_phase(full_gray: np.ndarray, lut: np.ndarray, *, upsample: int, sigma_m: float) -> torch.Tensor:
    """Displayed phase on the fine grid (FINE_PITCH_M): the piecewise-constant pixel phases
    ``φ(g_ij)`` convolved with a continuous Gaussian of std ``σ`` (fringing-field crosstalk),
    exactly: ``φ_σ(y, x) = Σ_ij φ(g_ij)·E_i(y)·E_j(x)``, ``E_j(x) = Φ((x − a_j)/σ) − Φ((x − b_j)/σ)``
    with ``Φ`` the normal CDF and ``[a_j, b_j)`` the extent of SLM pixel ``j`` (fine samples
    ``j·upsample … (j+1)·upsample − 1``, edges half a sample outside them). Light beyond the
    window meets gray 0 (``φ(0) = 0``), so the mass a row of ``E`` loses at the border is exact.
    The truth's own model, independent of :class:`optics.slm.SLM` (sampled kernel, truncated
    at 4σ, replicate padding), which the fit uses."""
    n_fine = full_gray.shape[-1] * upsample
    k = np.arange(n_fine, dtype=np.float64)[:, None]
    a = np.arange(full_gray.shape[-1], dtype=np.float64)[None, :] * upsample - 0.5
    b = a + upsample
    if sigma_m > 0:
        s = sigma_m / FINE_PITCH_M
        E = ndtr((k - a) / s) - ndtr((k - b) / s)
    else:
        E = ((k >= a) & (k < b)).astype(np.float64)
    phi = lut[full_gray]                                            # (P, n_slm, n_slm)
    return torch.from_numpy(np.einsum("ki,pij,lj->pkl", E, phi, E, optimize=True))


def simulate_intensity(gray_patterns: np.ndarray, t: dict) -> torch.Tensor:
    """Fine-grid intensity |P_z{envelope·e^{iφ_σ(gray)}}|² for (P, h, w) gray patterns centred on the SLM."""
    lut = true_lut(t["slm_bit_depth"])
    up = int(round(t["slm_pitch_m"] / FINE_PITCH_M))
    n_slm = FINE_N // up
    p, h, w = gray_patterns.shape
    full = np.zeros((p, n_slm, n_slm), dtype=np.int64)
    r0, c0 = n_slm // 2 - h // 2, n_slm // 2 - w // 2
    full[:, r0:r0 + h, c0:c0 + w] = gray_patterns
    if t["fill_factor"] != 1.0:
        raise ValueError("the synthetic truth draws no inter-pixel gap (fill_factor must be 1.0)")
    phase = slm_phase(full, lut, upsample=up, sigma_m=t["crosstalk_sigma_m"])
    mod = torch.polar(torch.ones_like(phase), phase)
    x = (torch.arange(FINE_N, dtype=torch.float64) - FINE_N // 2) * FINE_PITCH_M
    env = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / t["beam_waist_m"] ** 2)
    u = mod * env
    out = propagate(u, pitch_m=FINE_PITCH_M, wavelength_m=t["wavelength_m"], z_m=t["distance_m"],
                    method="asm", pad=False)
    return out.field.abs() ** 2


class Camera:
    """Ground-truth camera: EMVA linear model with PRNU, DSNU, defects, saturation, 12-bit ADC."""

    def __init__(self, t: dict, rng: np.random.Generator):
        self.t = t
        self.rng = rng
        shape = t["camera_shape"]
        self.prnu = 1.0 + t["prnu"] * rng.standard_normal(shape)
        self.dsnu = t["dsnu_dn"] * rng.standard_normal(shape)
        n_def = 4
        flat_idx = rng.choice(shape[0] * shape[1], size=2 * n_def, replace=False)
        self.dead = np.unravel_index(flat_idx[:n_def], shape)
        self.hot = np.unravel_index(flat_idx[n_def:], shape)

    def capture(self, photons: np.ndarray, exposure_s: float) -> np.ndarray:
        t, rng = self.t, self.rng
        mu_e = t["quantum_efficiency"] * photons * self.prnu + t["dark_current_e_per_s"] * exposure_s
        e = rng.poisson(np.clip(mu_e, 0, None)).astype(np.float64)
        e = e + t["read_noise_e"] * rng.standard_normal(e.shape)
        e = np.minimum(e, t["full_well_e"])
        dn = np.round(e * t["gain_dn_per_e"] + t["offset_dn"] + self.dsnu)
        dn[self.dead] = np.round(t["offset_dn"] + rng.standard_normal(len(self.dead[0])))
        full = 2 ** t["camera_bit_depth"] - 1
        dn[self.hot] = full
        return np.clip(dn, 0, full).astype(np.uint16)


def make(out: Path, *, seed: int = 0, overwrite: bool = True) -> Path:
    t = dict(TRUTH)
    rng = np.random.default_rng(seed)
    cam = Camera(t, rng)
    hp = wp = t["pattern_px"]
    blk = t["pattern_block_px"]
    patterns = {}
    # random patterns (fit + held-out)
    randoms = []
    for i in range(8):
        g = rng.integers(0, 256, size=(hp // blk, wp // blk))
        g = np.kron(g, np.ones((blk, blk), dtype=np.int64)).astype(np.uint8)
        randoms.append(g)
        patterns[f"random_{i:02d}"] = Pattern(g, kind="random")
    uniform = np.zeros((hp, wp), np.uint8)
    patterns["uniform_0"] = Pattern(uniform, kind="uniform")
    levels = list(range(0, 256, 16)) + [255]
    gratings = []
    per = t["grating_period_px"]
    hg = t["grating_px"]
    for g in levels:
        a = np.zeros((hg, hg), np.uint8)
        cols = (np.arange(hg) % per) >= per // 2
        a[:, cols] = g
        gratings.append(a)
        patterns[f"grating_{g:03d}"] = Pattern(a, kind="grating",
                                               attrs={"gray_reference": 0, "gray_level": int(g), "period_px": per})
    # noiseless irradiance (arbitrary units) on the camera
    irr = camera_irradiance(simulate_intensity(np.stack(randoms + [uniform]), t), t)
    ir_rand, ir_flat = irr[:8], irr[8]
    ir_grat = camera_irradiance(simulate_intensity(np.stack(gratings), t), t)
    # photon scale: sample frames average sample_mean_e electrons at the sample exposure
    ph_per_unit_s = t["sample_mean_e"] / (t["quantum_efficiency"] * ir_rand.mean() * t["sample_exposure_s"])
    frames, keys, exps, pids = [], [], [], []

    def add(photons, key, exposure_s, pattern_id=""):
        frames.append(cam.capture(photons, exposure_s))
        keys.append(key)
        exps.append(exposure_s)
        pids.append(pattern_id)

    dark = np.zeros(t["camera_shape"])
    for texp in (0.002, 0.01, 0.02, 0.04):
        for _ in range(2):
            add(dark, 2, texp)
    sat_t = t["full_well_e"] / (t["quantum_efficiency"] * ph_per_unit_s * ir_flat.mean())
    for frac in np.concatenate([np.linspace(0.03, 0.9, 9), [1.15]]):
        texp = float(frac * sat_t)
        for _ in range(2):
            add(ph_per_unit_s * texp * ir_flat, 1, texp, "uniform_0")
    texp = t["sample_exposure_s"]
    add(dark, 4, texp)
    for i in range(8):
        add(ph_per_unit_s * texp * ir_rand[i], 0, texp, f"random_{i:02d}")
    tg = t["grating_exposure_s"]  # shorter: the grating's bright fringes must stay below saturation
    for g, ir in zip(levels, ir_grat):
        add(ph_per_unit_s * tg * ir, 0, tg, f"grating_{g:03d}")
    instrument = {"wavelength_m": t["wavelength_m"], "camera_pitch_m": t["camera_pitch_m"],
                  "slm_pitch_m": t["slm_pitch_m"], "distance_m": t["distance_nominal_m"],
                  "magnification": t["magnification_nominal"], "slm_bit_depth": t["slm_bit_depth"]}
    n = len(frames)
    stamps = [f"2026-01-15T10:{i // 60:02d}:{i % 60:02d}+00:00" for i in range(n)]
    path = write_capture(out, frames=np.stack(frames), image_key=keys, exposure_s=exps, bit_depth=12,
                         instrument=instrument, patterns=patterns, pattern_id=pids,
                         gain_setting_db=[0.0] * n, timestamp=stamps,
                         provenance={"instrument": "synthetic near-field CDP bench", "camera_serial": "SIM-CAM-0001",
                                     "slm_serial": "SIM-SLM-0001",
                                     "software": f"data/make_sample_capture.py seed={seed}",
                                     "description": "synthetic capture with known ground truth in /truth"},
                         overwrite=overwrite)
    _write_truth(path, t)
    return path


def _write_truth(path: Path, t: dict) -> None:
    """Append the ground truth (a copy, then atomic rename: the written file stays valid)."""
    import shutil

    import h5py

    units = {"_m": "m", "_rad": "rad", "_s": "s", "_e": "e-", "_dn": "DN", "_per_e": "DN/e-"}
    with atomic_path(path, keep_partial=False) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            g = f.create_group("truth")
            g.attrs["note"] = "ground truth of the synthetic capture; calibration never reads it"
            for k, v in t.items():
                if isinstance(v, tuple):
                    continue
                u = "1"
                for suf, unit in units.items():
                    if k.endswith(suf):
                        u = unit
                if k == "dark_current_e_per_s":
                    u = "e-/s"
                ds = g.create_dataset(k, data=v)
                ds.attrs["units"] = u
            ds = g.create_dataset("lut_phase_rad", data=true_lut(t["slm_bit_depth"]))
            ds.attrs["units"] = "rad"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample_capture.h5")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = make(a.out, seed=a.seed)
    print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
