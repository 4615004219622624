"""phaseforge.optics — the differentiable physics core (imports nothing from other layers).

Conventions
-----------
* **Units**: SI everywhere — metres, radians, seconds. Names carry units where a reader could
  doubt them (``pitch_m``, ``wavelength_m``, ``z_m``, ``exposure_s``).
* **Arrays**: torch tensors of shape ``(..., H, W)``; batch and snapshot axes lead
  (``(B, L, H, W)`` for coded diffraction patterns). complex64 by default, complex128 accepted
  everywhere (tests use it for gradient checks); numpy only at I/O edges.
* **Geometry**: the optical axis sits at pixel index ``N // 2``; the coordinate of index ``j`` is
  ``(j - N//2)·pitch``. Frequency grids come from ``torch.fft.fftfreq`` (a DC sample exists for
  every N, spacing ``1/(N·pitch)``) with explicit ``fftshift``/``ifftshift``.
* **Sign**: time dependence ``e^{-iωt}``; propagation by ``+z`` multiplies the plane-wave
  spectrum by ``e^{+i k_z z}``. A plane wave ``e^{+i2π f_x x}`` travels towards ``+x``: after a
  distance ``z`` a beam carrying it has moved by ``+z·tanθ`` (``sinθ = λ f_x``) and its
  far-field spot sits at ``x' = +λ z f_x``. ``tests/optics/test_propagation.py`` checks this.
* **Functional core, thin modules**: pure functions do the maths (:mod:`optics.propagation`);
  ``nn.Module`` wrappers only hold learnable or cached state.
* **Unit-free CDPs**: ``CDPOperator(masks, method="fft")`` is ``fft2(pad(M ⊙ x), norm="ortho")``
  with no pitch, wavelength or distance; ``detector_order="fft"`` puts DC at index 0 (numpy/torch
  order) instead of ``M//2``. Noise models on intensities live in :mod:`optics.noise`.
* **Operators** follow :mod:`optics.operator` (``A``, ``A_adjoint``, norm, pseudo-inverse,
  dot-product test); :class:`optics.cdp.CDPSystem` is the linear :class:`~optics.cdp.CDPOperator`
  plus ``|·|²`` plus an optional sensor whose noise model is an argument.
* **Geometry has one owner**: the CDP system's simulation pitch; SLM and sensor are bound to it.
* **Physical parameters are tensors** (buffers, or parameters with ``fit=``).
* **Errors**: subclasses of :class:`optics.errors.OpticsError` (a ``ValueError``) whose message
  names the quantity, the value, the limit and the fix.
"""
from . import cdp, errors, grid, noise, operator, propagation
from .cdp import CDP_METHODS, DETECTOR_ORDERS, CDPOperator, CDPSystem, check_detector_order
from .errors import (DetectorOrderWarning, GeometryError, IntensityError, LUTError, MaterialError, NonFiniteError, OpticsError,
                     NoiseModelError, OptionError, PitchRatioError, SamplingError, ShapeError, UnitsError,
                     WavelengthRangeError)
from .grid import Grid
from .operator import LinearOperator, PseudoInverse, adjointness_error, estimate_norm_sq
from .propagation import (METHOD_OPTIONS, METHODS, Propagated, asm, asm_adjoint, choose_method,
                          fraunhofer, fraunhofer_adjoint, fresnel_1fft, fresnel_1fft_adjoint, fresnel_ir,
                          fresnel_ir_adjoint, fresnel_tf, fresnel_tf_adjoint, propagate,
                          propagate_adjoint, resolve_method)

__all__ = [
    "cdp", "errors", "grid", "noise", "operator", "propagation",
    "CDPOperator", "CDPSystem", "CDP_METHODS", "DETECTOR_ORDERS", "check_detector_order",
    "LinearOperator", "PseudoInverse", "adjointness_error", "estimate_norm_sq",
    "Grid", "Propagated", "propagate", "propagate_adjoint", "resolve_method", "choose_method", "METHODS",
    "METHOD_OPTIONS", "fraunhofer", "fraunhofer_adjoint", "fresnel_tf", "fresnel_tf_adjoint",
    "fresnel_ir", "fresnel_ir_adjoint", "fresnel_1fft", "fresnel_1fft_adjoint", "asm", "asm_adjoint",
    "OpticsError", "UnitsError", "ShapeError", "NonFiniteError", "SamplingError", "LUTError",
    "PitchRatioError", "GeometryError", "IntensityError", "MaterialError", "WavelengthRangeError", "OptionError",
    "DetectorOrderWarning", "NoiseModelError",
]
