"""Input checks shared by the optics layer (one home for each check)."""
from __future__ import annotations

import math
from typing import Union

import torch

from .errors import NonFiniteError, ShapeError, UnitsError

Scalar = Union[float, int, torch.Tensor]


def _value(x: Scalar) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise UnitsError(f"expected a scalar, got a tensor of shape {tuple(x.shape)}")
        return float(x.detach().reshape(()).item())
    try:
        return float(x)
    except (TypeError, ValueError) as exc:  # pragma: no cover - message path
        raise UnitsError(f"expected a real number, got {x!r}") from exc


def positive(name: str, x: Scalar, *, unit: str = "m", hint: str = "") -> float:
    """Check that ``x`` is a finite positive scalar; return it as float."""
    v = _value(x)
    if not math.isfinite(v) or v <= 0:
        extra = f"; {hint}" if hint else ""
        raise UnitsError(f"{name} must be a finite positive number in {unit}, got {v!r}{extra}")
    return v


def finite_scalar(name: str, x: Scalar, *, unit: str = "m") -> float:
    v = _value(x)
    if not math.isfinite(v):
        raise UnitsError(f"{name} must be finite (in {unit}), got {v!r}")
    return v


def wavelength(x: Scalar) -> float:
    v = positive("wavelength_m", x, unit="m")
    if not (1e-9 <= v <= 1e-3):
        raise UnitsError(
            f"wavelength_m = {v!r} m is outside 1 nm … 1 mm; wavelengths are in metres "
            f"(633 nm is 633e-9, not 633 or 0.633)"
        )
    return v


def pitch(name: str, x: Scalar) -> float:
    v = positive(name, x, unit="m")
    if v > 1e-1:
        raise UnitsError(f"{name} = {v!r} m is over 10 cm; pitches are in metres (8 µm is 8e-6)")
    return v


def finite_tensor(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    # one cheap reduction first (a NaN or inf anywhere makes the sum non-finite); the full
    # element-wise check only runs to count the bad values for the message
    if not bool(torch.isfinite(t.detach().sum())) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(
            f"{name} contains {bad} NaN/inf value(s); clean the input (torch.nan_to_num) "
            f"or find where it was produced"
        )


def field_2d(name: str, t: torch.Tensor) -> None:
    finite_tensor(name, t)
    if t.ndim < 2:
        raise ShapeError(f"{name} must have shape (..., H, W); got {tuple(t.shape)}")


def complex_dtype_for(t: torch.Tensor) -> torch.dtype:
    """complex64 unless the input is float64/complex128."""
    if t.dtype in (torch.float64, torch.complex128):
        return torch.complex128
    return torch.complex64


def as_complex(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t
    return t.to(complex_dtype_for(t))


def real_field(name: str, t, *, complex_hint: str, error=None) -> torch.Tensor:
    """A real, finite tensor of shape ``(..., H, W)``: array-likes converted, integers made
    float32, complex rejected with ``complex_hint`` as the fix (raised as ``error``, default
    :class:`~optics.errors.OpticsError`)."""
    from .errors import OpticsError

    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.is_complex():
        raise (error or OpticsError)(f"{name} must be real, got {t.dtype}; {complex_hint}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    field_2d(name, t)
    return t
