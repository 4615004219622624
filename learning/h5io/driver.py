"""``write_cdp_dataset``: the callback-style producer loop over :class:`CDPWriter`.

For producers that map a batch of objects and their per-sample generators to measurements
(tests, scripts, the stand-in simulators of notebooks). ``phaseforge simulate`` runs its own
loop over :class:`CDPWriter` (it draws the sensor noise on a thread pool); both give the same
file for the same per-sample draws.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from ..errors import LearningError, SimulationOutputError
from .compression import DEFAULT_COMPRESSION
from .rng import sample_generator
from .writer import CDPWriter, check_int, object_at

__all__ = ["write_cdp_dataset", "check_measurements"]


def check_measurements(y, b: int, n_masks: int, expected: tuple | None, idx: range) -> torch.Tensor:
    """The output of a ``simulate`` callable for samples ``idx`` checked (tensor, real, shape
    ``(B, L, Mh, Mw)`` consistent with earlier batches, finite) and returned as float32."""
    where = f"samples {idx.start}..{idx.stop - 1}"
    if not isinstance(y, torch.Tensor):
        raise SimulationOutputError(
            f"simulate returned {type(y).__name__} for {where}; it must return a torch tensor "
            f"(B, L, Mh, Mw)")
    if y.is_complex() or not y.is_floating_point():
        raise SimulationOutputError(f"simulate returned dtype {y.dtype} for {where}; measurements "
                                    f"must be real floating point (intensities)")
    if y.ndim != 4 or y.shape[0] != b or y.shape[1] != n_masks:
        raise SimulationOutputError(
            f"simulate returned shape {tuple(y.shape)} for {where}; expected (B={b}, L={n_masks}, "
            f"Mh, Mw) — one measurement per mask for every object of the batch")
    if expected is not None and tuple(y.shape[1:]) != tuple(expected):
        raise SimulationOutputError(
            f"simulate returned measurements of shape {tuple(y.shape[1:])} for {where} but "
            f"earlier samples have {expected}")
    y = y.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(y).all()):
        bad = [idx.start + k for k in range(b) if not bool(torch.isfinite(y[k]).all())]
        raise SimulationOutputError(f"simulate returned NaN or inf for samples {bad[:10]}")
    return y


def write_cdp_dataset(path, *, objects: Sequence,
                      simulate: Callable[[torch.Tensor, list[torch.Generator]], torch.Tensor],
                      masks_rad, mask_amplitude=None, params: Mapping, config_yaml: str = "",
                      software_version: str, seed: int, measurement_units: str = "DN",
                      batch_size: int = 16, resume: bool = False, overwrite: bool = False,
                      shard: tuple[int, int] | None = None, progress: bool = True,
                      max_batches: int | None = None,
                      compression: str = DEFAULT_COMPRESSION, durable: bool = True,
                      threads: int = 2) -> Path:
    """Produce and write a CDP dataset with a ``simulate`` callback; return its path.

    ``objects`` : a sequence of complex ``(H, W)`` tensors (``N = len(objects)``; stored
    complex64). ``simulate(x, generators) -> y``: ``x`` a complex64 ``(B, H, W)`` batch,
    ``generators[k]`` the generator of sample ``k`` of the batch (:func:`sample_generator` of
    the global index), ``y`` a real ``(B, L, Mh, Mw)`` tensor (stored float32); it runs under
    ``torch.no_grad()`` and is never given more than ``batch_size`` samples (the content does
    not depend on ``batch_size``). ``max_batches`` stops after that many batches of this call,
    leaving the ``.tmp`` incomplete exactly like an interruption. The other arguments are
    :class:`CDPWriter`'s. Returns the final path when the file is complete, else the ``.tmp``.
    """
    n_total = len(objects)
    if n_total < 1:
        raise LearningError("objects is empty; nothing to simulate (check the image source)")
    check_int(seed, "seed", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    if max_batches is not None:
        max_batches = check_int(max_batches, "max_batches", 1)
    writer = CDPWriter(path, n_samples=n_total, masks_rad=masks_rad,
                       mask_amplitude=mask_amplitude, params=params, config_yaml=config_yaml,
                       software_version=software_version, seed=seed,
                       measurement_units=measurement_units, compression=compression,
                       resume=resume, overwrite=overwrite, shard=shard, objects=objects,
                       durable=durable, threads=threads)
    from tqdm.auto import tqdm

    n_masks = writer.masks.shape[0]
    with writer, tqdm(total=writer.n, initial=writer.n_written, disable=not progress,
                      desc=writer.final.name, unit="sample", dynamic_ncols=True) as bar:
        batches = 0
        while not writer.done and (max_batches is None or batches < max_batches):
            i0 = writer.next_index
            idx = range(i0, min(i0 + batch_size, writer.stop))
            x = torch.stack([object_at(objects, j, writer.object_shape) for j in idx])
            gens = [sample_generator(seed, j) for j in idx]
            with torch.no_grad():
                y = simulate(x, gens)
            y = check_measurements(y, len(idx), n_masks, writer.measurement_shape, idx)
            writer.append(x, y)
            batches += 1
            bar.update(len(idx))
        return writer.close()
