"""The standard coded-diffraction-pattern benchmark (the prDeep / deep-unfolding protocol).

Protocol (exactly as published; Metzler et al., "prDeep", ICML 2018, and the deep-unfolding
papers that reuse it):

* test images: 128×128 grayscale, values in [0, 1], used as **real non-negative** objects
  (default: :func:`learning.images.benchmark_images`, eight whole scikit-image sample images that
  no phaseforge training pool uses; ``--images DIR`` for any folder of images);
* ``L = 4`` masks ``M_l = e^{iθ_l}``, ``θ_l ~ U[0, 2π)`` i.i.d. per pixel (``--n-masks`` 1…8,
  ``--masks FILE`` to reuse fixed masks: a complex ``.npy`` or phases in rad), no oversampling;
* ``A x = FFT2(M_l ⊙ x)/N`` — the unit-free, unitary operator
  ``CDPOperator(masks, method="fft", detector_order="fft")``;
* noise ``prdeep`` (:class:`optics.noise.PrDeepNoise`): amplitudes
  ``b = sqrt(max(|Ax|² + (α/255)·|Ax|·n, 0))``, ``n ~ N(0, 1)``, ``α ∈ {9, 27, 81}``; or
  ``poisson`` (:class:`optics.noise.PoissonNoise`): ``y ~ Poisson(κ|Ax|²)/κ`` with the equivalent
  count ``κ = (255/α)²`` photons per unit intensity (≈ 148 / 16 / 1.8 mean photons per detector
  pixel for natural images at α = 9 / 27 / 81);
* PSNR on the 0–255 scale (data range 1 on [0, 1] images) of the estimate after global-phase
  alignment (:func:`learning.metrics.align_global_phase`), real part, clipped to [0, 1] (every
  method's output is scored the same way); SSIM (scikit-image, data range 1) of the same image;
  the measurement residual ``‖|A x̂| − b‖ / ‖b‖`` against the noisy amplitudes; wall-clock
  seconds per image (torch threads as set, default all cores of this machine).

The same masks (``--seed``) and, per image and α, the same noise draw are given to every method.
Rows: every classical solver at its documented best settings, the training-free regularised
reconstructors, and the learned reconstructors that ship with phaseforge (``--methods`` picks;
``--list`` shows them). Outputs in ``--out`` (default ``out/cdp_benchmark``): ``cdp_benchmark.csv``
(one line per image, method, α, noise), ``cdp_benchmark.md`` (means per method), a figure of
reconstructions ``reconstructions.png``, and with ``--json PATH`` the machine-readable results
``{"protocol": {...}, "rows": [{"method", "kind", "alpha", "n_masks", "noise", "psnr_mean",
"ssim_mean", "seconds_per_image", "per_image": {...}}, ...]}``.

    python benchmarks/cdp_benchmark.py                                  # the README table
    python benchmarks/cdp_benchmark.py --alpha 27 --methods er pnp-nlm  # one α, two rows
    python benchmarks/cdp_benchmark.py --noise poisson                  # the Poisson variant
    python benchmarks/cdp_benchmark.py --images my_pngs/ --n-masks 1 --json out/l1.json
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.metrics import align_global_phase, psnr, ssim_amplitude  # noqa: E402
from optics.fileio import save_figure, write_json, write_text  # noqa: E402

ALPHAS = (9.0, 27.0, 81.0)
NOISES = ("prdeep", "poisson")
KINDS = ("classical", "regularised", "learned")


class BenchmarkError(ValueError):
    """Bad benchmark input (images, masks, options): the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------
# the protocol
# --------------------------------------------------------------------------------------------
def random_masks(n_masks: int, size: int, seed: int, levels: int = 0) -> torch.Tensor:
    """``(L, size, size)`` complex64 ``e^{iθ}``, ``θ ~ U[0, 2π)`` (seeded); with ``levels`` > 0 the
    phases are uniform over ``2πk/levels`` (an SLM with that many phase levels)."""
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand((n_masks, size, size), generator=g, dtype=torch.float64)
    if levels:
        u = torch.floor(u * levels) / levels
    theta = 2 * math.pi * u
    return torch.polar(torch.ones_like(theta), theta).to(torch.complex64)


