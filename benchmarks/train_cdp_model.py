"""Train the shipped deep-unfolding model of the standard CDP benchmark (the one command).

    OMP_NUM_THREADS=2 python benchmarks/train_cdp_model.py --out runs/cdp_unfolded \
        [--minutes 40] [--patch 64] [--batch 8] [--stages 5] [--shared] [--ship data/models/cdp_unfolded_L4.pt]
    python benchmarks/train_cdp_model.py --out runs/cdp_unfolded --evaluate runs/cdp_unfolded/model.pt \
        [--ship data/models/cdp_unfolded_L4.pt]     # held-out benchmark images vs ER; numbers into the file

Standard protocol (``benchmarks/cdp_benchmark.py``): real non-negative objects in ``[0, 1]``,
``L = 4`` uniform random phase masks ``θ ~ U[0, 2π)``, no oversampling, ``A_l x = FFT2(M_l ⊙ x)``
(``norm="ortho"``), noisy amplitudes ``b = √max(|Ax|² + (α/255)|Ax| n, 0)``, ``n ~ N(0, 1)``
(prDeep's noise), the model fed ``y = b²``. One model for every α: the noise level is read from the
data (the warm start's amplitude residual, :mod:`learning.unfolding`), and training draws α
log-uniformly in ``[--alpha-min, --alpha-max]`` (default 6…110, around the benchmark's 9/27/81).

Training data: random ``--patch``² crops of :func:`learning.images.training_pool` (no benchmark
image, no validation image), each cut from a square region ``r·patch`` wide (``r`` log-uniform
in ``[1, 4]``, anti-aliased resize: the benchmark images are whole images shrunk to 128², so
their detail per pixel is high), a random flip/rotation, a random contrast ``x^γ`` (γ ∈ [0.7, 1.4]);
fresh masks and noise for every sample of every step (the model must work for any masks).
Validation every ``--val-every`` steps at 128² on the pool's validation images
(:data:`learning.images.POOL_VALIDATION_NAMES`, whole, fixed masks and noise) at α = 9, 27, 81,
next to ER (realness + positivity) with 200 iterations on the same measurements.

Run folder: ``train.csv`` (step, loss, seconds), ``val.csv`` (step, PSNR per α, ER per α),
``curves.png``, ``checkpoints/last.pt`` (resumable, ``--resume``) and ``checkpoints/best.pt``
(the best mean validation PSNR), ``model.pt`` (the best weights in the shipped format:
tensors + plain metadata, loadable with ``torch.load(weights_only=True)``). ``--ship PATH``
copies ``model.pt`` there at the end. Deterministic for a given ``--seed`` on CPU.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning.images import training_pool  # noqa: E402
from learning.training import load_checkpoint, save_checkpoint  # noqa: E402
from learning.unfolding import UnfoldedReconstructor, save_model  # noqa: E402
from optics.fileio import atomic_path, save_figure, write_text  # noqa: E402

PROTOCOL = {"name": "cdp-standard", "n_masks": 4, "mask": "uniform-phase", "oversampling": 1,
            "fft_norm": "ortho", "noise": "prdeep-amplitude", "encoding": "amplitude",
            "object_range": [0.0, 1.0]}


def protocol(n_masks: int = 4, mask_levels: int = 0) -> dict:
    """The protocol a model is trained for (written into its file, checked at load): the standard
    one (:data:`PROTOCOL`) with ``n_masks`` masks whose phases are uniform in ``[0, 2π)``
    (``mask_levels`` 0) or uniform over ``mask_levels`` equally spaced levels ``2πk/levels`` (an
    SLM with that many phase levels, one SLM pixel per grid pixel)."""
    p = dict(PROTOCOL, n_masks=int(n_masks))
    if mask_levels:
        p["mask"] = f"uniform-phase-{int(mask_levels)}-levels"
        p["mask_levels"] = int(mask_levels)
    return p


class MaskFFTOperator:
    """``A x = FFT2(M_l ⊙ x)`` (ortho) for masks ``(..., L, H, W)`` (unit modulus), the standard
    protocol's operator; per-sample masks broadcast against the batch. ``AᴴA = L·I`` exactly."""

    def __init__(self, masks: torch.Tensor):
        self.masks = masks
        self.n_masks = int(masks.shape[-3])
        self.in_shape = tuple(int(d) for d in masks.shape[-2:])
        self.out_shape = self.in_shape
        self.norm_sq = float(self.n_masks)

    def A(self, x):
        return torch.fft.fft2(self.masks * x.unsqueeze(-3), norm="ortho")

    def A_adjoint(self, z):
        return (self.masks.conj() * torch.fft.ifft2(z, norm="ortho")).sum(dim=-3)


