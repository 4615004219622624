"""Tests of optics.materials against catalogue indices and the thin-element phase relation."""
import math

import pytest
import torch

from optics.errors import UnitsError
from optics.materials import (FUSED_SILICA, NBK7, Material, MaterialError, WavelengthRangeError,
                              constant_index, get_material, height_for_2pi, height_to_phase,
                              phase_to_height)

# Catalogue values (Malitson 1965 / Schott N-BK7 data sheet) quoted to 5 decimals: ±1e-4.
CATALOGUE = [
    (FUSED_SILICA, 587.6e-9, 1.45846),
    (FUSED_SILICA, 632.8e-9, 1.45702),
    (NBK7, 587.6e-9, 1.51680),
    (NBK7, 632.8e-9, 1.51509),
]


@pytest.mark.parametrize("mat, lam, n_ref", CATALOGUE)
def test_sellmeier_matches_catalogue(mat, lam, n_ref):
    assert mat.n(lam) == pytest.approx(n_ref, abs=1e-4)


def test_tensor_wavelengths_match_scalar():
    lam = torch.tensor([[587.6e-9, 632.8e-9]], dtype=torch.float64)
    n = NBK7.n(lam)
    assert n.shape == (1, 2) and n.dtype == torch.float64
    assert float(n[0, 1]) == pytest.approx(NBK7.n(632.8e-9), rel=1e-15)


def test_normal_dispersion():
    # n decreases with λ across the visible for both glasses
    for mat in (FUSED_SILICA, NBK7):
        assert mat.n(450e-9) > mat.n(550e-9) > mat.n(650e-9)


def test_height_phase_round_trip_and_2pi_height():
    h = torch.linspace(0, 2e-6, 11, dtype=torch.float64)
    phi = height_to_phase(h, wavelength_m=633e-9, material=FUSED_SILICA)
    back = phase_to_height(phi, wavelength_m=633e-9, material="fused_silica")
    assert torch.allclose(back, h, rtol=1e-14, atol=1e-22)
    h2pi = height_for_2pi(wavelength_m=633e-9, material="fused_silica")
    # n(633 nm) = 1.45702 ± 1e-4 → h = λ/(n − 1) within 1e-4/0.457 ≈ 2.2e-4 relative
    assert h2pi == pytest.approx(633e-9 / 0.45702, rel=3e-4)
    assert height_to_phase(h2pi, wavelength_m=633e-9, material=FUSED_SILICA) == pytest.approx(2 * math.pi, rel=1e-14)


def test_medium_index_reduces_contrast():
    # in water (1.333) a 1 µm step of n = 1.5 gives 2π·0.167·1e-6/λ
    phi = height_to_phase(1e-6, wavelength_m=500e-9, material=constant_index(1.5), n_medium=1.333)
    assert phi == pytest.approx(2 * math.pi * (1.5 - 1.333) * 1e-6 / 500e-9, rel=1e-14)
    with pytest.raises(MaterialError, match=r"index contrast n\(λ\) − n_medium = -0.1"):
        phase_to_height(1.0, wavelength_m=500e-9, material=constant_index(1.4), n_medium=1.5)


def test_get_material_names():
    assert get_material("fused_silica") is FUSED_SILICA
    assert get_material("N-BK7") is NBK7
    m = get_material("1.56")
    assert isinstance(m, Material) and m.n(500e-9) == 1.56
    with pytest.raises(MaterialError, match="unknown material 'unobtainium'"):
        get_material("unobtainium")


def test_out_of_range_wavelength_names_the_range():
    with pytest.raises(WavelengthRangeError, match=r"outside the N-BK7 dispersion fit range .*0.3–2.5 µm"):
        NBK7.n(250e-9)
    with pytest.raises(WavelengthRangeError, match=r"0.21–3.71 µm"):
        height_to_phase(1e-6, wavelength_m=4e-6, material=FUSED_SILICA)
    with pytest.raises(WavelengthRangeError):
        FUSED_SILICA.n(torch.tensor([500e-9, 5e-6]))
    # units check first: 633 (nm, not metres) is caught by the generic wavelength check
    with pytest.raises(UnitsError, match="wavelengths are in metres"):
        FUSED_SILICA.n(633.0)