def load_masks(path, size: int) -> torch.Tensor:
    """Masks from ``.npy``: complex ``(L, H, W)`` (unit modulus expected) or real phases in rad."""
    p = Path(path)
    if not p.is_file():
        raise BenchmarkError(f"--masks {p}: no such file; pass a .npy of complex masks or phases (L, H, W)")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BenchmarkError(f"--masks {p} is not a readable .npy array ({exc}); save the masks with numpy.save") from exc
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or tuple(a.shape[1:]) != (size, size) or not 1 <= a.shape[0] <= 8:
        raise BenchmarkError(f"--masks {p} has shape {a.shape}; expected (L, {size}, {size}) with 1 ≤ L ≤ 8 "
                             f"(or pass --size {a.shape[-1]})")
    if not np.all(np.isfinite(a)):
        raise BenchmarkError(f"--masks {p} holds NaN/inf values")
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_complex():
        return t.to(torch.complex64)
    th = t.to(torch.float64)
    return torch.polar(torch.ones_like(th), th).to(torch.complex64)


def load_images(images: Optional[str], size: int):
    """``(names, (n, size, size) float32 in [0, 1])``: the held-out set or a folder's images."""
    if images is None:
        from learning.images import benchmark_images
        return benchmark_images(size)
    from learning.images import folder_images
    p = Path(images)
    if not p.is_dir():
        raise BenchmarkError(f"--images {p}: not a folder; pass a folder of .png/.jpg/.tif images")
    s = folder_images(p, size)
    names = tuple(Path(s.source_key(i)).stem for i in range(len(s)))
    return names, np.stack([s[i] for i in range(len(s))]).astype(np.float32)


def make_operator(masks: torch.Tensor):
    """The unit-free unitary CDP operator of the protocol (FFT sample order, as published)."""
    from optics.cdp import CDPOperator
    return CDPOperator(masks, method="fft", detector_order="fft").eval()


def make_noise(noise: str, alpha: float):
    from optics.noise import PoissonNoise, PrDeepNoise
    if noise == "prdeep":
        return PrDeepNoise(alpha=alpha)
    if noise == "poisson":
        return PoissonNoise.matching_prdeep(alpha)
    raise BenchmarkError(f"unknown noise {noise!r}; choose one of {NOISES}")


def measurement_seed(seed: int, image_index: int, alpha: float, noise: str) -> int:
    """The noise draw of one image at one α (the same for every method)."""
    return (int(seed) * 1_000_003 + image_index * 7919 + int(round(alpha * 16)) * 104729
            + NOISES.index(noise) * 15485863) % (2 ** 62)


# --------------------------------------------------------------------------------------------
# the rows
# --------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What a method gets besides ``(op, y)``: the noise model (known noise level), α, L."""
    noise: object
    alpha: float
    n_masks: int
    seed: int


@dataclass
class Method:
    name: str
    kind: str
    run: Callable  # (op, y (1, L, H, W) intensities, Context) -> x_hat (1, H, W)
    settings: Dict = field(default_factory=dict)
    available: Callable[[], Optional[str]] = lambda: None  # None, or why the row cannot run
    training_s: Optional[float] = None
    n_masks: Optional[int] = None  # a learned row runs only at the L it was trained for


def _solver(name: str, **kw) -> Callable:
    def run(op, y, ctx: Context):
        from learning.solvers import solve
        extra = dict(kw)
        if extra.pop("noise_aware", False):
            extra["amplitude_noise_std"] = amplitude_noise_std(ctx.noise, y)
        return solve(op, y, name, generator=ctx.seed, history=False, **extra).x
    return run


#: per-α settings of the rows ``tv-tuned`` / ``pnp-nlm-tuned`` (``--tuned FILE``, written by
#: ``benchmarks/tune_regularised.py`` on the tuning images for this run's L and mask levels)
TUNED: Dict[str, dict] = {}


def _tuned(method: str) -> Callable:
    def run(op, y, ctx: Context):
        from learning.solvers import solve
        best = TUNED.get(f"{ctx.alpha:g}", {}).get("best", {}).get(method)
        if best is None:
            raise BenchmarkError(f"--tuned has no {method} setting for α = {ctx.alpha:g}; run "
                                 f"benchmarks/tune_regularised.py --alpha {ctx.alpha:g} (tuning images only)")
        return solve(op, y, "pnp" if method == "pnp-nlm" else "tv", real=True, nonnegative=True,
                     generator=ctx.seed, history=False, amplitude_noise_std=amplitude_noise_std(ctx.noise, y),
                     **best["settings"]).x
    return run


