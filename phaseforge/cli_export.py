"""``phaseforge export …``: SLM bitmaps, DOE height maps / GDSII, verification, device list.

    phaseforge export slm DESIGN --device NAME --out FILE.png|.bmp [--verify] [options]
    phaseforge export doe DESIGN --material fused-silica --levels 8 --out DIR [--verify] [options]
    phaseforge export verify OUTPUT [--design DESIGN] [--lut LUT.csv|CALIBRATION.h5]
    phaseforge export devices

DESIGN is a design.h5, a CDP dataset .h5, a .npy phase map in rad (with --pitch-m and
--wavelength-m) or an image (with --phase-per-gray-rad too); --index picks one mask.
Existing outputs are refused without --overwrite; the design file is only read.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers", "run", "export_demo"]


def _pair(text: str, kind=float):
    try:
        a, b = (kind(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers 'Y,X', got {text!r}") from None
    return a, b


def _design_args(p):
    p.add_argument("design", type=Path, help="design.h5, CDP dataset .h5, .npy phase map (rad) or image")
    p.add_argument("--index", type=int, default=0, help="which mask of several (default 0)")
    p.add_argument("--pitch-m", type=float, default=None, help="design pixel pitch (m), for .npy / images")
    p.add_argument("--wavelength-m", type=float, default=None, help="design wavelength (m), for .npy / images")
    p.add_argument("--phase-per-gray-rad", type=float, default=None, help="phase per gray value of an image design")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _verify_args(p, default: bool = False):
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=default,
                   help="re-read the written files, rebuild the phase, compare phase and CDPs with the design")
    p.add_argument("--rms-tol-rad", type=float, default=None,
                   help="verification limit: RMS phase error (rad); export slm also refuses, even without --verify, "
                        "a LUT whose range leaves an RMS error above it (default 1.5·(2π/2^b)/√12 + 0.005)")
    p.add_argument("--max-tol-rad", type=float, default=None, help="verification limit: max phase error (rad)")
    p.add_argument("--cdp-tol", type=float, default=None, help="verification limit: relative CDP difference")


def add_parsers(sub) -> None:
    """Add ``export`` with its sub-commands to the CLI's sub-parsers."""
    from fabrication.drc import RULES
    from fabrication.gds import GDS_MODES
    from fabrication.slm import RESAMPLE_MODES

    ex = sub.add_parser("export", help="export a design to an SLM bitmap or a DOE (height map, GDSII)")
    es = ex.add_subparsers(dest="export_command", required=True)

    p = es.add_parser("slm", help="gray-level bitmap for a phase SLM (+ sidecar JSON)")
    _design_args(p)
    p.add_argument("--device", required=True, help="device preset key (see `phaseforge export devices`) or one "
                   "from --device-file")
    p.add_argument("--device-file", type=Path, default=None, help="YAML with custom devices")
    p.add_argument("--out", type=Path, required=True, help="bitmap FILE.png (8/16-bit) or FILE.bmp (8-bit)")
    p.add_argument("--bit-depth", type=int, choices=[8, 10, 12], default=None, help="default: the device's")
    p.add_argument("--lut", type=Path, default=None,
                   help="measured LUT: CSV with columns gray,phase_rad, or a CALIBRATION.h5 from `phaseforge calibrate`")
    p.add_argument("--lut-wavelength-m", type=float, default=None,
                   help="wavelength the LUT is calibrated at (phases scale by λ_lut/λ_design); default: the one "
                        "recorded in the LUT file, else the device's")
    p.add_argument("--resample", choices=RESAMPLE_MODES, default="exact",
                   help="exact: integer pitch ratio only; nearest/linear for any other ratio")
    p.add_argument("--offset-px", type=lambda t: _pair(t, int), default=(0, 0), metavar="DY,DX",
                   help="shift from the centred position (rows, columns)")
    p.add_argument("--fill-phase-rad", type=float, default=0.0, help="phase of the panel outside the design")
    p.add_argument("--carrier-period-px", type=_pair, default=(0.0, 0.0), metavar="PY,PX",
                   help="blazed-grating carrier period in SLM pixels along y,x (0: none; |period| >= 2)")
    p.add_argument("--sign", type=int, choices=[1, -1], default=1, help="displayed phase = sign × design phase")
    p.add_argument("--justify", choices=["lsb", "msb"], default="lsb",
                   help="10/12-bit levels in a 16-bit PNG: lsb (sample = level) or msb (level << (16−b), sBIT)")
    _verify_args(p)

    p = es.add_parser("doe", help="DOE relief: float TIFF (µm), GDSII, level table, grayscale bitmap")
    _design_args(p)
    p.add_argument("--material", default="fused-silica", help="fused-silica, n-bk7 or a constant index like 1.5")
    p.add_argument("--n-medium", type=float, default=1.0, help="refractive index of the surrounding medium")
    p.add_argument("--levels", type=int, default=None, help="height levels (GDSII needs them; none: continuous TIFF)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--gds-mode", choices=GDS_MODES, default="levels",
                   help="levels: one layer per level; etch: the log2(L) binary etch masks")
    p.add_argument("--no-gds", dest="gds", action="store_false", help="skip the GDSII layout")
    p.add_argument("--no-tiff", dest="tiff", action="store_false", help="skip the float TIFF height map")
    p.add_argument("--dose-curve", type=Path, default=None,
                   help="contrast curve CSV gray,height_um → height_gray.png for grayscale lithography")
    p.add_argument("--gray-bits", type=int, choices=[8, 16], default=8)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stl", action="store_true", help="also write relief.stl (µm) for 3-D printing")
    p.add_argument("--stl-base-m", type=float, default=None, help="STL base plate thickness (default h_2π)")
    p.add_argument("--layer0", type=int, default=1, help="first GDS layer number")
    p.add_argument("--db-unit-m", type=float, default=1e-9, help="GDS database unit (m); the user unit is 1 µm")
    p.add_argument("--min-feature-m", type=float, default=None)
    p.add_argument("--min-space-m", type=float, default=None)
    p.add_argument("--max-height-m", type=float, default=None)
    p.add_argument("--max-aspect-ratio", type=float, default=None)
    p.add_argument("--max-vertices", type=int, default=8190)
    p.add_argument("--no-fracture", dest="fracture", action="store_false",
                   help="report polygons over --max-vertices as violations instead of splitting them")
    p.add_argument("--waive", action="extend", nargs="+", default=[], choices=RULES, metavar="RULE",
                   help=f"accept violations of these rules ({', '.join(RULES)}; recorded in the sidecar): "
                        f"--waive A B or --waive A --waive B")
    _verify_args(p)

    p = es.add_parser("verify", help="verify an existing export (bitmap or DOE folder) against its design")
    p.add_argument("output", type=Path, help="bitmap FILE (with FILE.json) or DOE folder (with doe.json)")
    p.add_argument("--design", type=Path, default=None, help="default: the design named in the sidecar")
    p.add_argument("--index", type=int, default=None)
    p.add_argument("--lut", type=Path, default=None,
                   help="check the bitmap against this LUT (CSV gray,phase_rad or CALIBRATION.h5)")
    p.add_argument("--rms-tol-rad", type=float, default=None)
    p.add_argument("--max-tol-rad", type=float, default=None)
    p.add_argument("--cdp-tol", type=float, default=None)

    es.add_parser("devices", help="list the SLM device presets")


