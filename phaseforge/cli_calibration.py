"""CLI of the calibration layer: ``phaseforge capture validate|info|pack`` and ``phaseforge calibrate``::

    phaseforge capture validate FILE            list every problem; exit 1 when there is an error
    phaseforge capture info FILE                summary (frames per image key, exposures, patterns, instrument);
                                                exit 1 when the file has an error, 2 when it cannot be read
    phaseforge capture pack FOLDER --metadata META.yaml --out FILE [--overwrite]
    phaseforge calibrate CAPTURES.h5 --out CALIBRATION.h5 [--report DIR] [--heldout N] [--jackknife] [--overwrite]
                                                (also writes CALIBRATION_lut.csv beside CALIBRATION.h5)

``simulate --calibration CALIBRATION.h5`` (in :mod:`phaseforge.cli`) applies the calibration's
values as configuration overrides (:func:`phaseforge.calibration_jobs.calibration_overrides`).
"""
from __future__ import annotations

from pathlib import Path

COMMANDS = ("capture", "calibrate")


def add_parsers(sub) -> None:
    p = sub.add_parser("capture", help="lab capture files (HDF5): validate, info, pack")
    csub = p.add_subparsers(dest="capture_command", required=True)
    q = csub.add_parser("validate", help="list every problem of a capture file (exit 1 on errors)")
    q.add_argument("file", type=Path)
    q = csub.add_parser("info", help="summarise a capture file")
    q.add_argument("file", type=Path)
    q = csub.add_parser("pack", help="build a capture file from TIFF/PNG frames plus a metadata YAML")
    q.add_argument("folder", type=Path)
    q.add_argument("--metadata", type=Path, required=True, help="YAML: bit_depth, instrument, patterns, frames")
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("calibrate", help="camera, SLM LUT and physical parameters from a capture file")
    p.add_argument("capture", type=Path)
    p.add_argument("--out", type=Path, required=True,
                   help="CALIBRATION.h5 (its LUT also goes to CALIBRATION_lut.csv beside it, for `export slm --lut`)")
    p.add_argument("--report", type=Path, default=None, help="report folder (default: OUT_report next to OUT)")
    p.add_argument("--heldout", type=int, default=2, help="random-pattern frames kept out of the fit for validation")
    p.add_argument("--starts", type=int, default=7, help="distance starts of the multistart fit")
    p.add_argument("--distance-range", type=float, default=0.12,
                   help="starts span nominal distance × (1 ± this)")
    p.add_argument("--jackknife", action="store_true",
                   help="also leave-one-frame-out standard errors of the fitted parameters (one refit per frame)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _check_metadata(path: Path) -> None:
    """The metadata YAML of ``capture pack`` exists and parses; else one line naming it (and the line)."""
    import yaml

    from calibration.errors import CalibrationError

    from .config import yaml_error_message

    if not Path(path).is_file():
        raise CalibrationError(f"--metadata {path}: the metadata YAML does not exist; give the YAML that lists "
                               f"bit_depth, instrument, patterns and frames (see `phaseforge capture pack --help`)")
    try:
        yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise CalibrationError(yaml_error_message(path, exc, "the metadata YAML")) from exc


def run(args) -> int:
    """Run a calibration command; returns the exit status (errors raise ValueError subclasses,
    which :func:`phaseforge.cli.main` prints as one line with status 2)."""
    if args.command == "capture":
        from calibration.capture import capture_info, pack_capture, validate_capture

        if args.capture_command == "validate":
            problems = validate_capture(args.file)
            errors = [p for p in problems if p.severity == "error"]
            for p in problems:
                print(f"{args.file}: {p}")
            print(f"capture validate: {len(errors)} error(s), {len(problems) - len(errors)} warning(s) in {args.file}")
            return 1 if errors else 0
        if args.capture_command == "info":
            problems: list = []
            print(capture_info(args.file, problems=problems))  # unreadable → CaptureError, status 2
            return 1 if any(p.severity == "error" for p in problems) else 0
        _check_metadata(args.metadata)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # the output-folder policy
        path = pack_capture(args.folder, args.metadata, args.out, overwrite=args.overwrite)
        print(f"capture pack: wrote {path}")
        return 0
    from .calibration_jobs import calibrate

    res = calibrate(args.capture, args.out, report_dir=args.report, n_heldout=args.heldout, overwrite=args.overwrite,
                    progress=not args.no_progress, n_starts=args.starts, distance_range=args.distance_range,
                    jackknife_frames=args.jackknife)
    f = res["fit"]
    q = res["quality"]
    c = res["camera"]
    print(f"calibrate: distance {f['distance_m']['value'] * 1e3:.5g} ± {f['distance_m']['std'] * 1e3:.2g} mm "
          f"(nominal {f['distance_m']['nominal'] * 1e3:.5g} mm), magnification {f['magnification']['value']:.5g}, "
          f"rotation {f['rotation_rad']['value'] * 1e3:.4g} mrad, crosstalk σ "
          f"{f['crosstalk_sigma_m']['value'] * 1e6:.3g} µm")
    print(f"calibrate: camera K {c['gain_dn_per_e']:.4g} ± {c['gain_dn_per_e_std']:.2g} DN/e-, read noise "
          f"{c['read_noise_e']:.3g} e-, dark current {c['dark_current_e_per_s']:.3g} e-/s, saturation "
          f"{c['saturation_capacity_e']:.4g} e-")
    print(f"calibrate: held-out reduced chi2 nominal {q['heldout_chi2_nominal']:.4g} -> calibrated "
          f"{q['heldout_chi2_calibrated']:.4g}; fit r_min {q['pearson_r_min']:.3f}; registration r "
          f"{q['registration_quality']:.3f}")
    tc = res.get("truth_comparison")
    if tc:
        parts = [f"{k} {100 * v['relative_error']:+.2f} %" for k, v in tc.items() if "relative_error" in v
                 and k in ("distance_m", "magnification", "gain_dn_per_e", "read_noise_e")]
        if "lut_rms_error_rad" in tc:
            parts.append(f"LUT rms {tc['lut_rms_error_rad']['value']:.3g} rad")
        print("calibrate: vs ground truth: " + ", ".join(parts))
    print(f"calibrate: wrote {res['calibration']}, the LUT {res['lut_csv']} and report {Path(res['report']['report.json']).parent} "
          f"({res['seconds']:.1f} s)")
    return 0
