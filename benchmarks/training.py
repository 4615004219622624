"""Time per training step (teacher and student) against the floor measured in the same run.

    python benchmarks/training.py [--size 64] [--batch 16] [--threads 2] [--steps 8] [--repeats 3]
                                  [--kind unfolded unet]

* **step**: wall time of :func:`learning.training.train` per step — one epoch of ``--steps``
  steps, including object indexing, per-sample sensor noise, the loss, per-step mask-gradient
  logging, AdamW, the scheduler, the end-of-epoch validation (16 objects), the atomic
  checkpoint and the CSV history (everything but the final figures), divided by the steps;
* **floor**: the U-Net forward + backward alone (on a ready input, same widths and batch,
  backward down to the input as the mask gradient needs) plus
  the CDP operator with the unrolled first estimate forward + backward alone (gradient to the
  mask phases, noiseless measurements), each timed separately on the same sizes;
  for ``model.kind: unfolded`` (the default reconstructor, :mod:`learning.unfolding`) the floor is
  the model's own forward + backward alone: noiseless measurement, warm start, the stages'
  physics steps and denoisers, the loss, backward to the masks and weights (no loop bookkeeping);
* **ratio** = step / floor (target ≤ 1.3: the loop's bookkeeping must not dominate).

Paired timing: each repeat times one loop epoch and then the floor (``--steps`` calls of each
part), so a change of machine load hits both; medians over ``--repeats`` (the ratio is the median
of the per-repeat ratios); peak RSS of the process at the end.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phaseforge.config import load  # noqa: E402
from phaseforge.learn import CONFIG_DIR, build_model  # noqa: E402
from learning.losses import ReconstructionLoss, recon_error  # noqa: E402
from learning.networks import field_to_channels  # noqa: E402
from learning.systems import first_estimate  # noqa: E402
from learning.training import TrainSettings, train  # noqa: E402


def _objects(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.polar(torch.ones(n, size, size), torch.pi * torch.rand(n, size, size, generator=g))


def bench(name, cfg_file, size, batch, steps, repeats, kind="unet"):
    cfg = load(CONFIG_DIR / cfg_file, [f"data.size={size}", f"train.batch_size={batch}", f"model.kind={kind}"])
    tr = _objects(batch * steps, size, 0)
    va = _objects(16, size, 1)
    settings = TrainSettings(epochs=1, batch_size=batch, progress=False, grad_norm_every=1)

    def loop():
        model = build_model(cfg)
        with tempfile.TemporaryDirectory() as d:
            return train(model, [ReconstructionLoss()], {}, tr, va, settings, Path(d) / "run")["seconds"] / steps

    model = build_model(cfg).train()
    x = tr[:batch]
    if kind == "unfolded":
        def whole():
            model.zero_grad(set_to_none=True)
            yy = model.physics.measure(x, noise="none")
            recon_error(model.reconstructor(yy, model.physics).x, x).backward()

        def per_call1(fn):
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            return (time.perf_counter() - t) / steps

        loop(), whole()  # warm-up
        reps = [(loop(), per_call1(whole)) for _ in range(repeats)]
        t_model = statistics.median(r[1] for r in reps)
        return {"system": name, "kind": kind, "L": cfg.masks.n_masks, "widths": cfg.model.widths,
                "step_s": statistics.median(r[0] for r in reps), "unet_s": float("nan"), "physics_s": t_model,
                "floor_s": t_model, "ratio": statistics.median(r[0] / r[1] for r in reps)}
    with torch.no_grad():
        y = model.physics.measure(x, noise="none")
        x0 = first_estimate(model.physics, y, n_iter=cfg.model.n_unrolled, encoding=cfg.data.encoding)
    inp = field_to_channels(x0).requires_grad_(True)  # the mask gradient crosses the U-Net
    net = model.reconstructor.net
    theta = model.physics.theta

    def unet():
        net.zero_grad(set_to_none=True)
        inp.grad = None
        out, _ = net(inp)
        out.square().mean().backward()

    def physics():
        theta.grad = None
        yy = model.physics.measure(x, noise="none")
        est = first_estimate(model.physics, yy, n_iter=cfg.model.n_unrolled, encoding=cfg.data.encoding)
        recon_error(est, x).backward()

    def per_call(fn):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t) / steps

    loop(), unet(), physics()  # warm-up
    # paired: each repeat times the loop and then the floor, so load drifts hit both alike
    reps = [(loop(), per_call(unet), per_call(physics)) for _ in range(repeats)]
    step = statistics.median(r[0] for r in reps)
    t_net = statistics.median(r[1] for r in reps)
    t_phys = statistics.median(r[2] for r in reps)
    ratio = statistics.median(r[0] / (r[1] + r[2]) for r in reps)
    floor = t_net + t_phys
    return {"system": name, "kind": kind, "L": cfg.masks.n_masks, "widths": cfg.model.widths, "step_s": step,
            "unet_s": t_net, "physics_s": t_phys, "floor_s": floor, "ratio": ratio}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kind", nargs="+", default=["unfolded", "unet"], choices=["unfolded", "unet"])
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="also write the printed tables as a results file, e.g. benchmarks/results/training/training.json (the docs render it)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_file import Recorder
    with Recorder(a.json, 'training', argv):
        from phaseforge.alloc import tune_allocator
        print(f"allocator tuning (phaseforge/alloc.py): {'on' if tune_allocator() else 'off'}")
        torch.set_num_threads(a.threads)
        rows = [r for k in a.kind for r in (
            bench("teacher", "teacher.yaml", a.size, a.batch, a.steps, a.repeats, k),
            bench("student (SLM 2×, 4 levels)", "student_e2e.yaml", a.size, a.batch, a.steps, a.repeats, k))]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"training step, {a.size}², batch {a.batch}, {a.threads} threads "
              f"(median of {a.repeats}; loop = {a.steps} steps + validation + checkpoint per epoch; "
              f"unet: floor = U-Net f+b + CDP/unrolled f+b; unfolded: floor = the model's f+b)")
        print("| system | kind | L | U-Net widths | threads | step s | U-Net f+b s | CDP + model f+b s | floor s | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['system']} | {r['kind']} | {r['L']} | {', '.join(map(str, r['widths']))} | {a.threads} | "
                  f"{r['step_s']:.3f} | {r['unet_s']:.3f} | {r['physics_s']:.3f} | {r['floor_s']:.3f} | {r['ratio']:.2f} |")
        print(f"peak RSS {peak:.0f} MiB")
        return rows


if __name__ == "__main__":
    main()