def _load(args):
    from fabrication.designs import load_design
    return load_design(args.design, index=args.index, pixel_pitch_m=args.pitch_m, wavelength_m=args.wavelength_m,
                       phase_per_gray_rad=args.phase_per_gray_rad)


def _tol(args):
    from fabrication.verify import Tolerances
    return Tolerances(rms_rad=args.rms_tol_rad, max_rad=args.max_tol_rad, cdp_rel=args.cdp_tol)


def _record(sidecar_file: Path, sidecar: dict, results) -> None:
    """Add the verification results to the sidecar and draw one figure per checked file beside it."""
    import matplotlib.pyplot as plt

    from fabrication.figures import verification_figure
    from optics.fileio import save_figure, write_json
    sidecar = dict(sidecar)
    sidecar["verification"] = [r.to_dict() for r in results]
    for r, entry in zip(results, sidecar["verification"]):
        if r.arrays:
            fig = verification_figure(r)
            png = Path(sidecar_file).with_name(Path(r.file).name + ".verify.png")
            save_figure(fig, png, dpi=90)
            plt.close(fig)
            entry["figure"] = png.name
    write_json(sidecar_file, sidecar)


def _report(results) -> int:
    for r in results:
        print(f"verify: {r.summary()}")
    return 0 if all(r.passed for r in results) else 3


