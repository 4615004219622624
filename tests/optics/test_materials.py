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


# ---------------------------------------------------------------------------------------------
# Value tests: the Sellmeier equation with the published coefficients, the phase ↔ height
# relation, every option and the error texts.
# ---------------------------------------------------------------------------------------------
from optics.errors import NonFiniteError  # noqa: E402

# Coefficients transcribed from the sources (Malitson 1965; SCHOTT N-BK7 data sheet)
MALITSON_B = (0.6961663, 0.4079426, 0.8974794)
MALITSON_C = (0.0684043 ** 2, 0.1162414 ** 2, 9.896161 ** 2)
SCHOTT_B = (1.03961212, 0.231792344, 1.01046945)
SCHOTT_C = (0.00600069867, 0.0200179144, 103.560653)


def _sellmeier(lam_um, B, C):
    """n(λ) = sqrt(1 + Σ B_i λ²/(λ² − C_i)), λ in µm, C in µm² (written out independently)."""
    l2 = lam_um * lam_um
    return math.sqrt(1.0 + B[0] * l2 / (l2 - C[0]) + B[1] * l2 / (l2 - C[1]) + B[2] * l2 / (l2 - C[2]))


@pytest.mark.parametrize("lam_um", [0.2139, 0.3, 0.486, 0.5876, 0.6563, 1.064, 1.55, 2.5])
def test_sellmeier_equation_with_the_published_coefficients(lam_um):
    """Both glasses, scalar and tensor paths, against the equation evaluated here: agreement to
    float64 round-off (the tensor path squares λ·1e6 in float64 as well)."""
    lam_m = lam_um * 1e-6
    if lam_um >= 0.3:
        n = _sellmeier(lam_um, SCHOTT_B, SCHOTT_C)
        assert NBK7.n(lam_m) == pytest.approx(n, rel=1e-14)
        assert float(NBK7.n(torch.tensor([lam_m, lam_m], dtype=torch.float64))[0]) == pytest.approx(n, rel=1e-14)
    n = _sellmeier(lam_um, MALITSON_B, MALITSON_C)
    assert FUSED_SILICA.n(lam_m) == pytest.approx(n, rel=1e-14)
    assert float(FUSED_SILICA.n(torch.tensor([lam_m, lam_m], dtype=torch.float64))[1]) == pytest.approx(n, rel=1e-14)


def test_more_catalogue_lines():
    """Further published indices (5 decimals, ±2e-5 ≈ rounding of the last digit + fit residual):
    N-BK7 n_F(486.1 nm) = 1.52238, n_C(656.3 nm) = 1.51432, n(1060 nm) = 1.50669;
    fused silica n_F = 1.46313, n_C = 1.45637, n(1064 nm) = 1.44963."""
    for mat, lam, ref in ((NBK7, 486.1e-9, 1.52238), (NBK7, 656.3e-9, 1.51432), (NBK7, 1060e-9, 1.50669),
                          (FUSED_SILICA, 486.1e-9, 1.46313), (FUSED_SILICA, 656.3e-9, 1.45637),
                          (FUSED_SILICA, 1064e-9, 1.44963)):
        assert mat.n(lam) == pytest.approx(ref, abs=2e-5), (mat.name, lam)


def test_material_attributes_as_published():
    assert FUSED_SILICA.name == "fused silica" and NBK7.name == "N-BK7"
    assert FUSED_SILICA.sellmeier_b == MALITSON_B and FUSED_SILICA.sellmeier_c_um2 == MALITSON_C
    assert NBK7.sellmeier_b == SCHOTT_B and NBK7.sellmeier_c_um2 == SCHOTT_C
    assert FUSED_SILICA.wavelength_range_m == (0.21e-6, 3.71e-6) and NBK7.wavelength_range_m == (0.3e-6, 2.5e-6)
    assert FUSED_SILICA.constant_n is None and NBK7.constant_n is None


