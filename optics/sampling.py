"""How much of a coded field a CDP geometry records: the light and spectrum budget of a detector window.

A random phase mask spreads the object's spectrum over the whole sampled band
``|f_x|, |f_y| <= 1/(2·dx)``, so a *generic* coded field is modelled here as one that fills the
object window (``N × N`` samples of pitch ``dx``) uniformly and carries a flat angular spectrum
over that band. Over a distance ``z`` the plane wave of frequency ``f`` moves sideways by
``s = z·λf/cosθ`` (``sinθ = λ|f|``; ``z·λf`` for the paraxial Fresnel methods). Two losses follow
for the same-pitch methods (``asm``, ``fresnel-tf``, ``fresnel-ir``), whose detector window is
``M = round(oversampling·N)`` samples of the same pitch:

* ``band_fraction``: the fraction of the sampled band the transfer function keeps. ``asm`` with
  ``band_limit=True`` drops every plane wave whose shift exceeds the room its padded grid leaves
  (Matsushima & Shimobaba, Opt. Express 17, 19662 (2009); the exact criterion of
  :mod:`optics.propagation`: keep iff ``|z|·λ|f_i| <= D_i·cosθ`` on both axes, with
  ``D_i = min(P_i/2, P_i − M_i)·dx``); the other methods keep the whole band (1.0).
* ``light_fraction``: of the light the transfer function keeps, the fraction that lands inside
  the detector window: the mean, over the kept frequencies, of the overlap of the shifted object
  window with the detector window, ``ov(s) = |[s − N·dx/2, s + N·dx/2] ∩ [−M·dx/2, M·dx/2]| / (N·dx)``
  per axis (the axes are separable).

``captured_fraction = band_fraction · light_fraction`` is the share of a generic coded field's
light that the simulated detector records; the rest carries object information that no solver
can recover. Hand-computed case (tested): paraxial, ``M = N``, ``z = z_c = N·dx²/λ`` (the critical
distance), no band limit: the shift is uniform on ``[−N·dx/2, N·dx/2]``, ``ov(s) = 1 − |s|/(N·dx)``,
whose mean is ``3/4`` per axis, so ``light_fraction = 9/16``.

The Fourier-transform methods (``fraunhofer``, ``fresnel-1fft``) map the whole sampled band onto
their detector window (output pitch ``λz/(M·dx)``, window ``λz/dx``): both fractions are 1.

:func:`check_geometry` warns (:class:`GeometryWarning`) when ``captured_fraction`` is below
:data:`WARN_BELOW` and raises :class:`~optics.errors.SamplingError` below :data:`REFUSE_BELOW`,
naming the numbers and the fixes (a smaller ``z``, a larger window, another pitch).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional, Tuple

import torch

from . import _validate
from .errors import OpticsError, SamplingError
from .propagation import METHODS, padded_shape, resolve_method

__all__ = ["GeometryReport", "GeometryWarning", "geometry_report", "check_geometry", "WARN_BELOW",
           "REFUSE_BELOW"]

#: captured fraction below which :func:`check_geometry` warns (half of the light is lost)
WARN_BELOW = 0.5
#: captured fraction below which :func:`check_geometry` refuses (nine tenths of the light are lost)
REFUSE_BELOW = 0.1

_FT_METHODS = ("fraunhofer", "fresnel-1fft")


class GeometryWarning(UserWarning):
    """A CDP geometry loses a large part of the coded field's light or spectrum (the message has
    the numbers and the fix)."""


@dataclasses.dataclass(frozen=True)
class GeometryReport:
    """What a CDP geometry records of a generic coded field (module docstring)."""

    method: str
    object_samples: int
    detector_samples: int
    pitch_m: Optional[float]  # None for the unit-free FFT (method "fft")
    wavelength_m: Optional[float]
    z_m: Optional[float]
    band_fraction: float
    light_fraction: float

    @property
    def captured_fraction(self) -> float:
        return self.band_fraction * self.light_fraction

    @property
    def critical_distance_m(self) -> Optional[float]:
        """``z_c = N·dx²/λ`` with ``N`` the object window's larger side (None when unit-free)."""
        if self.pitch_m is None or self.wavelength_m is None:
            return None
        return self.object_samples * self.pitch_m ** 2 / self.wavelength_m

    def summary(self) -> str:
        if self.pitch_m is None:
            return (f"unit-free FFT: the {self.detector_samples}-sample detector window holds the whole sampled "
                    f"spectrum of the {self.object_samples}-sample object window (100 % of the light)")
        return (f"method {self.method}, {self.object_samples}-sample object window in a "
                f"{self.detector_samples}-sample detector window at pitch {self.pitch_m:.4g} m, "
                f"λ = {self.wavelength_m:.4g} m, z = {self.z_m:.4g} m = {self.z_m / self.critical_distance_m:.3g} × "
                f"the critical distance N·dx²/λ = {self.critical_distance_m:.4g} m: the transfer function keeps "
                f"{100 * self.band_fraction:.3g} % of the sampled spectrum and {100 * self.light_fraction:.3g} % of "
                f"that light lands in the detector window, so the detector records "
                f"{100 * self.captured_fraction:.3g} % of a coded field's light")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(captured_fraction=self.captured_fraction, critical_distance_m=self.critical_distance_m)
        return d


