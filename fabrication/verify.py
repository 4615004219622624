"""Round-trip verification: re-read what was written, rebuild the phase, simulate, compare.

For each written file the phase is rebuilt **from the file on disk** only through the recorded
physics (the sidecar):

* SLM bitmap — decode (Pillow) → undo the 16-bit justification → gray levels → LUT phases at the
  design wavelength → minus the carrier → times the sign → sampled at the design pixel centres;
* height TIFF — µm → ``φ = 2π(n(λ) − n₀)h/λ`` (:func:`optics.materials.height_to_phase`);
* GDSII — gdstk → rasterise every layer at the cell centres → level (one layer per level, or the
  binary etch masks) → height from the level table CSV → phase through the material;
* grayscale-lithography PNG — gray → contrast curve → height → phase.

Three comparisons, all reported:

1. **file fidelity** — the rebuilt gray levels / heights / levels against what the design maps to
   (the export's mapping rerun in memory), plus the SHA-256 in the sidecar: any difference means
   the file was modified or corrupted, or is read with another LUT;
2. **phase error** against the design, wrapped to ``(−π, π]``, RMS and max over the design area
   (no piston removed);
3. **CDP difference** ``‖I_file − I_design‖/‖I_design‖`` of the noiseless CDPs
   :meth:`optics.cdp.CDPSystem.intensity` of the two phase masks (the design's pitch, wavelength,
   distance and method; Fraunhofer at 0.1 m when the design names none) for a fixed test object
   (unit amplitude, phase uniform in [0, π), seed 0).

Limits (``Tolerances``; ``None`` = default): RMS phase error ``1.5·Δ/√12 + 0.005`` rad with
``Δ = 2π/N`` the nominal step of the ``N`` levels (gray levels of the LUT or DOE levels; 0 for a
continuous height map); max phase error and CDP difference no worse than the export's own mapping
(``+1e-3`` rad, ``×1.1 + 1e-3``). A failure names its cause when known: file modified or
corrupted, LUT differs from the export's, carrier mismatch or aliasing, LUT range too small,
quantisation, resampling.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from optics import materials
from optics.cdp import CDPSystem
from optics.fileio import malformed_file
from optics.slm import PhaseLUT

from ._io import sha256_array, sidecar_path
from .bitmap import gray_from_stored, read_bitmap
from .designs import PhaseDesign, load_design
from .errors import FabricationError, VerificationError
from .slm import default_rms_limit_rad, effective_lut, map_to_panel, max_gap, options_from_sidecar

__all__ = ["Tolerances", "VerificationResult", "verify_slm", "verify_doe", "wrapped_error", "cdp_difference",
           "verify_path"]

TWO_PI = 2.0 * math.pi


@dataclass
class Tolerances:
    rms_rad: Optional[float] = None
    max_rad: Optional[float] = None
    cdp_rel: Optional[float] = None


@dataclass
class VerificationResult:
    file: str
    kind: str
    phase_rms_rad: float
    phase_max_rad: float
    cdp_rel_diff: float
    mapping_rms_rad: float          # the export's own mapping (quantisation, resampling) vs the design
    mapping_max_rad: float
    mapping_cdp_rel_diff: float
    mismatched_pixels: int
    limits: dict
    passed: bool
    causes: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    arrays: dict = field(default_factory=dict, repr=False)  # read-back phase, error, CDPs (not serialised)

    def summary(self) -> str:
        s = (f"{self.kind} {Path(self.file).name}: phase error RMS {self.phase_rms_rad:.4g} rad, max "
             f"{self.phase_max_rad:.4g} rad, CDP difference {self.cdp_rel_diff:.3g}; "
             f"{'PASS' if self.passed else 'FAIL'}")
        if self.causes:
            s += " — " + "; ".join(self.causes)
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("arrays")
        return d


def wrapped_error(a: np.ndarray, b: np.ndarray):
    """RMS and max of ``wrap(a − b)`` to ``(−π, π]``."""
    d = np.angle(np.exp(1j * (np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    return float(np.sqrt(np.mean(d * d))), float(np.abs(d).max()), d


def cdp_difference(phase_a: np.ndarray, phase_b: np.ndarray, design: PhaseDesign) -> tuple:
    """``‖I(b) − I(a)‖/‖I(a)‖`` of the noiseless CDPs of two phase masks (see the module docstring);
    returns ``(value, note, I(a), I(b))``."""
    masks = torch.from_numpy(np.stack([phase_a, phase_b]).astype(np.float64))
    z = design.z_m if design.z_m is not None and design.z_m > 0 else 0.1
    method = design.method or "fraunhofer"
    g = torch.Generator().manual_seed(0)
    x = torch.polar(torch.ones(design.shape, dtype=torch.float64),
                    math.pi * torch.rand(design.shape, generator=g, dtype=torch.float64))
    note = f"CDPs: {method}, z = {z:g} m"
    try:
        sysm = CDPSystem(masks, pitch_m=design.pixel_pitch_m, wavelength_m=design.wavelength_m, z_m=z, method=method)
        inten = sysm.intensity(x)
    except ValueError as exc:
        sysm = CDPSystem(masks, pitch_m=design.pixel_pitch_m, wavelength_m=design.wavelength_m, z_m=z,
                         method="fraunhofer")
        inten = sysm.intensity(x)
        note = f"CDPs: fraunhofer, z = {z:g} m (the design's method {method!r} refused this grid: {exc})"
    i0, i1 = inten[0], inten[1]
    return float(torch.linalg.vector_norm(i1 - i0) / torch.linalg.vector_norm(i0)), note, i0.numpy(), i1.numpy()


def _first(mask: np.ndarray) -> str:
    r, c = np.argwhere(mask)[0]
    return f"row {int(r)}, column {int(c)}"


def _judge(result_kw: dict, *, design: PhaseDesign, back: np.ndarray, intended: np.ndarray, n_levels: Optional[int],
           tol: Tolerances, causes: List[str], notes: List[str], mapping_causes=()) -> VerificationResult:
    """Compare the read-back phase ``back`` and the export's own mapping ``intended`` with the design.

    ``causes`` already lists what the file checks found (a faithful file has none); when the limits
    are exceeded by a faithful file, the mapping is to blame: ``mapping_causes`` (LUT range,
    resampling) or, failing those, quantisation."""
    rms, mx, err = wrapped_error(back, design.phase_rad)
    irms, imx, _ = wrapped_error(intended, design.phase_rad)
    cdp, note, i_design, i_file = cdp_difference(design.phase_rad, back, design)
    icdp = cdp_difference(design.phase_rad, intended, design)[0]
    notes.append(note)
    lim = {"rms_rad": tol.rms_rad if tol.rms_rad is not None else default_rms_limit_rad(n_levels or 0),
           "max_rad": tol.max_rad if tol.max_rad is not None else imx + 1e-3,
           "cdp_rel": tol.cdp_rel if tol.cdp_rel is not None else 1.1 * icdp + 1e-3}
    over = [k for k, v in (("rms_rad", rms), ("max_rad", mx), ("cdp_rel", cdp)) if v > lim[k]]
    if over:
        notes.append("over the limit: " + ", ".join(over))
        if not causes:
            causes.extend(mapping_causes)
        if not causes:
            causes.append(f"quantisation: the export's own mapping ({n_levels or 'continuous'} levels) already gives "
                          f"RMS {irms:.4g} rad, max {imx:.4g} rad (limits {lim['rms_rad']:.4g}, {lim['max_rad']:.4g}); "
                          f"use more levels (bit depth) or loosen the tolerance")
    return VerificationResult(phase_rms_rad=rms, phase_max_rad=mx, cdp_rel_diff=cdp, mapping_rms_rad=irms,
                              mapping_max_rad=imx, mapping_cdp_rel_diff=icdp, limits=lim, passed=not over and not causes,
                              causes=causes, notes=notes, **result_kw,
                              arrays={"design_rad": design.phase_rad, "file_rad": back, "error_rad": err,
                                      "cdp_design": i_design, "cdp_file": i_file})


def _read_sidecar(path: Path, fmt: str) -> dict:
    side = sidecar_path(path) if fmt != "phaseforge-doe" else path
    if not side.is_file():
        raise FabricationError(f"sidecar {side} is missing; verification needs the export's sidecar JSON")
    try:
        d = json.loads(side.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FabricationError(f"sidecar {side} is not valid JSON ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        got = d.get("format") if isinstance(d, dict) else f"none (the JSON is a {type(d).__name__}, not an object)"
        raise FabricationError(f"{side} has format {got!r}, expected {fmt!r}")
    return d


def _design_check(side: dict, design: PhaseDesign) -> List[str]:
    want = side.get("design", {}).get("phase_sha256")
    if want and want != design.phase_sha256():
        return [f"design differs from the exported one: its phase SHA-256 {design.phase_sha256()[:12]} is not the "
                f"sidecar's {want[:12]} ({side['design'].get('source', '?')} [{side['design'].get('index', 0)}]); "
                f"verify against the design that was exported"]
    return []


def _tilt(err_panel: np.ndarray):
    """Dominant residual grating (cycles/pixel) of a phase difference, and its strength (0 … 1)."""
    f = np.fft.fft2(np.exp(1j * err_panel))
    k = np.unravel_index(np.argmax(np.abs(f)), f.shape)
    strength = float(np.abs(f[k]) / err_panel.size)
    fy = np.fft.fftfreq(err_panel.shape[0])[k[0]]
    fx = np.fft.fftfreq(err_panel.shape[1])[k[1]]
    return (float(fy), float(fx)), strength


def verify_slm(path, design: PhaseDesign, *, lut: Optional[PhaseLUT] = None,
               tolerances: Optional[Tolerances] = None) -> VerificationResult:
    """Verify an SLM bitmap against ``design`` (``lut``: the panel's LUT if it should be checked
    against another one than the export's, e.g. a newer calibration)."""
    p = Path(path)
    tol = tolerances or Tolerances()
    side = _read_sidecar(p, "phaseforge-slm-bitmap")
    freq = [0.0 if not q else 1.0 / float(q) for q in side["options"]["carrier_period_px"]]
    if any(abs(f) > 0.5 for f in freq):
        return VerificationResult(str(p), "slm", math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, -1, {},
                                  False, [f"carrier aliasing: carrier frequency {freq} cycles/pixel exceeds ½ (a "
                                          f"period under 2 pixels), so its first order lands at the alias "
                                          f"frequency; use |period| >= 2 pixels"], [])
    opt, dev = options_from_sidecar(side)
    causes: List[str] = _design_check(side, design)
    notes: List[str] = []
    b = int(side["bit_depth"])
    lv = np.asarray(side["lut"]["levels_rad"], dtype=np.float64)
    if sha256_array(lv.astype("<f8")) != side["lut"]["sha256"]:
        causes.append("LUT differs from the export's: the sidecar's LUT levels do not match their recorded SHA-256 "
                      "(the sidecar was edited)")
    mapping = map_to_panel(design, dev, opt, b)
    placed = side.get("placement", {})
    if (placed.get("top_px"), placed.get("left_px")) != (mapping.top, mapping.left):
        causes.append(f"placement differs: the sidecar puts the design's top-left at row {placed.get('top_px')}, "
                      f"column {placed.get('left_px')} but the centring convention (design pixel (h//2, w//2) on panel "
                      f"pixel (H//2, W//2) + offset) puts it at row {mapping.top}, column {mapping.left} (exports "
                      f"before this convention placed odd-sized designs one pixel up-left); export the design again")
    lut_read = mapping.lut_eff
    if lut is not None:
        if lut.bit_depth != b or not torch.equal(lut.levels_rad, mapping.lut.levels_rad):
            causes.append(f"LUT differs from the export's: verifying with a {lut.bit_depth}-bit LUT (sha "
                          f"{sha256_array(lut.levels_rad.numpy().astype('<f8'))[:12]}) but the bitmap was made for "
                          f"sha {side['lut']['sha256'][:12]}; export again with the panel's current LUT")
        if lut.bit_depth == b:
            lut_read = effective_lut(lut, lut_wavelength_m=mapping.lut_wavelength_m, wavelength_m=design.wavelength_m)
    try:
        gray = gray_from_stored(read_bitmap(p), b, side["justify"] if side["justify"] != "none" else "lsb", str(p))
    except FabricationError as exc:
        r = VerificationResult(str(p), "slm", math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, -1, {},
                               False, [f"file modified or corrupted: {exc}"], notes)
        return r
    if gray.shape != mapping.gray.shape:
        causes.append(f"file modified: the bitmap is {gray.shape[0]} x {gray.shape[1]} but the panel is "
                      f"{mapping.gray.shape[0]} x {mapping.gray.shape[1]}")
        return VerificationResult(str(p), "slm", math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, -1, {},
                                  False, causes, notes)
    if sha256_array(gray.astype("<u2")) != side["pixel_data"]["sha256"]:
        causes.append("file modified or corrupted: the pixel data do not match the SHA-256 in the sidecar")
    diff = gray != mapping.gray
    n_diff = int(diff.sum())
    if n_diff:
        causes.append(f"file modified or corrupted: {n_diff} pixel(s) differ from what the design maps to "
                      f"(first at {_first(diff)})")
        h, w = mapping.shape_on_slm
        ph_file = lut_read.gray_to_phase(torch.from_numpy(gray.astype(np.int64))).numpy()
        ph_int = mapping.lut_eff.gray_to_phase(torch.from_numpy(mapping.gray.astype(np.int64))).numpy()
        sl = (slice(mapping.top, mapping.top + h), slice(mapping.left, mapping.left + w))
        (fy, fx), strength = _tilt(ph_file[sl] - ph_int[sl])
        if strength > 0.5 and (fy or fx):
            causes.append(f"carrier mismatch: the file carries an extra grating of ({fy:.4g}, {fx:.4g}) cycles/pixel "
                          f"beyond the sidecar's carrier (another or an aliased period)")
    back = mapping.phase_on_design_grid(gray, design.shape, sign=opt.sign, lut_eff=lut_read)
    intended = mapping.phase_on_design_grid(mapping.gray, design.shape, sign=opt.sign)
    mapping_causes = []
    if not mapping.lut_eff.wraps:
        lvr = mapping.lut_eff.levels_rad.numpy()
        span = float(lvr[-1] - lvr[0])
        mapping_causes.append(
            f"LUT range too small: at λ = {design.wavelength_m:g} m the LUT spans {span:.4g} rad "
            f"(+ one step < 2π), so phases between {lvr[-1]:.4g} and {lvr[0] + TWO_PI:.4g} rad (mod 2π) cannot be "
            f"shown (largest gap {max_gap(mapping.lut_eff):.4g} rad); use a LUT calibrated to 2π at this wavelength")
    if opt.resample != "exact":
        mapping_causes.append(f"resampling: the pitch ratio {mapping.ratio:.6g} is not an integer and "
                              f"'{opt.resample}' interpolation changes the phase; design on a multiple of the SLM pitch")
    kw = {"file": str(p), "kind": "slm", "mismatched_pixels": n_diff}
    return _judge(kw, design=design, back=back, intended=intended, n_levels=2 ** b, tol=tol, causes=causes,
                  notes=notes, mapping_causes=mapping_causes)


def _design_levels(design: PhaseDesign, L):
    from .doe import quantize_levels
    return quantize_levels(design.phase_rad, L)


def verify_doe(out_dir, design: PhaseDesign, *, tolerances: Optional[Tolerances] = None) -> List[VerificationResult]:
    """Verify every file of a DOE export folder (TIFF, GDSII, grayscale PNG) against ``design``."""
    from .doe import FILES, gray_to_heights, heights_to_gray
    from .gds import read_layer_rasters

    out = Path(out_dir)
    tol = tolerances or Tolerances()
    side = _read_sidecar(out / FILES["sidecar"], "phaseforge-doe")
    m = side["material"]
    mat = materials.Material(name=m["name"], sellmeier_b=m.get("sellmeier_b"), sellmeier_c_um2=m.get("sellmeier_c_um2"),
                             constant_n=m.get("constant_n"), wavelength_range_m=m.get("wavelength_range_m"))
    lam = design.wavelength_m
    n0 = float(side["material"]["n_medium"])
    L = side["levels"]
    h2pi = float(side["material"]["h_2pi_m"])
    design_causes = _design_check(side, design)

    def to_phase(h_m):
        return materials.height_to_phase(torch.from_numpy(np.asarray(h_m, dtype=np.float64)), wavelength_m=lam,
                                        material=mat, n_medium=n0).numpy()

    if L is None:
        intended_h = np.mod(design.phase_rad, TWO_PI) * (h2pi / TWO_PI)
        levels_map = None
    else:
        levels_map = _design_levels(design, L)
        intended_h = levels_map * (h2pi / L)
    results = []
    files = side["files"]
    if "tiff" in files:
        import tifffile
        p = out / files["tiff"]["path"]
        causes, notes = list(design_causes), []
        try:
            h_um = tifffile.imread(p).astype(np.float64)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupted file
            results.append(VerificationResult(str(p), "tiff", math.nan, math.nan, math.nan, math.nan, math.nan,
                                              math.nan, -1, {}, False, [f"file modified or corrupted: {exc}"], notes))
            h_um = None
        if h_um is not None:
            exp32 = (intended_h * 1e6).astype(np.float32).astype(np.float64)
            if h_um.shape != design.shape:
                causes.append(f"file modified: TIFF shape {h_um.shape} differs from the design's {design.shape}")
                results.append(VerificationResult(str(p), "tiff", math.nan, math.nan, math.nan, math.nan, math.nan,
                                                  math.nan, -1, {}, False, causes, notes))
            else:
                diff = h_um != exp32  # the export wrote exactly these float32 values
                if diff.any():
                    causes.append(f"file modified or corrupted: {int(diff.sum())} height(s) differ from the design's "
                                  f"(first at {_first(diff)})")
                kw = {"file": str(p), "kind": "tiff", "mismatched_pixels": int(diff.sum())}
                results.append(_judge(kw, design=design, back=to_phase(h_um * 1e-6),
                                      intended=to_phase(exp32 * 1e-6), n_levels=L, tol=tol, causes=causes, notes=notes))
    if "gray" in files:
        from .bitmap import read_bitmap
        p = out / files["gray"]["path"]
        causes, notes = list(design_causes), []
        curve = (np.asarray(files["gray"]["dose_curve_gray"]), np.asarray(files["gray"]["dose_curve_height_um"]))
        want_g = heights_to_gray(intended_h * 1e6, curve, int(files["gray"]["bits"]))
        try:
            g = read_bitmap(p).astype(np.int64)
        except FabricationError as exc:
            g = None
            results.append(VerificationResult(str(p), "gray", math.nan, math.nan, math.nan, math.nan, math.nan,
                                              math.nan, -1, {}, False, [f"file modified or corrupted: {exc}"], notes))
        if g is not None:
            diff = g != want_g
            if diff.any():
                causes.append(f"file modified or corrupted: {int(diff.sum())} gray value(s) differ (first at {_first(diff)})")
            kw = {"file": str(p), "kind": "gray", "mismatched_pixels": int(diff.sum())}
            gstep = np.abs(np.diff(curve[1]) / np.diff(curve[0])).max() * 1e-6  # height per gray step, m
            n_eff = L if L else (int(round(h2pi / gstep)) if gstep > 0 else None)
            results.append(_judge(kw, design=design, back=to_phase(gray_to_heights(g, curve) * 1e-6),
                                  intended=to_phase(gray_to_heights(want_g, curve) * 1e-6), n_levels=n_eff, tol=tol,
                                  causes=causes, notes=notes))
    if "gds" in files:
        g = files["gds"]
        p = out / g["path"]
        causes, notes = list(design_causes), []
        table = np.genfromtxt(out / files["levels_csv"]["path"], delimiter=",", names=True)
        level_height_m = {int(r["level"]): float(r["height_um"]) * 1e-6 for r in np.atleast_1d(table)}
        layer0 = int(g["layer0"])
        k = int(round(math.log2(L))) if g["mode"] == "etch" else 0
        layers = list(range(layer0, layer0 + (k if g["mode"] == "etch" else L)))
        try:
            rasters = read_layer_rasters(p, design.shape, cell_um=float(g["cell_size_um"]), layers=layers)
        except FabricationError as exc:
            rasters = None
            results.append(VerificationResult(str(p), "gds", math.nan, math.nan, math.nan, math.nan, math.nan,
                                              math.nan, -1, {}, False, [f"file modified or corrupted: {exc}"], notes))
        if rasters is not None:
            if g["mode"] == "levels":
                stack = np.stack([rasters[l] for l in layers])
                cover = stack.sum(0)
                if (cover != 1).any():
                    causes.append(f"layout broken: {int((cover == 0).sum())} cell(s) on no layer, "
                                  f"{int((cover > 1).sum())} on several (first at {_first(cover != 1)})")
                lv = np.argmax(stack, axis=0)
            else:
                m = np.zeros(design.shape, dtype=np.int64)
                for j, layer in enumerate(layers, start=1):
                    m |= rasters[layer].astype(np.int64) << (k - j)
                lv = (L - 1) - m
            diff = lv != levels_map
            if diff.any():
                causes.append(f"file modified or corrupted: {int(diff.sum())} cell(s) have another level than the "
                              f"design's (first at {_first(diff)})")
            hmap = np.vectorize(level_height_m.get, otypes=[np.float64])(lv)
            kw = {"file": str(p), "kind": "gds", "mismatched_pixels": int(diff.sum())}
            results.append(_judge(kw, design=design, back=to_phase(hmap), intended=to_phase(levels_map * (h2pi / L)),
                                  n_levels=L, tol=tol, causes=causes, notes=notes))
    return results


def verify_path(path, *, design: Optional[PhaseDesign] = None, lut: Optional[PhaseLUT] = None,
                tolerances: Optional[Tolerances] = None) -> List[VerificationResult]:
    """Verify an export (a bitmap or a DOE folder) against its design (default: reloaded from the
    source recorded in the sidecar)."""
    p = Path(path)
    with malformed_file(p, FabricationError, what="export (bitmap or DOE folder, with its sidecar)"):
        return _verify_path(p, design, lut, tolerances)


def _verify_path(p: Path, design, lut, tolerances) -> List[VerificationResult]:
    if p.is_dir():
        side = _read_sidecar(p / "doe.json", "phaseforge-doe")
    else:
        side = _read_sidecar(p, "phaseforge-slm-bitmap")
    if design is None:
        d = side["design"]
        design = load_design(d["source"], index=d["index"], pixel_pitch_m=d["pixel_pitch_m"],
                             wavelength_m=d["wavelength_m"],
                             phase_per_gray_rad=d.get("provenance", {}).get("phase_per_gray_rad"),
                             z_m=d.get("z_m"), method=d.get("method"))
    if p.is_dir():
        return verify_doe(p, design, tolerances=tolerances)
    return [verify_slm(p, design, lut=lut, tolerances=tolerances)]


def raise_on_failure(results: List[VerificationResult]) -> None:
    bad = [r for r in results if not r.passed]
    if bad:
        raise VerificationError("verification failed:\n  " + "\n  ".join(r.summary() for r in bad), result=bad)
