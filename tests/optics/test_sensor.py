"""Tests of optics.sensor: noise statistics against theory, saturation/ADC, binning, budget."""
import math

import pytest
import torch

from optics.errors import NonFiniteError, ShapeError, UnitsError
from optics.sensor import IntensityError, Sensor
from optics.slm import PitchRatioError

# 1000 × 200 frame = 200k pixels of one constant level: independent draws of one pixel.
N_ROWS, N_COLS = 1000, 200
N = N_ROWS * N_COLS

# Camera for the statistics tests: μ_e = QE·p + D·t = 0.8·50 + 1000·0.01 = 50 e⁻,
# σ_r = 3 e⁻, K = 2 e⁻/DN, offset 100 DN.
PARAMS = dict(quantum_efficiency=0.8, read_noise_e=3.0, dark_current_e_per_s=1000.0,
              exposure_s=0.01, gain_e_per_dn=2.0, offset_dn=100.0)
P = 50.0
MU_E = 0.8 * P + 10.0
K = 2.0


def _flat(p=P):
    return torch.full((N_ROWS, N_COLS), p, dtype=torch.float64)


def _check_moments(dn, mean_th, var_th, kappa4_th):
    """Sample mean within 4 SE (SE² = var/n); sample variance within 4 SE with
    SE² = (2σ⁴ + κ4)/n (variance of s² for a distribution with fourth cumulant κ4)."""
    m = float(dn.mean())
    v = float(dn.var())
    se_m = math.sqrt(var_th / N)
    se_v = math.sqrt((2 * var_th ** 2 + kappa4_th) / N)
    assert abs(m - mean_th) < 4 * se_m, (m, mean_th, se_m)
    assert abs(v - var_th) < 4 * se_v, (v, var_th, se_v)


