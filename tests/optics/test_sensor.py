"""Tests of optics.sensor: noise statistics against theory, saturation/ADC, binning, budget."""
import math

import numpy as np

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


# ---------------------------------------------------------------------------------------------
# Value tests: documented defaults, every option and branch, exact small cases, error texts.
# ---------------------------------------------------------------------------------------------
from torch import nn  # noqa: E402

from optics.errors import GeometryError, OpticsError  # noqa: E402
from optics.sensor import NOISE_MODELS, SENSOR_PARAMETERS  # noqa: E402


def test_defaults_are_the_ideal_camera_of_the_docstring():
    """Sensor(): QE 1, no read noise, no dark current, t = 1 ms, K = 1 e⁻/DN, offset 0, no ADC
    range, no full well, exact Poisson noise, per-frame budget — so the noiseless DN is the
    intensity itself (exact: multiplications by 1 and additions of 0 in float64)."""
    s = Sensor()
    for name, v in dict(quantum_efficiency=1.0, read_noise_e=0.0, dark_current_e_per_s=0.0,
                        exposure_s=1e-3, gain_e_per_dn=1.0, offset_dn=0.0).items():
        t = getattr(s, name)
        assert t.dtype == torch.float64 and float(t) == v, name
        assert name in dict(s.named_buffers()), name  # buffers, not parameters (fit=())
    assert s.mean_photons is None and s.full_well_e is None and s.bit_depth is None and s.max_dn is None
    assert s.noise == "poisson" and s.budget_dims == 2 and s.binning == 1
    assert s.pitch_m is None and s.grid_pitch_m is None
    assert list(s.parameters()) == []
    I = torch.tensor([[0.0, 1.5], [1e6, 7.25]], dtype=torch.float64)
    assert torch.equal(s.expected_dn(I), I)
    assert torch.equal(s.dn_to_photons(I), I)
    assert NOISE_MODELS == ("poisson", "gaussian", "none")
    assert SENSOR_PARAMETERS == ("quantum_efficiency", "mean_photons", "read_noise_e", "dark_current_e_per_s",
                                 "exposure_s", "gain_e_per_dn", "offset_dn", "full_well_e")


def test_exact_path_without_read_noise_is_rounded_poisson_of_the_documented_mean():
    """read_noise_e = 0: DN = round(Poisson(QE·p + D·t)/K + offset), the same draws torch.poisson
    makes from the same seed (nothing else consumes the generator)."""
    s = Sensor(quantum_efficiency=0.5, dark_current_e_per_s=200.0, exposure_s=0.05, gain_e_per_dn=0.5,
               offset_dn=3.0)
    I = torch.linspace(0, 40, 24, dtype=torch.float64).reshape(4, 6)
    mu = 0.5 * I + 10.0
    ref = torch.round(torch.poisson(mu, generator=torch.Generator().manual_seed(11)) / 0.5 + 3.0)
    assert torch.equal(s.sample(I, generator=torch.Generator().manual_seed(11)), ref)
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(11)), ref)


def test_exact_path_read_noise_draw_is_float64_gaussian_after_the_poisson_draw():
    """σ_r > 0: e = Poisson(μ_e) + σ_r·ε with ε ~ N(0, 1) drawn from the same generator after the
    Poisson draw, in the intensity's dtype; a small σ_r (0.5 e⁻, below 1) is still applied."""
    for sigma in (0.5, 4.0):
        s = Sensor(read_noise_e=sigma, gain_e_per_dn=2.0, offset_dn=50.0)
        I = torch.full((5, 7), 30.0, dtype=torch.float64)
        g = torch.Generator().manual_seed(12)
        e = torch.poisson(I, generator=g) + sigma * torch.randn(I.shape, generator=g, dtype=torch.float64)
        ref = torch.round(e / 2.0 + 50.0)
        assert torch.equal(s.sample(I, generator=torch.Generator().manual_seed(12)), ref)
    # float32 input stays float32 through the exact path
    s32 = Sensor(read_noise_e=2.0)
    assert s32.sample(torch.full((3, 3), 5.0), generator=torch.Generator().manual_seed(0)).dtype == torch.float32