def _overlap(s: torch.Tensor, n: int, m: int, dx: float) -> torch.Tensor:
    """Overlap of ``[s − n·dx/2, s + n·dx/2]`` with ``[−m·dx/2, m·dx/2]``, over ``n·dx``."""
    lo = torch.clamp(s - n * dx / 2, min=-m * dx / 2)
    hi = torch.clamp(s + n * dx / 2, max=m * dx / 2)
    return torch.clamp(hi - lo, min=0.0) / (n * dx)


def geometry_report(shape: Tuple[int, int], *, pitch_m: Optional[float] = None, wavelength_m: Optional[float] = None,
                    z_m: Optional[float] = None, method: str, oversampling: float = 1.0, band_limit: bool = True,
                    pad=True) -> GeometryReport:
    """The light and spectrum budget (module docstring) of an object window ``shape`` propagated
    by ``method`` over ``z_m`` onto a detector window ``round(oversampling·N)`` per axis; ``method``
    ``"auto"`` is resolved on the detector window, as :class:`optics.cdp.CDPOperator` does.
    ``band_limit`` and ``pad`` are the ``asm`` options (ignored by the other methods). The
    unit-free ``method="fft"`` (no pitch, wavelength or distance) records everything, like the
    Fourier-transform methods."""
    if method == "fft":
        n = tuple(int(v) for v in shape)
        return GeometryReport(method="fft", object_samples=max(n),
                              detector_samples=max(int(round(oversampling * v)) for v in n), pitch_m=None,
                              wavelength_m=None, z_m=None, band_fraction=1.0, light_fraction=1.0)
    dx = _validate.pitch("pitch_m", pitch_m)
    lam = _validate.wavelength(wavelength_m)
    z = _validate.finite_scalar("z_m", z_m, unit="m")
    if method not in METHODS:
        raise OpticsError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(oversampling, (int, float)) and math.isfinite(oversampling) and oversampling >= 1.0):
        raise OpticsError(f"oversampling must be a finite number >= 1, got {oversampling!r}")
    n = tuple(int(v) for v in shape)
    if len(n) != 2 or min(n) < 1:
        raise OpticsError(f"shape must be two positive sample counts (H, W), got {shape!r}")
    m = tuple(int(round(oversampling * v)) for v in n)
    method = resolve_method(m, method, pitch_m=dx, wavelength_m=lam, z_m=z)
    common = dict(method=method, object_samples=max(n), detector_samples=max(m), pitch_m=dx, wavelength_m=lam,
                  z_m=z)
    if method in _FT_METHODS or z == 0:
        return GeometryReport(band_fraction=1.0, light_fraction=1.0, **common)
    p = padded_shape(m, pitch_m=dx, wavelength_m=lam, z_m=z, method=method, pad=pad if method == "asm" else True)
    f = [torch.fft.fftfreq(pi, d=dx, dtype=torch.float64) for pi in p]
    fy, fx = f[0][:, None], f[1][None, :]
    arg = 1.0 / lam ** 2 - fy ** 2 - fx ** 2
    propagating = arg > 0
    cos_t = torch.sqrt(torch.clamp(arg, min=0.0)) * lam
    if method == "asm":
        keep = propagating
        if band_limit:
            periodic = pad is False or pad is None
            for ni, pi, fi in zip(m, p, (fy, fx)):
                room = (pi / 2 if periodic or pi - ni <= 0 else min(pi / 2, pi - ni)) * dx
                keep = keep & (abs(z) * lam * fi.abs() <= room * cos_t)
        scale = torch.where(propagating, 1.0 / torch.clamp(cos_t, min=1e-300), torch.zeros_like(cos_t))
        sy, sx = z * lam * fy * scale, z * lam * fx * scale
    else:  # the paraxial Fresnel methods keep every sampled frequency; the shift is z·λ·f
        keep = torch.ones_like(propagating)
        sy, sx = z * lam * fy, z * lam * fx
    k = keep.to(torch.float64)
    kept = float(k.sum())
    band = kept / k.numel()
    if kept == 0:
        light = 0.0
    else:
        ov = _overlap(sy, n[0], m[0], dx) * _overlap(sx, n[1], m[1], dx)
        light = float((ov * k).sum()) / kept
    return GeometryReport(band_fraction=band, light_fraction=light, **common)


