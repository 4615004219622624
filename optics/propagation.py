"""Scalar free-space propagation: Fraunhofer, Fresnel (TF, IR, single FFT), angular spectrum.

Conventions (see :mod:`optics`): time dependence ``e^{-iωt}``, so propagation by ``+z``
multiplies the plane-wave spectrum by ``e^{+i k_z z}``; a field ``e^{+i 2π f_x x}`` is a plane
wave tilted towards ``+x`` and its far-field spot lands at ``x' = +λ z f_x``. Fields have shape
``(..., H, W)`` on a square pitch; every leading axis is a batch axis. complex64 and complex128
are both supported; kernels are computed in float64 and cast to the field's dtype.

Each method is a plain function with an exact adjoint (``*_adjoint``), checked by a dot-product
test. :func:`propagate` dispatches on ``method=`` and returns a :class:`Propagated`
``(field, pitch_m)`` pair that also carries ``.method`` (what ``"auto"`` picked).

Sampling (critical distance ``z_c = N·dx²/λ``, ``N`` the larger side of the unpadded field):

* ``fresnel_tf`` / ``asm``: the field is zero-padded by the lateral spread of its highest
  sampled angle (``|z|·tanθ``, ``sinθ = λ/(2dx)``), at most ``N`` samples, then rounded up to a
  fast FFT size. That is what linear convolution needs for an output window equal to the input
  window (a circular convolution of size ``M >= N + spread`` has no wrap-around inside the
  window), not a blanket 2×. ``pad=False`` keeps the periodic (circular) model, e.g. for
  gratings; an int pads by that many samples per axis.
* ``fresnel_tf``: the chirp ``exp(-iπλz f²)`` is sampled without aliasing iff
  ``|z| <= M·dx²/λ`` (``M`` the padded size), i.e. up to about ``2 z_c`` with automatic padding.
* ``asm`` with ``band_limit=True`` (default) applies the band limit of Matsushima & Shimobaba,
  Opt. Express 17, 19662 (2009): ``|f| < 1/(λ sqrt(1 + (z/D)²))`` with ``D = min(M/2, M-N)·dx``
  (``D = M·dx/2`` is their eq. 13 on a 2× padded grid); it is valid at any distance but drops
  the angles that would leave the window. ``band_limit=False`` raises where they would alias.
* ``fresnel_ir``: the impulse response is sampled on a ``fast_size(2N-1)`` grid (full linear
  convolution); its chirp is sampled well iff ``|z| >= N·dx²/λ`` (Voelz & Roggemann, Appl. Opt.
  48, 6132 (2009)).
* ``fresnel_1fft`` needs ``z >= N·dx²/λ`` for its input chirp; output pitch ``λz/(N·dx)``.
* ``fraunhofer``: output pitch ``λz/(N·dx)``; valid when the Fraunhofer number
  ``a²/(λz) << 1`` (``a`` the half-width of the object), which is physics, not sampling, and is
  not checked.

Violations raise :class:`~optics.errors.SamplingError` naming the criterion, the numbers and the
fix; ``allow_aliasing=True`` proceeds anyway.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Optional, Tuple, Union

import torch

from . import _validate
from .errors import OpticsError, OptionError, SamplingError
from .grid import coords, fast_size, freqs

log = logging.getLogger(__name__)

Scalar = Union[float, torch.Tensor]
PadSpec = Union[bool, int, Tuple[int, int]]

METHODS = ("fraunhofer", "fresnel-tf", "fresnel-ir", "fresnel-1fft", "asm", "auto")
EVANESCENT = ("drop", "decay")
#: keyword options each method takes (the one source of truth: config, CLI and the checks use it)
METHOD_OPTIONS = {
    "fraunhofer": (),
    "fresnel-1fft": ("allow_aliasing",),
    "fresnel-tf": ("pad", "allow_aliasing"),
    "fresnel-ir": ("pad", "allow_aliasing"),
    "asm": ("pad", "band_limit", "evanescent", "allow_aliasing"),
}

class Propagated(tuple):
    """``(field, pitch_m)`` returned by every propagator and its adjoint: the field and the
    ``(py, px)`` sample pitch of the plane it lives on; ``.method`` names the method used."""

    def __new__(cls, field, pitch_m, method: str):
        obj = super().__new__(cls, (field, pitch_m))
        obj.method = method
        return obj

    @property
    def field(self) -> torch.Tensor:
        return self[0]

    @property
    def pitch_m(self) -> Tuple[float, float]:
        return self[1]


def _pair(p) -> Tuple[float, float]:
    v = _key(p)
    return (v, v)


# --------------------------------------------------------------------------------------------
# kernel cache
# --------------------------------------------------------------------------------------------
_CACHE_MAX = 64
_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_stats = {"hits": 0, "misses": 0}


def clear_kernel_cache() -> None:
    """Drop every cached transfer function / phase factor."""
    _cache.clear()
    _cache_stats.update(hits=0, misses=0)


def kernel_cache_info() -> dict:
    """``{"hits", "misses", "size"}`` of the kernel cache (for tests and benchmarks)."""
    return dict(_cache_stats, size=len(_cache))


def _differentiable(*xs) -> bool:
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs)


def _cached(key: tuple, build, *params):
    """Return ``build()`` from the cache; kernels depending on a parameter that requires grad
    are rebuilt every call so gradients reach it."""
    if _differentiable(*params):
        return build()
    if key in _cache:
        _cache.move_to_end(key)
        _cache_stats["hits"] += 1
        return _cache[key]
    _cache_stats["misses"] += 1
    val = build()
    _cache[key] = val
    if len(_cache) > _CACHE_MAX:
        _cache.popitem(last=False)
    return val


def _f64(x: Scalar, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=torch.float64, device=device).reshape(())
    return torch.tensor(float(x), dtype=torch.float64, device=device)


def _key(x: Scalar) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _check_common(u: torch.Tensor, pitch_m, wavelength_m, z_m, *, allow_zero_z: bool, positive_z: bool):
    _validate.field_2d("field", u)
    dx = _validate.pitch("pitch_m", pitch_m)
    lam = _validate.wavelength(wavelength_m)
    z = _validate.finite_scalar("z_m", z_m, unit="m")
    if positive_z and z <= 0:
        raise _validate.UnitsError(
            f"z_m must be a positive distance in metres for this method, got {z!r}; "
            f"far-field and single-FFT propagation are defined for z > 0 (use the adjoint to go back)"
        )
    if not allow_zero_z and z == 0:
        raise _validate.UnitsError("z_m = 0: the Fresnel impulse response is singular at z = 0; use method='asm'")
    return dx, lam, z


def _padded_sizes(shape: Tuple[int, int], pad: PadSpec, spread_px: Tuple[float, float]) -> Tuple[int, int]:
    n = tuple(int(s) for s in shape)
    if pad is False or pad is None:
        return n
    if pad is True:
        out = []
        for ni, si in zip(n, spread_px):
            extra = ni if not math.isfinite(si) else min(int(math.ceil(si)), ni)
            out.append(fast_size(ni + extra))
        return tuple(out)
    if isinstance(pad, int):
        pad = (pad, pad)
    if any(int(p) < 0 for p in pad):
        raise OpticsError(f"pad must be True, False or non-negative sample counts, got {pad}")
    return tuple(ni + int(p) for ni, p in zip(n, pad))


def _spread_paraxial(z: float, lam: float, dx: float) -> float:
    """Lateral shift (in samples) of the highest sampled frequency 1/(2dx), paraxial."""
    return abs(z) * lam / (2 * dx) / dx


def _spread_exact(z: float, lam: float, dx: float) -> float:
    """Lateral shift along one axis (in samples) of the worst sampled plane wave: both
    components at Nyquist, ``f_x = f_y = 1/(2dx)``, shift ``|z|·λf_x / sqrt(1 − λ²(f_x² + f_y²))``."""
    s = lam / (2 * dx)
    if 2 * s * s >= 1.0:
        return math.inf
    return abs(z) * s / math.sqrt(1 - 2 * s * s) / dx


# --------------------------------------------------------------------------------------------
# transfer-function methods (fresnel-tf, asm, fresnel-ir share the apply step)
# --------------------------------------------------------------------------------------------
def _apply_tf(u: torch.Tensor, H: torch.Tensor, padded: Tuple[int, int], conj: bool) -> torch.Tensor:
    """``crop(ifft2(H · fft2(zero_pad(u))))``: zero padding at the end of each axis; a linear,
    shift-invariant filter does not care where the window sits in the padded grid."""
    n = u.shape[-2:]
    U = torch.fft.fft2(u, s=padded)
    K = H.conj() if conj else H
    if H.requires_grad:
        U = U * K
    else:  # fft2's backward does not need its output, so the product can be in place
        U.mul_(K)
    out = torch.fft.ifft2(U)
    if tuple(padded) != tuple(n):
        out = out[..., : n[0], : n[1]]
    return out


def _tf_fresnel_kernel(padded, dx, lam, z, dtype, device):
    def build():
        dxt = _f64(dx, device)
        fy = freqs(padded[0], dxt, device=device)
        fx = freqs(padded[1], dxt, device=device)
        zt, lt = _f64(z, device), _f64(lam, device)
        f2 = fy[:, None] ** 2 + fx[None, :] ** 2
        phase = 2 * math.pi / lt * zt - math.pi * lt * zt * f2
        return torch.polar(torch.ones_like(phase), phase).to(dtype)

    key = ("fresnel-tf", tuple(padded), _key(dx), _key(lam), _key(z), dtype, str(device))
    return _cached(key, build, z, lam, dx)


def _asm_kernel(shape, padded, dx, lam, z, band_limit, evanescent, periodic, dtype, device):
    def build():
        dxt = _f64(dx, device)
        fy = freqs(padded[0], dxt, device=device)
        fx = freqs(padded[1], dxt, device=device)
        zt, lt = _f64(z, device), _f64(lam, device)
        arg = 1.0 / lt ** 2 - fy[:, None] ** 2 - fx[None, :] ** 2
        prop = arg >= 0  # a grazing wave (f² = 1/λ², k_z = 0) is not evanescent: H = 1
        kz = 2 * math.pi * torch.sqrt(torch.clamp(arg, min=0.0))
        H = torch.polar(torch.ones_like(kz), kz * zt)
        if evanescent == "decay":
            kappa = 2 * math.pi * torch.sqrt(torch.clamp(-arg, min=0.0))
            H = torch.where(prop, H, torch.exp(-kappa * zt.abs()).to(H.dtype))
        else:
            H = torch.where(prop, H, torch.zeros((), dtype=H.dtype, device=device))
        if band_limit and _key(z) != 0.0:
            # keep a plane wave iff its lateral shift |z|·λ|f_i|/sqrt(1 − λ²f²) fits in the room
            # D_i the window leaves along each axis (the local-frequency criterion of Matsushima
            # & Shimobaba without their small-angle simplification of the cross term; for
            # f_y = 0 it is their |f_x| < 1/(λ sqrt(1 + (z/D)²)))
            # (evanescent waves do not travel sideways: "decay" keeps them)
            cos_t = torch.sqrt(torch.clamp(arg, min=0.0)) * lt
            keep = torch.ones_like(prop)
            for n_i, m_i, f in zip(shape, padded, (fy[:, None], fx[None, :])):
                # room D_i: M/2 on a periodic (or unpadded) axis, else min(M/2, M − N)
                d = (m_i / 2 if periodic or m_i <= n_i else min(m_i / 2, m_i - n_i)) * dxt
                keep = keep & ((zt.abs() * lt * f.abs() <= d * cos_t) | ~prop)
            H = H * keep.to(H.dtype)
        return H.to(dtype)

    key = ("asm", tuple(shape), tuple(padded), _key(dx), _key(lam), _key(z), band_limit, evanescent, periodic,
           dtype, str(device))
    return _cached(key, build, z, lam, dx)


def _ir_kernel(padded, dx, lam, z, dtype, device):
    def build():
        dxt = _f64(dx, device)
        y = coords(padded[0], 1.0, device=device) * dxt
        x = coords(padded[1], 1.0, device=device) * dxt
        zt, lt = _f64(z, device), _f64(lam, device)
        r2 = y[:, None] ** 2 + x[None, :] ** 2
        phase = 2 * math.pi / lt * zt + math.pi * r2 / (lt * zt)
        # h = e^{ikz}/(iλz) · exp(iπ r²/(λz)); the FFT of the sampled h times dx² is the TF.
        h = torch.polar(torch.ones_like(phase), phase) * (dxt * dxt / (1j * lt * zt))
        # Keep the kernel where its local frequency x/(λz) is below Nyquist 1/(2dx): beyond
        # |x| = λ|z|/(2dx) the sampled chirp aliases (angles the grid cannot carry).
        reach = _key(lam) * abs(_key(z)) / (2 * _key(dx))
        h = h * ((y.abs() <= reach)[:, None] & (x.abs() <= reach)[None, :]).to(h.dtype)
        h = torch.fft.ifftshift(h, dim=(-2, -1))
        return torch.fft.fft2(h).to(dtype)

    key = ("fresnel-ir", tuple(padded), _key(dx), _key(lam), _key(z), dtype, str(device))
    return _cached(key, build, z, lam, dx)


def _fresnel_tf_setup(u, pitch_m, wavelength_m, z_m, pad, allow_aliasing):
    dx, lam, z = _check_common(u, pitch_m, wavelength_m, z_m, allow_zero_z=True, positive_z=False)
    n = tuple(u.shape[-2:])
    padded = padded_shape(n, pitch_m=dx, wavelength_m=lam, z_m=z, method="fresnel-tf", pad=pad)
    limit = min(padded) * dx * dx / lam
    if abs(z) > limit and not allow_aliasing:
        raise SamplingError(
            f"Fresnel transfer function aliases: |z| = {abs(z):.4g} m > M·pitch²/λ = {limit:.4g} m "
            f"(M = {min(padded)} padded samples, pitch {dx:.4g} m, λ = {lam:.4g} m); "
            f"use method='fresnel-ir' or 'fresnel-1fft' or band-limited 'asm', increase N (zero-pad), "
            f"or decrease z; pass allow_aliasing=True to proceed anyway"
        )
    dtype = _validate.complex_dtype_for(u)
    H = _tf_fresnel_kernel(padded, pitch_m, wavelength_m, z_m, dtype, u.device)
    return H, padded, dtype


def fresnel_tf(u: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
               pad: PadSpec = True, allow_aliasing: bool = False) -> Propagated:
    """Fresnel propagation by its transfer function (Goodman, *Fourier Optics*, eq. 4-21):

    ``H(f) = e^{ikz} · exp(-iπλz(f_x² + f_y²))``; the output has the input pitch.
    Meant for ``|z|`` up to about the critical distance ``N·dx²/λ`` (see module docstring).
    Negative ``z`` propagates backwards.
    """
    H, padded, dtype = _fresnel_tf_setup(u, pitch_m, wavelength_m, z_m, pad, allow_aliasing)
    return Propagated(_apply_tf(_validate.as_complex(u).to(dtype), H, padded, conj=False), _pair(pitch_m),
                      "fresnel-tf")


def fresnel_tf_adjoint(v: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
                       pad: PadSpec = True, allow_aliasing: bool = False) -> Propagated:
    """Exact adjoint of :func:`fresnel_tf` (same padding, conjugate transfer function)."""
    H, padded, dtype = _fresnel_tf_setup(v, pitch_m, wavelength_m, z_m, pad, allow_aliasing)
    return Propagated(_apply_tf(_validate.as_complex(v).to(dtype), H, padded, conj=True), _pair(pitch_m),
                      "fresnel-tf")


def _asm_setup(u, pitch_m, wavelength_m, z_m, band_limit, evanescent, pad, allow_aliasing):
    dx, lam, z = _check_common(u, pitch_m, wavelength_m, z_m, allow_zero_z=True, positive_z=False)
    if evanescent not in EVANESCENT:
        raise OpticsError(f"evanescent must be one of {EVANESCENT}, got {evanescent!r}")
    n = tuple(u.shape[-2:])
    spread = _spread_exact(z, lam, dx)
    padded = padded_shape(n, pitch_m=dx, wavelength_m=lam, z_m=z, method="asm", pad=pad)
    periodic = pad is False or pad is None
    if not band_limit and not allow_aliasing:
        room = min((m / 2 if periodic else min(m / 2, m - ni)) for m, ni in zip(padded, n))
        if spread > room:
            raise SamplingError(
                f"angular-spectrum transfer function aliases: the highest sampled angle moves "
                f"{spread:.4g} samples over |z| = {abs(z):.4g} m but the padded window leaves room "
                f"for {room:.4g} (pitch {dx:.4g} m, λ = {lam:.4g} m, padded {padded}); use "
                f"band_limit=True (Matsushima & Shimobaba 2009), method='fresnel-ir', pad more, "
                f"or decrease z; pass allow_aliasing=True to proceed anyway"
            )
    dtype = _validate.complex_dtype_for(u)
    H = _asm_kernel(n, padded, pitch_m, wavelength_m, z_m, band_limit, evanescent, periodic, dtype, u.device)
    return H, padded, dtype


def asm(u: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
        band_limit: bool = True, evanescent: str = "drop", pad: PadSpec = True,
        allow_aliasing: bool = False) -> Propagated:
    """Angular-spectrum propagation (Goodman eq. 3-74), exact within scalar theory:

    ``H(f) = exp(i 2π z sqrt(1/λ² - f_x² - f_y²))`` for propagating waves. Evanescent waves
    (``f² > 1/λ²``) are dropped (``evanescent="drop"``, default) or decay as
    ``exp(-2π|z| sqrt(f² - 1/λ²))`` (``"decay"``); never NaN. ``band_limit=True`` applies the
    Matsushima–Shimobaba band limit (module docstring). Output pitch equals input pitch.
    """
    H, padded, dtype = _asm_setup(u, pitch_m, wavelength_m, z_m, band_limit, evanescent, pad, allow_aliasing)
    return Propagated(_apply_tf(_validate.as_complex(u).to(dtype), H, padded, conj=False), _pair(pitch_m), "asm")


def asm_adjoint(v: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
                band_limit: bool = True, evanescent: str = "drop", pad: PadSpec = True,
                allow_aliasing: bool = False) -> Propagated:
    """Exact adjoint of :func:`asm`."""
    H, padded, dtype = _asm_setup(v, pitch_m, wavelength_m, z_m, band_limit, evanescent, pad, allow_aliasing)
    return Propagated(_apply_tf(_validate.as_complex(v).to(dtype), H, padded, conj=True), _pair(pitch_m), "asm")


def _fresnel_ir_setup(u, pitch_m, wavelength_m, z_m, pad, allow_aliasing):
    dx, lam, z = _check_common(u, pitch_m, wavelength_m, z_m, allow_zero_z=False, positive_z=False)
    n = tuple(u.shape[-2:])
    padded = padded_shape(n, pitch_m=dx, wavelength_m=lam, z_m=z, method="fresnel-ir", pad=pad)
    limit = max(n) * dx * dx / lam
    if abs(z) < limit and not allow_aliasing:
        raise SamplingError(
            f"Fresnel impulse response aliases: |z| = {abs(z):.4g} m < N·pitch²/λ = {limit:.4g} m "
            f"(N = {max(n)}, pitch {dx:.4g} m, λ = {lam:.4g} m), i.e. pitch > λz/(N·pitch); "
            f"use method='fresnel-tf' or 'asm', decrease the pitch, or increase z; "
            f"pass allow_aliasing=True to proceed anyway"
        )
    dtype = _validate.complex_dtype_for(u)
    H = _ir_kernel(padded, pitch_m, wavelength_m, z_m, dtype, u.device)
    return H, padded, dtype


def fresnel_ir(u: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
               pad: PadSpec = True, allow_aliasing: bool = False) -> Propagated:
    """Fresnel propagation by convolution with the sampled impulse response (Goodman eq. 4-16):

    ``h(x, y) = e^{ikz}/(iλz) · exp(iπ(x² + y²)/(λz))``, convolved on a ``fast_size(2N-1)``
    grid (exact linear convolution of the sampled kernel). Meant for ``|z| >= N·dx²/λ``.
    Output pitch equals input pitch.
    """
    H, padded, dtype = _fresnel_ir_setup(u, pitch_m, wavelength_m, z_m, pad, allow_aliasing)
    return Propagated(_apply_tf(_validate.as_complex(u).to(dtype), H, padded, conj=False), _pair(pitch_m),
                      "fresnel-ir")


def fresnel_ir_adjoint(v: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
                       pad: PadSpec = True, allow_aliasing: bool = False) -> Propagated:
    """Exact adjoint of :func:`fresnel_ir`."""
    H, padded, dtype = _fresnel_ir_setup(v, pitch_m, wavelength_m, z_m, pad, allow_aliasing)
    return Propagated(_apply_tf(_validate.as_complex(v).to(dtype), H, padded, conj=True), _pair(pitch_m),
                      "fresnel-ir")


# --------------------------------------------------------------------------------------------
# Fourier-transform methods (output grid scaled by λz/(N·dx))
# --------------------------------------------------------------------------------------------
def _out_pitch(n: Tuple[int, int], dx: float, lam: float, z: float) -> Tuple[float, float]:
    return (lam * z / (n[0] * dx), lam * z / (n[1] * dx))


def _quadratic(n, pitch, lam, z, device):
    """``π|x|²/(λz)`` on the centred ``n`` grid of (square) ``pitch``."""
    y = coords(n[0], 1.0, device=device) * pitch
    x = coords(n[1], 1.0, device=device) * pitch
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    return math.pi * r2 / (_f64(lam, device) * _f64(z, device))


def _centering(n: int, device) -> torch.Tensor:
    """``e^{2πi c j/n}``, ``c = n//2``: the DFT with the axis at index ``c`` on both sides is
    ``C[k] = e^{-2πi c²/n} e^{2πi c k/n} · fft(u · e^{2πi c j/n})[k]`` (the same as
    ``fftshift(fft(ifftshift(u)))``), so the shifts fold into the cached phase factors."""
    j = torch.arange(n, dtype=torch.float64, device=device)
    return torch.polar(torch.ones_like(j), 2 * math.pi * ((n // 2) * j % n) / n)


def _ft_factors(n, dx_in, lam, z, with_input_chirp: bool, dtype, device):
    """(output factor, input factor): ``fft2(u · input) · output`` is the centred transform
    times ``e^{ikz}·dx²/(iλz)·exp(iπ|x'|²/(λz))`` (times the input chirp for single-FFT Fresnel)."""
    def build():
        lt, zt, dx = _f64(lam, device), _f64(z, device), _f64(dx_in, device)
        # output coordinates x' = (k − n//2)·λz/(n·dx): keep their λz dependence for gradients
        y = (torch.arange(n[0], dtype=torch.float64, device=device) - n[0] // 2) * lt * zt / (n[0] * dx)
        x = (torch.arange(n[1], dtype=torch.float64, device=device) - n[1] // 2) * lt * zt / (n[1] * dx)
        phase_out = math.pi * (y[:, None] ** 2 + x[None, :] ** 2) / (lt * zt) + 2 * math.pi / lt * zt
        cy, cx = _centering(n[0], device), _centering(n[1], device)
        c_ph = -2 * math.pi * (((n[0] // 2) ** 2 % n[0]) / n[0] + ((n[1] // 2) ** 2 % n[1]) / n[1])
        out = torch.polar(torch.ones_like(phase_out), phase_out) * (dx * dx / (1j * lt * zt))
        out = out * (cy[:, None] * cx[None, :]) * complex(math.cos(c_ph), math.sin(c_ph))
        inp = cy[:, None] * cx[None, :]
        if with_input_chirp:
            ph_in = _quadratic(n, dx, lt, zt, device)
            inp = inp * torch.polar(torch.ones_like(ph_in), ph_in)
        return out.to(dtype), inp.to(dtype)

    key = ("ft", tuple(n), _key(dx_in), _key(lam), _key(z), with_input_chirp, dtype, str(device))
    return _cached(key, build, z, lam, dx_in)


def _ft_setup(u, pitch_m, wavelength_m, z_m, chirp: bool, allow_aliasing: bool):
    dx, lam, z = _check_common(u, pitch_m, wavelength_m, z_m, allow_zero_z=False, positive_z=True)
    n = tuple(u.shape[-2:])
    if chirp:
        limit = max(n) * dx * dx / lam
        if z < limit and not allow_aliasing:
            raise SamplingError(
                f"single-FFT Fresnel input chirp aliases: z = {z:.4g} m < N·pitch²/λ = {limit:.4g} m "
                f"(N = {max(n)}, pitch {dx:.4g} m, λ = {lam:.4g} m); use method='fresnel-tf' or 'asm', "
                f"increase z, or decrease the pitch; pass allow_aliasing=True to proceed anyway"
            )
    dtype = _validate.complex_dtype_for(u)
    q_out, q_in = _ft_factors(n, pitch_m, wavelength_m, z_m, chirp, dtype, u.device)
    return q_out, q_in, _out_pitch(n, dx, lam, z), dtype


def _ft_apply(u: torch.Tensor, q_out: torch.Tensor, q_in: torch.Tensor) -> torch.Tensor:
    U = torch.fft.fft2(u * q_in)
    if q_out.requires_grad:
        return U * q_out
    return U.mul_(q_out)  # fft2's backward does not need its output


def _ft_apply_adjoint(v: torch.Tensor, q_out: torch.Tensor, q_in: torch.Tensor) -> torch.Tensor:
    h, w = v.shape[-2:]
    return torch.fft.ifft2(v * q_out.conj()) * (q_in.conj() * (h * w))  # fft2ᴴ = (h·w)·ifft2


def fraunhofer(u: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar) -> Propagated:
    """Far-field (Fraunhofer) propagation (Goodman eq. 4-25):

    ``U(x') = e^{ikz}/(iλz) · exp(iπ|x'|²/(λz)) · dx² · Σ u(x) exp(-i2π x·x'/(λz))``,
    evaluated on the *output* grid ``x' = (j - N//2)·λz/(N·dx)``. Returns :class:`Propagated`
    ``(U, (py, px))`` with the output pitch ``λz/(N·dx)`` per axis. Energy is conserved:
    ``Σ|U|²·pitch_out² = Σ|u|²·dx²``. Zero-pad the input for finer output sampling.
    """
    q_out, q_in, p_out, dtype = _ft_setup(u, pitch_m, wavelength_m, z_m, False, True)
    return Propagated(_ft_apply(_validate.as_complex(u).to(dtype), q_out, q_in), p_out, "fraunhofer")


def fraunhofer_adjoint(v: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar) -> Propagated:
    """Exact adjoint of :func:`fraunhofer`; ``pitch_m`` is the *input-plane* pitch."""
    q_out, q_in, _, dtype = _ft_setup(v, pitch_m, wavelength_m, z_m, False, True)
    return Propagated(_ft_apply_adjoint(_validate.as_complex(v).to(dtype), q_out, q_in), _pair(pitch_m),
                      "fraunhofer")


def fresnel_1fft(u: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
                 allow_aliasing: bool = False) -> Propagated:
    """Single-FFT Fresnel propagation (Goodman eq. 4-17):

    ``U(x') = e^{ikz}/(iλz) · exp(iπ|x'|²/(λz)) · dx² · FFT[u(x) exp(iπ|x|²/(λz))]`` on the
    output grid of pitch ``λz/(N·dx)``. Returns :class:`Propagated` ``(U, (py, px))``. Meant for
    ``z >= N·dx²/λ``.
    """
    q_out, q_in, p_out, dtype = _ft_setup(u, pitch_m, wavelength_m, z_m, True, allow_aliasing)
    return Propagated(_ft_apply(_validate.as_complex(u).to(dtype), q_out, q_in), p_out, "fresnel-1fft")


def fresnel_1fft_adjoint(v: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
                         allow_aliasing: bool = False) -> Propagated:
    """Exact adjoint of :func:`fresnel_1fft`; ``pitch_m`` is the *input-plane* pitch."""
    q_out, q_in, _, dtype = _ft_setup(v, pitch_m, wavelength_m, z_m, True, allow_aliasing)
    return Propagated(_ft_apply_adjoint(_validate.as_complex(v).to(dtype), q_out, q_in), _pair(pitch_m),
                      "fresnel-1fft")


# --------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------
def choose_method(shape: Tuple[int, int], *, pitch_m: float, wavelength_m: float, z_m: float) -> str:
    """What ``method="auto"`` picks: band-limited ``"asm"`` for ``|z| <= 2·N·dx²/λ`` (with the
    automatic padding its transfer function is well sampled up to there; same output pitch),
    ``"fresnel-ir"`` beyond (impulse response well sampled, same output pitch). Neither changes the output grid; ask for ``"fresnel-1fft"`` or
    ``"fraunhofer"`` explicitly when you want the scaled far-field grid."""
    dx = _validate.pitch("pitch_m", pitch_m)
    lam = _validate.wavelength(wavelength_m)
    z = abs(_validate.finite_scalar("z_m", z_m))
    zc = max(shape) * dx * dx / lam
    return "asm" if z <= 2 * zc else "fresnel-ir"


def resolve_method(shape: Tuple[int, int], method: str, *, pitch_m: Scalar, wavelength_m: Scalar,
                   z_m: Scalar) -> str:
    """The one place ``method="auto"`` is resolved (:func:`choose_method` on the field's
    ``shape``); any other name is checked against :data:`METHODS` and returned."""
    if method not in METHODS:
        raise OpticsError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    chosen = choose_method(tuple(shape), pitch_m=_key(pitch_m), wavelength_m=_key(wavelength_m), z_m=_key(z_m))
    dx = _key(pitch_m)
    log.info("propagate(method='auto'): z = %.4g m, critical distance N·dx²/λ = %.4g m → %s",
             _key(z_m), max(shape) * dx * dx / _key(wavelength_m), chosen)
    return chosen


def check_options(method: str, options: dict) -> dict:
    """Reject options that ``method`` does not take (the same check for a propagator and its
    adjoint); :data:`METHOD_OPTIONS` lists what each takes."""
    allowed = METHOD_OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no options"
        hint = (" (zero-pad the field yourself, e.g. CDPSystem(oversampling=2), for a finer far-field grid)"
                if "pad" in unknown and method in ("fraunhofer", "fresnel-1fft") else "")
        raise OptionError(f"method {method!r} does not take option(s) {', '.join(unknown)}; it takes {takes}{hint}")
    return dict(options)


_FORWARD = {"fraunhofer": fraunhofer, "fresnel-1fft": fresnel_1fft, "fresnel-tf": fresnel_tf,
            "fresnel-ir": fresnel_ir, "asm": asm}
_ADJOINT = {"fraunhofer": fraunhofer_adjoint, "fresnel-1fft": fresnel_1fft_adjoint,
            "fresnel-tf": fresnel_tf_adjoint, "fresnel-ir": fresnel_ir_adjoint, "asm": asm_adjoint}


def _dispatch(table, u, pitch_m, wavelength_m, z_m, method, options) -> Propagated:
    _validate.field_2d("field", u)
    m = resolve_method(tuple(u.shape[-2:]), method, pitch_m=pitch_m, wavelength_m=wavelength_m, z_m=z_m)
    opts = check_options(m, options)
    return table[m](u, pitch_m=pitch_m, wavelength_m=wavelength_m, z_m=z_m, **opts)


def propagate(u: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
              method: str = "auto", **options) -> Propagated:
    """Propagate ``u`` (shape ``(..., H, W)``) by ``z_m`` and return :class:`Propagated`
    ``(field, (py, px))``. ``method`` is one of ``"fraunhofer"``, ``"fresnel-tf"``,
    ``"fresnel-ir"``, ``"fresnel-1fft"``, ``"asm"``, ``"auto"`` (see :func:`choose_method`;
    the choice is logged at INFO level and stored in ``result.method``). ``options`` go to
    the method's function; :data:`METHOD_OPTIONS` lists what each takes, and any other
    option raises :class:`~optics.errors.OptionError`.
    """
    return _dispatch(_FORWARD, u, pitch_m, wavelength_m, z_m, method, options)


def propagate_adjoint(v: torch.Tensor, *, pitch_m: Scalar, wavelength_m: Scalar, z_m: Scalar,
                      method: str = "auto", **options) -> Propagated:
    """Exact adjoint of :func:`propagate` with the same arguments and options (``pitch_m`` is
    the *input-plane* pitch); returns :class:`Propagated` with the field on the input grid.
    ``"auto"`` is resolved from ``v``'s shape, which is the input's for every method that
    ``auto`` can pick (both keep the grid)."""
    return _dispatch(_ADJOINT, v, pitch_m, wavelength_m, z_m, method, options)


def padded_shape(shape: Tuple[int, int], *, pitch_m: float, wavelength_m: float, z_m: float,
                 method: str, pad: PadSpec = True) -> Tuple[int, int]:
    """FFT grid a same-pitch method uses for a field of ``shape`` (the Fourier-transform
    methods use the field's own grid). Lets benchmarks time the bare FFT on the same grid."""
    dx, lam, z = _key(pitch_m), _key(wavelength_m), _key(z_m)
    shape = tuple(int(n) for n in shape)
    if method == "fresnel-tf":
        s = _spread_paraxial(z, lam, dx)
        return _padded_sizes(shape, pad, (s, s))
    if method == "asm":
        s = _spread_exact(z, lam, dx)
        return _padded_sizes(shape, pad, (s, s))
    if method == "fresnel-ir":  # linear convolution with the kernel's 2N − 1 samples: pad N − 1
        return _padded_sizes(shape, pad, (shape[0] - 1, shape[1] - 1))
    return shape


def output_pitch(shape: Tuple[int, int], *, pitch_m: float, wavelength_m: float, z_m: float,
                 method: str) -> Tuple[float, float]:
    """Output-plane pitch ``(py, px)`` of ``method`` without propagating (``λz/(N·dx)`` per
    axis for the Fourier-transform methods, the input pitch otherwise). An unknown ``method``
    raises :class:`~optics.errors.OpticsError` (as :func:`propagate` would)."""
    method = resolve_method(shape, method, pitch_m=pitch_m, wavelength_m=wavelength_m, z_m=z_m)
    if method in ("fraunhofer", "fresnel-1fft"):
        return _out_pitch(tuple(shape), _key(pitch_m), _key(wavelength_m), _key(z_m))
    return _pair(pitch_m)


def gaussian_beam(shape: Tuple[int, int], *, pitch_m: float, waist_m: float,
                  wavelength_m: Optional[float] = None, z_m: float = 0.0,
                  dtype=torch.complex128, device=None) -> torch.Tensor:
    """Analytic paraxial Gaussian beam ``u(x, y, z)`` (Siegman, *Lasers*, ch. 17) with waist
    ``w0`` at ``z = 0`` and unit amplitude on axis at the waist, in this module's sign
    convention (``e^{+ikz}`` for propagation towards +z):

    ``u = (w0/w) exp(-r²/w²) exp(i(kz + k r²/(2R) - ψ))``, ``w = w0 sqrt(1 + (z/zR)²)``,
    ``R = z (1 + (zR/z)²)``, ``ψ = atan(z/zR)`` (Gouy phase), ``zR = π w0²/λ``.
    """
    dx = _validate.pitch("pitch_m", pitch_m)
    w0 = _validate.positive("waist_m", waist_m)
    y = coords(shape[0], dx, device=device)
    x = coords(shape[1], dx, device=device)
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    if z_m == 0:
        return torch.exp(-r2 / w0 ** 2).to(dtype)
    lam = _validate.wavelength(wavelength_m)
    k = 2 * math.pi / lam
    zr = math.pi * w0 ** 2 / lam
    w = w0 * math.sqrt(1 + (z_m / zr) ** 2)
    R = z_m * (1 + (zr / z_m) ** 2)
    psi = math.atan(z_m / zr)
    amp = (w0 / w) * torch.exp(-r2 / w ** 2)
    phase = k * z_m + k * r2 / (2 * R) - psi
    return torch.polar(amp, phase).to(dtype)