def test_differentiable_path_is_the_documented_reparametrisation():
    """e = μ_e + sqrt(μ_e + σ_r²)·ε, ε from the generator in the intensity's dtype; then e/K + offset."""
    s = Sensor(quantum_efficiency=0.8, read_noise_e=3.0, dark_current_e_per_s=100.0, exposure_s=0.1,
               gain_e_per_dn=4.0, offset_dn=7.0)
    I = torch.linspace(1, 60, 12, dtype=torch.float64).reshape(3, 4)
    mu = 0.8 * I + 10.0
    eps = torch.randn(I.shape, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    smooth = (mu + torch.sqrt(mu + 9.0) * eps) / 4.0 + 7.0
    got = s.sample_differentiable(I, generator=torch.Generator().manual_seed(13), rounding=False)
    assert torch.allclose(got, smooth, rtol=1e-15, atol=1e-12)
    assert torch.equal(s.sample_differentiable(I, generator=torch.Generator().manual_seed(13)), torch.round(got))
    # forward(noise="gaussian") is this path with rounding
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(13), noise="gaussian"), torch.round(got))


def test_differentiable_path_gradient_is_finite_at_zero_variance():
    """No light, no dark, no read noise: μ_e + σ_r² = 0, where sqrt has an infinite derivative;
    the variance is clamped to the smallest normal float so the gradient stays finite (it is
    dDN/dI = QE/K = 1 here: e = μ_e exactly)."""
    s = Sensor()
    I = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    dn = s.sample_differentiable(I, generator=torch.Generator().manual_seed(0), rounding=False)
    # the clamped spread: sqrt(tiny(float64))·ε ≈ 1.5e-154·ε, not 0 and not float32's 1e-19
    eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    assert torch.allclose(dn.detach(), math.sqrt(tiny) * eps, rtol=1e-14, atol=0)
    dn.sum().backward()
    assert torch.equal(I.grad, torch.ones(2, 3, dtype=torch.float64))


def test_straight_through_rounding_value_and_identity_gradient():
    """rounding=True: forward value round(DN), gradient that of the unrounded DN (1/K here)."""
    s = Sensor(gain_e_per_dn=4.0, offset_dn=0.3)
    I = torch.full((2, 2), 10.0, dtype=torch.float64, requires_grad=True)
    dn = s.sample_differentiable(I, generator=torch.Generator().manual_seed(1))
    smooth = s.sample_differentiable(I.detach(), generator=torch.Generator().manual_seed(1), rounding=False)
    assert torch.equal(dn.detach(), torch.round(smooth))
    dn.sum().backward()
    # dDN/dI = (1 + ε/(2 sqrt(μ)))/K with μ = I (QE 1, no dark)
    eps = torch.randn(2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(I.grad, (1 + eps / (2 * math.sqrt(10.0))) / 4.0, rtol=1e-14, atol=0)


def test_noise_model_choice_per_call_and_at_construction():
    I = torch.full((4, 4), 20.0, dtype=torch.float64)
    s = Sensor(read_noise_e=1.0, offset_dn=0.25)
    exact = s.sample(I, generator=torch.Generator().manual_seed(3))
    smooth = s.sample_differentiable(I, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(exact, smooth)
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(3)), exact)          # default poisson
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(3), noise="poisson"), exact)
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(3), noise="gaussian"), smooth)
    assert torch.equal(s(I, noise="none"), torch.full_like(I, 20.25))
    assert torch.equal(s(I, noise=False), torch.full_like(I, 20.25))
    assert torch.equal(s(I, generator=torch.Generator().manual_seed(3), noise=True), exact)
    g = Sensor(read_noise_e=1.0, offset_dn=0.25, noise="gaussian")
    assert g.noise == "gaussian"
    assert torch.equal(g(I, generator=torch.Generator().manual_seed(3)), smooth)
    assert torch.equal(g(I, noise="none"), torch.full_like(I, 20.25))
    assert Sensor(noise=True).noise == "poisson" and Sensor(noise=False).noise == "none"
    assert Sensor(noise=None).noise == "none" and Sensor(noise="none").noise == "none"
    with pytest.raises(OpticsError, match=r"noise must be one of \('poisson', 'gaussian', 'none'\) "
                                          r"\(or True/False\), got 'gauss'"):
        Sensor(noise="gauss")
    with pytest.raises(OpticsError, match=r"noise must be one of .* got 'exact'"):
        s(I, noise="exact")