def _fixes(rep: GeometryReport, shape, *, pitch_m, wavelength_m, method, oversampling, band_limit, pad) -> str:
    """The largest distance z·0.8^k (k = 1…40) that reaches :data:`WARN_BELOW`, for the message."""
    z = rep.z_m
    good = None
    for _ in range(40):
        z = z / 1.25
        r = geometry_report(shape, pitch_m=pitch_m, wavelength_m=wavelength_m, z_m=z, method=method,
                            oversampling=oversampling, band_limit=band_limit, pad=pad)
        if r.captured_fraction >= WARN_BELOW:
            good = z
            break
    parts = []
    if good is not None:
        parts.append(f"a smaller distance (optics.z_m <= {good:.3g} m records >= {100 * WARN_BELOW:.0f} %)")
    else:
        parts.append("a smaller distance optics.z_m")
    parts.append("a larger window (data.size or optics.oversampling: the detector window is oversampling × size "
                 "samples)")
    parts.append("a larger pitch (optics.pitch_m: z_c grows as dx²)")
    parts.append("or a far-field method (optics.method: fraunhofer or fresnel-1fft map the whole band onto the "
                 "detector)")
    return "; ".join(parts)


def check_geometry(shape: Tuple[int, int], *, pitch_m: float, wavelength_m: float, z_m: float, method: str,
                   oversampling: float = 1.0, band_limit: bool = True, pad=True,
                   refuse: bool = True) -> GeometryReport:
    """:func:`geometry_report`, then a :class:`GeometryWarning` when the captured fraction is below
    :data:`WARN_BELOW`, and a :class:`~optics.errors.SamplingError` below :data:`REFUSE_BELOW`
    (a warning only with ``refuse=False``). Both name the numbers and the fixes."""
    kw = dict(pitch_m=pitch_m, wavelength_m=wavelength_m, method=method, oversampling=oversampling,
              band_limit=band_limit, pad=pad)
    rep = geometry_report(shape, z_m=z_m, **kw)
    c = rep.captured_fraction
    if c >= WARN_BELOW:
        return rep
    fixes = _fixes(rep, shape, **kw)
    if c < REFUSE_BELOW and refuse:
        raise SamplingError(f"the detector window loses most of the coded field: {rep.summary()} (limit "
                            f"{100 * REFUSE_BELOW:.0f} %); the lost light carries object information no solver "
                            f"recovers. Use {fixes}")
    warnings.warn(f"{rep.summary()} (below {100 * WARN_BELOW:.0f} %: reconstructions will be poor); consider "
                  f"{fixes}", GeometryWarning, stacklevel=2)
    return rep
