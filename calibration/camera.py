"""Camera characterisation: dark/flat correction and EMVA 1288 photon-transfer analysis.

Linear camera model (EMVA 1288 release 4.0 (2021), §2; the same model as
:class:`optics.sensor.Sensor`): mean gray value ``μ_y = μ_y.dark + K·μ_e`` and temporal
variance ``σ_y² = K²(σ_d² + μ_e) + σ_q²``, with overall system gain ``K`` (DN/e⁻), dark noise
``σ_d`` (e⁻), quantisation noise ``σ_q² = 1/12`` DN². From the capture file:

* **dark series** (``image_key == 2``) at several exposures ``t``: per-pixel linear fit
  ``dark(t) = offset + s·t`` (the dark map used for correction); spatial means give the offset
  and the dark-current slope ``K·D`` (DN/s); pair differences give the temporal dark variance
  ``σ²_y.dark(t) = K²(σ_r² + D·t) + 1/12``;
* **flat series** (``image_key == 1``, uniform SLM) in pairs at several exposures — the
  photon-transfer curve: ``σ_y² − σ²_y.dark = K·(μ_y − μ_y.dark)`` (EMVA eq. 9). Temporal
  variances come from *pair differences*, ``var(y_A − y_B)/2``, which removes all fixed-pattern
  nonuniformity (PRNU, illumination). ``K`` is the weighted least-squares slope through the
  origin over the points below 70 % of the saturation mean (EMVA §6.3), with the weight
  ``1/Var(σ̂²)`` (``Var(σ̂²) ≈ 2σ⁴/(n−1)`` for ``n`` pixels) and its standard error scaled by
  the reduced χ² when that exceeds 1;
* **saturation capacity** ``μ_e.sat = μ_y.sat/K`` at the maximum of the variance (EMVA §3.4;
  its resolution is the spacing of the exposure series);
* **read noise** ``σ_r = sqrt(σ²_y.dark(0) − 1/12)/K`` and **dark current**
  ``D = (K·D)/K`` (e⁻/s), each with a propagated standard error (the dark lines' covariance
  from their residuals; with dark frames at only two exposures a line has no residuals, and the
  covariance comes from the points' own variances: ``2σ⁴/(n−1)`` for a pair-difference variance,
  ``σ²_y.dark(t)/(frames · n)`` for a dark mean);
* **DSNU** (e⁻) and **PRNU** (fraction): spatial standard deviations of the averaged dark and
  (dark-subtracted, high-pass filtered, EMVA §8.3: each pixel divided by the 7 × 7 local mean
  of the *non-defect* pixels around it — a hot pixel at full scale would otherwise pull its 48
  neighbours' ratios down and inflate the PRNU) flat images, minus the temporal-noise share of
  the average.

Defect pixels (hot: dark mean far above the rest or at full scale; dead: flat response below
half the local median) are masked everywhere. :meth:`CameraModel.correct` turns raw frames
into electrons, ``e = (y − dark(t))/K / flat``, with the normalised flat (PRNU and illumination
envelope; the average of the flats between 20 % and 70 % of saturation). :meth:`CameraModel.sensor` gives the :class:`optics.sensor.Sensor` with the
measured parameters, so the simulator's noise is the measured one. Quantum efficiency needs a
calibrated photon source and is *not* measured: the sensor has ``quantum_efficiency = 1`` and
the simulator's intensities are electrons.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from optics.sensor import Sensor

from .capture import Capture
from .errors import CameraError

__all__ = ["CameraModel", "characterize_camera", "PTCPoint"]

QUANT_VAR_DN2 = 1.0 / 12.0


@dataclass
class PTCPoint:
    exposure_s: float
    mean_dn: float      # μ_y − μ_y.dark
    var_dn2: float      # σ_y² − σ²_y.dark
    n_pixels: int
    used: bool = False


@dataclass
class CameraModel:
    """Measured camera (values with standard errors in ``std``; units in the names)."""
    gain_dn_per_e: float
    read_noise_e: float
    dark_current_e_per_s: float
    offset_dn: float
    dsnu_e: float
    prnu: float
    saturation_capacity_e: float
    bit_depth: int
    std: Dict[str, float]
    dark_offset_map_dn: np.ndarray
    dark_slope_map_dn_per_s: np.ndarray
    flat_map: np.ndarray
    bad_pixels: np.ndarray
    ptc: List[PTCPoint] = field(default_factory=list)
    dark_ptc: List[tuple] = field(default_factory=list)  # (t, mean_dn, var_dn2)

    @property
    def gain_e_per_dn(self) -> float:
        return 1.0 / self.gain_dn_per_e

    def dark_dn(self, exposure_s) -> np.ndarray:
        t = np.asarray(exposure_s, dtype=np.float64).reshape(-1, 1, 1)
        return self.dark_offset_map_dn[None] + self.dark_slope_map_dn_per_s[None] * t

    def correct(self, frames_dn: np.ndarray, exposure_s, *, saturation_margin: Optional[float] = 0.95) -> np.ndarray:
        """Raw frames (N, H, W) in DN → electrons: dark subtracted, divided by ``K`` and by the
        normalised flat. Defect pixels become NaN (mask them with ``~np.isnan``), and so do
        pixels at or near saturation — signal above ``saturation_margin × μ_y.sat`` or at the
        ADC full scale — whose values are clipped, not measured (``None`` keeps them)."""
        fr = np.asarray(frames_dn, dtype=np.float64)
        if fr.ndim == 2:
            fr = fr[None]
        if fr.shape[-2:] != self.flat_map.shape:
            raise CameraError(f"frames of shape {fr.shape[-2:]} do not match the camera model "
                              f"{self.flat_map.shape}; use frames from the same camera and ROI")
        signal = fr - self.dark_dn(exposure_s)
        e = signal / self.gain_dn_per_e / self.flat_map[None]
        if saturation_margin is not None:
            clipped = (signal >= saturation_margin * self.saturation_capacity_e * self.gain_dn_per_e) | (
                fr >= 2 ** self.bit_depth - 1)
            e[clipped] = np.nan
        e[:, self.bad_pixels] = np.nan
        return e

    def sensor(self, *, exposure_s: float = 1e-3, mean_photons: Optional[float] = None) -> Sensor:
        """The measured camera as an :class:`optics.sensor.Sensor` (QE = 1: inputs in electrons)."""
        return Sensor(quantum_efficiency=1.0, mean_photons=mean_photons, read_noise_e=self.read_noise_e,
                      dark_current_e_per_s=max(self.dark_current_e_per_s, 0.0), exposure_s=exposure_s,
                      gain_e_per_dn=self.gain_e_per_dn, offset_dn=self.offset_dn, bit_depth=self.bit_depth,
                      full_well_e=self.saturation_capacity_e, noise=True)

    def summary(self) -> Dict[str, float]:
        keys = ("gain_dn_per_e", "read_noise_e", "dark_current_e_per_s", "offset_dn", "dsnu_e", "prnu",
                "saturation_capacity_e")
        out = {k: float(getattr(self, k)) for k in keys}
        out.update({f"{k}_std": float(v) for k, v in self.std.items()})
        out["n_bad_pixels"] = int(self.bad_pixels.sum())
        return out


def _pairs(idx: np.ndarray, exposure: np.ndarray, rel_tol: float = 1e-6):
    """Group frame indices by exposure: {t: [i, ...]} in increasing t."""
    groups: Dict[float, list] = {}
    for i in idx:
        t = float(exposure[i])
        for k in groups:
            if abs(k - t) <= rel_tol * max(k, t):
                groups[k].append(int(i))
                break
        else:
            groups[t] = [int(i)]
    return dict(sorted(groups.items()))


def _linfit(x, y, w=None):
    """Weighted least squares ``y = a + b·x``: (a, b, cov) with cov scaled by χ²_red when > 1."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    weighted = w is not None
    w = np.ones_like(x) if w is None else np.asarray(w, float)
    A = np.stack([np.ones_like(x), x], 1)
    Aw = A * w[:, None]
    cov = np.linalg.inv(A.T @ Aw)
    a, b = cov @ (Aw.T @ y)
    dof = len(x) - 2
    if dof > 0:
        chi2 = float(np.sum(w * (y - a - b * x) ** 2) / dof)
        cov = cov * max(chi2, 1.0) if weighted else cov * chi2
    return float(a), float(b), cov


