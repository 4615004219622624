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


# --------------------------------------------------------------------------------------------
# Values the mutation run (issue 20, `make mutate MODULES=learning/metrics.py`) showed untested.
# --------------------------------------------------------------------------------------------
def test_range_errors_name_the_argument_and_the_value():
    """A bad range names the argument the user passed (data_range / amplitude_range /
    phase_range_rad) and the value, for every metric that takes one."""
    x = _obj(b=1, n=4)
    for fn in (psnr_phase, ssim_amplitude, ssim_phase):
        with pytest.raises(MetricError, match=r"^data_range must be a finite positive number, got -1\.0; "):
            fn(x, x, -1.0)
    with pytest.raises(MetricError, match=r"^data_range must be a positive number, got 'abc'$"):
        psnr(x, x, data_range="abc")
    with pytest.raises(MetricError, match=r"^amplitude_range must be a finite positive number, got 0\.0"):
        evaluate(x, x, amplitude_range=0)
    with pytest.raises(MetricError, match=r"^phase_range_rad must be a finite positive number, got -1\.0"):
        evaluate(x, x, phase_range_rad=-1)


def test_shape_error_messages_give_both_shapes():
    """The message states the two image shapes (last two axes) / the two full shapes."""
    with pytest.raises(MetricError, match=r"^x_hat has image shape \(4, 5\) but the reference x has \(4, 4\); crop"):
        relative_error(torch.zeros(2, 4, 5), torch.ones(2, 4, 4))
    with pytest.raises(MetricError, match=r"^x_hat shape \(2, 4, 4\) and x shape \(3, 4, 4\) do not broadcast; "
                                          r"give both the same leading \(batch\) axes$"):
        relative_error(torch.ones(2, 4, 4), torch.ones(3, 4, 4))
    with pytest.raises(MetricError, match=r"^x_hat must have shape \(\.\.\., H, W\); got shape \(4,\)$"):
        psnr(torch.zeros(4), torch.zeros(4, 4), data_range=1.0)
    with pytest.raises(MetricError, match=r"^reference x has zero norm in at least one sample; the relative "
                                          r"error is undefined — drop empty samples or use an absolute error$"):
        relative_error(torch.ones(2, 4, 4), torch.cat([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)]))


def test_real_inputs_promote_to_the_matching_complex_precision():
    """float32 → complex64, float64 → complex128 (a float32 image is not doubled in memory)."""
    a32 = torch.ones(1, 3, 3)
    assert align_global_phase(a32, a32).dtype == torch.complex64
    assert align_global_phase(a32.double(), a32.double()).dtype == torch.complex128


def test_alignment_of_small_and_orthogonal_inputs():
    """Alignment does not depend on the overall scale of the data (values ≪ 1 are aligned
    exactly as values ~ 1), and ⟨x̂, x⟩ = 0 leaves x̂ unchanged (documented). Exact in float64
    up to ~1e-12 relative."""
    x = 0.01 * _obj(b=2, n=4, dtype=torch.complex128)           # ‖x‖² < 1, |⟨x̂, x⟩| < 1
    xh = x * np.exp(1j * 0.7)
    assert torch.allclose(align_global_phase(xh, x), x, rtol=0, atol=1e-14)
    xs = 0.1 * xh                                                # least-squares scale 10 e^{−0.7i}
    assert torch.allclose(align_global_phase(xs, x, align_scale=True), x, rtol=0, atol=1e-14)
    # orthogonal: x = [1, 0; 0, 0], x̂ = [0, 1; 0, 0] → ⟨x̂, x⟩ = 0 → x̂ returned unchanged
    x0 = torch.zeros(1, 2, 2, dtype=torch.complex128)
    x0[0, 0, 0] = 1
    xh0 = torch.zeros_like(x0)
    xh0[0, 0, 1] = 1
    assert torch.equal(align_global_phase(xh0, x0), xh0)
    # a zero estimate with align_scale: α = 0, and the gradient is finite (no 0/0 anywhere)
    z = torch.zeros(1, 2, 2, dtype=torch.complex128, requires_grad=True)
    relative_error(z, x0, align_scale=True).sum().backward()
    assert bool(torch.isfinite(torch.view_as_real(z.grad)).all())
    w = xh0.clone().requires_grad_(True)
    relative_error(w, x0).sum().backward()
    assert bool(torch.isfinite(torch.view_as_real(w.grad)).all())


def test_psnr_of_complex_differences_uses_the_modulus():
    """psnr of complex inputs: MSE = mean |a − b|². d = 0.1 + 0.2i → |d|² = 0.05 →
    10·log10(1/0.05) = 13.0103 dB. Exact to 1e-12."""
    a = torch.zeros(1, 3, 3, dtype=torch.complex128)
    assert float(psnr(a + (0.1 + 0.2j), a, data_range=1.0)[0]) == pytest.approx(10 * math.log10(20), abs=1e-12)


