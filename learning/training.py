r"""One training loop for every variant: teacher, student end to end, student under distillation.

:func:`train` takes a :class:`~learning.systems.PhaseRetrievalModel`, a list of losses (each
called as ``loss(x_net, x, y, physics, model)`` and returning ``{term: scalar}``), the term
weights, training/validation objects and :class:`TrainSettings`. Variants differ only in the
losses passed (reconstruction alone, or reconstruction + :class:`~learning.losses.DistillationLoss`)
and in whether the masks are learnable.

What a run folder gets (``run_dir``):

* ``checkpoints/last.pt`` after every epoch and ``checkpoints/best.pt`` when the validation PSNR
  improved: model, loss-module state (adapters), optimiser, scheduler, balancing state, RNG
  state, history, the resolved configuration; written atomically (``*.tmp`` then rename).
* ``history.csv`` — one row per step: loss, every weighted term, learning rates, and the norm of
  the gradient each weighted term sends to the mask phases (``grad_mask_<term>``; every
  ``grad_norm_every`` steps, empty otherwise). ``val.csv`` — one row per epoch.
* ``curves.png`` and ``mask_grad_norms.png`` (:func:`plot_history`).

Reproducibility: epoch ``e`` visits the objects in ``randperm`` order from a generator seeded
with ``(seed, e)``, and object ``j`` of the global batch of step ``s`` draws its sensor noise from
a generator seeded with ``(seed, s, j)``: nothing depends on how many steps ran before, so
``resume=True`` continues exactly (resumed = uninterrupted), and a data-parallel run on ``W``
processes (each taking ``B/W`` of the same global batch; the model wrapped in torch's
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients in buckets while
the backward pass runs; the parameters of loss modules, e.g. distillation adapters, are averaged
with ``all_reduce`` after it) reproduces the single-process run when the network has no
batch-dependent layers (``norm="group"`` or ``"none"``; BatchNorm statistics are per process:
``broadcast_buffers=False``, as without SyncBatchNorm). Deterministic on CPU for a given seed.

A non-finite loss stops the run before the optimiser step with :class:`TrainingError`; the last
checkpoint (end of the previous epoch) is left intact.
"""
from __future__ import annotations

import csv
import io
import math
import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from optics.fileio import atomic_path, save_figure, write_text

from .errors import LearningError

__all__ = ["TrainingError", "CheckpointError", "TrainSettings", "SCHEDULES", "train",
           "load_checkpoint", "save_checkpoint", "validate", "encoded_psnr", "plot_history",
           "step_seeds", "dist_info"]

SCHEDULES = ("cosine", "constant")
CHECKPOINT_FORMAT = "phaseforge-checkpoint"


class TrainingError(LearningError):
    """Training cannot go on (non-finite loss, bad settings); the message names the fix."""


class CheckpointError(LearningError):
    """A checkpoint is missing, unreadable or from another configuration."""


@dataclass
class TrainSettings:
    """Optimisation settings (the ``train`` section of a configuration)."""

    epochs: int = 10
    batch_size: int = 16
    lr_mask: float = 0.05          # AdamW learning rate of the mask phases (rad per step scale)
    lr_net: float = 1e-3           # AdamW learning rate of the network (and loss adapters)
    weight_decay: float = 1e-4     # network only; mask phases are not decayed
    schedule: str = "cosine"       # cosine | constant (after a linear warm-up)
    warmup_steps: int = 0
    grad_clip: float = 0.0         # max global grad norm (0: off)
    seed: int = 0
    noise: str = "differentiable"  # training measurements: differentiable | exact | none
    grad_norm_every: int = 1       # per-term mask-gradient norms every k steps (0: never)
    balance: bool = False          # balance distillation terms by their mask-gradient norms
    balance_warmup: int = 50       # steps before balancing starts
    val_seed: int = 12345          # fixed noise seed of validation
    progress: bool = True


