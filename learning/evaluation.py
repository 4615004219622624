r"""Evaluation of trained systems and classical baselines on one set of test objects.

Fairness rules: every system measures the **same objects** with its own optics (its own masks,
SLM and sensor) and the **same noise stream** — object ``i`` draws its exact sensor noise
(:meth:`optics.sensor.Sensor.sample`) from a generator seeded with ``seed·1000003 + i``, for every
row. Systems run in eval mode (exact SLM levels, BatchNorm running statistics).

Rows: each trained system (unrolled solver + network), and for chosen systems the classical
solver alone on that system's own measurements (e.g. error reduction with the student's single
mask, and with the teacher's ``L`` masks). Columns: PSNR and SSIM of the encoded quantity (the
phase over the encoded phase span for phase objects, the amplitude for amplitude objects, the
global-phase aligned complex field for complex objects: PSNR range 1 and the amplitude SSIM)
as mean / median / std, and the global-phase aligned relative error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from .metrics import relative_error, ssim_amplitude, ssim_phase, summarize
from .systems import first_estimate, sample_generators
from .training import encoded_psnr

__all__ = ["EvalEntry", "evaluate_entries", "format_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("name", "kind", "n_masks", "psnr_mean", "psnr_median", "psnr_std", "ssim_mean",
                 "ssim_median", "ssim_std", "rel_err_mean", "rel_err_median", "n")


@dataclass
class EvalEntry:
    """One row: ``model`` (a PhaseRetrievalModel) evaluated with its network, or — with
    ``classical`` set to ``"er"``/``"wf"`` — its physics with that solver alone for ``n_iter``
    iterations (from the same flat start as the unrolled estimate)."""

    name: str
    model: torch.nn.Module
    classical: Optional[str] = None
    n_iter: int = 200


def _ssim(x_hat, x, encoding, phase_range_rad):
    if encoding == "phase":
        return ssim_phase(x_hat, x, data_range=abs(phase_range_rad[1] - phase_range_rad[0]))
    return ssim_amplitude(x_hat, x, data_range=1.0)


def evaluate_entries(entries: Sequence[EvalEntry], objects: torch.Tensor, *, encoding: str,
                     phase_range_rad=(0.0, math.pi), seed: int = 0, batch_size: int = 16,
                     keep: int = 4, progress: bool = True) -> Dict[str, dict]:
    """Evaluate every entry on ``objects`` ``(N, H, W)`` (module docstring).

    Returns ``{name: {"row": {...table columns...}, "per_sample": {"psnr", "ssim", "rel_err"},
    "examples": x̂ of the first ``keep`` objects, "measurement": y of object 0}}``.
    """
    from tqdm.auto import tqdm

    out: Dict[str, dict] = {}
    n = objects.shape[0]
    for e in tqdm(entries, desc="evaluate", unit="system", disable=not progress):
        m = e.model
        was = m.training
        m.eval()
        ps, ss, rs, ex, meas = [], [], [], [], None
        with torch.no_grad():
            for i in range(0, n, batch_size):
                x = objects[i:i + batch_size]
                gens = sample_generators([seed * 1_000_003 + i + j for j in range(x.shape[0])], device=x.device)
                y = m.physics.measure(x, noise="exact", generators=gens)
                if e.classical is None:
                    x_hat = m.reconstructor(y, m.physics).x
                else:
                    x_hat = first_estimate(m.physics, y, solver=e.classical, n_iter=e.n_iter,
                                           encoding=encoding)
                    if encoding == "phase":
                        x_hat = x_hat / x_hat.abs().clamp_min(1e-6)
                ps.append(encoded_psnr(x_hat, x, encoding, phase_range_rad).cpu())
                ss.append(_ssim(x_hat, x, encoding, phase_range_rad).cpu())
                rs.append(relative_error(x_hat, x).cpu())
                if sum(t.shape[0] for t in ex) < keep:
                    ex.append(x_hat.cpu())
                if meas is None:
                    meas = y[0].cpu()
        m.train(was)
        p, s, r = torch.cat(ps), torch.cat(ss), torch.cat(rs)
        sp, sss, sr = summarize(p), summarize(s), summarize(r)
        row = {"name": e.name, "kind": "network" if e.classical is None else f"{e.classical} ({e.n_iter} it.)",
               "n_masks": int(m.physics.n_masks), "psnr_mean": sp["mean"], "psnr_median": sp["median"],
               "psnr_std": sp["std"], "ssim_mean": sss["mean"], "ssim_median": sss["median"],
               "ssim_std": sss["std"], "rel_err_mean": sr["mean"], "rel_err_median": sr["median"], "n": n}
        out[e.name] = {"row": row, "per_sample": {"psnr": p.tolist(), "ssim": s.tolist(), "rel_err": r.tolist()},
                       "examples": torch.cat(ex)[:keep], "measurement": meas}
    return out


def format_table(rows: List[dict]) -> str:
    """A plain-text table of the rows (PSNR in dB)."""
    head = (f"{'system':<28} {'kind':<16} {'L':>2} {'PSNR mean':>9} {'median':>7} {'std':>6} "
            f"{'SSIM mean':>9} {'median':>7} {'std':>6} {'rel.err':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name'][:28]:<28} {r['kind'][:16]:<16} {r['n_masks']:>2} {r['psnr_mean']:>9.2f} "
                     f"{r['psnr_median']:>7.2f} {r['psnr_std']:>6.2f} {r['ssim_mean']:>9.3f} "
                     f"{r['ssim_median']:>7.3f} {r['ssim_std']:>6.3f} {r['rel_err_mean']:>8.4f}")
    return "\n".join(lines)
