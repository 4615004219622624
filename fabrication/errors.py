"""Exception types of :mod:`fabrication`; every message names the value, the limit and the fix."""
from __future__ import annotations


class FabricationError(ValueError):
    """Bad input to an export (design, device, LUT, material, option)."""


class DeviceError(FabricationError):
    """Unknown SLM device or a malformed device description."""


class OutputExistsError(FabricationError):
    """An output file exists and ``overwrite`` was not given."""


class DRCError(FabricationError):
    """Design-rule violations that were not waived; ``.report`` holds the full report."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class VerificationError(FabricationError):
    """A round-trip verification failed; ``.result`` holds the numbers."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