def test_dark_current_times_exposure():
    """Dark electrons D·t (e⁻/s × s) enter the mean: 250 e⁻/s × 0.02 s = 5 e⁻."""
    s = Sensor(dark_current_e_per_s=250.0, exposure_s=0.02, gain_e_per_dn=0.5)
    assert float(s.dark_e) == pytest.approx(5.0, rel=1e-15)
    assert torch.allclose(s.expected_dn(torch.zeros(2, 2, dtype=torch.float64)),
                          torch.full((2, 2), 10.0, dtype=torch.float64), rtol=1e-15, atol=0)
    assert torch.allclose(s.dn_to_photons(torch.full((2, 2), 10.0, dtype=torch.float64)),
                          torch.zeros(2, 2, dtype=torch.float64), rtol=0, atol=1e-14)


def test_expected_dn_saturation_and_adc_limits_exact():
    """min(μ_e, FW)/K + offset, clamped to [0, 2^bits − 1]; 1 and 32 bits are allowed."""
    I = torch.tensor([[0.0, 100.0, 999.0, 1000.0, 5000.0]], dtype=torch.float64)
    s = Sensor(full_well_e=1000.0, gain_e_per_dn=4.0, offset_dn=-10.0, bit_depth=8)
    assert s.max_dn == 255
    assert torch.equal(s.expected_dn(I), torch.tensor([[0.0, 15.0, 239.75, 240.0, 240.0]], dtype=torch.float64))
    s1 = Sensor(bit_depth=1, offset_dn=0.25)
    assert s1.max_dn == 1
    assert torch.equal(s1.expected_dn(torch.tensor([[0.0, 0.5, 3.0]], dtype=torch.float64)),
                       torch.tensor([[0.25, 0.75, 1.0]], dtype=torch.float64))
    s32 = Sensor(bit_depth=32)
    assert s32.max_dn == 2 ** 32 - 1
    assert float(s32.expected_dn(torch.tensor([[1e12]], dtype=torch.float64))) == 2.0 ** 32 - 1
    assert Sensor(bit_depth=np.int64(12)).bit_depth == 12


def test_full_well_as_fitted_parameter_saturates_with_its_gradient():
    """fit=("full_well_e",): the clip is torch.minimum, so a saturated pixel's DN has gradient
    1/K with respect to the full well and 0 with respect to the intensity."""
    s = Sensor(full_well_e=100.0, gain_e_per_dn=2.0, fit=("full_well_e",))
    assert isinstance(s.full_well_e, nn.Parameter)
    I = torch.tensor([[50.0, 300.0]], dtype=torch.float64, requires_grad=True)
    dn = s.expected_dn(I)
    assert torch.equal(dn.detach(), torch.tensor([[25.0, 50.0]], dtype=torch.float64))
    dn.sum().backward()
    assert float(s.full_well_e.grad) == pytest.approx(0.5, rel=1e-15)
    assert torch.equal(I.grad, torch.tensor([[0.5, 0.0]], dtype=torch.float64))
    # float32 intensities stay float32 through the fitted clip
    assert s.expected_dn(torch.tensor([[50.0, 300.0]])).dtype == torch.float32
    # the exact path clips the same way
    assert torch.equal(s.sample(torch.full((2, 2), 1e6, dtype=torch.float64),
                                generator=torch.Generator().manual_seed(0)),
                       torch.full((2, 2), 50.0, dtype=torch.float64))


def test_fit_makes_float64_parameters_of_the_named_values():
    s = Sensor(gain_e_per_dn=3.0, read_noise_e=2.0, fit=("gain_e_per_dn", "read_noise_e"))
    params = dict(s.named_parameters())
    assert sorted(params) == ["gain_e_per_dn", "read_noise_e"]
    assert all(p.dtype == torch.float64 for p in params.values())
    assert float(params["gain_e_per_dn"].detach()) == 3.0 and float(params["read_noise_e"].detach()) == 2.0
    assert "offset_dn" in dict(s.named_buffers())
    # gradient of the noiseless DN with respect to the gain: −(μ_e)/K² per pixel
    I = torch.full((1, 2), 6.0, dtype=torch.float64)
    s.expected_dn(I).sum().backward()
    assert float(s.gain_e_per_dn.grad) == pytest.approx(-2 * 6.0 / 9.0, rel=1e-14)
    with pytest.raises(OpticsError, match=r"Sensor cannot fit \['gain', 'qe'\]; it fits \['quantum_efficiency'"):
        Sensor(fit=("qe", "gain", "offset_dn"))
    with pytest.raises(OpticsError, match="cannot fit full_well_e: it is None .*give a starting value"):
        Sensor(fit=("full_well_e",))
    with pytest.raises(OpticsError, match="cannot fit mean_photons: it is None"):
        Sensor(fit=("mean_photons",))


