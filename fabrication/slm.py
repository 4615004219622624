"""Design → SLM gray-level bitmap, with a sidecar JSON that records every step.

Pipeline (each step documented in the sidecar):

1. **Resampling** from the design pitch ``p_d`` to the SLM pitch ``p_s``. An integer ratio
   ``r = p_d/p_s`` is exact: every design pixel becomes ``r × r`` SLM pixels. Any other ratio
   needs an explicit ``resample="nearest"`` (pick the design pixel under each SLM pixel centre)
   or ``"linear"`` (bilinear interpolation of the complex field ``e^{iφ}``, so phase wraps do not
   smear); output size ``round(n·r)``; the SLM pixel ``j`` centre sits at design coordinate
   ``(j + ½)/r − ½``.
2. **Sign**: the displayed phase is ``sign·φ`` (``sign = −1`` for a panel or geometry that
   retards the other way).
3. **Carrier** (optional): a blazed grating ``2π(f_y·(i − H//2) + f_x·(j − W//2))`` with
   ``(i, j)`` the panel row and column: zero at panel pixel ``(H//2, W//2)``, where the design
   centre sits (with plain indices, ``2π(f_y·i + f_x·j)``, it differs by the constant
   ``2π(f_y·H//2 + f_x·W//2)`` — π for period 8 along the 1080 rows of a 1920 × 1080 panel) —
   and ``f = 1/period`` cycles per SLM pixel, added over the design area, moves the signal off
   the zero order by ``sin θ = λ f / p_s`` (first order at ``x = λ z f_x/p_s`` in the
   Fraunhofer plane, +x for ``f_x > 0``). ``|f| > ½`` aliases (a period under 2 pixels) and is refused.
4. **Wavelength scaling**: a LUT calibrated at ``λ_c`` gives, at the design wavelength ``λ``,
   the phases ``φ_λ(g) = φ_c(g)·λ_c/λ`` (liquid-crystal retardance ∝ 1/λ, dispersion of the
   birefringence neglected — use a LUT measured at ``λ`` when it matters).
5. **Gray mapping**: each phase goes to the LUT level nearest in the wrapped distance
   ``|wrap(φ − φ_g)|`` (:meth:`optics.slm.PhaseLUT.phase_to_gray` with ``wrap=True``), which
   also wraps the phase. A linear LUT (default: ``PhaseLUT.linear(b, device.phase_range_rad)``)
   or a measured one (``PhaseLUT.tabulated``, inverted by this nearest-level search, i.e. by
   interpolation of the tabulated curve between its points). A LUT that does not reach around
   the circle (``not lut.wraps``: span + one step < 2π at ``λ``) leaves the phases in its gap
   unreachable; they go to the nearer end level. When that makes the mapping's RMS phase error
   exceed ``lut_rms_tol_rad`` (default :func:`default_rms_limit_rad`, the limit verification
   applies) the export is refused before anything is written.
6. **Placement** on the panel: centred — the design's centre pixel ``(h//2, w//2)`` (on the
   SLM grid, ``h × w`` panel pixels; for an integer ratio ``r`` it lies in the block of design
   pixel ``(n//2, m//2)``) on panel pixel ``(H//2, W//2)``, the optical axis convention of
   :mod:`optics` and the carrier's origin — plus ``offset_px``: top-left
   ``(H//2 − h//2 + dy, W//2 − w//2 + dx)``; the rest gets the gray level of ``fill_phase_rad``.
7. **File**: 8-bit PNG/BMP or 16-bit PNG holding 10/12-bit levels (:mod:`fabrication.bitmap`).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from optics.errors import LUTError
from optics.fileio import write_json
from optics.lutfile import LUTTable, read_lut_file
from optics.slm import PhaseLUT

from ._io import check_outputs, sha256_array, sha256_file, sidecar_path, software_version as _version
from .bitmap import format_for, write_bitmap
from .designs import PhaseDesign
from .devices import SLMDevice, get_device
from .errors import FabricationError

__all__ = ["SLMOptions", "SLMExport", "export_slm", "resample_phase", "sample_at_design_centres",
           "carrier_phase", "effective_lut", "read_lut_csv", "read_lut_table", "RESAMPLE_MODES", "SIDECAR_FORMAT", "map_to_panel",
           "PanelMapping", "max_gap", "options_from_sidecar", "default_rms_limit_rad", "lut_range_error"]

TWO_PI = 2.0 * math.pi
RESAMPLE_MODES = ("exact", "nearest", "linear")
SIDECAR_FORMAT = "phaseforge-slm-bitmap"


@dataclass
class SLMOptions:
    """Every choice of an SLM export (all stored in the sidecar)."""

    bit_depth: Optional[int] = None              # default: the device's
    lut: Optional[PhaseLUT] = None               # default: linear over device.phase_range_rad
    lut_source: str = ""                         # where the LUT came from (file name)
    lut_wavelength_m: Optional[float] = None     # default: device.calibration_wavelength_m or the design's
    resample: str = "exact"
    offset_px: Tuple[int, int] = (0, 0)          # (rows, columns) from the centred position
    fill_phase_rad: float = 0.0
    carrier_period_px: Tuple[float, float] = (0.0, 0.0)  # (y, x); 0 = no carrier along that axis
    sign: int = 1
    justify: str = "lsb"
    lut_rms_tol_rad: Optional[float] = None      # LUT range check; default: default_rms_limit_rad(2^b)


@dataclass
class SLMExport:
    path: Path
    sidecar_path: Path
    gray: np.ndarray          # (H, W) uint16 gray levels on the whole panel
    sidecar: dict


def read_lut_table(path) -> LUTTable:
    """A measured LUT table (gray, phase, the wavelength it was measured at when recorded) from a
    CSV ``gray,phase_rad`` or a CALIBRATION.h5 (its ``/lut`` group), by :mod:`optics.lutfile`."""
    p = Path(path)
    if not p.is_file():
        raise FabricationError(f"LUT file {p} does not exist")
    try:
        return read_lut_file(p)
    except LUTError as exc:
        raise FabricationError(str(exc)) from None


def read_lut_csv(path, *, bit_depth: int) -> PhaseLUT:
    """A measured LUT from a CSV with columns ``gray,phase_rad`` (header line; ``#`` comments) or
    from a CALIBRATION.h5 (:func:`read_lut_table`)."""
    return read_lut_table(path).phase_lut(bit_depth=bit_depth)


def effective_lut(lut: PhaseLUT, *, lut_wavelength_m: float, wavelength_m: float) -> PhaseLUT:
    """The LUT's phases at ``wavelength_m``: ``φ(g)·λ_lut/λ`` (retardance ∝ 1/λ)."""
    k = float(lut_wavelength_m) / float(wavelength_m)
    if math.isclose(k, 1.0, rel_tol=1e-12):
        return lut
    return PhaseLUT(lut.levels_rad * k)


def resample_phase(phase: np.ndarray, ratio: float, mode: str, *, shape_out=None) -> np.ndarray:
    """Phase on a grid ``ratio`` times finer (``ratio = p_design/p_slm``); see the module docstring."""
    if mode not in RESAMPLE_MODES:
        raise FabricationError(f"resample must be one of {RESAMPLE_MODES}, got {mode!r}")
    n = int(round(ratio))
    if mode == "exact":
        if n < 1 or abs(ratio - n) > 1e-6 * ratio:
            raise FabricationError(
                f"design pitch / SLM pitch = {ratio:.9g} is not an integer, so the design cannot be shown "
                f"exactly; pass --resample nearest|linear (resample='nearest'/'linear') to interpolate, or "
                f"design on a pitch that is an integer multiple of the SLM pitch")
        return np.repeat(np.repeat(phase, n, axis=0), n, axis=1) if n > 1 else phase.copy()
    h, w = phase.shape
    ho, wo = shape_out if shape_out is not None else (max(1, int(round(h * ratio))), max(1, int(round(w * ratio))))
    yc = (np.arange(ho) + 0.5) / ratio - 0.5
    xc = (np.arange(wo) + 0.5) / ratio - 0.5
    return _sample(phase, yc, xc, mode)


def _sample(phase: np.ndarray, yc: np.ndarray, xc: np.ndarray, mode: str) -> np.ndarray:
    h, w = phase.shape
    if mode == "nearest":
        iy = np.clip(np.floor(yc + 0.5).astype(int), 0, h - 1)
        ix = np.clip(np.floor(xc + 0.5).astype(int), 0, w - 1)
        return phase[np.ix_(iy, ix)]
    u = np.exp(1j * phase)
    yc = np.clip(yc, 0, h - 1)
    xc = np.clip(xc, 0, w - 1)
    y0 = np.clip(np.floor(yc).astype(int), 0, max(h - 2, 0))
    x0 = np.clip(np.floor(xc).astype(int), 0, max(w - 2, 0))
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    ty, tx = (yc - y0)[:, None], (xc - x0)[None, :]
    v = (u[np.ix_(y0, x0)] * (1 - ty) * (1 - tx) + u[np.ix_(y0, x1)] * (1 - ty) * tx
         + u[np.ix_(y1, x0)] * ty * (1 - tx) + u[np.ix_(y1, x1)] * ty * tx)
    return np.angle(v)


def sample_at_design_centres(phase_slm: np.ndarray, ratio: float, design_shape, mode: str = "linear") -> np.ndarray:
    """Phase of the SLM image at the design pixel centres: the inverse map used by verification —
    the SLM pixel under each centre for ``mode="nearest"``, bilinear on ``e^{iφ}`` otherwise (exact
    for an integer ratio, where the centre lies inside a constant block)."""
    h, w = design_shape
    yc = (np.arange(h) + 0.5) * ratio - 0.5
    xc = (np.arange(w) + 0.5) * ratio - 0.5
    return _sample(phase_slm, yc, xc, "nearest" if mode == "nearest" else "linear")


def carrier_phase(panel_shape, period_px) -> np.ndarray:
    """``2π(f_y(i − H//2) + f_x(j − W//2))`` on the panel, ``f = 1/period`` (0 → no carrier)."""
    H, W = panel_shape
    fy, fx = (0.0 if not p else 1.0 / float(p) for p in period_px)
    i = np.arange(H, dtype=np.float64)[:, None] - H // 2
    j = np.arange(W, dtype=np.float64)[None, :] - W // 2
    return TWO_PI * (fy * i + fx * j)


def _check_carrier(period_px) -> Tuple[float, float]:
    if len(period_px) != 2:
        raise FabricationError(f"carrier_period_px must be (period_y, period_x) in SLM pixels, got {period_px!r}")
    out = []
    for axis, p in zip("yx", period_px):
        p = float(p)
        if not math.isfinite(p):
            raise FabricationError(f"carrier period along {axis} is {p!r}; use 0 for no carrier")
        if p != 0 and abs(p) < 2.0:
            raise FabricationError(
                f"carrier period along {axis} = {p:g} SLM pixels is under 2 pixels: the grating aliases "
                f"(its first order lands at the alias frequency 1/{p:g} − 1 cycles/pixel); use |period| >= 2")
        out.append(p)
    return tuple(out)


@dataclass
class PanelMapping:
    """The in-memory result of mapping a design onto a panel (shared by export and verification)."""

    gray: np.ndarray
    top: int
    left: int
    shape_on_slm: Tuple[int, int]
    ratio: float
    period: Tuple[float, float]
    lut: PhaseLUT
    lut_eff: PhaseLUT
    lut_wavelength_m: float
    fill_gray: int
    offset: Tuple[int, int]
    resample: str = "exact"
    target_rad: Optional[np.ndarray] = None  # displayed phase asked of the design area (sign·φ + carrier)

    def phase_on_design_grid(self, gray: np.ndarray, design_shape, *, sign: int, lut_eff=None) -> np.ndarray:
        """Read-back: gray → LUT phase over the design area → minus the carrier → times the sign →
        sampled at the design pixel centres."""
        lut_eff = self.lut_eff if lut_eff is None else lut_eff
        h, w = self.shape_on_slm
        area = gray[self.top:self.top + h, self.left:self.left + w]
        disp = lut_eff.gray_to_phase(torch.from_numpy(area.astype(np.int64))).numpy()
        car = carrier_phase(gray.shape, self.period)[self.top:self.top + h, self.left:self.left + w]
        return sample_at_design_centres(sign * (disp - car), self.ratio, design_shape, self.resample)


def map_to_panel(design: PhaseDesign, dev: SLMDevice, opt: SLMOptions, bit_depth: int) -> PanelMapping:
    """Steps 1–6 of the module docstring, in memory."""
    b = bit_depth
    if opt.sign not in (1, -1):
        raise FabricationError(f"sign must be +1 or -1, got {opt.sign!r}")
    period = _check_carrier(opt.carrier_period_px)
    lut = opt.lut if opt.lut is not None else PhaseLUT.linear(b, dev.phase_range_rad)
    if lut.bit_depth != b:
        raise FabricationError(f"the LUT has {lut.bit_depth}-bit levels but the export is {b}-bit; give a LUT "
                               f"for {b} bits or set --bit-depth {lut.bit_depth}")
    lam_lut = opt.lut_wavelength_m if opt.lut_wavelength_m is not None else (
        dev.calibration_wavelength_m if dev.calibration_wavelength_m is not None else design.wavelength_m)
    lut_eff = effective_lut(lut, lut_wavelength_m=lam_lut, wavelength_m=design.wavelength_m)
    ratio = design.pixel_pitch_m / dev.pixel_pitch_m
    ph = resample_phase(design.phase_rad, ratio, opt.resample)
    h, w = ph.shape
    H, W = dev.shape
    if h > H or w > W:
        raise FabricationError(
            f"the design is {h} x {w} SLM pixels at the panel pitch ({design.shape[0]} x {design.shape[1]} design "
            f"pixels × {ratio:.6g}) but {dev.name} has {H} x {W}; crop the design, design on a coarser "
            f"grid or choose a larger panel")
    dy, dx = (int(v) for v in opt.offset_px)
    top, left = H // 2 - h // 2 + dy, W // 2 - w // 2 + dx  # block pixel (h//2, w//2) on panel (H//2, W//2)
    if top < 0 or left < 0 or top + h > H or left + w > W:
        raise FabricationError(f"offset_px ({dy}, {dx}) moves the {h} x {w} design off the {H} x {W} panel "
                               f"(top-left would be row {top}, column {left}); use a smaller offset")
    carrier = carrier_phase((H, W), period)
    disp = opt.sign * ph + carrier[top:top + h, left:left + w]
    fill_gray = int(lut_eff.phase_to_gray(torch.tensor(float(opt.fill_phase_rad), dtype=torch.float64), wrap=True))
    gray = np.full((H, W), fill_gray, dtype=np.uint16)
    gray[top:top + h, left:left + w] = lut_eff.phase_to_gray(torch.from_numpy(disp), wrap=True).numpy()
    return PanelMapping(gray, top, left, (h, w), ratio, period, lut, lut_eff, lam_lut, fill_gray, (dy, dx),
                        opt.resample, disp)


def default_rms_limit_rad(n_levels: int) -> float:
    """The default RMS phase-error limit for ``N`` levels: ``1.5·Δ/√12 + 0.005`` rad with
    ``Δ = 2π/N`` (1.5 × the uniform quantisation error, plus margin); verification and the
    export's LUT range check both use it."""
    step = TWO_PI / n_levels if n_levels else 0.0
    return 1.5 * step / math.sqrt(12) + 0.005


def lut_range_error(m: PanelMapping) -> dict:
    """How well the mapping's LUT shows the phases asked of the design area: wrapped error
    between the displayed level and the target (RMS, max), and the pixels whose target lies in
    the LUT's gap — beyond half the largest step past either end level (mod 2π)."""
    h, w = m.shape_on_slm
    area = m.gray[m.top:m.top + h, m.left:m.left + w]
    shown = m.lut_eff.gray_to_phase(torch.from_numpy(area.astype(np.int64))).numpy()
    err = np.angle(np.exp(1j * (shown - m.target_rad)))
    lv = m.lut_eff.levels_rad.numpy()
    half = 0.5 * float(np.diff(lv).max()) if lv.size > 1 else 0.0
    t = m.lut_eff.reduce(torch.from_numpy(np.asarray(m.target_rad, dtype=np.float64))).numpy()
    gap = (t > lv[-1] + half) & (t < lv[0] + TWO_PI - half) if not m.lut_eff.wraps else np.zeros(t.shape, bool)
    return {"rms_error_rad": float(np.sqrt(np.mean(err * err))), "max_error_rad": float(np.abs(err).max()),
            "unreachable_pixels": int(gap.sum()), "pixels": int(gap.size),
            "gap_rad": None if m.lut_eff.wraps else [float(lv[-1]), float(lv[0] + TWO_PI)]}


def _check_lut_range(m: PanelMapping, design: PhaseDesign, opt: SLMOptions, bit_depth: int) -> dict:
    """Refuse a LUT whose range cannot show the design's phases (see step 5); the numbers for the
    sidecar otherwise (a LUT that wraps reaches every phase and is never refused)."""
    r = lut_range_error(m)
    lim = default_rms_limit_rad(2 ** bit_depth) if opt.lut_rms_tol_rad is None else float(opt.lut_rms_tol_rad)
    r.update(limit_rad=lim, lut_wraps=bool(m.lut_eff.wraps))
    if not m.lut_eff.wraps and r["rms_error_rad"] > lim:
        lv = m.lut_eff.levels_rad.numpy()
        raise FabricationError(
            f"the LUT cannot reach the design's phases: at λ = {design.wavelength_m:g} m it spans "
            f"{float(lv[-1] - lv[0]):.4g} rad, short of 2π even with one more step (its phases are the ones "
            f"calibrated at {m.lut_wavelength_m:g} m × {m.lut_wavelength_m / design.wavelength_m:.4g}), so "
            f"phases between {r['gap_rad'][0]:.4g} and {r['gap_rad'][1]:.4g} rad (mod 2π) cannot be shown; "
            f"{r['unreachable_pixels']} of the {r['pixels']} design-area pixels ask for one, and the mapped phase "
            f"is off by RMS {r['rms_error_rad']:.4g} rad (max {r['max_error_rad']:.4g}) > the limit {lim:.4g} rad. "
            f"Use a LUT calibrated to 2π at this wavelength (or check --lut-wavelength-m: the LUT's phases scale by "
            f"λ_lut/λ), or accept the error with --rms-tol-rad (SLMOptions.lut_rms_tol_rad); nothing was written")
    return r


def export_slm(design: PhaseDesign, device, out, *, options: Optional[SLMOptions] = None,
               device_file=None, overwrite: bool = False) -> SLMExport:
    """Write the SLM bitmap ``out`` (.png / .bmp) and its sidecar ``out.json``; nothing else is touched."""
    opt = options or SLMOptions()
    dev: SLMDevice = get_device(device, device_file)
    out = Path(out)
    side = sidecar_path(out)
    b = dev.bit_depth if opt.bit_depth is None else int(opt.bit_depth)
    if b not in (8, 10, 12):
        raise FabricationError(f"bit depth {b} is not supported; use 8, 10 or 12")
    fmt = format_for(out, b)
    check_outputs([out, side], overwrite)
    m = map_to_panel(design, dev, opt, b)
    lut_range = _check_lut_range(m, design, opt, b)
    gray, top, left, (h, w), H, W = m.gray, m.top, m.left, m.shape_on_slm, dev.height_px, dev.width_px
    period, ratio, lam_lut, lut, lut_eff, fill_gray, dy, dx = (m.period, m.ratio, m.lut_wavelength_m, m.lut,
                                                               m.lut_eff, m.fill_gray, *m.offset)
    write_bitmap(out, gray, bit_depth=b, justify=opt.justify,
                 text={"phaseforge-design": f"{design.source} [{design.index}]"})
    levels = lut.levels_rad.numpy()
    sidecar = {
        "format": SIDECAR_FORMAT, "format_version": "1",
        "file": out.name, "file_format": fmt, "file_sha256": sha256_file(out),
        "pixel_data": {"sha256": sha256_array(gray.astype("<u2")), "hashed_as": "uint16 little-endian, C order, "
                       "gray levels of the whole panel (rows, columns)", "shape": [H, W]},
        "bit_depth": b, "justify": opt.justify if fmt == "png16" else "none",
        "justify_note": ("10/12-bit levels in a 16-bit PNG: 'lsb' stores the level itself (sample = g), 'msb' "
                         "stores g·2^(16−b) with a PNG sBIT chunk; drivers differ — check yours"),
        "device": dev.to_dict(),
        "design": design.describe(),
        "resampling": {"mode": opt.resample, "ratio": ratio, "design_pitch_m": design.pixel_pitch_m,
                       "slm_pitch_m": dev.pixel_pitch_m, "shape_on_slm_px": [h, w]},
        "placement": {"top_px": top, "left_px": left, "offset_px": [dy, dx], "fill_phase_rad": float(opt.fill_phase_rad),
                      "fill_gray": fill_gray, "centre_convention": "design pixel (h//2, w//2) of the h x w block on the "
                      "SLM grid on panel pixel (H//2, W//2) + offset: top = H//2 − h//2 + dy, left = W//2 − w//2 + dx"},
        "sign": opt.sign,
        "carrier": {"period_px": list(period), "frequency_cycles_per_px": [0.0 if not p else 1.0 / p for p in period],
                    "phase": "2π(f_y(i − H//2) + f_x(j − W//2)) over the design area, (i, j) the panel row and column: "
                             "zero at panel pixel (H//2, W//2), the design centre",
                    "first_order_angle_rad": [math.asin(min(1.0, abs(design.wavelength_m / (p * dev.pixel_pitch_m))))
                                              * (1 if p > 0 else -1) if p else 0.0 for p in period]},
        "lut": {"source": opt.lut_source or ("linear" if opt.lut is None else "given"),
                "levels_rad": [float(v) for v in levels], "sha256": sha256_array(levels.astype("<f8")),
                "hashed_as": "float64 little-endian levels_rad", "wavelength_m": lam_lut,
                "design_wavelength_m": design.wavelength_m, "scale_to_design_wavelength": lam_lut / design.wavelength_m,
                "wraps_at_design_wavelength": bool(lut_eff.wraps),
                "max_step_at_design_wavelength_rad": max_gap(lut_eff),
                "range_check": lut_range},
        "options": {"bit_depth": b, "lut_wavelength_m": lam_lut, "resample": opt.resample,
                    "offset_px": [dy, dx], "fill_phase_rad": float(opt.fill_phase_rad),
                    "carrier_period_px": list(period), "sign": opt.sign, "justify": opt.justify,
                    "lut_rms_tol_rad": opt.lut_rms_tol_rad},
        "software": f"phaseforge {_version()}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(side, sidecar)
    return SLMExport(out, side, gray, sidecar)


def options_from_sidecar(sidecar: dict):
    """``(SLMOptions, SLMDevice)`` that reproduce an export from its sidecar (LUT from its levels)."""
    o = sidecar["options"]
    d = dict(sidecar["device"])
    dev = SLMDevice(**d)
    lut = PhaseLUT(np.asarray(sidecar["lut"]["levels_rad"], dtype=np.float64))
    opt = SLMOptions(bit_depth=int(o["bit_depth"]), lut=lut, lut_source=sidecar["lut"].get("source", ""),
                     lut_wavelength_m=float(o["lut_wavelength_m"]), resample=o["resample"],
                     offset_px=tuple(o["offset_px"]), fill_phase_rad=float(o["fill_phase_rad"]),
                     carrier_period_px=tuple(o["carrier_period_px"]), sign=int(o["sign"]), justify=o["justify"],
                     lut_rms_tol_rad=o.get("lut_rms_tol_rad"))
    return opt, dev


def max_gap(lut: PhaseLUT) -> float:
    """Largest phase gap between levels, wrap gap included (the worst-case quantisation step)."""
    lv = np.sort(np.mod(lut.levels_rad.numpy() - float(lut.levels_rad[0]), TWO_PI))
    gaps = np.diff(np.concatenate([lv, lv[:1] + TWO_PI]))
    return float(gaps.max())