def export_slm_cmd(design, *, device, out, device_file=None, bit_depth=None, lut_csv=None, lut_wavelength_m=None,
                   resample="exact", offset_px=(0, 0), fill_phase_rad=0.0, carrier_period_px=(0.0, 0.0), sign=1,
                   justify="lsb", verify=False, tolerances=None, overwrite=False):
    """Export (and optionally verify, recording the result in the sidecar); returns (export, results)."""
    from fabrication.devices import get_device
    from fabrication.slm import SLMOptions, export_slm, read_lut_table
    from fabrication.verify import verify_slm

    dev = get_device(device, device_file)
    b = dev.bit_depth if bit_depth is None else bit_depth
    lut = None
    if lut_csv is not None:
        table = read_lut_table(lut_csv)
        lut = table.phase_lut(bit_depth=b)
        if lut_wavelength_m is None:  # the file's own record beats the device preset's
            lut_wavelength_m = table.wavelength_m
    opt = SLMOptions(bit_depth=b, lut=lut, lut_source=str(lut_csv) if lut_csv else "", lut_wavelength_m=lut_wavelength_m,
                     resample=resample, offset_px=offset_px, fill_phase_rad=fill_phase_rad,
                     carrier_period_px=carrier_period_px, sign=sign, justify=justify,
                     lut_rms_tol_rad=tolerances.rms_rad if tolerances is not None else None)
    res = export_slm(design, dev, out, options=opt, overwrite=overwrite)
    results = []
    if verify:
        results = [verify_slm(res.path, design, tolerances=tolerances)]
        _record(res.sidecar_path, res.sidecar, results)
    return res, results


def export_doe_cmd(design, *, out, verify=False, tolerances=None, overwrite=False, progress=False, **options):
    from fabrication.doe import FILES, DOEOptions, export_doe
    from fabrication.verify import verify_doe

    res = export_doe(design, out, options=DOEOptions(**options), overwrite=overwrite, progress=progress)
    results = []
    if verify:
        results = verify_doe(res.out_dir, design, tolerances=tolerances)
        _record(Path(res.out_dir) / FILES["sidecar"], res.sidecar, results)
    return res, results


