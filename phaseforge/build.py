"""Build optics and data objects from a validated :class:`~phaseforge.config.Config`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from optics.cdp import CDPSystem
from optics.propagation import choose_method
from optics.masks import ComplexMask, PhaseMask, binary_phase, octanary, random_phase
from optics.sensor import Sensor
from optics.slm import SLM, PhaseLUT, PitchRatioError

from .config import Config, ConfigError


def slm_from_config(cfg: Config) -> Optional[SLM]:
    s = cfg.slm
    if not s.enabled:
        return None
    if s.lut is not None and s.lut.gray:
        lut = PhaseLUT.tabulated(s.lut.gray, s.lut.phase_rad, bit_depth=s.bit_depth)
    else:
        lut = PhaseLUT.linear(s.bit_depth, s.max_phase_rad)
    slm = SLM(pixel_pitch_m=s.pixel_pitch_m, sim_pitch_m=cfg.optics.pitch_m, fill_factor=s.fill_factor,
              dead_phase_rad=s.dead_phase_rad, crosstalk_sigma_m=s.crosstalk_sigma_m, lut=lut,
              bit_depth=s.bit_depth, quantization=s.quantization)
    return slm.eval()


def sensor_from_config(cfg: Config, detector_pitch_m=None) -> Optional[Sensor]:
    """The camera. ``detector_pitch_m`` is the sample pitch of the detector plane (for the
    Fourier methods ``λz/(M·dx)``, not ``optics.pitch_m``); it is needed only to work out the
    pixel binning when ``sensor.pitch_m`` is set."""
    s = cfg.sensor
    if not s.enabled:
        return None
    grid = None
    if s.pitch_m is not None:
        if detector_pitch_m is None:
            raise ConfigError("sensor.pitch_m is set but the detector-plane sample pitch is unknown")
        grid = detector_pitch_m if not isinstance(detector_pitch_m, tuple) else detector_pitch_m[1]
    try:
        sensor = Sensor(pitch_m=s.pitch_m, grid_pitch_m=grid,
                        quantum_efficiency=s.quantum_efficiency, mean_photons=s.mean_photons,
                        read_noise_e=s.read_noise_e, dark_current_e_per_s=s.dark_current_e_per_s,
                        exposure_s=s.exposure_s, gain_e_per_dn=s.gain_e_per_dn, offset_dn=s.offset_dn,
                        bit_depth=s.bit_depth, full_well_e=s.full_well_e, budget_dims=3)
    except PitchRatioError as exc:
        raise ConfigError(
            f"sensor.pitch_m = {s.pitch_m:.6g} m is not an integer multiple of the detector-plane sample "
            f"pitch {grid:.6g} m ({cfg.optics.method}); choose sensor.pitch_m = n × {grid:.6g} m, or change "
            f"optics.z_m / optics.oversampling / optics.pitch_m so that the detector pitch divides it "
            f"({exc})") from exc
    return sensor.eval()


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
        theta = torch.as_tensor(np.load(p)).to(torch.float32)
        if theta.ndim == 2:
            theta = theta[None]
        if tuple(theta.shape[-2:]) != (size, size):
            raise ConfigError(f"masks.path holds masks of shape {tuple(theta.shape)}; expected (L, {size}, {size}) "
                              f"for data.size = {cfg.data.size}" + (" and the SLM upsampling" if slm else ""))
    return PhaseMask(theta, learnable=False)


# the keyword options each propagation method takes (optics.propagation)
_METHOD_OPTIONS = {
    "fraunhofer": (),
    "fresnel-1fft": ("allow_aliasing",),
    "fresnel-tf": ("pad", "allow_aliasing"),
    "fresnel-ir": ("pad", "allow_aliasing"),
    "asm": ("pad", "band_limit", "evanescent", "allow_aliasing"),
}


def system_from_config(cfg: Config) -> CDPSystem:
    slm = slm_from_config(cfg)
    masks = masks_from_config(cfg, slm)
    o = cfg.optics
    method = o.method
    if method == "auto":  # resolve here so the configured options of the chosen method apply
        n_out = int(round(o.oversampling * cfg.data.size))
        method = choose_method((n_out, n_out), pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m)
    prop = {k: getattr(o.propagation, k) for k in _METHOD_OPTIONS[method]}
    system = CDPSystem(masks, pitch_m=o.pitch_m, wavelength_m=o.wavelength_m, z_m=o.z_m, method=method,
                       oversampling=o.oversampling, slm=slm, **prop)
    system.sensor = sensor_from_config(cfg, system.out_pitch_m)
    return system.eval()


def system_from_file_params(params: dict, masks_rad: torch.Tensor, mask_amplitude=None) -> CDPSystem:
    """The noiseless linear operator of a dataset file (its stored effective modulation)."""
    o = params["optics"]
    mod = torch.polar(torch.ones_like(masks_rad) if mask_amplitude is None else mask_amplitude, masks_rad)
    opts = dict(params.get("propagation", {}) or {})
    return CDPSystem(mod.to(torch.complex64), pitch_m=float(o["pitch_m"]), wavelength_m=float(o["wavelength_m"]),
                     z_m=float(o["z_m"]), method=str(o["method"]), oversampling=float(o["oversampling"]),
                     **opts).eval()


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
