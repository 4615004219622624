"""The learning jobs behind ``phaseforge train / distill / evaluate`` and the learning demo.

Run folder (``--out RUN``)::

    RUN/config.yaml              the fully resolved configuration
    RUN/checkpoints/last.pt      after every epoch (resume point)
    RUN/checkpoints/best.pt      best validation PSNR so far (model selection)
    RUN/history.csv              per step: loss, weighted terms, learning rates, mask-gradient norms
    RUN/val.csv                  per epoch: validation PSNR (mean, median), loss, time
    RUN/curves.png               training curves; RUN/mask_grad_norms.png  gradient reaching the masks
    RUN/masks.png                the designed masks (as displayed: exact SLM levels)
    RUN/metrics.json             summary: role, teacher run, best/final validation, steps, time
    RUN/design.h5                learned masks on the SLM-pixel grid (optics.design), from best.pt

Bad input is reported before training starts where it can be known: teacher geometry vs the
student configuration, feature levels the networks lack, image sizes, missing or corrupt
checkpoints, an existing run folder (``--overwrite`` replaces it, ``--resume`` continues it).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from optics.cdp import CDPSystem
from learning.errors import LearningError
from optics.design import write_design
from optics.fileio import save_figure, write_json, write_text
from optics.cdp import UNIT_FREE_METHOD
from optics.propagation import METHOD_OPTIONS

from . import __version__
from .build import resolved_method, sensor_from_config, slm_from_config
from .config import Config, ConfigError, dump, from_yaml_text, load, noise_model_from_config, to_dict

__all__ = ["build_model", "load_objects", "train_run", "distill_run", "load_run", "evaluate_runs",
           "learning_demo", "RunError", "GEOMETRY_KEYS", "DEFAULT_TEST_OBJECTS", "DEFAULT_TEST_SEED", "CHECKPOINTS",
           "results_figure", "run_curves"]

#: configuration keys a teacher and its student must share
GEOMETRY_KEYS = ("optics.wavelength_m", "optics.pitch_m", "optics.z_m", "optics.method",
                 "optics.oversampling", "data.size", "data.encoding", "data.phase_range_rad")


class RunError(LearningError):
    """A run folder that cannot be used as asked (exists, missing, incompatible)."""


# ----------------------------------------------------------------------------------------------
# builders
# ----------------------------------------------------------------------------------------------
def build_model(cfg: Config):
    """A :class:`learning.systems.PhaseRetrievalModel` from a validated configuration."""
    from learning.networks import NetworkError
    from learning.systems import CodedPhysics, PhaseRetrievalModel, build_phase_mask, build_reconstructor

    if cfg.masks.kind != "random_phase":
        raise ConfigError(f"masks.kind = {cfg.masks.kind!r}: a learnable system starts from random phase "
                          f"masks; set masks.kind: random_phase (masks.seed picks them)")
    size = cfg.data.size
    slm = slm_from_config(cfg)
    up = 1
    if slm is not None:
        up = slm.upsample
        if size % up:
            raise ConfigError(f"data.size = {size} is not a multiple of the SLM upsampling {up} "
                              f"(slm.pixel_pitch_m / optics.pitch_m); change data.size")
        if cfg.slm.quantization == "exact" and cfg.model.learn_masks:
            raise ConfigError("slm.quantization = 'exact' passes no gradient to the masks; use 'ste' "
                              "(straight-through, exact levels in the forward pass) or 'soft', or set "
                              "model.learn_masks: false")
    torch.manual_seed(cfg.seed)
    masks = build_phase_mask(cfg.masks.n_masks, (size // up, size // up), seed=cfg.masks.seed,
                             role=cfg.model.role, learnable=True)
    o = cfg.optics
    method = resolved_method(cfg)
    prop = {k: getattr(o.propagation, k) for k in METHOD_OPTIONS.get(method, ())}
    # the unit-free operator (the standard CDP protocol) takes no pitch, wavelength or distance
    units = {} if method == UNIT_FREE_METHOD else dict(pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m)
    # the sensor is held by CodedPhysics and called explicitly (noise by argument), not by the system
    system = CDPSystem(masks, method=method, oversampling=o.oversampling, detector_order=o.detector_order, slm=slm,
                       **units, **prop)
    if cfg.sensor.enabled and cfg.sensor.pitch_m is not None:
        raise ConfigError("sensor.pitch_m bins several detector samples per camera pixel, which the unrolled "
                          "solver cannot model; leave sensor.pitch_m unset (null) for training")
    sensor = sensor_from_config(cfg)
    physics = CodedPhysics(system, sensor, masks=masks, noise=noise_model_from_config(cfg))
    m = cfg.model
    # a camera counts photons (unknown gain: the unfolded model rescales y); without one the
    # measurements are |A x|² (+ noise.model) in the operator's units, which the model keeps
    rec = build_reconstructor(kind=m.kind, encoding=cfg.data.encoding, widths=m.widths, norm=m.norm,
                              solver=m.solver, n_unrolled=m.n_unrolled, n_power_iter=m.n_power_iter,
                              n_stages=m.n_stages, n_warm=m.n_warm, shared=m.shared,
                              normalize="rms" if sensor is not None else "none")
    if getattr(rec, "net", None) is not None:
        try:
            rec.net.check_size(size, size)
        except NetworkError as exc:
            raise ConfigError(f"model.widths = {m.widths}: {exc}") from exc
    return PhaseRetrievalModel(physics, rec, learn_masks=m.learn_masks)


def load_objects(cfg: Config, split: str, n: int, key: str) -> torch.Tensor:
    """``n`` objects ``(n, H, W)`` complex64 from the configured image source's ``split``."""
    from learning.encoding import ObjectSet
    from learning.errors import ImageSourceError
    from learning.images import open_image_source

    d = cfg.data
    cdp = _cdp_dataset_objects(d.source, split, n, key, cfg)
    if cdp is not None:
        return cdp
    try:
        images = open_image_source(d.source, d.size, split=split, seed=cfg.seed, resize=d.resize, n=n,
                                   key=d.npz_key, dataset=d.h5_dataset)
    except ImageSourceError as exc:
        what = f"{key} = {n} objects" if n is not None else f"{key}: the objects"
        raise ConfigError(f"{what} from data.source = {d.source!r} (split {split!r}): {exc}") from exc
    objs = ObjectSet(images, encoding=d.encoding, phase_range_rad=tuple(d.phase_range_rad), seed=cfg.seed)
    return torch.stack([objs[i] for i in range(len(objs))])


