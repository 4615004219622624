"""learning.encoding: values exactly as defined, errors as documented.

Tolerance 1e-6: complex64 carries ~7 significant digits and |x|, arg x are O(1).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learning.encoding import ObjectSet, encode, partner_index
from learning.errors import EncodingError


@pytest.fixture
def imgs():
    g = np.random.default_rng(0)
    return g.random((3, 5, 6)).astype(np.float32)


def test_amplitude_encoding_is_the_image(imgs):
    x = encode(imgs[0], encoding="amplitude")
    assert x.dtype == torch.complex64 and x.shape == (5, 6)
    np.testing.assert_array_equal(x.real.numpy(), imgs[0])
    np.testing.assert_array_equal(x.imag.numpy(), 0.0)


def test_phase_encoding_unit_modulus_and_linear_phase(imgs):
    p0, p1 = -1.0, 2.0  # inside (-π, π], so torch.angle needs no unwrapping
    x = encode(imgs[0], encoding="phase", phase_range_rad=(p0, p1))
    np.testing.assert_allclose(x.abs().numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(x.angle().numpy(), p0 + imgs[0] * (p1 - p0), atol=1e-6)
    # default range [0, π]: compare on the unit circle (angle π may read as -π)
    xd = encode(torch.from_numpy(imgs[1]), encoding="phase").to(torch.complex128)
    ref = torch.polar(torch.ones(5, 6, dtype=torch.float64),
                      torch.from_numpy(imgs[1]).double() * math.pi)
    assert float((xd - ref).abs().max()) < 1e-6
    # the phase image may also be passed as phase_img
    torch.testing.assert_close(encode(None, imgs[0], encoding="phase",
                                      phase_range_rad=(p0, p1)), x)


def test_complex_encoding_amplitude_and_phase_from_two_images(imgs):
    x = encode(imgs[0], imgs[1], encoding="complex", phase_range_rad=(0.5, 2.5))
    np.testing.assert_allclose(x.abs().numpy(), imgs[0], atol=1e-6)
    np.testing.assert_allclose(x.angle().numpy(), 0.5 + 2.0 * imgs[1], atol=1e-6)


def test_batched_equals_per_image_and_complex128(imgs):
    xb = encode(imgs, encoding="phase")
    assert xb.shape == (3, 5, 6)
    for k in range(3):
        torch.testing.assert_close(xb[k], encode(imgs[k], encoding="phase"), rtol=0, atol=0)
    assert encode(imgs, encoding="amplitude", dtype=torch.complex128).dtype == torch.complex128


@pytest.mark.parametrize("rng, pattern", [((0.0, 7.0), "2π"), ((1.0, 1.0), "zero span"),
                                          ((0.0, float("nan")), "finite")])
def test_bad_phase_range_is_explained(imgs, rng, pattern):
    with pytest.raises(EncodingError, match=pattern):
        encode(imgs[0], encoding="phase", phase_range_rad=rng)


def test_full_two_pi_span_is_allowed(imgs):
    x = encode(imgs[0], encoding="phase", phase_range_rad=(0.0, 2 * math.pi))
    np.testing.assert_allclose(x.abs().numpy(), 1.0, atol=1e-6)


def test_input_errors(imgs):
    with pytest.raises(EncodingError, match="needs two images"):
        encode(imgs[0], encoding="complex")
    with pytest.raises(EncodingError, match="encoding='complex'"):
        encode(imgs[0], imgs[1], encoding="amplitude")
    with pytest.raises(EncodingError, match=r"outside \[0, 1\]"):
        encode(imgs[0] * 3, encoding="amplitude")
    with pytest.raises(EncodingError, match="differ in shape"):
        encode(imgs[0], imgs[1][:4], encoding="complex")
    with pytest.raises(EncodingError, match="not one of"):
        encode(imgs[0], encoding="intensity")


def test_partner_is_deterministic_and_never_itself():
    for n in range(2, 60):
        for i in range(n):
            j = partner_index(i, n, seed=3)
            assert 0 <= j < n and j != i
            assert j == partner_index(i, n, seed=3)
    assert partner_index(0, 1) == 0


def test_object_set_items(imgs):
    amp = ObjectSet(imgs, encoding="amplitude")
    assert len(amp) == 3
    torch.testing.assert_close(amp[1], encode(imgs[1], encoding="amplitude"))
    cx = ObjectSet(imgs, encoding="complex", phase_range_rad=(0.0, 1.0), seed=2)
    for i in range(3):
        j = cx.partner(i)
        assert j != i
        torch.testing.assert_close(cx[i], encode(imgs[i], imgs[j], encoding="complex",
                                                 phase_range_rad=(0.0, 1.0)), rtol=0, atol=0)
    torch.testing.assert_close(cx[-1], cx[2], rtol=0, atol=0)
    with pytest.raises(IndexError):
        cx[3]
    with pytest.raises(EncodingError, match="2π"):
        ObjectSet(imgs, encoding="phase", phase_range_rad=(0, 10))
