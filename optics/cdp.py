"""Coded-diffraction-pattern (CDP) system.

``y_l = Sensor(|P(pad(M_l ⊙ x))|²)``, ``l = 1 … L``, with

* ``M_l`` the coded modulation: a fixed complex mask, a (learnable) phase mask ``e^{iθ_l}``, or
  phase values shown on an :class:`~optics.slm.SLM` (pixel pitch, fill factor, crosstalk, LUT,
  quantisation) that turns SLM-pixel phases into a modulation on the simulation grid;
* ``pad`` a centred zero-padding of the object plane by ``oversampling`` (the detector window
  is ``round(oversampling·N)`` samples; for Fraunhofer this halves the output pitch at 2×);
* ``P`` any propagator of :mod:`optics.propagation`;
* ``Sensor`` optional (:class:`~optics.sensor.Sensor`): pixel integration, photon budget,
  shot/read/dark noise, gain, bit depth, saturation.

Linearity: ``A(x) = P(pad(M ⊙ x))`` is linear in ``x`` (for fixed masks) and has the exact
adjoint ``A_adjoint(z) = Σ_l conj(M_l) ⊙ crop(Pᴴ z_l)``; ``intensity`` (``|·|²``) and the sensor
are not. The same class serves a teacher with ``L`` masks and a student with one.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from . import _validate
from .errors import ShapeError
from .grid import crop_centered, pad_centered
from .propagation import METHODS, output_pitch, propagate, propagate_adjoint

__all__ = ["CDPSystem", "adjointness_error"]


class _FixedModulation(nn.Module):
    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values)

    def forward(self) -> torch.Tensor:
        return self.values


def _as_mask_module(masks) -> nn.Module:
    if isinstance(masks, nn.Module):
        return masks
    if not isinstance(masks, torch.Tensor):
        masks = torch.as_tensor(masks)
    _validate.finite_tensor("masks", masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ShapeError(f"masks must have shape (L, H, W) or (H, W); got {tuple(masks.shape)}")
    if not masks.is_complex():
        # real values are phases in radians
        masks = torch.polar(torch.ones_like(masks), masks)
    return _FixedModulation(masks)


class CDPSystem(nn.Module):
    """Coded diffraction patterns through free space (see module docstring).

    Parameters
    ----------
    masks
        ``(L, H, W)`` complex modulation, ``(L, H, W)`` real phases in rad, or an ``nn.Module``
        whose ``forward()`` returns the ``(L, H, W)`` complex modulation (e.g.
        :class:`optics.masks.PhaseMask`). With ``slm`` given, ``masks`` must expose ``theta``
        (``(L, h, w)`` phases per SLM pixel) and the SLM makes the modulation.
    pitch_m, wavelength_m, z_m
        Object-plane sample pitch, wavelength, mask-to-detector distance (SI).
    method
        Propagation method (:func:`optics.propagate`); default ``"fraunhofer"``.
    oversampling
        Detector window / object window ratio (≥ 1) realised by centred zero padding.
    slm, sensor
        Optional :class:`optics.slm.SLM` and :class:`optics.sensor.Sensor`.
    propagation_options
        Passed to the propagator (``pad``, ``band_limit``, ``evanescent``, ``allow_aliasing``).
    """

    def __init__(self, masks, *, pitch_m: float, wavelength_m: float, z_m: float,
                 method: str = "fraunhofer", oversampling: float = 1.0, slm: Optional[nn.Module] = None,
                 sensor: Optional[nn.Module] = None, **propagation_options):
        super().__init__()
        self.pitch_m = _validate.pitch("pitch_m", pitch_m)
        self.wavelength_m = _validate.wavelength(wavelength_m)
        self.z_m = _validate.finite_scalar("z_m", z_m)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not (math.isfinite(oversampling) and oversampling >= 1.0):
            raise ShapeError(f"oversampling must be a finite number >= 1, got {oversampling!r}")
        self.method = method
        self.oversampling = float(oversampling)
        self.masks = _as_mask_module(masks)
        self.slm = slm
        self.sensor = sensor
        self.propagation_options = dict(propagation_options)
        if slm is not None and not hasattr(self.masks, "theta"):
            raise ShapeError("with an SLM, masks must be a PhaseMask (phases per SLM pixel, attribute 'theta')")
        mod = self.modulation()
        self.n_masks = int(mod.shape[0])
        self.in_shape: Tuple[int, int] = (int(mod.shape[-2]), int(mod.shape[-1]))
        self.out_shape: Tuple[int, int] = tuple(int(round(self.oversampling * n)) for n in self.in_shape)
        if method == "auto":
            from .propagation import choose_method
            self.method = choose_method(self.out_shape, pitch_m=self.pitch_m,
                                        wavelength_m=self.wavelength_m, z_m=self.z_m)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def out_pitch_m(self):
        """Detector-plane sample pitch (``λz/(M·dx)`` for Fraunhofer / single-FFT Fresnel)."""
        return output_pitch(self.out_shape, pitch_m=self.pitch_m, wavelength_m=self.wavelength_m,
                            z_m=self.z_m, method=self.method)

    def _prop_kw(self):
        return dict(pitch_m=self.pitch_m, wavelength_m=self.wavelength_m, z_m=self.z_m,
                    method=self.method, **self.propagation_options)

    # ---- masks ----------------------------------------------------------------------------
    def modulation(self) -> torch.Tensor:
        """The ``(L, H, W)`` complex modulation on the simulation grid (after the SLM model)."""
        if self.slm is not None:
            return self.slm(self.masks.theta)
        mod = self.masks()
        if mod.ndim == 2:
            mod = mod[None]
        return mod

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        _validate.field_2d("object x", x)
        if tuple(x.shape[-2:]) != self.in_shape:
            raise ShapeError(f"object x has spatial shape {tuple(x.shape[-2:])} but the masks are "
                             f"{self.in_shape}; resize the object or the masks to agree")
        return _validate.as_complex(x)

    # ---- linear part ----------------------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Linear part ``(..., H, W) → (..., L, Mh, Mw)``: detector-plane complex fields."""
        x = self._check_x(x)
        mod = self.modulation().to(x.dtype)
        u = x.unsqueeze(-3) * mod
        if self.out_shape != self.in_shape:
            u = pad_centered(u, self.out_shape)
        return propagate(u, **self._prop_kw()).field

    def A_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """Exact adjoint of :meth:`A`: ``(..., L, Mh, Mw) → (..., H, W)``."""
        _validate.field_2d("detector field z", z)
        if z.ndim < 3 or tuple(z.shape[-3:]) != (self.n_masks,) + tuple(self.out_shape):
            raise ShapeError(f"detector field has shape {tuple(z.shape)}; expected (..., "
                             f"{self.n_masks}, {self.out_shape[0]}, {self.out_shape[1]})")
        z = _validate.as_complex(z)
        u = propagate_adjoint(z, **self._prop_kw())
        if self.out_shape != self.in_shape:
            u = crop_centered(u, self.in_shape)
        mod = self.modulation().to(u.dtype)
        return (u * mod.conj()).sum(dim=-3)

    # ---- measurements ---------------------------------------------------------------------
    def intensity(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless ``|A x|²`` (real, ``(..., L, Mh, Mw)``)."""
        a = self.A(x)
        return a.real ** 2 + a.imag ** 2

    def forward(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``Sensor(|A x|²)``; without a sensor, the noiseless intensity."""
        intensity = self.intensity(x)
        if self.sensor is None:
            return intensity
        return self.sensor(intensity, generator=generator)


def adjointness_error(A, A_adjoint, x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative dot-product-test error ``|⟨Ax, y⟩ − ⟨x, Aᴴy⟩| / (‖Ax‖‖y‖)`` (0 for an exact adjoint)."""
    ax = A(x)
    aty = A_adjoint(y)
    lhs = torch.vdot(ax.reshape(-1), y.reshape(-1).to(ax.dtype))
    rhs = torch.vdot(x.reshape(-1).to(aty.dtype), aty.reshape(-1))
    return float(((lhs - rhs).abs() / (ax.norm() * y.norm())).detach())
