"""YAML ↔ dataclass configuration, validated on load.

Every key is checked: an unknown key, a missing required key or a value of the wrong type
raises :class:`ConfigError` naming the key path (``optics.sensor.read_noise_e``) and what was
expected. ``--set a.b.c=value`` overrides parse their value as YAML. Every command writes the
fully resolved configuration next to its outputs (:func:`dump`).

The default configuration (:func:`default_config`) is the embedded demo: faces and sample-image
patches from scikit-image, phase-only objects in [0, π], 4 random phase masks, Fraunhofer
propagation with 2× oversampling and a shot-noise-limited sensor. The standard CDP benchmark
protocol instead: ``optics.method=fft``, ``optics.oversampling=1``, ``optics.detector_order=fft``,
``data.encoding=amplitude``, ``sensor.enabled=false``, ``noise.model=prdeep``, ``noise.alpha=9``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import yaml

from learning.encoding import ENCODINGS
from learning.images import RESIZE_MODES, SPLITS
from learning.solvers import SOLVER_NAMES
from optics.cdp import CDP_METHODS, DETECTOR_ORDERS, UNIT_FREE_METHOD
from optics.masks import MASK_KINDS
from optics.noise import NOISE_MODEL_NAMES
from optics.propagation import EVANESCENT
from optics.sensor import NOISE_MODELS
from optics.slm import QUANTIZATION_MODES


class ConfigError(ValueError):
    """A configuration that does not validate; the message names the key path."""


@dataclass
class PropagationConfig:
    band_limit: bool = True
    evanescent: str = "drop"
    pad: bool = True
    allow_aliasing: bool = False


@dataclass
class OpticsConfig:
    wavelength_m: float = 633e-9  # (wavelength_m, pitch_m, z_m: unused by the unit-free method fft)
    pitch_m: float = 8e-6
    z_m: float = 0.1
    method: str = "fraunhofer"  # fft (unit-free: fft2(pad(M⊙x), norm="ortho")) | fraunhofer | asm | … | auto
    oversampling: float = 2.0
    detector_order: str = "centered"  # centered (DC at M//2) | fft (DC at index 0, numpy/prDeep order)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)


#: ``noise.model`` values: the camera's own noise (``sensor.noise``) or a model on the intensity
NOISE_CHOICES = ("sensor",) + tuple(NOISE_MODEL_NAMES)


@dataclass
class NoiseConfig:
    """The measurement noise: ``sensor`` (the camera model's own, ``sensor.noise``) or a model of
    :mod:`optics.noise` on the intensity ``|A x|²`` (then ``sensor.enabled`` must be false)."""
    model: str = "sensor"  # sensor | none | prdeep | poisson | gaussian
    alpha: float = 9.0  # prdeep: std alpha/255 relative to |Ax|; poisson without photons_per_unit: (255/alpha)² photons/unit
    photons_per_unit: Optional[float] = None  # poisson: photons per unit intensity
    sigma: Optional[float] = None  # gaussian: std of the additive noise, intensity units


@dataclass
class MasksConfig:
    kind: str = "random_phase"  # random_phase | binary | octanary | file
    n_masks: int = 4
    levels: Optional[int] = None  # random_phase: number of equally spaced phase levels
    seed: int = 0
    path: Optional[str] = None  # kind=file: .npy of phases (L, h, w) in rad


@dataclass
class LUTConfig:
    gray: List[float] = field(default_factory=list)
    phase_rad: List[float] = field(default_factory=list)


@dataclass
class SLMConfig:
    enabled: bool = False
    pixel_pitch_m: float = 8e-6
    fill_factor: float = 1.0
    dead_phase_rad: float = 0.0
    crosstalk_sigma_m: float = 0.0
    bit_depth: int = 8
    max_phase_rad: float = 2 * math.pi
    lut: Optional[LUTConfig] = None
    quantization: str = "exact"


@dataclass
class SensorConfig:
    enabled: bool = True
    pitch_m: Optional[float] = None
    quantum_efficiency: float = 1.0
    mean_photons: Optional[float] = 1000.0
    read_noise_e: float = 0.0
    dark_current_e_per_s: float = 0.0
    exposure_s: float = 1e-3
    gain_e_per_dn: float = 1.0
    offset_dn: float = 0.0
    bit_depth: Optional[int] = None
    full_well_e: Optional[float] = None
    noise: str = "poisson"  # poisson (exact) | gaussian (differentiable approximation) | none


@dataclass
class DataConfig:
    source: str = "embedded"  # embedded[:natural|:faces] | a folder | .npy/.npz | .h5 | MNIST IDX file
    size: int = 32
    split: str = "train"
    n: Optional[int] = 64
    encoding: str = "phase"  # amplitude | phase | complex
    phase_range_rad: List[float] = field(default_factory=lambda: [0.0, math.pi])
    resize: str = "resize"  # resize | crop | error
    h5_dataset: str = "images"
    npz_key: Optional[str] = None
    compression: str = "gzip"  # gzip (portable) | lzf | zstd (needs hdf5plugin) | none


@dataclass
class SolverConfig:
    name: str = "wf"  # learning.solvers.SOLVER_NAMES: wf | er | gs | hio | af | tv | pnp
    n_iter: int = 300
    tol: float = 1e-7


@dataclass
class ModelConfig:
    """A learnable phase-retrieval system (learning.systems): role, masks, reconstructor.

    ``kind``: ``unfolded`` (default; learning.unfolding: ER warm start of ``n_warm`` iterations,
    then ``n_stages`` × (learned-step physics step + residual U-Net denoiser D(x, σ) of ``widths``,
    one per stage or ``shared``); ``norm`` does not apply, the denoisers have no normalisation) or
    ``unet`` (learning.systems.Reconstructor: ``n_unrolled`` unrolled ``solver`` steps from a flat
    start + one U-Net of ``widths`` with ``norm``).
    """
    role: str = "teacher"  # teacher | student: which random stream draws the initial masks
    learn_masks: bool = True  # false: the initial random masks stay fixed (baseline)
    widths: List[int] = field(default_factory=lambda: [16, 32, 64])  # U-Net channels per level; [] = no network
    norm: str = "batch"  # batch | group | none (kind unet only)
    solver: str = "er"  # unrolled first estimate: er | wf (kind unet only)
    n_unrolled: int = 5  # kind unet only
    n_power_iter: int = 0  # kind unet only
    kind: str = "unfolded"  # unfolded | unet
    n_stages: int = 5  # kind unfolded: learned stages
    n_warm: int = 50  # kind unfolded: ER warm-start iterations (no gradient)
    shared: bool = True  # kind unfolded: one denoiser for every stage


@dataclass
class TrainConfig:
    """Optimisation (learning.training.TrainSettings) and the training / validation objects."""
    epochs: int = 10
    batch_size: int = 16
    n_train: int = 256  # objects from the image source's train split
    n_val: int = 32  # objects from its val split
    lr_mask: float = 0.05
    lr_net: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    grad_clip: float = 0.0
    recon_loss: str = "mse"  # mse | l1 (global-phase aligned)
    noise: str = "differentiable"  # differentiable | exact | none
    grad_norm_every: int = 1
    val_seed: int = 12345


@dataclass
class DistillConfig:
    """Knowledge-transfer terms of `phaseforge distill` (learning.losses.DistillationLoss).

    Defaults: the spectrum mask loss alone (``kd_mask``), measured with the U-Net reconstructor over 25
    regimes (issue 8, README "Does distillation help?"). Asked again with the deep-unfolding
    reconstructor (issue 17 §5, ``benchmarks/distillation.py --reconstructor unfolded``, 64 steps per
    run, seeds 0-2): vs E2E, ``kd_mask`` −0.02 [−0.06, +0.04] dB in ``base`` and +0.03 [−0.07, +0.08]
    in ``cdp-protocol-l1``; the unlabelled transfer (``unlabelled_weight`` 1, 512 objects) +0.02
    [−0.03, +0.08] and +0.14 [+0.03, +0.26], on validation −0.01 and +0.07 (``kd_mask`` +0.03,
    +0.02): not better on every seed in most regimes, so the default stays the mask loss alone."""
    recon_weight: float = 1.0
    mask_loss: str = "spectrum"  # spectrum | gram | none
    mask_weight: float = 1.0
    feature_levels: List[int] = field(default_factory=lambda: [0])  # decoder level k at H/2^k
    feature_kind: str = "mse"  # mse | l1 | cosine
    feature_weight: float = 0.0  # measured default (issue 8); the paper's losses use 0.1
    output_weight: float = 0.0
    balance: bool = False  # scale each term by its mask-gradient norm after the warm-up
    balance_warmup: int = 50
    teacher_noise: str = "exact"  # exact | differentiable | none
    unlabelled_weight: float = 0.0  # > 0: distil the teacher's reconstructions of extra unlabelled objects
    n_unlabelled: int = 0  # size of that pool (training-split objects after the n_train labelled ones)


@dataclass
class Config:
    seed: int = 0
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)
    slm: SLMConfig = field(default_factory=SLMConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    batch_size: int = 16
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> "Config":
        o = self.optics
        _choice("optics.method", o.method, CDP_METHODS)
        _choice("optics.detector_order", o.detector_order, DETECTOR_ORDERS)
        _choice("optics.propagation.evanescent", o.propagation.evanescent, EVANESCENT)
        for key, v in (("optics.wavelength_m", o.wavelength_m), ("optics.pitch_m", o.pitch_m)):
            _positive(key, v)
        if not (1e-9 <= o.wavelength_m <= 1e-3):
            raise ConfigError(f"optics.wavelength_m = {o.wavelength_m!r} is not a wavelength in metres (633 nm is 633e-9)")
        if not math.isfinite(o.z_m) or o.z_m == 0:
            raise ConfigError(f"optics.z_m must be a finite non-zero distance in metres, got {o.z_m!r}")
        if o.oversampling < 1:
            raise ConfigError(f"optics.oversampling must be >= 1, got {o.oversampling!r}")
        _choice("masks.kind", self.masks.kind, MASK_KINDS)
        if self.masks.n_masks < 1:
            raise ConfigError(f"masks.n_masks must be >= 1, got {self.masks.n_masks}")
        if self.masks.kind == "file" and not self.masks.path:
            raise ConfigError("masks.kind = 'file' needs masks.path (a .npy of phases in rad, shape (L, h, w))")
        if self.slm.enabled and self.masks.kind == "octanary":
            raise ConfigError("masks.kind = 'octanary' modulates amplitude, which a phase-only SLM cannot show; "
                              "use random_phase or binary with slm.enabled, or disable the SLM")
        _choice("slm.quantization", self.slm.quantization, QUANTIZATION_MODES)
        _choice("sensor.noise", self.sensor.noise, NOISE_MODELS)
        _validate_noise(self)
        _choice("data.encoding", self.data.encoding, ENCODINGS)
        _choice("data.split", self.data.split, SPLITS)
        _choice("data.resize", self.data.resize, RESIZE_MODES)
        from learning.h5io.compression import COMPRESSIONS
        _choice("data.compression", self.data.compression, COMPRESSIONS)
        if self.data.size < 4:
            raise ConfigError(f"data.size must be >= 4 pixels, got {self.data.size}")
        if len(self.data.phase_range_rad) != 2:
            raise ConfigError(f"data.phase_range_rad must be [low, high] in rad, got {self.data.phase_range_rad!r}")
        _choice("solver.name", self.solver.name, SOLVER_NAMES)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        _validate_learning(self)
        return self


def _validate_noise(cfg: "Config") -> None:
    """``noise.*`` and what the unit-free method excludes (a camera pitch: it needs units; an SLM is allowed,
    its pixel being ``slm.pixel_pitch_m / optics.pitch_m`` samples of the unit-free grid)."""
    n = cfg.noise
    _choice("noise.model", n.model, NOISE_CHOICES)
    if n.model != "sensor":
        if cfg.sensor.enabled:
            raise ConfigError(f"noise.model = {n.model!r} is a noise model on the intensity |A x|², but sensor.enabled is "
                              f"true (a camera with its own noise, sensor.noise); set sensor.enabled=false, or "
                              f"noise.model=sensor to keep the camera")
        noise_model_from_config(cfg)  # parameter checks, with the key path
    if cfg.optics.method == UNIT_FREE_METHOD:
        # an SLM is allowed: its pixel covers slm.pixel_pitch_m / optics.pitch_m samples of the unit-free grid
        # (only the ratio acts; optics.CDPOperator keeps the SLM on its own grid)
        if cfg.sensor.enabled and cfg.sensor.pitch_m is not None:
            raise ConfigError(f"optics.method = 'fft' is unit-free (no detector pitch), but sensor.pitch_m = "
                              f"{cfg.sensor.pitch_m!r} asks to bin detector samples by pitch; set sensor.pitch_m=null")


def noise_model_from_config(cfg: "Config"):
    """The :class:`optics.noise.NoiseModel` of ``noise.*``, or None for ``noise.model = sensor``."""
    from optics.errors import NoiseModelError
    from optics.noise import make_noise_model

    n = cfg.noise
    if n.model == "sensor":
        return None
    try:
        return make_noise_model(n.model, alpha=n.alpha, photons_per_unit=n.photons_per_unit, sigma=n.sigma)
    except NoiseModelError as exc:
        raise ConfigError(f"noise.model = {n.model!r}: {exc} (keys noise.alpha, noise.photons_per_unit, noise.sigma)") from exc


def _validate_learning(cfg: "Config") -> None:
    """The model / train / distill sections; choice lists come from the learning library."""
    from learning.losses import FEATURE_KINDS, MASK_LOSSES, RECON_KINDS
    from learning.networks import NORMS
    from learning.systems import FIRST_ESTIMATES, MODEL_KINDS, NOISE_MODES
    from learning.training import SCHEDULES

    m, t, d = cfg.model, cfg.train, cfg.distill
    _choice("model.role", m.role, ("teacher", "student"))
    _choice("model.norm", m.norm, NORMS)
    _choice("model.solver", m.solver, FIRST_ESTIMATES)
    _choice("model.kind", m.kind, MODEL_KINDS)
    if m.n_stages < 1 or m.n_warm < 0:
        raise ConfigError(f"model.n_stages must be >= 1 and model.n_warm >= 0, got {m.n_stages} and {m.n_warm}")
    for i, w in enumerate(m.widths):
        if w < 1:
            raise ConfigError(f"model.widths[{i}] = {w} must be a positive channel count")
    for key in ("n_unrolled", "n_power_iter"):
        if getattr(m, key) < 0:
            raise ConfigError(f"model.{key} must be >= 0, got {getattr(m, key)}")
    for key in ("epochs", "batch_size", "n_train", "n_val"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    for key in ("lr_mask", "lr_net", "weight_decay", "grad_clip"):
        v = getattr(t, key)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"train.{key} must be a finite number >= 0, got {v!r}")
    _choice("train.schedule", t.schedule, SCHEDULES)
    _choice("train.recon_loss", t.recon_loss, RECON_KINDS)
    _choice("train.noise", t.noise, NOISE_MODES)
    _choice("distill.mask_loss", d.mask_loss, MASK_LOSSES)
    _choice("distill.feature_kind", d.feature_kind, FEATURE_KINDS)
    _choice("distill.teacher_noise", d.teacher_noise, NOISE_MODES)
    for key in ("recon_weight", "mask_weight", "feature_weight", "output_weight"):
        v = getattr(d, key)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"distill.{key} must be a finite weight >= 0, got {v!r}")
    if not (math.isfinite(d.unlabelled_weight) and d.unlabelled_weight >= 0):
        raise ConfigError(f"distill.unlabelled_weight must be a finite weight >= 0, got {d.unlabelled_weight!r}")
    if d.unlabelled_weight > 0 and d.n_unlabelled < 1:
        raise ConfigError(f"distill.unlabelled_weight = {d.unlabelled_weight} needs a pool of unlabelled objects: "
                          f"set distill.n_unlabelled >= 1 (got {d.n_unlabelled})")
    depth = len(m.widths)
    for i, k in enumerate(d.feature_levels):
        if not 0 <= k < max(depth, 1) or depth == 0:
            raise ConfigError(
                f"distill.feature_levels[{i}] = {k}: the student network (model.widths = {m.widths}) has "
                f"decoder levels 0 … {depth - 1}; choose levels it has, or [] for no feature loss")


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not one of {list(allowed)}")


def _positive(key, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be a positive number in SI units, got {value!r}")


# ---- generic dataclass <-> dict ----------------------------------------------------------------
def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise ConfigError(f"{path} must not be null")
        return _convert(args[0], value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping of keys, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 633e-9 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls, data: dict, path: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"unknown key {where!r}; known keys here: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key!r}")
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def default_config() -> Config:
    return Config().validate()


def _set_path(d: dict, dotted: str, value):
    keys = dotted.split(".")
    cur = d
    for i, k in enumerate(keys[:-1]):
        nxt = cur.get(k)
        if nxt is None:
            nxt = {}
            cur[k] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(keys[:i + 1])} is not a mapping")
        cur = nxt
    cur[keys[-1]] = value


def load(path: Optional[Union[str, Path]] = None, overrides: Optional[List[str]] = None,
         base: Optional[Config] = None) -> Config:
    """``base`` (default: the defaults) ← YAML file ← ``key.path=value`` overrides; validated."""
    data = to_dict(base if base is not None else Config())
    if path is not None:
        _merge(data, read_yaml_mapping(path, "the configuration"), "")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        k, v = item.split("=", 1)
        _check_path(k.strip())
        _set_path(data, k.strip(), yaml.safe_load(v))
    return from_dict(Config, data).validate()


def read_yaml_mapping(path, what: str = "the configuration") -> dict:
    """The mapping a YAML file holds (safe loading); a missing file, invalid YAML (one line with
    file:line:column) or another top-level type is a :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {str(p)!r} is not UTF-8 text ({exc}); is it a YAML file?") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(p, exc, what)) from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} file {str(p)!r} must hold a mapping at the top level")
    return loaded