def test_psnr_floor_scales_with_the_range_and_is_float64():
    """Identical inputs give the cap for any range (the MSE floor is R²·10^(−cap/10), so
    R = 0.1 still gives 200 dB, not 180), the result is float64 even for float32 / complex64
    inputs, and the gradient at an exact match is finite (zero), not NaN."""
    a = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    c = _obj(b=2, n=4)
    for r in (0.1, 1.0):
        assert psnr(a, a, data_range=r).tolist() == [PSNR_CAP_DB] * 2
        assert psnr_phase(c, c, data_range=r).tolist() == [PSNR_CAP_DB] * 2
    assert psnr(a, a + 0.1, data_range=1.0).dtype == torch.float64
    assert psnr_phase(c, c * np.exp(0.1j), data_range=1.0).dtype == torch.float64
    g = a.clone().requires_grad_(True)
    psnr(g, a, data_range=1.0).sum().backward()
    assert bool(torch.isfinite(g.grad).all())
    gc = c.clone().requires_grad_(True)
    psnr_phase(gc, c, data_range=1.0).sum().backward()
    assert bool(torch.isfinite(torch.view_as_real(gc.grad)).all())


def test_psnr_phase_is_per_sample_with_and_without_a_mask():
    """Two samples with different (antisymmetric, so alignment is the identity) phase errors
    ±ε: each gets 20·log10(R/ε); a one-pixel mask gives that pixel's error; an empty mask is
    refused with its message. Exact to 1e-9 dB."""
    n = 4
    col = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    x = torch.ones(2, n, n, dtype=torch.complex128)
    eps = torch.tensor([0.01, 0.1], dtype=torch.float64).reshape(2, 1, 1)
    xh = x * torch.polar(torch.ones(2, n, n, dtype=torch.float64), eps * col)
    want = [20 * math.log10(math.pi / 0.01), 20 * math.log10(math.pi / 0.1)]
    assert psnr_phase(xh, x, math.pi).tolist() == pytest.approx(want, abs=1e-9)
    assert psnr_phase(xh, x, math.pi, mask=torch.ones(n, n, dtype=torch.bool)).tolist() == pytest.approx(want, abs=1e-9)
    one = torch.zeros(n, n, dtype=torch.bool)
    one[0, 0] = True
    assert psnr_phase(xh, x, math.pi, mask=one).tolist() == pytest.approx(want, abs=1e-9)
    with pytest.raises(MetricError, match=r"^psnr_phase mask selects no pixel in at least one sample; "
                                          r"lower the amplitude threshold that built the mask$"):
        psnr_phase(xh, x, math.pi, mask=torch.zeros(n, n, dtype=torch.bool))


def test_ssim_matches_skimage_in_float64_for_small_and_float32_images():
    """SSIM is skimage's, computed in float64 whatever the input precision, with the window
    shrunk to the largest odd size that fits (4×4 → 3, 3×3 → 3). Equal to 1e-12."""
    from skimage.metrics import structural_similarity
    g = torch.Generator().manual_seed(5)
    for n, win in ((3, 3), (4, 3), (6, 5), (9, 7)):
        a = torch.rand(2, n, n, generator=g)                    # float32
        b = (a + 0.3 * torch.rand(2, n, n, generator=g)).clamp(max=1)
        got = ssim_amplitude(b, a)
        assert got.dtype == torch.float64
        want = [structural_similarity(q.double().numpy(), p.double().numpy(), data_range=1.0, win_size=win)
                for q, p in zip(b, a)]
        assert got.tolist() == pytest.approx(want, abs=1e-12)
        assert ssim_amplitude(b, a).tolist() == ssim_amplitude(b, a, 1.0).tolist()   # default range 1


def test_ssim_phase_compares_the_unwrapped_estimate_with_the_reference():
    """x = e^{iφ}, x̂ = x·e^{iδ} with δ antisymmetric about the centre column (Σ sin δ = 0, so
    global alignment is the identity): ssim_phase = SSIM(φ + δ, φ) with range 2π (not φ − δ).
    Equal to 1e-10."""
    from skimage.metrics import structural_similarity
    n = 8
    g = torch.Generator().manual_seed(2)
    phi = (torch.rand(n, n, generator=g, dtype=torch.float64) - 0.5) * 2.0
    delta = 0.4 * torch.linspace(-1, 1, n, dtype=torch.float64).reshape(1, n).expand(n, n) \
        * torch.linspace(0.2, 1.0, n, dtype=torch.float64).reshape(n, 1)
    x = torch.polar(torch.ones_like(phi), phi)[None]
    xh = torch.polar(torch.ones_like(phi), phi + delta)[None]
    want = structural_similarity((phi + delta).numpy(), phi.numpy(), data_range=2 * math.pi, win_size=7)
    assert float(ssim_phase(xh, x)[0]) == pytest.approx(want, abs=1e-10)
    assert abs(want - structural_similarity((phi - delta).numpy(), phi.numpy(), data_range=2 * math.pi, win_size=7)) > 1e-4


