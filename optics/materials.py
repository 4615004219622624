"""Optical materials: refractive index ``n(λ)`` and the height ↔ phase map of thin elements.

Dispersion uses the three-term Sellmeier equation with ``λ`` in micrometres, as the
coefficients are published:

``n²(λ) − 1 = Σ_{i=1..3} B_i λ² / (λ² − C_i)``,   ``C_i`` in µm².

Wavelengths are passed in metres (SI) and converted to µm internally. Each Sellmeier fit is
valid only over the range it was fitted on; outside it :class:`WavelengthRangeError` names the
range.

* :data:`FUSED_SILICA` — I. H. Malitson, "Interspecimen comparison of the refractive index of
  fused silica", J. Opt. Soc. Am. 55, 1205 (1965): ``B = (0.6961663, 0.4079426, 0.8974794)``,
  ``C = (0.0684043², 0.1162414², 9.896161²) µm²``, valid 0.21–3.71 µm.
* :data:`NBK7` — SCHOTT optical glass data sheet N-BK7 (517642.251): ``B = (1.03961212,
  0.231792344, 1.01046945)``, ``C = (0.00600069867, 0.0200179144, 103.560653) µm²``, valid
  0.3–2.5 µm.

A thin element of height ``h`` in a medium of index ``n_medium`` adds the phase

``φ = 2π (n(λ) − n_medium) h / λ``   (:func:`height_to_phase`),

so a full ``2π`` needs ``h_2π = λ/(n(λ) − n_medium)`` (:func:`height_for_2pi`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from . import _validate
from .errors import MaterialError, UnitsError, WavelengthRangeError

__all__ = [
    "Material", "FUSED_SILICA", "NBK7", "constant_index", "get_material", "height_to_phase",
    "phase_to_height", "height_for_2pi", "MaterialError", "WavelengthRangeError",
]

Number = Union[float, int, torch.Tensor]


def _wavelength_bounds(wavelength_m: Number) -> Tuple[float, float]:
    """Validate (units) a scalar or tensor of wavelengths; return ``(min, max)`` in metres."""
    if isinstance(wavelength_m, torch.Tensor) and wavelength_m.numel() != 1:
        if wavelength_m.is_complex():
            raise UnitsError("wavelength_m must be real")
        _validate.finite_tensor("wavelength_m", wavelength_m)
        if wavelength_m.numel() == 0:
            raise UnitsError("wavelength_m is empty")
        lo = _validate.wavelength(wavelength_m.detach().min())
        hi = _validate.wavelength(wavelength_m.detach().max())
        return lo, hi
    v = _validate.wavelength(wavelength_m)
    return v, v


@dataclass(frozen=True)
class Material:
    """A dispersive (Sellmeier) or constant-index material.

    Attributes
    ----------
    name
        Human-readable name.
    sellmeier_b, sellmeier_c_um2
        Three-term Sellmeier coefficients (``B`` dimensionless, ``C`` in µm², as published),
        or ``None`` for a constant index.
    constant_n
        Constant refractive index (used when no Sellmeier coefficients are given).
    wavelength_range_m
        ``(min, max)`` validity range of the Sellmeier fit in metres, or ``None`` (unchecked
        apart from the 1 nm … 1 mm units check).
    """

    name: str
    sellmeier_b: Optional[Tuple[float, ...]] = None
    sellmeier_c_um2: Optional[Tuple[float, ...]] = None
    constant_n: Optional[float] = None
    wavelength_range_m: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        has_s = self.sellmeier_b is not None or self.sellmeier_c_um2 is not None
        if has_s:
            if self.sellmeier_b is None or self.sellmeier_c_um2 is None or \
                    len(self.sellmeier_b) != len(self.sellmeier_c_um2) or len(self.sellmeier_b) == 0:
                raise MaterialError(
                    f"material {self.name!r}: give matching Sellmeier B and C tuples (same length)"
                )
            object.__setattr__(self, "sellmeier_b", tuple(float(b) for b in self.sellmeier_b))
            object.__setattr__(self, "sellmeier_c_um2", tuple(float(c) for c in self.sellmeier_c_um2))
            if self.constant_n is not None:
                raise MaterialError(f"material {self.name!r}: give Sellmeier coefficients or constant_n, not both")
        else:
            if self.constant_n is None:
                raise MaterialError(f"material {self.name!r}: give Sellmeier coefficients or constant_n")
            n = _validate.positive("constant_n", self.constant_n, unit="(refractive index)")
            object.__setattr__(self, "constant_n", n)
        if self.wavelength_range_m is not None:
            lo, hi = (float(x) for x in self.wavelength_range_m)
            if not 0 < lo < hi:
                raise MaterialError(f"material {self.name!r}: wavelength_range_m must be (min, max) with 0 < min < max")
            object.__setattr__(self, "wavelength_range_m", (lo, hi))

    def check_wavelength(self, wavelength_m: Number) -> None:
        """Raise :class:`WavelengthRangeError` if any ``λ`` lies outside the fit range."""
        lo, hi = _wavelength_bounds(wavelength_m)
        if self.wavelength_range_m is None:
            return
        rlo, rhi = self.wavelength_range_m
        tol = 1e-9  # relative slack for round-off at the ends
        bad = lo if lo < rlo * (1 - tol) else (hi if hi > rhi * (1 + tol) else None)
        if bad is not None:
            raise WavelengthRangeError(
                f"wavelength_m = {bad!r} m is outside the {self.name} dispersion fit range "
                f"{rlo!r} … {rhi!r} m ({rlo * 1e6:g}–{rhi * 1e6:g} µm); use a wavelength inside the "
                f"range or a material whose dispersion data covers it (e.g. constant_index(n))"
            )

    def n(self, wavelength_m: Number) -> Number:
        """Refractive index at ``wavelength_m`` (metres): a float for a scalar input, a tensor
        (same shape, float64 unless the input is float32) for a tensor input."""
        self.check_wavelength(wavelength_m)
        if isinstance(wavelength_m, torch.Tensor):
            # a floating tensor here: the units check refuses complex values, and an integer
            # tensor cannot hold a wavelength in metres inside 1 nm … 1 mm
            lam = wavelength_m
            if self.constant_n is not None:
                return torch.full_like(lam, self.constant_n)
            l2 = (lam.to(torch.float64) * 1e6) ** 2
            s = torch.ones_like(l2)
            for b, c in zip(self.sellmeier_b, self.sellmeier_c_um2):
                s = s + b * l2 / (l2 - c)
            return torch.sqrt(s).to(lam.dtype)
        if self.constant_n is not None:
            return self.constant_n
        l2 = (float(wavelength_m) * 1e6) ** 2
        s = 1.0 + sum(b * l2 / (l2 - c) for b, c in zip(self.sellmeier_b, self.sellmeier_c_um2))
        return math.sqrt(s)


FUSED_SILICA = Material(
    name="fused silica",
    sellmeier_b=(0.6961663, 0.4079426, 0.8974794),
    sellmeier_c_um2=(0.0684043 ** 2, 0.1162414 ** 2, 9.896161 ** 2),
    wavelength_range_m=(0.21e-6, 3.71e-6),
)

NBK7 = Material(
    name="N-BK7",
    sellmeier_b=(1.03961212, 0.231792344, 1.01046945),
    sellmeier_c_um2=(0.00600069867, 0.0200179144, 103.560653),
    wavelength_range_m=(0.3e-6, 2.5e-6),
)

_ALIASES = {
    "fused_silica": FUSED_SILICA, "fused silica": FUSED_SILICA, "fused-silica": FUSED_SILICA,
    "silica": FUSED_SILICA, "sio2": FUSED_SILICA,
    "n-bk7": NBK7, "nbk7": NBK7, "n_bk7": NBK7, "bk7": NBK7,
}


def constant_index(n: float, name: Optional[str] = None) -> Material:
    """A non-dispersive material of index ``n`` (e.g. a photoresist at its design wavelength)."""
    nv = _validate.positive("n", n, unit="(refractive index)")
    return Material(name=name if name is not None else f"n={nv:g}", constant_n=nv)


def get_material(name: Union[str, float, Material]) -> Material:
    """Look a material up: ``"fused_silica"``, ``"n-bk7"`` (case-insensitive, common aliases
    such as ``"sio2"`` and ``"bk7"``), a float string such as ``"1.5"`` (constant index), a
    number, or a :class:`Material` (returned as-is)."""
    if isinstance(name, Material):
        return name
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        return constant_index(float(name))
    if not isinstance(name, str):
        raise MaterialError(f"material must be a name, a number or a Material, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    try:
        val = float(key)
    except ValueError:
        raise MaterialError(
            f"unknown material {name!r}; known: 'fused_silica', 'n-bk7', or a constant index such as '1.5'"
        ) from None
    return constant_index(val)


def _contrast(material, wavelength_m: float, n_medium: float) -> Tuple[float, float]:
    mat = get_material(material)
    lam = _validate.wavelength(wavelength_m)
    nm = _validate.positive("n_medium", n_medium, unit="(refractive index)")
    return mat.n(lam) - nm, lam


def _check_height_like(name: str, x: Number) -> None:
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise UnitsError(f"{name} must be real")
        _validate.finite_tensor(name, x)
    else:
        _validate.finite_scalar(name, x, unit="m" if name.endswith("_m") else "rad")


def height_to_phase(height_m: Number, *, wavelength_m: float, material, n_medium: float = 1.0) -> Number:
    """Phase ``φ = 2π (n(λ) − n_medium) h / λ`` (rad) added by a thin layer of height ``h`` (m)."""
    _check_height_like("height_m", height_m)
    dn, lam = _contrast(material, wavelength_m, n_medium)
    return height_m * (2.0 * math.pi * dn / lam)


def phase_to_height(phase_rad: Number, *, wavelength_m: float, material, n_medium: float = 1.0) -> Number:
    """Height ``h = φ λ / (2π (n(λ) − n_medium))`` (m) giving phase ``φ`` (rad); inverse of
    :func:`height_to_phase`. Needs ``n(λ) > n_medium``."""
    _check_height_like("phase_rad", phase_rad)
    dn, lam = _contrast(material, wavelength_m, n_medium)
    if dn <= 0:
        raise MaterialError(
            f"index contrast n(λ) − n_medium = {dn:.6g} at λ = {lam!r} m must be > 0 to turn phase into "
            f"a positive height; use a higher-index material or a lower-index medium"
        )
    return phase_rad * (lam / (2.0 * math.pi * dn))


def height_for_2pi(*, wavelength_m: float, material, n_medium: float = 1.0) -> float:
    """Height (m) of a full ``2π`` phase step: ``λ/(n(λ) − n_medium)``."""
    return float(phase_to_height(2.0 * math.pi, wavelength_m=wavelength_m, material=material,
                                 n_medium=n_medium))
