"""CALIBRATION.h5: the one writer/reader of calibration results.

Layout (every physical quantity a dataset with a ``units`` attribute; a fitted or measured
scalar also carries ``std`` (1σ, same units) and, for fitted parameters, ``nominal``,
``lower``, ``upper``):

====================================  =========================================================
``/`` attrs                           ``format = "phaseforge-calibration"``, ``format_version``,
                                      ``created`` (ISO-8601), ``software``, ``capture_file``,
                                      ``capture_sha256`` (SHA-256 of the capture file's bytes),
                                      ``capture_created``, ``instrument``, ``camera_serial``,
                                      ``slm_serial``
``/instrument/*``                     wavelength_m, camera_pitch_m, slm_pitch_m, slm_bit_depth
                                      (copied from the capture)
``/camera/<name>``                    gain_dn_per_e (DN/e-), gain_e_per_dn (e-/DN),
                                      read_noise_e (e-), dark_current_e_per_s (e-/s),
                                      offset_dn (DN), dsnu_e (e-), prnu (1),
                                      saturation_capacity_e (e-), bit_depth (1);
                                      maps dark_offset_map_dn, dark_slope_map_dn_per_s,
                                      flat_map, bad_pixels
``/camera/ptc/*``                     exposure_s, mean_dn, var_dn2, used (the PTC points)
``/lut/gray``, ``/lut/phase_rad``,    the tabulated LUT for every gray level, written and read
``/lut/phase_std_rad``                by :mod:`optics.lutfile` (so ``phaseforge export slm --lut
                                      CALIBRATION.h5`` reads it without importing calibration);
                                      attrs wavelength_m, method, chi2_reduced, degree;
                                      ``/lut/measured_*`` the data
``/fit/<param>``                      (attrs std, std_jackknife when computed, nominal, lower,
                                      upper, fixed) distance_m, magnification, rotation_rad, shift_x_m,
                                      shift_y_m, crosstalk_sigma_m, intensity_scale,
                                      background_e
``/fit/residuals``                    normalised residual maps (P, H, W), units "1"
``/quality/<name>``                   chi2_reduced, pearson_r_min, heldout_* (nominal vs
                                      calibrated), registration_quality, … (units "1")
====================================  =========================================================

Writes are atomic (``name.tmp`` then rename); the reader checks the format and reports every
missing piece at once.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from optics.errors import LUTError
from optics.fileio import atomic_path, malformed_file, refuse_foreign_data
from optics.lutfile import read_lut_group, write_lut_group
from optics.sensor import Sensor
from optics.slm import PhaseLUT

from .errors import CalibrationFileError

__all__ = ["FORMAT", "Calibration", "write_calibration", "read_calibration"]

FORMAT = "phaseforge-calibration"
FORMAT_VERSION = 1
CAMERA_UNITS = {"gain_dn_per_e": "DN/e-", "gain_e_per_dn": "e-/DN", "read_noise_e": "e-",
                "dark_current_e_per_s": "e-/s", "offset_dn": "DN", "dsnu_e": "e-", "prnu": "1",
                "saturation_capacity_e": "e-", "bit_depth": "1"}
FIT_UNITS = {"distance_m": "m", "magnification": "1", "rotation_rad": "rad", "shift_x_m": "m", "shift_y_m": "m",
             "crosstalk_sigma_m": "m", "intensity_scale": "e-/arb", "background_e": "e-"}


@dataclass
class Calibration:
    path: str
    attrs: Dict[str, str]
    instrument: Dict[str, float]
    camera: Dict[str, float]
    camera_std: Dict[str, float]
    lut_gray: np.ndarray
    lut_phase_rad: np.ndarray
    lut_phase_std_rad: np.ndarray
    fit: Dict[str, float]
    fit_std: Dict[str, float]
    fit_nominal: Dict[str, float]
    quality: Dict[str, float]
    residuals: Optional[np.ndarray] = None
    maps: Dict[str, np.ndarray] = field(default_factory=dict)
    lut_wavelength_m: Optional[float] = None   # the wavelength the LUT was measured at

    def phase_lut(self) -> PhaseLUT:
        bits = int(round(np.log2(len(self.lut_gray))))
        return PhaseLUT.tabulated(self.lut_gray, self.lut_phase_rad, bit_depth=bits)

    def sensor(self, *, exposure_s: float = 1e-3, mean_photons: Optional[float] = None) -> Sensor:
        """The measured camera as :class:`optics.sensor.Sensor` (QE 1: inputs in electrons)."""
        c = self.camera
        return Sensor(quantum_efficiency=1.0, mean_photons=mean_photons, read_noise_e=c["read_noise_e"],
                      dark_current_e_per_s=max(c["dark_current_e_per_s"], 0.0), exposure_s=exposure_s,
                      gain_e_per_dn=c["gain_e_per_dn"], offset_dn=c["offset_dn"], bit_depth=int(c["bit_depth"]),
                      full_well_e=c["saturation_capacity_e"])


def _scalar(g, name, value, units, **attrs):
    ds = g.create_dataset(name, data=value)
    ds.attrs["units"] = units
    for k, v in attrs.items():
        if v is not None:
            ds.attrs[k] = v
    return ds


def write_calibration(path, *, camera, lut, fit, quality: Dict[str, float], capture, software: str,
                      overwrite: bool = False) -> Path:
    """Write CALIBRATION.h5 from a :class:`~calibration.camera.CameraModel`, a
    :class:`~calibration.lut.LUTResult`, a :class:`~calibration.fit.FitResult`, the quality
    numbers and the :class:`~calibration.capture.Capture` (provenance, hash, instrument)."""
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise CalibrationFileError(f"{path} exists; pass --overwrite to replace it")
    with atomic_path(path, keep_partial=False) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["software"] = software
            f.attrs["capture_file"] = str(Path(capture.path).resolve())
            f.attrs["capture_sha256"] = capture.sha256
            for k in ("created", "instrument", "camera_serial", "slm_serial"):
                f.attrs[f"capture_{k}" if k == "created" else k] = str(capture.provenance.get(k) or "")
            ig = f.create_group("instrument")
            for k in ("wavelength_m", "camera_pitch_m", "slm_pitch_m"):
                _scalar(ig, k, capture.instrument[k], "m")
            _scalar(ig, "slm_bit_depth", int(capture.instrument["slm_bit_depth"]), "1")
            cg = f.create_group("camera")
            summ = {"gain_dn_per_e": camera.gain_dn_per_e, "gain_e_per_dn": camera.gain_e_per_dn,
                    "read_noise_e": camera.read_noise_e, "dark_current_e_per_s": camera.dark_current_e_per_s,
                    "offset_dn": camera.offset_dn, "dsnu_e": camera.dsnu_e, "prnu": camera.prnu,
                    "saturation_capacity_e": camera.saturation_capacity_e, "bit_depth": camera.bit_depth}
            std = dict(camera.std)
            std["gain_e_per_dn"] = camera.std["gain_dn_per_e"] / camera.gain_dn_per_e ** 2
            for k, v in summ.items():
                _scalar(cg, k, v, CAMERA_UNITS[k], std=std.get(k))
            cg.attrs["method"] = "EMVA 1288 release 4.0 photon transfer (pair differences)"
            cg.attrs["quantum_efficiency"] = "not measured (no calibrated photon source); simulate in electrons"
            for k, units in (("dark_offset_map_dn", "DN"), ("dark_slope_map_dn_per_s", "DN/s"), ("flat_map", "1")):
                d = cg.create_dataset(k, data=getattr(camera, k), compression="gzip")
                d.attrs["units"] = units
            d = cg.create_dataset("bad_pixels", data=camera.bad_pixels.astype(np.uint8), compression="gzip")
            d.attrs["units"] = "1"
            pg = cg.create_group("ptc")
            for k, units in (("exposure_s", "s"), ("mean_dn", "DN"), ("var_dn2", "DN^2")):
                _scalar(pg, k, np.array([getattr(p, k) for p in camera.ptc]), units)
            _scalar(pg, "used", np.array([p.used for p in camera.ptc], dtype=np.uint8), "1")
            lg = f.create_group("lut")
            write_lut_group(lg, lut.gray, lut.phase_rad, phase_std_rad=lut.phase_std_rad,
                            wavelength_m=capture.instrument["wavelength_m"])
            _scalar(lg, "measured_gray", np.asarray(lut.measured_gray), "gray")
            _scalar(lg, "measured_harmonic", np.asarray(lut.measured_h), "1")
            _scalar(lg, "measured_harmonic_std", np.asarray(lut.measured_h_std), "1")
            lg.attrs["method"] = ("binary gratings vs gray 0: 2/period intensity harmonic = C·M(Δφ) with the crosstalk-"
                                  "blurred grating law; monotone Bernstein fit, φ(0) = 0, φ(max) <= 2π"
                                  + ("; refined jointly with the physical-parameter fit (random frames + gratings)"
                                     if lut.extra.get("joint") else ""))
            lg.attrs["chi2_reduced"] = lut.chi2_reduced
            lg.attrs["degree"] = lut.degree
            fg = f.create_group("fit")
            for k, v in fit.values.items():
                lo, hi = fit.bounds.get(k, (None, None))
                _scalar(fg, k, v, FIT_UNITS[k], std=fit.std.get(k), nominal=fit.nominal.get(k), lower=lo, upper=hi,
                        fixed=int(k in fit.fixed), std_jackknife=fit.std_jackknife.get(k))
            d = fg.create_dataset("residuals", data=np.asarray(fit.residuals, dtype=np.float32), compression="gzip")
            d.attrs["units"] = "1"
            d.attrs["meaning"] = "(data − model)/sqrt(model + read_noise²) per fit frame; NaN = masked pixel"
            fg.attrs["model"] = "near-field CDP: LUT phase, Gaussian crosstalk, ASM propagation, similarity map to the camera"
            qg = f.create_group("quality")
            for k, v in quality.items():
                _scalar(qg, k, float(v), "1")
    return path


def write_example_calibration(path, *, capture_path, software: str, quality: Optional[Dict[str, float]] = None,
                              jackknife: bool = True):
    """A CALIBRATION.h5 with **made-up** values (4×4 camera maps, a linear 8-bit LUT 0…2π, every fit
    parameter 1 ± 0.1) written by :func:`write_calibration` — the same writer as ``phaseforge
    calibrate``, in a second instead of a real fit. For file-format documentation and reader tests
    only: it describes no instrument (``software`` says where it came from). Returns the LUT it
    wrote (``gray``, ``phase_rad``, ``phase_std_rad``) so a caller can also write the LUT CSV."""
    import math
    import types
    ns = types.SimpleNamespace
    m = np.ones((4, 4))
    camera = ns(gain_dn_per_e=0.5, gain_e_per_dn=2.0, read_noise_e=3.0, dark_current_e_per_s=1.0, offset_dn=10.0,
                dsnu_e=0.1, prnu=0.01, saturation_capacity_e=1e4, bit_depth=12,
                std={"gain_dn_per_e": 0.01, "read_noise_e": 0.1}, dark_offset_map_dn=m * 10,
                dark_slope_map_dn_per_s=m * 0, flat_map=m, bad_pixels=m * 0,
                ptc=[ns(exposure_s=t, mean_dn=100 * t, var_dn2=50 * t, used=True) for t in (0.001, 0.002)])
    gray = np.arange(256)
    lut = ns(gray=gray, phase_rad=gray * 2 * math.pi / 256, phase_std_rad=gray * 0 + 0.01,
             measured_gray=gray[::32], measured_h=gray[::32] / 256, measured_h_std=gray[::32] * 0 + 0.01,
             extra={}, chi2_reduced=1.0, degree=6)
    vals = {k: 1.0 for k in FIT_UNITS}
    fit = ns(values=vals, bounds={k: (0.0, 2.0) for k in vals}, std={k: 0.1 for k in vals}, nominal=vals,
             fixed=(), std_jackknife={k: 0.1 for k in vals} if jackknife else {}, residuals=np.zeros((1, 4, 4)))
    capture = ns(path=str(capture_path), sha256="0" * 64, provenance={"instrument": software},
                 instrument={"wavelength_m": 633e-9, "camera_pitch_m": 5e-6, "slm_pitch_m": 8e-6, "slm_bit_depth": 8})
    write_calibration(path, camera=camera, lut=lut, fit=fit, quality=dict(quality or {"r": 0.9}), capture=capture,
                      software=software)
    return lut


def read_calibration(path) -> Calibration:
    """Read CALIBRATION.h5 (read-only); :class:`CalibrationFileError` lists every problem."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"calibration file {path} does not exist; create it with `phaseforge calibrate`")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CalibrationFileError(f"{path} is not a readable HDF5 file (truncated or another format): {exc}") from exc
    problems = []
    with f, malformed_file(path, CalibrationFileError, what="calibration file"):
        refuse_foreign_data(f, path, CalibrationFileError, what="a calibration file")
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT:
            raise CalibrationFileError(f"{path}: format attribute is {fmt!r}, expected {FORMAT!r} (a file from another "
                                       f"program, or a capture file — calibrate it first)")
        for g, names in (("camera", CAMERA_UNITS), ("fit", FIT_UNITS)):
            for k, u in names.items():
                ds = f.get(f"{g}/{k}")
                if ds is None:
                    problems.append(f"/{g}/{k} is missing")
                elif ds.attrs.get("units") != u:
                    problems.append(f"/{g}/{k} has units {ds.attrs.get('units')!r}, expected {u!r}")
        for k in ("gray", "phase_rad", "phase_std_rad"):
            if f.get(f"lut/{k}") is None:
                problems.append(f"/lut/{k} is missing")
        if problems:
            raise CalibrationFileError(f"{path}: incomplete calibration file:\n  - " + "\n  - ".join(problems))
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
        cam = {k: float(f[f"camera/{k}"][()]) for k in CAMERA_UNITS}
        cam_std = {k: float(f[f"camera/{k}"].attrs["std"]) for k in CAMERA_UNITS if "std" in f[f"camera/{k}"].attrs}
        fit = {k: float(f[f"fit/{k}"][()]) for k in FIT_UNITS}
        fit_std = {k: float(f[f"fit/{k}"].attrs.get("std", np.nan)) for k in FIT_UNITS}
        fit_nom = {k: float(f[f"fit/{k}"].attrs["nominal"]) for k in FIT_UNITS if "nominal" in f[f"fit/{k}"].attrs}
        quality = {k: float(ds[()]) for k, ds in f["quality"].items()} if "quality" in f else {}
        instrument = {k: float(ds[()]) for k, ds in f["instrument"].items()} if "instrument" in f else {}
        try:
            table = read_lut_group(f["lut"], source=f"{path}:/lut")
        except LUTError as exc:
            raise CalibrationFileError(str(exc)) from None
        maps = {k: f[f"camera/{k}"][()] for k in ("dark_offset_map_dn", "dark_slope_map_dn_per_s", "flat_map", "bad_pixels")
                if f"camera/{k}" in f}
        return Calibration(path=str(path), attrs=attrs, instrument=instrument, camera=cam, camera_std=cam_std,
                           lut_gray=table.gray, lut_phase_rad=table.phase_rad,
                           lut_phase_std_rad=table.phase_std_rad, fit=fit, fit_std=fit_std,
                           fit_nominal=fit_nom, quality=quality,
                           residuals=f["fit/residuals"][()] if "fit/residuals" in f else None, maps=maps,
                           lut_wavelength_m=table.wavelength_m)
