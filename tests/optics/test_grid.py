"""Grid conventions: axis at N//2, fftfreq frequencies, centred transforms, pad/crop adjointness."""
import math

import pytest
import torch

import optics
from optics.grid import (Grid, centered_fft2, centered_ifft2, coords, crop_centered, fast_size,
                         freqs, pad_centered)


@pytest.mark.parametrize("n", [7, 8])
def test_axis_at_n_over_2_and_fftfreq_spacing(n):
    x = coords(n, 2e-6)
    assert x[n // 2] == 0 and x[n // 2 + 1] == pytest.approx(2e-6)
    f = freqs(n, 2e-6)
    assert f[0] == 0  # a DC sample for every N
    assert float(f[1] - f[0]) == pytest.approx(1 / (n * 2e-6))  # not 1/((N-1)dx)
    fc = freqs(n, 2e-6, centered=True)
    assert fc[n // 2] == 0


@pytest.mark.parametrize("n", [7, 8])
def test_centered_fft_of_a_delta_on_axis_is_flat_and_a_shifted_delta_is_a_ramp(n):
    u = torch.zeros(n, n, dtype=torch.complex128)
    u[n // 2, n // 2] = 1
    assert torch.allclose(centered_fft2(u), torch.ones(n, n, dtype=torch.complex128))
    v = torch.zeros(n, n, dtype=torch.complex128)
    v[n // 2, n // 2 + 1] = 1  # one sample towards +x → phase ramp e^{-i2π f x}
    ramp = torch.exp(-2j * math.pi * (torch.arange(n) - n // 2) / n).to(torch.complex128)
    assert torch.allclose(centered_fft2(v), ramp[None, :].expand(n, n))
    assert torch.allclose(centered_ifft2(centered_fft2(v)), v)


def test_pad_and_crop_are_adjoint_and_keep_the_axis():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.complex128, generator=g)
    y = torch.randn(2, 11, 12, dtype=torch.complex128, generator=g)
    err = optics.adjointness_error(lambda v: pad_centered(v, (11, 12)), lambda v: crop_centered(v, (5, 6)), x, y)
    assert err < 1e-14
    p = pad_centered(x, (11, 12))
    assert p[..., 11 // 2, 12 // 2].equal(x[..., 5 // 2, 6 // 2])
    assert torch.equal(crop_centered(p, (5, 6)), x)


def test_fast_size_and_grid():
    assert fast_size(1025) == 1029 and fast_size(1024) == 1024 and fast_size(127) == 128
    g = Grid((64, 32), 4e-6)
    assert g.extent_m == (64 * 4e-6, 32 * 4e-6)
    assert g.critical_distance_m(500e-9) == pytest.approx(64 * 16e-12 / 500e-9)
    y, x = g.meshgrid()
    assert y.shape == (64, 32) and x[0, 16] == 0 and y[32, 0] == 0
    with pytest.raises(optics.UnitsError, match="pitches are in metres"):
        Grid((8, 8), 8.0)
    with pytest.raises(optics.ShapeError):
        Grid((0, 8), 1e-6)