def test_constructor_errors_name_the_value_and_fix():
    with pytest.raises(UnitsError, match=r"budget_dims must be 2 \(per frame\) or 3 \(per snapshot set\), got 4"):
        Sensor(budget_dims=4)
    with pytest.raises(UnitsError, match=r"budget_dims must be 2 .* got 1"):
        Sensor(budget_dims=1)
    assert Sensor(budget_dims=3).budget_dims == 3
    for bad in (0, 33, True, 12.0, "12"):
        with pytest.raises(UnitsError, match=rf"bit_depth must be an int in 1 … 32 or None, got {bad!r} "
                                             r"\(cameras are 8–16 bit\)"):
            Sensor(bit_depth=bad)
    with pytest.raises(UnitsError, match=r"quantum_efficiency = 1.5 exceeds 1; it is a fraction of photons "
                                         r"converted \(a 70 % QE is 0.7\)"):
        Sensor(quantum_efficiency=1.5)
    with pytest.raises(UnitsError, match="quantum_efficiency must be a finite positive number in e⁻/photon, got 0.0"):
        Sensor(quantum_efficiency=0.0)
    with pytest.raises(UnitsError, match="mean_photons must be a finite positive number in photons/pixel, got -1.0"):
        Sensor(mean_photons=-1.0)
    with pytest.raises(UnitsError, match=r"dark_current_e_per_s = -2.0 e⁻/s must be >= 0"):
        Sensor(dark_current_e_per_s=-2.0)
    with pytest.raises(UnitsError, match=r"^dark_current_e_per_s must be finite \(in e⁻/s\), got inf$"):
        Sensor(dark_current_e_per_s=float("inf"))
    with pytest.raises(UnitsError, match="gain_e_per_dn must be a finite positive number in e⁻/DN, got -1.0"):
        Sensor(gain_e_per_dn=-1.0)
    with pytest.raises(UnitsError, match=r"offset_dn must be finite \(in DN\), got nan"):
        Sensor(offset_dn=float("nan"))
    with pytest.raises(UnitsError, match="full_well_e must be a finite positive number in e⁻, got 0.0"):
        Sensor(full_well_e=0.0)
    with pytest.raises(UnitsError, match="pitch_m = 1.0 m is over 10 cm"):
        Sensor(pitch_m=1.0)
    with pytest.raises(UnitsError, match="grid_pitch_m must be a finite positive number in m"):
        Sensor(grid_pitch_m=-1e-6)
    # the boundaries are allowed: QE exactly 1, zero read noise and dark current
    s = Sensor(quantum_efficiency=1.0, read_noise_e=0.0, dark_current_e_per_s=0.0)
    assert float(s.quantum_efficiency) == 1.0


