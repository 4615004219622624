"""CLI of the learning jobs (hooked into :mod:`phaseforge.cli`)::

    phaseforge train    --config CFG --out RUN [--set …] [--resume] [--overwrite] [--device cpu|cuda]
    phaseforge distill  --teacher RUN --config CFG --out RUN [--set …] [--resume] [--overwrite] [--device]
    phaseforge evaluate RUN [RUN …] [--data DATA.h5|IMAGES] --out DIR [--n N] [--seed S] [--checkpoint best|last]
                        [--overwrite] [--device]

``train`` and ``distill`` run unchanged under ``torchrun --nproc_per_node N -m phaseforge.cli …``
(data parallel; gloo on CPU, nccl on GPU). With ``--resume`` and no ``--config`` the run's own
``config.yaml`` is used.
"""
from __future__ import annotations

from pathlib import Path

COMMANDS = ("train", "distill", "evaluate")


def add_parsers(sub) -> None:
    """Add the ``train``, ``distill`` and ``evaluate`` sub-commands to ``sub``."""
    def common(p, *, teacher: bool):
        if teacher:
            p.add_argument("--teacher", type=Path, required=True, help="run folder of the trained teacher")
        p.add_argument("--config", type=Path, help="YAML configuration (e.g. data/configs/student_e2e.yaml)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override one key, e.g. --set train.epochs=5 (repeatable)")
        p.add_argument("--out", type=Path, required=True, help="run folder")
        p.add_argument("--resume", action="store_true", help="continue the run from checkpoints/last.pt")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
        p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
        p.add_argument("--calibration", type=Path, default=None, metavar="CALIBRATION.h5",
                       help="train on the calibrated model (distance, camera, LUT, crosstalk from "
                            "`phaseforge calibrate`); --set wins over it; the run's config.yaml says which values it set")
        p.add_argument("--no-progress", action="store_true")

    common(sub.add_parser("train", help="train a teacher or a student end to end"), teacher=False)
    common(sub.add_parser("distill", help="train a student under a frozen teacher"), teacher=True)
    p = sub.add_parser("evaluate", help="evaluate runs and classical baselines on the same test objects")
    p.add_argument("runs", nargs="+", type=Path, help="run folders")
    p.add_argument("--data", type=Path, default=None,
                   help="test objects: a CDP dataset (its objects), or an image folder / .npy / .npz / HDF5 stack "
                        "(every image, resized and encoded as the runs were trained; each run simulates its own "
                        "measurements). Default: 64 objects of the first run's image source's test split, data seed 0")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=None, help="evaluate only the first N >= 1 objects")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="which checkpoint of every run (default best; a run without it is an error)")
    p.add_argument("--seed", type=int, default=0, help="noise seed shared by every system")
    p.add_argument("--classical-iters", type=int, default=200)
    p.add_argument("--classical", nargs="+", default=["er", "wf"], choices=["er", "wf"],
                   help="classical solvers run on each run's own masks (default: er wf)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _config(args):
    from .config import load
    from .learn import _run_config

    from .calibration_jobs import simulate_overrides

    if args.config is None and args.resume:
        if args.calibration is not None:
            from .config import ConfigError
            raise ConfigError("--resume continues with the run's own config.yaml (which already holds any "
                              "calibrated values); drop --calibration, or start a new run with --config")
        return load(None, args.overrides, base=_run_config(args.out))
    if args.config is None:
        from .config import ConfigError
        raise ConfigError(f"phaseforge {args.command} needs --config CFG (e.g. data/configs/"
                         f"{'student_distill' if args.command == 'distill' else 'teacher'}.yaml)")
    return load(args.config, simulate_overrides(args.calibration) + args.overrides)


def run(args) -> None:
    """Run one of :data:`COMMANDS` and print its summary."""
    from . import learn

    if args.command == "evaluate":
        rep = learn.evaluate_runs(args.runs, args.out, data=args.data, n=args.n, seed=args.seed,
                                  classical_iters=args.classical_iters, classical=tuple(args.classical),
                                  device=args.device, checkpoint=args.checkpoint,
                                  progress=not args.no_progress, overwrite=args.overwrite)
        print(rep["table"])
        print(f"evaluate: table.csv, metrics.json and figures in {rep['out']}")
        return
    from learning.training import dist_info
    cfg = _config(args)
    kw = dict(resume=args.resume, overwrite=args.overwrite, device=args.device, progress=not args.no_progress)
    if args.command == "train":
        res = learn.train_run(cfg, args.out, **kw)
    else:
        res = learn.distill_run(args.teacher, cfg, args.out, **kw)
    if dist_info()[0] != 0:
        return  # one summary line per run, from rank 0
    if args.calibration is not None:
        from .calibration_jobs import calibration_summary, note_calibration_in
        note_calibration_in(Path(args.out) / "config.yaml", args.calibration, args.overrides)
        for line in calibration_summary(args.calibration, args.overrides):
            print(f"{args.command}: {line}")
    f = res["final"]
    print(f"{args.command}: {res['role']} run {res['run']}: {res['steps']} steps in {res['seconds']:.1f} s; "
          f"validation PSNR final {f.get('val_psnr', float('nan')):.2f} dB, best {res['best_val_psnr']:.2f} dB; "
          f"design {res.get('design', '(not written)')}")
