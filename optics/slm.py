"""Phase-only spatial light modulator (SLM) model: LUT, quantisation, pixel geometry, crosstalk.

An LCoS SLM shows, in each of its pixels (pitch ``pixel_pitch_m``), one of ``2^b`` gray
levels ``g``; a look-up table (:class:`PhaseLUT`) maps ``g`` to a phase retardation ``φ(g)``.
:class:`SLM` turns designed phases ``θ`` (one per SLM pixel) into the complex modulation seen
on a finer simulation grid (pitch ``sim_pitch_m = pixel_pitch_m / upsample``):

1. **quantisation** — ``θ`` is replaced by the nearest LUT level (:meth:`PhaseLUT.phase_to_gray`),
   with a training-time surrogate (``quantization=`` ``"ste"``, ``"soft"``, ``"exact"``,
   ``"none"``; see :class:`SLM`);
2. **upsampling** — each SLM pixel becomes ``upsample × upsample`` simulation samples
   (nearest neighbour, :func:`torch.repeat_interleave`);
3. **fill factor** — only the central active square of each pixel carries the pixel phase; the
   inter-pixel gap gets ``dead_phase_rad``. ``fill_factor`` is the **area** fraction (the
   datasheet number, e.g. 0.93 for a 93 % fill factor); the active square has side
   ``a = round(sqrt(fill_factor)·upsample)`` samples, so the effective fill factor is
   ``a²/upsample²`` (:attr:`SLM.effective_fill_factor`);
4. **crosstalk** — the fringing field of neighbouring electrodes blurs the liquid-crystal
   director, modelled as a Gaussian smoothing of the *phase* profile with standard deviation
   ``crosstalk_sigma_m`` (Persson, Engström & Goksör, Opt. Express 20, 22334 (2012);
   Moser et al., Opt. Express 27, 25046 (2019)). Because the smoothing acts on the phase, a
   ``2π → 0`` wrap between neighbouring pixels is smeared into a ramp through all phases —
   the physical "flyback" region that costs diffraction efficiency in blazed gratings;
5. the modulation ``e^{iφ}`` on the simulation grid.

Differentiability: the whole chain is differentiable in ``θ`` for ``quantization="soft"`` and
``"none"`` (``torch.autograd.gradcheck`` passes in float64/complex128); ``"ste"`` passes the
gradient straight through the rounding (Bengio, Léonard & Courville, arXiv:1308.3432 (2013)).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _validate
from .errors import LUTError, OpticsError, PitchRatioError, ShapeError, UnitsError

__all__ = [
    "PhaseLUT", "SLM", "PitchRatioError", "integer_pitch_ratio", "wrap_phase",
    "gaussian_kernel1d", "gaussian_blur", "QUANTIZATION_MODES",
]

log = logging.getLogger(__name__)

TWO_PI = 2.0 * math.pi
QUANTIZATION_MODES = ("ste", "soft", "exact", "none")


def integer_pitch_ratio(coarse_name: str, coarse_m: float, fine_name: str, fine_m: float,
                        *, rel_tol: float = 1e-6, fix: str = "") -> int:
    """Return ``n = coarse/fine`` if it is a positive integer within ``rel_tol`` relative.

    Raises :class:`PitchRatioError` naming both pitches, the ratio and the fix otherwise.
    """
    c = _validate.pitch(coarse_name, coarse_m)
    f = _validate.pitch(fine_name, fine_m)
    ratio = c / f
    n = int(round(ratio))
    if n < 1 or abs(ratio - n) > rel_tol * ratio:
        extra = f"; {fix}" if fix else ""
        raise PitchRatioError(
            f"{coarse_name} = {c!r} m is not an integer multiple of {fine_name} = {f!r} m "
            f"(ratio {ratio:.9g}, allowed deviation {rel_tol:g} relative){extra}"
        )
    return n


def wrap_phase(x: torch.Tensor) -> torch.Tensor:
    """Wrap phases to ``[-π, π)``: ``x − 2π·floor((x + π)/2π)`` (derivative 1 almost everywhere)."""
    return x - TWO_PI * torch.floor((x + math.pi) / TWO_PI)


# ----------------------------------------------------------------------------------------------
# LUT
# ----------------------------------------------------------------------------------------------
def _check_bit_depth(bit_depth) -> int:
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, (int, np.integer)) or not 1 <= int(bit_depth) <= 16:
        raise LUTError(f"bit_depth must be an int in 1 … 16 (SLMs are 8–12 bit), got {bit_depth!r}")
    return int(bit_depth)


class PhaseLUT(nn.Module):
    """Gray level → phase look-up table of an SLM: ``φ(g)`` in radians for ``g = 0 … 2^b − 1``.

    ``PhaseLUT(levels_rad)`` takes the phase of every gray level (length ``2^b``, strictly
    increasing, finite). Build one with :meth:`linear` or :meth:`tabulated`.

    Wrapping: the LUT is treated as *circular* (:attr:`wraps`) when its levels, plus one
    average step, reach around the circle: ``span·N/(N−1) >= 2π(1 − 1e-6)`` with
    ``span = φ_max − φ_min`` and ``N = 2^b``. Then :meth:`phase_to_gray` picks the level
    nearest in the wrap-aware distance ``|wrap(θ − φ_k)|`` (a phase of ``2π − ε`` maps to
    gray 0 of a ``[0, 2π)`` LUT); otherwise it picks the plainly nearest level
    ``|θ − φ_k|`` (out-of-range phases saturate at the end levels). ``wrap=`` overrides.

    The table is a float64 buffer (``levels_rad``; it moves with ``.to()``), or an
    ``nn.Parameter`` with ``learnable=True`` so a calibration can fit the phase of every gray
    level by autograd: the *choice* of gray level is discrete, the phase it displays
    (:meth:`quantize`, :meth:`gray_to_phase`) carries the gradient to the table.
    """

    def __init__(self, levels_rad, *, learnable: bool = False):
        super().__init__()
        lv = torch.as_tensor(np.asarray(levels_rad, dtype=np.float64)
                             if not isinstance(levels_rad, torch.Tensor) else levels_rad.detach())
        lv = lv.to(device="cpu", dtype=torch.float64).reshape(-1)
        n = int(lv.numel())
        if n < 2 or (n & (n - 1)) != 0:
            raise LUTError(
                f"a LUT needs 2^b phase levels (one per gray level), got {n}; use "
                f"PhaseLUT.tabulated(gray, phase_rad) to interpolate a measured table"
            )
        if not bool(torch.isfinite(lv).all()):
            bad = int(torch.nonzero(~torch.isfinite(lv))[0])
            raise LUTError(f"LUT phase at gray level {bad} is {float(lv[bad])!r}; every level must be finite")
        _check_monotone(torch.arange(n), lv)
        if learnable:
            self.levels_rad = nn.Parameter(lv.clone())
        else:
            self.register_buffer("levels_rad", lv.clone())
        self.bit_depth = int(round(math.log2(n)))
        span = float(lv[-1] - lv[0])
        self._wraps = span * n / (n - 1) >= TWO_PI * (1.0 - 1e-6)

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def linear(cls, bit_depth: int, max_phase_rad: float = TWO_PI) -> "PhaseLUT":
        """Linear LUT with ``N = 2^b`` levels.

        ``φ(g) = g·2π/N`` when ``max_phase_rad == 2π`` (0 and 2π are the same phase, so the top
        level is ``2π(N−1)/N``, the usual calibrated 2π SLM); otherwise
        ``φ(g) = g·max_phase_rad/(N−1)`` (the top gray level reaches ``max_phase_rad``).
        """
        b = _check_bit_depth(bit_depth)
        mx = _validate.positive("max_phase_rad", max_phase_rad, unit="rad")
        n = 2 ** b
        g = torch.arange(n, dtype=torch.float64)
        if math.isclose(mx, TWO_PI, rel_tol=1e-12, abs_tol=0.0):
            return cls(g * (TWO_PI / n))
        return cls(g * (mx / (n - 1)))

    @classmethod
    def tabulated(cls, gray, phase_rad, *, bit_depth: Optional[int] = None) -> "PhaseLUT":
        """LUT from measured ``(gray, phase_rad)`` pairs, linearly interpolated.

        ``gray`` are distinct integers in ``0 … 2^b − 1`` and must include both ends ``0`` and
        ``2^b − 1``; the phase of every gray level in between is interpolated linearly between
        the neighbouring given points (a full table, one point per level, is used as-is).
        ``bit_depth`` defaults to the smallest ``b`` with ``max(gray) <= 2^b − 1``.
        Pairs are sorted by gray level; ``phase_rad`` must then be strictly increasing, else
        :class:`~optics.errors.LUTError` names the first offending gray level.
        """
        g = np.asarray(gray)
        p = np.asarray(phase_rad, dtype=np.float64)
        if g.ndim != 1 or p.ndim != 1 or g.shape != p.shape or g.size < 2:
            raise LUTError(
                f"gray and phase_rad must be 1-D arrays of equal length >= 2, got shapes "
                f"{g.shape} and {p.shape}"
            )
        if not np.all(np.isfinite(p)):
            i = int(np.flatnonzero(~np.isfinite(p))[0])
            raise LUTError(f"phase_rad at gray level {g[i].item()!r} is {float(p[i])!r}; every phase must be finite")
        gf = g.astype(np.float64)
        if not np.all(np.isfinite(gf)) or np.any(gf != np.round(gf)) or np.any(gf < 0):
            raise LUTError(f"gray levels must be non-negative integers, got {g.tolist()!r}")
        gi = gf.astype(np.int64)
        order = np.argsort(gi, kind="stable")
        gi, p = gi[order], p[order]
        dup = np.flatnonzero(np.diff(gi) == 0)
        if dup.size:
            raise LUTError(f"gray level {int(gi[dup[0]])} appears twice; give one phase per gray level")
        if bit_depth is None:
            bit_depth = max(1, int(gi[-1]).bit_length())
        b = _check_bit_depth(bit_depth)
        top = 2 ** b - 1
        if gi[0] != 0 or gi[-1] != top:
            raise LUTError(
                f"tabulated LUT covers gray levels {int(gi[0])} … {int(gi[-1])} but a {b}-bit SLM "
                f"has 0 … {top}; measure (or extrapolate) both end levels, or set bit_depth"
            )
        _check_monotone(torch.from_numpy(gi), torch.from_numpy(p))
        levels = np.interp(np.arange(top + 1, dtype=np.float64), gi.astype(np.float64), p)
        return cls(torch.from_numpy(levels))

    # -- properties ---------------------------------------------------------------------------
    @property
    def _levels(self) -> torch.Tensor:
        """The table without gradient (searches, wrapping, messages)."""
        return self.levels_rad.detach()

    @property
    def n_levels(self) -> int:
        return int(self._levels.numel())

    @property
    def wraps(self) -> bool:
        """Whether the LUT is treated as circular (spans about 2π or more)."""
        return self._wraps

    @property
    def min_step_rad(self) -> float:
        """Smallest phase gap between neighbouring levels (including the wrap gap if circular)."""
        lv = self._levels
        gaps = torch.diff(lv)
        if self._wraps:
            m = self._circular_sorted()[0]
            gaps = torch.diff(torch.cat([m, m[:1] + TWO_PI]))
        return float(gaps.min())

    # -- maps ---------------------------------------------------------------------------------
    def gray_to_phase(self, g, *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Phase (rad) of integer gray levels ``g`` (any shape); float64 unless ``dtype``."""
        g = torch.as_tensor(g)
        if g.is_floating_point() or g.is_complex():
            if not bool((g == torch.round(g.real if g.is_complex() else g)).all()):
                raise LUTError("gray levels must be integers; round them or use phase_to_gray")
            g = g.real.to(torch.int64) if g.is_complex() else g.to(torch.int64)
        g = g.to(torch.int64)
        if g.numel() and (int(g.min()) < 0 or int(g.max()) >= self.n_levels):
            raise LUTError(
                f"gray levels must lie in 0 … {self.n_levels - 1} for a {self.bit_depth}-bit LUT, "
                f"got {int(g.min())} … {int(g.max())}; clamp them or use a LUT of higher bit depth"
            )
        lv = self.levels_rad
        out = lv[g.to(lv.device)]
        return out.to(dtype) if dtype is not None else out

    def _circular_sorted(self):
        lv = self._levels
        base = lv[0]
        m = base + torch.remainder(lv - base, TWO_PI)
        order = torch.argsort(m, stable=True)
        return m[order], order

    def _search_table(self, wrap: bool, device):
        """Sorted level table (with wrap sentinels when circular) and matching gray indices."""
        if wrap:
            ms, order = self._circular_sorted()
            ext = torch.cat([ms[-1:] - TWO_PI, ms, ms[:1] + TWO_PI])
            idx = torch.cat([order[-1:], order, order[:1]])
        else:
            ext = self._levels
            idx = torch.arange(self.n_levels)
        return ext.to(device), idx.to(device)

    def forward(self, gray) -> torch.Tensor:
        """:meth:`gray_to_phase`."""
        return self.gray_to_phase(gray)

    def reduce(self, theta: torch.Tensor) -> torch.Tensor:
        """``θ`` moved by a multiple of 2π into ``[φ_0, φ_0 + 2π)`` (φ_0 the gray-0 phase)."""
        base = float(self._levels[0])
        return base + torch.remainder(theta - base, TWO_PI)

    def phase_to_gray(self, theta, *, wrap: Optional[bool] = None) -> torch.Tensor:
        """Nearest gray level (int64, shape of ``theta``) to phases ``θ`` in radians.

        ``wrap=None`` uses :attr:`wraps`: wrap-aware distance ``|wrap(θ − φ_k)|`` for a
        circular LUT, plain ``|θ − φ_k|`` otherwise. Ties go to the lower neighbour in phase.
        Uses a binary search: ``O(log N)`` time and ``O(1)`` memory per pixel, not ``O(N)``.
        """
        theta = torch.as_tensor(theta)
        if theta.is_complex():
            raise LUTError("phase_to_gray expects real phases in radians, got a complex tensor")
        _validate.finite_tensor("theta", theta)
        wrap = self._wraps if wrap is None else bool(wrap)
        t = theta.detach().to(torch.float64)
        if wrap:
            t = self.reduce(t)
        ext, idx = self._search_table(wrap, t.device)
        pos = torch.searchsorted(ext, t.contiguous())
        hi = pos.clamp(max=ext.numel() - 1)
        lo = (pos - 1).clamp(min=0)
        pick = torch.where((t - ext[lo]).abs() <= (ext[hi] - t).abs(), lo, hi)
        return idx[pick]

    def quantize(self, theta: torch.Tensor, *, wrap: Optional[bool] = None) -> torch.Tensor:
        """``φ(phase_to_gray(θ))``: the displayed LUT level, in ``θ``'s dtype (no gradient to
        ``θ``; a learnable table receives the gradient of the level it displays)."""
        theta = torch.as_tensor(theta)
        g = self.phase_to_gray(theta, wrap=wrap)
        dt = theta.dtype if theta.is_floating_point() else torch.float32
        return self.levels_rad[g.to(self.levels_rad.device)].to(dt)

    def __repr__(self) -> str:
        lv = self._levels
        return (f"PhaseLUT(bit_depth={self.bit_depth}, phase {float(lv[0]):.4g} … {float(lv[-1]):.4g} rad, "
                f"wraps={self._wraps})")


