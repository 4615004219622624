"""Every ``<name>__units`` attribute a dataset file can carry, audited against its quantity
(issue 18 item 8: ``dark_current_e_per_s__units`` was ``"s"`` and ``gain_e_per_dn__units``
``"DN"``, the unit of the name's last word instead of the whole suffix)."""
import glob
from pathlib import Path

import pytest

from calibration.calibfile import CAMERA_UNITS, FIT_UNITS
from learning.h5io.attrs import UNITS_SUFFIX, flatten, normalize_params, unit_for
from phaseforge.build import system_from_config
from phaseforge.config import default_config, load
from phaseforge.pipeline import _file_params

ROOT = Path(__file__).resolve().parents[2]

#: The audited unit of every unit-suffixed parameter a shipped configuration writes to
#: ``/parameters`` (hand-checked against the quantity each one holds). A new parameter with a
#: unit suffix fails the test until it is audited here.
AUDITED = {
    "optics.wavelength_m": "m", "optics.pitch_m": "m", "optics.z_m": "m", "optics.detector_pitch_m": "m",
    "slm.pixel_pitch_m": "m", "slm.dead_phase_rad": "rad", "slm.crosstalk_sigma_m": "m",
    "slm.max_phase_rad": "rad", "slm.lut_phase_rad": "rad",
    "sensor.pitch_m": "m", "sensor.mean_photons": "photons", "sensor.read_noise_e": "e-",
    "sensor.dark_current_e_per_s": "e-/s",   # electrons per second per pixel
    "sensor.exposure_s": "s",
    "sensor.gain_e_per_dn": "e-/DN",          # electrons per digital number (the inverse of EMVA K)
    "sensor.offset_dn": "DN", "sensor.full_well_e": "e-",
    "data.phase_range_rad": "rad",
}


def _all_units():
    """``{dotted name: unit}`` of every ``__units`` entry over the default configuration and each
    shipped config (with a tabulated SLM LUT, so its phases are written too)."""
    found = {}
    cfgs = [default_config()] + [load(p) for p in sorted(glob.glob(str(ROOT / "data" / "configs" / "*.yaml")))]
    lut_cfg = load(None, ["slm.enabled=true", "slm.lut={gray: [0, 255], phase_rad: [0.0, 6.0]}"])
    for cfg in cfgs + [lut_cfg]:
        params = normalize_params(_file_params(cfg, system_from_config(cfg)))
        for k, v in flatten(params).items():
            if k.endswith(UNITS_SUFFIX):
                found[k[:-len(UNITS_SUFFIX)]] = v
    return found


def test_every_units_attribute_matches_its_quantity():
    found = _all_units()
    assert "slm.lut_phase_rad" in found  # the LUT configuration was written
    unaudited = sorted(set(found) - set(AUDITED))
    assert not unaudited, f"unit-suffixed parameters not audited in AUDITED: {unaudited}"
    wrong = {k: (v, AUDITED[k]) for k, v in found.items() if v != AUDITED[k]}
    assert not wrong, f"__units differ from the audited unit (written, audited): {wrong}"
    assert set(AUDITED) <= set(found)  # no stale entries: every audited name is still written


@pytest.mark.parametrize("name,unit", [
    ("dark_current_e_per_s", "e-/s"), ("gain_e_per_dn", "e-/DN"), ("gain_dn_per_e", "DN/e-"),
    ("e_per_s", "e-/s"), ("dark_slope_map_dn_per_s", "DN/s"), ("k_rad_per_m", "rad/m"),
    ("freq_per_m", "1/m"), ("per_m", "1/m"), ("area_m2", "m^2"), ("Wavelength_M", "m"),
    ("time_per_step_s", "s"),   # "step" is no unit: the name ends in seconds
    ("x_per_foo", None), ("s", None), ("bit_depth", None), ("n_masks", None),
])
def test_unit_for_reads_the_whole_suffix(name, unit):
    assert unit_for(name) == unit


def test_calibration_file_units_agree_with_the_name_suffixes():
    """CALIBRATION.h5 writes its camera and fit units from hand-written tables: wherever a name
    has a unit suffix, the two homes must agree."""
    for table in (CAMERA_UNITS, FIT_UNITS):
        for name, unit in table.items():
            if unit_for(name) is not None:
                assert unit_for(name) == unit, name
