"""CDP system: adjointness of the linear part, physics of the composition, gradients, errors."""
import math

import pytest
import torch

import optics
from optics.cdp import CDPSystem, adjointness_error
from optics.masks import ComplexMask, PhaseMask
from optics.sensor import Sensor
from optics.slm import SLM

LAM, DX = 633e-9, 8e-6


def _rand(shape, seed, dtype=torch.complex128):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method, z, os", [
    ("fraunhofer", 0.1, 1.0), ("fraunhofer", 0.1, 2.0), ("asm", 2e-3, 1.5),
    ("fresnel-tf", 2e-3, 1.0), ("fresnel-ir", 0.5, 2.0), ("fresnel-1fft", 0.5, 2.0),
])
def test_cdp_linear_part_is_adjoint(method, z, os):
    masks = PhaseMask.random(3, (16, 16), seed=0, dtype=torch.float64)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=z, method=method, oversampling=os)
    x = _rand((2, 16, 16), 1)
    y = _rand((2, 3) + sys.out_shape, 2)
    assert adjointness_error(sys.A, sys.A_adjoint, x, y) <= 1e-5
    assert sys.A(x).shape == (2, 3) + sys.out_shape


def test_cdp_fraunhofer_matches_direct_composition_and_conserves_energy():
    # y_l = |F(pad(M_l x))|² with unit-modulus masks: Σ_l ‖A_l x‖² p_out² = L ‖x‖² dx²
    masks = PhaseMask.random(4, (32, 32), seed=3, dtype=torch.float64)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.2, oversampling=2)
    x = _rand((32, 32), 4)
    y = sys.intensity(x)
    assert y.shape == (4, 64, 64)
    p_out = sys.out_pitch_m
    assert p_out == pytest.approx((LAM * 0.2 / (64 * DX),) * 2)
    lhs = float(y.detach().sum()) * p_out[0] * p_out[1]
    assert lhs == pytest.approx(4 * float((x.abs() ** 2).sum()) * DX ** 2, rel=1e-10)
    u = optics.grid.pad_centered(x * masks()[2], (64, 64))
    direct, _ = optics.fraunhofer(u, pitch_m=DX, wavelength_m=LAM, z_m=0.2)
    assert torch.allclose(y[2], direct.abs() ** 2, rtol=1e-10, atol=0)


def test_adjoint_of_forward_is_l_times_identity_for_fraunhofer_cdps():
    # AᴴA = Σ_l |M_l|² · (dx²/(λz))² · N² for unit-modulus masks and a Fourier propagator
    n, L, z = 16, 3, 0.1
    masks = PhaseMask.random(L, (n, n), seed=5, dtype=torch.float64)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=z, oversampling=2)
    x = _rand((n, n), 6)
    c = (DX ** 2 / (LAM * z)) ** 2 * (2 * n) ** 2
    assert torch.allclose(sys.A_adjoint(sys.A(x)), L * c * x, rtol=1e-10, atol=0)


def test_gradcheck_cdp_intensity_wrt_mask_phase_and_object():
    theta = torch.rand(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6.28
    x = _rand((6, 6), 7).requires_grad_(True)

    def f(th, xx):  # real masks are phases in rad
        sys = CDPSystem(th, pitch_m=DX, wavelength_m=LAM, z_m=0.05)
        return sys.intensity(xx)

    th = theta.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (th, x), eps=1e-6, atol=1e-6, fast_mode=True)


class _Phases(torch.nn.Module):
    """Holds θ as a plain tensor (not a fresh Parameter) so gradcheck can perturb it."""

    def __init__(self, theta):
        super().__init__()
        self.theta = theta

    def phase(self):
        return self.theta

    def forward(self):
        return torch.polar(torch.ones_like(self.theta), self.theta)