def test_bind_to_system_pitch():
    s = Sensor(pitch_m=6e-6)
    assert s.binning is None
    assert s.bind(2e-6) is s and s.binning == 3 and s.grid_pitch_m == 2e-6
    t = Sensor(pitch_m=6e-6).bind((2e-6, 2e-6))
    assert t.binning == 3 and t.grid_pitch_m == 2e-6
    # non-square sampling within 1e-6 relative counts as square
    assert Sensor(pitch_m=6e-6).bind((2e-6 * (1 + 5e-7), 2e-6)).binning == 3
    with pytest.raises(GeometryError, match=r"sampled at 3e-06 m × 2e-06 m \(non-square\) but the camera pitch "
                                            r"6e-06 m bins square pixels; use a square object grid"):
        Sensor(pitch_m=6e-6).bind((3e-6, 2e-6))
    # without a camera pitch (one sample per pixel) non-square sampling is fine
    u = Sensor().bind((3e-6, 2e-6))
    assert u.binning == 1 and u.grid_pitch_m == 2e-6
    # a grid pitch given at construction must agree with the system's (within 1e-6 relative)
    v = Sensor(pitch_m=4e-6, grid_pitch_m=1e-6)
    assert v.bind(1e-6 * (1 + 5e-7)).binning == 4
    with pytest.raises(GeometryError, match=r"built for a detector sample pitch of 1e-06 m but the system's "
                                            r"detector pitch is 2e-06 m; leave grid_pitch_m unset"):
        Sensor(pitch_m=4e-6, grid_pitch_m=1e-6).bind(2e-6)
    with pytest.raises(GeometryError, match=r"detector pitch is 1.00001e-06 m"):
        Sensor(pitch_m=4e-6, grid_pitch_m=1e-6).bind(1.00001e-6)
    with pytest.raises(PitchRatioError) as ei:
        Sensor(pitch_m=6e-6).bind(4e-6)
    assert str(ei.value) == ("pitch_m = 6e-06 m is not an integer multiple of grid_pitch_m = 4e-06 m (ratio 1.5, "
                             "allowed deviation 1e-06 relative); choose grid_pitch_m (the detector-plane sample "
                             "pitch) = pitch_m / n for an integer n: change the system's z_m / oversampling / "
                             "pitch_m, or the camera pitch_m")
    # the 1e-6 relative tolerances are inclusive: p = 15625·2⁻³⁴ m, 1e-6·p = 2⁻⁴⁰ m exactly in floats
    p = 15625 * 2.0 ** -34
    assert 1e-6 * p == 2.0 ** -40
    assert Sensor(pitch_m=4 * p).bind((p - 2.0 ** -40, p)).binning == 4      # |py − px| = 1e-6·max
    assert Sensor(grid_pitch_m=p + 2.0 ** -40).bind(p).grid_pitch_m == p    # |grid − px| = 1e-6·px


def test_unbound_binning_error_names_the_pitch_and_fix():
    with pytest.raises(GeometryError, match=r"the camera pitch is 5e-06 m but the sensor is not attached to a "
                                            r"system \(no detector-plane pitch to bin from\); pass it to "
                                            r"CDPSystem\(sensor=...\) or call sensor.bind\(detector_pitch_m\)"):
        Sensor(pitch_m=5e-6).bin(torch.ones(4, 4))
    with pytest.raises(ShapeError, match=r"intensity frame 6×8 is not divisible by the pixel binning 4 "
                                         r"\(pitch_m/grid_pitch_m\); crop or pad the field to a multiple of 4"):
        Sensor(pitch_m=4e-6, grid_pitch_m=1e-6).bin(torch.ones(6, 8))
    with pytest.raises(ShapeError, match=r"8×6 is not divisible"):
        Sensor(pitch_m=4e-6, grid_pitch_m=1e-6).bin(torch.ones(8, 6))


def test_binning_of_a_non_square_frame_sums_each_block():
    s = Sensor(pitch_m=2e-6, grid_pitch_m=1e-6)
    I = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    ref = torch.tensor([[0 + 1 + 6 + 7, 2 + 3 + 8 + 9, 4 + 5 + 10 + 11],
                        [12 + 13 + 18 + 19, 14 + 15 + 20 + 21, 16 + 17 + 22 + 23]], dtype=torch.float64)
    assert torch.equal(s.bin(I), ref)
    assert torch.equal(s.photons(I), ref)


def test_intensity_checks():
    s = Sensor()
    with pytest.raises(IntensityError, match=r"intensity has negative values \(min -0.5\); an intensity "
                                             r"\(photons or W/m²\) is >= 0 — pass \|u\|², or clamp numerical "
                                             r"noise with intensity.clamp_min\(0\)"):
        s.expected_dn(torch.tensor([[1.0, -0.5]]))
    with pytest.raises(IntensityError, match=r"must be real, got torch.complex64; pass \|u\|² \(u.abs\(\)\*\*2\), "
                                             r"not the field"):
        s.expected_dn(torch.ones(2, 2, dtype=torch.complex64))
    # an empty stack of frames is valid (no minimum to check) and stays empty
    assert s.expected_dn(torch.zeros(0, 3, 3)).shape == (0, 3, 3)
    # zero is a valid intensity (the check is < 0, not <= 0)
    assert torch.equal(s.expected_dn(torch.zeros(1, 2, dtype=torch.float64)), torch.zeros(1, 2, dtype=torch.float64))
    # integer input is taken as float32 photons
    assert s.expected_dn(torch.ones(2, 2, dtype=torch.int64)).dtype == torch.float32


