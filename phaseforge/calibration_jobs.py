"""Calibration jobs behind the CLI: ``calibrate`` (capture file → CALIBRATION.h5 + report),
the calibration → configuration overrides used by ``simulate --calibration``, and the demo step.

``calibrate`` runs, in order: capture validation; EMVA camera characterisation; frame
correction to electrons; the LUT from the grating frames at the nominal geometry; the
multistart physical-parameter fit on the random-pattern frames (all but the last
``n_heldout``); the LUT again at the fitted distance/magnification/rotation (the grating law
with crosstalk depends on the distance); a second fit from the first one's values with the
refined LUT, coarse then fine model, whose uncertainties are the fine fit's statistical ones and
its change from the coarse fit in quadrature (:func:`calibration.fit.with_model_error`); the
held-out comparison of the nominal and calibrated simulators; the
registration quality of the calibrated model; then CALIBRATION.h5, its LUT as
``CALIBRATION_lut.csv`` (:func:`lut_csv_path`) and the report folder.
A failed step raises (no calibration file is written).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from optics.fileio import write_text
from optics.lutfile import write_lut_csv

from . import __version__

SAMPLE_CAPTURE = Path(__file__).resolve().parents[1] / "data" / "sample_capture.h5"


def calibrate(capture_path, out_path, *, report_dir=None, n_heldout: int = 2, overwrite: bool = False,
              progress: bool = True, n_starts: int = 7, distance_range: float = 0.12,
              refine_iters: int = 60, jackknife_frames: bool = False) -> Dict:
    from calibration.calibfile import write_calibration
    from calibration.camera import characterize_camera
    from calibration.capture import read_capture
    from calibration.errors import CalibrationError, FitError
    from calibration.fit import evaluate, fit_parameters, geometry_for, jackknife, refined_lut, with_model_error
    from calibration.lut import lut_from_capture
    from calibration.registration import register
    from calibration.report import write_report

    t0 = time.perf_counter()
    if isinstance(n_starts, bool) or not isinstance(n_starts, int) or n_starts < 1:
        raise CalibrationError(f"--starts = {n_starts!r}: the multistart fit needs at least one distance start "
                               f"(n_starts >= 1; the default is 7); pass --starts 1 or more")
    if not (isinstance(distance_range, (int, float)) and 0 <= distance_range < 1):
        raise CalibrationError(f"--distance-range = {distance_range!r}: the starts span nominal × (1 ± range), so it "
                               f"must be in [0, 1); the default is 0.12")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)  # the output-folder policy
    lut_csv = lut_csv_path(out_path)
    for p in (out_path, lut_csv):
        if p.exists() and not overwrite:
            raise CalibrationError(f"{p} exists; pass --overwrite to replace it")
    report_dir = Path(report_dir) if report_dir is not None else out_path.with_name(out_path.stem + "_report")
    stages = {}

    def lap(name):
        stages[name] = round(time.perf_counter() - t0 - sum(stages.values()), 3)

    cap = read_capture(capture_path)
    camera = characterize_camera(cap)
    e = camera.correct(cap.frames, cap.exposure_s)
    lap("read_and_camera")
    ins = cap.instrument
    idx = cap.indices(0, kind="random")
    if idx.size < n_heldout + 2:
        raise FitError(f"{cap.path}: {idx.size} random-pattern sample frame(s); the fit needs >= 2 plus "
                       f"{n_heldout} held out — capture more random patterns (pattern kind 'random')")
    fit_idx, held_idx = idx[:idx.size - n_heldout], idx[idx.size - n_heldout:]
    pats = lambda ii: [cap.patterns[cap.pattern_id[i]].gray for i in ii]  # noqa: E731
    # coarse model (4 µm-class grid, Gaussian pixel) for the multistart distance search, fine model
    # (half the pitch, 3×3 box sub-samples per camera pixel) for the final fit and the validation
    geo_coarse = geometry_for(ins, cap.shape, pats(idx), upsample=2, pixel_subsamples=0)
    geo = geometry_for(ins, cap.shape, pats(idx), upsample=4, pixel_subsamples=3)
    lut1 = lut_from_capture(cap, e)
    lap("lut_nominal")
    nominal = {"distance_m": ins["distance_m"], "magnification": ins.get("magnification", 1.0), "rotation_rad": 0.0,
               "shift_x_m": 0.0, "shift_y_m": 0.0, "crosstalk_sigma_m": lut1.extra.get("crosstalk_sigma_m", 0.0)}
    fit1 = fit_parameters(geo_coarse, pats(fit_idx), e[fit_idx], lut_phase_rad=lut1.phase_rad, nominal=nominal,
                          read_noise_e=camera.read_noise_e, n_starts=n_starts, distance_range=distance_range,
                          refine_iters=40, progress=progress, check=False)  # the LUT is provisional here
    lap("fit_multistart_coarse")
    # the blurred-grating law depends on the distance and the crosstalk, which the grating frames
    # alone cannot always tell from the LUT shape: refit the LUT at the fitted geometry as a start,
    # then free it inside the fit (random frames + grating harmonics together), coarse then fine
    v = fit1.values
    lut = lut_from_capture(cap, e, distance_m=v["distance_m"], magnification=v["magnification"],
                           rotation_rad=v["rotation_rad"])
    fit, fits, bases = fit1, [], []
    for g in (geo_coarse, geo):
        fit = fit_parameters(g, pats(fit_idx), e[fit_idx], lut_phase_rad=lut.phase_rad, nominal=nominal,
                             read_noise_e=camera.read_noise_e, start=fit.values, distance_range=distance_range,
                             refine_iters=refine_iters, check=False, joint_lut=lut)
        fits.append(fit)
        bases.append(lut)
        lut = refined_lut(lut, fit)
    # uncertainties that cover the model error too: the fine fit's statistical σ and its change
    # from the coarse fit (twice the grid pitch) in quadrature (calibration.fit.with_model_error)
    fit = with_model_error(fits[1], fits[0])
    lut = refined_lut(bases[1], fit)
    if fit.problems:
        raise FitError("physical-parameter fit failed: " + "; ".join(fit.problems))
    lap("lut_and_fit_fine")
    if jackknife_frames:
        fit.std_jackknife = jackknife(geo, pats(fit_idx), e[fit_idx], fit, lut_phase_rad=lut.phase_rad,
                                      read_noise_e=camera.read_noise_e, progress=progress)
        lap("jackknife")
    fit.start_losses = fit1.start_losses
    fit.n_starts = fit1.n_starts
    # held-out frames: the nominal simulator (nominal geometry, linear 2π LUT, no crosstalk) vs calibrated
    bits = int(ins["slm_bit_depth"])
    linear = np.arange(2 ** bits) * (2 * math.pi / 2 ** bits)
    nom_vals = dict(nominal, crosstalk_sigma_m=0.0)
    held_nom = evaluate(geo, pats(held_idx), e[held_idx], lut_phase_rad=linear, values=nom_vals,
                        read_noise_e=camera.read_noise_e)
    held_cal = evaluate(geo, pats(held_idx), e[held_idx], lut_phase_rad=lut.phase_rad, values=fit.values,
                        read_noise_e=camera.read_noise_e)
    if not held_cal["chi2_reduced"] < held_nom["chi2_reduced"]:
        raise FitError(f"the calibrated simulator reproduces the held-out frames no better than the nominal one "
                       f"(reduced χ² {held_cal['chi2_reduced']:.4g} vs {held_nom['chi2_reduced']:.4g}); not writing a "
                       f"misleading calibration — check the frames and the pattern ids")
    reg = register(fit.data_e[0], fit.model_e[0], kind="similarity", raise_on_poor=False)
    bg_idx = cap.indices(4)
    quality = {"chi2_reduced": fit.chi2_reduced, "pearson_r_min": min(fit.pearson_r),
               "pearson_r_mean": float(np.mean(fit.pearson_r)),
               "heldout_chi2_nominal": held_nom["chi2_reduced"], "heldout_chi2_calibrated": held_cal["chi2_reduced"],
               "heldout_pearson_nominal": held_nom["pearson_r"], "heldout_pearson_calibrated": held_cal["pearson_r"],
               "registration_quality": reg.quality, "registration_residual_shift_px": float(np.hypot(*reg.centred(cap.shape)[2])),
               "lut_chi2_reduced": lut.chi2_reduced, "n_fit_frames": len(fit_idx), "n_heldout_frames": len(held_idx),
               "n_distance_starts": fit.n_starts, "n_bad_pixels": int(camera.bad_pixels.sum()),
               "background_frame_mean_e": float(np.nanmean(e[bg_idx])) if bg_idx.size else float("nan")}
    lap("validation")
    write_calibration(out_path, camera=camera, lut=lut, fit=fit, quality=quality, capture=cap,
                      software=f"phaseforge {__version__}", overwrite=overwrite)
    write_lut_csv(lut_csv, lut.gray, lut.phase_rad, phase_std_rad=lut.phase_std_rad,
                  wavelength_m=ins["wavelength_m"],
                  comments=[f"SLM gray -> phase LUT from `phaseforge calibrate` ({out_path.name}, /lut)",
                            f"capture {Path(cap.path).name} sha256 {cap.sha256}",
                            "phase_std_rad: 1 sigma, statistical and model-resolution parts in quadrature; "
                            "read by `phaseforge export slm --lut`"])
    truth_lut, truth = _truth(cap.path)
    numbers = {"capture": str(cap.path), "capture_sha256": cap.sha256, "calibration": str(out_path),
               "lut_csv": str(lut_csv),
               "camera": camera.summary(),
               "fit": {k: {"value": v, "std": fit.std.get(k), "std_statistical": fit.std_statistical.get(k),
                           "std_model": fit.std_model.get(k), "std_jackknife": fit.std_jackknife.get(k),
                           "nominal": fit.nominal.get(k)} for k, v in fit.values.items()},
               "lut": {"chi2_reduced": lut.chi2_reduced, "crosstalk_sigma_m": lut.extra.get("crosstalk_sigma_m"),
                       "max_phase_rad": float(lut.phase_rad[-1]), "max_phase_std_rad": float(lut.phase_std_rad.max()),
                       "max_phase_std_model_rad": float(np.max(fit.lut.get("phase_std_model_rad", np.zeros(1))))},
               "quality": quality, "distance_starts": [{"z_m": z, "loss": L} for z, L in fit.start_losses],
               "seconds": time.perf_counter() - t0, "stage_seconds": stages}
    if truth:
        numbers["truth_comparison"] = _compare(truth, truth_lut, camera, fit, lut)
    figs = write_report(report_dir, camera=camera, lut=lut, fit=fit, numbers=numbers,
                        registration_quality=reg.quality, truth_lut=truth_lut)
    numbers["report"] = figs
    return numbers


def lut_csv_path(calibration_path) -> Path:
    """``CALIBRATION_lut.csv`` beside ``CALIBRATION.h5``: the LUT (``gray,phase_rad,phase_std_rad``
    with the wavelength) that ``phaseforge export slm --lut`` and SLM vendor software read."""
    p = Path(calibration_path)
    return p.with_name(p.stem + "_lut.csv")


def _truth(path) -> Tuple[Optional[np.ndarray], Dict[str, float]]:
    """The ``/truth`` group of a synthetic capture (never used by the calibration itself)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "truth" not in f:
            return None, {}
        g = f["truth"]
        return (g["lut_phase_rad"][()] if "lut_phase_rad" in g else None,
                {k: float(ds[()]) for k, ds in g.items() if ds.ndim == 0})


