"""Build optics and data objects from a validated :class:`~phaseforge.config.Config`.

The system owns the geometry: the SLM is built with its upsampling (pixel pitch / simulation
pitch) and no simulation pitch of its own, the sensor with its camera pitch and no grid pitch;
:class:`optics.cdp.CDPSystem` binds both and raises when they disagree, which is turned into a
:class:`~phaseforge.config.ConfigError` naming the keys to change.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from optics.cdp import UNIT_FREE_METHOD, CDPSystem
from optics.errors import GeometryError, OptionError, PitchRatioError
from optics.masks import ComplexMask, PhaseMask, binary_phase, random_phase
from optics.propagation import METHOD_OPTIONS, output_pitch, resolve_method
from optics.sensor import Sensor
from optics.slm import SLM, PhaseLUT, integer_pitch_ratio

from .config import Config, ConfigError, noise_model_from_config


def slm_from_config(cfg: Config) -> Optional[SLM]:
    s = cfg.slm
    if not s.enabled:
        return None
    try:
        upsample = integer_pitch_ratio(
            "slm.pixel_pitch_m", s.pixel_pitch_m, "optics.pitch_m", cfg.optics.pitch_m,
            fix="the simulation pitch optics.pitch_m must divide the SLM pixel pitch: set optics.pitch_m = "
                "slm.pixel_pitch_m / n for an integer n")
    except PitchRatioError as exc:
        raise ConfigError(str(exc)) from exc
    if s.lut is not None and s.lut.gray:
        lut = PhaseLUT.tabulated(s.lut.gray, s.lut.phase_rad, bit_depth=s.bit_depth)
    else:
        lut = PhaseLUT.linear(s.bit_depth, s.max_phase_rad)
    slm = SLM(pixel_pitch_m=s.pixel_pitch_m, upsample=upsample, fill_factor=s.fill_factor,
              dead_phase_rad=s.dead_phase_rad, crosstalk_sigma_m=s.crosstalk_sigma_m, lut=lut,
              bit_depth=s.bit_depth, quantization=s.quantization)
    return slm.eval()


def sensor_from_config(cfg: Config) -> Optional[Sensor]:
    """The camera, not yet bound to a detector pitch (the system binds it)."""
    s = cfg.sensor
    if not s.enabled:
        return None
    return Sensor(pitch_m=s.pitch_m, quantum_efficiency=s.quantum_efficiency, mean_photons=s.mean_photons,
                  read_noise_e=s.read_noise_e, dark_current_e_per_s=s.dark_current_e_per_s,
                  exposure_s=s.exposure_s, gain_e_per_dn=s.gain_e_per_dn, offset_dn=s.offset_dn,
                  bit_depth=s.bit_depth, full_well_e=s.full_well_e, budget_dims=3, noise=s.noise)


def masks_from_config(cfg: Config, slm: Optional[SLM]):
    """Phase masks on the SLM-pixel grid (with an SLM) or on the simulation grid."""
    m = cfg.masks
    size = cfg.data.size
    if slm is not None:
        if size % slm.upsample:
            raise ConfigError(f"data.size = {size} is not a multiple of the SLM upsampling "
                              f"{slm.upsample} (slm.pixel_pitch_m / optics.pitch_m); change data.size")
        size //= slm.upsample
    shape = (m.n_masks, size, size)
    if m.kind == "octanary":
        return ComplexMask.octanary(m.n_masks, (size, size), seed=m.seed)
    if m.kind == "random_phase":
        theta = random_phase(shape, seed=m.seed, levels=m.levels)
    elif m.kind == "binary":
        theta = binary_phase(shape, seed=m.seed)
    else:  # file
        p = Path(m.path)
        if not p.is_file():
            raise ConfigError(f"masks.path = {m.path!r} does not exist")
        try:
            theta = torch.as_tensor(np.asarray(np.load(p, allow_pickle=False), dtype=np.float32))
        except (OSError, ValueError, EOFError, TypeError) as exc:
            raise ConfigError(f"masks.path = {m.path!r} is not a .npy array of mask phases in rad "
                              f"({type(exc).__name__}: {exc}); write it with numpy.save(path, theta)") from exc
        if theta.ndim == 2:
            theta = theta[None]
        if tuple(theta.shape[-2:]) != (size, size):
            raise ConfigError(f"masks.path holds masks of shape {tuple(theta.shape)}; expected (L, {size}, {size}) "
                              f"for data.size = {cfg.data.size}" + (" and the SLM upsampling" if slm else ""))
    return PhaseMask(theta, learnable=False)


def resolved_method(cfg: Config) -> str:
    """``optics.method`` with ``"auto"`` resolved (by :func:`optics.propagation.resolve_method`,
    the one place) on the detector window, so the configured options of the chosen method apply."""
    o = cfg.optics
    if o.method == UNIT_FREE_METHOD:
        return o.method
    n_out = int(round(o.oversampling * cfg.data.size))
    return resolve_method((n_out, n_out), o.method, pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m)


def system_from_config(cfg: Config) -> CDPSystem:
    slm = slm_from_config(cfg)
    masks = masks_from_config(cfg, slm)
    o = cfg.optics
    method = resolved_method(cfg)
    prop = {k: getattr(o.propagation, k) for k in METHOD_OPTIONS.get(method, ())}
    units = {} if method == UNIT_FREE_METHOD else dict(pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m)
    try:
        system = CDPSystem(masks, method=method, oversampling=o.oversampling, detector_order=o.detector_order, slm=slm,
                           sensor=sensor_from_config(cfg), noise=noise_model_from_config(cfg), **units, **prop)
    except OptionError as exc:
        raise ConfigError(f"optics.method / optics.detector_order: {exc}") from exc
    except (PitchRatioError, GeometryError) as exc:
        if cfg.sensor.enabled and cfg.sensor.pitch_m is not None and "grid_pitch_m" in str(exc):
            n_out = int(round(o.oversampling * cfg.data.size))
            grid = output_pitch((n_out, n_out), pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m,
                                method=method)[1]
            raise ConfigError(
                f"sensor.pitch_m = {cfg.sensor.pitch_m:.6g} m is not an integer multiple of the detector-plane "
                f"sample pitch {grid:.6g} m ({method}); choose sensor.pitch_m = n × {grid:.6g} m, or change "
                f"optics.z_m / optics.oversampling / optics.pitch_m so that the detector pitch divides it") from exc
        raise ConfigError(str(exc)) from exc
    return system.eval()


def objects_from_config(cfg: Config):
    from learning.encoding import ObjectSet
    from learning.images import open_image_source

    d = cfg.data
    images = open_image_source(d.source, d.size, split=d.split, seed=cfg.seed, resize=d.resize, n=d.n,
                               key=d.npz_key, dataset=d.h5_dataset)
    return ObjectSet(images, encoding=d.encoding, phase_range_rad=tuple(d.phase_range_rad), seed=cfg.seed)


def effective_masks(system: CDPSystem):
    """(phases in rad, amplitude or None) of the modulation on the simulation grid."""
    with torch.no_grad():
        mod = system.modulation().to(torch.complex64)
    amp = mod.abs()
    phase = torch.remainder(torch.angle(mod), 2 * math.pi)
    unit = bool(torch.allclose(amp, torch.ones_like(amp), atol=1e-6))
    return phase, (None if unit else amp)
