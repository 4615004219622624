"""Tests of optics.masks: statistics against the distributions' theory, seeding, modules."""
import math

import numpy as np
import pytest
import torch

from optics.errors import NonFiniteError, OpticsError, ShapeError
from optics.masks import ComplexMask, PhaseMask, binary_phase, octanary, random_phase

N_STAT = 200_000  # samples for statistical checks; 4 SE ≈ 1 % of a unit-variance mean


# ---------------------------------------------------------------------------------------------
# octanary
# ---------------------------------------------------------------------------------------------
def test_octanary_value_set_is_exactly_the_eight_products():
    d = octanary((N_STAT,), seed=1, dtype=torch.complex128)
    mag = d.abs()
    # |d| ∈ {√2/2, √3}: compare to the two magnitudes to 1e-15 (float64 round-off of b1·b2).
    is_small = (mag - math.sqrt(2) / 2).abs() < 1e-15
    is_big = (mag - math.sqrt(3)).abs() < 1e-15
    assert bool((is_small | is_big).all())
    # the unit phase factor d/|d| is one of {1, i, -1, -i} exactly (one component 0, other ±1)
    u = d / mag
    on_axis = ((u.real.abs() - 1).abs() < 1e-15) & (u.imag.abs() < 1e-15)
    on_imag = ((u.imag.abs() - 1).abs() < 1e-15) & (u.real.abs() < 1e-15)
    assert bool((on_axis | on_imag).all())
    # all 8 values occur
    keys = set(zip(torch.round(d.real * 1e6).tolist(), torch.round(d.imag * 1e6).tolist()))
    assert len(keys) == 8


def test_octanary_moments_match_theory():
    d = octanary((N_STAT,), seed=2, dtype=torch.complex128)
    p2 = d.abs() ** 2  # values 1/2 (p = 4/5) and 3 (p = 1/5)
    # E|d|² = 1; Var|d|² = E|d|⁴ − 1 = (4/5)(1/4) + (1/5)(9) − 1 = 1. Tolerance: 4 SE.
    se = math.sqrt(1.0 / N_STAT)
    assert abs(float(p2.mean()) - 1.0) < 4 * se
    # P(|d| = √3) = 1/5 within 4 binomial SE
    frac_big = float((p2 > 2).double().mean())
    assert abs(frac_big - 0.2) < 4 * math.sqrt(0.2 * 0.8 / N_STAT)
    # E[d] = 0: each of Re, Im has variance E|d|²/2 = 1/2; 4 SE.
    se_c = math.sqrt(0.5 / N_STAT)
    assert abs(float(d.real.mean())) < 4 * se_c and abs(float(d.imag.mean())) < 4 * se_c


def test_octanary_dtype_default_complex64():
    assert octanary((4, 4), seed=0).dtype == torch.complex64


# ---------------------------------------------------------------------------------------------
# random and binary phase
# ---------------------------------------------------------------------------------------------
def test_random_phase_uniform_circular_mean_zero():
    th = random_phase((N_STAT,), seed=3, dtype=torch.float64)
    assert float(th.min()) >= 0.0 and float(th.max()) < 2 * math.pi
    z = torch.exp(1j * th)
    # Re and Im of e^{iθ} each have variance 1/2 for uniform θ; |mean| components within 4 SE
    se = math.sqrt(0.5 / N_STAT)
    assert abs(float(z.real.mean())) < 4 * se and abs(float(z.imag.mean())) < 4 * se
    # mean of θ is π with variance (2π)²/12
    se_t = 2 * math.pi / math.sqrt(12 * N_STAT)
    assert abs(float(th.mean()) - math.pi) < 4 * se_t


def test_random_phase_float32_stays_below_two_pi():
    th = random_phase((N_STAT,), seed=4)
    assert th.dtype == torch.float32
    assert float(th.max()) < 2 * math.pi and float(th.min()) >= 0.0


def test_random_phase_levels_exact_values_and_equiprobable():
    K = 8
    th = random_phase((N_STAT,), seed=5, levels=K, dtype=torch.float64)
    k = th / (2 * math.pi / K)
    assert torch.equal(k, torch.round(k))  # exactly on 2πk/K (k·(2π/K) in float64)
    counts = torch.bincount(torch.round(k).long(), minlength=K).double() / N_STAT
    se = math.sqrt((1 / K) * (1 - 1 / K) / N_STAT)
    assert float((counts - 1 / K).abs().max()) < 4 * se


