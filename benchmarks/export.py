"""Export throughput: a 1920 × 1080 design to GDSII with 8 levels and to a 12-bit SLM bitmap.

Design: a smooth learned-mask-like phase (lens + tilt + band-limited random phase, seed 0) on an
8 µm grid at 633 nm. For each export: wall time (median of repeats), the floor measured in the
same run and the ratio, polygon and vertex counts, file size, and the naive one-rectangle-per-
pixel layout it replaces (2,073,600 rectangles: 4 vertices and ≈ 64 bytes of GDSII records
each — BOUNDARY, LAYER, DATATYPE, XY with 5 points, ENDEL).

Floors: GDSII — gdstk writing the finished polygons (``Library.write_gds``), i.e. the cost of
the file itself, without tracing; bitmap — zlib-compressing the panel's 16-bit samples (the
PNG encoder's own work), without the LUT mapping, placement and hashes; verification — the CDP
simulations it runs (the re-read and rasterisation are the overhead).

    python benchmarks/export.py [--repeats 3] [--worst-case]

``--worst-case`` adds i.i.d. random 8-level phases (every cell its own feature: the polygon
count approaches the naive count; slow by nature).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabrication.designs import PhaseDesign  # noqa: E402
from fabrication.doe import DOEOptions, export_doe  # noqa: E402
from fabrication.slm import SLMOptions, export_slm  # noqa: E402

H, W = 1080, 1920
NAIVE_BYTES_PER_RECT = 4 + 6 + 6 + 44 + 4


def smooth_design(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    lens = ((x - W / 2) ** 2 + (y - H / 2) ** 2) * 2e-5
    f = np.fft.rfft2(rng.standard_normal((H, W)))
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    f *= np.exp(-(fy ** 2 + fx ** 2) / (2 * 0.004 ** 2))
    rough = np.fft.irfft2(f, s=(H, W))
    rough *= 6.0 / rough.std()
    return lens + 0.01 * x + rough


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_gds(design: PhaseDesign, tmp: Path, repeats: int, tag: str):
    import gdstk

    def run():
        return export_doe(design, tmp / f"doe_{tag}", options=DOEOptions(levels=8, tiff=False), overwrite=True)

    t, res = timed(run, repeats)
    g = res.sidecar["files"]["gds"]
    lib = gdstk.read_gds(str(tmp / f"doe_{tag}" / "relief.gds"))

    def floor():
        lib.write_gds(str(tmp / "floor.gds"), max_points=8190)

    t_floor, _ = timed(floor, repeats)
    polys = sum(v["polygons"] for v in g["layers"].values())
    verts = sum(v["vertices"] for v in g["layers"].values())
    size = (tmp / f"doe_{tag}" / "relief.gds").stat().st_size
    return {"config": f"GDSII 8 levels ({tag})", "time_s": t, "floor_s": t_floor, "polygons": polys, "vertices": verts,
            "file_MB": size / 1e6, "naive_rects": H * W, "naive_vertices": 4 * H * W,
            "naive_MB": H * W * NAIVE_BYTES_PER_RECT / 1e6}


def bench_verify(design: PhaseDesign, tmp: Path, repeats: int):
    """Round-trip verification of the smooth GDSII export (re-read, rasterise, 2 × 2 CDPs); floor:
    the CDP simulations alone (two CDPSystem.intensity calls on two masks)."""
    from fabrication.verify import cdp_difference, verify_doe

    export_doe(design, tmp / "doe_v", options=DOEOptions(levels=8, tiff=False), overwrite=True)
    t, res = timed(lambda: verify_doe(tmp / "doe_v", design), repeats)
    assert all(r.passed for r in res), [r.summary() for r in res]
    back = res[0].arrays["file_rad"]
    t_floor, _ = timed(lambda: (cdp_difference(design.phase_rad, back, design),
                                cdp_difference(design.phase_rad, back, design)), repeats)
    return {"config": "verify GDSII (re-read + 2 CDP pairs)", "time_s": t, "floor_s": t_floor, "polygons": None,
            "vertices": None, "file_MB": (tmp / "doe_v" / "relief.gds").stat().st_size / 1e6, "naive_rects": None,
            "naive_vertices": None, "naive_MB": None}


def bench_bitmap(design: PhaseDesign, tmp: Path, repeats: int):
    dev = tmp / "dev.yaml"
    dev.write_text("panel-12:\n  name: 1920 x 1080 12-bit panel\n  width_px: 1920\n  height_px: 1080\n"
                   "  pixel_pitch_m: 8.0e-6\n  bit_depth: 12\n  phase_range_rad: 6.283185307179586\n"
                   "  file_format: png16\n  source: benchmark\n")

    def run():
        return export_slm(design, "panel-12", tmp / "m12.png", device_file=dev, overwrite=True,
                          options=SLMOptions(carrier_period_px=(0.0, 8.0)))

    t, res = timed(run, repeats)
    raw = np.concatenate([np.zeros((H, 1), np.uint8),
                          res.gray.astype(">u2").view(np.uint8).reshape(H, -1)], axis=1).tobytes()
    t_floor, _ = timed(lambda: zlib.compress(raw, 6), repeats)
    size = (tmp / "m12.png").stat().st_size
    return {"config": "12-bit bitmap (16-bit PNG)", "time_s": t, "floor_s": t_floor, "polygons": None,
            "vertices": None, "file_MB": size / 1e6, "naive_rects": None, "naive_vertices": None, "naive_MB": None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worst-case", action="store_true")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH",
                    help="also write the printed tables as a results file, e.g. benchmarks/results/export/export.json (the docs render it)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_file import Recorder
    with Recorder(args.json, 'export', argv):
        torch.set_num_threads(1)
        rows = []
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            design = PhaseDesign(smooth_design(), 8e-6, 633e-9, z_m=0.1, method="fraunhofer", source="benchmark")
            rows.append(bench_gds(design, tmp, args.repeats, "smooth"))
            rows.append(bench_bitmap(design, tmp, args.repeats))
            rows.append(bench_verify(design, tmp, args.repeats))
            if args.worst_case:
                rng = np.random.default_rng(1)
                worst = PhaseDesign(rng.integers(0, 8, (H, W)) * (2 * np.pi / 8), 8e-6, 633e-9, source="iid")
                rows.append(bench_gds(worst, tmp, 1, "i.i.d. random"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"export benchmark: {W} x {H} design, median of {args.repeats}, 1 thread; peak RSS {peak:.0f} MB")
        print("| configuration | time (s) | floor (s) | ratio | polygons | vertices | file (MB) | naive rects | "
              "naive vertices | naive file (MB) |")
        print("|---|---|---|---|---|---|---|---|---|---|")

        def f(v, fmt):
            return "–" if v is None else format(v, fmt)

        for r in rows:
            print(f"| {r['config']} | {r['time_s']:.2f} | {r['floor_s']:.2f} | {r['time_s'] / r['floor_s']:.1f} | "
                  f"{f(r['polygons'], ',')} | {f(r['vertices'], ',')} | {r['file_MB']:.2f} | {f(r['naive_rects'], ',')} | "
                  f"{f(r['naive_vertices'], ',')} | {f(r['naive_MB'], '.0f')} |")


if __name__ == "__main__":
    main()