def _check_monotone(gray: torch.Tensor, phase: torch.Tensor) -> None:
    d = torch.diff(phase)
    bad = torch.nonzero(d <= 0)
    if bad.numel():
        i = int(bad[0]) + 1
        raise LUTError(
            f"LUT is not strictly increasing: phase(gray {int(gray[i])}) = {float(phase[i]):.6g} rad "
            f"<= phase(gray {int(gray[i - 1])}) = {float(phase[i - 1]):.6g} rad; unwrap the measured "
            f"phase (numpy.unwrap), drop the gray levels past the phase maximum, or re-measure"
        )


# ----------------------------------------------------------------------------------------------
# crosstalk blur
# ----------------------------------------------------------------------------------------------
def gaussian_kernel1d(sigma_samples: float, *, truncate: float = 4.0,
                      dtype=torch.float64, device=None) -> torch.Tensor:
    """Sampled, normalised Gaussian ``exp(−j²/2σ²)/Σ``, ``|j| <= ceil(truncate·σ)``.

    Normalising to unit sum preserves the mean of a constant region exactly.
    """
    s_val = float(sigma_samples.detach()) if isinstance(sigma_samples, torch.Tensor) else float(sigma_samples)
    r = max(1, int(math.ceil(truncate * s_val)))
    j = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    sig = sigma_samples.to(torch.float64) if isinstance(sigma_samples, torch.Tensor) else sigma_samples
    k = torch.exp(-0.5 * (j / sig) ** 2)
    return (k / k.sum()).to(dtype)


