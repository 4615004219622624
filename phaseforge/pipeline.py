"""The jobs behind the CLI: simulate a CDP dataset, reconstruct it with a classical solver, the demo.

Each job writes the fully resolved configuration next to its outputs, writes files atomically,
and shows progress with tqdm.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from optics.fileio import save_figure, save_npz, write_json, write_text
from optics.grid import crop_centered, pad_centered

from . import __version__
from .build import effective_masks, objects_from_config, system_from_config
from .config import Config, dump, from_yaml_text, load


def _file_params(cfg: Config, system) -> dict:
    """The parameter tree stored in a dataset file (SI values; units from the key suffix)."""
    o = cfg.optics
    optics = {"method": system.method, "oversampling": o.oversampling, "detector_order": system.detector_order,
              "n_masks": system.n_masks}
    if not system.unit_free:  # the unit-free method has no pitch, wavelength or distance to store
        optics.update(wavelength_m=o.wavelength_m, pitch_m=o.pitch_m, z_m=o.z_m,
                      detector_pitch_m=list(system.out_pitch_m))
    noise = system.noise_model
    params = {
        "optics": optics,
        "noise": {"model": "sensor"} if noise is None else {"model": noise.name, **noise.params()},
        "propagation": dict(system.propagation_options),
        "masks": {"kind": cfg.masks.kind, "n_masks": cfg.masks.n_masks, "seed": cfg.masks.seed,
                  "levels": cfg.masks.levels},
        "slm": {k: v for k, v in dataclasses.asdict(cfg.slm).items() if k != "lut"},
        "sensor": dataclasses.asdict(cfg.sensor),
        "data": dataclasses.asdict(cfg.data),
    }
    if cfg.slm.lut is not None:
        params["slm"]["lut_gray"] = list(cfg.slm.lut.gray)
        params["slm"]["lut_phase_rad"] = list(cfg.slm.lut.phase_rad)
    return params


class NoisySimulator:
    """``simulate(x, generators)``: noiseless intensities of the batch ``system.intensity(x)``,
    then each sample's noise from its own generator — the system's noise model on the intensity
    (:class:`optics.noise.NoiseModel`, ``noise.model`` of the config) or else the sensor with its
    own noise model (``sensor.noise``: ``poisson`` the exact :meth:`optics.sensor.Sensor.sample`,
    ``gaussian`` its differentiable approximation, ``none`` the noiseless expected DN) — the
    samples spread over a pool of ``threads`` threads (``torch.poisson`` releases the GIL, and
    each draw holds only its own generator, so the result is the same as one sample after the
    other, bit for bit)."""

    def __init__(self, system, *, threads: Optional[int] = None):
        self.system = system
        self.sensor = system.sensor
        self.noise_model = getattr(system, "noise_model", None)
        self.threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
        self._pool = None

    def _draw(self, inten: torch.Tensor, generator) -> torch.Tensor:
        if self.noise_model is not None:
            return self.noise_model.sample(inten, generator=generator)
        return self.sensor(inten, generator=generator)  # the sensor's own noise model (sensor.noise)

    def __call__(self, x: torch.Tensor, generators) -> torch.Tensor:
        with torch.no_grad():
            inten = self.system.intensity(x.to(torch.complex64))
            if self.sensor is None and self.noise_model is None:
                return inten.float()
            draw = lambda b: self._draw(inten[b], generators[b])  # noqa: E731
            if self.threads == 1 or len(generators) == 1:
                ys = [draw(b) for b in range(len(generators))]
            else:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor
                    self._pool = ThreadPoolExecutor(max_workers=self.threads)
                ys = list(self._pool.map(draw, range(len(generators))))
            return torch.stack(ys).float()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def make_simulator(system, *, threads: Optional[int] = None) -> NoisySimulator:
    """``simulate(x, generators)`` for :func:`learning.h5io.write_cdp_dataset` and
    :func:`simulate`: noiseless intensities for the batch, then each sample's sensor noise from
    its own generator (:class:`NoisySimulator`)."""
    return NoisySimulator(system, threads=threads)


def simulate(cfg: Config, out: Path, *, resume: bool = False, overwrite: bool = False,
             shard: Optional[Tuple[int, int]] = None, progress: bool = True,
             max_batches: Optional[int] = None) -> Path:
    """Simulate ``cfg.data`` through the configured CDP system into the HDF5 file ``out``.

    The loop: objects of a batch → noiseless intensities → each sample's noise (``noise.model``
    on the intensity, or the sensor with ``sensor.noise``) from its own generator
    ``learning.h5io.sample_generator(seed, i)`` → appended to a
    :class:`learning.h5io.CDPWriter` (compression ``data.compression``), so the file does not
    depend on the batch size, the threads, sharding or where an interrupted run (even a killed
    one) was resumed."""
    from tqdm.auto import tqdm

    from learning.h5io import CDPWriter, sample_generator, shard_from_env
    from learning.h5io.writer import check_int, object_at

    out = Path(out)
    if max_batches is not None:
        max_batches = check_int(max_batches, "max_batches", 1)
    system = system_from_config(cfg)
    objects = objects_from_config(cfg)
    if shard is None:
        shard = shard_from_env()
    masks_rad, mask_amp = effective_masks(system)
    writer = CDPWriter(
        out, n_samples=len(objects), masks_rad=masks_rad, mask_amplitude=mask_amp,
        params=_file_params(cfg, system), config_yaml=dump(cfg), software_version=__version__,
        seed=cfg.seed, measurement_units="DN" if system.sensor is not None else "arb",
        compression=cfg.data.compression, resume=resume, overwrite=overwrite, shard=shard,
        objects=objects)
    sim = make_simulator(system)
    try:
        with writer, tqdm(total=writer.n, initial=writer.n_written, disable=not progress,
                          desc=writer.final.name, unit="sample", dynamic_ncols=True) as bar:
            batches = 0
            while not writer.done and (max_batches is None or batches < max_batches):
                idx = range(writer.next_index, min(writer.next_index + cfg.batch_size, writer.stop))
                x = torch.stack([object_at(objects, j, writer.object_shape) for j in idx])
                y = sim(x, [sample_generator(cfg.seed, j) for j in idx])
                writer.append(x, y)
                batches += 1
                bar.update(len(idx))
            path = writer.close()
    finally:
        sim.close()
    if Path(path).suffix != ".tmp":
        write_text(Path(path).with_name(Path(path).name + ".config.yaml"), dump(cfg))
    return Path(path)


def _measurements_to_intensity(sensor, y: torch.Tensor) -> torch.Tensor:
    """DN → photons (the solvers' intensity units) through the stored sensor's affine map."""
    if sensor is None:
        return y
    return sensor.dn_to_photons(y).clamp_min(0.0)


#: a reconstruction whose relative error (after global-phase alignment) exceeds this has failed:
#: it is nearer to a random or flat guess (relative error ≈ 1) than to the object
FAILURE_RELATIVE_ERROR = 0.5

#: the files ``reconstruct`` writes into its output folder (an existing one is refused without overwrite)
RECONSTRUCT_FILES = ("metrics.json", "reconstructions.npz", "config.yaml", "reconstructions.png")


def stored_geometry(params: dict, object_shape):
    """:class:`optics.sampling.GeometryReport` of the geometry stored in a dataset file's parameters."""
    from optics.sampling import geometry_report

    o, prop = params["optics"], params.get("propagation") or {}
    if str(o["method"]) == "fft":  # unit-free: no pitch, wavelength or distance stored
        return geometry_report(tuple(object_shape), method="fft", oversampling=float(o["oversampling"]))
    return geometry_report(tuple(object_shape), pitch_m=float(o["pitch_m"]), wavelength_m=float(o["wavelength_m"]),
                           z_m=float(o["z_m"]), method=str(o["method"]), oversampling=float(o["oversampling"]),
                           band_limit=bool(prop.get("band_limit", True)), pad=prop.get("pad", True))


def reconstruct(data: Path, out: Path, *, solver: Optional[str] = None, n_iter: Optional[int] = None,
                tol: Optional[float] = None, n: Optional[int] = None, batch_size: int = 16,
                progress: bool = True, config: Optional[Path] = None, overrides=None,
                overwrite: bool = False, model: Optional[Path] = None) -> dict:
    """Run a classical solver (or, with ``model``, a learned deep-unfolding model file, checked
    against the file's physics by :func:`learning.unfolding.check_protocol`) on every sample of
    ``data``; write reconstructions, metrics, figure.

    The physics (operator, masks, sensor, object encoding) comes from the dataset file only.
    ``config`` (YAML) and ``overrides`` may change the solver settings (``solver.*``,
    ``batch_size``, ``seed``); a change to any physics key is refused, because it would not
    apply to measurements already simulated. Explicit arguments win over both.

    ``out`` is created when missing; a folder that already holds a result (any of
    :data:`RECONSTRUCT_FILES`) is refused unless ``overwrite``. The report says which samples
    failed (relative error > :data:`FAILURE_RELATIVE_ERROR`: ``failed``, ``n_failed``) and the
    stored geometry's light budget (``geometry``, :mod:`optics.sampling`); progress advances
    per solver iteration inside each batch."""
    from learning.h5io import CDPDataset, physics_from_file
    from learning.metrics import evaluate

    out = Path(out)
    _check_out(out, overwrite)
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        from .config import ConfigError
        raise ConfigError(f"--n = {n!r}: reconstruct needs at least one sample; give N >= 1, or leave --n out "
                          f"for every sample of the file")
    ds = CDPDataset(data)
    stored = from_yaml_text(ds.attrs.get("config_yaml", ""))
    cfg = load(config, overrides, base=stored)
    _refuse_physics_changes(stored, cfg, data)
    if solver is None:
        solver = cfg.solver.name
    if n_iter is None:
        n_iter = cfg.solver.n_iter
    if tol is None:
        tol = cfg.solver.tol
    masks, amp = ds.masks_rad, ds.mask_amplitude
    system, sensor = physics_from_file(data)  # the physics comes from the file alone
    noise = getattr(system, "noise_model", None)  # a file simulated with a noise model on the intensity
    if sensor is not None and sensor.binning > 1:
        from .config import ConfigError
        raise ConfigError(
            f"{data}: the sensor binned {sensor.binning}×{sensor.binning} detector samples per pixel; a "
            f"sum of |field|² over a pixel is not |A x|² of any linear A, so the classical solvers "
            f"cannot model it — simulate with sensor.pitch_m unset (one sample per pixel) to reconstruct")
    support = None
    learned = None
    if model is not None:
        noise_name = "sensor" if sensor is not None else (noise.name if noise is not None else "none")
        learned = _learned_model(model, operator=system, object_kind=stored.data.encoding, noise=noise_name)
        solver = f"learned ({Path(model).name})"
    elif solver in OBJECT_DOMAIN_SOLVERS and system.out_shape != system.in_shape:
        # object-domain projections need the padding in x: solve on the padded grid with the
        # object window as the support (Fienup), then crop
        system, support = _padded_operator(ds.params, masks, amp, system)
    count = len(ds) if n is None else min(n, len(ds))
    geometry = stored_geometry(ds.params, ds.object_shape)
    from optics.sampling import WARN_BELOW, GeometryWarning
    if geometry.captured_fraction < WARN_BELOW:  # say it before a long solve, not only after
        import warnings
        warnings.warn(f"{data}: {geometry.summary()}; expect failed reconstructions (simulate with a smaller "
                      f"optics.z_m, a larger data.size or optics.oversampling)", GeometryWarning, stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)
    xs, xhats, residuals = [], [], []
    t0 = time.perf_counter()
    from tqdm.auto import tqdm
    kw = {}
    if solver in OBJECT_DOMAIN_SOLVERS:
        kw["support"] = support
    if stored.data.encoding == "amplitude" and learned is None:  # objects known to be real and non-negative
        kw.update(nonnegative=True, real=True)
    for start in tqdm(range(0, count, batch_size), desc=f"reconstruct ({solver}, batches of {batch_size})",
                      disable=not progress, unit="batch"):
        items = [ds[i] for i in range(start, min(count, start + batch_size))]
        x = torch.stack([o for o, _ in items])
        y = _measurements_to_intensity(sensor, torch.stack([m for _, m in items]))
        extra = dict(kw)
        if noise is not None and (solver in NOISE_AWARE_SOLVERS or learned is not None):  # the known level
            extra["amplitude_noise_std"] = math.sqrt(float(noise.amplitude_mse(y).mean()))
        x_hat, res = _solve_batch(system, y, solver, n_iter=n_iter, tol=tol, seed=cfg.seed, progress=progress,
                                  support=support, shape=tuple(x.shape[-2:]), kw=extra, model=learned)
        xs.append(x)
        xhats.append(x_hat)
        residuals.extend(float(r) for r in res.reshape(-1))
    elapsed = time.perf_counter() - t0
    x = torch.cat(xs)
    x_hat = torch.cat(xhats)
    # with a photon budget the measurement scale is arbitrary: align a complex scale, not only the phase
    align_scale = stored.sensor.enabled and stored.sensor.mean_photons is not None
    # PSNR of the phase over the encoded phase range (amplitude objects: the full 2π)
    lo, hi = stored.data.phase_range_rad
    phase_range = 2 * math.pi if stored.data.encoding == "amplitude" else float(hi - lo)
    metrics = evaluate(x_hat, x, amplitude_range=1.0, phase_range_rad=phase_range, align_scale=align_scale)
    failed = [i for i, e in enumerate(metrics["per_sample"]["relative_error"]) if not e <= FAILURE_RELATIVE_ERROR]
    report = {"data": str(data), "solver": solver, "n_samples": count, "n_iter": n_iter, "tol": tol,
              "seconds": elapsed, "seconds_per_sample": elapsed / count, "align_scale": align_scale,
              "final_residual": residuals, "metrics": metrics,
              "failure_relative_error": FAILURE_RELATIVE_ERROR, "failed": failed, "n_failed": len(failed),
              "geometry": geometry.to_dict()}
    write_json(out / "metrics.json", report)
    save_npz(out / "reconstructions.npz", x_hat=x_hat.numpy(), x=x.numpy())
    write_text(out / "config.yaml", dump(cfg))
    from .figures import reconstruction_figure
    save_figure(reconstruction_figure(x, x_hat, metrics, title=f"{solver} on {Path(data).name}"),
                out / "reconstructions.png", dpi=110)
    return report


def _solve_batch(system, y, solver: str, *, n_iter, tol, seed, progress, support, shape, kw, model=None):
    """One batch through a solver (an inner progress bar over its iterations) or, with ``model``,
    a learned reconstructor ``model(y, system)`` (given the known amplitude noise std where the
    noise model is known); returns ``(x̂, final residual per sample)``. The
    estimate is cropped back to the object window when a solver ran on the padded grid (``support``)."""
    if model is not None:
        with torch.no_grad():
            # a model built with noise_input takes the known noise level (and refuses without it)
            x_hat = model(y, system, check=True, noise_std=kw.get("amplitude_noise_std")).x.detach().to(torch.complex64)
            d = system.A(x_hat).abs() - y.clamp(min=0).sqrt()
            res = torch.sqrt((d * d).sum(dim=(-3, -2, -1)) / y.clamp(min=0).sum(dim=(-3, -2, -1)))
        return x_hat, res
    from learning.solvers import solve

    if solver in NOISE_AWARE_SOLVERS:
        tol = None  # their denoiser schedule runs over all n_iter iterations (no stagnation stop)
    r = solve(system, y, solver=solver, n_iter=n_iter, tol=tol, generator=seed, history=False,
              progress=progress, **kw)
    x_hat = r.x.detach().to(torch.complex64)
    if support is not None:
        x_hat = crop_centered(x_hat, shape)
    return x_hat, r.residual


def _learned_model(path, *, operator, object_kind: str, noise: Optional[str]):
    """The deep-unfolding model of ``path`` after :func:`learning.unfolding.check_protocol`."""
    from learning.unfolding import check_protocol, load_model

    model, meta = load_model(path)
    check_protocol(meta, operator=operator, object_kind=object_kind, noise=noise)
    return model


#: solvers whose iterate lives on the object grid (projections onto object constraints): on
#: oversampled data they run on the padded grid with the object window as the support
OBJECT_DOMAIN_SOLVERS = ("er", "gs", "hio", "tv", "pnp")
#: what ``--object`` tells the solvers about objects from elsewhere
OBJECT_KINDS = ("complex", "real", "nonnegative")
#: solvers that take a noise level (``amplitude_noise_std``) for their regulariser or stopping rule
NOISE_AWARE_SOLVERS = ("tv", "pnp")


def _check_out(out: Path, overwrite: bool) -> None:
    existing = [f for f in RECONSTRUCT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds a reconstruction ({', '.join(existing)}); pass --overwrite "
                              f"to replace it, or choose another --out")


def reconstruct_measured(measurements, masks, out: Path, *, geometry, truth=None, object_kind: str = "complex",
                         solver: Optional[str] = None, n_iter: Optional[int] = None, tol: Optional[float] = None,
                         n: Optional[int] = None, batch_size: int = 16, progress: bool = True,
                         config: Optional[Path] = None, overrides=None, overwrite: bool = False,
                         model: Optional[Path] = None) -> dict:
    """Reconstruct measurements that did not come from ``simulate`` (:mod:`learning.measured`).

    ``measurements``, ``masks``, ``truth``: ``PATH[:KEY]`` of ``.npy``/``.npz``/HDF5/TIFF arrays;
    ``geometry``: a :class:`learning.measured.Geometry` (unit-free FFT or physical, detector order,
    oversampling, intensity or amplitude). ``object_kind`` tells the solvers what the objects are
    (``real``/``nonnegative`` add those projections). From the configuration only ``solver.*``,
    ``batch_size``, ``seed`` and ``noise.*`` apply: a known noise model (``--set noise.model=prdeep
    --set noise.alpha=27``) gives the noise-aware solvers (:data:`NOISE_AWARE_SOLVERS`) their
    level, which they otherwise estimate. Writes what :func:`reconstruct` writes; metrics (and
    the failure test) only with a ground truth, the measurement residual always. The estimate's
    scale is compared as measured for the unit-free FFT and with a fitted complex scale for
    physical geometries (their intensity units are arbitrary)."""
    from learning.measured import load_measured
    from learning.metrics import evaluate

    from .config import ConfigError, noise_model_from_config

    out = Path(out)
    _check_out(out, overwrite)
    if object_kind not in OBJECT_KINDS:
        raise ConfigError(f"--object {object_kind!r}: choose one of {OBJECT_KINDS}")
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ConfigError(f"--n = {n!r}: give N >= 1, or leave --n out for every measurement set")
    # measurements from elsewhere have no simulated camera: the noise, if known, is a model on |Ax|²
    cfg = load(config, ["sensor.enabled=false", *(overrides or [])])
    solver = solver or cfg.solver.name
    n_iter = cfg.solver.n_iter if n_iter is None else n_iter
    tol = cfg.solver.tol if tol is None else tol
    data = load_measured(measurements, masks, geometry=geometry, truth=truth)
    count = data.y.shape[0] if n is None else min(int(n), data.y.shape[0])
    system, support, learned = data.operator, None, None
    noise = noise_model_from_config(cfg)
    if model is not None:  # a learned model, refused for measurements it was not trained for
        learned = _learned_model(model, operator=system, object_kind=object_kind,
                                 noise=None if noise is None else noise.name)
        solver = f"learned ({Path(model).name})"
    elif solver in OBJECT_DOMAIN_SOLVERS and system.out_shape != system.in_shape:
        # the object-domain projections need the padding in x (as for a dataset file)
        from learning.measured import build_operator
        system = build_operator(pad_centered(data.masks, system.out_shape), dataclasses.replace(geometry, oversampling=1.0))
        support = pad_centered(torch.ones(data.operator.in_shape, dtype=torch.bool), system.in_shape)
    kw = {"support": support} if solver in OBJECT_DOMAIN_SOLVERS else {}
    if object_kind != "complex":
        kw.update(real=True, nonnegative=object_kind == "nonnegative")
    out.mkdir(parents=True, exist_ok=True)
    xhats, residuals = [], []
    t0 = time.perf_counter()
    from tqdm.auto import tqdm
    for start in tqdm(range(0, count, batch_size), desc=f"reconstruct ({solver}, batches of {batch_size})",
                      disable=not progress, unit="batch"):
        y = data.y[start:min(count, start + batch_size)]
        extra = dict(kw)
        if noise is not None and (solver in NOISE_AWARE_SOLVERS or learned is not None):
            extra["amplitude_noise_std"] = math.sqrt(float(noise.amplitude_mse(y).mean()))
        x_hat, res = _solve_batch(system, y, solver, n_iter=n_iter, tol=tol, seed=cfg.seed, progress=progress,
                                  support=support, shape=data.operator.in_shape, kw=extra, model=learned)
        xhats.append(x_hat)
        residuals.extend(float(r) for r in res.reshape(-1))
    elapsed = time.perf_counter() - t0
    x_hat = torch.cat(xhats)
    report = {"measurements": data.sources, "geometry": dataclasses.asdict(geometry), "object": object_kind,
              "solver": solver, "n_samples": count, "n_iter": n_iter, "tol": tol, "seconds": elapsed,
              "seconds_per_sample": elapsed / count, "final_residual": residuals,
              "noise": None if noise is None else {"model": noise.name, **noise.params()}}
    arrays = {"x_hat": x_hat.numpy()}
    from .figures import estimate_figure, reconstruction_figure
    title = f"{solver} on {Path(str(data.sources['measurements'])).name}"
    if data.truth is not None:
        x = data.truth[:count]
        align_scale = geometry.method != "fft"
        metrics = evaluate(x_hat, x, amplitude_range=1.0, phase_range_rad=2 * math.pi, align_scale=align_scale)
        failed = [i for i, e in enumerate(metrics["per_sample"]["relative_error"]) if not e <= FAILURE_RELATIVE_ERROR]
        report.update(align_scale=align_scale, metrics=metrics, failure_relative_error=FAILURE_RELATIVE_ERROR,
                      failed=failed, n_failed=len(failed))
        arrays["x"] = x.numpy()
        fig = reconstruction_figure(x, x_hat, metrics, title=title)
    else:
        fig = estimate_figure(x_hat, residuals, title=title + " (no ground truth)")
    write_json(out / "metrics.json", report)
    save_npz(out / "reconstructions.npz", **arrays)
    write_text(out / "config.yaml", dump(cfg))
    save_figure(fig, out / "reconstructions.png", dpi=110)
    return report


#: configuration sections that only steer the reconstruction (everything else is physics)
RECONSTRUCT_KEYS = ("solver", "batch_size", "seed")


def _refuse_physics_changes(stored: Config, cfg: Config, data) -> None:
    from .config import ConfigError

    from learning.h5io.attrs import flatten

    a, b = flatten(dataclasses.asdict(stored)), flatten(dataclasses.asdict(cfg))
    changed = [k for k in sorted(set(a) | set(b))
               if k.split(".")[0] not in RECONSTRUCT_KEYS and a.get(k) != b.get(k)]
    if changed:
        shown = ", ".join(f"{k} ({a.get(k)!r} → {b.get(k)!r})" for k in changed[:6])
        raise ConfigError(
            f"{data}: the configuration changes physics key(s) {shown}{' …' if len(changed) > 6 else ''}; "
            f"they would not apply — the measurements in the file were simulated with the stored values, "
            f"which reconstruct always uses. Change only {', '.join(k + ('.*' if k == 'solver' else '') for k in RECONSTRUCT_KEYS)} "
            f"here, or simulate a new dataset with the physics you want")


def _padded_operator(params, masks, amp, system):
    """The same CDPs as an operator on the padded grid (no hidden padding) plus the support."""
    shape = system.out_shape
    m = pad_centered(masks, shape)
    a = None if amp is None else pad_centered(amp, shape)
    p = dict(params)
    p["optics"] = dict(params["optics"], oversampling=1.0)
    from learning.h5io.physics import operator_from_params
    padded = operator_from_params(p, m, a)
    support = pad_centered(torch.ones(system.in_shape, dtype=torch.bool), shape)
    return padded, support


DEMO_SETTINGS = ["data.split=test", "data.n=8", "data.encoding=complex", "masks.n_masks=4",
                 "sensor.mean_photons=10000", "solver.n_iter=400", "solver.name=wf"]


def demo(out: Path, *, progress: bool = True, config: Optional[Path] = None, overrides=None) -> dict:
    """The embedded-default pipeline: a showcase CDP figure, a simulated dataset and a classical
    baseline, the learning pipeline (teacher, student end to end, distilled student, evaluation),
    the export of the student's design with round-trip verification, and a calibration against
    the committed sample capture. ``config``/``overrides`` apply on top of the demo's settings
    (:data:`DEMO_SETTINGS`) for steps 1–3."""
    from .figures import cdp_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load(config, overrides, base=load(None, DEMO_SETTINGS))
    write_text(out / "config.yaml", dump(cfg))
    # 1. showcase: one object through the full CDP system (SLM + sensor), figure + measurements
    show_cfg = load(None, ["data.size=64", "slm.enabled=true", "slm.pixel_pitch_m=32e-6", "slm.bit_depth=4",
                           "slm.fill_factor=0.5625", "slm.crosstalk_sigma_m=2e-6", "sensor.mean_photons=2000",
                           "sensor.read_noise_e=2.0", "sensor.bit_depth=12"])
    system = system_from_config(show_cfg)
    obj = _showcase_object(64)
    with torch.no_grad():
        y = system(obj[None], generator=torch.Generator().manual_seed(show_cfg.seed))[0]
        mod = system.modulation()
    save_npz(out / "showcase_measurements.npz", object=obj.numpy(), modulation=mod.numpy(),
             measurements_dn=y.numpy(), detector_pitch_m=np.asarray(system.out_pitch_m, dtype=np.float64))
    write_text(out / "showcase_config.yaml", dump(show_cfg))
    save_figure(cdp_figure(obj, mod, y, system), out / "showcase_cdp.png", dpi=110)
    # 2. a small CDP dataset with `phaseforge simulate`, 3. a Wirtinger-flow baseline
    data = simulate(cfg, out / "demo_cdp.h5", overwrite=True, progress=progress)
    rec_dir = out / f"reconstruct_{cfg.solver.name}"
    report = reconstruct(data, rec_dir, solver=cfg.solver.name, progress=progress, overwrite=True)
    # 4. learning: teacher → student E2E → distilled student → evaluate (returns the student's design.h5)
    from .learn import learning_demo
    design = learning_demo(out, progress=progress)
    # 5. export the distilled student's mask to an SLM bitmap and a DOE (TIFF + GDSII), verified
    from .cli_export import export_demo
    export = export_demo(out / "export", design)
    # 6. calibrate against the committed sample capture
    from .calibration_jobs import calibration_demo
    calibration = calibration_demo(out / "calibration", progress=progress)
    return {"showcase": str(out / "showcase_cdp.png"), "dataset": str(data), "baseline": report,
            "baseline_dir": str(rec_dir), "design": str(design), "export": export, "calibration": calibration}


def _showcase_object(size: int) -> torch.Tensor:
    """Complex object from two embedded images: amplitude 'camera', phase 'astronaut' in [0, π]."""
    from learning.encoding import encode
    from learning.images import fit_to_size, to_unit_gray
    import skimage.data

    amp = fit_to_size(to_unit_gray(skimage.data.camera()), size)
    ph = fit_to_size(to_unit_gray(skimage.data.astronaut()), size)
    return encode(0.2 + 0.8 * amp, ph, encoding="complex", phase_range_rad=(0.0, math.pi))