def load_tuned(path, n_masks: int, levels: int) -> Dict[str, dict]:
    """The per-α settings of a tuning file, refused when it was tuned for another L or mask levels."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        got = (int(d["n_masks"]), int(d["mask_levels"]), d["alphas"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"--tuned {p}: not a tuning file of benchmarks/tune_regularised.py ({exc})") from exc
    if got[:2] != (int(n_masks), int(levels)):
        raise BenchmarkError(f"--tuned {p} was tuned for L = {got[0]}, {got[1]} mask levels; this run has "
                             f"L = {n_masks}, {levels} mask levels (0 = continuous): tune for this regime")
    return dict(got[2])


def amplitude_noise_std(noise, y: torch.Tensor) -> float:
    """The known noise level as the solvers take it: the RMS of ``√y − |Ax|`` the noise model
    predicts, evaluated at the measured intensities (the protocol's α is known, the truth is not)."""
    return math.sqrt(float(noise.amplitude_mse(y).mean()))


def _learned_available(path: Path) -> Callable[[], Optional[str]]:
    def check():
        if not path.is_file():
            return f"{path} not found (train it: python benchmarks/train_cdp_model.py)"
        return None
    return check


def _learned(path: Path) -> Callable:
    cache: dict = {}

    def run(op, y, ctx: Context):
        from learning.unfolding import load_model
        if "model" not in cache:
            cache["model"], cache["meta"] = load_model(path)
        want = cache["meta"].get("protocol", {}).get("n_masks")
        if want is not None and int(want) != ctx.n_masks:
            raise BenchmarkError(f"{path.name} was trained for L = {want} masks, this run has L = {ctx.n_masks}; "
                                 f"leave the row out (--methods) or train a model for L = {ctx.n_masks}")
        with torch.no_grad():  # the noise level: read from the data, or the known one for a noise_input model
            return cache["model"](y, op, check=True, noise_std=amplitude_noise_std(ctx.noise, y)).x
    return run


def _training_seconds(path: Path) -> Optional[float]:
    """The training time a shipped model file records (``meta["training_seconds"]``), or None."""
    if not path.is_file():
        return None
    try:
        from learning.unfolding import load_model
        return float(load_model(path)[1].get("training_seconds"))
    except Exception:  # noqa: BLE001 - a damaged file is reported when the row runs
        return None


def _bm3d_available() -> Optional[str]:
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return "the optional bm3d package is not installed (pip install .[bm3d]; non-commercial licence)"
    return None


MODELS = Path(__file__).resolve().parents[1] / "data" / "models"

#: every row: classical solvers at their documented best settings for real non-negative objects,
#: the training-free regularised reconstructors, the shipped learned models
METHODS: Dict[str, Method] = {m.name: m for m in [
    Method("er", "classical", _solver("er", n_iter=200, real=True, nonnegative=True, tol=None),
           {"n_iter": 200, "real": True, "nonnegative": True}),
    Method("er-dp", "classical", _solver("er", n_iter=1000, real=True, nonnegative=True, stop="discrepancy",
                                         noise_aware=True),
           {"n_iter": "≤ 1000", "real": True, "nonnegative": True, "stop": "discrepancy"}),
    Method("hio", "classical", _solver("hio", n_iter=200, real=True, nonnegative=True, tol=None),
           {"n_iter": 200, "beta": 0.9, "real": True, "nonnegative": True}),
    Method("wf", "classical", _solver("wf", n_iter=500, real=True, nonnegative=True),
           {"n_iter": 500, "real": True, "nonnegative": True}),
    Method("af", "classical", _solver("af", n_iter=500, real=True, nonnegative=True),
           {"n_iter": 500, "real": True, "nonnegative": True}),
    Method("tv", "regularised", _solver("tv", real=True, nonnegative=True, noise_aware=True),
           {"real": True, "nonnegative": True}),
    Method("pnp-nlm", "regularised", _solver("pnp", denoiser="nlm", real=True, nonnegative=True, noise_aware=True),
           {"denoiser": "nlm", "real": True, "nonnegative": True}),
    Method("pnp-wavelet", "regularised", _solver("pnp", denoiser="wavelet", real=True, nonnegative=True,
                                                 noise_aware=True),
           {"denoiser": "wavelet", "real": True, "nonnegative": True}),
    Method("pnp-bm3d", "regularised", _solver("pnp", denoiser="bm3d", real=True, nonnegative=True, noise_aware=True),
           {"denoiser": "bm3d", "real": True, "nonnegative": True}, available=_bm3d_available),
    Method("tv-tuned", "regularised", _tuned("tv"), {"settings": "per α from --tuned", "real": True,
                                                      "nonnegative": True},
           available=lambda: None if TUNED else "needs --tuned FILE (benchmarks/tune_regularised.py)"),
    Method("pnp-nlm-tuned", "regularised", _tuned("pnp-nlm"), {"settings": "per α from --tuned", "real": True,
                                                                "nonnegative": True},
           available=lambda: None if TUNED else "needs --tuned FILE (benchmarks/tune_regularised.py)"),
    Method("unfolded", "learned", _learned(MODELS / "cdp_unfolded_L4.pt"),
           {"model": "data/models/cdp_unfolded_L4.pt", "stages": 5, "shared": True, "warm_start": "ER 50 + TV 20"},
           available=_learned_available(MODELS / "cdp_unfolded_L4.pt"),
           training_s=_training_seconds(MODELS / "cdp_unfolded_L4.pt"), n_masks=4),
    Method("unfolded-l1", "learned", _learned(MODELS / "cdp_unfolded_L1_4level.pt"),
           {"model": "data/models/cdp_unfolded_L1_4level.pt", "stages": 5, "shared": True, "warm_start": "ER 50 + TV 40",
            "trained_masks": "L = 1, 4 phase levels"},
           available=_learned_available(MODELS / "cdp_unfolded_L1_4level.pt"),
           training_s=_training_seconds(MODELS / "cdp_unfolded_L1_4level.pt"), n_masks=1),
]}
DEFAULT_METHODS = tuple(n for n in METHODS if n not in ("pnp-bm3d", "tv-tuned", "pnp-nlm-tuned"))


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
def score(x_hat: torch.Tensor, x: torch.Tensor, op, b: torch.Tensor) -> Dict[str, float]:
    """PSNR (0–255 scale), SSIM, residual ``‖|A x̂| − b‖/‖b‖`` of one estimate (protocol above)."""
    x_hat = x_hat.detach().to(torch.complex128)
    xc = x.to(torch.complex128)
    est = align_global_phase(x_hat, xc).real.clamp(0.0, 1.0)
    with torch.no_grad():
        r = op.A(x_hat.to(torch.complex64)).abs() - b
    return {"psnr": float(psnr(est, x.to(torch.float64), data_range=1.0)),
            "ssim": float(ssim_amplitude(est, x.to(torch.float64), data_range=1.0)),
            "residual": float(torch.linalg.vector_norm(r) / torch.linalg.vector_norm(b))}


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def run_benchmark(names, images: np.ndarray, masks: torch.Tensor, *, alphas, noises, methods: List[str],
                  seed: int, progress: bool = True) -> dict:
    op = make_operator(masks)
    per: List[dict] = []
    examples: Dict[tuple, np.ndarray] = {}
    todo = [(noise, a, m) for noise in noises for a in alphas for m in methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo) * len(names), desc="cdp benchmark", unit="recon")
    for noise, alpha, mname in todo:
        method = METHODS[mname]
        nm = make_noise(noise, alpha)
        ctx = Context(noise=nm, alpha=alpha, n_masks=int(masks.shape[0]), seed=seed)
        for i, name in enumerate(names):
            x = torch.from_numpy(images[i]).to(torch.float32)
            g = torch.Generator().manual_seed(measurement_seed(seed, i, alpha, noise))
            with torch.no_grad():
                y = nm.sample(op.intensity(x.to(torch.complex64))[None], generator=g)
            b = y.clamp(min=0).sqrt()
            t0 = time.perf_counter()
            x_hat = method.run(op, y, ctx)
            dt = time.perf_counter() - t0
            s = score(x_hat[0], x, op, b[0])
            per.append({"method": mname, "kind": method.kind, "noise": noise, "alpha": alpha, "image": name,
                        **s, "seconds": dt})
            if i == 0:
                examples[(noise, alpha, mname)] = align_global_phase(
                    x_hat[0].detach().to(torch.complex128), x.to(torch.complex128)).real.clamp(0, 1).numpy()
            if bar is not None:
                bar.set_postfix(method=mname, alpha=alpha, psnr=f"{s['psnr']:.2f}")
                bar.update(1)
    if bar is not None:
        bar.close()
    return {"per_image": per, "examples": examples, "first_image": (names[0], images[0])}