def _blur_matrix(n: int, k: torch.Tensor, r: int) -> torch.Tensor:
    """``T`` with ``(T v)_i = Σ_j k_j v[clamp(i + j − r, 0, n − 1)]``: the 1-D convolution with
    replicate padding as an ``n × n`` matrix (differentiable in ``k``)."""
    i = torch.arange(n, device=k.device)[:, None]
    j = torch.arange(k.numel(), device=k.device)[None, :]
    cols = (i + j - r).clamp(0, n - 1)
    T = torch.zeros(n, n, dtype=k.dtype, device=k.device)
    return T.scatter_add(1, cols, k.expand(n, -1))


def gaussian_blur(x: torch.Tensor, sigma_samples: float, *, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of the last two axes of a real tensor, replicate padding.
    ``sigma_samples`` may be a 0-d tensor (its gradient flows through the kernel)."""
    s_val = float(sigma_samples.detach()) if isinstance(sigma_samples, torch.Tensor) else float(sigma_samples)
    if s_val <= 0:
        return x
    k = gaussian_kernel1d(sigma_samples, truncate=truncate, dtype=x.dtype, device=x.device)
    r = (k.numel() - 1) // 2
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    if x.dtype == torch.float64 and max(h, w) <= 2048:
        # float64 convolution takes torch's slow reference path on the CPU; the same operator as
        # banded matrices (replicate padding folded into the edge columns) runs through BLAS
        return _blur_matrix(h, k, r) @ x @ _blur_matrix(w, k, r).transpose(0, 1)
    y = x.reshape(-1, 1, h, w)
    y = F.pad(y, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(lead + (h, w))


# ----------------------------------------------------------------------------------------------
# SLM
# ----------------------------------------------------------------------------------------------
class SLM(nn.Module):
    """Phase-only SLM: phases per SLM pixel → complex modulation on the simulation grid.

    Parameters
    ----------
    pixel_pitch_m, sim_pitch_m
        SLM pixel pitch and simulation-grid pitch (m). ``upsample = pixel_pitch_m/sim_pitch_m``
        must be an integer (within 1e-6 relative), else :class:`PitchRatioError`. The CDP
        system owns the simulation pitch: leave ``sim_pitch_m=None`` and give ``upsample``
        (default 1) and :class:`optics.cdp.CDPSystem` binds the pitch (and raises if a given
        ``sim_pitch_m`` disagrees with its own).
    upsample
        Simulation samples per SLM pixel (an int ``>= 1``), used when ``sim_pitch_m`` is None.
    fill_factor
        **Area** fill factor in ``(0, 1]``: the active square of each pixel has side
        ``round(sqrt(fill_factor)·upsample)`` samples, centred (offset ``(upsample − a)//2``);
        the rest (the inter-pixel gap) has phase ``dead_phase_rad``.
    dead_phase_rad
        Phase of the inter-pixel gap (rad), default 0.
    crosstalk_sigma_m
        Std of the Gaussian fringing-field blur of the phase profile (m), ``>= 0``; converted to
        simulation samples as ``σ/sim_pitch_m``; the kernel is truncated at 4σ and padded by
        replication at the borders. Smoothing the phase across a ``2π → 0`` wrap produces the
        physical flyback region.
    lut
        :class:`PhaseLUT`; default ``PhaseLUT.linear(bit_depth)``.
    quantization
        * ``"ste"`` — exact quantisation in the forward pass; in training mode the gradient is
          the identity (straight-through estimator); in eval mode plain exact quantisation;
        * ``"soft"`` — in training mode the smooth surrogate (for a circular LUT, ``θ`` is first
          reduced to ``θ_r ∈ [φ_0, φ_0 + 2π)``)

          ``q(θ) = θ_r − Σ_k w_k·wrap(θ_r − φ_k)``,  ``w_k = softmax_k(−wrap(θ_r − φ_k)²/(2T²))``

          with ``T = soft_temperature_rad`` (``wrap`` → plain difference for a non-circular LUT,
          where ``q = Σ w_k φ_k``). ``q → φ_nearest`` as ``T → 0``; only the levels within
          ``10T`` of ``θ`` are summed (the rest carry weight ``< e^{-50}``). Near the top of a
          circular LUT ``q`` may come out as ``φ_0 + 2π`` where exact gives ``φ_0`` (same
          modulation). Exact in eval mode;
        * ``"exact"`` — nearest LUT level always (no gradient through ``θ``);
        * ``"none"`` — no quantisation, ``θ`` is displayed as given (not even wrapped).
    bit_depth
        Used only for the default LUT.
    soft_temperature_rad
        ``T`` of the soft surrogate (rad), ``> 0``.
    fit
        Names of physical parameters to store as ``nn.Parameter`` for fitting by autograd:
        ``"crosstalk_sigma_m"``, ``"dead_phase_rad"``, ``"lut"`` (the LUT table). The others
        are buffers (0-d float64 tensors that move with ``.to()``).

    Notes
    -----
    Shapes: ``theta`` is ``(..., h, w)`` in SLM pixels; the output is
    ``(..., h·upsample, w·upsample)``, complex64 for float32 ``theta`` and complex128 for
    float64.
    """

    def __init__(self, *, pixel_pitch_m: float, sim_pitch_m: Optional[float] = None,
                 upsample: Optional[int] = None, fill_factor: float = 1.0,
                 dead_phase_rad: float = 0.0, crosstalk_sigma_m: float = 0.0,
                 lut: Optional[PhaseLUT] = None, bit_depth: int = 8, quantization: str = "ste",
                 soft_temperature_rad: float = 0.1, fit=()):
        super().__init__()
        unknown = sorted(set(fit) - {"crosstalk_sigma_m", "dead_phase_rad", "lut"})
        if unknown:
            raise OpticsError(f"SLM cannot fit {unknown}; it fits 'crosstalk_sigma_m', 'dead_phase_rad', 'lut'")
        self.pixel_pitch_m = _validate.pitch("pixel_pitch_m", pixel_pitch_m)
        if sim_pitch_m is not None:
            self.sim_pitch_m = _validate.pitch("sim_pitch_m", sim_pitch_m)
            n = integer_pitch_ratio(
                "pixel_pitch_m", self.pixel_pitch_m, "sim_pitch_m", self.sim_pitch_m,
                fix="choose sim_pitch_m = pixel_pitch_m / n for an integer n (e.g. "
                    f"{self.pixel_pitch_m / max(1, round(self.pixel_pitch_m / self.sim_pitch_m)):.6g} m)",
            )
            if upsample is not None and int(upsample) != n:
                raise PitchRatioError(f"upsample = {upsample!r} disagrees with pixel_pitch_m/sim_pitch_m = {n}; "
                                      f"give one of them")
            self.upsample = n
        else:
            if upsample is None:
                upsample = 1
            if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) or int(upsample) < 1:
                raise ShapeError(f"upsample must be an int >= 1 (simulation samples per SLM pixel), got {upsample!r}")
            self.upsample = int(upsample)
            self.sim_pitch_m = self.pixel_pitch_m / self.upsample
        ff = _validate.finite_scalar("fill_factor", fill_factor, unit="area fraction")
        if not 0.0 < ff <= 1.0:
            raise UnitsError(
                f"fill_factor = {ff!r} is outside (0, 1]; it is the active-area fraction of a pixel "
                f"(a 93 % fill factor is 0.93)"
            )
        self.fill_factor = ff
        self.active_side = int(round(math.sqrt(ff) * self.upsample))
        if self.active_side < 1:
            raise ShapeError(
                f"fill_factor = {ff!r} with upsample = {self.upsample} leaves an active square of "
                f"round(sqrt({ff})·{self.upsample}) = 0 samples; refine the simulation grid "
                f"(smaller sim_pitch_m) or raise fill_factor"
            )
        eff = self.active_side ** 2 / self.upsample ** 2
        if abs(eff - ff) > 0.02:
            log.warning("SLM fill_factor %.4g is represented as %.4g (active square %d of %d samples); "
                        "refine sim_pitch_m for a closer match", ff, eff, self.active_side, self.upsample)
        dead = _validate.finite_scalar("dead_phase_rad", dead_phase_rad, unit="rad")
        sig = _validate.finite_scalar("crosstalk_sigma_m", crosstalk_sigma_m, unit="m")
        if sig < 0:
            raise UnitsError(
                f"crosstalk_sigma_m = {sig!r} m must be >= 0 (0 disables crosstalk); it is the std "
                f"of the fringing-field blur, typically 0.2–1 pixel pitch"
            )
        for name, v in (("dead_phase_rad", dead), ("crosstalk_sigma_m", sig)):
            t = torch.tensor(v, dtype=torch.float64)
            if name in fit:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        if lut is None:
            lut = PhaseLUT.linear(bit_depth)
        if not isinstance(lut, PhaseLUT):
            raise LUTError(f"lut must be a PhaseLUT, got {type(lut).__name__}; use PhaseLUT.linear/tabulated")
        if "lut" in fit and not isinstance(lut.levels_rad, nn.Parameter):
            lut = PhaseLUT(lut.levels_rad, learnable=True)
        self.lut = lut
        if quantization not in QUANTIZATION_MODES:
            raise OpticsError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
        self.quantization = quantization
        self.soft_temperature_rad = _validate.positive("soft_temperature_rad", soft_temperature_rad, unit="rad")
        u, a = self.upsample, self.active_side
        s = (u - a) // 2
        cell = torch.zeros(u, u, dtype=torch.bool)
        cell[s:s + a, s:s + a] = True
        self.register_buffer("active_cell", cell, persistent=False)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def bit_depth(self) -> int:
        return self.lut.bit_depth

    @property
    def effective_fill_factor(self) -> float:
        """``a²/upsample²``: the area fraction actually represented on the simulation grid."""
        return self.active_side ** 2 / self.upsample ** 2

    @property
    def crosstalk_sigma_samples(self) -> torch.Tensor:
        return self.crosstalk_sigma_m / self.sim_pitch_m

    def bind(self, sim_pitch_m: float) -> "SLM":
        """Check that this SLM agrees with a system's simulation pitch (called by
        :class:`optics.cdp.CDPSystem`); raises :class:`~optics.errors.GeometryError` with both
        numbers when it does not."""
        from .errors import GeometryError

        dx = _validate.pitch("sim_pitch_m", sim_pitch_m)
        if abs(self.sim_pitch_m - dx) > 1e-6 * dx:
            raise GeometryError(
                f"the SLM simulates its {self.pixel_pitch_m:.6g} m pixels on a {self.sim_pitch_m:.6g} m grid "
                f"(upsample {self.upsample}) but the system's simulation pitch is {dx:.6g} m; build the SLM "
                f"with upsample = pixel_pitch_m / pitch_m = {self.pixel_pitch_m / dx:.6g} (an integer) and "
                f"no sim_pitch_m, or change the system's pitch_m")
        return self

    def active_mask(self, h: int, w: int) -> torch.Tensor:
        """Boolean ``(h·upsample, w·upsample)`` map of the active (non-gap) samples."""
        return self.active_cell.repeat(h, w)

    # -- quantisation -------------------------------------------------------------------------
    def _check_theta(self, theta: torch.Tensor) -> torch.Tensor:
        # phases in radians, shape (..., h, w) in SLM pixels
        return _validate.real_field("theta", theta, complex_hint="SLM phases are radians; pass torch.angle(mask)")

    def _soft(self, theta: torch.Tensor) -> torch.Tensor:
        lut = self.lut
        wrap = lut.wraps
        t = lut.reduce(theta) if wrap else theta
        ext, _ = lut._search_table(wrap, theta.device)
        if wrap:
            table = ext[1:-1]  # circularly sorted levels
        else:
            table = ext
        n = table.numel()
        T = self.soft_temperature_rad
        k = int(math.ceil(10.0 * T / max(lut.min_step_rad, 1e-300))) + 1
        table = table.to(theta.dtype)
        if 2 * k + 1 >= n:
            phi = table  # all levels
            d = t.unsqueeze(-1) - phi
            if wrap:
                d = wrap_phase(d)
            logits = -(d * d) / (2 * T * T)
        else:
            with torch.no_grad():
                pos = torch.searchsorted(table.to(torch.float64), t.detach().to(torch.float64).contiguous())
            offs = torch.arange(-k, k + 1, device=theta.device)
            j = pos.unsqueeze(-1) + offs
            if wrap:
                valid = torch.ones_like(j, dtype=torch.bool)
                j = torch.remainder(j, n)
            else:
                valid = (j >= 0) & (j < n)
                j = j.clamp(0, n - 1)
            phi = table[j]
            d = t.unsqueeze(-1) - phi
            if wrap:
                d = wrap_phase(d)
            logits = -(d * d) / (2 * T * T)
            logits = logits.masked_fill(~valid, float("-inf"))
        wgt = torch.softmax(logits, dim=-1)
        return t - (wgt * d).sum(-1)

    def quantize(self, theta: torch.Tensor) -> torch.Tensor:
        """Displayed phase per SLM pixel (same shape and dtype as ``theta``), per the mode."""
        theta = self._check_theta(theta)
        mode = self.quantization
        if mode == "none":
            return theta
        if mode == "soft" and self.training:
            return self._soft(theta)
        q = self.lut.quantize(theta.detach())
        if mode == "ste" and self.training:
            return theta + (q - theta).detach()
        return q

    # -- forward ------------------------------------------------------------------------------
    def phase(self, theta: torch.Tensor) -> torch.Tensor:
        """Real phase profile on the simulation grid (before ``exp``): quantise → upsample →
        fill factor → crosstalk. Shape ``(..., h·upsample, w·upsample)``."""
        q = self.quantize(theta)
        u = self.upsample
        up = q.repeat_interleave(u, dim=-2).repeat_interleave(u, dim=-1) if u > 1 else q
        if self.active_side < u:
            h, w = q.shape[-2:]
            m = self.active_mask(h, w).to(up.device)
            up = torch.where(m, up, self.dead_phase_rad.to(up.dtype).expand_as(up))
        sig = self.crosstalk_sigma_samples
        if float(sig.detach()) > 0:
            up = gaussian_blur(up, sig)
        return up

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        """``e^{iφ}`` with ``φ = self.phase(theta)``; complex64 (float32) or complex128 (float64)."""
        phi = self.phase(theta)
        return torch.complex(torch.cos(phi), torch.sin(phi))

    def extra_repr(self) -> str:
        return (f"upsample={self.upsample}, fill_factor={self.fill_factor} (effective "
                f"{self.effective_fill_factor:.4g}), crosstalk_sigma_m={float(self.crosstalk_sigma_m):g}, "
                f"quantization={self.quantization!r}, lut={self.lut!r}")