def _compare(truth, truth_lut, camera, fit, lut) -> Dict[str, Dict[str, float]]:
    out = {}
    pairs = [("distance_m", fit.values["distance_m"]), ("magnification", fit.values["magnification"]),
             ("rotation_rad", fit.values["rotation_rad"]), ("shift_x_m", fit.values["shift_x_m"]),
             ("shift_y_m", fit.values["shift_y_m"]), ("crosstalk_sigma_m", fit.values["crosstalk_sigma_m"]),
             ("gain_dn_per_e", camera.gain_dn_per_e), ("read_noise_e", camera.read_noise_e),
             ("dark_current_e_per_s", camera.dark_current_e_per_s), ("offset_dn", camera.offset_dn),
             ("prnu", camera.prnu)]
    for k, v in pairs:
        if k in truth:
            t = truth[k]
            out[k] = {"fitted": v, "truth": t, "relative_error": (v - t) / t if t else float("nan")}
    if truth_lut is not None and len(truth_lut) == len(lut.phase_rad):
        out["lut_rms_error_rad"] = {"value": float(np.sqrt(np.mean((lut.phase_rad - truth_lut) ** 2)))}
    return out


# ------------------------------------------------------------------------------------------------
# simulate --calibration
# ------------------------------------------------------------------------------------------------
def calibration_overrides(path) -> Tuple[List[str], Dict[str, str]]:
    """Config overrides (``key.path=value``) from CALIBRATION.h5 and, for each key, where it
    came from. Applied: the fitted distance, the measured camera (sensor.*), the LUT and the
    crosstalk width (slm.*, used when ``slm.enabled``). What has no simulator setting is listed
    by :func:`calibration_not_applied`."""
    from calibration.calibfile import read_calibration

    cal = read_calibration(path)
    c = cal.camera
    src = f"{Path(path).name} (capture sha256 {cal.attrs.get('capture_sha256', '')[:12]}…)"
    vals = {
        "optics.z_m": cal.fit["distance_m"],
        "slm.crosstalk_sigma_m": cal.fit["crosstalk_sigma_m"],
        "slm.bit_depth": int(round(math.log2(len(cal.lut_gray)))),
        "slm.lut.gray": [int(g) for g in cal.lut_gray],
        "slm.lut.phase_rad": [float(p) for p in cal.lut_phase_rad],
        "sensor.quantum_efficiency": 1.0,
        "sensor.gain_e_per_dn": c["gain_e_per_dn"],
        "sensor.read_noise_e": c["read_noise_e"],
        "sensor.dark_current_e_per_s": max(c["dark_current_e_per_s"], 0.0),
        "sensor.offset_dn": c["offset_dn"],
        "sensor.bit_depth": int(c["bit_depth"]),
        "sensor.full_well_e": c["saturation_capacity_e"],
    }
    if "wavelength_m" in cal.instrument:
        vals["optics.wavelength_m"] = cal.instrument["wavelength_m"]
    overrides = [f"{k}={json.dumps(v)}" for k, v in vals.items()]  # JSON is YAML
    sources = {k: src for k in vals}
    return overrides, sources