def dist_info():
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def step_seeds(seed: int, step: int, batch: int) -> List[int]:
    """Noise seeds of the ``batch`` objects of global step ``step`` (module docstring)."""
    base = (int(seed) * 1_000_003 + int(step) * 65_537) % (2 ** 61)
    return [(base * 31 + j * 2_654_435_761 + 1) % (2 ** 62) for j in range(batch)]


def _epoch_perm(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((int(seed) * 7919 + int(epoch) * 104_729 + 17) % (2 ** 63))
    return torch.randperm(n, generator=g)


def encoded_psnr(x_hat: torch.Tensor, x: torch.Tensor, encoding: str,
                 phase_range_rad=(0.0, math.pi)) -> torch.Tensor:
    """PSNR (dB, per sample) of the encoded quantity: the phase (range = the encoded phase
    span) for phase objects, the amplitude (range 1) for amplitude objects, the global-phase
    aligned complex field (range 1) for complex objects."""
    from .metrics import align_global_phase, psnr, psnr_amplitude, psnr_phase
    if encoding == "phase":
        return psnr_phase(x_hat, x, data_range=abs(phase_range_rad[1] - phase_range_rad[0]))
    if encoding == "amplitude":
        return psnr_amplitude(x_hat, x, data_range=1.0)
    return psnr(align_global_phase(x_hat, x), x.to(torch.complex128 if x_hat.dtype == torch.complex128
                                                 else torch.complex64), data_range=1.0)


def validate(model, objects: torch.Tensor, *, batch_size: int, seed: int, encoding: str,
             phase_range_rad=(0.0, math.pi)) -> Dict[str, float]:
    """Eval-mode metrics on ``objects`` with exact sensor noise from fixed per-sample seeds."""
    from .losses import recon_error
    was = model.training
    model.eval()
    ps, errs = [], []
    with torch.no_grad():
        for i in range(0, objects.shape[0], batch_size):
            x = objects[i:i + batch_size]
            seeds = [seed * 1_000_003 + i + j for j in range(x.shape[0])]
            _, out = model(x, seeds=seeds, noise="exact")
            ps.append(encoded_psnr(out.x, x, encoding, phase_range_rad))
            errs.append(recon_error(out.x, x) * x.shape[0])
    model.train(was)
    p = torch.cat(ps)
    return {"val_psnr": float(p.mean()), "val_psnr_median": float(p.median()),
            "val_loss": float(torch.stack(errs).sum() / objects.shape[0])}


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _not_plain(obj, where: str) -> Optional[str]:
    """The key path of the first value in ``obj`` that is not a tensor or plain data (dict with
    str/int keys, list, tuple, str, int, float, bool, None), or None when everything is."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_SCALARS:  # exact: np.float64 is a float
        return None
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                return f"{where} key {k!r} ({type(k).__name__})"
            bad = _not_plain(v, f"{where}[{k!r}]")
            if bad:
                return bad
        return None
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            bad = _not_plain(v, f"{where}[{i}]")
            if bad:
                return bad
        return None
    return f"{where} ({type(obj).__module__}.{type(obj).__qualname__})"


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write ``state`` atomically. A checkpoint holds only tensors and plain data, so that
    :func:`load_checkpoint` can read it with ``torch.load(weights_only=True)`` — no pickled object,
    nothing that runs code when a checkpoint someone sent is opened; anything else is refused
    here, naming the entry."""
    state = dict(state, format=CHECKPOINT_FORMAT)
    bad = _not_plain(state, "state")
    if bad:
        raise CheckpointError(f"checkpoint {path}: {bad} is not a tensor or plain data (dict, list, tuple, "
                              f"str, int, float, bool, None); convert it (float(x), x.tolist(), str(path)) "
                              f"before saving, so the checkpoint loads without unpickling objects")
    with atomic_path(path, keep_partial=False) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`train`; a clear :class:`CheckpointError` otherwise.

    Loaded with ``weights_only=True``: tensors and plain data only, so opening a checkpoint or
    model file from anywhere cannot run code. A file that holds pickled Python objects is refused
    (naming the object) before anything in it is built. Every checkpoint phaseforge has written
    holds only tensors and plain data and loads as it is — there is nothing to convert."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; train the run first "
                              f"(phaseforge train --out {p.parent.parent}) or check the path")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        msg = str(exc)
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if glob or "Unsupported class" in msg:
            what = glob.group(1) if glob else "a Python class"
            raise CheckpointError(
                f"checkpoint {p} holds a pickled Python object ({what}), not only tensors and plain "
                f"data; loading it could run code, so it is refused and nothing in it was run. "
                f"phaseforge checkpoints never hold such objects: retrain the run, or ask whoever "
                f"sent the file for a checkpoint written by phaseforge") from None
        tail = msg.split("WeightsUnpickler error:", 1)[-1]
        detail = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
        raise CheckpointError(f"checkpoint {p} is corrupt or not a torch file ({type(exc).__name__}: "
                              f"{detail[:200]}); delete it and retrain, or resume from another "
                              f"checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not a phaseforge checkpoint (no format={CHECKPOINT_FORMAT!r})")
    model = state.get("model")
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        raise CheckpointError(f"{p}: entry 'model' is not a mapping of parameter names to tensors; "
                              f"the checkpoint is damaged — delete it and retrain")
    return state