def summarise(per: List[dict], n_masks: int) -> List[dict]:
    rows = []
    keys = []
    for r in per:
        k = (r["method"], r["noise"], r["alpha"])
        if k not in keys:
            keys.append(k)
    for mname, noise, alpha in keys:
        rs = [r for r in per if (r["method"], r["noise"], r["alpha"]) == (mname, noise, alpha)]
        m = METHODS[mname]
        rows.append({
            "method": mname, "kind": m.kind, "alpha": alpha, "n_masks": n_masks, "noise": noise,
            "psnr_mean": statistics.fmean(r["psnr"] for r in rs),
            "psnr_std": statistics.pstdev([r["psnr"] for r in rs]),
            "ssim_mean": statistics.fmean(r["ssim"] for r in rs),
            "residual_mean": statistics.fmean(r["residual"] for r in rs),
            "seconds_per_image": statistics.fmean(r["seconds"] for r in rs),
            "settings": m.settings, "training_s": m.training_s,
            "per_image": {r["image"]: {"psnr": r["psnr"], "ssim": r["ssim"], "residual": r["residual"],
                                       "seconds": r["seconds"]} for r in rs},
        })
    return rows


def markdown(rows: List[dict], protocol: dict) -> str:
    alphas = sorted({r["alpha"] for r in rows})
    noises = [n for n in NOISES if any(r["noise"] == n for r in rows)]
    out = [f"Standard CDP benchmark: {protocol['n_images']} images ({protocol['images']}), "
           f"{protocol['size']}², L = {protocol['n_masks']}, seed {protocol['seed']}; "
           f"PSNR (dB, 0–255 scale) / SSIM / s per image; torch threads {protocol['threads']}.", ""]
    for noise in noises:
        out.append(f"**noise: {noise}**")
        out.append("")
        out.append("| method | kind | " + " | ".join(f"α = {a:g}: PSNR | SSIM | s/img" for a in alphas) + " |")
        out.append("|---|---|" + "---|---|---|" * len(alphas))
        best_classical = {a: max((r["psnr_mean"] for r in rows if r["noise"] == noise and r["alpha"] == a
                                  and r["kind"] == "classical"), default=float("nan")) for a in alphas}
        best_free = {a: max((r["psnr_mean"] for r in rows if r["noise"] == noise and r["alpha"] == a
                             and r["kind"] != "learned"), default=float("nan")) for a in alphas}
        for mname in dict.fromkeys(r["method"] for r in rows if r["noise"] == noise):
            cells = []
            kind = ""
            for a in alphas:
                r = next((r for r in rows if (r["method"], r["noise"], r["alpha"]) == (mname, noise, a)), None)
                if r is None:
                    cells.append("— | — | —")
                    continue
                kind = r["kind"]
                d = r["psnr_mean"] - best_classical[a]
                dd = "" if r["kind"] == "classical" or not math.isfinite(d) else f" ({d:+.2f})"
                d2 = r["psnr_mean"] - best_free[a]
                if r["kind"] == "learned" and math.isfinite(d) and math.isfinite(d2):
                    dd = f" ({d:+.2f} / {d2:+.2f})"
                cells.append(f"{r['psnr_mean']:.2f}{dd} | {r['ssim_mean']:.3f} | {r['seconds_per_image']:.2f}")
            out.append(f"| {mname} | {kind} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("(in brackets: difference to the best classical row at that α; for a learned row also, "
                   "after the slash, to the best training-free row, classical or regularised)")
        out.append("")
    return "\n".join(out)


def figure(path: Path, result: dict, noises, alphas, methods) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, x0 = result["first_image"]
    noise = noises[0]
    ms = [m for m in methods if (noise, alphas[0], m) in result["examples"]]
    fig, axes = plt.subplots(len(alphas), len(ms) + 1, figsize=(1.9 * (len(ms) + 1), 2.4 * len(alphas) + 0.4),
                             squeeze=False)
    per = {(r["method"], r["noise"], r["alpha"]): r for r in result["per_image"] if r["image"] == name}
    for i, a in enumerate(alphas):
        axes[i, 0].imshow(x0, cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"truth ({name})" if i == 0 else "", fontsize=8)
        axes[i, 0].set_ylabel(f"α = {a:g}", fontsize=9)
        for j, m in enumerate(ms):
            ax = axes[i, j + 1]
            ax.imshow(result["examples"][(noise, a, m)], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{m}\n{per[(m, noise, a)]['psnr']:.2f} dB", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"standard CDP benchmark, {noise} noise, L = {result.get('n_masks', '')}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_csv(path: Path, per: List[dict]) -> None:
    import io
    buf = io.StringIO()
    cols = ["method", "kind", "noise", "alpha", "image", "psnr", "ssim", "residual", "seconds"]
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in per:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in cols})
    write_text(path, buf.getvalue())


