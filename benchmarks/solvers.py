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

Part 3 (``--protocol``) — the standard published CDP protocol (prDeep, Metzler et al. 2018, and
later deep-unfolding papers): 128×128 gray images in [0, 1] as real non-negative objects, L = 4
uniform random phase masks, no oversampling, ``A x = FFT2(M_l ⊙ x)`` with ``norm="ortho"``
(unitary per mask), noisy amplitudes ``b = sqrt(max(|Ax|² + (α/255)|Ax| n, 0))``, n ~ N(0, 1),
α ∈ {9, 27, 81}; one fixed mask seed and one fixed noise seed. Scored by PSNR with data range 1
(= the 0–255 scale) of ``clamp(Re(align_global_phase(x̂, x)), 0, 1)``. Rows: ER and HIO with
realness + positivity, WF and AF (their default start; and with ``nonnegative=True``), ER
stopped by the discrepancy principle at the known noise level, TV, PnP with non-local means
and with wavelet shrinkage (all at the solvers' defaults). Seconds per image with one thread
(``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``), the whole batch over its size.
``--images benchmark`` (default) scores :func:`learning.images.benchmark_images` (the held-out
images); ``--images tuning`` the images the defaults were chosen on (scikit-image's rocket,
clock, text, brick — none of them a benchmark image). ``--noiseless`` adds the noiseless
success table of WF and AF at L = 4 and 6.

    OMP_NUM_THREADS=1 python benchmarks/solvers.py --protocol [--images benchmark|tuning] [--alphas 9 27 81]
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


# --------------------------------------------------------------------------------------------
# standard CDP protocol
# --------------------------------------------------------------------------------------------
TUNING_IMAGE_NAMES = ("rocket", "clock", "text", "brick")


def unitary_cdp(masks):
    """The standard protocol's ``A_l x = FFT2(M_l ⊙ x)/N`` (unit-free, FFT sample order): the same
    operator as ``benchmarks/cdp_benchmark.py``."""
    from optics.cdp import CDPOperator
    return CDPOperator(masks, method="fft", detector_order="fft").eval()


def protocol_images(which: str, size: int = 128):
    import numpy as np

    from learning.images import benchmark_images, fit_to_size, to_unit_gray
    if which == "benchmark":
        names, imgs = benchmark_images(size)
        return names, torch.from_numpy(imgs)
    import skimage.data
    imgs = [fit_to_size(to_unit_gray(getattr(skimage.data, n)()), size) for n in TUNING_IMAGE_NAMES]
    return TUNING_IMAGE_NAMES, torch.from_numpy(np.stack(imgs).astype(np.float32))


def protocol_problem(x: torch.Tensor, alpha: float, *, L: int = 4, mask_seed: int = 0, noise_seed: int = 1):
    g = torch.Generator().manual_seed(mask_seed)
    n = x.shape[-1]
    masks = torch.polar(torch.ones(L, n, n), 2 * torch.pi * torch.rand(L, n, n, generator=g))
    op = unitary_cdp(masks)
    from optics.noise import PrDeepNoise
    with torch.no_grad():
        y = PrDeepNoise(alpha).sample(op.intensity(x.to(torch.complex64)),
                                      generator=torch.Generator().manual_seed(noise_seed))
    return op, y


def protocol_psnr(x_hat, x):
    from learning.metrics import align_global_phase, psnr
    return psnr(align_global_phase(x_hat, x).real.clamp(0, 1), x, data_range=1.0)


PROTOCOL_ROWS = {
    "ER (real, ≥0)": ("er", dict(real=True, nonnegative=True)),
    "ER (real, ≥0), discrepancy stop": ("er", dict(real=True, nonnegative=True, stop="discrepancy")),
    "HIO (real, ≥0)": ("hio", dict(real=True, nonnegative=True)),
    "WF (default)": ("wf", dict()),
    "WF (default), discrepancy stop": ("wf", dict(stop="discrepancy")),
    "WF (≥0)": ("wf", dict(nonnegative=True)),
    "AF (default)": ("af", dict()),
    "AF (default), discrepancy stop": ("af", dict(stop="discrepancy")),
    "AF (≥0)": ("af", dict(nonnegative=True)),
    "TV (≥0)": ("tv", dict(nonnegative=True)),
    "PnP-NLM (≥0)": ("pnp", dict(nonnegative=True, denoiser="nlm")),
    "PnP-wavelet (≥0)": ("pnp", dict(nonnegative=True, denoiser="wavelet")),
}


def standard_protocol(which: str, alphas, rows, *, known_noise: bool = True) -> list:
    from learning.solvers import solve
    names, x = protocol_images(which)
    out = []
    for alpha in alphas:
        op, y = protocol_problem(x, alpha)
        for row in rows:
            name, kw = PROTOCOL_ROWS[row]
            kw = dict(kw)
            if known_noise and (name in ("tv", "pnp") or kw.get("stop") == "discrepancy"):
                kw["amplitude_noise_std"] = alpha / 510.0  # √y − |Ax| ≈ (α/255)·n/2 where |Ax| ≫ α/255
            t0 = time.perf_counter()
            res = solve(op, y, name, generator=0, history=False, **kw)
            dt = (time.perf_counter() - t0) / x.shape[0]
            p = protocol_psnr(res.x, x)
            out.append({"alpha": alpha, "row": row, "psnr": [float(v) for v in p], "mean": float(p.mean()),
                        "s_per_image": dt, "n_iter": res.n_iter, "names": list(names)})
            print(f"| {alpha} | {row} | {float(p.mean()):.2f} | {' / '.join(f'{float(v):.1f}' for v in p)} | "
                  f"{dt:.2f} | {res.n_iter} |", flush=True)
    return out


def noiseless_success(which: str, Ls=(4, 6)) -> None:
    from learning.metrics import relative_error
    from learning.solvers import solve
    names, x = protocol_images(which)
    print(f"noiseless, {which} images ({len(names)}), success = relative error < 1e-3")
    print("| L | solver | options | success | median rel. err | iterations |")
    print("|---|---|---|---|---|---|")
    for L in Ls:
        g = torch.Generator().manual_seed(0)
        n = x.shape[-1]
        op = unitary_cdp(torch.polar(torch.ones(L, n, n), 2 * torch.pi * torch.rand(L, n, n, generator=g)))
        with torch.no_grad():
            y = op.A(x.to(torch.complex64)).abs() ** 2
        for solver in ("wf", "af"):
            for label, kw in (("default (optimal, 150 power iterations)", {}),
                              ("plain, 50 (the old default)", dict(spectral_method="plain", n_power_iter=50)),
                              ("optimal, 50", dict(spectral_method="optimal", n_power_iter=50)),
                              ("nonnegative", dict(nonnegative=True))):
                res = solve(op, y, solver, generator=0, history=False, **kw)
                err = relative_error(res.x, x)
                print(f"| {L} | {solver} | {label} | {int((err < 1e-3).sum())}/{len(names)} | {float(err.median()):.2e} | "
                      f"{res.n_iter} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n-iter", type=int, default=2500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iter-sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--skip-success", action="store_true", help="only the time-per-iteration table")
    ap.add_argument("--protocol", action="store_true", help="only the standard CDP protocol table (part 3)")
    ap.add_argument("--images", choices=("benchmark", "tuning"), default="benchmark")
    ap.add_argument("--alphas", type=float, nargs="+", default=[9, 27, 81])
    ap.add_argument("--rows", nargs="+", default=list(PROTOCOL_ROWS), help="row labels of PROTOCOL_ROWS")
    ap.add_argument("--noiseless", action="store_true", help="with --protocol: the noiseless WF/AF table")
    ap.add_argument("--json", type=Path, default=None, help="with --protocol: also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.protocol:
        torch.set_num_threads(1)
        print(f"standard CDP protocol, {args.images} images, 1 thread, torch {torch.__version__}")
        if args.noiseless:
            noiseless_success(args.images)
            return
        print("| α | solver | mean PSNR (dB) | per image | s / image | iterations |")
        print("|---|---|---|---|---|---|")
        rows = standard_protocol(args.images, [int(a) if a == int(a) else a for a in args.alphas], args.rows)
        if args.json is not None:
            import json
            tmp = args.json.with_suffix(args.json.suffix + ".tmp")
            tmp.write_text(json.dumps(rows, indent=1))
            tmp.replace(args.json)
        return
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