def test_tensor_dtypes_and_shapes():
    lam32 = torch.tensor([500e-9, 600e-9], dtype=torch.float32)
    n32 = FUSED_SILICA.n(lam32)
    assert n32.dtype == torch.float32
    assert float(n32[1]) == pytest.approx(FUSED_SILICA.n(600e-9), rel=1e-6)
    # a constant material returns its index in the wavelength's shape and dtype
    c = constant_index(1.25)
    lam = torch.tensor([[500e-9, 600e-9]], dtype=torch.float64)
    nc = c.n(lam)
    assert nc.dtype == torch.float64 and torch.equal(nc, torch.full((1, 2), 1.25, dtype=torch.float64))
    assert c.n(lam32).dtype == torch.float32
    # float32 wavelengths are evaluated in float64 and rounded once: equal to the float64 result
    # cast to float32 (a float32 evaluation differs in the last bit for about a quarter of these)
    many = torch.linspace(400e-9, 1000e-9, 301, dtype=torch.float32)
    assert torch.equal(FUSED_SILICA.n(many), FUSED_SILICA.n(many.double()).float())
    assert c.n(550e-9) == 1.25
    # a one-element tensor is a scalar wavelength: tensor out for a tensor in
    one = FUSED_SILICA.n(torch.tensor([550e-9], dtype=torch.float64))
    assert isinstance(one, torch.Tensor) and float(one[0]) == pytest.approx(FUSED_SILICA.n(550e-9), rel=1e-14)
    assert FUSED_SILICA.n(torch.tensor(550e-9, dtype=torch.float64)).shape == ()


def test_tensor_wavelength_errors():
    with pytest.raises(UnitsError, match="^wavelength_m must be real$"):
        FUSED_SILICA.n(torch.tensor([500e-9, 600e-9], dtype=torch.complex128))
    with pytest.raises(UnitsError, match="^wavelength_m is empty$"):
        FUSED_SILICA.n(torch.zeros(0, dtype=torch.float64))
    with pytest.raises(NonFiniteError, match="wavelength_m contains 1 NaN/inf"):
        FUSED_SILICA.n(torch.tensor([500e-9, float("nan")], dtype=torch.float64))
    # the units check runs on both ends of a tensor
    with pytest.raises(UnitsError, match=r"wavelength_m = 633.0 m is outside 1 nm … 1 mm"):
        constant_index(1.5).n(torch.tensor([500e-9, 633.0], dtype=torch.float64))
    with pytest.raises(UnitsError, match=r"wavelength_m = 1e-12 m is outside 1 nm … 1 mm"):
        constant_index(1.5).n(torch.tensor([1e-12, 500e-9], dtype=torch.float64))
    # the range check names the offending end
    with pytest.raises(WavelengthRangeError, match=r"wavelength_m = 5e-06 m is outside the fused silica"):
        FUSED_SILICA.n(torch.tensor([500e-9, 5e-6], dtype=torch.float64))
    with pytest.raises(WavelengthRangeError, match=r"wavelength_m = 2e-07 m is outside the fused silica"):
        FUSED_SILICA.n(torch.tensor([2e-7, 500e-9], dtype=torch.float64))


def test_range_ends_are_inclusive_with_round_off_slack():
    """The fit range is closed, with 1e-9 relative slack for round-off at the ends."""
    lo, hi = NBK7.wavelength_range_m
    for lam in (lo, hi, lo * (1 - 5e-10), hi * (1 + 5e-10)):
        NBK7.check_wavelength(lam)
    with pytest.raises(WavelengthRangeError, match=r"wavelength_m = 2.99999999.*e-07 m is outside the N-BK7 "
                                                   r"dispersion fit range 3e-07 … 2.5e-06 m \(0.3–2.5 µm\); use "
                                                   r"a wavelength inside the range or a material whose dispersion "
                                                   r"data covers it \(e.g. constant_index\(n\)\)"):
        NBK7.check_wavelength(lo * (1 - 2e-9))
    with pytest.raises(WavelengthRangeError, match=r"2.50000000.*e-06 m is outside"):
        NBK7.check_wavelength(hi * (1 + 2e-9))
    # the slack itself is inside: exactly (1 − 1e-9)·min and (1 + 1e-9)·max pass
    NBK7.check_wavelength(lo * (1 - 1e-9))
    NBK7.check_wavelength(hi * (1 + 1e-9))
    # the µm figures of the message are the range × 1e6 (6 significant digits)
    odd = Material(name="odd", constant_n=1.5, wavelength_range_m=(1.2345649e-6, 2.2345649e-6))
    with pytest.raises(WavelengthRangeError, match=r"\(1.23456–2.23456 µm\)"):
        odd.n(1e-6)
    # an integer tensor cannot be a wavelength in metres (0 or >= 1 m): the units check refuses it
    with pytest.raises(UnitsError, match="outside 1 nm … 1 mm"):
        odd.n(torch.tensor([1, 2]))
    # a material without a range checks units only
    Material(name="wide", sellmeier_b=(1.0,), sellmeier_c_um2=(0.01,)).check_wavelength(1e-9)
    Material(name="wide", sellmeier_b=(1.0,), sellmeier_c_um2=(0.01,)).check_wavelength(1e-3)