def test_binary_phase_values_and_balance():
    th = binary_phase((N_STAT,), seed=6, dtype=torch.float64)
    assert bool(((th == 0) | (th == math.pi)).all())
    p = float((th == math.pi).double().mean())
    assert abs(p - 0.5) < 4 * math.sqrt(0.25 / N_STAT)


# ---------------------------------------------------------------------------------------------
# seeding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [random_phase, binary_phase, octanary])
def test_same_seed_same_mask_different_seed_different(fn):
    a = fn((3, 16, 16), seed=11)
    b = fn((3, 16, 16), seed=11)
    c = fn((3, 16, 16), seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_equivalent_to_seed_and_advances():
    g = torch.Generator().manual_seed(7)
    a = random_phase((8, 8), generator=g)
    b = random_phase((8, 8), generator=g)
    assert torch.equal(a, random_phase((8, 8), seed=7))
    assert not torch.equal(a, b)


def test_seed_and_generator_together_is_an_error():
    with pytest.raises(OpticsError, match="pass only one"):
        random_phase((4, 4), seed=1, generator=torch.Generator())


def test_bad_shape_rejected():
    with pytest.raises(ShapeError, match="positive ints"):
        random_phase((0, 4))
    with pytest.raises(ShapeError, match=r"\(L, H, W\) or \(H, W\)"):
        PhaseMask(torch.zeros(2, 2, 3, 3))


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
def test_phase_mask_unit_modulus_shape_and_dtype():
    m = PhaseMask.random(3, (5, 7), seed=0)
    out = m().detach()
    assert out.shape == (3, 5, 7) and out.dtype == torch.complex64
    assert m.n_masks == 3 and m.shape == (5, 7)
    # |e^{iθ}| = 1 to float32 round-off (cos² + sin² within a few ulp)
    assert float((out.abs() - 1).abs().max()) < 1e-6
    m64 = PhaseMask(torch.zeros(4, 4, dtype=torch.float64))
    assert m64().dtype == torch.complex128 and m64.n_masks == 1
    assert torch.equal(m64(), torch.ones(1, 4, 4, dtype=torch.complex128))


def test_phase_mask_learnable_vs_buffer():
    th = torch.rand(2, 4, 4)
    m = PhaseMask(th)
    assert isinstance(m.theta, torch.nn.Parameter) and len(list(m.parameters())) == 1
    f = PhaseMask(th, learnable=False)
    assert len(list(f.parameters())) == 0 and "theta" in dict(f.named_buffers())
    # stored as a copy: editing the input does not move the mask
    th += 1.0
    assert not torch.equal(m.theta.detach(), th)


def test_phase_mask_from_numpy_and_values():
    arr = np.array([[0.0, math.pi / 2], [math.pi, 3 * math.pi / 2]])
    m = PhaseMask.from_array(arr, learnable=False)
    expect = torch.tensor([[[1, 1j], [-1, -1j]]], dtype=torch.complex128)
    # float64 cos/sin of multiples of π/2 are exact to ~1.8e-16
    assert torch.allclose(m(), expect, atol=1e-15, rtol=0)


def test_phase_mask_gradcheck_complex128():
    # d e^{iθ}/dθ = i e^{iθ}; gradcheck compares autograd with central differences
    # (eps 1e-6, float64: truncation error ~1e-12, tolerance 1e-8).
    th = torch.rand(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 6.0
    m = PhaseMask(th)

    def fwd(t):
        return torch.func.functional_call(m, {"theta": t}, ())

    assert fwd(th).dtype == torch.complex128
    assert torch.autograd.gradcheck(fwd, (th.clone().requires_grad_(True),), eps=1e-6, atol=1e-8)


def test_phase_mask_rejects_nonfinite_and_complex():
    with pytest.raises(NonFiniteError, match="theta contains 1 NaN/inf"):
        PhaseMask(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(OpticsError, match="real phases"):
        PhaseMask(torch.zeros(2, 2, dtype=torch.complex64))


def test_complex_mask_octanary_and_from_array():
    cm = ComplexMask.octanary(2, 8, seed=3)
    assert cm().shape == (2, 8, 8) and cm.n_masks == 2 and cm.shape == (8, 8)
    assert len(list(cm.parameters())) == 0
    assert torch.equal(cm(), octanary((2, 8, 8), seed=3))
    a = np.ones((3, 3), dtype=np.complex128) * 1j
    cm2 = ComplexMask.from_array(a)
    assert cm2().shape == (1, 3, 3) and cm2().dtype == torch.complex128
    with pytest.raises(NonFiniteError):
        ComplexMask(torch.tensor([[complex("nan"), 1]]))
