"""Grating LUT: the harmonic law against sin²(Δφ/2), recovery of a known LUT, the tabulated
file readable by optics.slm.PhaseLUT."""
import math

import numpy as np
import pytest
import torch

from calibration.errors import LUTFitError
from calibration.lut import fit_lut, grating_harmonic_model
from optics.slm import PhaseLUT


@pytest.mark.parametrize("z_m", [0.5e-3, 2e-3, 7e-3])
def test_unblurred_grating_harmonic_is_proportional_to_sin2(z_m):
    # the 2/Λ intensity harmonic pairs only odd orders, all ∝ sin(Δφ/2): exact for any z
    d = torch.linspace(0.05, 2 * math.pi - 0.05, 25, dtype=torch.float64)
    h = grating_harmonic_model(d, sigma_m=torch.tensor(0.0, dtype=torch.float64), z_m=z_m, period_m=64e-6,
                               wavelength_m=633e-9, period_px=8)
    ratio = h / torch.sin(d / 2) ** 2
    assert float(ratio.std() / ratio.mean()) < 1e-10


def test_blur_breaks_the_sin2_law_and_grad_flows():
    sig = torch.tensor(2.5e-6, dtype=torch.float64, requires_grad=True)
    d = torch.tensor([0.5, math.pi, 5.5], dtype=torch.float64)
    h = grating_harmonic_model(d, sigma_m=sig, z_m=2e-3, period_m=64e-6, wavelength_m=633e-9, period_px=8)
    h0 = grating_harmonic_model(d, sigma_m=torch.tensor(0.0, dtype=torch.float64), z_m=2e-3, period_m=64e-6,
                                wavelength_m=633e-9, period_px=8)
    # the blurred 2π-ish step (flyback) departs from the law much more than a small step
    hd = h.detach()
    assert abs(float(hd[2] / h0[2]) - 1) > 3 * abs(float(hd[0] / h0[0]) - 1)
    h.sum().backward()
    assert sig.grad is not None and torch.isfinite(sig.grad)


def test_fit_recovers_known_monotone_lut():
    x = np.arange(256) / 255
    truth = 1.8 * math.pi * (0.5 * x + 0.5 * x ** 2)
    g = np.arange(0, 256, 16).tolist() + [255]
    g = np.array(g, dtype=float)
    h = 0.6 * np.sin(truth[g.astype(int)] / 2) ** 2
    rng = np.random.default_rng(0)
    hn = h + 0.002 * rng.standard_normal(h.shape)
    res = fit_lut(g, np.abs(hn), np.full_like(h, 0.002), bit_depth=8)
    err = res.phase_rad - truth
    assert np.sqrt(np.mean(err ** 2)) < 0.05
    assert np.all(np.diff(res.phase_rad) > 0)
    assert 0 < res.phase_std_rad[128] < 0.1   # a stated, finite uncertainty
    lut = res.phase_lut()
    assert isinstance(lut, PhaseLUT) and lut.n_levels == 256


def test_too_few_levels_refused():
    with pytest.raises(LUTFitError, match="gray levels"):
        fit_lut(np.array([0, 50, 100]), np.array([0, 0.1, 0.3]), np.ones(3) * 0.01, bit_depth=8)