def run(args) -> int:
    """Run ``phaseforge export …``; 0 on success, 3 when a verification fails (errors raise)."""
    cmd = args.export_command
    if cmd == "devices":
        from fabrication.devices import load_devices
        for d in load_devices().values():
            print(f"{d.key:20s} {d.width_px:5d} x {d.height_px:<5d} {d.pixel_pitch_m * 1e6:6.3g} µm  {d.bit_depth:2d}-bit "
                  f"{d.file_format:6s} {d.name}")
        return 0
    if cmd == "slm":
        design = _load(args)
        res, results = export_slm_cmd(
            design, device=args.device, out=args.out, device_file=args.device_file, bit_depth=args.bit_depth,
            lut_csv=args.lut, lut_wavelength_m=args.lut_wavelength_m, resample=args.resample,
            offset_px=args.offset_px, fill_phase_rad=args.fill_phase_rad, carrier_period_px=args.carrier_period_px,
            sign=args.sign, justify=args.justify, verify=args.verify, tolerances=_tol(args), overwrite=args.overwrite)
        s = res.sidecar
        print(f"export slm: wrote {res.path} ({s['device']['name']}, {s['bit_depth']}-bit {s['file_format']}, design "
              f"{design.shape[0]} x {design.shape[1]} at rows {s['placement']['top_px']}…, columns "
              f"{s['placement']['left_px']}…) and {res.sidecar_path}")
        return _report(results)
    if cmd == "doe":
        from fabrication.drc import DRCRules
        design = _load(args)
        rules = DRCRules(min_feature_m=args.min_feature_m, min_space_m=args.min_space_m,
                         max_height_m=args.max_height_m, max_aspect_ratio=args.max_aspect_ratio,
                         max_vertices=args.max_vertices, fracture=args.fracture)
        res, results = export_doe_cmd(
            design, out=args.out, verify=args.verify, tolerances=_tol(args), overwrite=args.overwrite,
            progress=not args.no_progress, material=args.material, levels=args.levels, n_medium=args.n_medium, tiff=args.tiff, gds=args.gds,
            gds_mode=args.gds_mode, layer0=args.layer0, precision_m=args.db_unit_m,
            dose_curve=str(args.dose_curve) if args.dose_curve else None, gray_bits=args.gray_bits, stl=args.stl,
            stl_base_m=args.stl_base_m, drc=rules,
            waive=tuple(args.waive))
        s = res.sidecar
        gds = s["files"].get("gds")
        extra = (f", GDSII {sum(v['polygons'] for v in gds['layers'].values())} polygons on {len(gds['layers'])} "
                 f"layers ({gds['mode']})") if gds else ""
        print(f"export doe: {s['material']['name']} n = {s['material']['n']:.5f}, h_2π = "
              f"{s['material']['h_2pi_m'] * 1e6:.4f} µm, levels {s['levels'] or 'continuous'}{extra}; "
              f"DRC {'clean' if s['drc']['ok'] else 'waived: ' + ', '.join(s['drc']['waived'])}; files in {res.out_dir}")
        return _report(results)
    if cmd == "verify":
        from fabrication.designs import load_design
        from fabrication.slm import read_lut_csv
        from fabrication.verify import verify_path
        design = None
        if args.design is not None:
            design = load_design(args.design, index=args.index or 0)
        lut = None
        if args.lut is not None:
            import json
            from fabrication._io import sidecar_path
            b = json.loads(sidecar_path(args.output).read_text())["bit_depth"]
            lut = read_lut_csv(args.lut, bit_depth=b)
        return _report(verify_path(args.output, design=design, lut=lut, tolerances=_tol(args)))
    raise ValueError(f"unknown export command {cmd!r}")


def export_demo(out_dir, design_path, *, device: str = "holoeye-pluto-2", levels: int = 8) -> dict:
    """Export mask 0 of ``design_path`` to an SLM bitmap and a DOE (TIFF + GDSII), verify both,
    print a short summary; returns the numbers."""
    from fabrication.designs import load_design

    out = Path(out_dir)
    design = load_design(design_path)
    slm, slm_res = export_slm_cmd(design, device=device, out=out / "slm_mask0.png", carrier_period_px=(0.0, 8.0),
                                  verify=True, overwrite=True)
    doe, doe_res = export_doe_cmd(design, out=out / "doe_mask0", verify=True, overwrite=True,
                                  material="fused_silica", levels=levels)
    gds = doe.sidecar["files"]["gds"]
    npoly = sum(v["polygons"] for v in gds["layers"].values())
    print(f"export: SLM bitmap {slm.path} ({slm.sidecar['device']['name']}, carrier period 8 px); "
          f"DOE in {doe.out_dir}: fused silica h_2π = {doe.h2pi_m * 1e6:.4f} µm, {levels} levels, "
          f"{npoly} GDSII polygons (vs {gds['naive_rectangles']} pixel rectangles)")
    for r in slm_res + doe_res:
        print(f"export: verify {r.summary()}")
    return {"slm": str(slm.path), "doe": str(doe.out_dir),
            "verification": [r.to_dict() for r in slm_res + doe_res],
            "passed": all(r.passed for r in slm_res + doe_res)}


