"""The physics of a dataset file, from the file alone: ``physics_from_file(path)``."""
from __future__ import annotations

from pathlib import Path

import torch

from optics.cdp import CDPSystem
from optics.sensor import Sensor

from ..errors import DatasetFormatError
from .attrs import py_value, read_params_group
from .format import open_cdp_file

__all__ = ["physics_from_file", "operator_from_params", "SENSOR_KEYS"]

#: ``/parameters/sensor`` attributes passed to :class:`optics.sensor.Sensor` (``pitch_m`` aside).
SENSOR_KEYS = ("quantum_efficiency", "mean_photons", "read_noise_e", "dark_current_e_per_s",
               "exposure_s", "gain_e_per_dn", "offset_dn", "bit_depth", "full_well_e")


def _require(group: dict, keys, where: str, p: Path) -> None:
    missing = [k for k in keys if group.get(k) is None]
    if missing:
        raise DatasetFormatError(
            f"{p}: /parameters/{where} lacks {', '.join(missing)}; physics_from_file needs the "
            f"parameters `phaseforge simulate` stores — re-simulate the file, or build the "
            f"operator yourself from read_params/read_masks")


def operator_from_params(params: dict, masks_rad: torch.Tensor, mask_amplitude=None) -> CDPSystem:
    """The noiseless :class:`optics.cdp.CDPSystem` of a stored parameter tree (``/parameters``
    as :func:`read_params` returns it) and effective modulation ``amplitude·exp(i·masks_rad)``;
    callers may change the tree first (e.g. ``oversampling`` for an operator on the padded grid)."""
    o = params["optics"]
    mod = torch.polar(torch.ones_like(masks_rad) if mask_amplitude is None else mask_amplitude,
                      masks_rad).to(torch.complex64)
    opts = {k: v for k, v in (params.get("propagation") or {}).items() if v is not None}
    return CDPSystem(mod, pitch_m=float(o["pitch_m"]), wavelength_m=float(o["wavelength_m"]),
                     z_m=float(o["z_m"]), method=str(o["method"]),
                     oversampling=float(o.get("oversampling") or 1.0), **opts).eval()


def physics_from_file(path) -> tuple[CDPSystem, Sensor | None]:
    """``(operator, sensor)`` of a CDP dataset, built from the file only.

    ``operator`` is the noiseless linear :class:`optics.cdp.CDPSystem` ``x ↦ P(M_l ⊙ x)`` with
    the stored effective modulation ``M_l = mask_amplitude[l]·exp(i·masks[l])`` (SLM pixels,
    fill factor, cross-talk and quantisation already folded in) and the stored
    ``/parameters/optics`` (``pitch_m``, ``wavelength_m``, ``z_m``, ``method``,
    ``oversampling``) and ``/parameters/propagation`` options, in eval mode;
    ``operator.intensity(x)`` is the noiseless ``|A x|²`` of the measurements.

    ``sensor`` is the :class:`optics.sensor.Sensor` rebuilt from ``/parameters/sensor``
    (photon budget per snapshot set, ``budget_dims=3``, as simulated; binning from the stored
    camera pitch and the detector-plane pitch), for ``sensor.dn_to_photons(y)`` — the intensity
    units the solvers fit — or None when the file's measurements are not in DN (no sensor was
    simulated). Raises :class:`DatasetFormatError` when a needed parameter is absent.
    """
    p = Path(path)
    with open_cdp_file(p) as f:
        params = read_params_group(f["parameters"], with_units=False) if "parameters" in f else {}
        masks = torch.from_numpy(f["masks"][...])
        amp = torch.from_numpy(f["mask_amplitude"][...]) if "mask_amplitude" in f else None
        units = py_value(f["measurements"].attrs["units"])
    o = params.get("optics") or {}
    _require(o, ("pitch_m", "wavelength_m", "z_m", "method"), "optics", p)
    system = operator_from_params(params, masks, amp)
    s = params.get("sensor")
    if units != "DN" or not s or not s.get("enabled", True):
        return system, None
    _require(s, ("gain_e_per_dn", "exposure_s"), "sensor", p)
    grid = None
    if s.get("pitch_m") is not None:
        det = o.get("detector_pitch_m")
        det = system.out_pitch_m if det is None else det
        grid = float(det[-1]) if isinstance(det, (list, tuple)) else float(det)
    kw = {k: s[k] for k in SENSOR_KEYS if k in s}
    sensor = Sensor(pitch_m=s.get("pitch_m"), grid_pitch_m=grid, budget_dims=3, **kw).eval()
    return system, sensor
