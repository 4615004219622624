"""EMVA 1288 photon transfer against the known synthetic camera, and bad input."""
import numpy as np
import pytest

from calibration.camera import characterize_camera
from calibration.capture import read_capture
from calibration.errors import CameraError


@pytest.fixture(scope="module")
def camera(sample_path):
    return characterize_camera(read_capture(sample_path)), read_capture(sample_path)


def test_gain_read_noise_dark_current_recovered(camera, truth):
    cm, _ = camera
    # K: the tolerance, 3 %; the stated 1σ must be honest (truth within 3σ)
    assert cm.gain_dn_per_e == pytest.approx(truth["gain_dn_per_e"], rel=0.03)
    assert abs(cm.gain_dn_per_e - truth["gain_dn_per_e"]) < 3 * cm.std["gain_dn_per_e"] + 1e-3
    assert cm.read_noise_e == pytest.approx(truth["read_noise_e"], rel=0.10)
    assert cm.dark_current_e_per_s == pytest.approx(truth["dark_current_e_per_s"], rel=0.15)
    assert cm.offset_dn == pytest.approx(truth["offset_dn"], abs=1.0)
    # PRNU 1 % (high-pass estimate), saturation: the variance maximum lies below the full well
    assert 0.005 < cm.prnu < 0.02
    assert 0.8 * truth["full_well_e"] < cm.saturation_capacity_e <= 1.02 * truth["full_well_e"]
    assert 4 <= cm.bad_pixels.sum() <= 20  # 4 dead + 4 hot pixels in the truth


def test_correction_and_sensor(camera, truth):
    cm, cap = camera
    e = cm.correct(cap.frames, cap.exposure_s)
    assert np.isnan(e[:, cm.bad_pixels]).all()
    dark = cap.indices(2)
    # dark frames correct to ~0 e- on average
    assert abs(np.nanmean(e[dark])) < 3.0
    s = cm.sensor(exposure_s=0.01)
    assert s.gain_e_per_dn == pytest.approx(1 / cm.gain_dn_per_e)
    assert s.read_noise_e == pytest.approx(cm.read_noise_e)
    assert s.bit_depth == 12


def test_too_few_flats_is_refused(camera):
    _, cap = camera
    import copy
    c2 = copy.copy(cap)
    c2.image_key = cap.image_key.copy()
    c2.image_key[cap.indices(1)[4:]] = 0  # only two flat pairs left
    with pytest.raises(CameraError, match="photon-transfer curve needs >= 4"):
        characterize_camera(c2)