def calibration_not_applied(path) -> List[Tuple[List[str], str]]:
    """The calibrated values ``simulate --calibration`` does **not** apply: groups of
    ``["key = value", …]`` with the reason (no simulator setting, or a setting that belongs to
    the simulation's own geometry)."""
    from calibration.calibfile import read_calibration

    cal = read_calibration(path)
    f, c, ins = cal.fit, cal.camera, cal.instrument
    out = [([f"fit.magnification = {f['magnification']:.6g}", f"fit.rotation_rad = {f['rotation_rad']:.6g} rad",
             f"fit.shift_x_m = {f['shift_x_m']:.6g} m", f"fit.shift_y_m = {f['shift_y_m']:.6g} m"],
            "bench camera placement relative to the SLM; the simulated detector samples the propagated field on "
            "its own grid; there is no camera magnification, rotation or shift setting"),
           ([f"fit.intensity_scale = {f['intensity_scale']:.6g} e-/arb"],
            "illumination brightness of the capture; the simulation's is sensor.mean_photons"),
           ([f"fit.background_e = {f['background_e']:.6g} e-"], "stray light on the bench; the sensor model has none"),
           ([f"camera.dsnu_e = {c['dsnu_e']:.3g} e-", f"camera.prnu = {c['prnu']:.3g}",
             "camera dark/flat/defect maps"], "the sensor model has no fixed-pattern noise or defects")]
    pitches = [f"instrument.{k} = {ins[k]:.6g} m" for k in ("slm_pitch_m", "camera_pitch_m") if k in ins]
    if pitches:
        out.append((pitches, "the simulation grid is the config's; set slm.pixel_pitch_m / sensor.pitch_m to match "
                             "the bench if wanted"))
    return out


