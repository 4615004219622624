"""The physics of a dataset file, from the file alone: ``physics_from_file(path)``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from optics.cdp import UNIT_FREE_METHOD, CDPSystem
from optics.errors import NoiseModelError
from optics.noise import NoiseModel, make_noise_model
from optics.sensor import NOISE_MODELS, Sensor

from ..errors import DatasetFormatError
from .attrs import py_value, read_params_group
from .format import open_cdp_file

__all__ = ["physics_from_file", "operator_from_params", "noise_from_params", "SENSOR_KEYS"]

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


def noise_from_params(params: dict, where="") -> Optional[NoiseModel]:
    """The :class:`optics.noise.NoiseModel` stored in ``/parameters/noise`` (``model`` plus its
    parameters), or None when the file has none or its noise came from the sensor (``model =
    "sensor"``; files written before the noise models existed have no such group)."""
    n = params.get("noise") or {}
    name = n.get("model")
    if name is None or name == "sensor":
        return None
    try:
        return make_noise_model(str(name), **{k: v for k, v in n.items() if k != "model"})
    except NoiseModelError as exc:
        raise DatasetFormatError(f"{where}: /parameters/noise does not describe a noise model: {exc}") from exc


def operator_from_params(params: dict, masks_rad: torch.Tensor, mask_amplitude=None, *, noise=None) -> CDPSystem:
    """The :class:`optics.cdp.CDPSystem` of a stored parameter tree (``/parameters`` as
    :func:`read_params` returns it) and effective modulation ``amplitude·exp(i·masks_rad)``,
    noiseless unless a ``noise`` model (:func:`noise_from_params`) is given; callers may change
    the tree first (e.g. ``oversampling`` for an operator on the padded grid). The unit-free
    method ``fft`` takes no pitch, wavelength or distance; files without ``detector_order`` were
    written centred."""
    o = params["optics"]
    mod = torch.polar(torch.ones_like(masks_rad) if mask_amplitude is None else mask_amplitude,
                      masks_rad).to(torch.complex64)
    opts = {k: v for k, v in (params.get("propagation") or {}).items() if v is not None}
    method = str(o["method"])
    units = {} if method == UNIT_FREE_METHOD else dict(
        pitch_m=float(o["pitch_m"]), wavelength_m=float(o["wavelength_m"]), z_m=float(o["z_m"]))
    return CDPSystem(mod, method=method, oversampling=float(o.get("oversampling") or 1.0),
                     detector_order=str(o.get("detector_order") or "centered"), noise=noise,
                     **units, **opts).eval()


def physics_from_file(path) -> tuple[CDPSystem, Sensor | None]:
    """``(operator, sensor)`` of a CDP dataset, built from the file only.

    ``operator`` is the noiseless linear :class:`optics.cdp.CDPSystem` ``x ↦ P(M_l ⊙ x)`` with
    the stored effective modulation ``M_l = mask_amplitude[l]·exp(i·masks[l])`` (SLM pixels,
    fill factor, cross-talk and quantisation already folded in) and the stored
    ``/parameters/optics`` (``pitch_m``, ``wavelength_m``, ``z_m``, ``method``,
    ``oversampling``) and ``/parameters/propagation`` options, in eval mode;
    ``operator.intensity(x)`` is the noiseless ``|A x|²`` of the measurements.

    With a noise model on the intensity (``/parameters/noise``, ``noise.model`` of the config:
    prdeep, poisson, gaussian, none) the operator carries it (``operator.noise_model``;
    ``operator.measure(x)`` draws from it) and the measurements are intensities in the
    operator's units, so ``sensor`` is None. The unit-free ``method = "fft"`` needs no pitch,
    wavelength or distance; ``detector_order`` defaults to ``"centered"`` (older files).

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
    _require(o, ("method",), "optics", p)
    if o.get("method") != UNIT_FREE_METHOD:
        _require(o, ("pitch_m", "wavelength_m", "z_m"), "optics", p)
    noise = noise_from_params(params, p)
    system = operator_from_params(params, masks, amp, noise=noise)
    s = params.get("sensor")
    if units != "DN" or not s or not s.get("enabled", True) or noise is not None:
        return system, None
    _require(s, ("gain_e_per_dn", "exposure_s"), "sensor", p)
    grid = None
    if s.get("pitch_m") is not None:
        det = o.get("detector_pitch_m")
        det = system.out_pitch_m if det is None else det
        grid = float(det[-1]) if isinstance(det, (list, tuple)) else float(det)
    kw = {k: s[k] for k in SENSOR_KEYS if k in s}
    if s.get("noise") in NOISE_MODELS:  # the sensor's own noise model, as simulated
        kw["noise"] = s["noise"]
    sensor = Sensor(pitch_m=s.get("pitch_m"), grid_pitch_m=grid, budget_dims=3, **kw).eval()
    return system, sensor