def _cdp_dataset_objects(source: str, split: str, n: int, key: str, cfg: Config) -> Optional[torch.Tensor]:
    """The ``objects`` of a CDP dataset file (``phaseforge simulate``) when ``data.source`` is one,
    split with :func:`learning.images.split_indices` (the file's seed); else ``None``."""
    p = Path(str(source)).expanduser()
    if not _is_cdp_dataset(p):
        return None
    from learning.h5io import CDPDataset
    ds = CDPDataset(p, split=split)
    enc = (ds.params.get("data") or {}).get("encoding")
    if enc is not None and enc != cfg.data.encoding:
        raise ConfigError(f"data.source = {source!r} holds {enc} objects but data.encoding = "
                          f"{cfg.data.encoding!r}; set data.encoding: {enc}")
    if tuple(ds.object_shape) != (cfg.data.size, cfg.data.size):
        raise ConfigError(f"data.source = {source!r} holds {ds.object_shape[0]}×{ds.object_shape[1]} objects but "
                          f"data.size = {cfg.data.size}; set data.size: {ds.object_shape[0]} or simulate "
                          f"the dataset at this size")
    if len(ds) < n:
        raise ConfigError(f"{key} = {n} but the {split} split of {source} holds only {len(ds)} objects; "
                          f"lower {key} or simulate more objects")
    return torch.stack([ds.sample(i)["x"] for i in range(n)])


