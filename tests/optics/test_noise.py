"""Noise models: Monte-Carlo mean, variance and amplitude residual against the documented theory."""
import math

import pytest
import torch

from optics.errors import IntensityError, NoiseModelError
from optics.noise import (NOISE_MODEL_NAMES, GaussianNoise, NoNoise, PoissonNoise, PrDeepNoise, make_noise_model)

# intensities from deep in the clipped / few-photon regime to bright samples
LEVELS = torch.tensor([2e-3, 0.02, 0.1, 0.5, 2.0, 20.0], dtype=torch.float64)
N_DRAWS = 40000


def _draws(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return model.sample(LEVELS.expand(N_DRAWS, -1).clone(), generator=g)


def _within(mc_samples, theory, n_se=5.0):
    """Sample mean of ``mc_samples`` (draws × levels) equals ``theory`` within ``n_se`` standard
    errors (plus float64 round-off); a false alarm at 5 SE is ~6e-7 per comparison."""
    mean = mc_samples.mean(0)
    se = mc_samples.std(0) / math.sqrt(mc_samples.shape[0])
    assert torch.all((mean - theory).abs() <= n_se * se + 1e-12), (mean, theory, se)


@pytest.mark.parametrize("model", [PrDeepNoise(9), PrDeepNoise(81), GaussianNoise(0.3), PoissonNoise(4.0),
                                   PoissonNoise.matching_prdeep(27)], ids=repr)
def test_noise_model_moments_and_amplitude_residual_match_monte_carlo(model):
    y = _draws(model)
    assert (y >= 0).all()
    _within(y, model.mean(LEVELS))
    # variance: the sample mean of (y − E y)² has its own standard error
    _within((y - model.mean(LEVELS)) ** 2, model.variance(LEVELS))
    # E[(√y − √I)²], the per-sample amplitude noise power a discrepancy stop uses
    _within((y.sqrt() - LEVELS.sqrt()) ** 2, model.amplitude_mse(LEVELS))


def test_bright_limits_are_the_textbook_values():
    # prDeep: Var y → σ²I and E(√y − √I)² → σ²/4 for √I ≫ σ; Poisson: Var = I/κ exactly, E(√y−√I)² → 1/(4κ);
    # Gaussian: E(√y−√I)² → σ²/(4I). Checked at I where the corrections are < 1e-3 relative.
    I = torch.tensor([1e4], dtype=torch.float64)
    p = PrDeepNoise(27)
    assert float(p.variance(I)) == pytest.approx(p.sigma ** 2 * 1e4, rel=1e-9)
    assert float(p.amplitude_mse(I)) == pytest.approx(p.sigma ** 2 / 4, rel=1e-3)
    q = PoissonNoise(10.0)
    assert float(q.variance(I)) == pytest.approx(1e3, rel=1e-12)
    assert float(q.amplitude_mse(I)) == pytest.approx(1 / 40, rel=1e-3)
    assert float(GaussianNoise(0.5).amplitude_mse(I)) == pytest.approx(0.25 / 4e4, rel=1e-3)
    # the table and its asymptotic series join continuously (at 1e3, relative < 1e-6)
    for m, at in ((GaussianNoise(1.0), 1e3), (PoissonNoise(1.0), 1e3)):
        lo, hi = m.amplitude_mse(torch.tensor([at * (1 - 1e-9), at * (1 + 1e-9)], dtype=torch.float64))
        assert float(lo) == pytest.approx(float(hi), rel=1e-6)


def test_expected_residual_sums_one_objects_cdps():
    I = torch.rand(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m = PrDeepNoise(9)
    r = m.expected_residual(I)
    assert r.shape == (2,)
    assert torch.equal(r, m.amplitude_mse(I).sum(dim=(-3, -2, -1)))
    with pytest.raises(NoiseModelError, match="dims"):
        m.expected_residual(I, dims=5)


def test_prdeep_matches_its_published_formula_and_poisson_matches_its_variance():
    # b = sqrt(max(|Ax|² + (α/255)|Ax| n, 0)) with the same n: exact to float64 round-off
    I = torch.rand(3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = PrDeepNoise(27).sample(I, generator=torch.Generator().manual_seed(3))
    n = torch.randn(I.shape, dtype=I.dtype, generator=torch.Generator().manual_seed(3))
    b = (I + 27 / 255 * I.sqrt() * n).clamp_min(0).sqrt()
    assert torch.allclose(y, b ** 2, rtol=1e-14, atol=1e-15)  # same n, float64 round-off
    # κ = (255/α)² photons per unit: 148 / 16 / 1.8 mean photons at a mean intensity of 0.184
    assert [round(0.184 * PoissonNoise.matching_prdeep(a).photons_per_unit, 1) for a in (9, 27, 81)] == [147.7, 16.4, 1.8]
    assert PoissonNoise.matching_prdeep(9).variance(I).allclose(PrDeepNoise(9).sigma ** 2 * I)


def test_same_generator_seed_same_draw_and_prdeep_is_differentiable():
    I = torch.rand(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) + 0.5
    for m in (PrDeepNoise(9), GaussianNoise(0.1), PoissonNoise(50.0)):
        a = m.sample(I, generator=torch.Generator().manual_seed(7))
        b = m.sample(I, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
    J = I.clone().requires_grad_(True)
    PrDeepNoise(9).sample(J, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert J.grad is not None and torch.isfinite(J.grad).all()


def test_bad_parameters_and_inputs_raise_named_errors():
    for bad in (0, -1.0, float("nan"), "9", True):
        with pytest.raises(NoiseModelError, match="alpha"):
            PrDeepNoise(bad)
    with pytest.raises(NoiseModelError, match="photons_per_unit"):
        PoissonNoise(0)
    with pytest.raises(NoiseModelError, match="sigma"):
        GaussianNoise(-0.1)
    with pytest.raises(IntensityError, match="negative"):
        PrDeepNoise(9).sample(torch.tensor([-1.0, 1.0]))
    with pytest.raises(IntensityError, match="complex"):
        PoissonNoise(1.0).sample(torch.ones(2, dtype=torch.complex64))


def test_make_noise_model_by_name_round_trips_params():
    for m in (NoNoise(), PrDeepNoise(27), PoissonNoise(12.5), GaussianNoise(0.01)):
        assert m.name in NOISE_MODEL_NAMES
        assert make_noise_model(m.name, **m.params()) == m
    assert make_noise_model("poisson", alpha=81.0) == PoissonNoise((255 / 81) ** 2)
    with pytest.raises(NoiseModelError, match="needs alpha"):
        make_noise_model("prdeep")
    with pytest.raises(NoiseModelError, match="one of"):
        make_noise_model("speckle")