def simulate_overrides(path) -> List[str]:
    """The overrides for ``simulate --calibration PATH`` (empty when ``path`` is None)."""
    if path is None:
        return []
    return calibration_overrides(path)[0]


def calibration_summary(calibration_path, user_overrides=()) -> List[str]:
    """Lines for the ``simulate`` output: which calibrated values were applied (keys overridden
    again by ``--set`` excluded) and which were not, with why."""
    if calibration_path is None:
        return []
    _, sources = calibration_overrides(calibration_path)
    user = {o.split("=", 1)[0].strip() for o in user_overrides or ()}
    applied = [k for k in sources if k not in user]
    lines = [f"from {Path(calibration_path).name} applied: {', '.join(applied)}"]
    if user & set(sources):
        lines.append(f"from {Path(calibration_path).name} overridden by --set: {', '.join(sorted(user & set(sources)))}")
    lines += [f"from {Path(calibration_path).name} NOT applied: {', '.join(keys)} ({why})"
              for keys, why in calibration_not_applied(calibration_path)]
    return lines


def note_calibration(data_path, calibration_path, user_overrides=()) -> Optional[Path]:
    """Prefix the ``DATA.h5.config.yaml`` written by ``simulate`` with comments stating which
    values came from the calibration file (keys overridden again by ``--set`` are excluded) and
    which calibrated values were not applied, with their values and why."""
    if calibration_path is None:
        return None
    return note_calibration_in(Path(str(data_path) + ".config.yaml"), calibration_path, user_overrides)


