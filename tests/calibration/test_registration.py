"""Registration: a known similarity transform is recovered; an unrelated image is refused."""
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.transform import SimilarityTransform, warp

from calibration.errors import RegistrationError
from calibration.registration import register


def _speckle(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal((n, n)), 1.5)


def test_similarity_recovered_subpixel():
    fixed = _speckle()
    # moving(u) = fixed(T(u)) with T a small rotation, scale and shift about the centre
    c = np.array([32.0, 32.0])
    T = (SimilarityTransform(translation=-c) + SimilarityTransform(scale=1.02, rotation=math.radians(1.5))
         + SimilarityTransform(translation=c + np.array([1.7, -2.3])))
    moving = warp(fixed, T, order=3, mode="reflect")
    reg = register(moving, fixed, kind="similarity")
    s, rot, (tx, ty) = reg.centred(fixed.shape)
    assert s == pytest.approx(1.02, abs=0.005)
    assert rot == pytest.approx(math.radians(1.5), abs=math.radians(0.3))
    assert (tx, ty) == pytest.approx((1.7, -2.3), abs=0.15)
    assert reg.quality > 0.95


def test_unrelated_image_refused_with_reason():
    with pytest.raises(RegistrationError, match=r"quality r = .* below 0.5.*pattern_id"):
        register(_speckle(seed=1), _speckle(seed=2))