def test_success_is_strict_and_refuses_a_non_positive_tol():
    """x̂ = 1.5 x with x = 1: the relative error is exactly 0.5, which is not < 0.5; with
    align_scale the scale is fitted and the error is 0."""
    x = torch.ones(1, 4, 4, dtype=torch.complex128)
    assert success(1.5 * x, x, tol=0.5).tolist() == [False]
    assert success(1.5 * x, x, tol=0.5 + 1e-12).tolist() == [True]
    assert success(1.5 * x, x, tol=1e-6, align_scale=True).tolist() == [True]
    assert evaluate(1.5 * x, x, tol=0.5)["success_rate"] == 0.0
    with pytest.raises(MetricError, match=r"^tol must be positive, got 0$"):
        success(x, x, tol=0)


def test_summarize_inputs_and_the_empty_case():
    """Generators, 0-d arrays, float32 arrays/tensors (summarised in float64: the float32
    mean of [0.1, 0.2, 0.7] differs in the last bits) and the empty case's exact keys."""
    assert summarize(v for v in (1.0, 3.0))["mean"] == 2.0
    assert summarize(np.array(2.5)) == {"mean": 2.5, "median": 2.5, "std": 0.0, "min": 2.5, "max": 2.5, "n": 1}
    v32 = np.array([0.1, 0.2, 0.7, 0.3, 0.9], dtype=np.float32)
    v64 = v32.astype(np.float64)
    want = {"mean": float(np.mean(v64)), "std": float(np.std(v64))}
    for v in (v32, torch.from_numpy(v32)):
        s = summarize(v)
        assert (s["mean"], s["std"]) == (want["mean"], want["std"])
    e = summarize([])
    assert sorted(e) == ["max", "mean", "median", "min", "n", "std"] and e["n"] == 0
    assert all(isinstance(e[k], float) and math.isnan(e[k]) for k in e if k != "n")


def test_evaluate_uses_its_ranges_and_scale_alignment():
    """Each per-sample entry equals the metric called directly with evaluate's ranges; with
    align_scale the scaled estimate 0.5·e^{0.3i}·x is a perfect recovery (error ~0, PSNRs at
    the cap); the default settings are the documented ones; an empty batch gives n = 0 and a
    NaN success rate."""
    x = _obj(b=2, n=8, dtype=torch.complex128)
    xh = x + 0.05 * _obj(b=2, n=8, seed=3, dtype=torch.complex128)
    rep = evaluate(xh, x, amplitude_range=3.0, phase_range_rad=math.pi)
    ps = rep["per_sample"]
    assert sorted(ps) == ["psnr_amplitude", "psnr_phase", "relative_error", "ssim_amplitude", "ssim_phase", "success"]
    assert ps["psnr_amplitude"] == pytest.approx(psnr_amplitude(xh, x, 3.0).tolist(), abs=1e-12)
    assert ps["psnr_phase"] == pytest.approx(psnr_phase(xh, x, math.pi).tolist(), abs=1e-12)
    assert ps["ssim_amplitude"] == pytest.approx(ssim_amplitude(xh, x, 3.0).tolist(), abs=1e-12)
    assert ps["ssim_phase"] == pytest.approx(ssim_phase(xh, x, math.pi).tolist(), abs=1e-12)
    assert sorted(rep["summary"]) == sorted(k for k in ps if k != "success")
    sc = evaluate(0.5 * np.exp(0.3j) * x, x, align_scale=True)
    assert max(sc["per_sample"]["relative_error"]) < 1e-12 and sc["success_rate"] == 1.0
    assert min(sc["per_sample"]["psnr_amplitude"]) > 200 - 1e-9
    assert evaluate(x, x)["settings"] == {"amplitude_range": 1.0, "phase_range_rad": 2 * math.pi, "tol": 1e-4,
                                          "align_scale": False, "psnr_cap_db": PSNR_CAP_DB}
    empty = evaluate(torch.ones(0, 4, 4), torch.ones(0, 4, 4))
    assert empty["n"] == 0 and math.isnan(empty["success_rate"])
