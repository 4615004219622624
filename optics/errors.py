"""Exception types of :mod:`optics`.

Every message names the quantity, the value, the limit and the fix.
"""
from __future__ import annotations


class OpticsError(ValueError):
    """Base class for bad input to the optics layer."""


class UnitsError(OpticsError):
    """A physical quantity is non-positive, non-finite or implausible for its SI unit."""


class ShapeError(OpticsError):
    """Array shapes disagree (field vs mask, sensor binning, ...)."""


class NonFiniteError(OpticsError):
    """A field, mask or intensity contains NaN or inf."""


class SamplingError(OpticsError):
    """The requested sampling would alias; the message names the criterion and the fix."""


class LUTError(OpticsError):
    """An SLM gray-level → phase look-up table is malformed (e.g. not monotone)."""


class PitchRatioError(ShapeError, UnitsError):
    """Two pitches that must be in an integer ratio are not (it is both a shape and a units
    problem, so it subclasses :class:`ShapeError` and :class:`UnitsError`)."""


class GeometryError(ShapeError, UnitsError):
    """Parts of one optical system disagree about its geometry (simulation pitch of the SLM,
    detector pitch of the sensor, shapes); the message gives both numbers."""


class IntensityError(UnitsError):
    """An intensity is negative or complex (it must be a non-negative real power or count)."""


class MaterialError(OpticsError):
    """Unknown material name or unusable index contrast."""


class WavelengthRangeError(UnitsError):
    """A wavelength lies outside the range a dispersion formula was fitted on."""


class OptionError(OpticsError):
    """An unknown or inapplicable keyword option (e.g. ``pad`` for Fraunhofer propagation)."""


class DetectorOrderWarning(UserWarning):
    """CDP data look stored in the other detector sample order (DC at index 0 vs ``M//2``)
    than the operator's ``detector_order`` (:func:`optics.cdp.check_detector_order`)."""


class NoiseModelError(OpticsError):
    """A noise model's parameter is out of range or its input is not an intensity."""


__all__ = ["OpticsError", "UnitsError", "ShapeError", "NonFiniteError", "SamplingError", "LUTError",
           "PitchRatioError", "GeometryError", "IntensityError", "MaterialError",
           "WavelengthRangeError", "OptionError",
           "DetectorOrderWarning", "NoiseModelError"]