def _settings(cfg: Config, progress: bool):
    from learning.training import TrainSettings
    t, d = cfg.train, cfg.distill
    return TrainSettings(epochs=t.epochs, batch_size=t.batch_size, lr_mask=t.lr_mask, lr_net=t.lr_net,
                         weight_decay=t.weight_decay, schedule=t.schedule, warmup_steps=t.warmup_steps,
                         grad_clip=t.grad_clip, seed=cfg.seed, noise=t.noise, grad_norm_every=t.grad_norm_every,
                         balance=d.balance, balance_warmup=d.balance_warmup, val_seed=t.val_seed,
                         progress=progress)


# ----------------------------------------------------------------------------------------------
# run folders
# ----------------------------------------------------------------------------------------------
from learning.h5io.attrs import flatten as _flat  # noqa: E402  (dotted key paths of a config tree)


def _prepare_run_dir(out: Path, cfg: Config, *, resume: bool, overwrite: bool) -> None:
    if resume:
        last = out / "checkpoints" / "last.pt"
        if not last.is_file():
            raise RunError(f"--resume: {last} does not exist; start the run without --resume")
        old = _run_config(out)
        diffs = [k for k, v in _flat(to_dict(cfg)).items() if _flat(to_dict(old)).get(k) != v]
        if diffs:
            k = diffs[0]
            raise RunError(f"--resume: the configuration differs from the one {out} was started with "
                           f"({', '.join(diffs[:5])}; e.g. {k} was {_flat(to_dict(old)).get(k)!r}, now "
                           f"{_flat(to_dict(cfg))[k]!r}); resume with the run's own config.yaml")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"run folder {out} exists and is not empty; pass --overwrite to replace it or "
                           f"--resume to continue it")
        if not ((out / "config.yaml").exists() or (out / "checkpoints").exists()):
            raise RunError(f"{out} does not look like a run folder (no config.yaml / checkpoints); refusing "
                           f"to delete it with --overwrite — choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _run_config(run: Path) -> Config:
    p = Path(run) / "config.yaml"
    if not p.is_file():
        raise RunError(f"{run} is not a run folder (no config.yaml); give the --out folder of a "
                       f"`phaseforge train` run")
    return from_yaml_text(p.read_text())


def load_run(run, which: str = "best", device: str = "cpu"):
    """``(config, model, checkpoint state)`` of a finished run (``which`` = best or last)."""
    from learning.training import CheckpointError, load_checkpoint

    run = Path(run)
    cfg = _run_config(run)
    model = build_model(cfg)
    path = run / "checkpoints" / f"{which}.pt"
    if which == "best" and not path.exists():
        path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the model of {run / 'config.yaml'} "
                              f"({str(exc).splitlines()[0]}); the config or the checkpoint was changed — "
                              f"retrain the run") from exc
    return cfg, model.to(device), state


def check_geometry(teacher_cfg: Config, student_cfg: Config, teacher_run, *, evaluating: bool = False) -> None:
    """Raise :class:`RunError` naming every key in :data:`GEOMETRY_KEYS` that differs."""
    ft, fs = _flat(to_dict(teacher_cfg)), _flat(to_dict(student_cfg))
    bad = [k for k in GEOMETRY_KEYS if ft.get(k) != fs.get(k)]
    if bad and evaluating:
        desc = "; ".join(f"{k}: first run {ft.get(k)!r}, this run {fs.get(k)!r}" for k in bad)
        raise RunError(f"run {teacher_run} images objects differently from the first run ({desc}); "
                       f"evaluate together only runs of the same geometry")
    if bad:
        desc = "; ".join(f"{k}: teacher {ft.get(k)!r}, student {fs.get(k)!r}" for k in bad)
        raise RunError(f"teacher run {teacher_run} and the student configuration disagree on the geometry "
                       f"({desc}); a teacher can only be distilled into a student that images the same "
                       f"objects the same way — set these keys in the student config to the teacher's values")