def random_masks(shape, generator, levels: int = 0) -> torch.Tensor:
    """Unit-modulus masks, phases uniform in ``[0, 2π)`` or (``levels`` > 0) uniform over the
    levels ``2πk/levels``."""
    u = torch.rand(shape, generator=generator)
    if levels:
        u = torch.floor(u * levels) / levels
    th = 2 * math.pi * u
    return torch.polar(torch.ones_like(th), th)


def prdeep_measure(op, x: torch.Tensor, alpha, generator) -> torch.Tensor:
    """Intensities ``y = b²`` with ``b = √max(|Ax|² + (α/255)|Ax| n, 0)`` (``alpha`` per sample)."""
    z = op.A(torch.complex(x, torch.zeros_like(x)))
    a = z.abs()
    n = torch.randn(a.shape, generator=generator)
    al = torch.as_tensor(alpha, dtype=a.dtype).reshape(-1, 1, 1, 1) if torch.as_tensor(alpha).ndim else alpha
    return (a * a + (al / 255.0) * a * n).clamp_min(0.0)


def noise_std_of(y: torch.Tensor, alpha) -> torch.Tensor:
    """The known amplitude noise std σ_b per sample (the std of ``√y − |Ax|`` prDeep's noise model
    predicts at the measured intensities, as the benchmark gives it to the regularised solvers)."""
    from optics.noise import PrDeepNoise
    al = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1).expand(y.shape[0])
    return torch.stack([PrDeepNoise(float(a)).amplitude_mse(y[b]).mean().sqrt() for b, a in enumerate(al)]).to(y.dtype)


def psnr01(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, per sample) with data range 1 (the 0–255 scale on [0, 1] images), estimate
    clipped to [0, 1] as the benchmark does."""
    mse = ((x_hat.clamp(0, 1) - x) ** 2).mean(dim=(-2, -1))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def er_baseline(op, y, n_iter=200):
    from learning.unfolding import warm_start
    return warm_start(op, y, n_iter=n_iter, encoding="amplitude", norm_sq=op.norm_sq,
                      in_shape=op.in_shape).real


class PatchSampler:
    """Random augmented patches of the training pool (module docstring)."""

    def __init__(self, images: dict, patch: int, seed: int):
        self.images = [torch.from_numpy(np.ascontiguousarray(v)).float() for v in images.values()]
        self.names = list(images)
        area = np.array([float(v.numel()) for v in self.images])
        self.p = torch.tensor(np.sqrt(area) / np.sqrt(area).sum())  # big images drawn more often
        self.patch = int(patch)
        self.g = torch.Generator().manual_seed(int(seed))

    def draw(self, n: int) -> torch.Tensor:
        import torch.nn.functional as F
        out = []
        P = self.patch
        for _ in range(n):
            img = self.images[int(torch.multinomial(self.p, 1, generator=self.g))]
            h, w = img.shape
            r = math.exp(torch.rand((), generator=self.g).item() * math.log(4.0))
            side = int(min(h, w, round(P * r)))
            t = int(torch.randint(0, h - side + 1, (), generator=self.g))
            left = int(torch.randint(0, w - side + 1, (), generator=self.g))
            crop = img[t:t + side, left:left + side][None, None]
            if side != P:
                crop = F.interpolate(crop, size=(P, P), mode="bilinear", antialias=side > P,
                                     align_corners=False)
            c = crop[0, 0].clamp(0, 1)
            k = int(torch.randint(0, 8, (), generator=self.g))
            c = torch.rot90(c, k % 4, (0, 1))
            if k >= 4:
                c = c.flip(-1)
            gamma = math.exp((torch.rand((), generator=self.g).item() * 2 - 1) * math.log(1.4))
            out.append(c.clamp_min(0) ** gamma)
        return torch.stack(out)


def validation_set(size: int = 128, n_masks: int = 4, levels: int = 0):
    """The pool's validation images (whole, 128²), fixed masks and noise per α."""
    from learning.images import fit_to_size
    pool = training_pool(split="val")
    xs = [fit_to_size(img, size, "resize") for img in pool.values()]
    x = torch.from_numpy(np.stack(xs)).float()
    g = torch.Generator().manual_seed(777)
    op = MaskFFTOperator(random_masks((x.shape[0], n_masks, size, size), g, levels))
    sets = {}
    for alpha in (9, 27, 81):
        y = prdeep_measure(op, x, float(alpha), g)
        sets[alpha] = (y, psnr01(er_baseline(op, y), x).mean().item())
    return x, op, sets


