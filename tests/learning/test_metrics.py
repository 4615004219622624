"""Tests of learning.metrics: alignment, relative error, PSNR with a fixed range, SSIM, summaries.

Tolerances: identities that hold exactly in exact arithmetic are checked to 1e-6 in complex64
(a few ulps of the O(1) values involved) and to 1e-12 in float64.
"""
import json
import math

import numpy as np
import pytest
import torch

from learning.metrics import (PSNR_CAP_DB, MetricError, align_global_phase, evaluate, psnr,
                              psnr_amplitude, psnr_phase, relative_error, ssim_amplitude,
                              ssim_phase, success, summarize)


def _obj(b=3, n=16, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, n, dtype=dtype, generator=g)


def test_global_phase_invariance_exact():
    x = _obj()
    phi = torch.tensor([0.3, -2.0, 3.1]).reshape(3, 1, 1)
    xr = x * torch.polar(torch.ones_like(phi), phi)
    assert float(relative_error(xr, x).max()) < 1e-6
    aligned = align_global_phase(xr, x)
    assert float((aligned - x).abs().max()) < 1e-5  # |x| ~ 3 at most: a few ulps
    assert float(psnr_phase(xr, x).min()) > 120
    assert float(ssim_phase(xr, x).min()) > 1 - 1e-6
    # amplitudes agree up to float32 rounding (~1e-7 relative → > 120 dB for range 1)
    assert float(psnr_amplitude(xr, x).min()) > 120


def test_relative_error_known_values_and_batching():
    x = _obj(dtype=torch.complex128)
    scale = torch.tensor([1.01, 0.9, 1.0], dtype=torch.float64).reshape(3, 1, 1)
    err = relative_error(x * scale * np.exp(1j * 0.7), x)
    assert err.shape == (3,)
    assert torch.allclose(err, torch.tensor([0.01, 0.1, 0.0], dtype=torch.float64), atol=1e-12)
    # conjugate is not removed by alignment (it is a different ambiguity)
    assert float(relative_error(x.conj(), x).min()) > 0.5


def test_align_scale_recovers_complex_gain():
    x = _obj(dtype=torch.complex128)
    xh = (2.0 - 1.0j) * x
    assert float(relative_error(xh, x).min()) > 0.5
    assert float(relative_error(xh, x, align_scale=True).max()) < 1e-12
    assert torch.allclose(align_global_phase(xh, x, align_scale=True), x, atol=1e-12)


def test_psnr_constant_offset_is_20db_exactly():
    a = torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = psnr(a + 0.1, a, data_range=1.0)
    assert torch.allclose(out, torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9)
    # data range 2 → +20·log10(2) dB
    assert torch.allclose(psnr(a + 0.1, a, data_range=2.0) - out,
                          torch.full((2,), 20 * math.log10(2), dtype=torch.float64), atol=1e-9)


def test_psnr_requires_data_range():
    a = torch.zeros(4, 4)
    with pytest.raises(MetricError, match="data_range is required"):
        psnr(a, a)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(MetricError, match="data_range"):
            psnr(a, a, data_range=bad)
    with pytest.raises(MetricError):
        psnr_phase(a, a, data_range=0)


def test_psnr_identical_is_capped_not_inf():
    a = torch.rand(3, 5, 5)
    out = psnr(a, a, data_range=1.0)
    assert torch.all(out == PSNR_CAP_DB)
    assert torch.isfinite(out).all()


def test_psnr_phase_is_wrap_aware():
    eps = 0.01
    x = torch.polar(torch.ones(1, 8, 8, dtype=torch.float64),
                    torch.full((1, 8, 8), math.pi - eps, dtype=torch.float64))
    x_hat = torch.polar(torch.ones(1, 8, 8, dtype=torch.float64),
                        torch.full((1, 8, 8), -math.pi + eps, dtype=torch.float64))
    # a uniform phase offset is a global phase: removed by alignment
    assert float(psnr_phase(x_hat, x)) == PSNR_CAP_DB
    # a non-uniform one: half the pixels cross the wrap by 2ε, the rest stay
    x_hat2 = x.clone()
    x_hat2[..., :4] = x_hat[..., :4]
    d = psnr_phase(x_hat2, x, data_range=2 * math.pi)
    # after alignment the two halves differ by ±ε: MSE = ε²
    assert abs(float(d) - 10 * math.log10((2 * math.pi) ** 2 / eps ** 2)) < 1e-6
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[..., 4:] = True
    assert abs(float(psnr_phase(x_hat2, x, mask=m)) - 10 * math.log10((2 * math.pi) ** 2 / eps ** 2)) < 1e-6