def test_gradcheck_through_slm_soft_path_and_differentiable_sensor():
    # SLM with 2× upsampling, fill factor, crosstalk, soft 3-bit quantisation, and the smooth
    # differentiable sensor path with fixed noise draws: the whole student forward model
    slm = SLM(pixel_pitch_m=2 * DX, sim_pitch_m=DX, fill_factor=0.81, crosstalk_sigma_m=0.5 * DX,
              bit_depth=3, quantization="soft", soft_temperature_rad=0.3)
    slm.train()
    sensor = Sensor(read_noise_e=2.0, mean_photons=50.0)
    sensor.train()
    x = (_rand((8, 8), 8).abs() + 0.5).to(torch.complex128)

    def f(th):
        sys = CDPSystem(_Phases(th), pitch_m=DX, wavelength_m=LAM, z_m=0.05, slm=slm)
        inten = sys.intensity(x)
        return sensor.sample_differentiable(inten, generator=torch.Generator().manual_seed(0), rounding=False)

    th = (torch.rand(1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 6).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (th,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_slm_modulation_shape_and_student_single_snapshot():
    slm = SLM(pixel_pitch_m=4 * DX, sim_pitch_m=DX, bit_depth=2, quantization="exact")
    masks = PhaseMask.random(1, (8, 8), seed=1)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, slm=slm)
    assert sys.in_shape == (32, 32) and sys.n_masks == 1
    mod = sys.modulation()
    # 2-bit LUT over 2π: the modulation takes only the 4 phases 0, π/2, π, 3π/2
    ph = torch.remainder(torch.angle(mod), 2 * math.pi)
    levels = torch.tensor([0, math.pi / 2, math.pi, 3 * math.pi / 2])
    d = (ph[..., None] - levels).abs().min(-1).values
    assert float(torch.minimum(d, 2 * math.pi - d).max()) < 1e-5


def test_cdp_with_sensor_noise_is_seeded():
    masks = ComplexMask.octanary(2, (16, 16), seed=0)
    sensor = Sensor(mean_photons=100.0, read_noise_e=1.0, bit_depth=12)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, sensor=sensor).eval()
    x = torch.ones(16, 16, dtype=torch.complex64)
    a = sys(x, generator=torch.Generator().manual_seed(3))
    b = sys(x, generator=torch.Generator().manual_seed(3))
    c = sys(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # mean photon budget: the sample mean of each frame is 100 within 5 standard errors
    per_frame = a.mean(dim=(-2, -1))
    se = math.sqrt(100 + 1) / 16
    assert torch.all((per_frame - 100).abs() < 5 * se)


def test_cdp_bad_inputs():
    masks = PhaseMask.random(2, (8, 8), seed=0)
    sys = CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    with pytest.raises(optics.ShapeError, match=r"object x has spatial shape \(9, 9\) but the masks are \(8, 8\)"):
        sys.A(torch.ones(9, 9, dtype=torch.complex64))
    bad = torch.ones(8, 8, dtype=torch.complex64)
    bad[0, 0] = float("nan")
    with pytest.raises(optics.NonFiniteError):
        sys.A(bad)
    with pytest.raises(optics.ShapeError, match="expected"):
        sys.A_adjoint(torch.ones(3, 8, 8, dtype=torch.complex64))
    with pytest.raises(optics.ShapeError, match="oversampling"):
        CDPSystem(masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1, oversampling=0.5)
    nan_masks = torch.zeros(2, 8, 8)
    nan_masks[1, 2, 3] = float("inf")
    with pytest.raises(optics.NonFiniteError):
        CDPSystem(nan_masks, pitch_m=DX, wavelength_m=LAM, z_m=0.1)
    with pytest.raises(optics.ShapeError, match="real phases per SLM pixel"):
        CDPSystem(torch.zeros(1, 8, 8, dtype=torch.complex64), pitch_m=DX, wavelength_m=LAM, z_m=0.1,
                  slm=SLM(pixel_pitch_m=DX, sim_pitch_m=DX))