def test_exact_path_mean_and_variance_match_poisson_read_dark_theory():
    s = Sensor(**PARAMS).eval()
    dn = s(_flat(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(dn, torch.round(dn))  # integers
    # DN = round((Poisson(μ_e) + N(0, σ_r²))/K + offset):
    # mean μ_e/K + offset; variance (μ_e + σ_r²)/K² + 1/12 (rounding, Sheppard; exact up to
    # e^{-2π²(σ_r/K)²} ≈ e^{-44} because the read noise smooths the density on the DN scale).
    # κ4 = μ_e/K⁴ (Poisson) − 1/120 (uniform rounding error).
    var = (MU_E + 9.0) / K ** 2 + 1 / 12
    _check_moments(dn, MU_E / K + 100.0, var, MU_E / K ** 4 - 1 / 120)


def test_differentiable_path_mean_and_variance_match_theory():
    s = Sensor(**PARAMS).train()
    dn = s(_flat(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(dn, torch.round(dn))  # straight-through rounding rounds in the forward
    # Gaussian approximation: same mean and variance as the exact path; κ4 from rounding only.
    var = (MU_E + 9.0) / K ** 2 + 1 / 12
    _check_moments(dn, MU_E / K + 100.0, var, -1 / 120)


def test_differentiable_path_smooth_moments_without_rounding():
    s = Sensor(**PARAMS)
    dn = s.sample_differentiable(_flat(), generator=torch.Generator().manual_seed(2), rounding=False)
    var = (MU_E + 9.0) / K ** 2  # exactly Gaussian: κ4 = 0
    _check_moments(dn, MU_E / K + 100.0, var, 0.0)


def test_pure_shot_noise_is_poisson():
    # QE 1, no dark, no read noise, K = 1: DN = Poisson(p) exactly; var = mean = p, κ4 = p.
    s = Sensor().eval()
    dn = s(_flat(7.0), generator=torch.Generator().manual_seed(3))
    _check_moments(dn, 7.0, 7.0, 7.0)


def test_saturation_and_bit_depth_exact():
    big = torch.full((4, 5), 1e7, dtype=torch.float64)
    s = Sensor(full_well_e=1001.0, gain_e_per_dn=2.0, offset_dn=10.0, read_noise_e=2.0).eval()
    dn = s(big, generator=torch.Generator().manual_seed(4))
    # electrons clipped at 1001 → DN = round(500.5 + 10) = 510 (half to even), every pixel
    assert torch.equal(dn, torch.full_like(big, 510.0))
    assert torch.equal(s.expected_dn(big), torch.full_like(big, 510.5))
    s8 = Sensor(full_well_e=1001.0, gain_e_per_dn=2.0, offset_dn=10.0, bit_depth=8).eval()
    assert torch.equal(s8(big, generator=torch.Generator().manual_seed(4)), torch.full_like(big, 255.0))
    s8.train()  # differentiable path clamps the same way
    assert torch.equal(s8(big, generator=torch.Generator().manual_seed(4)), torch.full_like(big, 255.0))
    # lower clamp at 0: zero light, zero offset, read noise → half the pixels read negative,
    # clamped to exactly 0, never below
    low = Sensor(read_noise_e=5.0, bit_depth=12).eval()
    d0 = low(torch.zeros(100, 100, dtype=torch.float64), generator=torch.Generator().manual_seed(5))
    assert float(d0.min()) == 0.0 and float((d0 == 0).double().mean()) > 0.4


def test_no_clamp_without_bit_depth():
    s = Sensor(read_noise_e=5.0).eval()
    d = s(torch.zeros(100, 100, dtype=torch.float64), generator=torch.Generator().manual_seed(6))
    assert float(d.min()) < 0  # documented: no ADC range without bit_depth


def test_binning_conserves_total_and_sums_blocks():
    s = Sensor(pitch_m=4e-6, grid_pitch_m=1e-6)
    assert s.binning == 4
    I = torch.rand(2, 8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    b = s.bin(I)
    assert b.shape == (2, 2, 3)
    assert torch.allclose(b.sum((-2, -1)), I.sum((-2, -1)), rtol=1e-14, atol=0)
    assert float(b[1, 1, 2]) == pytest.approx(float(I[1, 4:8, 8:12].sum()), rel=1e-14)
    with pytest.raises(ShapeError, match=r"8×10 is not divisible by the pixel binning 4"):
        s.bin(torch.rand(8, 10))


def test_photon_budget_scaling_exact():
    s = Sensor(mean_photons=123.0)
    I = torch.rand(3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * 1e-3
    p = s.photons(I)
    # per-frame mean is the budget (float64 round-off), shape of each frame preserved
    assert torch.allclose(p.mean((-2, -1)), torch.full((3,), 123.0, dtype=torch.float64), rtol=1e-13, atol=0)
    ratio = p / I
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-13, atol=0)
    # an all-dark frame stays dark instead of dividing by zero
    assert torch.equal(s.photons(torch.zeros(4, 4)), torch.zeros(4, 4))
    # budget over a set of snapshots: the set's mean is the budget, relative brightness kept
    s3 = Sensor(mean_photons=123.0, budget_dims=3)
    p3 = s3.photons(I)
    assert float(p3.mean()) == pytest.approx(123.0, rel=1e-13)
    assert torch.allclose(p3 / I, (p3 / I)[0, 0, 0].expand_as(I), rtol=1e-13, atol=0)


def test_expected_dn_and_dn_to_photons_round_trip():
    s = Sensor(**PARAMS, mean_photons=80.0, pitch_m=2e-6, grid_pitch_m=1e-6)
    I = torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    p = s.photons(I)
    e = s.expected_dn(I)
    assert torch.allclose(e, (0.8 * p + 10.0) / 2.0 + 100.0, rtol=1e-14, atol=0)
    assert torch.allclose(s.dn_to_photons(e), p, rtol=1e-12, atol=1e-12)
    quiet = Sensor(**PARAMS, noise=False).train()
    assert torch.equal(quiet(I), quiet.expected_dn(I))


def test_smooth_differentiable_path_gradcheck():
    s = Sensor(quantum_efficiency=0.7, read_noise_e=2.0, dark_current_e_per_s=50.0, exposure_s=0.1,
               gain_e_per_dn=1.5, offset_dn=20.0, mean_photons=40.0, full_well_e=1e6, bit_depth=16)
    I = torch.rand(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(10)) + 0.1

    def f(x):  # ε frozen by re-seeding per call
        return s.sample_differentiable(x, generator=torch.Generator().manual_seed(0), rounding=False)

    assert torch.autograd.gradcheck(f, (I.requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_straight_through_rounding_gradient_is_identity():
    s = Sensor(gain_e_per_dn=2.0)
    I = torch.full((3, 3), 10.0, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    dn = s.sample_differentiable(I, generator=g)
    dn.sum().backward()
    I2 = I.detach().clone().requires_grad_(True)
    s.sample_differentiable(I2, generator=torch.Generator().manual_seed(0), rounding=False).sum().backward()
    assert torch.equal(I.grad, I2.grad)


def test_seeded_reproducibility():
    s = Sensor(**PARAMS).eval()
    I = _flat()[:10]
    a = s(I, generator=torch.Generator().manual_seed(42))
    b = s(I, generator=torch.Generator().manual_seed(42))
    c = s(I, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    s.train()
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(42)),
                       s(I, generator=torch.Generator().manual_seed(42)))


def test_bad_inputs_rejected_with_messages():
    with pytest.raises(PitchRatioError, match=r"pitch_m = 5e-06 m is not an integer multiple of "
                                              r"grid_pitch_m = 2e-06 m.*choose grid_pitch_m"):
        Sensor(pitch_m=5e-6, grid_pitch_m=2e-6)
    with pytest.raises(UnitsError, match="not attached to a system"):
        Sensor(pitch_m=5e-6).bin(torch.ones(4, 4))
    s = Sensor()
    with pytest.raises(NonFiniteError, match="intensity contains 1 NaN/inf"):
        s(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(IntensityError, match=r"negative values \(min -0.5\)"):
        s(torch.tensor([[1.0, -0.5]]))
    with pytest.raises(IntensityError, match=r"pass \|u\|²"):
        s(torch.ones(2, 2, dtype=torch.complex64))
    with pytest.raises(UnitsError, match="quantum_efficiency = 1.2 exceeds 1"):
        Sensor(quantum_efficiency=1.2)
    with pytest.raises(UnitsError, match="exposure_s must be a finite positive number in s, got 0.0"):
        Sensor(exposure_s=0.0)
    with pytest.raises(UnitsError, match="gain_e_per_dn must be a finite positive number"):
        Sensor(gain_e_per_dn=-1.0)
    with pytest.raises(UnitsError, match=r"read_noise_e = -1.0 e⁻ rms must be >= 0"):
        Sensor(read_noise_e=-1.0)