def yaml_error_message(path, exc: Exception, what: str = "the file") -> str:
    """One line ``FILE:LINE:COLUMN: … is not valid YAML (problem, context); fix it there`` for a
    :class:`yaml.YAMLError` (PyYAML's own message spans several lines with a quoted excerpt)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    detail = f"{problem}, {context}" if context else str(problem)
    return f"{where}: {what} is not valid YAML ({detail}); fix the file at that line"


def _check_path(dotted: str):
    cls = Config
    parts = dotted.split(".")
    for i, k in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            break
        hints = typing.get_type_hints(cls)
        if k not in hints:
            raise ConfigError(f"unknown key {'.'.join(parts[:i + 1])!r}; known keys here: {sorted(hints)}")
        tp = hints[k]
        if typing.get_origin(tp) is Union:
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        cls = tp


def _merge(base: dict, new: dict, path: str):
    for k, v in new.items():
        key = f"{path}.{k}" if path else k
        if k not in base:
            raise ConfigError(f"unknown key {key!r}; known keys here: {sorted(base)}")
        if isinstance(base[k], dict) and isinstance(v, dict):
            _merge(base[k], v, key)
        else:
            base[k] = v


def from_yaml_text(text: str) -> Config:
    """A configuration from YAML text (e.g. the ``config_yaml`` stored in a dataset file);
    empty text gives the defaults."""
    data = yaml.safe_load(text) if text else None
    return from_dict(Config, data or {}).validate()


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
