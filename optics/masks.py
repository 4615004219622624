"""Coded-diffraction modulation masks: random phase, binary phase, octanary; mask modules.

A coded diffraction pattern (CDP) measures ``y_l = |F(d_l ⊙ x)|²`` for ``l = 1 … L`` known
modulations ``d_l`` (Candès, Li & Soltanolkotabi, "Phase retrieval from coded diffraction
patterns", Appl. Comput. Harmon. Anal. 39, 277–299 (2015)). This module draws the classic
random modulations and wraps them as ``nn.Module``\\ s:

* :func:`random_phase` — ``θ ~ U[0, 2π)`` (or uniform over ``levels`` equispaced phases),
  the modulation being ``e^{iθ}``;
* :func:`binary_phase` — ``θ ∈ {0, π}`` equiprobable (``e^{iθ} = ±1``);
* :func:`octanary` — the complex (not phase-only) octanary modulation of Candès et al.;
* :class:`PhaseMask` — learnable (or fixed) phases ``θ`` of shape ``(L, H, W)``,
  ``forward() = e^{iθ}``;
* :class:`ComplexMask` — a fixed complex modulation (e.g. octanary) of shape ``(L, H, W)``.

Randomness: every generator function takes ``seed=`` (an int; a private
:class:`torch.Generator` is seeded with it) or ``generator=`` (a :class:`torch.Generator`
that is advanced), never both; with neither, torch's global generator is used. The same seed
gives the same mask on the same device.

Shapes: ``shape`` is a sequence of positive ints used as-is (e.g. ``(L, H, W)``), or an int
``n`` meaning a square ``(n, n)`` mask.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import _validate
from .errors import OpticsError, ShapeError

__all__ = [
    "make_generator", "random_phase", "binary_phase", "octanary", "PhaseMask", "ComplexMask",
]

ShapeLike = Union[int, Sequence[int], torch.Size]

#: mask kinds a configuration can ask for (random_phase, binary_phase, octanary, or phases from a file)
MASK_KINDS = ("random_phase", "binary", "octanary", "file")

TWO_PI = 2.0 * math.pi


def make_generator(seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                   *, device=None) -> Optional[torch.Generator]:
    """Resolve the ``seed=`` / ``generator=`` pair used throughout :mod:`optics`.

    Returns ``generator`` if given, a fresh generator seeded with ``seed`` (on ``device``) if
    given, else ``None`` (torch's global generator). Passing both is an error because it is
    ambiguous which one should decide the draw.
    """
    if seed is not None and generator is not None:
        raise OpticsError(
            f"got both seed={seed!r} and a generator; pass only one (seed= for a reproducible "
            f"fresh draw, generator= to continue an existing random stream)"
        )
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise OpticsError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
            raise OpticsError(f"seed must be a non-negative int, got {seed!r}; e.g. seed=0")
        g = torch.Generator(device=device if device is not None else "cpu")
        g.manual_seed(int(seed))
        return g
    return None


def _shape(shape: ShapeLike) -> Tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape), int(shape))
    try:
        out = tuple(int(s) for s in shape)
        ok = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape)
    except TypeError as exc:
        raise ShapeError(f"shape must be an int or a sequence of ints, got {shape!r}") from exc
    if not ok or len(out) == 0 or min(out) < 1:
        raise ShapeError(
            f"shape must be a non-empty sequence of positive ints such as (L, H, W), got {shape!r}"
        )
    return out


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise OpticsError(f"dtype must be torch.float32 or torch.float64 for phases, got {dtype}")
    return dtype


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.complex64, torch.complex128):
        raise OpticsError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
    return dtype


def _gen_device(generator: Optional[torch.Generator], device):
    if device is not None:
        return torch.device(device)
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def random_phase(shape: ShapeLike, *, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None, levels: Optional[int] = None,
                 dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Random phases ``θ`` in radians, uniform on ``[0, 2π)``.

    With ``levels = K`` (an int ``>= 1``) ``θ`` is uniform over the ``K`` equispaced phases
    ``θ_k = 2πk/K``, ``k = 0 … K-1`` (e.g. a ``K``-level SLM or DOE). Either way
    ``E[e^{iθ}] = 0`` (for ``K >= 2``), the property that makes CDP masks incoherent with the
    Fourier basis (Candès et al. 2015).

    The draw is made in float64 and cast to ``dtype``; values that round up to 2π in float32
    are wrapped to 0 so that ``0 <= θ < 2π`` holds in the returned dtype.
    """
    shp = _shape(shape)
    dtype = _real_dtype(dtype)
    dev = _gen_device(generator, device)
    g = make_generator(seed, generator, device=dev)
    if levels is None:
        u = torch.rand(shp, generator=g, dtype=torch.float64, device=dev)
        theta = (TWO_PI * u).to(dtype)
        top = torch.tensor(TWO_PI, dtype=torch.float64).to(dtype).item()
        return torch.where(theta >= top, torch.zeros_like(theta), theta)
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or int(levels) < 1:
        raise OpticsError(f"levels must be a positive int (number of equispaced phases), got {levels!r}")
    k = torch.randint(0, int(levels), shp, generator=g, device=dev)
    return (k.to(torch.float64) * (TWO_PI / int(levels))).to(dtype)


def binary_phase(shape: ShapeLike, *, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None, dtype: torch.dtype = torch.float32,
                 device=None) -> torch.Tensor:
    """Random binary phases ``θ ∈ {0, π}``, each with probability 1/2 (modulation ``±1``)."""
    shp = _shape(shape)
    dtype = _real_dtype(dtype)
    dev = _gen_device(generator, device)
    g = make_generator(seed, generator, device=dev)
    k = torch.randint(0, 2, shp, generator=g, device=dev)
    return k.to(dtype) * math.pi


def octanary(shape: ShapeLike, *, generator: Optional[torch.Generator] = None,
             seed: Optional[int] = None, dtype: torch.dtype = torch.complex64,
             device=None) -> torch.Tensor:
    """Octanary CDP modulation ``d = b1 · b2`` of Candès, Li & Soltanolkotabi (2015), §1.3.

    * ``b1`` uniform on ``{1, -1, i, -i}``;
    * ``b2 = √2/2`` with probability 4/5 and ``√3`` with probability 1/5, independent of ``b1``.

    Hence ``E[d] = 0``, ``E[d²] = 0`` and ``E|d|² = (4/5)(1/2) + (1/5)(3) = 1``; ``E|d|⁴ = 2``
    is what their recovery guarantee uses.

    **Not phase-only**: ``|d|`` takes two values (``√2/2`` and ``√3``), so a pure phase SLM
    cannot display it; use it as a fixed :class:`ComplexMask` (amplitude + phase modulator,
    or a mathematical benchmark).
    """
    shp = _shape(shape)
    dtype = _complex_dtype(dtype)
    dev = _gen_device(generator, device)
    g = make_generator(seed, generator, device=dev)
    k = torch.randint(0, 4, shp, generator=g, device=dev)
    u = torch.rand(shp, generator=g, dtype=torch.float64, device=dev)
    quarter = torch.tensor([1.0 + 0.0j, 0.0 + 1.0j, -1.0 + 0.0j, 0.0 - 1.0j],
                           dtype=torch.complex128, device=dev)
    b1 = quarter[k]
    b2 = torch.where(u < 0.2, torch.full_like(u, math.sqrt(3.0)),
                     torch.full_like(u, math.sqrt(2.0) / 2.0))
    return (b1 * b2).to(dtype)


def _to_tensor(arr, name: str) -> torch.Tensor:
    if isinstance(arr, torch.Tensor):
        return arr
    if isinstance(arr, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(arr))
    try:
        return torch.as_tensor(arr)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ShapeError(f"{name} must be a numpy array or torch tensor, got {type(arr).__name__}") from exc


def _as_lhw(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or min(t.shape) < 1:
        raise ShapeError(
            f"{name} must have shape (L, H, W) or (H, W) with non-zero sizes, got {tuple(t.shape)}; "
            f"stack several masks along a leading axis"
        )
    return t


class PhaseMask(nn.Module):
    """Phase-only modulation ``M_l = e^{iθ_l}`` with phases ``θ`` of shape ``(L, H, W)``.

    Parameters
    ----------
    theta
        Real phases in radians, ``(L, H, W)`` or ``(H, W)`` (promoted to ``(1, H, W)``).
        float32 and float64 are kept; other real dtypes are cast to float32.
    learnable
        ``True`` stores ``theta`` as an :class:`nn.Parameter` (optimised by the mask design
        loop); ``False`` as a buffer (moves with ``.to()`` and is saved in ``state_dict``).

    Notes
    -----
    ``forward()`` returns ``e^{iθ} = cos θ + i sin θ``, complex64 for float32 ``θ`` and
    complex128 for float64 ``θ``, differentiable with respect to ``θ``
    (``∂M/∂θ = i M``).
    """

    def __init__(self, theta: torch.Tensor, *, learnable: bool = True):
        super().__init__()
        theta = _to_tensor(theta, "theta")
        if theta.is_complex():
            raise OpticsError(
                f"theta must be real phases in radians, got dtype {theta.dtype}; for a complex "
                f"modulation use ComplexMask, or pass torch.angle(mask) for its phase"
            )
        if not theta.is_floating_point():
            theta = theta.to(torch.float32)
        elif theta.dtype not in (torch.float32, torch.float64):
            theta = theta.to(torch.float32)
        _validate.finite_tensor("theta", theta)
        theta = _as_lhw(theta.detach().clone(), "theta")
        self.learnable = bool(learnable)
        if self.learnable:
            self.theta = nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    @property
    def n_masks(self) -> int:
        """Number of masks ``L``."""
        return int(self.theta.shape[0])

    @property
    def shape(self) -> Tuple[int, int]:
        """Spatial shape ``(H, W)`` of each mask."""
        return (int(self.theta.shape[-2]), int(self.theta.shape[-1]))

    def phase(self) -> torch.Tensor:
        """The phases ``θ`` (rad), ``(L, H, W)``: what an SLM displays."""
        return self.theta

    def forward(self) -> torch.Tensor:
        th = self.theta
        return torch.complex(torch.cos(th), torch.sin(th))

    @classmethod
    def random(cls, n_masks: int, shape: ShapeLike, *, seed: Optional[int] = None,
               generator: Optional[torch.Generator] = None, learnable: bool = True,
               dtype: torch.dtype = torch.float32, levels: Optional[int] = None,
               device=None) -> "PhaseMask":
        """``n_masks`` masks of spatial ``shape`` with phases from :func:`random_phase`."""
        if isinstance(n_masks, bool) or not isinstance(n_masks, (int, np.integer)) or n_masks < 1:
            raise ShapeError(f"n_masks must be a positive int, got {n_masks!r}")
        hw = _shape(shape)
        if len(hw) != 2:
            raise ShapeError(f"shape must be (H, W) or an int, got {shape!r}")
        theta = random_phase((int(n_masks),) + hw, generator=generator, seed=seed,
                             levels=levels, dtype=dtype, device=device)
        return cls(theta, learnable=learnable)

    @classmethod
    def from_array(cls, arr, *, learnable: bool = True) -> "PhaseMask":
        """Build from phases in radians given as a numpy array or torch tensor."""
        return cls(_to_tensor(arr, "theta"), learnable=learnable)

    def extra_repr(self) -> str:
        return f"n_masks={self.n_masks}, shape={self.shape}, learnable={self.learnable}"


class ComplexMask(nn.Module):
    """A fixed complex modulation ``M`` of shape ``(L, H, W)`` (stored as a buffer).

    ``values`` may be ``(L, H, W)`` or ``(H, W)`` (promoted to ``(1, H, W)``); real input is
    cast to complex (complex128 for float64, complex64 otherwise). ``forward()`` returns the
    stored tensor.
    """

    def __init__(self, values: torch.Tensor):
        super().__init__()
        values = _to_tensor(values, "values")
        if not values.is_complex():
            if not values.is_floating_point():
                values = values.to(torch.float32)
            values = _validate.as_complex(values)
        _validate.finite_tensor("values", values)
        values = _as_lhw(values.detach().clone(), "values")
        self.register_buffer("values", values)

    @property
    def n_masks(self) -> int:
        return int(self.values.shape[0])

    @property
    def shape(self) -> Tuple[int, int]:
        return (int(self.values.shape[-2]), int(self.values.shape[-1]))

    def forward(self) -> torch.Tensor:
        return self.values

    @classmethod
    def from_array(cls, arr) -> "ComplexMask":
        """Build from a numpy array or torch tensor (complex, or real amplitudes)."""
        return cls(_to_tensor(arr, "values"))

    @classmethod
    def octanary(cls, n_masks: int, shape: ShapeLike, *, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 dtype: torch.dtype = torch.complex64, device=None) -> "ComplexMask":
        """``n_masks`` octanary masks (:func:`octanary`) of spatial ``shape``."""
        if isinstance(n_masks, bool) or not isinstance(n_masks, (int, np.integer)) or n_masks < 1:
            raise ShapeError(f"n_masks must be a positive int, got {n_masks!r}")
        hw = _shape(shape)
        if len(hw) != 2:
            raise ShapeError(f"shape must be (H, W) or an int, got {shape!r}")
        return cls(octanary((int(n_masks),) + hw, generator=generator, seed=seed, dtype=dtype,
                            device=device))

    def extra_repr(self) -> str:
        return f"n_masks={self.n_masks}, shape={self.shape}, dtype={self.values.dtype}"
