"""CDP simulation throughput against the bare-FFT floor, and writer memory against N.

Throughput (2 threads, 128² objects, 2× oversampling → 256² detector, Fraunhofer, sensor with
shot + read noise, 12-bit ADC): CDPs per second of (a) the CDP system + sensor in memory,
(b) ``phaseforge simulate`` end to end into HDF5 (images, encoding, gzip, one sample per chunk;
marginal cost per sample, set-up excluded), and the floor:
the bare ``torch.fft.fft2`` of the same number of 256² patterns. Memory: peak RSS of a fresh
process writing N = 1,000 and N = 10,000 samples (32² objects, L = 1) — it must be flat in N.

    python benchmarks/simulate.py [--skip-memory]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phaseforge.build import system_from_config  # noqa: E402
from phaseforge.config import load  # noqa: E402
from phaseforge.pipeline import make_simulator, simulate  # noqa: E402

NOISE = ["sensor.mean_photons=1000", "sensor.read_noise_e=2.0", "sensor.bit_depth=12"]


def throughput(L: int, n: int = 64, size: int = 128, batch: int = 16) -> dict:
    cfg = load(None, [f"data.size={size}", f"data.n={n}", f"masks.n_masks={L}", f"batch_size={batch}", *NOISE])
    system = system_from_config(cfg)
    sim = make_simulator(system)
    g = torch.Generator().manual_seed(0)
    x = torch.polar(torch.ones(batch, size, size), torch.rand(batch, size, size, generator=g) * 3.14)
    gens = [torch.Generator().manual_seed(i) for i in range(batch)]
    sim(x, gens)
    reps = max(1, n // batch)
    t0 = time.perf_counter()
    for _ in range(reps):
        sim(x, gens)
    t_mem = (time.perf_counter() - t0) / (reps * batch * L)
    with torch.no_grad():
        inten = system.intensity(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        for b, gen in enumerate(gens):
            system.sensor.sample(inten[b], generator=gen)
    t_sensor = (time.perf_counter() - t0) / (reps * batch * L)
    u = torch.randn(batch, L, *system.out_shape, dtype=torch.complex64)
    torch.fft.fft2(u)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.fft.fft2(u)
    t_fft = (time.perf_counter() - t0) / (reps * batch * L)
    # end to end, marginal cost per sample (the one-time set-up — imports, loading the sample
    # images — cancels between a run of n and one of 3n samples)
    times = {}
    for count in (n, 3 * n):
        c = load(None, [f"data.size={size}", f"data.n={count}", f"masks.n_masks={L}", f"batch_size={batch}", *NOISE])
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            simulate(c, Path(d) / "b.h5", progress=False)
            times[count] = time.perf_counter() - t0
    t_file = (times[3 * n] - times[n]) / (2 * n * L)
    return {"L": L, "sensor_share": t_sensor / t_mem, "cdp_per_s_memory": 1 / t_mem, "cdp_per_s_file": 1 / t_file, "floor_cdp_per_s": 1 / t_fft,
            "ratio_memory": t_mem / t_fft, "ratio_file": t_file / t_fft}


def _child(n: int) -> None:
    import resource
    with tempfile.TemporaryDirectory() as d:
        cfg = load(None, ["data.size=32", f"data.n={n}", "masks.n_masks=1", "batch_size=64", *NOISE])
        t0 = time.perf_counter()
        simulate(cfg, Path(d) / "m.h5", progress=False)
        dt = time.perf_counter() - t0
        size_mb = (Path(d) / "m.h5").stat().st_size / 2 ** 20
    print(json.dumps({"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": dt, "file_mb": size_mb}))


def memory(ns=(1000, 10000)) -> list:
    rows = []
    for n in ns:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        _child(args.child)
        return
    print(f"CDP simulation, 128² objects → 256² detector, sensor noise on, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print("| L | CDP/s (system+sensor) | of which sensor draw | CDP/s (simulate → HDF5) | floor: bare fft2 CDP/s | "
          "ratio (system) | ratio (HDF5) |")
    print("|---|---|---|---|---|---|---|")
    for L in (1, 4):
        r = throughput(L)
        print(f"| {L} | {r['cdp_per_s_memory']:.0f} | {100 * r['sensor_share']:.0f} % | {r['cdp_per_s_file']:.0f} | {r['floor_cdp_per_s']:.0f} | "
              f"{r['ratio_memory']:.2f} | {r['ratio_file']:.2f} |")
    if not args.skip_memory:
        print("\nwriter memory (fresh process each; 32² objects, L = 1, 64² detector)")
        print("| N | peak RSS MB | seconds | file MB |")
        print("|---|---|---|---|")
        for r in memory():
            print(f"| {r['n']} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | {r['file_mb']:.1f} |")


if __name__ == "__main__":
    main()
