"""Exception types of :mod:`calibration`.

Every message names the quantity, the value, the limit and the fix. All are ``ValueError``
subclasses, so the CLI reports them as one ``phaseforge: error: …`` line with exit status 2.
"""
from __future__ import annotations

from typing import List, Sequence


class CalibrationError(ValueError):
    """Base class for bad input to, or an untrustworthy result of, the calibration layer."""


class CaptureError(CalibrationError):
    """A capture file is unreadable or invalid; ``problems`` lists every problem found (the
    message joins them, one per line), so a lab fixes them all in one round."""

    def __init__(self, path, problems: Sequence[str]):
        self.path = str(path)
        self.problems: List[str] = list(problems)
        head = f"{self.path}: {len(self.problems)} problem(s) in the capture file"
        super().__init__(head + ":\n  - " + "\n  - ".join(self.problems))


class CameraError(CalibrationError):
    """The dark/flat/photon-transfer frames cannot characterise the camera (too few exposures,
    no linear range, saturation everywhere, …)."""


class RegistrationError(CalibrationError):
    """A capture does not match the simulated pattern well enough to trust an alignment."""


class LUTFitError(CalibrationError):
    """The grating frames do not determine a gray-level → phase table."""


class FitError(CalibrationError):
    """The physical-parameter fit failed; the message says why (no calibration is written)."""


class CalibrationFileError(CalibrationError):
    """A CALIBRATION.h5 file is missing, truncated, from another program or incomplete."""
