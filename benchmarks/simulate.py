"""CDP simulation throughput against its floor (FFT + exact Poisson draw), and writer memory.

Throughput (2 threads, 128² objects, 2× oversampling → 256² detector, Fraunhofer, sensor with
shot + read noise, 12-bit ADC), in CDPs (one object × one mask) per second:

* floor — the bare ``torch.fft.fft2`` of the same number of 256² patterns plus one exact
  ``torch.poisson`` draw of the same intensities (the random numbers every exact simulation must
  draw; ``torch.poisson`` runs on one core);
* system + sensor in memory — :class:`phaseforge.pipeline.NoisySimulator` (``system.intensity``
  of the batch, then each sample's ``Sensor.sample`` from its own generator on a thread pool);
* ``phaseforge simulate`` end to end into HDF5 for each ``data.compression`` — images, encoding,
  simulation, compression, checksums, ``fsync`` per batch; marginal cost per CDP (the one-time
  set-up — imports, loading the sample images — cancels between a run of n and one of 3n
  samples, alternated, best of three), with the file size per CDP.

The ratio is throughput ÷ floor (the target is ≥ 0.7), with the floor measured again just before
and after each row (their mean). "CPU ms/CDP" is the process's CPU time
(all threads) per CDP — less sensitive than wall time to other jobs on a shared machine; on an
idle 2-core machine the wall time is about half of it when both cores are kept busy. Memory: peak RSS of a fresh process
writing N = 1,000 and N = 10,000 samples (32² objects, L = 1) — it must be flat in N.

    python benchmarks/simulate.py [--skip-memory] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learning.h5io import COMPRESSIONS  # noqa: E402
from phaseforge.build import system_from_config  # noqa: E402
from phaseforge.config import load  # noqa: E402
from phaseforge.pipeline import make_simulator, simulate  # noqa: E402

NOISE = ["sensor.mean_photons=1000", "sensor.read_noise_e=2.0", "sensor.bit_depth=12"]


def _cpu() -> float:
    """CPU seconds of this process (all threads, user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def _cpu_time(fn, reps: int) -> float:
    c0 = _cpu()
    for _ in range(reps):
        fn()
    return (_cpu() - c0) / reps


def floor_and_memory(L: int, size: int = 128, batch: int = 16, reps: int = 5, memory: bool = True) -> dict:
    """Seconds per CDP of the floor (fft2 + exact Poisson) and of the in-memory simulator."""
    cfg = load(None, [f"data.size={size}", f"masks.n_masks={L}", f"batch_size={batch}", *NOISE])
    system = system_from_config(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.polar(torch.ones(batch, size, size), torch.rand(batch, size, size, generator=g) * 3.14)
    out = {}
    if memory:
        sim = make_simulator(system)
        gens = lambda: [torch.Generator().manual_seed(i) for i in range(batch)]  # noqa: E731
        out["memory"] = _median_time(lambda: sim(x, gens()), reps) / (batch * L)
        sim.close()
    with torch.no_grad():
        mu = system.sensor.mean_electrons(system.intensity(x))
    u = torch.randn(batch, L, *system.out_shape, dtype=torch.complex64)
    t_fft = _median_time(lambda: torch.fft.fft2(u), reps) / (batch * L)
    t_poisson = _median_time(lambda: torch.poisson(mu, generator=g), reps) / (batch * L)
    c_floor = _cpu_time(lambda: (torch.fft.fft2(u), torch.poisson(mu, generator=g)), reps) / (batch * L)
    out.update(fft=t_fft, poisson=t_poisson, floor=t_fft + t_poisson, cpu_floor=c_floor)
    return out


def end_to_end(L: int, compression: str, n: int, size: int = 128, batch: int = 16, reps: int = 3) -> dict:
    """Marginal seconds per CDP of ``simulate`` into HDF5 (runs of n and 3n samples, alternated,
    best of ``reps`` each), and bytes per CDP of the file."""
    times, sizes, cpus = {}, {}, {}
    cfgs = {count: load(None, [f"data.size={size}", f"data.n={count}", f"masks.n_masks={L}", f"batch_size={batch}",
                               f"data.compression={compression}", *NOISE]) for count in (n, 3 * n)}
    for _ in range(reps):
        for count, c in cfgs.items():
            with tempfile.TemporaryDirectory() as d:
                t0, c0 = time.perf_counter(), _cpu()
                simulate(c, Path(d) / "b.h5", progress=False)
                t, cpu = time.perf_counter() - t0, _cpu() - c0
                times[count] = min(t, times.get(count, t))
                cpus[count] = min(cpu, cpus.get(count, cpu))
                sizes[count] = (Path(d) / "b.h5").stat().st_size
    per = 2 * n * L
    return {"t": (times[3 * n] - times[n]) / per, "cpu": (cpus[3 * n] - cpus[n]) / per,
            "bytes": (sizes[3 * n] - sizes[n]) / per}


def _child(n: int) -> None:
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
    ap.add_argument("--quick", action="store_true", help="fewer samples (noisier)")
    ap.add_argument("--compression", nargs="*", default=list(COMPRESSIONS), choices=COMPRESSIONS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="also write the printed tables as a results file, e.g. benchmarks/results/simulate/simulate.json (the docs render it)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_file import Recorder
    with Recorder(args.json, 'simulate', argv):
        from phaseforge.alloc import tune_allocator
        print(f"allocator tuning (phaseforge/alloc.py): {'on' if tune_allocator() else 'off'}")
        torch.set_num_threads(args.threads)
        if args.child is not None:
            _child(args.child)
            return
        print(f"CDP simulation, 128² objects → 256² detector, sensor noise on, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs")
        print("| L | stage | CDP/s | floor CDP/s (fft2 + poisson) | ratio (÷ floor) | CPU ms/CDP | file bytes/CDP |")
        print("|---|---|---|---|---|---|---|")
        for L in (1, 4):
            f = floor_and_memory(L)
            floor = 1 / f["floor"]
            print(f"| {L} | floor: fft2 {1 / f['fft']:.0f} CDP/s + exact Poisson {1 / f['poisson']:.0f} CDP/s | "
                  f"{floor:.0f} | {floor:.0f} | 1.00 | {1e3 * f['cpu_floor']:.2f} | |")
            print(f"| {L} | system + sensor (memory) | {1 / f['memory']:.0f} | {floor:.0f} | {f['floor'] / f['memory']:.2f} "
                  f"| | |")
            for comp in args.compression:
                # the floor again right before and after the row (the load of a shared machine drifts)
                t_floor = [floor_and_memory(L, memory=False)["floor"]]
                r = end_to_end(L, comp, n=(32 if args.quick else 64) // L * 2, reps=1 if args.quick else 3)
                t_floor.append(floor_and_memory(L, memory=False)["floor"])
                t_floor = sum(t_floor) / 2
                print(f"| {L} | simulate → HDF5, {comp} | {1 / r['t']:.0f} | {1 / t_floor:.0f} | {t_floor / r['t']:.2f} | "
                      f"{1e3 * r['cpu']:.2f} | {r['bytes']:.0f} |")
        if not args.skip_memory:
            print("\nwriter memory (fresh process each; 32² objects, L = 1, 64² detector)")
            print("| N | peak RSS MB | seconds | file MB |")
            print("|---|---|---|---|")
            for r in memory():
                print(f"| {r['n']} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | {r['file_mb']:.1f} |")


if __name__ == "__main__":
    main()