def test_user_material_one_term_sellmeier_and_validation():
    """A one-term Sellmeier material: n² = 1 + B λ²/(λ² − C); B = 1, C = 0.25 µm² at λ = 1 µm:
    n² = 1 + 1/0.75 → n = sqrt(7/3). Integer coefficients are stored as floats."""
    m = Material(name="toy", sellmeier_b=[1], sellmeier_c_um2=[0.25], wavelength_range_m=(5e-7, 2e-6))
    assert m.sellmeier_b == (1.0,) and isinstance(m.sellmeier_b[0], float)
    assert m.sellmeier_c_um2 == (0.25,) and isinstance(m.sellmeier_c_um2, tuple)
    assert m.wavelength_range_m == (5e-7, 2e-6)
    assert m.n(1e-6) == pytest.approx(math.sqrt(7 / 3), rel=1e-15)
    assert float(m.n(torch.tensor([1e-6, 2e-6], dtype=torch.float64))[0]) == pytest.approx(math.sqrt(7 / 3),
                                                                                            rel=1e-15)
    r = Material(name="r", constant_n=2, wavelength_range_m=[1e-7, 1e-6])
    assert r.wavelength_range_m == (1e-7, 1e-6) and isinstance(r.wavelength_range_m, tuple)
    assert r.constant_n == 2.0 and isinstance(r.constant_n, float)
    msg = r"material 'bad': give matching Sellmeier B and C tuples \(same length\)"
    with pytest.raises(MaterialError, match=msg):
        Material(name="bad", sellmeier_b=(1.0, 2.0), sellmeier_c_um2=(0.1,))
    with pytest.raises(MaterialError, match=msg):
        Material(name="bad", sellmeier_b=(1.0,))
    with pytest.raises(MaterialError, match=msg):
        Material(name="bad", sellmeier_c_um2=(1.0,))
    with pytest.raises(MaterialError, match=msg):
        Material(name="bad", sellmeier_b=(), sellmeier_c_um2=())
    with pytest.raises(MaterialError, match="material 'bad': give Sellmeier coefficients or constant_n, not both"):
        Material(name="bad", sellmeier_b=(1.0,), sellmeier_c_um2=(0.1,), constant_n=1.5)
    with pytest.raises(MaterialError, match=r"material 'bad': give Sellmeier coefficients or constant_n$"):
        Material(name="bad")
    with pytest.raises(UnitsError, match=r"constant_n must be a finite positive number in \(refractive index\), "
                                         r"got -1.5"):
        Material(name="bad", constant_n=-1.5)
    rng = r"material 'bad': wavelength_range_m must be \(min, max\) with 0 < min < max"
    for bad in ((1e-6, 1e-6), (2e-6, 1e-6), (0.0, 1e-6), (-1e-6, 1e-6)):
        with pytest.raises(MaterialError, match=rng):
            Material(name="bad", constant_n=1.5, wavelength_range_m=bad)


def test_constant_index_and_lookup():
    c = constant_index(1.46)
    assert c.name == "n=1.46" and c.constant_n == 1.46 and c.sellmeier_b is None and c.wavelength_range_m is None
    assert constant_index(1.5, name="resist").name == "resist"
    with pytest.raises(UnitsError, match=r"n must be a finite positive number in \(refractive index\), got 0.0"):
        constant_index(0.0)
    for alias in ("fused_silica", "fused silica", "fused-silica", "silica", "sio2", "SiO2", "  Fused_Silica "):
        assert get_material(alias) is FUSED_SILICA, alias
    for alias in ("n-bk7", "nbk7", "n_bk7", "bk7", "BK7", " N-BK7 "):
        assert get_material(alias) is NBK7, alias
    assert get_material(NBK7) is NBK7
    m = get_material(2)
    assert m.constant_n == 2.0 and m.name == "n=2"
    assert get_material(1.7).constant_n == 1.7
    assert get_material(" 1.5 ").constant_n == 1.5
    with pytest.raises(MaterialError, match="material must be a name, a number or a Material, got bool"):
        get_material(True)
    with pytest.raises(MaterialError, match="material must be a name, a number or a Material, got NoneType"):
        get_material(None)
    with pytest.raises(MaterialError, match=r"unknown material 'Glass'; known: 'fused_silica', 'n-bk7', or a "
                                            r"constant index such as '1.5'"):
        get_material("Glass")


