"""Measurements from anywhere (learning.measured): readers, geometry, and every named bad input."""
import math

import h5py
import numpy as np
import pytest
import tifffile
import torch

from learning.measured import AMPLITUDE_RATIO, Geometry, MeasuredDataError, load_array, load_measured, speckle_ratio


def _problem(n=2, L=3, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = 2 * math.pi * torch.rand(L, size, size, generator=g, dtype=torch.float64)
    x = torch.rand(n, size, size, generator=g)
    masks = torch.polar(torch.ones_like(theta), theta).to(torch.complex64)
    y = (torch.fft.fft2(masks * x[:, None].to(torch.complex64), norm="ortho").abs() ** 2)  # FFT order
    return x.numpy(), theta.numpy(), y.numpy()


def test_fft_order_intensities_give_the_operator_that_reproduces_them():
    x, theta, y = _problem()
    m = load_measured(y, theta, geometry=Geometry(method="fft", detector_order="fft"), truth=x)
    assert m.y.shape == (2, 3, 24, 24) and m.truth.shape == (2, 24, 24)
    torch.testing.assert_close(m.operator.intensity(m.truth), m.y, rtol=1e-4, atol=1e-6)


def test_every_reader_gives_the_same_array(tmp_path):
    _, theta, y = _problem()
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "y.npz", meas=y, other=y[:1])
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["entry/data"] = y
    tifffile.imwrite(tmp_path / "y.tif", y[0], photometric="minisblack")
    np.testing.assert_array_equal(load_array(tmp_path / "y.npy"), y)
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'y.npz'}:meas"), y)
    np.testing.assert_array_equal(load_array(tmp_path / "y.h5"), y)  # the only dataset
    np.testing.assert_array_equal(load_array(tmp_path / "y.tif"), y[0])
    with pytest.raises(MeasuredDataError, match="name one"):
        load_array(tmp_path / "y.npz")
    with pytest.raises(MeasuredDataError, match="does not exist"):
        load_array(tmp_path / "missing.npy")


def test_pickled_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MeasuredDataError, match="cannot read"):
        load_array(tmp_path / "obj.npy")


def test_amplitudes_given_as_intensities_are_named_and_accepted_when_declared():
    x, theta, y = _problem()
    assert speckle_ratio(torch.from_numpy(y)) == pytest.approx(2.0, abs=0.2)  # exponential speckle
    amp = np.sqrt(y)
    assert speckle_ratio(torch.from_numpy(amp)) == pytest.approx(4 / math.pi, abs=0.1)  # Rayleigh
    assert speckle_ratio(torch.from_numpy(amp)) < AMPLITUDE_RATIO
    with pytest.raises(MeasuredDataError, match="look like amplitudes"):
        load_measured(amp, theta, geometry=Geometry(detector_order="fft"))
    m = load_measured(amp, theta, geometry=Geometry(detector_order="fft", quantity="amplitude"))
    torch.testing.assert_close(m.y, torch.from_numpy(y), rtol=1e-5, atol=1e-7)


def test_uncentred_data_is_named_unless_the_order_is_given():
    x, theta, y = _problem()
    with pytest.raises(MeasuredDataError, match="detector_order"):
        load_measured(y, theta, geometry=Geometry.from_mapping({"method": "fft"}))  # default: centered
    centred = np.fft.fftshift(y, axes=(-2, -1))
    m = load_measured(centred, theta, geometry=Geometry.from_mapping({"method": "fft"}), truth=x)
    torch.testing.assert_close(m.operator.intensity(m.truth), m.y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("change, match", [
    (lambda y, th: (y[:, :2], th), "3 masks"),
    (lambda y, th: (y[..., :20], th), "detector window"),
    (lambda y, th: (np.where(np.arange(y.size).reshape(y.shape) == 5, np.nan, y), th), "NaN"),
    (lambda y, th: (y - 0.1 * y.mean(), th), "negative"),
    (lambda y, th: (y.astype(np.complex64), th), "complex"),
    (lambda y, th: (y, th[0, 0]), "masks"),
])
def test_bad_input_is_named(change, match):
    x, theta, y = _problem()
    yy, th = change(y, theta)
    with pytest.raises(MeasuredDataError, match=match):
        load_measured(yy, th, geometry=Geometry(detector_order="fft", order_given=True))


def test_geometry_is_checked():
    with pytest.raises(MeasuredDataError, match="needs pitch_m"):
        Geometry(method="fraunhofer").check()
    with pytest.raises(MeasuredDataError, match="unknown key"):
        Geometry.from_mapping({"method": "fft", "pitch": 1})
    with pytest.raises(MeasuredDataError, match="detector_order"):
        Geometry(detector_order="shifted").check()
