r"""Noise models on CDP intensities, as objects: ``model.sample(I, generator=g) → y``.

Each model maps a noiseless intensity ``I = |A x|²`` (any shape, real, ``>= 0``, in the
operator's own units) to a noisy intensity ``y`` in the same units, and documents its
statistics so solvers can use them (e.g. a discrepancy-principle stop at the expected
residual):

* :meth:`NoiseModel.mean` and :meth:`NoiseModel.variance` — ``E[y]`` and ``Var[y]`` per sample;
* :meth:`NoiseModel.amplitude_mse` — ``E[(√y − √I)²]`` per sample, the expected squared
  residual of an amplitude-fitting solver at the true object (``√y`` of a clipped or Poisson
  ``y``; the models never return negative ``y``);
* :meth:`NoiseModel.expected_residual` — its sum over the last ``dims`` axes (default 3:
  ``(L, Mh, Mw)``, one object's CDPs), i.e. ``E‖√y − |A x|‖²`` per object.

The models
----------
:class:`PrDeepNoise` ``(alpha)`` — the protocol of prDeep (Metzler, Schniter, Veeraraghavan,
Baraniuk, "prDeep: robust phase retrieval with a flexible deep network", ICML 2018) and the
deep-unfolding papers that reuse it: ``b = √max(I + σ·√I·n, 0)``, ``σ = α/255``,
``n ~ N(0, 1)``, returned as ``y = b²``. ``α ∈ {9, 27, 81}``, for objects in ``[0, 1]``
through the unitary ``A x = fft2(M ⊙ x)/N`` (``CDPOperator(method="fft")``).

:class:`PoissonNoise` ``(photons_per_unit)`` — ``y = Poisson(κ·I)/κ``: shot noise at ``κ``
photons per unit intensity. ``PoissonNoise.matching_prdeep(α)`` takes ``κ = (255/α)²``, the
photon count whose variance ``I/κ`` equals prDeep's ``σ²·I``.

:class:`GaussianNoise` ``(sigma)`` — ``y = max(I + σ·n, 0)``: additive white Gaussian noise of
standard deviation ``σ`` (intensity units), clipped at zero so that ``√y`` exists.

:class:`NoNoise` — ``y = I``.

Statistics. prDeep and Gaussian are one family, ``y = max(I + s·n, 0)`` with ``s = σ√I`` or
``s = σ``. With ``v = I/s``: ``E[y] = s·(vΦ(v) + φ(v))``, ``E[y²] = s²·((v² + 1)Φ(v) + vφ(v))``
(moments of a clipped Gaussian), and ``E[(√y − √I)²] = s·K(v)`` with the universal function
``K(v) = E[(√((v + n)₊) − √v)²]``, tabulated once by quadrature (``∫₀^∞ √w φ(w − v) dw`` with
``w = r²``, a smooth integrand) and ``K(v) = 1/(4v) + 15/(64v³) + O(v⁻⁵)`` beyond the table.
For prDeep this is ``σ²·g(t)`` with ``t = √I/σ``, ``g → 1/4`` for bright samples: the amplitude
noise std is ``σ/2`` there. Poisson: ``E[y] = I``, ``Var[y] = I/κ`` exactly, and
``E[(√y − √I)²] = h(λ)/κ`` with ``λ = κI`` and ``h(λ) = 2λ − 2√λ·E√P``, ``P ~ Poisson(λ)``,
tabulated by summing the distribution, ``h(λ) = 1/4 + 7/(64λ) + O(λ⁻²)`` beyond the table.
``tests/optics/test_noise.py`` checks every formula against Monte-Carlo draws.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np
import torch

from .errors import IntensityError, NoiseModelError

__all__ = ["NoiseModel", "NoNoise", "PrDeepNoise", "PoissonNoise", "GaussianNoise", "NOISE_MODEL_NAMES",
           "make_noise_model", "PRDEEP_ALPHAS"]

#: the named noise models (the one list; config and files use these names)
NOISE_MODEL_NAMES = ("none", "prdeep", "poisson", "gaussian")
#: the noise levels of the published prDeep protocol
PRDEEP_ALPHAS = (9.0, 27.0, 81.0)

_K_TABLE_MAX = 1e3  # beyond: asymptotic series (relative error < 1e-9 there)
_H_TABLE_MAX = 1e3


def _check_intensity(intensity) -> torch.Tensor:
    I = torch.as_tensor(intensity)
    if I.is_complex():
        raise IntensityError("intensity is complex; pass |A x|² (e.g. operator.intensity(x)), not the field")
    if not I.is_floating_point():
        I = I.to(torch.float32)
    with torch.no_grad():
        if I.numel() and not bool(torch.isfinite(I).all()):
            raise IntensityError("intensity contains NaN or inf; check the object and the operator")
        mn = float(I.min()) if I.numel() else 0.0
    if mn < 0:
        raise IntensityError(f"intensity has negative values (min {mn!r}); a noise model takes |A x|² >= 0 — "
                             f"clamp numerical noise with intensity.clamp_min(0)")
    return I


def _positive(name: str, value, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise NoiseModelError(f"{name} must be a positive number, got {value!r}; {hint}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise NoiseModelError(f"{name} = {v!r} must be a positive finite number; {hint}")
    return v


# ---- universal functions (tabulated once, interpolated) ------------------------------------------
def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@lru_cache(maxsize=1)
def _k_table():
    """``K(v) = E[(√((v + n)₊) − √v)²]`` on a grid of ``v`` (linear near 0, geometric above 1)."""
    v = np.concatenate([np.linspace(0.0, 1.0, 201)[:-1], np.geomspace(1.0, _K_TABLE_MAX, 801)])
    # E√((v+n)₊) = ∫₀^∞ √w φ(w − v) dw = ∫₀^∞ 2r² φ(r² − v) dr   (w = r², smooth in r)
    # φ(w − v) < 1e-42 outside |w − v| < 14: integrate r over [√max(v − 14, 0), √(v + 14)]
    r_lo, r_hi = np.sqrt(np.maximum(v - 14.0, 0.0)), np.sqrt(v + 14.0)
    t = np.linspace(0.0, 1.0, 1001)
    r = r_lo[:, None] + (r_hi - r_lo)[:, None] * t[None, :]
    f = 2 * r * r * _phi(r * r - v[:, None])
    e_sqrt = (np.trapezoid if hasattr(np, "trapezoid") else np.trapz)(f, r, axis=1)
    e_pos = v * torch.special.ndtr(torch.from_numpy(v)).numpy() + _phi(v)
    K = e_pos - 2 * np.sqrt(v) * e_sqrt + v
    return torch.from_numpy(v), torch.from_numpy(np.maximum(K, 0.0))


@lru_cache(maxsize=1)
def _h_table():
    """``h(λ) = E[(√P − √λ)²]``, ``P ~ Poisson(λ)``, on a grid of ``λ``."""
    lam = np.concatenate([np.linspace(0.0, 1.0, 201)[:-1], np.geomspace(1.0, _H_TABLE_MAX, 801)])
    kmax = int(_H_TABLE_MAX + 20 * math.sqrt(_H_TABLE_MAX) + 60)
    k = np.arange(kmax + 1, dtype=np.float64)
    log_lam = np.log(np.maximum(lam, 1e-300))[:, None]
    pmf = np.exp(k[None, :] * log_lam - lam[:, None] - torch.lgamma(torch.from_numpy(k + 1)).numpy()[None, :])
    e_sqrt = (pmf * np.sqrt(k)[None, :]).sum(axis=1)
    h = 2 * lam - 2 * np.sqrt(lam) * e_sqrt
    return torch.from_numpy(lam), torch.from_numpy(np.maximum(h, 0.0))


def _interp(x: torch.Tensor, grid: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    grid, values = grid.to(x.device), values.to(x.device)
    xc = x.clamp(float(grid[0]), float(grid[-1]))
    i = torch.searchsorted(grid, xc.contiguous()).clamp(1, len(grid) - 1)
    x0, x1 = grid[i - 1], grid[i]
    w = (xc - x0) / (x1 - x0)
    return values[i - 1] + w * (values[i] - values[i - 1])


def _K(v: torch.Tensor) -> torch.Tensor:
    """:math:`K(v)` (module docstring), float64."""
    v = v.to(torch.float64)
    grid, table = _k_table()
    big = v > _K_TABLE_MAX
    vb = torch.where(big, v, torch.ones_like(v))
    return torch.where(big, 1 / (4 * vb) + 15 / (64 * vb ** 3), _interp(v, grid, table))


def _h(lam: torch.Tensor) -> torch.Tensor:
    lam = lam.to(torch.float64)
    grid, table = _h_table()
    big = lam > _H_TABLE_MAX
    lb = torch.where(big, lam, torch.ones_like(lam))
    return torch.where(big, 0.25 + 7 / (64 * lb), _interp(lam, grid, table))


def _clipped_moments(I: torch.Tensor, s: torch.Tensor):
    """``E[y]`` and ``E[y²]`` of ``y = max(I + s·n, 0)`` (float64; ``s = 0`` gives ``I``, ``I²``)."""
    I = I.to(torch.float64)
    s = s.to(torch.float64)
    pos = s > 0
    ss = torch.where(pos, s, torch.ones_like(s))
    v = torch.where(pos, I / ss, torch.zeros_like(I))
    Phi = torch.special.ndtr(v)
    ph = torch.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)
    m1 = torch.where(pos, ss * (v * Phi + ph), I)
    m2 = torch.where(pos, ss * ss * ((v * v + 1) * Phi + v * ph), I * I)
    return m1, m2


def _clipped_amplitude_mse(I: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    I, s = I.to(torch.float64), s.to(torch.float64)
    pos = s > 0
    ss = torch.where(pos, s, torch.ones_like(s))
    return torch.where(pos, ss * _K(I / ss), torch.zeros_like(I))


# ---- the models ----------------------------------------------------------------------------------
class NoiseModel:
    """Base class: ``sample(intensity, generator=None) → noisy intensity`` plus its statistics
    (module docstring). ``name`` and :meth:`params` identify the model in a file or a config;
    :func:`make_noise_model` rebuilds it."""

    name = "none"

    def params(self) -> dict:
        """The constructor arguments (stored in a dataset's ``/parameters/noise``)."""
        return {}

    def sample(self, intensity, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, intensity) -> torch.Tensor:
        """``E[y]`` per sample (float64)."""
        raise NotImplementedError

    def variance(self, intensity) -> torch.Tensor:
        """``Var[y]`` per sample (float64, intensity units squared)."""
        raise NotImplementedError

    def amplitude_mse(self, intensity) -> torch.Tensor:
        """``E[(√y − √I)²]`` per sample (float64): the per-sample amplitude noise power."""
        raise NotImplementedError

    def expected_residual(self, intensity, *, dims: int = 3) -> torch.Tensor:
        """``E‖√y − √I‖²`` summed over the last ``dims`` axes (3: one object's ``(L, Mh, Mw)``
        CDPs): the squared amplitude residual an exact solver leaves at the true object, the
        target of a discrepancy-principle stop."""
        mse = self.amplitude_mse(intensity)
        if not (isinstance(dims, int) and 0 <= dims <= mse.ndim):
            raise NoiseModelError(f"dims must be an int in 0 … {mse.ndim} (the intensity's ndim), got {dims!r}")
        return mse.sum(dim=tuple(range(-dims, 0))) if dims else mse

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params() == other.params()

    __hash__ = None


class NoNoise(NoiseModel):
    """``y = I``."""

    name = "none"

    def sample(self, intensity, *, generator=None):
        return _check_intensity(intensity)

    def mean(self, intensity):
        return _check_intensity(intensity).to(torch.float64)

    def variance(self, intensity):
        return torch.zeros_like(_check_intensity(intensity), dtype=torch.float64)

    def amplitude_mse(self, intensity):
        return torch.zeros_like(_check_intensity(intensity), dtype=torch.float64)


class PrDeepNoise(NoiseModel):
    """prDeep's noise: ``y = b² = max(I + (α/255)·√I·n, 0)``, ``n ~ N(0, 1)`` (module
    docstring). ``alpha`` > 0 (the protocol uses 9, 27, 81). Differentiable in ``I`` (the
    reparametrised draw) except where the clip is active."""

    name = "prdeep"

    def __init__(self, alpha: float):
        self.alpha = _positive("alpha", alpha, "the prDeep protocol uses alpha = 9, 27 or 81 (noise std alpha/255 "
                                               "relative to |A x| for objects in [0, 1])")

    @property
    def sigma(self) -> float:
        """``σ = α/255``."""
        return self.alpha / 255.0

    def params(self) -> dict:
        return {"alpha": self.alpha}

    def std(self, intensity) -> torch.Tensor:
        """``s = σ·√I``: the std of ``y`` before the clip."""
        return self.sigma * _check_intensity(intensity).to(torch.float64).sqrt()

    def sample(self, intensity, *, generator=None):
        I = _check_intensity(intensity)
        n = torch.randn(I.shape, generator=generator, dtype=I.dtype, device=I.device)
        return (I + self.sigma * I.sqrt() * n).clamp_min(0.0)

    def mean(self, intensity):
        I = _check_intensity(intensity)
        return _clipped_moments(I, self.std(I))[0]

    def variance(self, intensity):
        I = _check_intensity(intensity)
        m1, m2 = _clipped_moments(I, self.std(I))
        return (m2 - m1 * m1).clamp_min(0.0)

    def amplitude_mse(self, intensity):
        I = _check_intensity(intensity)
        return _clipped_amplitude_mse(I, self.std(I))


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise on the intensity, clipped at zero: ``y = max(I + σ·n, 0)``
    (``sigma`` in intensity units, > 0)."""

    name = "gaussian"

    def __init__(self, sigma: float):
        self.sigma = _positive("sigma", sigma, "the std of the additive noise, in the intensity's units")

    def params(self) -> dict:
        return {"sigma": self.sigma}

    def sample(self, intensity, *, generator=None):
        I = _check_intensity(intensity)
        n = torch.randn(I.shape, generator=generator, dtype=I.dtype, device=I.device)
        return (I + self.sigma * n).clamp_min(0.0)

    def _s(self, I):
        return torch.full_like(I, self.sigma, dtype=torch.float64)

    def mean(self, intensity):
        I = _check_intensity(intensity)
        return _clipped_moments(I, self._s(I))[0]

    def variance(self, intensity):
        I = _check_intensity(intensity)
        m1, m2 = _clipped_moments(I, self._s(I))
        return (m2 - m1 * m1).clamp_min(0.0)

    def amplitude_mse(self, intensity):
        I = _check_intensity(intensity)
        return _clipped_amplitude_mse(I, self._s(I))


class PoissonNoise(NoiseModel):
    """Shot noise: ``y = Poisson(κ·I)/κ`` with ``κ = photons_per_unit`` photons per unit
    intensity (> 0). Not differentiable (an exact draw)."""

    name = "poisson"

    def __init__(self, photons_per_unit: float):
        self.photons_per_unit = _positive("photons_per_unit", photons_per_unit,
                                          "photons per unit intensity; PoissonNoise.matching_prdeep(alpha) gives "
                                          "(255/alpha)²")

    @classmethod
    def matching_prdeep(cls, alpha: float) -> "PoissonNoise":
        """``κ = (255/α)²``: ``Var[y] = I/κ`` equals prDeep's ``(α/255)²·I``."""
        a = _positive("alpha", alpha, "the prDeep noise level (9, 27 or 81)")
        return cls((255.0 / a) ** 2)

    def params(self) -> dict:
        return {"photons_per_unit": self.photons_per_unit}

    def sample(self, intensity, *, generator=None):
        I = _check_intensity(intensity)
        k = self.photons_per_unit
        with torch.no_grad():
            return torch.poisson(I.detach() * k, generator=generator) / k

    def mean(self, intensity):
        return _check_intensity(intensity).to(torch.float64)

    def variance(self, intensity):
        return _check_intensity(intensity).to(torch.float64) / self.photons_per_unit

    def amplitude_mse(self, intensity):
        I = _check_intensity(intensity).to(torch.float64)
        return _h(I * self.photons_per_unit) / self.photons_per_unit


_MODELS = {"none": (NoNoise, ()), "prdeep": (PrDeepNoise, ("alpha",)), "poisson": (PoissonNoise, ("photons_per_unit",)),
           "gaussian": (GaussianNoise, ("sigma",))}


def make_noise_model(name: str, **params) -> NoiseModel:
    """A noise model by name (:data:`NOISE_MODEL_NAMES`) and its parameters (``alpha``,
    ``photons_per_unit``, ``sigma``); parameters set to ``None`` are ignored, and
    ``poisson`` without ``photons_per_unit`` but with ``alpha`` takes ``(255/α)²``."""
    if name not in _MODELS:
        raise NoiseModelError(f"noise model must be one of {NOISE_MODEL_NAMES}, got {name!r}")
    cls, keys = _MODELS[name]
    given = {k: v for k, v in params.items() if v is not None}
    if name == "poisson" and "photons_per_unit" not in given and "alpha" in given:
        return PoissonNoise.matching_prdeep(given["alpha"])
    missing = [k for k in keys if k not in given]
    if missing:
        raise NoiseModelError(f"noise model {name!r} needs {', '.join(missing)}"
                              + (" (or alpha, for (255/alpha)² photons per unit)" if name == "poisson" else ""))
    return cls(**{k: given[k] for k in keys})