def test_phase_height_relation_values():
    """φ = 2π(n(λ) − n_medium)h/λ, with n from the Sellmeier equation evaluated here."""
    lam = 532e-9
    n = _sellmeier(0.532, MALITSON_B, MALITSON_C)
    h = 1.3e-6
    assert height_to_phase(h, wavelength_m=lam, material="sio2") == pytest.approx(2 * math.pi * (n - 1) * h / lam,
                                                                                    rel=1e-14)
    assert phase_to_height(1.0, wavelength_m=lam, material=FUSED_SILICA) == pytest.approx(lam / (2 * math.pi * (n - 1)),
                                                                                          rel=1e-14)
    assert height_for_2pi(wavelength_m=lam, material=FUSED_SILICA) == pytest.approx(lam / (n - 1), rel=1e-14)
    assert isinstance(height_for_2pi(wavelength_m=lam, material=FUSED_SILICA), float)
    # in a medium (n_medium = 1.2): contrast n − 1.2, both directions
    assert height_for_2pi(wavelength_m=lam, material=NBK7, n_medium=1.2) == pytest.approx(
        lam / (_sellmeier(0.532, SCHOTT_B, SCHOTT_C) - 1.2), rel=1e-14)
    assert phase_to_height(math.pi, wavelength_m=500e-9, material=1.5, n_medium=1.25) == pytest.approx(1e-6,
                                                                                                       rel=1e-14)
    # tensors keep shape and are linear in h / φ
    hs = torch.tensor([[0.0, 1e-6], [2e-6, 3e-6]], dtype=torch.float64)
    phi = height_to_phase(hs, wavelength_m=500e-9, material=1.5)
    assert torch.allclose(phi, 2 * math.pi * 0.5 * hs / 500e-9, rtol=1e-14, atol=0)
    back = phase_to_height(phi, wavelength_m=500e-9, material=1.5)
    assert torch.allclose(back, hs, rtol=1e-14, atol=1e-24)
    # a zero-contrast material is refused (no height makes a phase)
    with pytest.raises(MaterialError, match=r"index contrast n\(λ\) − n_medium = 0 at λ = 5e-07 m must be > 0 to "
                                            r"turn phase into a positive height; use a higher-index material or "
                                            r"a lower-index medium"):
        phase_to_height(1.0, wavelength_m=500e-9, material=1.5, n_medium=1.5)
    # height_to_phase has no such restriction: a lower-index layer gives a negative phase
    assert height_to_phase(1e-6, wavelength_m=500e-9, material=1.25, n_medium=1.5) == pytest.approx(-math.pi,
                                                                                                     rel=1e-14)


def test_phase_height_input_errors():
    with pytest.raises(UnitsError, match=r"height_m must be finite \(in m\), got inf"):
        height_to_phase(float("inf"), wavelength_m=500e-9, material=1.5)
    with pytest.raises(UnitsError, match=r"phase_rad must be finite \(in rad\), got nan"):
        phase_to_height(float("nan"), wavelength_m=500e-9, material=1.5)
    with pytest.raises(UnitsError, match="^height_m must be real$"):
        height_to_phase(torch.ones(2, dtype=torch.complex64), wavelength_m=500e-9, material=1.5)
    with pytest.raises(UnitsError, match="^phase_rad must be real$"):
        phase_to_height(torch.ones(2, dtype=torch.complex64), wavelength_m=500e-9, material=1.5)
    with pytest.raises(NonFiniteError, match="phase_rad contains 1 NaN/inf"):
        phase_to_height(torch.tensor([0.0, float("inf")]), wavelength_m=500e-9, material=1.5)
    with pytest.raises(NonFiniteError, match="height_m contains 1 NaN/inf"):
        height_to_phase(torch.tensor([0.0, float("inf")]), wavelength_m=500e-9, material=1.5)
    with pytest.raises(UnitsError, match=r"n_medium must be a finite positive number in \(refractive index\), "
                                         r"got 0.0"):
        height_to_phase(1e-6, wavelength_m=500e-9, material=1.5, n_medium=0.0)
    with pytest.raises(UnitsError, match="wavelength_m = 500.0 m is outside 1 nm … 1 mm"):
        height_for_2pi(wavelength_m=500.0, material=1.5)
