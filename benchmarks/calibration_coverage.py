"""Do `phaseforge calibrate`'s uncertainties cover the truth? (issue 18 item 11)

Each bench is drawn from a seed by ``tests/calibration/bench_sim.py`` — an independent numpy
simulator, not the fit's model: exact Gaussian crosstalk (erf of the pixel edges), exact angular
spectrum with evanescent waves, exact |u|² and exact pixel integration on a 1.07 µm grid (6
samples per 6.4 µm SLM pixel), 532 nm, 4.5 µm camera pixels; distance 1.2–1.8 mm, magnification
0.97–1.03, rotation ±2°, shifts ±8 µm, crosstalk 1–2 µm, a LUT of another family than the
sample's. A linear camera (K 0.2–0.3 DN/e⁻, offset 100 DN, 5 e⁻ read noise, 200 e⁻/s dark current,
12-bit, 12 000 e⁻ full well) records a full capture — dark pairs at 4 exposures, flat pairs
(uniform SLM) at 9 exposures up to 90 % of saturation plus one beyond, a background frame, 6
random patterns (4 fitted, 2 held out), 17 binary gratings — written with ``write_capture``; the
nominal distance is off by up to ±4 % and the nominal magnification is 1. Then the whole
``calibrate`` runs on it, and each fitted value is compared with the truth:
``Δ/σ`` with the reported σ (statistical and model parts in quadrature) and with the statistical
part alone (what calibrate reported before), and every LUT level's ``Δ/σ``.

    PYTHONPATH=. python benchmarks/calibration_coverage.py [--benches 10] [--out benchmarks/results/calibration_coverage.json]

Prints one row per bench and parameter, then per parameter: the fraction within 2σ, mean Δ/σ,
mean |Δ|/σ, mean Δ (the remaining bias) and mean σ. ≈ 40 s per bench on one core.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "calibration"))

from bench_sim import irradiance, random_bench, random_patterns  # noqa: E402
from calibration.capture import Pattern, write_capture  # noqa: E402

SCALARS = ["distance_m", "magnification", "rotation_rad", "shift_x_m", "shift_y_m", "crosstalk_sigma_m",
           "background_e", "intensity_scale"]


def make_capture(path: Path, seed: int):
    """Write bench ``seed``'s capture; returns (truth dict, truth LUT)."""
    rng = np.random.default_rng(40_000 + seed)
    b = random_bench(seed, camera_shape=(48, 48), pattern_px=32)
    randoms = random_patterns(b, 6, seed)
    per, hg = 8, 56                     # the gratings overfill the camera field by more than the 3rd orders' walk-off
    levels = list(range(0, 256, 16)) + [255]
    gratings = []
    for g in levels:
        a = np.zeros((hg, hg), np.uint8)
        a[:, (np.arange(hg) % per) >= per // 2] = g
        gratings.append(a)
    uniform = np.zeros((16, 16), np.uint8)
    irr = irradiance(b, randoms + [uniform] + gratings)
    ir_rand, ir_flat, ir_grat = irr[:6], irr[6], irr[7:]
    K = float(rng.uniform(0.2, 0.3))
    offset, rn, dark, fw, bits = 100.0, 5.0, 200.0, 12000.0, 12
    t_s = 0.01
    rate = b.mean_e / (ir_rand.mean() * t_s)           # electrons per second per unit irradiance

    def shoot(mu_e, texp):
        e = rng.poisson(np.clip(mu_e + dark * texp, 0, None)).astype(np.float64)
        e = np.minimum(e + rn * rng.standard_normal(e.shape), fw)
        return np.clip(np.round(K * e + offset), 0, 2 ** bits - 1).astype(np.uint16)

    frames, keys, exps, pids = [], [], [], []

    def add(mu_e, key, texp, pid=""):
        frames.append(shoot(mu_e, texp))
        keys.append(key)
        exps.append(texp)
        pids.append(pid)

    zero = np.zeros(b.camera_shape)
    for texp in (0.002, 0.01, 0.02, 0.04):
        for _ in range(2):
            add(zero, 2, texp)
    sat_t = fw / (rate * ir_flat.mean())
    for frac in np.concatenate([np.linspace(0.03, 0.9, 9), [1.15]]):
        for _ in range(2):
            add(rate * frac * sat_t * ir_flat, 1, float(frac * sat_t), "uniform_0")
    add(zero, 4, t_s)
    patterns = {"uniform_0": Pattern(uniform, kind="uniform")}
    for i, g in enumerate(randoms):
        patterns[f"random_{i:02d}"] = Pattern(g, kind="random")
        add(rate * t_s * ir_rand[i] + b.background_e, 0, t_s, f"random_{i:02d}")
    t_g = 0.6 * fw / (rate * ir_grat.max())           # brightest grating fringe at 60 % of full well
    for g, a, ir in zip(levels, gratings, ir_grat):
        pid = f"grating_{g:03d}"
        patterns[pid] = Pattern(a, kind="grating", attrs={"gray_reference": 0, "gray_level": int(g), "period_px": per})
        add(rate * t_g * ir, 0, t_g, pid)
    instrument = {"wavelength_m": b.wavelength_m, "camera_pitch_m": b.camera_pitch_m, "slm_pitch_m": b.slm_pitch_m,
                  "distance_m": b.distance_m * (1 + float(rng.uniform(-0.04, 0.04))), "magnification": 1.0,
                  "slm_bit_depth": 8}
    write_capture(path, frames=np.stack(frames), image_key=keys, exposure_s=exps, bit_depth=bits,
                  instrument=instrument, patterns=patterns, pattern_id=pids, overwrite=True,
                  provenance={"software": f"benchmarks/calibration_coverage.py seed={seed}",
                              "description": "independent bench simulator (tests/calibration/bench_sim.py)"})
    truth = dict(b.truth(), intensity_scale=rate * t_s)
    return truth, b.lut_phase_rad


def run(n: int, workdir: Path):
    from calibration.calibfile import read_calibration
    from phaseforge.calibration_jobs import calibrate

    rows, lut_rows = [], []
    for seed in range(n):
        t0 = time.perf_counter()
        cap = workdir / f"bench_{seed:02d}.h5"
        truth, lut_true = make_capture(cap, seed)
        t1 = time.perf_counter()
        try:
            res = calibrate(cap, workdir / f"cal_{seed:02d}.h5", report_dir=workdir / f"rep_{seed:02d}",
                            overwrite=True, progress=False)
        except Exception as exc:  # a failed calibration is a result too: count it, say why
            print(f"bench {seed}: calibrate failed: {exc}", flush=True)
            rows.append({"bench": seed, "failed": str(exc)})
            continue
        cal = read_calibration(workdir / f"cal_{seed:02d}.h5")
        t2 = time.perf_counter()
        for k in SCALARS:
            f = res["fit"][k]
            d = f["value"] - truth[k]
            rows.append({"bench": seed, "param": k, "truth": truth[k], "value": f["value"], "delta": d,
                         "std": f["std"], "std_statistical": f["std_statistical"], "std_model": f["std_model"],
                         "z": d / f["std"], "z_statistical": d / f["std_statistical"]})
        dl = (cal.lut_phase_rad - lut_true)[1:]        # gray 0 is φ = 0 by definition (σ = 0)
        z = dl / cal.lut_phase_std_rad[1:]
        lut_rows.append({"bench": seed, "rms_error_rad": float(np.sqrt(np.mean(dl ** 2))),
                         "mean_std_rad": float(np.mean(cal.lut_phase_std_rad[1:])), "mean_z": float(np.mean(z)),
                         "within_2sigma": float(np.mean(np.abs(z) <= 2)), "mean_abs_z": float(np.mean(np.abs(z))),
                         "max_abs_z": float(np.max(np.abs(z)))})
        print(f"bench {seed}: capture {t1 - t0:.0f} s, calibrate {t2 - t1:.0f} s; " +
              " ".join(f"{r['param'][:6]} {r['z']:+.2f}" for r in rows if r.get("bench") == seed and "z" in r) +
              f"; LUT rms {lut_rows[-1]['rms_error_rad']:.3f} rad, {100 * lut_rows[-1]['within_2sigma']:.0f} % "
              f"of levels within 2σ", flush=True)
    return rows, lut_rows


def summarize(rows, lut_rows):
    ok = [r for r in rows if "z" in r]
    out = {"n_benches": len({r["bench"] for r in rows}), "n_failed": sum(1 for r in rows if "failed" in r),
           "fraction_within_2sigma": float(np.mean([abs(r["z"]) <= 2 for r in ok])) if ok else float("nan"),
           "fraction_within_2sigma_statistical_only": float(np.mean([abs(r["z_statistical"]) <= 2 for r in ok]))
           if ok else float("nan"), "per_param": {}}
    for k in SCALARS:
        rr = [r for r in ok if r["param"] == k]
        if not rr:
            continue
        z = np.array([r["z"] for r in rr])
        out["per_param"][k] = {"within_2sigma": float(np.mean(np.abs(z) <= 2)), "mean_z": float(z.mean()),
                               "mean_abs_z": float(np.abs(z).mean()),
                               "mean_abs_z_statistical": float(np.mean([abs(r["z_statistical"]) for r in rr])),
                               "mean_delta": float(np.mean([r["delta"] for r in rr])),
                               "mean_std": float(np.mean([r["std"] for r in rr])),
                               "mean_std_model": float(np.mean([r["std_model"] for r in rr])),
                               "mean_truth": float(np.mean([r["truth"] for r in rr]))}
    if lut_rows:
        out["lut"] = {k: float(np.mean([r[k] for r in lut_rows])) for k in lut_rows[0] if k != "bench"}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--benches", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "calibration_coverage.json")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the captures and calibrations here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if a.workdir is not None:
        a.workdir.mkdir(parents=True, exist_ok=True)
        rows, lut_rows = run(a.benches, a.workdir)
    else:
        with tempfile.TemporaryDirectory() as d:
            rows, lut_rows = run(a.benches, Path(d))
    s = summarize(rows, lut_rows)
    print(f"\n{s['n_benches']} benches ({s['n_failed']} failed): {100 * s['fraction_within_2sigma']:.0f} % of the "
          f"scalar parameters within 2σ (statistical σ alone: {100 * s['fraction_within_2sigma_statistical_only']:.0f} %)")
    print(f"{'parameter':<18}{'within 2σ':>10}{'mean Δ/σ':>10}{'mean |Δ|/σ':>12}{'|Δ|/σ_stat':>12}"
          f"{'mean Δ':>12}{'mean σ':>12}{'mean truth':>12}")
    for k, v in s["per_param"].items():
        print(f"{k:<18}{100 * v['within_2sigma']:>9.0f}%{v['mean_z']:>10.2f}{v['mean_abs_z']:>12.2f}"
              f"{v['mean_abs_z_statistical']:>12.1f}{v['mean_delta']:>12.3g}{v['mean_std']:>12.3g}{v['mean_truth']:>12.4g}")
    if "lut" in s:
        L = s["lut"]
        print(f"LUT: rms error {L['rms_error_rad']:.4f} rad, mean σ {L['mean_std_rad']:.4f} rad, "
              f"{100 * L['within_2sigma']:.0f} % of levels within 2σ, mean |Δ|/σ {L['mean_abs_z']:.2f}, "
              f"max |Δ|/σ {L['max_abs_z']:.2f} (averaged over benches)")
    s["seconds"] = time.perf_counter() - t0
    s["command"] = f"PYTHONPATH=. python benchmarks/calibration_coverage.py --benches {a.benches}"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"summary": s, "rows": rows, "lut": lut_rows}, indent=1, default=float) + "\n")
    print(f"wrote {a.out} ({s['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