def _plain_rows(rows):
    """Rows as plain JSON numbers (numpy scalars would need unpickling in a weights-only checkpoint)."""
    return json.loads(json.dumps(rows, default=float))


def _write_csv(path: Path, rows):
    keys = list(rows[0]) if rows else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def _plot(run: Path, train_rows, val_rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    st = [r["step"] for r in train_rows]
    loss = np.array([r["loss"] for r in train_rows])
    k = max(1, len(loss) // 50)
    sm = np.convolve(loss, np.ones(k) / k, mode="valid")
    ax[0].semilogy(st[:len(sm)], sm)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel(f"training MSE (moving mean of {k})")
    for a in (9, 27, 81):
        ax[1].plot([r["step"] for r in val_rows], [r[f"psnr_a{a}"] for r in val_rows], "o-", label=f"α={a}")
        if val_rows:
            ax[1].axhline(val_rows[0][f"er_a{a}"], ls=":", color=ax[1].lines[-1].get_color())
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation PSNR (dB; dotted: ER 200)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, run / "curves.png", dpi=100)
    plt.close(fig)


def evaluate(model, x, op, sets):
    model.eval()
    res = {}
    with torch.no_grad():
        for alpha, (y, er) in sets.items():
            res[f"psnr_a{alpha}"] = psnr01(model(y, op, noise_std=noise_std_of(y, alpha)).x.real, x).mean().item()
            res[f"er_a{alpha}"] = er
    model.train()
    return res


def evaluate_benchmark(model_path: Path, *, seeds=(0, 1, 2), n_er: int = 200, threads: int = 2) -> dict:
    """The shipped model on the held-out benchmark images (:func:`learning.images.benchmark_images`,
    128², never in training) at α = 9, 27, 81, L = 4, next to ER (realness + positivity, ``n_er``
    iterations) on the same measurements: per seed, fresh masks and noise from
    ``torch.Generator().manual_seed(1000 + seed)``. Also the learned inference time per 128² image
    (batch 1, the first two images, median; ``threads`` threads)."""
    from learning.images import benchmark_images
    from learning.unfolding import load_model
    torch.set_num_threads(threads)
    model, meta = load_model(model_path)
    proto = meta.get("protocol") or PROTOCOL
    n_masks, levels = int(proto["n_masks"]), int(proto.get("mask_levels", 0))
    names, xs = benchmark_images(128)
    x = torch.from_numpy(xs).float()
    res = {"images": list(names), "seeds": list(seeds), "n_er": n_er}
    times = []
    for alpha in (9, 27, 81):
        net, er = [], []
        for seed in seeds:
            g = torch.Generator().manual_seed(1000 + seed)
            op = MaskFFTOperator(random_masks((n_masks, 128, 128), g, levels))
            y = prdeep_measure(op, x, float(alpha), g)
            er.append(psnr01(er_baseline(op, y, n_er), x))
            with torch.no_grad():
                if not times:  # inference time: batch 1, the first two images, 3 times each after a warm-up
                    model(y[:1], op, noise_std=noise_std_of(y[:1], alpha))
                    for i in (0, 1, 0, 1, 0, 1):
                        t = time.perf_counter()
                        model(y[i:i + 1], op, noise_std=noise_std_of(y[i:i + 1], alpha))
                        times.append(time.perf_counter() - t)
                net.append(psnr01(model(y, op, noise_std=noise_std_of(y, alpha)).x.real, x))
        net_t, er_t = torch.stack(net), torch.stack(er)
        res[f"alpha_{alpha}"] = {"learned_psnr": float(net_t.mean()), "er_psnr": float(er_t.mean()),
                                 "gain_db": float((net_t - er_t).mean()),
                                 "learned_per_image": [float(v) for v in net_t.mean(0)],
                                 "er_per_image": [float(v) for v in er_t.mean(0)]}
        print(f"[evaluate] α={alpha}: learned {res[f'alpha_{alpha}']['learned_psnr']:.2f} dB, "
              f"ER {res[f'alpha_{alpha}']['er_psnr']:.2f} dB, gain {res[f'alpha_{alpha}']['gain_db']:+.2f} dB",
              flush=True)
    res["inference_s_per_128_image_median"] = float(np.median(times))
    res["threads"] = threads
    print(f"[evaluate] learned inference {res['inference_s_per_128_image_median']:.3f} s per 128² image "
          f"(median, {threads} threads)")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--stages", type=int, default=5)
    ap.add_argument("--n-masks", type=int, default=4, help="L: masks per measurement (the benchmark's 4; 1 = single snapshot)")
    ap.add_argument("--mask-levels", type=int, default=0,
                    help="phase levels of the masks (0: continuous uniform phase; 4: a 4-level SLM)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from the weights of a model file (same architecture), e.g. an L = 4 model for L = 1")
    ap.add_argument("--shared", action="store_true")
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--n-warm", type=int, default=100)
    ap.add_argument("--warm-tv", type=int, default=0,
                    help="TV iterations after the ER warm start (no gradient; for L = 1, where ER stagnates)")
    ap.add_argument("--tv-weight", type=float, default=1.0, help="the TV warm start's λ / σ_x")
    ap.add_argument("--tau-init", type=float, default=1.0,
                    help="initial step of the stages' projections (small with --warm-tv: start from the TV result)")
    ap.add_argument("--loss", choices=["mse", "relative"], default="mse",
                    help="relative: each sample's MSE over its warm start's (every noise level weighs alike)")
    ap.add_argument("--noise-input", action="store_true",
                    help="the model takes the known amplitude noise std as an input (else it reads it from the data)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                    help="cosine: from --lr down to 5 %% of it at --max-steps (step-based, deterministic)")
    ap.add_argument("--alpha-min", type=float, default=6.0)
    ap.add_argument("--alpha-max", type=float, default=110.0)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ship", type=Path, default=None)
    ap.add_argument("--evaluate", type=Path, default=None,
                    help="only evaluate this model file on the benchmark images (no training); "
                         "with --ship, the numbers are written into the shipped file's metadata")
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    if args.evaluate is not None:
        from learning.unfolding import load_model
        res = evaluate_benchmark(args.evaluate, seeds=args.eval_seeds, threads=args.threads)
        if args.ship is not None:
            model, meta = load_model(args.evaluate)
            meta["benchmark"] = res
            save_model(model, args.ship, meta)
            print(f"[train_cdp_model] shipped {args.ship} ({args.ship.stat().st_size / 1e6:.2f} MB)")
        return json.dumps(res)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = args.out
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    model = UnfoldedReconstructor(encoding="amplitude", n_stages=args.stages, shared=args.shared,
                                  widths=args.widths, n_warm=args.n_warm, n_warm_tv=args.warm_tv,
                                  tv_weight_factor=args.tv_weight, noise_input=args.noise_input,
                                  tau_init=args.tau_init)
    if args.init is not None:
        from learning.unfolding import load_model
        init_model, _ = load_model(args.init)
        missing = model.load_state_dict(init_model.state_dict(), strict=False)
        if missing.unexpected_keys or [k for k in missing.missing_keys if k != "sigma_range"]:
            raise SystemExit(f"--init {args.init}: another architecture ({missing})")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    sampler = PatchSampler(training_pool(split="train"), args.patch, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    proto = protocol(args.n_masks, args.mask_levels)
    x_val, op_val, val_sets = validation_set(128, args.n_masks, args.mask_levels)
    train_rows, val_rows, step, best, spent = [], [], 0, -math.inf, 0.0
    if args.resume and (run / "checkpoints/last.pt").exists():
        st = load_checkpoint(run / "checkpoints/last.pt")  # weights-only: tensors and plain data
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sampler.g.set_state(st["sampler_rng"])
        gen.set_state(st["gen_rng"])
        train_rows, val_rows, step, best, spent = (st["train_rows"], st["val_rows"], st["step"],
                                                   st["best"], st["seconds"])
    budget = args.minutes * 60.0
    sig_lo, sig_hi = math.inf, 0.0
    t0 = time.perf_counter() - spent
    print(f"[train_cdp_model] {sum(p.numel() for p in model.parameters())} parameters; "
          f"ER 200 on validation: " + ", ".join(f"α={a}: {v[1]:.2f} dB" for a, v in val_sets.items()),
          flush=True)
    while step < args.max_steps and time.perf_counter() - t0 < budget:
        x = sampler.draw(args.batch)
        op = MaskFFTOperator(random_masks((args.batch, args.n_masks, args.patch, args.patch), gen, args.mask_levels))
        la, lb = math.log(args.alpha_min), math.log(args.alpha_max)
        alpha = torch.exp(la + (lb - la) * torch.rand(args.batch, generator=gen))
        y = prdeep_measure(op, x, alpha, gen)
        out = model(y, op, noise_std=noise_std_of(y, alpha) if args.noise_input else None)
        if args.loss == "relative":  # every sample's MSE relative to its warm start's: each α counts alike
            mse = ((out.x.real - x) ** 2).mean(dim=(-2, -1))
            mse0 = ((out.x0.real.clamp(0, 1) - x) ** 2).mean(dim=(-2, -1)).detach().clamp_min(1e-8)
            loss = (mse / mse0).mean()
        else:
            loss = ((out.x.real - x) ** 2).mean()
        if args.lr_schedule == "cosine":
            frac = min(step / max(args.max_steps, 1), 1.0)
            for grp in opt.param_groups:
                grp["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sig_lo = min(sig_lo, float(out.sigma_hat.min()))
        sig_hi = max(sig_hi, float(out.sigma_hat.max()))
        step += 1
        train_rows.append({"step": step, "loss": loss.item(), "seconds": round(time.perf_counter() - t0, 2)})
        if step % args.val_every == 0:
            v = evaluate(model, x_val, op_val, val_sets)
            v.update(step=step, seconds=round(time.perf_counter() - t0, 1))
            val_rows.append(v)
            score = np.mean([v[f"psnr_a{a}"] for a in (9, 27, 81)])
            print(f"[train_cdp_model] step {step} {v['seconds']:.0f}s loss {loss.item():.3g} "
                  + " ".join(f"α={a}: {v[f'psnr_a{a}']:.2f} (ER {v[f'er_a{a}']:.2f})" for a in (9, 27, 81)),
                  flush=True)
            lo = min(sig_lo, float(model.sigma_range[0])) if step > args.val_every else sig_lo
            hi = max(sig_hi, float(model.sigma_range[1])) if step > args.val_every and \
                math.isfinite(float(model.sigma_range[1])) else sig_hi
            model.sigma_range.copy_(torch.tensor([lo, hi]))
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "sampler_rng": sampler.g.get_state(),
                     "gen_rng": gen.get_state(), "train_rows": _plain_rows(train_rows), "val_rows": _plain_rows(val_rows),
                     "step": step, "best": float(max(best, score)), "seconds": time.perf_counter() - t0,
                     "args": {k: (str(a) if isinstance(a, Path) else a) for k, a in vars(args).items()}}
            save_checkpoint(run / "checkpoints/last.pt", state)
            if score > best:
                best = score
                save_checkpoint(run / "checkpoints/best.pt", state)
                meta = {"protocol": proto, "trained_steps": step, "training_seconds": round(v["seconds"], 1),
                        "patch": args.patch, "batch": args.batch, "alpha_range": [args.alpha_min, args.alpha_max],
                        "validation": v, "command": "python benchmarks/train_cdp_model.py " + " ".join(
                            a for a in (argv if argv is not None else sys.argv[1:]))}
                save_model(model, run / "model.pt", meta)
            _write_csv(run / "train.csv", train_rows)
            _write_csv(run / "val.csv", val_rows)
            _plot(run, train_rows, val_rows)
    print(f"[train_cdp_model] done: {step} steps, {time.perf_counter() - t0:.0f} s, best mean val PSNR {best:.2f} dB",
          flush=True)
    if args.ship is not None and (run / "model.pt").exists():
        args.ship.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.ship, keep_partial=False) as tmp:
            tmp.write_bytes((run / "model.pt").read_bytes())
        print(f"[train_cdp_model] shipped {args.ship} ({args.ship.stat().st_size / 1e6:.2f} MB)")
    return json.dumps({"steps": step, "best": best})


if __name__ == "__main__":
    main()
