#!/usr/bin/env python
"""Tune the training-free regularised reconstructors (TV, PnP-NLM) for one measurement regime of the
standard CDP protocol, on the tuning images only (never a benchmark image).

The solvers' defaults were chosen at L = 4 (``benchmarks/solvers.py --protocol --images tuning``).
Before a learned model is compared with them in another regime — a single snapshot (L = 1) on a
4-level SLM mask — the comparison is only fair with their settings re-chosen for that regime. This
script scores a small grid on :data:`benchmarks.solvers.TUNING_IMAGE_NAMES` (scikit-image's rocket,
clock, text, brick at 128²; masks and noise from seeds that the benchmark does not use) and writes
the best setting per α:

* TV: ``weight_factor`` (λ = factor · σ_x) and ``n_iter``;
* PnP-NLM: the σ schedule ``sigma_start → sigma_end`` (as multiples of σ_x) and ``n_iter``.

    OMP_NUM_THREADS=1 python benchmarks/tune_regularised.py --n-masks 1 --mask-levels 4 \\
        --json benchmarks/results/cdp_benchmark/tuned_L1_4levels.json

``benchmarks/cdp_benchmark.py --tuned FILE`` then adds the rows ``tv-tuned`` and ``pnp-nlm-tuned``
with these settings (refused when the file's L or mask levels differ from the run's).
"""
from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cdp_benchmark import amplitude_noise_std, make_noise, make_operator, random_masks, score  # noqa: E402
from benchmarks.solvers import protocol_images  # noqa: E402
from optics.fileio import write_json  # noqa: E402

TV_GRID = {"weight_factor": [0.5, 1.0, 2.0, 4.0, 8.0], "n_iter": [40, 120]}
PNP_GRID = {"schedule": [(5.0, 1.0), (10.0, 2.0), (20.0, 4.0), (40.0, 8.0)], "n_iter": [40, 120]}
#: masks and noise of the tuning runs: seeds the benchmark (mask seed 0, its own noise seeds) does not use
TUNING_MASK_SEED = 12345


def settings_grid():
    for wf, n in itertools.product(TV_GRID["weight_factor"], TV_GRID["n_iter"]):
        yield "tv", {"weight_factor": wf, "n_iter": n}
    for (s0, s1), n in itertools.product(PNP_GRID["schedule"], PNP_GRID["n_iter"]):
        yield "pnp-nlm", {"denoiser": "nlm", "sigma_start": s0, "sigma_end": s1, "n_iter": n}


def run(n_masks: int, levels: int, alphas, size: int = 128, progress: bool = True) -> dict:
    from learning.solvers import solve
    names, x = protocol_images("tuning", size)
    op = make_operator(random_masks(n_masks, size, TUNING_MASK_SEED, levels))
    grid = list(settings_grid())
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(alphas) * len(grid) * len(names), desc="tuning", unit="recon")
    res = {"n_masks": n_masks, "mask_levels": levels, "images": list(names), "size": size,
           "mask_seed": TUNING_MASK_SEED, "grid": {"tv": TV_GRID, "pnp-nlm": PNP_GRID}, "alphas": {}}
    for alpha in alphas:
        nm = make_noise("prdeep", alpha)
        ys = []
        for i in range(len(names)):
            g = torch.Generator().manual_seed(777 + 31 * i + int(alpha))
            with torch.no_grad():
                ys.append(nm.sample(op.intensity(x[i].to(torch.complex64))[None], generator=g))
        scores = []
        for method, s in grid:
            ps, secs = [], []
            for i in range(len(names)):
                kw = dict(s)
                name = "pnp" if method == "pnp-nlm" else "tv"
                t0 = time.perf_counter()
                xh = solve(op, ys[i], name, real=True, nonnegative=True, generator=0, history=False,
                           amplitude_noise_std=amplitude_noise_std(nm, ys[i]), **kw).x
                secs.append(time.perf_counter() - t0)
                ps.append(score(xh[0], x[i], op, ys[i][0].clamp(min=0).sqrt())["psnr"])
                if bar is not None:
                    bar.update(1)
            scores.append({"method": method, "settings": s, "psnr_mean": statistics.fmean(ps),
                           "seconds_per_image": statistics.fmean(secs)})
        best = {m: max((r for r in scores if r["method"] == m), key=lambda r: r["psnr_mean"])
                for m in ("tv", "pnp-nlm")}
        res["alphas"][f"{alpha:g}"] = {"scores": scores, "best": best}
        print(f"α = {alpha:g}: " + "; ".join(f"{m} {b['psnr_mean']:.2f} dB with {b['settings']}"
                                             for m, b in best.items()), flush=True)
    if bar is not None:
        bar.close()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-masks", type=int, default=1)
    ap.add_argument("--mask-levels", type=int, default=4)
    ap.add_argument("--alpha", type=float, nargs="+", default=[9.0, 27.0, 81.0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.n_masks <= 8 or args.mask_levels < 0 or any(not (a > 0 and math.isfinite(a)) for a in args.alpha):
        print("tune_regularised: error: --n-masks 1…8, --mask-levels ≥ 0 (0: continuous) and α > 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = run(args.n_masks, args.mask_levels, args.alpha, args.size, progress=not args.no_progress)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["command"] = "python benchmarks/tune_regularised.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(args.json, res)
    print(f"wrote {args.json} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