def _exact_line_cov(x, var):
    """Covariance of (a, b) of the line ``y = a + b·x`` through two points whose ``y`` have the
    known variances ``var``: a fit with no degrees of freedom has no residuals to scale
    (``_linfit``'s covariance would be (AᵀA)⁻¹, in the wrong units), so propagate them:
    ``A⁻¹ diag(var) A⁻ᵀ``."""
    A = np.stack([np.ones(2), np.asarray(x, float)], 1)
    Ai = np.linalg.inv(A)
    return Ai @ np.diag(np.asarray(var, float)) @ Ai.T


def _box_mean(a: np.ndarray, r: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter
    return uniform_filter(a, size=2 * r + 1, mode="reflect")


def _masked_box_mean(a: np.ndarray, mask: np.ndarray, r: int) -> np.ndarray:
    """Mean of ``a`` over the ``(2r+1)²`` box around each pixel, counting only pixels where
    ``mask`` is true (normalised convolution); a box with no such pixel gets ``a`` itself."""
    m = mask.astype(np.float64)
    num = _box_mean(np.where(mask, a, 0.0), r)
    den = _box_mean(m, r)
    return np.where(den > 1e-12, num / np.maximum(den, 1e-12), a)


def characterize_camera(cap: Capture, *, linear_fraction: float = 0.7) -> CameraModel:
    """EMVA 1288 photon-transfer analysis of a capture's dark and flat frames (see module doc)."""
    problems = []
    dark_idx = cap.indices(2)
    flat_idx = cap.indices(1)
    dgroups = _pairs(dark_idx, cap.exposure_s)
    fgroups = _pairs(flat_idx, cap.exposure_s)
    if len(dgroups) < 2:
        problems.append(f"dark frames at {len(dgroups)} exposure(s); the dark current needs >= 2 exposures "
                        f"(image_key 2)")
    if sum(len(v) >= 2 for v in dgroups.values()) < 1:
        problems.append("no pair of dark frames at one exposure; the temporal dark noise needs pairs")
    fpairs = {t: v for t, v in fgroups.items() if len(v) >= 2}
    if len(fpairs) < 4:
        problems.append(f"flat frames in pairs at {len(fpairs)} exposure(s); the photon-transfer curve needs >= 4 "
                        f"(image_key 1, two frames per exposure)")
    if problems:
        raise CameraError("camera characterisation impossible: " + "; ".join(problems))
    fr = cap.frames
    full = cap.max_dn
    # -- dark maps: per-pixel linear fit in t over the per-exposure mean dark frames
    ts = np.array(list(dgroups))
    dmeans = np.stack([fr[v].mean(0) for v in dgroups.values()])
    tm = ts.mean()
    slope_map = ((ts - tm)[:, None, None] * (dmeans - dmeans.mean(0))).sum(0) / np.sum((ts - tm) ** 2)
    offset_map = dmeans.mean(0) - slope_map * tm
    # -- defects: hot (dark far above the rest, or full scale), dead (no flat response)
    med = np.median(dmeans[-1])
    mad = 1.4826 * np.median(np.abs(dmeans[-1] - med)) + 1e-9
    hot = (dmeans[-1] > med + 8 * mad + 5) | np.any(fr[dark_idx] >= full, axis=0)
    # mid-level flat (the pair closest to half the largest mean)
    fmeans = {t: fr[v].mean(0) - (offset_map + slope_map * t) for t, v in fpairs.items()}
    levels = {t: float(np.median(m)) for t, m in fmeans.items()}
    top = max(levels.values())
    if top <= 10:
        raise CameraError(f"flat frames are no brighter than the dark frames (median {top:.3g} DN above dark); "
                          f"check the illumination and the image_key of the flat frames")
    t_mid = min(levels, key=lambda t: abs(levels[t] - 0.5 * top))
    mid = fmeans[t_mid]
    local = np.median(mid)
    smooth = _box_mean(mid, 3)
    dead = mid < 0.5 * np.maximum(smooth, 1e-9 * local)
    bad = hot | dead | np.any(fr[flat_idx] >= full, axis=0) & (mid > 2 * smooth)
    good = ~bad
    if good.sum() < 100:
        raise CameraError(f"only {int(good.sum())} usable pixels after removing defects; check the frames")
    # -- dark temporal variance vs t
    dark_pts = []
    for t, v in dgroups.items():
        if len(v) >= 2:
            d = (fr[v[0]] - fr[v[1]])[good]
            dark_pts.append((t, float(fr[v].mean(0)[good].mean()), float(d.var(ddof=1) / 2)))
    dt = np.array([p[0] for p in dark_pts])
    dvar = np.array([p[2] for p in dark_pts])
    dmean_t = np.array([float(m[good].mean()) for m in dmeans])
    off, kd, cov_mean = _linfit(ts, dmean_t)
    if len(dark_pts) >= 2:
        v0, vslope, cov_var = _linfit(dt, dvar)
        if len(dark_pts) == 2:  # a line through 2 points has no residuals: the points' own variances
            cov_var = _exact_line_cov(dt, 2 * dvar ** 2 / (good.sum() - 1))
    else:
        v0, vslope, cov_var = float(dvar[0]), 0.0, np.diag([2 * dvar[0] ** 2 / (good.sum() - 1), 0.0])

    def dark_var(t):
        return v0 + vslope * t

    if len(ts) == 2:  # the dark means' temporal noise: var(t) over the frames × pixels averaged
        reps = np.array([len(v) for v in dgroups.values()], dtype=float)
        cov_mean = _exact_line_cov(ts, dark_var(ts) / (reps * good.sum()))

    def dark_mean(t):
        return off + kd * t

    # -- photon transfer
    pts: List[PTCPoint] = []
    for t, v in fpairs.items():
        a, b = fr[v[0]][good], fr[v[1]][good]
        mu = float((a + b).mean() / 2 - dark_mean(t))
        var = float((a - b).var(ddof=1) / 2 - dark_var(t))
        pts.append(PTCPoint(t, mu, var, int(good.sum())))
    mus = np.array([p.mean_dn for p in pts])
    vars_ = np.array([p.var_dn2 for p in pts])
    i_sat = int(np.argmax(vars_))
    mu_sat = float(mus[i_sat])
    use = (mus > 0) & (mus <= linear_fraction * mu_sat)
    if use.sum() < 3:
        raise CameraError(
            f"only {int(use.sum())} photon-transfer point(s) between 0 and {100 * linear_fraction:.0f} % of the "
            f"saturation mean ({mu_sat:.4g} DN); record flats at more exposures below saturation")
    for p, u in zip(pts, use):
        p.used = bool(u)
    n = good.sum()
    var_var = 2 * (vars_ + dark_var(np.array([p.exposure_s for p in pts]))) ** 2 / (n - 1)
    w = 1.0 / var_var[use]
    x, y = mus[use], vars_[use]
    K = float(np.sum(w * x * y) / np.sum(w * x * x))
    k_var = 1.0 / np.sum(w * x * x)
    chi2 = float(np.sum(w * (y - K * x) ** 2) / max(int(use.sum()) - 1, 1))
    k_std = math.sqrt(k_var * max(chi2, 1.0))
    if not (K > 0 and math.isfinite(K)):
        raise CameraError(f"photon-transfer slope K = {K!r} DN/e⁻ is not positive; the flat variances do not grow "
                          f"with the mean — check that flat frames are real exposures of a uniform field")
    # -- read noise, dark current
    rn2 = v0 - QUANT_VAR_DN2
    read_noise = math.sqrt(max(rn2, 0.0)) / K
    rn_std = (math.sqrt(cov_var[0, 0]) / (2 * math.sqrt(max(rn2, 1e-12))) / K
              + read_noise * k_std / K) if rn2 > 0 else float("nan")
    dark_current = kd / K
    dc_std = math.sqrt(cov_mean[1, 1]) / K + abs(dark_current) * k_std / K
    # -- DSNU, PRNU (spatial variances minus the temporal share of the averages)
    nd = len(dark_idx)
    dmap = fr[dark_idx].mean(0)  # mean dark image (at the mean exposure)
    dsnu_var = float(dmap[good].var(ddof=1) - dark_var(float(cap.exposure_s[dark_idx].mean())) / nd)
    dsnu_e = math.sqrt(max(dsnu_var, 0.0)) / K
    mid_v = fpairs[t_mid]
    hp = mid / np.maximum(_masked_box_mean(mid, good, 3), 1e-9)
    temporal = (dict((p.exposure_s, p.var_dn2) for p in pts)[t_mid] + dark_var(t_mid)) / len(mid_v)
    prnu_var = float(hp[good].var(ddof=1) - temporal / float(np.median(mid)) ** 2)
    prnu = math.sqrt(max(prnu_var, 0.0))
    # flat map: the average of the normalised dark-subtracted flats between 20 % and 70 % of the
    # saturation mean (several pairs average down their shot noise, which the map would add to
    # every corrected frame)
    sel = [t for t, lv in levels.items() if 0.2 * mu_sat <= lv <= linear_fraction * mu_sat] or [t_mid]
    flat = np.mean([fmeans[t] / np.median(fmeans[t][good]) for t in sel], axis=0)
    flat = np.where(good & (flat > 0.05), flat, 1.0)
    sat_e = mu_sat / K
    std = {"gain_dn_per_e": k_std, "read_noise_e": rn_std, "dark_current_e_per_s": dc_std,
           "offset_dn": math.sqrt(cov_mean[0, 0]), "saturation_capacity_e": sat_e * k_std / K}
    return CameraModel(gain_dn_per_e=K, read_noise_e=read_noise, dark_current_e_per_s=dark_current, offset_dn=off,
                       dsnu_e=dsnu_e, prnu=prnu, saturation_capacity_e=sat_e, bit_depth=cap.bit_depth, std=std,
                       dark_offset_map_dn=offset_map, dark_slope_map_dn_per_s=slope_map, flat_map=flat,
                       bad_pixels=bad, ptc=pts, dark_ptc=dark_pts)
