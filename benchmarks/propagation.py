"""Propagation speed against the bare-FFT floor measured in the same run.

For each method and size (batch 4, complex64, 2 threads): the median time of the method
(forward, and forward+backward through autograd) with cached kernels, and the floor: the bare
``torch.fft`` work the method cannot avoid on the same grid — an ``fft2``/``ifft2`` pair on the
padded grid for the transfer-function methods (``fresnel-tf``, ``asm``, ``fresnel-ir``), one
bare ``fft2`` (no shifts) for ``fraunhofer`` and ``fresnel-1fft``. Peak RSS is the process high-water
mark after the row (rows run in ascending size).

    python benchmarks/propagation.py [--sizes 256 512 1024] [--repeats 7] [--threads 2]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

import optics
from optics import propagation as P

LAM, DX = 633e-9, 8e-6


def _paired_medians(fn, floor, repeats: int):
    """Median times of ``fn`` and ``floor``, measured alternately so that drift in the
    machine's speed hits both alike."""
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(sizes, repeats, batch=4):
    rows = []
    for n in sizes:
        zc = n * DX * DX / LAM
        cases = [
            ("fraunhofer", 1.0, {}),
            ("fresnel-1fft", 2 * zc, {}),
            ("fresnel-tf", 0.5 * zc, {}),
            ("fresnel-ir", 2 * zc, {}),
            ("asm", 0.5 * zc, {}),
            ("asm", 4 * zc, {}),  # far: padding capped at 2N, band limit active
        ]
        g = torch.Generator().manual_seed(0)
        u = torch.randn(batch, n, n, dtype=torch.complex64, generator=g)
        for _ in range(3):  # first touch of this size (page faults, FFT plans) out of every row
            torch.fft.ifft2(torch.fft.fft2(u, s=(2 * n, 2 * n)))
            torch.fft.fft2(u)
        for method, z, opts in cases:
            kw = dict(pitch_m=DX, wavelength_m=LAM, z_m=z, method=method, **opts)
            grid = P.padded_shape((n, n), pitch_m=DX, wavelength_m=LAM, z_m=z, method=method)
            one_fft = method in ("fraunhofer", "fresnel-1fft")

            def fwd():
                return optics.propagate(u, **kw).field

            def floor():
                if one_fft:
                    return torch.fft.fft2(u)
                return torch.fft.ifft2(torch.fft.fft2(u, s=grid))[..., :n, :n]

            def fwd_bwd(f):
                def run():
                    v = u.clone().requires_grad_(True)
                    out = f(v) if f is not None else optics.propagate(v, **kw).field
                    out.abs().square().sum().backward()
                return run

            def floor_of(v):
                if one_fft:
                    return torch.fft.fft2(v)
                return torch.fft.ifft2(torch.fft.fft2(v, s=grid))[..., :n, :n]

            t_f, t_floor = _paired_medians(fwd, floor, repeats)
            t_fb, t_fb_floor = _paired_medians(fwd_bwd(None), fwd_bwd(floor_of), repeats)
            rows.append(dict(size=n, method=method, z=f"{z / zc:.1f} zc", grid=f"{grid[0]}²",
                             fwd_ms=1e3 * t_f, floor_ms=1e3 * t_floor, ratio=t_f / t_floor,
                             fb_ms=1e3 * t_fb, fb_floor_ms=1e3 * t_fb_floor, fb_ratio=t_fb / t_fb_floor,
                             rss_mb=_peak_rss_mb()))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = bench(args.sizes, args.repeats)
    print(f"propagation, batch 4, complex64, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.repeats}")
    hdr = ("| N | method | z | FFT grid | fwd ms | floor ms | ratio | fwd+bwd ms | floor ms | ratio | peak RSS MB |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|")
    print(hdr)
    for r in rows:
        print(f"| {r['size']} | {r['method']} | {r['z']} | {r['grid']} | {r['fwd_ms']:.2f} | {r['floor_ms']:.2f} | "
              f"{r['ratio']:.2f} | {r['fb_ms']:.2f} | {r['fb_floor_ms']:.2f} | {r['fb_ratio']:.2f} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