#: protocol entries that must agree before a run's rows join another run's results file
SAME_PROTOCOL_KEYS = ("names", "size", "n_masks", "masks", "seed")


def merge_rows(path: Path, protocol: dict, rows: List[dict]) -> dict:
    """Put this run's rows into an existing results file (``--merge-into``): a row of the same
    method, noise and α is replaced, a new one is added; refused unless the images, size, masks
    and seed are the same (the rows must score the same measurements). The file's markdown table
    (same name, ``.md``) is rewritten; the merged rows keep the command that measured them."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        old_proto, old_rows = old["protocol"], list(old["rows"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"--merge-into {path}: not a results file of this benchmark ({exc})") from exc
    diff = [k for k in SAME_PROTOCOL_KEYS if old_proto.get(k) != protocol.get(k)]
    if diff:
        raise BenchmarkError(f"--merge-into {path}: measured with another {', '.join(diff)} "
                             f"({', '.join(f'{k}: {old_proto.get(k)!r} vs {protocol.get(k)!r}' for k in diff)}); "
                             f"rows of different measurements cannot share a table")
    key = lambda r: (r["method"], r["noise"], float(r["alpha"]))  # noqa: E731
    new = {key(r): dict(r, command=protocol["command"], threads=protocol["threads"]) for r in rows}
    out_rows = [new.pop(key(r)) if key(r) in new else r for r in old_rows] + list(new.values())
    merged = {"protocol": dict(old_proto, merged_commands=old_proto.get("merged_commands", []) + [protocol["command"]]),
              "rows": out_rows}
    write_json(path, merged)
    write_text(path.with_suffix(".md"), markdown(out_rows, merged["protocol"]) + "\n")
    return merged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=None, help="folder of test images (default: the held-out set)")
    ap.add_argument("--alpha", type=float, nargs="+", default=list(ALPHAS))
    ap.add_argument("--n-masks", type=int, default=4)
    ap.add_argument("--masks", default=None, help=".npy of fixed masks (complex or phases in rad)")
    ap.add_argument("--mask-levels", type=int, default=0,
                    help="random masks with this many phase levels 2πk/levels (0: continuous; 4: a 4-level SLM)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", nargs="+", default=["prdeep"], choices=NOISES)
    ap.add_argument("--methods", nargs="+", default=None, help=f"rows (default: {' '.join(DEFAULT_METHODS)})")
    ap.add_argument("--n-images", type=int, default=None, help="only the first N images (a quick look)")
    ap.add_argument("--out", default="out/cdp_benchmark")
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge-into", default=None,
                    help="a results JSON of an earlier run on the same images/masks/seed: replace or add this run's "
                         "rows there and rewrite its .md table")
    ap.add_argument("--tuned", default=None,
                    help="JSON of benchmarks/tune_regularised.py: adds the rows tv-tuned and pnp-nlm-tuned")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for m in METHODS.values():
            why = m.available()
            print(f"{m.name:12s} {m.kind:12s} {json.dumps(m.settings, ensure_ascii=False)}"
                  + (f"   [unavailable: {why}]" if why else ""))
        return 0
    try:
        if not 1 <= args.n_masks <= 8:
            raise BenchmarkError(f"--n-masks {args.n_masks}: the protocol takes 1 … 8 masks")
        if any(not (a > 0 and math.isfinite(a)) for a in args.alpha):
            raise BenchmarkError(f"--alpha {args.alpha}: α must be positive (the protocol's 9, 27, 81)")
        masks = (load_masks(args.masks, args.size) if args.masks
                 else random_masks(args.n_masks, args.size, args.seed, args.mask_levels))
        if args.tuned:
            TUNED.clear()
            TUNED.update(load_tuned(args.tuned, int(masks.shape[0]), args.mask_levels))
        methods = list(args.methods or (DEFAULT_METHODS + (("tv-tuned", "pnp-nlm-tuned") if args.tuned else ())))
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise BenchmarkError(f"unknown method(s) {unknown}; choose from {list(METHODS)} (--list)")
        skipped = {m: METHODS[m].available() for m in methods if METHODS[m].available()}
        for m in methods:
            want = METHODS[m].n_masks
            if m not in skipped and want is not None and want != int(masks.shape[0]):
                skipped[m] = f"trained for L = {want}, this run has L = {int(masks.shape[0])}"
        for m, why in skipped.items():
            print(f"cdp_benchmark: skipping {m}: {why}", file=sys.stderr)
        methods = [m for m in methods if m not in skipped]
        if not methods:
            raise BenchmarkError("no method left to run")
        names, images = load_images(args.images, args.size)
        if args.n_images:
            names, images = names[: args.n_images], images[: args.n_images]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except BenchmarkError as exc:
        print(f"cdp_benchmark: error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run_benchmark(names, images, masks, alphas=args.alpha, noises=args.noise, methods=methods,
                        seed=args.seed, progress=not args.no_progress)
    res["n_masks"] = int(masks.shape[0])
    protocol = {"images": args.images or "held-out (learning.images.BENCHMARK_IMAGE_NAMES)", "names": list(names),
                "n_images": len(names), "size": args.size, "n_masks": int(masks.shape[0]),
                "masks": args.masks or (f"uniform random phase, seed {args.seed}" if not args.mask_levels else
                                        f"uniform random phase on {args.mask_levels} levels, seed {args.seed}"),
                "seed": args.seed,
                "operator": "A x = FFT2(M_l ⊙ x)/N (unitary), FFT sample order, no oversampling",
                "noise": {"prdeep": "b = sqrt(max(|Ax|² + (α/255)|Ax|n, 0)), n ~ N(0,1)",
                          "poisson": "y ~ Poisson((255/α)²|Ax|²)/(255/α)²"},
                "psnr": "0–255 scale: data range 1 on [0,1] images, estimate phase-aligned, real part clipped to [0,1]",
                "threads": torch.get_num_threads(), "skipped": skipped,
                "command": "python benchmarks/cdp_benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    rows = summarise(res["per_image"], int(masks.shape[0]))
    md = markdown(rows, protocol)
    write_csv(out / "cdp_benchmark.csv", res["per_image"])
    write_text(out / "cdp_benchmark.md", md + "\n")
    figure(out / "reconstructions.png", res, args.noise, args.alpha, methods)
    if args.json:
        write_json(Path(args.json), {"protocol": protocol, "rows": rows})
    if args.merge_into:
        try:
            merged = merge_rows(Path(args.merge_into), protocol, rows)
        except BenchmarkError as exc:  # this run's own files are written; only the merge is refused
            print(f"cdp_benchmark: error: {exc}", file=sys.stderr)
            return 2
        print(f"merged {len(rows)} row(s) into {args.merge_into} ({len(merged['rows'])} rows; "
              f"{Path(args.merge_into).with_suffix('.md')} rewritten)")
    print(md)
    print(f"wrote {out / 'cdp_benchmark.csv'}, {out / 'cdp_benchmark.md'}, {out / 'reconstructions.png'}"
          + (f", {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
