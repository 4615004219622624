"""Command-line interface ``phaseforge``::

    phaseforge demo        [--config CFG] [--set …] [--out DIR]
    phaseforge simulate    [--config CFG] [--set key.path=value …] --out DATA.h5
                           [--resume] [--overwrite] [--shard i/n] [--max-batches K]
    phaseforge merge       SHARD.h5 … --out DATA.h5 [--overwrite]
    phaseforge reconstruct --data DATA.h5 [--solver wf|er|gs|hio|af] --out DIR [--n-iter K] [--n N]
                           [--config CFG] [--set solver.n_iter=…] [--overwrite]
    phaseforge config      [--config CFG] [--set …]    (print the resolved configuration)
    phaseforge train | distill | evaluate              (learning; see phaseforge.cli_learn)
    phaseforge export      slm|doe|verify|devices …   (see phaseforge/cli_export.py)
    phaseforge capture     validate|info FILE | pack FOLDER --metadata META.yaml --out FILE
    phaseforge calibrate   CAPTURES.h5 --out CALIBRATION.h5   (simulate takes --calibration CALIBRATION.h5)

Errors from bad input (the packages' own error types: :class:`optics.errors.OpticsError`,
:class:`learning.errors.LearningError`, :class:`phaseforge.config.ConfigError`, the fabrication
and calibration errors, missing or existing files) are printed as one line
``phaseforge: error: …`` with exit status 2. Anything else is a bug: the full traceback is
printed with a line saying so, exit status 3.

Output folders: every command creates a missing output folder (with its parents) and refuses to
replace an existing output without ``--overwrite``. Values that start with a minus sign may follow
their option as a separate word (``--offset-px -7,11``) or joined (``--offset-px=-7,11``).
Warnings (e.g. :class:`optics.sampling.GeometryWarning`) are printed as ``phaseforge: warning: …``.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
import warnings
from pathlib import Path

from . import __version__


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="phaseforge", description="Coded-diffraction phase retrieval: "
                                 "simulate, reconstruct, learn and export.")
    ap.add_argument("--version", action="version", version=f"phaseforge {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log INFO messages (e.g. what method='auto' picked)")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", type=Path, help="YAML configuration (defaults: the embedded demo)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override one key, e.g. --set optics.z_m=0.2 (repeatable)")

    p = sub.add_parser("demo", help="run the main job on the embedded default data")
    with_config(p)
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("simulate", help="simulate a CDP dataset into HDF5")
    with_config(p)
    p.add_argument("--out", type=Path, required=True, help="output file DATA.h5")
    p.add_argument("--resume", action="store_true", help="continue DATA.h5.tmp left by an interrupted run (also one killed hard)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DATA.h5")
    p.add_argument("--shard", type=str, default=None, metavar="I/N",
                   help="write shard I of N (automatic under torchrun: RANK/WORLD_SIZE)")
    p.add_argument("--max-batches", type=int, default=None, help="stop after K batches (leaves a resumable .tmp)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--calibration", type=Path, default=None, metavar="CALIBRATION.h5",
                   help="use fitted distance, camera, LUT and crosstalk from `phaseforge calibrate`")
    p.add_argument("--allow-light-loss", action="store_true",
                   help="simulate a geometry whose detector window records < 10 %% of the coded field's light "
                        "(optics.sampling; refused otherwise) with a warning")

    p = sub.add_parser("merge", help="join shard files with an HDF5 virtual dataset (no copy)")
    p.add_argument("shards", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("reconstruct", help="phase retrieval on a CDP dataset, or on measurements from anywhere")
    with_config(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a CDP dataset written by `phaseforge simulate`")
    src.add_argument("--measurements", metavar="PATH[:KEY]",
                     help="measured patterns (L, Mh, Mw) or (N, L, Mh, Mw) from .npy/.npz/.h5/.tif (learning.measured)")
    g = p.add_argument_group("measurements from elsewhere (with --measurements)")
    g.add_argument("--masks", metavar="PATH[:KEY]", help="masks (L, H, W): complex modulations or phases in rad")
    g.add_argument("--truth", metavar="PATH[:KEY]", default=None, help="ground truth (N, H, W), optional: metrics")
    g.add_argument("--geometry", type=Path, default=None, metavar="GEOMETRY.yaml",
                   help="geometry keys (method, detector_order, oversampling, pitch_m, wavelength_m, z_m, quantity); "
                        "the options below override them")
    g.add_argument("--method", default=None, help="'fft' (unit-free unitary FFT, the default) or a propagation method")
    g.add_argument("--detector-order", choices=("centered", "fft"), default=None,
                   help="where DC sits in the stored patterns: centred (M//2) or FFT order (index 0)")
    g.add_argument("--oversampling", type=float, default=None)
    g.add_argument("--pitch-m", type=float, default=None)
    g.add_argument("--wavelength-m", type=float, default=None)
    g.add_argument("--z-m", type=float, default=None)
    g.add_argument("--quantity", choices=("intensity", "amplitude"), default=None,
                   help="what the file holds (default intensity |Ax|²)")
    g.add_argument("--object", choices=("complex", "real", "nonnegative"), default="complex",
                   help="what the objects are: real / non-negative add those constraints to the solver")
    from learning.solvers import SOLVER_NAMES
    p.add_argument("--solver", choices=SOLVER_NAMES, default=None,
                   help="default: solver.name of the configuration (wf)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None, metavar="MODEL.pt",
                   help="a learned deep-unfolding model instead of --solver, e.g. data/models/cdp_unfolded_L4.pt "
                        "(refused, naming the difference, for measurements it was not trained for)")
    p.add_argument("--n-iter", type=int, default=None)
    p.add_argument("--tol", type=float, default=None)
    p.add_argument("--n", type=int, default=None, help="reconstruct only the first N samples")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("config", help="print the resolved configuration (YAML)")
    with_config(p)
    from . import cli_learn
    cli_learn.add_parsers(sub)

    from .cli_export import add_parsers as add_export_parsers
    add_export_parsers(sub)
    from .cli_calibration import add_parsers as add_calibration_parsers
    add_calibration_parsers(sub)
    return ap


def _require_masks(args):
    if args.masks is None:
        from .config import ConfigError
        raise ConfigError("--measurements needs --masks PATH[:KEY] (the (L, H, W) masks they were measured through)")
    return args.masks


def _geometry(args):
    """The measurement geometry from --geometry YAML, then the command-line options."""
    from learning.measured import Geometry

    from .config import ConfigError, read_yaml_mapping

    m = read_yaml_mapping(args.geometry, "geometry") if args.geometry is not None else {}
    for k in ("method", "detector_order", "oversampling", "pitch_m", "wavelength_m", "z_m", "quantity"):
        v = getattr(args, k)
        if v is not None:
            m[k] = v
    if not isinstance(m, dict):
        raise ConfigError(f"{args.geometry}: a geometry YAML is a mapping of keys to values")
    return Geometry.from_mapping(m, where=str(args.geometry or "geometry"))


def _reconstruct_summary(rep: dict, out) -> int:
    """Print reconstruct's result; say plainly which samples failed. Exit status 1 when most did."""
    import statistics

    res = statistics.median(rep["final_residual"]) if rep["final_residual"] else float("nan")
    if "metrics" not in rep:  # measurements without a ground truth: the residual is the only score
        print(f"reconstruct: {rep['solver']} on {rep['n_samples']} measurement sets (no ground truth), measurement "
              f"residual median {res:.3g}; {rep['seconds_per_sample']:.3f} s/sample; outputs in {out}")
        return 0
    m = rep["metrics"]["summary"]["relative_error"]
    print(f"reconstruct: {rep['solver']} on {rep['n_samples']} samples, relative error "
          f"median {m['median']:.3g} mean {m['mean']:.3g}, measurement residual median {res:.3g}; "
          f"{rep['seconds_per_sample']:.3f} s/sample; outputs in {out}")
    k, n, lim = rep["n_failed"], rep["n_samples"], rep["failure_relative_error"]
    if not k:
        return 0
    from optics.sampling import WARN_BELOW
    g = rep["geometry"]
    why = []
    if "captured_fraction" in g and g["captured_fraction"] < WARN_BELOW:
        why.append(f"the file's geometry records only {100 * g['captured_fraction']:.3g} % of a coded field's "
                   f"light (optics.sampling: {100 * g['band_fraction']:.3g} % of the spectrum passes, "
                   f"{100 * g['light_fraction']:.3g} % of it reaches the detector window) — simulate with a smaller "
                   f"optics.z_m, a larger data.size or optics.oversampling")
    why.append("try more iterations (--n-iter), another solver (--solver), or more masks / photons in simulate")
    shown = ", ".join(str(i) for i in rep["failed"][:10]) + (" …" if k > 10 else "")
    print(f"reconstruct: FAILED on {k} of {n} samples (relative error > {lim:g}: samples {shown}); "
          + "; ".join(why))
    return 1 if 2 * k > n else 0