# ----------------------------------------------------------------------------------------------
# history files and figures
# ----------------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: List[dict]) -> None:
    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    write_text(path, buf.getvalue())


def plot_history(run_dir: Path, history: List[dict], val_history: List[dict], title: str = "") -> None:
    """``curves.png`` (loss and terms per step, validation PSNR per epoch) and
    ``mask_grad_norms.png`` (norm of the mask-phase gradient from each weighted term)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = [k for k in (history[0] if history else {}) if k == "loss" or k.startswith("term_")]
    for k in keys:
        v = [r.get(k) for r in history]
        ax[0].semilogy(steps, [max(float(a), 1e-12) for a in v], label=k.replace("term_", ""), lw=1)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("weighted loss")
    ax[0].legend(fontsize=8)
    if val_history:
        ax[1].plot([r["step"] for r in val_history], [r["val_psnr"] for r in val_history], "o-")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation PSNR (dB)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, run_dir / "curves.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    gkeys = [k for k in (history[0] if history else {}) if k.startswith("grad_mask_")]
    for k in gkeys:
        pts = [(r["step"], r[k]) for r in history if r.get(k) not in (None, "")]
        if pts:
            ax.semilogy([p[0] for p in pts], [max(float(p[1]), 1e-16) for p in pts],
                        label=k.replace("grad_mask_", ""), lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("‖∂(weighted term)/∂θ‖")
    ax.set_title("gradient reaching the mask phases")
    if gkeys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, run_dir / "mask_grad_norms.png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def _lr_lambda(settings: TrainSettings, total_steps: int) -> Callable[[int], float]:
    warm = max(0, int(settings.warmup_steps))
    sched = settings.schedule

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if sched == "constant":
            return 1.0
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def _check_settings(s: TrainSettings, n_train: int, world: int) -> int:
    if s.schedule not in SCHEDULES:
        raise TrainingError(f"train.schedule = {s.schedule!r} is not one of {SCHEDULES}")
    for key in ("epochs", "batch_size"):
        if int(getattr(s, key)) < 1:
            raise TrainingError(f"train.{key} must be >= 1, got {getattr(s, key)!r}")
    for key in ("lr_mask", "lr_net"):
        v = getattr(s, key)
        if not (math.isfinite(v) and v >= 0):
            raise TrainingError(f"train.{key} must be a finite learning rate >= 0, got {v!r}")
    if s.batch_size % world:
        raise TrainingError(f"train.batch_size = {s.batch_size} is not divisible by the {world} "
                            f"processes; choose a global batch that is a multiple of WORLD_SIZE")
    if n_train < s.batch_size:
        raise TrainingError(f"only {n_train} training objects for train.batch_size = {s.batch_size}; "
                            f"raise train.n_train (or data.n) or lower the batch size")
    return n_train // s.batch_size


def _allreduce_(tensors: Sequence[torch.Tensor], world: int) -> None:
    if world == 1:
        return
    import torch.distributed as dist
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world)


def train(model, losses: Sequence, weights: Dict[str, float], train_objects: torch.Tensor,
          val_objects: torch.Tensor, settings: TrainSettings, run_dir, *, encoding: str = "phase",
          phase_range_rad=(0.0, math.pi), resume: bool = False, config: Optional[dict] = None,
          stop_after_epoch: Optional[int] = None, title: str = "") -> dict:
    """Train ``model`` (module docstring); returns a summary dict (final/best validation,
    ``seconds`` of the loop from the first step to the last checkpoint, figures excluded).

    ``weights`` maps term names (``"recon"``, ``"mask"``, ``"feature"``, ``"output"``) to their
    weights (absent: 1). ``stop_after_epoch`` ends the run early after that epoch as an
    interruption would (the checkpoint allows ``resume=True`` to finish it).
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints"
    rank, world = dist_info()
    torch.manual_seed(settings.seed)
    steps_per_epoch = _check_settings(settings, train_objects.shape[0], world)
    total_steps = steps_per_epoch * settings.epochs
    local_b = settings.batch_size // world
    loss_modules = [l for l in losses if isinstance(l, torch.nn.Module)]
    mask_params = model.mask_parameters()
    theta = mask_params[0] if mask_params else None
    net_params = model.network_parameters() + [p for m in loss_modules for p in m.parameters()
                                                if p.requires_grad]
    groups = []
    if mask_params:
        groups.append({"params": mask_params, "lr": settings.lr_mask, "weight_decay": 0.0, "name": "mask"})
    if net_params:
        groups.append({"params": net_params, "lr": settings.lr_net, "weight_decay": settings.weight_decay,
                       "name": "net"})
    if not groups:
        raise TrainingError("nothing to train: the masks are fixed and the model has no network")
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(settings, total_steps))
    history: List[dict] = []
    val_history: List[dict] = []
    balance = {"ema": {}, "scale": {}}
    start_epoch = 0
    best = -math.inf
    if resume:
        state = load_checkpoint(ckdir / "last.pt")
        model.load_state_dict(state["model"])
        for m, s in zip(loss_modules, state["losses"]):
            m.load_state_dict(s)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, val_history = state["history"], state["val_history"]
        balance = state["balance"]
        start_epoch = int(state["epoch"])
        best = float(state["best"])
        torch.set_rng_state(state["rng"]["torch"])
    all_params = [p for g in groups for p in g["params"]]
    forward = model
    if world > 1 and any(p.requires_grad for p in model.parameters()):
        # gradients of the model's parameters are averaged by DDP during backward; only the loss
        # modules' own parameters (not part of the model) are all-reduced by hand after it
        from torch.nn.parallel import DistributedDataParallel
        forward = DistributedDataParallel(model, broadcast_buffers=False)
    model_ids = {id(p) for p in model.parameters()} if forward is not model else set()
    extra_params = [p for p in all_params if id(p) not in model_ids]
    t_start = time.perf_counter()
    step = start_epoch * steps_per_epoch
    stopped_early = False
    bar = tqdm(total=total_steps, initial=step, desc=title or "train", unit="step",
               disable=not settings.progress or rank != 0)
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        for m in loss_modules:
            m.train()
        perm = _epoch_perm(settings.seed, epoch, train_objects.shape[0])
        for b in range(steps_per_epoch):
            idx = perm[b * settings.batch_size:(b + 1) * settings.batch_size]
            seeds = step_seeds(settings.seed, step, settings.batch_size)
            lo = rank * local_b
            x = train_objects[idx[lo:lo + local_b]]
            y, out = forward(x, seeds=seeds[lo:lo + local_b], noise=settings.noise)
            terms: Dict[str, torch.Tensor] = {}
            for loss in losses:
                for k, v in loss(out, x, y, model.physics, model).items():
                    terms[k] = v
            eff = {k: float(weights.get(k, 1.0)) * float(balance["scale"].get(k, 1.0)) for k in terms}
            weighted = {k: eff[k] * v for k, v in terms.items()}
            total = sum(weighted.values())
            vals = torch.stack([total.detach()] + [v.detach() for v in weighted.values()])
            _allreduce_([vals], world)
            if not bool(torch.isfinite(vals).all()):
                bad = {k: float(v) for k, v in zip(["loss"] + list(weighted), vals)}
                last = ckdir / "last.pt"
                raise TrainingError(
                    f"non-finite loss at step {step} (epoch {epoch}): {bad}; training stopped before "
                    f"the optimiser step. The last good checkpoint "
                    f"{last if last.exists() else '(none yet)'} is intact. Lower train.lr_mask / "
                    f"train.lr_net, enable train.grad_clip, or check the objects for NaN")
            row = {"step": step, "epoch": epoch, "loss": float(vals[0])}
            for i, k in enumerate(weighted):
                row[f"term_{k}"] = float(vals[i + 1])
            for g in opt.param_groups:
                row[f"lr_{g['name']}"] = g["lr"]
            opt.zero_grad(set_to_none=True)
            log_grads = (theta is not None and settings.grad_norm_every > 0
                         and step % settings.grad_norm_every == 0)
            if log_grads and len(terms) > 1:
                raw = {}
                for k, v in terms.items():
                    if not v.requires_grad:
                        raw[k] = 0.0
                        continue
                    (g,) = torch.autograd.grad(v, theta, retain_graph=True, allow_unused=True)
                    g = torch.zeros_like(theta) if g is None else g.detach().clone()
                    _allreduce_([g], world)
                    raw[k] = float(g.norm())
                for k in terms:
                    row[f"grad_mask_{k}"] = eff[k] * raw[k]
                if settings.balance:
                    for k, v in raw.items():
                        old = balance["ema"].get(k)
                        balance["ema"][k] = v if old is None else 0.9 * old + 0.1 * v
                    if step >= settings.balance_warmup and "recon" in balance["ema"]:
                        ref = balance["ema"]["recon"]
                        for k in terms:
                            if k != "recon" and balance["ema"].get(k, 0.0) > 0:
                                balance["scale"][k] = ref / balance["ema"][k]
            total.backward()
            _allreduce_([p.grad for p in extra_params if p.grad is not None], world)
            if log_grads and len(terms) == 1:
                k = next(iter(terms))
                row[f"grad_mask_{k}"] = float(theta.grad.norm()) if theta.grad is not None else 0.0
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(all_params, settings.grad_clip)
            opt.step()
            sched.step()
            history.append(row)
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{row['loss']:.3g}")
        v = validate(model, val_objects, batch_size=max(1, local_b), seed=settings.val_seed,
                     encoding=encoding, phase_range_rad=phase_range_rad)
        v.update(epoch=epoch, step=step, seconds=time.perf_counter() - t_start)
        val_history.append(v)
        improved = v["val_psnr"] > best
        best = max(best, v["val_psnr"])
        state = {"model": model.state_dict(), "losses": [m.state_dict() for m in loss_modules],
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                 "step": step, "history": history, "val_history": val_history, "balance": balance,
                 "best": best, "rng": {"torch": torch.get_rng_state()}, "config": config or {},
                 "settings": asdict(settings)}
        if rank == 0:
            save_checkpoint(ckdir / "last.pt", state)
            if improved:
                save_checkpoint(ckdir / "best.pt", state)
            _write_csv(run_dir / "history.csv", history)
            _write_csv(run_dir / "val.csv", val_history)
        if world > 1:
            import torch.distributed as dist
            dist.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < settings.epochs:
            stopped_early = True
            break
    bar.close()
    seconds = time.perf_counter() - t_start
    if rank == 0 and not stopped_early:
        plot_history(run_dir, history, val_history, title=title)
    return {"epochs_done": (val_history[-1]["epoch"] + 1) if val_history else 0, "steps": step,
            "final": val_history[-1] if val_history else {}, "best_val_psnr": best,
            "seconds": seconds, "stopped_early": stopped_early,
            "history": history, "val_history": val_history}