def test_photon_budget_needs_enough_axes():
    with pytest.raises(UnitsError, match=r"budget_dims = 3 but the intensity has shape \(4, 4\)"):
        Sensor(mean_photons=10.0, budget_dims=3).photons(torch.ones(4, 4))
    # budget per frame on a 2-D frame works; the per-frame mean is the budget exactly here
    p = Sensor(mean_photons=10.0).photons(torch.tensor([[1.0, 3.0]], dtype=torch.float64))
    assert torch.equal(p, torch.tensor([[5.0, 15.0]], dtype=torch.float64))
    # a stack with one dark frame: the dark frame stays 0, the other gets the budget
    I = torch.stack([torch.zeros(2, 2, dtype=torch.float64), torch.full((2, 2), 4.0, dtype=torch.float64)])
    assert torch.equal(Sensor(mean_photons=6.0).photons(I),
                       torch.stack([torch.zeros(2, 2, dtype=torch.float64),
                                    torch.full((2, 2), 6.0, dtype=torch.float64)]))
    # float32 input stays float32 (the float64 budget is cast to the frame's dtype)
    assert Sensor(mean_photons=6.0).photons(torch.ones(2, 2)).dtype == torch.float32


def test_dn_to_photons_inverts_offset_gain_dark_and_qe():
    """p̂ = ((DN − offset)·K − D·t)/QE: with offset 10, K 3, D·t = 6, QE 0.5:
    DN = 20 → (30 − 6)/0.5 = 48 photons (exact in binary)."""
    s = Sensor(quantum_efficiency=0.5, gain_e_per_dn=3.0, offset_dn=10.0, dark_current_e_per_s=600.0,
               exposure_s=0.01)
    got = s.dn_to_photons(torch.tensor([20.0, 12.0], dtype=torch.float64))
    assert torch.allclose(got, torch.tensor([48.0, 0.0], dtype=torch.float64), rtol=1e-14, atol=1e-12)
    # integer DN (as a camera returns) are accepted and made float; lists too
    assert s.dn_to_photons(torch.tensor([20, 12])).dtype == torch.float32  # int DN → float32 first
    assert torch.allclose(s.dn_to_photons([20.0, 12.0]).double(), got, rtol=1e-6)
    with pytest.raises(NonFiniteError, match="dn contains 1 NaN/inf"):
        s.dn_to_photons(torch.tensor([1.0, float("inf")]))


def test_extra_repr_lists_every_parameter():
    s = Sensor(pitch_m=2e-6, grid_pitch_m=1e-6, quantum_efficiency=0.5, mean_photons=100.0, read_noise_e=2.5,
               dark_current_e_per_s=10.0, exposure_s=0.5, gain_e_per_dn=4.0, offset_dn=3.0, bit_depth=10,
               full_well_e=9000.0, noise="gaussian", budget_dims=3)
    assert s.extra_repr() == ("binning=2, QE=0.5, mean_photons=100.0, read_noise_e=2.5, dark_e=5, "
                              "gain_e_per_dn=4.0, offset_dn=3.0, bit_depth=10, full_well_e=9000.0, "
                              "noise='gaussian', budget_dims=3")
    assert Sensor().extra_repr() == ("binning=1, QE=1.0, mean_photons=None, read_noise_e=0.0, dark_e=0, "
                                     "gain_e_per_dn=1.0, offset_dn=0.0, bit_depth=None, full_well_e=None, "
                                     "noise='poisson', budget_dims=2")


def test_exact_path_accepts_array_likes():
    """A numpy array or nested list of photons is converted like a tensor (float64 array →
    float64; list → float32) and sampled with the same draws."""
    s = Sensor(read_noise_e=1.5, gain_e_per_dn=2.0)
    arr = np.full((3, 4), 25.0)
    ref = s.sample(torch.from_numpy(arr), generator=torch.Generator().manual_seed(5))
    assert torch.equal(s.sample(arr, generator=torch.Generator().manual_seed(5)), ref)
    lst = s.sample([[25.0, 25.0], [25.0, 25.0]], generator=torch.Generator().manual_seed(5))
    assert lst.dtype == torch.float32 and lst.shape == (2, 2)
