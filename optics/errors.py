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
