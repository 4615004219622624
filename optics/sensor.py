"""Camera sensor model: pixel integration, photon budget, shot/dark/read noise, saturation, ADC.

Given an intensity ``I`` on the simulation grid (shape ``(..., H, W)``, last two axes one
frame), :class:`Sensor` models the camera in five steps:

1. **pixel integration** (:meth:`Sensor.bin`) — a camera pixel of pitch ``pitch_m`` covers
   ``bin × bin`` simulation samples (``bin = pitch_m/grid_pitch_m``, an integer) and collects
   their *sum* (total power is conserved);
2. **photon budget** (:meth:`Sensor.photons`) — with ``mean_photons`` set, each frame is
   scaled so that its mean count per camera pixel is ``mean_photons`` (a fixed exposure
   budget, the usual CDP noise-level knob; the scale is part of the differentiable model);
   otherwise ``I`` is already in photons per pixel per exposure;
3. **electrons** — ``e = Poisson(QE·p + D·t) + N(0, σ_r²)`` with quantum efficiency ``QE``,
   dark current ``D`` (e⁻/s), exposure ``t`` (s) and read noise ``σ_r`` (e⁻ rms) (EMVA 1288
   linear camera model, release 4.0 (2021), §2); mean ``μ_e = QE·p + D·t``, variance
   ``μ_e + σ_r²``;
4. **saturation** — electrons are clipped above at ``full_well_e`` when set (no lower clip:
   read noise can make ``e`` negative before the offset);
5. **ADC** — ``DN = round(e/K + offset_dn)`` with gain ``K = gain_e_per_dn`` (e⁻/DN),
   clamped to ``[0, 2^bit_depth − 1]`` when ``bit_depth`` is set. The exact path
   (:meth:`Sensor.sample`) always rounds (a camera returns integers); with
   ``bit_depth=None`` there is no clamp, so ``DN`` may exceed any range or go negative.
   Rounding adds variance ``1/12`` DN² (Sheppard's correction) when the signal spread is
   well above one DN.

Noise is chosen explicitly, never by ``.train()``/``.eval()``: ``noise=`` (constructor default,
overridable per call) is one of :data:`NOISE_MODELS` — ``"poisson"`` the exact path
(:meth:`sample`), ``"gaussian"`` the differentiable approximation
(:meth:`sample_differentiable`), ``"none"`` the noiseless :meth:`expected_dn` (with saturation
and clamp, no rounding). The differentiable path replaces the Poisson draw by
its Gaussian approximation with the reparametrisation trick,
``e = μ_e + sqrt(μ_e + σ_r²)·ε``, ``ε ~ N(0, 1)`` (Kingma & Welling, arXiv:1312.6114 (2013)),
rounds with a straight-through estimator (identity gradient), and clamps (zero gradient past
the limits). ``rounding=False`` skips the rounding so ``torch.autograd.gradcheck`` can run with
a fixed ``ε``.

:meth:`Sensor.dn_to_photons` inverts the noiseless affine map,
``p̂ = ((DN − offset)·K − D·t)/QE``: the photon-unit estimate that solvers fit.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from . import _validate
from .errors import GeometryError, IntensityError, OpticsError, ShapeError, UnitsError
from .slm import integer_pitch_ratio

__all__ = ["Sensor", "IntensityError", "NOISE_MODELS", "SENSOR_PARAMETERS"]

#: noise models of :meth:`Sensor.forward` (the one list; config and CLI import it)
NOISE_MODELS = ("poisson", "gaussian", "none")
#: physical parameters stored as tensors (buffers, or parameters when named in ``fit=``)
SENSOR_PARAMETERS = ("quantum_efficiency", "mean_photons", "read_noise_e", "dark_current_e_per_s",
                     "exposure_s", "gain_e_per_dn", "offset_dn", "full_well_e")


def _nonneg(name: str, x, unit: str) -> float:
    v = _validate.finite_scalar(name, x, unit=unit)
    if v < 0:
        raise UnitsError(f"{name} = {v!r} {unit} must be >= 0")
    return v


class Sensor(nn.Module):
    """Linear camera model (EMVA 1288) with pixel binning, photon budget, noise, saturation, ADC.

    Parameters
    ----------
    pitch_m, grid_pitch_m
        Camera pixel pitch and the detector-plane sample pitch (m). ``pitch_m/grid_pitch_m``
        must be an integer within 1e-6 relative (:class:`~optics.errors.PitchRatioError`
        otherwise). The CDP system owns the geometry: leave ``grid_pitch_m=None`` and
        :class:`optics.cdp.CDPSystem` binds its detector pitch (a given ``grid_pitch_m`` that
        disagrees raises). ``pitch_m=None``: one sample per pixel.
    quantum_efficiency
        ``QE`` in ``(0, 1]``.
    mean_photons
        Photon budget: mean photons per camera pixel over the last ``budget_dims`` axes (2: each
        frame; 3: all ``L`` snapshots of one object together, which keeps their relative
        brightness as a fixed source power does), or ``None`` (input in photons per pixel).
    budget_dims
        2 or 3, see ``mean_photons``.
    read_noise_e
        Read noise std ``σ_r`` in electrons, ``>= 0``.
    dark_current_e_per_s, exposure_s
        Dark current ``D`` (e⁻/s, ``>= 0``) and exposure ``t`` (s, ``> 0``); dark electrons
        ``D·t`` per pixel.
    gain_e_per_dn, offset_dn
        ADC gain ``K`` (e⁻ per DN, ``> 0``) and offset (DN, finite).
    bit_depth
        ADC bits (1 … 32) or ``None`` (no clamp).
    full_well_e
        Full-well capacity (e⁻, ``> 0``) or ``None`` (no saturation).
    noise
        Default noise model of :meth:`forward`: ``"poisson"`` (exact), ``"gaussian"``
        (differentiable), ``"none"``; ``True``/``False`` mean ``"poisson"``/``"none"``.
    fit
        Names from :data:`SENSOR_PARAMETERS` to store as ``nn.Parameter`` (fitting by
        autograd); the others are float64 buffers.
    """

    def __init__(self, *, pitch_m: Optional[float] = None, grid_pitch_m: Optional[float] = None,
                 quantum_efficiency: float = 1.0, mean_photons: Optional[float] = None,
                 read_noise_e: float = 0.0, dark_current_e_per_s: float = 0.0,
                 exposure_s: float = 1e-3, gain_e_per_dn: float = 1.0, offset_dn: float = 0.0,
                 bit_depth: Optional[int] = None, full_well_e: Optional[float] = None,
                 noise="poisson", budget_dims: int = 2, fit=()):
        super().__init__()
        if budget_dims not in (2, 3):
            raise UnitsError(f"budget_dims must be 2 (per frame) or 3 (per snapshot set), got {budget_dims!r}")
        self.budget_dims = int(budget_dims)
        self.pitch_m: Optional[float] = None if pitch_m is None else _validate.pitch("pitch_m", pitch_m)
        self.grid_pitch_m: Optional[float] = None
        self.binning: Optional[int] = 1 if pitch_m is None else None
        if grid_pitch_m is not None:
            self._set_grid(grid_pitch_m)
        qe = _validate.positive("quantum_efficiency", quantum_efficiency, unit="e⁻/photon")
        if qe > 1.0:
            raise UnitsError(
                f"quantum_efficiency = {qe!r} exceeds 1; it is a fraction of photons converted "
                f"(a 70 % QE is 0.7)"
            )
        mp = (None if mean_photons is None
              else _validate.positive("mean_photons", mean_photons, unit="photons/pixel"))
        values = dict(
            quantum_efficiency=qe, mean_photons=mp,
            read_noise_e=_nonneg("read_noise_e", read_noise_e, "e⁻ rms"),
            dark_current_e_per_s=_nonneg("dark_current_e_per_s", dark_current_e_per_s, "e⁻/s"),
            exposure_s=_validate.positive("exposure_s", exposure_s, unit="s"),
            gain_e_per_dn=_validate.positive("gain_e_per_dn", gain_e_per_dn, unit="e⁻/DN"),
            offset_dn=_validate.finite_scalar("offset_dn", offset_dn, unit="DN"),
            full_well_e=(None if full_well_e is None else _validate.positive("full_well_e", full_well_e, unit="e⁻")),
        )
        unknown = sorted(set(fit) - set(SENSOR_PARAMETERS))
        if unknown:
            raise OpticsError(f"Sensor cannot fit {unknown}; it fits {list(SENSOR_PARAMETERS)}")
        for name, v in values.items():
            if v is None:
                if name in fit:
                    raise OpticsError(f"cannot fit {name}: it is None (disabled); give a starting value")
                setattr(self, name, None)
                continue
            t = torch.tensor(float(v), dtype=torch.float64)
            if name in fit:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        if bit_depth is not None:
            if isinstance(bit_depth, bool) or not isinstance(bit_depth, (int, np.integer)) or not 1 <= int(bit_depth) <= 32:
                raise UnitsError(f"bit_depth must be an int in 1 … 32 or None, got {bit_depth!r} (cameras are 8–16 bit)")
            bit_depth = int(bit_depth)
        self.bit_depth = bit_depth
        self.noise = _noise_model(noise)

    # -- geometry -------------------------------------------------------------------------------
    def _set_grid(self, grid_pitch_m) -> None:
        g = _validate.pitch("grid_pitch_m", grid_pitch_m)
        self.grid_pitch_m = g
        if self.pitch_m is not None:
            self.binning = integer_pitch_ratio(
                "pitch_m", self.pitch_m, "grid_pitch_m", g,
                fix="choose grid_pitch_m (the detector-plane sample pitch) = pitch_m / n for an integer n: "
                    "change the system's z_m / oversampling / pitch_m, or the camera pitch_m",
            )

    def bind(self, detector_pitch_m) -> "Sensor":
        """Attach to a system's detector-plane sample pitch (a float or ``(py, px)``; called by
        :class:`optics.cdp.CDPSystem`). A ``grid_pitch_m`` given at construction must agree,
        else :class:`~optics.errors.GeometryError` with both numbers."""
        py, px = (detector_pitch_m, detector_pitch_m) if not isinstance(detector_pitch_m, (tuple, list)) \
            else (float(detector_pitch_m[0]), float(detector_pitch_m[1]))
        if abs(py - px) > 1e-6 * max(py, px) and self.pitch_m is not None:
            raise GeometryError(f"the detector plane is sampled at {py:.6g} m × {px:.6g} m (non-square) but the "
                                f"camera pitch {self.pitch_m:.6g} m bins square pixels; use a square object grid")
        if self.grid_pitch_m is not None and abs(self.grid_pitch_m - px) > 1e-6 * px:
            raise GeometryError(f"the sensor was built for a detector sample pitch of {self.grid_pitch_m:.6g} m but "
                                f"the system's detector pitch is {px:.6g} m; leave grid_pitch_m unset (the "
                                f"system supplies it) or change the system's geometry")
        self._set_grid(px)
        return self

    # -- derived --------------------------------------------------------------------------------
    @property
    def dark_e(self) -> torch.Tensor:
        """Dark electrons per pixel per exposure ``D·t``."""
        return self.dark_current_e_per_s * self.exposure_s

    @property
    def max_dn(self) -> Optional[int]:
        return None if self.bit_depth is None else 2 ** self.bit_depth - 1

    # -- checks ---------------------------------------------------------------------------------
    def _check_intensity(self, intensity: torch.Tensor) -> torch.Tensor:
        intensity = _validate.real_field("intensity", intensity, error=IntensityError,
                                         complex_hint="pass |u|² (u.abs()**2), not the field")
        mn = float(intensity.detach().min()) if intensity.numel() else 0.0
        if mn < 0:
            raise IntensityError(
                f"intensity has negative values (min {mn!r}); an intensity (photons or W/m²) is >= 0 — "
                f"pass |u|², or clamp numerical noise with intensity.clamp_min(0)"
            )
        return intensity

    # -- steps ----------------------------------------------------------------------------------
    def bin(self, intensity: torch.Tensor) -> torch.Tensor:
        """Sum over ``bin × bin`` blocks of the last two axes (total conserved)."""
        intensity = self._check_intensity(intensity)
        b = self.binning
        if b is None:
            raise GeometryError(f"the camera pitch is {self.pitch_m:.6g} m but the sensor is not attached to a "
                                f"system (no detector-plane pitch to bin from); pass it to CDPSystem(sensor=...) "
                                f"or call sensor.bind(detector_pitch_m)")
        if b == 1:
            return intensity
        h, w = intensity.shape[-2:]
        if h % b or w % b:
            raise ShapeError(
                f"intensity frame {h}×{w} is not divisible by the pixel binning {b} "
                f"(pitch_m/grid_pitch_m); crop or pad the field to a multiple of {b}"
            )
        y = intensity.reshape(intensity.shape[:-2] + (h // b, b, w // b, b))
        return y.sum(dim=(-3, -1))

    def photons(self, intensity: torch.Tensor) -> torch.Tensor:
        """Binned photons per camera pixel; scaled to a mean of ``mean_photons`` over the last
        ``budget_dims`` axes when set. An all-zero frame stays zero (no photons to scale).
        """
        p = self.bin(intensity)
        if self.mean_photons is None:
            return p
        if p.ndim < self.budget_dims:
            raise UnitsError(f"budget_dims = {self.budget_dims} but the intensity has shape {tuple(p.shape)}")
        m = p.mean(dim=tuple(range(-self.budget_dims, 0)), keepdim=True)
        pos = m > 0
        scale = torch.where(pos, self.mean_photons.to(m.dtype) / torch.where(pos, m, torch.ones_like(m)),
                            torch.zeros_like(m))
        return p * scale

    def mean_electrons(self, intensity: torch.Tensor) -> torch.Tensor:
        """``μ_e = QE·p + D·t`` (before saturation)."""
        return self.quantum_efficiency * self.photons(intensity) + self.dark_e

    def _saturate(self, e: torch.Tensor) -> torch.Tensor:
        if self.full_well_e is None:
            return e
        fw = self.full_well_e
        if fw.requires_grad:
            return torch.minimum(e, fw.to(e.dtype))
        return e.clamp(max=float(fw))

    def _adc_clamp(self, dn: torch.Tensor) -> torch.Tensor:
        if self.bit_depth is None:
            return dn
        return dn.clamp(0.0, float(self.max_dn))

    def expected_dn(self, intensity: torch.Tensor) -> torch.Tensor:
        """Noiseless ``min(μ_e, full_well)/K + offset``, clamped to the ADC range (no rounding)."""
        e = self._saturate(self.mean_electrons(intensity))
        return self._adc_clamp(e / self.gain_e_per_dn + self.offset_dn)

    def dn_to_photons(self, dn: torch.Tensor) -> torch.Tensor:
        """Inverse of the noiseless affine map: ``p̂ = ((DN − offset)·K − D·t)/QE``.

        Photons per (binned) camera pixel in the scaled budget; saturation and clamping are not
        undone.
        """
        dn = torch.as_tensor(dn)
        if not dn.is_floating_point():
            dn = dn.to(torch.float32)
        _validate.finite_tensor("dn", dn)
        return ((dn - self.offset_dn) * self.gain_e_per_dn - self.dark_e) / self.quantum_efficiency

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, intensity: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Exact noisy DN: Poisson shot + dark noise, Gaussian read noise, saturation, rounding,
        clamp. Not differentiable (computed under ``torch.no_grad``)."""
        with torch.no_grad():
            mu = self.mean_electrons(intensity.detach() if isinstance(intensity, torch.Tensor) else intensity)
            e = torch.poisson(mu, generator=generator)
            if float(self.read_noise_e) > 0:
                e = e + self.read_noise_e.to(mu.dtype) * torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                                                        device=mu.device)
            e = self._saturate(e)
            dn = torch.round(e / self.gain_e_per_dn + self.offset_dn)
            return self._adc_clamp(dn)

    def sample_differentiable(self, intensity: torch.Tensor, *, generator: Optional[torch.Generator] = None,
                              rounding: bool = True) -> torch.Tensor:
        """Reparametrised Gaussian approximation ``e = μ_e + sqrt(μ_e + σ_r²)·ε``, saturation,
        ``DN = e/K + offset`` rounded straight-through (``rounding=True``) and clamped.

        Mean ``μ_e/K + offset`` and variance ``(μ_e + σ_r²)/K² (+ 1/12 with rounding)`` match
        the exact path to second order. ``ε`` comes from ``generator``; re-create a seeded
        generator per call to freeze it (e.g. for ``gradcheck``).
        """
        mu = self.mean_electrons(intensity)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        var = mu + self.read_noise_e ** 2
        std = torch.sqrt(var.clamp_min(torch.finfo(mu.dtype).tiny))
        e = self._saturate(mu + std * eps)
        dn = e / self.gain_e_per_dn + self.offset_dn
        if rounding:
            dn = dn + (torch.round(dn) - dn).detach()
        return self._adc_clamp(dn)

    def forward(self, intensity: torch.Tensor, *, generator: Optional[torch.Generator] = None,
                noise: Optional[str] = None) -> torch.Tensor:
        """DN with the noise model ``noise`` (default: the one given at construction):
        ``"poisson"`` → :meth:`sample`, ``"gaussian"`` → :meth:`sample_differentiable`,
        ``"none"`` → :meth:`expected_dn`. Independent of ``.train()``/``.eval()``."""
        mode = self.noise if noise is None else _noise_model(noise)
        if mode == "none":
            return self.expected_dn(intensity)
        if mode == "gaussian":
            return self.sample_differentiable(intensity, generator=generator)
        return self.sample(intensity, generator=generator)

    def extra_repr(self) -> str:
        f = lambda v: None if v is None else float(v)  # noqa: E731
        return (f"binning={self.binning}, QE={f(self.quantum_efficiency)}, mean_photons={f(self.mean_photons)}, "
                f"read_noise_e={f(self.read_noise_e)}, dark_e={float(self.dark_e):g}, "
                f"gain_e_per_dn={f(self.gain_e_per_dn)}, offset_dn={f(self.offset_dn)}, bit_depth={self.bit_depth}, "
                f"full_well_e={f(self.full_well_e)}, noise={self.noise!r}, budget_dims={self.budget_dims}")


def _noise_model(noise) -> str:
    if noise is True:
        return "poisson"
    if noise is False or noise is None:
        return "none"
    if noise not in NOISE_MODELS:
        raise OpticsError(f"noise must be one of {NOISE_MODELS} (or True/False), got {noise!r}")
    return noise