def test_psnr_amplitude_known_value():
    x = torch.full((1, 6, 6), 0.5, dtype=torch.complex128)
    x_hat = x * 1.2 * 1j  # amplitude 0.6, any phase
    assert abs(float(psnr_amplitude(x_hat, x)) - 20.0) < 1e-9
    assert abs(float(psnr_amplitude(x_hat, x, data_range=0.5)) - 10 * math.log10(25)) < 1e-9


def test_ssim_identical_and_degraded():
    x = torch.rand(2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(ssim_amplitude(x, x), torch.ones(2, dtype=torch.float64))
    noisy = x + 0.2 * torch.rand(2, 16, 16, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(4))
    assert float(ssim_amplitude(noisy, x).max()) < 0.99
    small = torch.rand(1, 5, 5)
    assert ssim_amplitude(small, small).shape == (1,)  # window shrunk to 5
    with pytest.raises(MetricError, match="3×3"):
        ssim_amplitude(torch.rand(2, 2), torch.rand(2, 2))


def test_success_threshold():
    x = _obj(b=2, dtype=torch.complex128)
    xh = x.clone()
    xh[1] = x[1] * (1 + 5e-5)
    xh[0] = x[0] * (1 + 5e-3)
    assert success(xh, x).tolist() == [False, True]
    assert success(xh, x, tol=1e-5).tolist() == [False, False]
    assert success(xh, x, tol=1e-2).tolist() == [True, True]


def test_shape_errors_and_zero_reference():
    with pytest.raises(MetricError, match="image shape"):
        relative_error(torch.zeros(4, 4), torch.zeros(5, 5))
    with pytest.raises(MetricError, match="zero norm"):
        relative_error(torch.ones(4, 4), torch.zeros(4, 4))
    with pytest.raises(MetricError, match=r"\(\.\.\., H, W\)"):
        relative_error(torch.zeros(4), torch.zeros(4))


def test_summarize_values():
    s = summarize([1.0, 2.0, 3.0, 10.0])
    assert s == {"mean": 4.0, "median": 2.5, "std": pytest.approx(np.std([1, 2, 3, 10])),
                 "min": 1.0, "max": 10.0, "n": 4}
    assert summarize(torch.tensor([True, False, True, True]))["mean"] == 0.75
    assert summarize([])["n"] == 0


def test_evaluate_is_json_serialisable_and_consistent():
    x = _obj(b=4, n=12)
    xh = x * np.exp(1j * 1.3)
    xh[2] = xh[2] + 0.1 * _obj(b=1, n=12, seed=9)[0]
    rep = evaluate(xh, x, amplitude_range=4.0)
    text = json.dumps(rep)  # plain floats/lists/bools only
    assert "success_rate" in text
    assert rep["n"] == 4
    assert rep["per_sample"]["success"] == [True, True, False, True]
    assert rep["success_rate"] == 0.75
    assert rep["summary"]["psnr_amplitude"]["n"] == 4
    assert rep["summary"]["psnr_amplitude"]["max"] <= PSNR_CAP_DB
    assert rep["per_sample"]["relative_error"][2] == pytest.approx(
        float(relative_error(xh[2], x[2])), rel=1e-6)
    assert rep["settings"]["psnr_cap_db"] == PSNR_CAP_DB


def test_numpy_and_real_inputs_give_the_documented_values():
    """Values on the numpy and real-valued paths (the tests above use complex torch tensors):
    x = 1, x̂ = 2 (real, float64, as numpy arrays): the optimal global phase is 0, so
    ‖x̂ − x‖/‖x‖ = 1; with align_scale the least-squares scale ½ recovers x exactly; the
    aligned estimate is complex128 (float64 is promoted, not rounded to complex64). Exact."""
    x = np.ones((1, 2, 2))
    xh = 2 * np.ones((1, 2, 2))
    assert float(relative_error(xh, x)[0]) == pytest.approx(1.0, abs=1e-15)
    assert float(relative_error(xh, x, align_scale=True)[0]) == pytest.approx(0.0, abs=1e-15)
    a = align_global_phase(xh, x)
    assert a.dtype == torch.complex128 and torch.allclose(a, torch.full((1, 2, 2), 2.0, dtype=torch.complex128))
    assert float(psnr(xh, x, data_range=10.0)[0]) == pytest.approx(20.0, abs=1e-12)  # MSE 1, range 10
    with pytest.raises(MetricError, match="x must be a torch.Tensor or numpy array, got list"):
        relative_error(torch.ones(1, 2, 2), [[1.0, 1.0], [1.0, 1.0]])


def test_evaluate_records_its_settings():
    """The report names the settings it was computed with (keys a reader looks up)."""
    x = _obj(b=2, n=8)
    rep = evaluate(x, x, amplitude_range=2.0, phase_range_rad=math.pi, tol=1e-3, align_scale=True)
    s = rep["settings"]
    assert (s["amplitude_range"], s["phase_range_rad"], s["tol"], s["align_scale"]) == (2.0, math.pi, 1e-3, True)
