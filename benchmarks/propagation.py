"""Propagation and CDP-operator speed against the bare-FFT floor measured in the same run.

Part 1 — propagators (batch 4, complex64): the median time of each method (forward, and
forward+backward through autograd) with cached kernels, against the bare ``torch.fft`` work the
method cannot avoid on the same grid: an ``fft2``/``ifft2`` pair on the padded grid for the
transfer-function methods (``fresnel-tf``, ``asm``, ``fresnel-ir``), one ``fft2`` for
``fraunhofer`` and ``fresnel-1fft``.

Part 2 — the CDP operator ``A`` then ``A_adjoint`` (objects N² → detector (2N)², L = 4 masks,
batch 12, eval mode, no grad), and the same pair under autograd (a loss on ``Aᴴ A x``, backward
to ``x``), against the bare FFT pair(s) on the same padded grid: one ``fft2`` + one ``ifft2``
for the Fourier-transform methods, two of each for the transfer-function methods (``A`` and
``Aᴴ`` each propagate once).

Timing: the method and its floor alternate (paired medians), so drift in the machine's speed
hits both alike. Peak RSS is the process high-water mark after the row.

    python benchmarks/propagation.py [--sizes 256 512] [--cdp-sizes 128 256] [--repeats 11] [--threads 2]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optics  # noqa: E402
from optics import propagation as P  # noqa: E402
from optics.cdp import CDPSystem  # noqa: E402
from optics.masks import PhaseMask  # noqa: E402

LAM, DX = 633e-9, 8e-6


def paired_medians(fn, floor, repeats: int):
    """Median times of ``fn`` and ``floor``, measured alternately."""
    fn(), floor()  # warm-up: builds and caches kernels, FFT plans
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        floor()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ffts(v, grid, n):
    """The bare transfer-function work: ``fft2`` on the padded grid, ``ifft2``, crop."""
    return torch.fft.ifft2(torch.fft.fft2(v, s=grid))[..., :n[0], :n[1]]


def propagator_row(n: int, method: str, z: float, repeats: int, batch: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, n, n, dtype=torch.complex64, generator=g)
    kw = dict(pitch_m=DX, wavelength_m=LAM, z_m=z, method=method)
    grid = P.padded_shape((n, n), pitch_m=DX, wavelength_m=LAM, z_m=z, method=method)
    one_fft = method in ("fraunhofer", "fresnel-1fft")

    def fwd():
        return optics.propagate(u, **kw).field

    def floor():
        return torch.fft.fft2(u) if one_fft else _ffts(u, grid, (n, n))

    def fb(use_floor: bool):
        def run():
            v = u.clone().requires_grad_(True)
            out = (torch.fft.fft2(v) if one_fft else _ffts(v, grid, (n, n))) if use_floor \
                else optics.propagate(v, **kw).field
            out.abs().square().sum().backward()
        return run

    t_f, t_floor = paired_medians(fwd, floor, repeats)
    t_fb, t_fb_floor = paired_medians(fb(False), fb(True), repeats)
    zc = n * DX * DX / LAM
    return dict(size=n, method=method, z=f"{z / zc:.1f} zc", grid=f"{grid[0]}²", fwd_ms=1e3 * t_f,
                floor_ms=1e3 * t_floor, ratio=t_f / t_floor, fb_ms=1e3 * t_fb, fb_floor_ms=1e3 * t_fb_floor,
                fb_ratio=t_fb / t_fb_floor, rss_mb=peak_rss_mb())


def cdp_row(n: int, method: str, z: float, repeats: int, batch: int = 12, L: int = 4) -> dict:
    masks = PhaseMask.random(L, (n, n), seed=0, learnable=False)
    system = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=z, method=method, oversampling=2).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n, n, dtype=torch.complex64, generator=g)
    M = system.out_shape
    f = system.operator._factors(torch.complex64, x.device)
    grid = f.get("P", M)
    one_fft = f["kind"] == "ft"
    v = torch.randn(batch, L, *M, dtype=torch.complex64, generator=g)

    def pair():
        with torch.no_grad():
            return system.A_adjoint(system.A(x))

    def floor():
        if one_fft:
            return torch.fft.ifft2(torch.fft.fft2(v))
        return (torch.fft.ifft2(torch.fft.fft2(v, s=grid)), torch.fft.ifft2(torch.fft.fft2(v, s=grid)))

    def fb(use_floor: bool):
        def run():
            if use_floor:
                w = v.clone().requires_grad_(True)
                out = torch.fft.ifft2(torch.fft.fft2(w)) if one_fft else \
                    torch.fft.ifft2(torch.fft.fft2(torch.fft.ifft2(torch.fft.fft2(w, s=grid)), s=grid))
            else:
                w = x.clone().requires_grad_(True)
                out = system.A_adjoint(system.A(w))
            out.abs().square().sum().backward()
        return run

    t, t_floor = paired_medians(pair, floor, repeats)
    t_fb, t_fb_floor = paired_medians(fb(False), fb(True), repeats)
    zc = 2 * n * DX * DX / LAM
    return dict(size=n, method=method, z=f"{z / zc:.1f} zc" if method != "fraunhofer" else "far",
                grid=f"{grid[0]}²", ms=1e3 * t, floor_ms=1e3 * t_floor, ratio=t / t_floor,
                fb_ms=1e3 * t_fb, fb_floor_ms=1e3 * t_fb_floor, fb_ratio=t_fb / t_fb_floor, rss_mb=peak_rss_mb())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--cdp-sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-propagators", action="store_true")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="also write the printed tables as a results file, e.g. benchmarks/results/propagation/propagation.json (the docs render it)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_file import Recorder
    with Recorder(args.json, 'propagation', argv):
        from phaseforge.alloc import tune_allocator
        print(f"allocator tuning (phaseforge/alloc.py): {'on' if tune_allocator() else 'off'}")
        torch.set_num_threads(args.threads)
        head = f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats} paired runs"
        if not args.skip_propagators:
            print(f"propagators, batch 4, complex64, {head}")
            print("| N | method | z | FFT grid | fwd ms | floor ms | ratio | fwd+bwd ms | floor ms | ratio | peak RSS MB |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for n in args.sizes:
                zc = n * DX * DX / LAM
                for method, z in (("fraunhofer", 1.0), ("fresnel-1fft", 2 * zc), ("fresnel-tf", 0.5 * zc),
                                  ("fresnel-ir", 2 * zc), ("asm", 0.5 * zc), ("asm", 4 * zc)):
                    r = propagator_row(n, method, z, args.repeats)
                    print(f"| {r['size']} | {r['method']} | {r['z']} | {r['grid']} | {r['fwd_ms']:.2f} | "
                          f"{r['floor_ms']:.2f} | {r['ratio']:.2f} | {r['fb_ms']:.2f} | {r['fb_floor_ms']:.2f} | "
                          f"{r['fb_ratio']:.2f} | {r['rss_mb']:.0f} |")
            print()
        print(f"CDP operator A then Aᴴ, N² objects → (2N)² detector, L = 4, batch 12, complex64, {head}")
        print("| N | method | z | FFT grid | A+Aᴴ ms | floor ms | ratio | fwd+bwd ms | floor ms | ratio | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for n in args.cdp_sizes:
            zc = 2 * n * DX * DX / LAM
            for method, z in (("fraunhofer", 0.1), ("fresnel-tf", 0.5 * zc), ("asm", 0.5 * zc)):
                r = cdp_row(n, method, z, args.repeats)
                print(f"| {r['size']} | {r['method']} | {r['z']} | {r['grid']} | {r['ms']:.2f} | {r['floor_ms']:.2f} | "
                      f"{r['ratio']:.2f} | {r['fb_ms']:.2f} | {r['fb_floor_ms']:.2f} | {r['fb_ratio']:.2f} | "
                      f"{r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
