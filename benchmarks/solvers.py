"""Wirtinger flow: success rate against the number of octanary CDPs, and time per iteration.

20 seeded trials per L (one batch), random complex 32×32 objects (x = (randn + i·randn)/√2),
noiseless Fraunhofer CDPs without oversampling (Candès et al. 2015 setting), success =
relative error < 1e-4 after global-phase alignment (float32 floor ≈ 3e-6), up to 2,500
iterations. Time per iteration is measured against the floor of one bare fft2 + ifft2 pair over
the same (B, L, 32, 32) stack (WF needs one A and one Aᴴ per iteration).

Part 2 — time per iteration of WF, AF, ER and HIO (and the ``differentiable=True`` forward pass
of each) on the physical operator: N² complex objects → (2N)² detector, Fraunhofer, L = 4
random phase masks, batch 8, noiseless, no history, no stopping checks. The per-iteration cost
is the difference of two runs (``k`` and ``3k`` iterations from the same ``x0``) over ``2k``, so
set-up (norm estimate, pseudo-inverse check) is excluded; the floor is one bare ``fft2`` +
``ifft2`` pair over the same (B, L, 2N, 2N) stack (each iteration needs one ``A`` and one
``Aᴴ``), measured alternately with the solver runs.

    python benchmarks/solvers.py [--trials 20] [--n-iter 2500] [--iter-sizes 128 256] [--skip-success]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.metrics import relative_error  # noqa: E402
from learning.solvers import wirtinger_flow  # noqa: E402
from optics.cdp import CDPSystem  # noqa: E402
from optics.masks import octanary  # noqa: E402


def run(L: int, trials: int, n: int, n_iter: int) -> dict:
    g = torch.Generator().manual_seed(100 + L)
    x = torch.complex(torch.randn(trials, n, n, generator=g), torch.randn(trials, n, n, generator=g)) / 2 ** 0.5
    masks = octanary((L, n, n), seed=L)
    op = CDPSystem(masks, pitch_m=8e-6, wavelength_m=633e-9, z_m=0.1, method="fraunhofer")
    with torch.no_grad():
        y = op.intensity(x)
    t0 = time.perf_counter()
    res = wirtinger_flow(op, y, n_iter=n_iter, generator=L, history=False, tol=None)
    dt = time.perf_counter() - t0
    err = relative_error(res.x, x)
    u = torch.randn(trials, L, n, n, dtype=torch.complex64)
    t1 = time.perf_counter()
    for _ in range(50):
        torch.fft.ifft2(torch.fft.fft2(u))
    floor = (time.perf_counter() - t1) / 50
    per_iter = dt / max(res.n_iter, 1)
    return {"L": L, "success": float((err < 1e-4).float().mean()), "median_err": float(err.median()),
            "iters": res.n_iter, "ms_per_iter": 1e3 * per_iter, "floor_ms": 1e3 * floor, "ratio": per_iter / floor}


def iteration_cost(solver: str, n: int, differentiable: bool, batch: int = 8, L: int = 4, k: int = 4,
                   repeats: int = 5) -> dict:
    from learning.solvers import solve
    from optics.masks import PhaseMask

    g = torch.Generator().manual_seed(7)
    x = torch.complex(torch.randn(batch, n, n, generator=g), torch.randn(batch, n, n, generator=g))
    op = CDPSystem(PhaseMask.random(L, (n, n), seed=3, learnable=False), pitch_m=8e-6, wavelength_m=633e-9,
                   z_m=0.1, oversampling=2).eval()
    with torch.no_grad():
        y = op.intensity(x)
    x0 = x + 0.3 * torch.complex(torch.randn(batch, n, n, generator=g), torch.randn(batch, n, n, generator=g))
    u = torch.randn(batch, L, 2 * n, 2 * n, dtype=torch.complex64, generator=g)
    kw = dict(x0=x0, history=False, tol=None, residual_tol=None, differentiable=differentiable)

    def run(iters):
        t0 = time.perf_counter()
        solve(op, y, solver=solver, n_iter=iters, **kw)
        return time.perf_counter() - t0

    def floor():
        t0 = time.perf_counter()
        torch.fft.ifft2(torch.fft.fft2(u))
        return time.perf_counter() - t0

    run(1), floor()
    per, fl = [], []
    for _ in range(repeats):
        a = run(k)
        f1 = floor()
        b = run(3 * k)
        f2 = floor()
        per.append((b - a) / (2 * k))
        fl.append(min(f1, f2))
    per_it, fl_t = statistics.median(per), statistics.median(fl)
    return {"solver": solver, "n": n, "mode": "differentiable" if differentiable else "no-grad",
            "ms": 1e3 * per_it, "floor_ms": 1e3 * fl_t, "ratio": per_it / fl_t}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n-iter", type=int, default=2500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iter-sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--skip-success", action="store_true", help="only the time-per-iteration table")
    args = ap.parse_args(argv)
    from phaseforge.alloc import tune_allocator
    print(f"allocator tuning (phaseforge/alloc.py): {'on' if tune_allocator() else 'off'}")
    torch.set_num_threads(args.threads)
    print(f"time per iteration, Fraunhofer CDPs N² → (2N)², L = 4, batch 8, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print("| solver | N | mode | ms / iteration | floor ms (fft2+ifft2) | ratio |")
    print("|---|---|---|---|---|---|")
    for n in args.iter_sizes:
        for solver in ("wf", "af", "er", "hio"):
            for diff in (False, True):
                r = iteration_cost(solver, n, diff)
                print(f"| {r['solver']} | {r['n']} | {r['mode']} | {r['ms']:.2f} | {r['floor_ms']:.2f} | {r['ratio']:.2f} |")
    if args.skip_success:
        return
    print()
    print(f"Wirtinger flow on octanary Fraunhofer CDPs, {args.trials} trials of {args.size}² complex objects, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| L | success (rel. err < 1e-4) | median rel. err | iterations | ms / iteration (batch) | floor ms (fft2+ifft2) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for L in range(2, 9):
        r = run(L, args.trials, args.size, args.n_iter)
        print(f"| {L} | {r['success'] * 100:.0f} % | {r['median_err']:.2e} | {r['iters']} | {r['ms_per_iter']:.2f} | "
              f"{r['floor_ms']:.2f} | {r['ratio']:.1f} |")


if __name__ == "__main__":
    main()