def _parse_shard(text):
    if text is None:
        return None
    try:
        i, n = text.split("/")
        return int(i), int(n)
    except ValueError:
        from .config import ConfigError
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None


def user_errors() -> tuple:
    """The exception types that mean bad input (one line, exit 2) rather than a bug."""
    from learning.errors import LearningError
    from optics.errors import OpticsError

    from .config import ConfigError

    types = [OpticsError, LearningError, ConfigError, FileNotFoundError, FileExistsError, IsADirectoryError,
             NotADirectoryError, PermissionError]
    for mod, name in (("fabrication.errors", "FabricationError"), ("calibration.errors", "CalibrationError")):
        try:
            types.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


_NEGATIVE_VALUE = re.compile(r"^-\d")


def join_negative_values(argv, parser: argparse.ArgumentParser):
    """``--opt -7,11`` → ``--opt=-7,11`` for every option that takes one value: argparse reads a
    word that starts with '-' as an option unless it is a plain negative number, so a negative
    pair such as ``-7,11`` would be "expected one argument"."""
    takes_value = set()

    def walk(p):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    walk(sp)
            elif a.option_strings and a.nargs is None and not isinstance(
                    a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                        argparse._CountAction, argparse._HelpAction, argparse._VersionAction)):
                takes_value.update(a.option_strings)

    walk(parser)
    argv = list(argv)
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in takes_value and i + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings about the user's input (:class:`optics.sampling.GeometryWarning`) as one line
    ``phaseforge: warning: …`` on stderr; any other warning the usual way."""
    from optics.sampling import GeometryWarning
    if issubclass(category, GeometryWarning):
        print(f"phaseforge: warning: {message}", file=sys.stderr)
        return
    print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)


def _check_simulate_geometry(cfg, allow_light_loss: bool) -> None:
    """Refuse (or, with --allow-light-loss, warn about) a geometry that loses most of the light."""
    from optics.sampling import check_geometry

    from .build import resolved_method

    o = cfg.optics
    check_geometry((cfg.data.size, cfg.data.size), pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m,
                   method=resolved_method(cfg), oversampling=o.oversampling,
                   band_limit=o.propagation.band_limit, pad=o.propagation.pad, refuse=not allow_light_loss)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv, parser))
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(args, argv)


def _main(args, argv) -> int:
    from .alloc import tune_allocator
    tune_allocator()  # reuse large temporaries instead of re-faulting them (phaseforge/alloc.py)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    from . import pipeline
    from .config import ConfigError, dump, load

    try:
        if args.command == "demo":
            res = pipeline.demo(args.out, progress=not args.no_progress, config=args.config,
                                overrides=args.overrides)
            m = res["baseline"]["metrics"]["summary"]
            print(f"demo: showcase figure {res['showcase']}")
            print(f"demo: dataset {res['dataset']}")
            print(f"demo: {res['baseline']['solver']} baseline on {res['baseline']['n_samples']} samples: "
                  f"relative error median {m['relative_error']['median']:.3g}, "
                  f"outputs in {res['baseline_dir']}")
            print(f"demo: learned single-snapshot student design {res['design']}")
            if "calibration" in res:
                print(f"demo: calibration of the sample capture in {res['calibration']['calibration']}")
        elif args.command == "simulate":
            from .calibration_jobs import calibration_summary, note_calibration, simulate_overrides
            cfg = load(args.config, simulate_overrides(args.calibration) + args.overrides)
            _check_simulate_geometry(cfg, args.allow_light_loss)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # the output-folder policy
            path = pipeline.simulate(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                                     shard=_parse_shard(args.shard), progress=not args.no_progress,
                                     max_batches=args.max_batches)
            note_calibration(path, args.calibration, args.overrides)
            for line in calibration_summary(args.calibration, args.overrides):
                print(f"simulate: {line}")
            state = "incomplete (resume with --resume)" if path.suffix == ".tmp" else "complete"
            print(f"simulate: wrote {path} ({state})")
        elif args.command == "merge":
            from learning.h5io import merge_shards
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            path = merge_shards(args.shards, args.out, overwrite=args.overwrite)
            print(f"merge: wrote {path} (virtual datasets over {len(args.shards)} shards)")
        elif args.command == "reconstruct" and args.measurements is not None:
            rep = pipeline.reconstruct_measured(
                args.measurements, _require_masks(args), args.out, geometry=_geometry(args), truth=args.truth,
                object_kind=args.object, solver=args.solver, n_iter=args.n_iter, tol=args.tol, n=args.n,
                batch_size=args.batch_size, progress=not args.no_progress, config=args.config,
                overrides=args.overrides, overwrite=args.overwrite, model=args.model)
            return _reconstruct_summary(rep, args.out)
        elif args.command == "reconstruct":
            for opt in ("masks", "truth", "geometry", "method", "detector_order", "oversampling", "pitch_m",
                        "wavelength_m", "z_m", "quantity"):
                if getattr(args, opt) is not None:
                    raise ConfigError(f"--{opt.replace('_', '-')} describes measurements from elsewhere (with "
                                      f"--measurements); a dataset file (--data) carries its own physics")
            rep = pipeline.reconstruct(args.data, args.out, solver=args.solver, n_iter=args.n_iter, tol=args.tol,
                                       n=args.n, batch_size=args.batch_size, progress=not args.no_progress,
                                       config=args.config, overrides=args.overrides, overwrite=args.overwrite,
                                       model=args.model)
            return _reconstruct_summary(rep, args.out)
        elif args.command == "config":
            print(dump(load(args.config, args.overrides)), end="")
        elif args.command == "export":
            from .cli_export import run as run_export
            return run_export(args)
        elif args.command in ("capture", "calibrate"):
            from .cli_calibration import run as run_calibration
            return run_calibration(args)
        else:
            from . import cli_learn
            cli_learn.run(args)
    except user_errors() as exc:
        print(f"phaseforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phaseforge: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug: show everything
        traceback.print_exc()
        print(f"phaseforge: internal error (this is a bug, not a problem with your input): please report it "
              f"with the traceback above and the command: phaseforge {' '.join(sys.argv[1:] if argv is None else argv)}",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