def _init_distributed(device: str):
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def _masks_figure(model, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ph = model.physics.design_phase().cpu().numpy()
    L = ph.shape[0]
    fig, axes = plt.subplots(1, L, figsize=(2.6 * L, 2.6), squeeze=False)
    for l in range(L):
        im = axes[0, l].imshow(ph[l], cmap="twilight", vmin=0, vmax=2 * math.pi)
        axes[0, l].set_title(f"mask {l}")
        axes[0, l].axis("off")
    fig.colorbar(im, ax=axes[0, -1], fraction=0.046, label="phase (rad)")
    fig.suptitle(title)
    return fig


def train_run(cfg: Config, out, *, resume: bool = False, overwrite: bool = False, device: str = "cpu",
              progress: bool = True, teacher_run=None, stop_after_epoch: Optional[int] = None) -> dict:
    """Train one system into the run folder ``out`` (module docstring); with ``teacher_run``
    the student is distilled from that run's best checkpoint (frozen)."""
    from learning.losses import DistillationLoss, ReconstructionLoss
    from learning.training import dist_info, train

    out = Path(out)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA device is available here; use --device cpu")
    teacher = None
    if teacher_run is not None:
        tcfg = _run_config(teacher_run)
        check_geometry(tcfg, cfg, teacher_run)
        _, teacher, _ = load_run(teacher_run, "best", device)
    tr = load_objects(cfg, "train", cfg.train.n_train, "train.n_train").to(device)
    va = load_objects(cfg, "val", cfg.train.n_val, "train.n_val").to(device)
    model = build_model(cfg).to(device)
    losses: List = [ReconstructionLoss(cfg.train.recon_loss)]
    weights: Dict[str, float] = {"recon": 1.0}
    d = cfg.distill
    if teacher is not None:
        dl = DistillationLoss(teacher, model, mask_kind=d.mask_loss if d.mask_weight > 0 else "none",
                              feature_levels=d.feature_levels if d.feature_weight > 0 else [],
                              feature_kind=d.feature_kind, use_output=d.output_weight > 0,
                              teacher_noise=d.teacher_noise).to(device)
        losses.append(dl)
        weights = {"recon": d.recon_weight, "mask": d.mask_weight, "feature": d.feature_weight,
                   "output": d.output_weight}
        if d.unlabelled_weight > 0:
            from learning.transfer import UnlabelledDistillation
            pool = load_objects(cfg, "train", cfg.train.n_train + d.n_unlabelled,
                                "train.n_train + distill.n_unlabelled")[cfg.train.n_train:].to(device)
            losses.append(UnlabelledDistillation(teacher, pool, teacher_noise=d.teacher_noise).to(device))
            weights["unlabelled"] = d.unlabelled_weight
    # everything that can be checked before training has been: now touch the run folder
    _init_distributed(device)
    rank, world = dist_info()
    if rank == 0:
        _prepare_run_dir(out, cfg, resume=resume, overwrite=overwrite)
        write_text(out / "config.yaml", dump(cfg))
    role = "student (distilled)" if teacher is not None else cfg.model.role
    res = train(model, losses, weights, tr, va, _settings(cfg, progress), out, encoding=cfg.data.encoding,
                phase_range_rad=tuple(cfg.data.phase_range_rad), resume=resume, config=to_dict(cfg),
                stop_after_epoch=stop_after_epoch, title=f"{role} {out.name}")
    summary = {"run": str(out), "role": role, "teacher_run": None if teacher_run is None else str(teacher_run),
               "n_masks": cfg.masks.n_masks, "best_val_psnr": res["best_val_psnr"], "final": res["final"],
               "steps": res["steps"], "seconds": res["seconds"], "stopped_early": res["stopped_early"],
               "world_size": world, "device": device, "software": f"phaseforge {__version__}"}
    if res["stopped_early"] or rank != 0:
        return summary
    _, best, _ = load_run(out, "best", device)
    ph = best.physics
    with torch.no_grad():
        # the unit-free operator without an SLM has no pitch: the design is on the configured (nominal) grid
        pitch = ph.pixel_pitch_m if ph.pixel_pitch_m is not None else cfg.optics.pitch_m
        design = write_design(out / "design.h5", ph.design_phase().cpu(), pixel_pitch_m=pitch,
                              wavelength_m=cfg.optics.wavelength_m, levels=ph.design_levels(),
                              z_m=cfg.optics.z_m, method=ph.system.method, source=str(out), overwrite=True,
                              extra={"checkpoint": "checkpoints/best.pt", "role": role,
                                     "teacher_run": summary["teacher_run"],
                                     "best_val_psnr_db": res["best_val_psnr"]})
    save_figure(_masks_figure(best, f"{role}: designed masks"), out / "masks.png", dpi=100)
    summary["design"] = str(design)
    write_json(out / "metrics.json", summary)
    return summary


def distill_run(teacher_run, cfg: Config, out, **kw) -> dict:
    """``phaseforge distill``: :func:`train_run` under the frozen teacher of ``teacher_run``."""
    if teacher_run is None or not Path(teacher_run).is_dir():
        raise RunError(f"--teacher {teacher_run}: no such run folder; train the teacher first "
                       f"(phaseforge train --config teacher.yaml --out RUN)")
    return train_run(cfg, out, teacher_run=Path(teacher_run), **kw)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
#: ``evaluate`` without ``--data``: the first run's image source's *test* split, data seed
#: :data:`DEFAULT_TEST_SEED`, the first :data:`DEFAULT_TEST_OBJECTS` objects — the same objects for
#: every run whatever its own seed, and the held-out test set of ``benchmarks/distillation.py``
DEFAULT_TEST_OBJECTS = 64
DEFAULT_TEST_SEED = 0

#: the checkpoints ``evaluate --checkpoint`` may pick
CHECKPOINTS = ("best", "last")


def _is_cdp_dataset(path: Path) -> bool:
    if Path(path).suffix.lower() not in (".h5", ".hdf5") or not Path(path).is_file():
        return False
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return "objects" in f and "measurements" in f
    except OSError:
        return False


def _test_objects(data, cfg: Config, n: Optional[int]) -> torch.Tensor:
    """The test objects: a CDP dataset's objects, an image source (folder, .npy/.npz, HDF5 stack)
    encoded as the runs were trained (size, encoding, phase range; all its images), or without
    ``data`` the default test set (:data:`DEFAULT_TEST_OBJECTS`)."""
    import dataclasses

    d = cfg.data
    if data is None:
        return load_objects(dataclasses.replace(cfg, seed=DEFAULT_TEST_SEED), "test",
                            DEFAULT_TEST_OBJECTS if n is None else n, "evaluate --n")
    if not _is_cdp_dataset(Path(data)):
        if not Path(data).expanduser().exists():
            raise RunError(f"--data {data} does not exist; give a CDP dataset (phaseforge simulate) or an image "
                           f"folder / .npy / .npz / HDF5 image stack")
        own = dataclasses.replace(cfg, seed=DEFAULT_TEST_SEED, data=dataclasses.replace(d, source=str(data)))
        return load_objects(own, "all", n, "evaluate --data")
    from learning.h5io import CDPDataset
    ds = CDPDataset(data)
    stored = ds.params.get("data") or {}
    enc = stored.get("encoding")
    if enc is not None and enc != d.encoding:
        raise RunError(f"{data} holds {enc} objects but the runs were trained on {d.encoding} objects "
                       f"(data.encoding); simulate the test set with data.encoding={d.encoding}")
    rng = stored.get("phase_range_rad")
    if d.encoding != "amplitude" and rng is not None and not np.allclose(np.asarray(rng, dtype=float),
                                                                         np.asarray(d.phase_range_rad, dtype=float)):
        lo, hi = (float(v) for v in d.phase_range_rad)
        raise RunError(f"{data} holds objects with phases in [{float(rng[0]):.4g}, {float(rng[1]):.4g}] rad but the "
                       f"runs were trained on [{lo:.4g}, {hi:.4g}] rad (data.phase_range_rad); the scores would "
                       f"measure the range mismatch, not the system — simulate the test set with "
                       f"--set data.phase_range_rad=[{lo!r},{hi!r}], or give an image folder as --data")
    k = len(ds) if n is None else min(n, len(ds))
    return torch.stack([ds.sample(i)["x"] for i in range(k)])


def _checkpoint_file(run: Path, which: str) -> Path:
    """``run/checkpoints/<which>.pt``, refused (not replaced by another) when missing."""
    if which not in CHECKPOINTS:
        raise RunError(f"--checkpoint {which!r}: choose one of {CHECKPOINTS}")
    path = Path(run) / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        other = [c for c in CHECKPOINTS if c != which and (Path(run) / "checkpoints" / f"{c}.pt").is_file()]
        hint = (f"it has {other[0]}.pt: pass --checkpoint {other[0]} to evaluate that one" if other
                else "train the run (phaseforge train) first")
        raise RunError(f"run {run} has no checkpoints/{which}.pt; {hint}")
    return path


def evaluate_runs(runs: Sequence, out, *, data=None, n: Optional[int] = None, seed: int = 0,
                  classical_iters: int = 200, classical: Sequence[str] = ("er", "wf"), device: str = "cpu",
                  progress: bool = True, overwrite: bool = False, checkpoint: str = "best") -> dict:
    """``phaseforge evaluate``: every run and the classical solver with each run's masks on the
    same test objects and noise stream; table (JSON, CSV, printed) and figures in ``out``.

    ``data``: a CDP dataset (its objects), an image folder or stack (encoded as the runs were
    trained, every image; each run simulates its own measurements), or ``None`` for the default
    test set (:data:`DEFAULT_TEST_OBJECTS`). ``checkpoint`` (best or last) is loaded from every run;
    a run without it is refused (never silently replaced), and ``metrics.json`` records each file."""
    from learning.evaluation import EvalEntry, evaluate_entries, format_table

    out = Path(out)
    if out.exists() and (out / "metrics.json").exists() and not overwrite:
        raise RunError(f"{out} already holds an evaluation (metrics.json); pass --overwrite to replace it")
    if not runs:
        raise RunError("evaluate needs at least one run folder")
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise RunError(f"--n = {n!r}: evaluate needs at least one test object; give N >= 1, or leave --n out for "
                       f"the whole test set")
    loaded, used = [], {}
    for r in runs:
        ck = _checkpoint_file(Path(r), checkpoint)  # before load_run, which would fall back to last.pt
        cfg, model, state = load_run(r, checkpoint, device)
        loaded.append((Path(r), cfg, model, state))
        used[str(r)] = {"checkpoint": checkpoint, "file": str(ck), "epoch": state.get("epoch"),
                        "step": state.get("step")}
    cfg0 = loaded[0][1]
    for r, cfg, _, _ in loaded[1:]:
        check_geometry(cfg0, cfg, r, evaluating=True)
    objects = _test_objects(data, cfg0, n).to(device)
    size = cfg0.data.size
    if tuple(objects.shape[-2:]) != (size, size):
        raise RunError(f"{data}: objects are {tuple(objects.shape[-2:])} but the runs were trained on "
                       f"{size}×{size} (data.size); simulate the test set with data.size={size}")
    entries, names = [], []
    for r, _, model, _ in loaded:
        name = r.name if r.name not in names else f"{r.parent.name}/{r.name}"  # unique row names
        names.append(name)
        entries.append(EvalEntry(name, model))
        for solver in classical:  # the classical solvers on the run's own masks (same objects, same noise)
            entries.append(EvalEntry(f"{name} masks, {solver.upper()} only", model, classical=solver,
                                     n_iter=classical_iters))
    res = evaluate_entries(entries, objects, encoding=cfg0.data.encoding,
                           phase_range_rad=tuple(cfg0.data.phase_range_rad), seed=seed, progress=progress)
    rows = [v["row"] for v in res.values()]
    out.mkdir(parents=True, exist_ok=True)
    import csv
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(out / "table.csv", buf.getvalue())
    table = format_table(rows)
    write_text(out / "table.txt", table + "\n")
    test_set = (str(data) if data is not None else
                f"default: data.source {cfg0.data.source!r}, test split, data seed {DEFAULT_TEST_SEED}, first "
                f"{int(objects.shape[0])} objects")
    write_json(out / "metrics.json", {"runs": [str(r) for r, *_ in loaded], "data": None if data is None else str(data),
                                      "test_set": test_set, "checkpoints": used,
                                      "n_objects": int(objects.shape[0]), "noise_seed": seed,
                                      "rows": rows, "per_sample": {k: v["per_sample"] for k, v in res.items()}})
    _evaluation_figures(out, loaded, names, res, objects, cfg0)
    return {"rows": rows, "table": table, "out": str(out)}


def _read_csv_rows(path: Path) -> List[dict]:
    import csv

    def num(v):
        if v in ("", None):
            return None
        try:
            return float(v) if any(c in v for c in ".eEn") else int(v)
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_curves(run: Path, state: dict):
    """``(history, val_history)`` of the whole run: its ``history.csv`` / ``val.csv`` (written after
    every epoch) when present, else the lists stored in the checkpoint ``state`` (which stop at
    that checkpoint's step)."""
    h, v = Path(run) / "history.csv", Path(run) / "val.csv"
    if h.is_file() and v.is_file():
        return _read_csv_rows(h), _read_csv_rows(v)
    return state.get("history", []), state.get("val_history", [])


def results_figure(res, objects, cfg):
    """Ground truth and each row's first reconstructions (global phase aligned), the row's name and
    mean PSNR in a label column of its own (long names wrap instead of being cut off)."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learning.metrics import align_global_phase

    enc = cfg.data.encoding
    if enc == "phase":
        lo, hi = (float(v) for v in cfg.data.phase_range_rad)  # phases wrapped into [lo, lo + 2π)
        show, vmin, vmax, unit = (lambda z: np.mod(np.angle(z) - lo, 2 * math.pi) + lo), lo, min(hi, lo + 2 * math.pi), \
            "phase (rad)"
    else:
        show, vmin, vmax, unit = (lambda z: np.abs(z)), 0.0, 1.0, "|x|"
    k = min(4, objects.shape[0])
    names = list(res)
    rows = [("ground truth", objects[:k].cpu())]
    for nm in names:
        rows.append((f"{nm}: {res[nm]['row']['psnr_mean']:.1f} dB",
                     align_global_phase(res[nm]["examples"][:k], objects[:k].cpu())))
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.9 * k + 2.6, 1.9 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.15] + [1.0] * k}, layout="constrained")
    im = None
    for i, (label, xs) in enumerate(rows):
        axes[i, 0].axis("off")
        axes[i, 0].text(1.0, 0.5, "\n".join(textwrap.wrap(label, 22)), ha="right", va="center", fontsize=8,
                        transform=axes[i, 0].transAxes)
        for j in range(k):
            im = axes[i, j + 1].imshow(show(xs[j].numpy()), cmap="gray", vmin=vmin, vmax=vmax)
            axes[i, j + 1].axis("off")
    if im is not None:
        fig.colorbar(im, ax=list(axes[:, -1]), fraction=0.05, shrink=0.8, label=unit)
    return fig


def _evaluation_figures(out: Path, loaded, run_names, res, objects, cfg) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = results_figure(res, objects, cfg)
    save_figure(fig, out / "reconstructions.png", dpi=90)
    plt.close(fig)
    # masks and CDPs of each run
    fig, axes = plt.subplots(len(loaded), 2, figsize=(5, 2.5 * len(loaded)), squeeze=False)
    for i, ((_, _, model, _), nm) in enumerate(zip(loaded, run_names)):
        ph = model.physics.design_phase()[0].cpu().numpy()
        axes[i, 0].imshow(ph, cmap="twilight", vmin=0, vmax=2 * math.pi)
        axes[i, 0].set_title(f"{nm}: mask 0 of {model.physics.n_masks}", fontsize=8)
        y = res[nm]["measurement"][0].numpy()
        axes[i, 1].imshow(np.log10(1 + y), cmap="magma")
        axes[i, 1].set_title("CDP of object 0 (log)", fontsize=8)
        for a in axes[i]:
            a.axis("off")
    fig.tight_layout()
    save_figure(fig, out / "masks_cdps.png", dpi=90)
    plt.close(fig)
    # training curves (the whole run, from its CSV files: the evaluated checkpoint may be an earlier
    # one, whose history stops at its step) and mask-gradient norms of every run; ★ = that checkpoint
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for (run, _, _, state), nm in zip(loaded, run_names):
        h, vh = run_curves(run, state)
        line, = ax[0].plot([v["step"] for v in vh], [v["val_psnr"] for v in vh], "o-", label=nm, ms=3)
        at = [v for v in vh if v["step"] == state.get("step")]
        if at:
            ax[0].plot([at[0]["step"]], [at[0]["val_psnr"]], "*", color=line.get_color(), ms=11)
        pts = [(row["step"], sum(v for kk, v in row.items() if kk.startswith("grad_mask_") and v is not None))
               for row in h if any(kk.startswith("grad_mask_") for kk in row)]
        if pts:
            ax[1].semilogy([p[0] for p in pts], [max(p[1], 1e-16) for p in pts], label=nm, lw=1)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("validation PSNR (dB)")
    ax[0].legend(fontsize=7)
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("Σ_terms ‖∂term/∂θ‖")
    ax[1].legend(fontsize=7)
    ax[1].set_title("gradient reaching the mask phases", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "training.png", dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------
CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "configs"
#: the shipped learned models (``data/models``: ``cdp_unfolded_L4.pt``, ``cdp_unfolded_L1_4level.pt``)
MODELS_DIR = CONFIG_DIR.parent / "models"

DEMO_OVERRIDES = ["train.n_train=256", "train.n_val=32", "train.epochs=12", "train.grad_norm_every=4"]


def learning_demo(out_dir, *, progress: bool = True, threads: int = 1) -> str:
    """simulate → teacher → student E2E → student distilled → evaluate, on 32² embedded objects
    (192 steps per run); prints the table and returns the distilled student's ``design.h5``.

    ``threads``: torch intra-op threads while it runs (restored after). One is the default: at
    32² the tensors are too small for a second thread to pay off, and on a shared machine
    OpenMP threads spinning against other processes made a step ~6× slower (measured 0.14 s vs
    1.8 s per teacher step with 2 threads at load 6 on 2 cores)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _learning_demo(Path(out_dir), progress)
    finally:
        torch.set_num_threads(n_threads)


def _learning_demo(out_dir: Path, progress: bool) -> str:
    from .pipeline import simulate

    out = Path(out_dir) / "learning"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    teacher_cfg = load(CONFIG_DIR / "teacher.yaml", DEMO_OVERRIDES)
    student_cfg = load(CONFIG_DIR / "student_e2e.yaml", DEMO_OVERRIDES)
    distill_cfg = load(CONFIG_DIR / "student_distill.yaml", DEMO_OVERRIDES)
    test_cfg = load(CONFIG_DIR / "teacher.yaml", ["data.split=test", "data.n=32"])
    data = simulate(test_cfg, out / "test_cdp.h5", overwrite=True, progress=progress)
    kw = dict(overwrite=True, progress=progress)
    train_run(teacher_cfg, out / "teacher", **kw)
    train_run(student_cfg, out / "student_e2e", **kw)
    distill_run(out / "teacher", distill_cfg, out / "student_distill", **kw)
    rep = evaluate_runs([out / "teacher", out / "student_e2e", out / "student_distill"], out / "evaluation",
                        data=data, overwrite=True, progress=progress)
    print(rep["table"])
    print(f"learning demo: {time.perf_counter() - t0:.0f} s, outputs in {out}")
    return str(out / "student_distill" / "design.h5")