def note_calibration_in(cfg_path, calibration_path, user_overrides=()) -> Optional[Path]:
    """Prefix the resolved config ``cfg_path`` (a dataset's or a training run's) with comments
    stating which values came from the calibration file and which calibrated values were not
    applied, with their values and why."""
    cfg_path = Path(cfg_path)
    if calibration_path is None or not cfg_path.is_file():
        return None
    _, sources = calibration_overrides(calibration_path)
    user = {o.split("=", 1)[0].strip() for o in user_overrides or ()}
    lines = [f"# values from the calibration file {Path(calibration_path).resolve()}:"]
    lines += [f"#   {k}  <- {v}" for k, v in sources.items() if k not in user]
    lines.append("# calibrated values NOT applied:")
    for keys, why in calibration_not_applied(calibration_path):
        lines += [f"#   {k}" for k in keys]
        lines.append(f"#     ({why})")
    write_text(cfg_path, "\n".join(lines) + "\n" + cfg_path.read_text())
    return cfg_path


# ------------------------------------------------------------------------------------------------
# demo step
# ------------------------------------------------------------------------------------------------
def calibration_demo(out_dir, *, progress: bool = True) -> Dict:
    """Calibrate against the committed synthetic sample capture (``data/sample_capture.h5``);
    writes ``out_dir/CALIBRATION.h5``, ``out_dir/CALIBRATION_lut.csv`` and ``out_dir/report/``
    (figures, report.json)."""
    out_dir = Path(out_dir)
    res = calibrate(SAMPLE_CAPTURE, out_dir / "CALIBRATION.h5", report_dir=out_dir / "report", overwrite=True,
                    progress=progress)
    return {"calibration": res["calibration"], "lut_csv": res["lut_csv"], "report": str(out_dir / "report"),
            "truth_comparison": res.get("truth_comparison", {}), "quality": res["quality"],
            "seconds": res["seconds"]}
