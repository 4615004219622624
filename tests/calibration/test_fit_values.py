"""Fast value tests of calibration.fit (the mutation selection of calibration/fit.py; the slow
end-to-end recovery tests stay in test_fit.py): every piece of the forward model against an
independent numpy computation of the documented formula, the variable projection and the
parameter mapping at hand-computed values, a tiny noise-free fit that must return the truth and
the Jacobian covariance computed here by autograd, and every refusal/check message.

Sizes are tiny (32-sample windows, 12×12 cameras): each test runs in well under a second."""
import math
import re

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  (see below)

import calibration.fit as fitmod
from calibration.errors import FitError
from calibration.fit import (PARAMS, UNITS, FitResult, Geometry, NearFieldModel, _cluster_covariance, _clusters,
                             _gauss_tf, _LUTBlock, _ls_scale, _Problem, _run, evaluate, fit_parameters,
                             geometry_for, jackknife, refined_lut, with_model_error)
from calibration.lut import LUTResult, _bernstein, _phi_from_theta, grating_harmonic_model

# torch.optim's first step imports torch._dynamo (≈ 3 s); importing it with the module lets forked
# runs (mutation testing) share it instead of paying it per run.
F64 = torch.float64
LAM, SLM_P, CAM_P = 633e-9, 8e-6, 5.5e-6


def _t(v):
    return torch.tensor(v, dtype=F64)


def _lut():
    """A strictly increasing, visibly non-linear table (so a wrong lookup shows)."""
    x = np.arange(256) / 256
    return 2 * math.pi * (0.3 * x + 0.7 * x ** 2)


def _geo(n=32, cam=(12, 12), up=2, k=0):
    return Geometry(wavelength_m=LAM, slm_pitch_m=SLM_P, camera_pitch_m=CAM_P, camera_shape=cam, sim_n=n,
                    upsample=up, pixel_subsamples=k)


def _pats(seed=0, shapes=((6, 6), (6, 6))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, s) for s in shapes]


# ------------------------------------------------------------------------------------ geometry
def _smallest_window(n0, step):
    from optics.grid import fast_size
    m = n0
    while not (fast_size(m) == m and m % step == 0):
        m += 1
    return m


def test_geometry_for_pattern_limited_window_is_the_smallest_fast_multiple():
    # pattern 40 SLM px = 320 µm plus 2·zλ/(2·pitch) = 2·5e-3·633e-9/16e-6 = 395.6 µm of reach;
    # the camera field 1.3·10·5.5 µm is far smaller: extent 715.6 µm / (8 µm/4) = 357.8 → 358
    inst = {"slm_pitch_m": SLM_P, "camera_pitch_m": CAM_P, "distance_m": 5e-3, "wavelength_m": LAM}
    g = geometry_for(inst, (10, 10), [np.zeros((40, 30)), np.zeros((12, 12))], upsample=4, pixel_subsamples=3)
    ext = 40 * SLM_P + 2 * 5e-3 * LAM / (2 * SLM_P)
    n0 = math.ceil(ext / (SLM_P / 4))
    assert n0 == 358
    assert g.sim_n == _smallest_window(n0, 8) == 360
    assert (g.wavelength_m, g.slm_pitch_m, g.camera_pitch_m, g.camera_shape) == (LAM, SLM_P, CAM_P, (10, 10))
    assert g.upsample == 4 and g.pixel_subsamples == 3
    assert g.sim_pitch_m == pytest.approx(2e-6, rel=1e-15)


def test_geometry_for_camera_limited_window_uses_magnification_and_distance_override():
    # camera 100 px·5.5 µm/M(=0.5)·1.3 = 1430 µm dominates; sim pitch 8/2 = 4 µm → 357.5 → 358
    inst = {"slm_pitch_m": SLM_P, "camera_pitch_m": CAM_P, "distance_m": 1.0, "wavelength_m": LAM,
            "magnification": 0.5}
    g = geometry_for(inst, (100, 60), [np.zeros((4, 4))], upsample=2, pixel_subsamples=0, distance_m=1e-3)
    n0 = math.ceil(1.3 * 100 * CAM_P / 0.5 / (SLM_P / 2))
    assert g.sim_n == _smallest_window(n0, 4)
    assert g.upsample == 2 and g.pixel_subsamples == 0
    # the override, not the instrument's 1 m (which would need a 40 mm window), sets the size
    assert g.sim_n < 400
    # magnification 1 by default: camera field 1.3·100·5.5 µm = 715 µm → 178.75 → 179
    inst.pop("magnification")
    g1 = geometry_for(inst, (100, 60), [np.zeros((4, 4))], upsample=2, pixel_subsamples=0, distance_m=1e-3)
    assert g1.sim_n == _smallest_window(math.ceil(1.3 * 100 * CAM_P / (SLM_P / 2)), 4)


def test_geometry_defaults_are_the_fine_model():
    inst = {"slm_pitch_m": SLM_P, "camera_pitch_m": CAM_P, "distance_m": 1e-3, "wavelength_m": LAM}
    g = geometry_for(inst, (8, 8), [np.zeros((4, 4))])
    assert g.upsample == 4 and g.pixel_subsamples == 3 and g.sim_n % 8 == 0
    d = Geometry(wavelength_m=LAM, slm_pitch_m=SLM_P, camera_pitch_m=CAM_P, camera_shape=(4, 4))
    assert (d.upsample, d.sim_n, d.pixel_subsamples) == (2, 128, 0)


def test_gauss_tf_is_the_transform_of_a_gaussian_of_that_std():
    # the inverse FFT of the transfer function is a (periodic) Gaussian kernel whose second moment
    # is σ² (σ = 3 samples on 64: the periodic images add < 1e-12)
    n, dx, sig = 64, 1e-6, 3e-6
    tf = _gauss_tf(n, dx, _t(sig))
    assert tf.shape == (n, n) and tf.dtype == F64
    assert float(tf[0, 0]) == 1.0
    k = torch.fft.ifft2(tf).real
    x = torch.fft.fftfreq(n, d=1.0 / n, dtype=F64) * dx        # signed sample positions (m)
    var_x = float((k * x[None, :] ** 2).sum() / k.sum())
    var_y = float((k * x[:, None] ** 2).sum() / k.sum())
    assert var_x == pytest.approx(sig ** 2, rel=1e-9) and var_y == pytest.approx(sig ** 2, rel=1e-9)
    assert float(k.sum()) == pytest.approx(1.0, rel=1e-12)


# ----------------------------------------------------------------------------- NearFieldModel
def test_model_refuses_bad_windows_patterns_and_gray_levels():
    with pytest.raises(FitError, match=r"^simulation window 33 samples is not a multiple of upsample 2; use geometry_for$"):
        NearFieldModel(_geo(n=33), _pats(), _lut())
    with pytest.raises(FitError, match=r"^pattern 17×4 SLM pixels does not fit the 16×16-pixel simulation window; raise sim_n$"):
        NearFieldModel(_geo(), [np.zeros((17, 4), int)], _lut())
    with pytest.raises(FitError, match=r"pattern 4×17 SLM pixels"):
        NearFieldModel(_geo(), [np.zeros((4, 17), int)], _lut())
    NearFieldModel(_geo(), [np.zeros((16, 16), int)], _lut())        # exactly the window: fine
    with pytest.raises(FitError, match=r"^gray levels 0 … 256 outside the 256-level LUT; check the capture's slm_bit_depth$"):
        NearFieldModel(_geo(), [np.array([[0, 256]])], _lut())
    with pytest.raises(FitError, match=r"gray levels -1 … 3 outside the 256-level LUT"):
        NearFieldModel(_geo(), [np.array([[-1, 3]])], _lut())
    # float patterns (an image file) are read as integer gray levels, and reported as such
    with pytest.raises(FitError, match=r"^gray levels 0 … 256 outside the 256-level LUT"):
        NearFieldModel(_geo(), [np.array([[0.0, 256.0]])], _lut())
    m = NearFieldModel(_geo(), [np.array([[0, 255]]), np.zeros((0, 0), int)], _lut())
    assert m.gray.shape == (2, 16, 16)


def test_patterns_are_centred_on_the_slm_with_gray_zero_around():
    pats = [np.arange(1, 16).reshape(5, 3), np.full((4, 6), 7)]
    m = NearFieldModel(_geo(), pats, _lut())
    g = m.gray.numpy()
    assert g.dtype == np.int64
    exp0 = np.zeros((16, 16), int)
    exp0[8 - 2:8 - 2 + 5, 8 - 1:8 - 1 + 3] = pats[0]      # rows 6..10, cols 7..9
    exp1 = np.zeros((16, 16), int)
    exp1[6:10, 5:11] = 7
    assert np.array_equal(g[0], exp0) and np.array_equal(g[1], exp1)
    assert m.x.shape == (32, 32) and m.x.dtype == torch.complex128 and bool((m.x == 1).all())
    assert m.centre_m == -0.5 * SLM_P / 2
    assert np.allclose(m.uy.numpy(), (np.arange(12) - 6) * CAM_P) and np.allclose(m.ux.numpy(), m.uy.numpy())
    m2 = NearFieldModel(_geo(cam=(5, 8)), pats, _lut())
    assert np.allclose(m2.uy.numpy(), (np.arange(5) - 2) * CAM_P)
    assert np.allclose(m2.ux.numpy(), (np.arange(8) - 4) * CAM_P)
    m3 = NearFieldModel(_geo(cam=(4, 7)), pats, _lut())                # odd width: centre pixel W//2 = 3
    assert np.allclose(m3.ux.numpy(), (np.arange(7) - 3) * CAM_P, rtol=0, atol=1e-20)


def _numpy_field_intensity(gray, lut, *, z, sigma_m, up, pitch):
    """Independent forward model: LUT lookup, nearest upsampling, separable sampled Gaussian of
    the phase (|j| <= ceil(4σ), replicate padding), e^{iφ}, exact angular spectrum, |·|²."""
    phi = np.kron(lut[gray], np.ones((up, up)))
    s = sigma_m / pitch
    if s > 0:
        r = max(1, math.ceil(4 * s))
        j = np.arange(-r, r + 1)
        k = np.exp(-0.5 * (j / s) ** 2)
        k /= k.sum()
        pad = np.pad(phi, r, mode="edge")
        rows = sum(k[i] * pad[i:i + phi.shape[0], :] for i in range(2 * r + 1))
        phi = sum(k[i] * rows[:, i:i + phi.shape[1]] for i in range(2 * r + 1))
    u = np.exp(1j * phi)
    n = phi.shape[0]
    f = np.fft.fftfreq(n, d=pitch)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    H = np.exp(2j * np.pi * z * np.sqrt(1 / LAM ** 2 - f2))
    return np.abs(np.fft.ifft2(np.fft.fft2(u) * H)) ** 2


@pytest.mark.parametrize("sigma_m", [0.0, 1.5e-6])
def test_field_intensity_is_the_lut_phase_propagated_by_the_angular_spectrum(sigma_m):
    """Relative 1e-9: the same float64 arithmetic in another order."""
    lut = _lut()
    pats = [np.arange(30).reshape(5, 6) * 8, np.full((3, 3), 200)]
    m = NearFieldModel(_geo(), pats, lut)
    p = {"distance_m": _t(0.4e-3), "crosstalk_sigma_m": _t(sigma_m)}
    out = m.field_intensity(p)
    assert out.shape == (2, 32, 32) and not out.requires_grad
    for i in range(2):
        exp = _numpy_field_intensity(m.gray[i].numpy(), lut, z=0.4e-3, sigma_m=sigma_m, up=2, pitch=4e-6)
        assert np.allclose(out[i].numpy(), exp, rtol=1e-9, atol=1e-9)


def test_field_intensity_takes_a_substituted_table_and_a_non_monotone_start():
    """A substituted table (``p["lut_phase_rad"]``) replaces the fixed one; a non-monotone
    provisional table is still the one used (only the SLM's placeholder LUT is monotone)."""
    lut = _lut()
    pats = [np.arange(36).reshape(6, 6) * 7]
    wavy = np.sin(np.arange(256) / 9.0) * 3
    p = {"distance_m": _t(0.5e-3), "crosstalk_sigma_m": _t(0.0)}
    m = NearFieldModel(_geo(), pats, wavy)
    exp = _numpy_field_intensity(m.gray[0].numpy(), wavy, z=0.5e-3, sigma_m=0.0, up=2, pitch=4e-6)
    assert np.allclose(m.field_intensity(p)[0].numpy(), exp, rtol=1e-9, atol=1e-9)
    m2 = NearFieldModel(_geo(), pats, lut)
    out = m2.field_intensity(dict(p, lut_phase_rad=torch.as_tensor(wavy)))
    assert np.allclose(out[0].numpy(), exp, rtol=1e-9, atol=1e-9)
    # plain floats are accepted as values too
    out2 = m2.field_intensity({"distance_m": 0.5e-3, "crosstalk_sigma_m": 0.0, "lut_phase_rad": wavy})
    assert np.allclose(out2[0].numpy(), exp, rtol=1e-9, atol=1e-9)
    # a non-decreasing table with a flat run (a provisional fit saturating at the top) is used as given
    flat = np.minimum(lut, 4.0)
    m3 = NearFieldModel(_geo(), pats, flat)
    exp3 = _numpy_field_intensity(m3.gray[0].numpy(), flat, z=0.5e-3, sigma_m=0.0, up=2, pitch=4e-6)
    assert np.allclose(m3.field_intensity(p)[0].numpy(), exp3, rtol=1e-9, atol=1e-9)
    # a table of another real dtype (here long double, which torch cannot hold) is used in float64
    m4 = NearFieldModel(_geo(), pats, wavy.astype(np.longdouble))
    assert m4.lut_phase_rad.dtype == F64 and np.allclose(m4.field_intensity(p)[0].numpy(), exp, rtol=1e-9, atol=1e-9)


def test_field_intensity_keeps_the_graph_only_when_a_value_requires_grad():
    m = NearFieldModel(_geo(), _pats(), _lut())
    z = torch.tensor(0.5e-3, dtype=F64, requires_grad=True)
    out = m.field_intensity({"distance_m": z, "crosstalk_sigma_m": _t(1e-6)})
    assert out.requires_grad
    with torch.no_grad():
        assert not m.field_intensity({"distance_m": z, "crosstalk_sigma_m": _t(1e-6)}).requires_grad
    assert not m.field_intensity({"distance_m": _t(0.5e-3), "crosstalk_sigma_m": _t(1e-6)}).requires_grad
    # the table requiring grad is enough
    tab = torch.as_tensor(_lut()).clone().requires_grad_(True)
    out = m.field_intensity({"distance_m": _t(0.5e-3), "crosstalk_sigma_m": _t(1e-6), "lut_phase_rad": tab})
    out.sum().backward()
    assert tab.grad is not None and float(tab.grad.abs().sum()) > 0


KX, KY = 2, 3          # cycles over the 32·4 µm window


def _cos_field(n=32, dx=4e-6):
    """A smooth periodic test intensity on the simulation grid, sample j at (j − n//2)·dx."""
    c = (np.arange(n) - n // 2) * dx
    L = n * dx
    Y, X = np.meshgrid(c, c, indexing="ij")
    return 1 + 0.5 * np.cos(2 * np.pi * (KX * X + KY * Y) / L + 0.3), L


def _map(uy, ux, p, centre):
    """Camera pixel centres → SLM plane: R(α)·u/M + s, relative to the pattern centre."""
    c, s = math.cos(p["rotation_rad"]), math.sin(p["rotation_rad"])
    UY, UX = np.meshgrid(uy, ux, indexing="ij")
    X = (c * UX - s * UY) / p["magnification"] + p["shift_x_m"] + centre
    Y = (s * UX + c * UY) / p["magnification"] + p["shift_y_m"] + centre
    return X, Y


GEO_P = {"distance_m": 1e-3, "magnification": 1.3, "rotation_rad": 0.2, "shift_x_m": 7e-6, "shift_y_m": -11e-6,
         "crosstalk_sigma_m": 0.0}


def _bilinear(img, X, Y, dx=4e-6):
    """Bilinear interpolation of the grid image (sample j at (j − n//2)·dx) at (X, Y) metres."""
    n = img.shape[0]
    fx, fy = X / dx + n // 2, Y / dx + n // 2
    x0, y0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
    tx, ty = fx - x0, fy - y0
    return ((1 - ty) * (1 - tx) * img[y0, x0] + (1 - ty) * tx * img[y0, x0 + 1]
            + ty * (1 - tx) * img[y0 + 1, x0] + ty * tx * img[y0 + 1, x0 + 1])


@pytest.mark.parametrize("k", [0, 2, 3])
def test_intensity_samples_the_field_at_the_mapped_camera_pixels(k, monkeypatch):
    """With a known single-cosine field (integer cycles over the window) the camera image is, per
    pixel, the bilinear interpolation at ``T(u)`` of: the field times the Gaussian pixel factor
    exp(−2π²σ²f²), σ² = (p/M)²/12, for k = 0 (exact for one Fourier component); the mean over the
    k×k sub-pixel offsets for k >= 1. Computed here in numpy: rel 1e-9."""
    cam = (7, 10)
    geo = _geo(cam=cam, k=k)
    m = NearFieldModel(geo, _pats(), _lut())
    field, L = _cos_field()
    monkeypatch.setattr(m, "field_intensity", lambda p: torch.as_tensor(np.stack([field, 2 * field])))
    out = m.intensity({kk: _t(v) for kk, v in GEO_P.items()}).numpy()
    assert out.shape == (2,) + cam
    uy = (np.arange(cam[0]) - cam[0] // 2) * CAM_P
    ux = (np.arange(cam[1]) - cam[1] // 2) * CAM_P
    if k == 0:
        X, Y = _map(uy, ux, GEO_P, m.centre_m)
        sig = CAM_P / GEO_P["magnification"] / math.sqrt(12)
        att = math.exp(-2 * math.pi ** 2 * sig ** 2 * (KX ** 2 + KY ** 2) / L ** 2)
        exp = _bilinear(1 + (field - 1) * att, X, Y)
    else:
        off = ((np.arange(k) + 0.5) / k - 0.5) * CAM_P
        acc = 0
        for oy in off:
            for ox in off:
                X, Y = _map(uy + oy, ux + ox, GEO_P, m.centre_m)
                acc = acc + _bilinear(field, X, Y)
        exp = acc / k ** 2
    assert np.allclose(out[0], exp, rtol=1e-9, atol=0) and np.allclose(out[1], 2 * exp, rtol=1e-9, atol=0)


def test_intensity_of_the_real_field_is_the_field_at_the_mapped_point():
    """No mock: at magnification M, no rotation, zero shift, k = 0 is the blurred field sampled at
    camera pixel centres; the centre pixel (6, 6) sees the sample half a sim pitch before the
    axis, i.e. the mean of samples 15 and 16 (bilinear) of the Gaussian-blurred field."""
    geo = _geo()
    m = NearFieldModel(geo, _pats(), _lut())
    p = {"distance_m": _t(0.6e-3), "magnification": _t(1.0), "rotation_rad": _t(0.0), "shift_x_m": _t(0.0),
         "shift_y_m": _t(0.0), "crosstalk_sigma_m": _t(0.0)}
    inten = m.field_intensity(p)
    blur = torch.fft.ifft2(torch.fft.fft2(inten) * _gauss_tf(32, 4e-6, CAM_P / math.sqrt(12))).real.numpy()
    out = m.intensity(p).numpy()
    exp = blur[:, 15:17, 15:17].mean(axis=(1, 2))
    assert np.allclose(out[:, 6, 6], exp, rtol=1e-9)


# --------------------------------------------------------------------- small numerical pieces
def test_ls_scale_recovers_scale_and_offset_and_honours_weights():
    I = torch.linspace(0.1, 2.0, 50, dtype=F64)
    y = 3.5 * I + 20.0
    a, b = _ls_scale(I, y, torch.ones_like(I))
    assert float(a) == pytest.approx(3.5, rel=1e-12) and float(b) == pytest.approx(20.0, rel=1e-12)
    y2 = y.clone()
    y2[::7] += 1000.0                                   # outliers with zero weight
    w = torch.ones_like(I)
    w[::7] = 0.0
    a, b = _ls_scale(I, y2, w)
    assert float(a) == pytest.approx(3.5, rel=1e-12) and float(b) == pytest.approx(20.0, rel=1e-12)
    # a weighted fit of non-linear data: closed form against numpy's weighted polyfit
    yq = I ** 2
    wq = torch.linspace(1.0, 3.0, 50, dtype=F64)
    a, b = _ls_scale(I, yq, wq)
    pa, pb = np.polyfit(I.numpy(), yq.numpy(), 1, w=np.sqrt(wq.numpy()))
    assert float(a) == pytest.approx(pa, rel=1e-10) and float(b) == pytest.approx(pb, rel=1e-10)
    a, b = _ls_scale(torch.ones(5, dtype=F64), torch.arange(5, dtype=F64), torch.ones(5, dtype=F64))
    assert float(a) == 0.0 and float(b) == 2.0                      # flat model: clamp, no NaN


def test_clusters_label_frame_and_tile():
    mask = torch.ones((2, 5, 7), dtype=torch.bool)
    mask[0, 0, 0] = False
    lab = _clusters(mask, 4)
    # ny = 2, nx = 2 tiles per frame; pixel (p, y, x) → p·4 + (y//4)·2 + x//4
    p, yy, xx = torch.nonzero(mask, as_tuple=True)
    assert torch.equal(lab, p * 4 + (yy // 4) * 2 + xx // 4)
    assert lab.numel() == 69 and int(lab[0]) == 0 and int(lab[3]) == 1 and int(lab.max()) == 7
    assert int(_clusters(mask, 3).max()) == 2 * 2 * 3 - 1


def test_cluster_covariance_by_hand():
    """Two clusters, one parameter: scores g_c = Σ J r, meat Σ g², times G/(G−1) = 2; extra rows
    are one cluster each."""
    J = torch.tensor([[1.0], [2.0], [1.0], [3.0]], dtype=F64)
    r = torch.tensor([1.0, 1.0, -1.0, 2.0], dtype=F64)
    bread = torch.tensor([[0.5]], dtype=F64)
    cov, G = _cluster_covariance(J, r, bread, torch.tensor([5, 5, 9, 9]), 0)
    assert G == 2 and float(cov) == pytest.approx(0.25 * (9 + 25) * 2, rel=1e-14)
    cov, G = _cluster_covariance(J, r, bread, torch.tensor([5, 5]), 2)
    assert G == 3 and float(cov) == pytest.approx(0.25 * (9 + 1 + 36) * 1.5, rel=1e-14)
    cov, G = _cluster_covariance(J[:1], r[:1], bread, torch.tensor([0]), 0)
    assert G == 1 and float(cov) == pytest.approx(0.25, rel=1e-14)    # G/(G−1) guarded


class _Quadratic:
    """A stand-in problem: loss ½|A q − c|², minimum at A⁻¹c."""

    def __init__(self):
        self.A = torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=F64)
        self.c = torch.tensor([1.0, -2.0], dtype=F64)

    def loss(self, q):
        r = self.A @ q - self.c
        return 0.5 * (r * r).sum() + 0.25


def test_run_minimises_the_problem_loss_and_reports_it():
    prob = _Quadratic()
    q0 = torch.tensor([5.0, 5.0], dtype=F64)
    q, L = _run(prob, q0, 50)
    assert torch.allclose(q, torch.linalg.solve(prob.A, prob.c), atol=1e-8)
    assert L == pytest.approx(0.25, abs=1e-12) and not q.requires_grad
    assert torch.equal(q0, torch.tensor([5.0, 5.0], dtype=F64))      # the start is not modified
    q1, L1 = _run(prob, q0, 1)                                        # one iteration: not yet there
    assert L1 > 0.25 + 1e-6


# --------------------------------------------------------------------------------- _Problem
BOUNDS = {"distance_m": (0.5e-3, 1.5e-3), "magnification": (0.8, 1.2), "rotation_rad": (-0.1, 0.1),
          "shift_x_m": (-20e-6, 20e-6), "shift_y_m": (-20e-6, 20e-6), "crosstalk_sigma_m": (0.0, 8e-6)}
TRUE = {"distance_m": 1.0e-3, "magnification": 1.05, "rotation_rad": 0.03, "shift_x_m": 3e-6, "shift_y_m": -2e-6,
        "crosstalk_sigma_m": 1.5e-6}


def test_problem_maps_bounded_parameters_through_a_sigmoid():
    m = NearFieldModel(_geo(), _pats(), _lut())
    data = np.full((2, 12, 12), 100.0)
    data[0, 0, 0] = np.nan
    prob = _Problem(m, data, 3.0, BOUNDS, {"crosstalk_sigma_m": 2e-6})
    assert prob.free == ["distance_m", "magnification", "rotation_rad", "shift_x_m", "shift_y_m"]
    assert prob.rn2 == 9.0 and prob.lut is None
    assert not bool(prob.mask[0, 0, 0]) and int(prob.mask.sum()) == 287 and float(prob.y[0, 0, 0]) == 0.0
    q = prob.to_q(TRUE)
    lo, hi = BOUNDS["distance_m"]
    assert float(q[0]) == pytest.approx(math.log(0.5 / 0.5), abs=1e-12)       # the middle of the range
    t = (1.05 - 0.8) / 0.4
    assert float(q[1]) == pytest.approx(math.log(t / (1 - t)), rel=1e-12)
    p = prob.to_params(q)
    for k in prob.free:
        assert float(p[k]) == pytest.approx(TRUE[k], rel=1e-12, abs=1e-18), k
    assert float(p["crosstalk_sigma_m"]) == 2e-6 and p["crosstalk_sigma_m"].dtype == F64
    assert float(prob.to_params(torch.zeros(5, dtype=F64))["rotation_rad"]) == 0.0
    # values outside the bounds are clamped 1e-6 inside them (finite logits)
    q = prob.to_q(dict(TRUE, distance_m=9.0, magnification=0.0))
    assert float(q[0]) == pytest.approx(math.log((1 - 1e-6) / 1e-6), rel=1e-9)
    assert float(q[1]) == pytest.approx(math.log(1e-6 / (1 - 1e-6)), rel=1e-9)


def test_problem_residuals_profile_scale_and_background():
    """Data a·I + b: the profiled residuals vanish and (a, b) are recovered; with a, b and weights
    given, r = (y − a·I − b)·sqrt(w), zero on masked pixels; the loss is the Huber sum over the
    unmasked count."""
    m = NearFieldModel(_geo(), _pats(), _lut())
    p = {k: _t(v) for k, v in TRUE.items()}
    with torch.no_grad():
        I = m.intensity(p)
    data = (1500 * I + 40).numpy()
    data[1, 3, 4] = np.nan
    prob = _Problem(m, data, 2.0, BOUNDS, {})
    r, mu, a, b = prob.residuals(p)
    assert float(a) == pytest.approx(1500, rel=1e-10) and float(b) == pytest.approx(40, rel=1e-8)
    assert float(r.abs().max()) < 1e-8 and torch.allclose(mu, 1500 * I + 40, rtol=1e-10)
    y = torch.as_tensor(np.nan_to_num(data))
    w = torch.full_like(y, 0.25)
    r, mu, a2, b2 = prob.residuals(p, a=_t(1000.0), b=_t(10.0), w=w)
    exp = (y - 1000 * I - 10) * 0.5
    exp[1, 3, 4] = 0.0
    assert torch.allclose(r, exp, rtol=1e-12) and float(a2) == 1000.0 and float(b2) == 10.0
    # given a, b but no weights: w = 1/(μ + rn² + 1) with the model μ
    r, mu, _, _ = prob.residuals(p, a=_t(1000.0), b=_t(10.0))
    exp = (y - mu) / torch.sqrt(mu + 4.0 + 1.0)
    exp[1, 3, 4] = 0.0
    assert torch.allclose(r, exp, rtol=1e-12)
    # the loss: Huber (δ = 3) of the profiled residuals over the unmasked count
    data2 = data + np.where(np.arange(144).reshape(12, 12) % 2, 100.0, -100.0)[None]
    prob2 = _Problem(m, data2, 2.0, BOUNDS, {})
    q = prob2.to_q(TRUE)
    rr, _, _, _ = prob2.residuals(prob2.to_params(q))
    ar = rr.abs()
    hub = torch.where(ar < 3, 0.5 * ar ** 2, 3 * (ar - 1.5))
    L = float(prob2.loss(q))
    assert L == pytest.approx(float(hub.sum()) / 287, rel=1e-12)
    assert float((ar > 3).sum()) > 0 and float((ar < 3).sum()) > 0       # both branches used
    assert float(prob2.loss(q, delta=1.0)) < L


# -------------------------------------------------------------------------------- joint LUT
def _lut_result(grating=None, theta=(0.4, -0.3, 0.2, 0.1), c=0.7):
    gray = np.arange(256)
    th = torch.tensor(theta, dtype=F64)
    B = _bernstein(torch.arange(256, dtype=F64) / 255, len(theta))
    phase = _phi_from_theta(th, B).numpy()
    mg = np.array([0, 40, 90, 130, 170, 210, 255.0])
    mh = c * np.sin(phase[mg.astype(int)] / 2) ** 2 + 0.01
    return LUTResult(gray=gray, phase_rad=phase, phase_std_rad=np.full(256, 0.01), measured_gray=mg,
                     measured_h=mh, measured_h_std=np.full(7, 0.02), scale_c=c, chi2_reduced=1.0,
                     degree=len(theta), extra={"a": 1.0}, theta=np.array(theta), grating=grating)


GRATING = {"z_m": 1e-3, "period_m": 64e-6, "wavelength_m": LAM, "period_px": 8, "slm_pitch_m": SLM_P}


def test_lut_block_parameters_and_grating_residuals():
    with pytest.raises(FitError, match=r"^the LUT result carries no shape parameters; fit it with calibration\.lut\.fit_lut$"):
        _LUTBlock(LUTResult(gray=np.arange(4), phase_rad=np.arange(4.0), phase_std_rad=np.zeros(4),
                            measured_gray=np.arange(4), measured_h=np.ones(4), measured_h_std=np.ones(4),
                            scale_c=1.0, chi2_reduced=1.0, degree=2))
    lut = _lut_result()
    blk = _LUTBlock(lut)
    assert blk.degree == 4 and blk.n == 5
    assert torch.allclose(blk.q0, torch.tensor([0.4, -0.3, 0.2, 0.1, math.log(0.7)], dtype=F64), rtol=1e-14)
    assert np.allclose(blk.phi(blk.q0).numpy(), lut.phase_rad, rtol=1e-14)
    assert blk.g.dtype == torch.int64 and blk.g.tolist() == [0, 40, 90, 130, 170, 210, 255]
    p = {"crosstalk_sigma_m": _t(1e-6), "distance_m": _t(1e-3)}
    res = blk.residuals(blk.q0, p)
    assert np.allclose(res.numpy(), np.full(7, 0.01 / 0.02), rtol=1e-10)       # (h − C·sin²)/σ_h
    # with the grating law: scale referred to the unblurred law at π, residuals with the fit's σ, z
    glut = _lut_result(grating=GRATING)
    gb = _LUTBlock(glut)
    g_pi = float(grating_harmonic_model(_t([math.pi]), sigma_m=_t(0.0), z_m=1e-3, period_m=64e-6,
                                        wavelength_m=LAM, period_px=8)[0])
    assert float(gb.q0[-1]) == pytest.approx(math.log(0.7 / g_pi), rel=1e-12)
    res = gb.residuals(gb.q0, {"crosstalk_sigma_m": _t(1.2e-6), "distance_m": _t(0.8e-3)})
    phi = torch.as_tensor(glut.phase_rad[[0, 40, 90, 130, 170, 210, 255]])
    mod = grating_harmonic_model(phi, sigma_m=_t(1.2e-6), z_m=0.8e-3, period_m=64e-6, wavelength_m=LAM, period_px=8)
    exp = (torch.as_tensor(glut.measured_h) - 0.7 / g_pi * mod) / 0.02
    assert torch.allclose(res, exp, rtol=1e-10)


def test_problem_appends_the_lut_parameters():
    m = NearFieldModel(_geo(), _pats(), _lut())
    lut = _lut_result()
    prob = _Problem(m, np.full((2, 12, 12), 5.0), 0.0, BOUNDS, {"crosstalk_sigma_m": 0.0}, lut=lut)
    q = prob.to_q(TRUE)
    assert q.numel() == 5 + 5 and torch.equal(q[5:], prob.lut.q0)
    p = prob.to_params(q)
    assert torch.equal(p["_lut_q"], q[5:]) and np.allclose(p["lut_phase_rad"].numpy(), lut.phase_rad)
    q2 = q.clone()
    q2[-1] += 1.0
    L_img = float(_Problem(m, np.full((2, 12, 12), 5.0), 0.0, BOUNDS, {"crosstalk_sigma_m": 0.0}).loss(q[:5]))
    Ls = [float(prob.loss(qq)) for qq in (q, q2)]
    for qq, L in zip((q, q2), Ls):
        lr = prob.lut.residuals(qq[5:], prob.to_params(qq))
        assert L == pytest.approx(L_img + 0.5 * float((lr ** 2).sum()) / 288, rel=1e-10)


# --------------------------------------------------------------------------- the whole fit
def _synthetic(true=TRUE, scale=2000.0, bg=30.0, seed=None, k=0, cam=(12, 12)):
    geo = _geo(k=k, cam=cam)
    pats = _pats(shapes=((8, 8), (8, 8), (8, 8)))
    m = NearFieldModel(geo, pats, _lut())
    with torch.no_grad():
        mu = scale * m.intensity({kk: _t(v) for kk, v in true.items()}) + bg
    data = mu.numpy()
    if seed is not None:
        data = np.random.default_rng(seed).poisson(data).astype(float)
    return geo, pats, data


def _autograd_cov(geo, pats, data, values, free, rn, *, table=None, lutres=None, q_lut=None, tile=8):
    """Independent covariance of a fit result, computed here: the autograd Jacobian of the
    residuals r = (y − a·I(θ) − b)·sqrt(w) (w = 1/(μ + rn² + 1) frozen at the fit's μ) in the free
    parameters, a, b and — for a joint LUT (plain sin² law) — its Bernstein shape and log C, whose
    residuals (h − C·sin²(φ(g)/2))/σ_h follow the image ones. Returns (J, r, mask, σ per column,
    cov) with σ² = max(χ²·(JᵀJ)⁻¹ (χ² ≥ 1), cluster sandwich over (frame, tile) and one cluster per
    LUT residual), χ² the fit's profiled reduced χ² (see _profiled_chi2)."""
    base = _lut() if table is None else table
    m = NearFieldModel(geo, pats, base)
    y = torch.as_tensor(data)
    mask = torch.isfinite(y)
    y0 = torch.where(mask, y, torch.zeros_like(y))
    nl = 0 if q_lut is None else q_lut.numel()
    if nl:
        deg = lutres.degree
        Ball = _bernstein(torch.arange(len(lutres.gray), dtype=F64) / (len(lutres.gray) - 1), deg)
        gi = torch.as_tensor(np.asarray(lutres.measured_gray)).round().long()
        hh, hs = torch.as_tensor(lutres.measured_h), torch.as_tensor(lutres.measured_h_std)

    def params(x):
        p = {k: _t(values[k]) for k in PARAMS}
        for i, k in enumerate(free):
            p[k] = x[i]
        if nl:
            p["lut_phase_rad"] = _phi_from_theta(x[len(free) + 2:len(free) + 2 + deg], Ball)
        return p

    x0 = torch.tensor([values[k] for k in free] + [values["intensity_scale"], values["background_e"]], dtype=F64)
    if nl:
        x0 = torch.cat([x0, q_lut])
    with torch.no_grad():
        mu = values["intensity_scale"] * m.intensity(params(x0)) + values["background_e"]
    w = 1.0 / (mu.clamp_min(0) + rn ** 2 + 1.0)
    na = len(free)

    def rf(x):
        r = ((y0 - x[na] * m.intensity(params(x)) - x[na + 1]) * torch.sqrt(w))[mask]
        if nl:
            phi = _phi_from_theta(x[na + 2:na + 2 + deg], Ball)[gi]
            r = torch.cat([r, (hh - torch.exp(x[-1]) * torch.sin(phi / 2) ** 2) / hs])
        return r

    J = torch.autograd.functional.jacobian(rf, x0, vectorize=True)
    r = rf(x0)
    with torch.no_grad():
        I = m.intensity(params(x0))
    chi2 = _profiled_chi2(I, y0, mask, rn, na + 2 + nl)
    bread = torch.linalg.inv(J.T @ J)
    P, H, W = mask.shape
    ny, nx = -(-H // tile), -(-W // tile)
    p_, yy, xx = torch.nonzero(mask, as_tuple=True)
    lab = p_ * (ny * nx) + (yy // tile) * nx + xx // tile
    if nl:
        lab = torch.cat([lab, lab.max() + 1 + torch.arange(len(hh))])
    _, inv = torch.unique(lab, return_inverse=True)
    G = int(inv.max()) + 1
    scores = torch.zeros((G, J.shape[1]), dtype=F64).index_add_(0, inv, J * r[:, None])
    cov_cl = bread @ scores.T @ scores @ bread * G / (G - 1)
    cov_j = bread * max(chi2, 1.0)
    cov = cov_cl + torch.diag((torch.diag(cov_j) - torch.diag(cov_cl)).clamp_min(0))
    return dict(J=J, r=r, mask=mask, chi2=chi2, G=G, cov=cov, cov_cl=cov_cl, cov_j=cov_j,
                std=torch.sqrt(torch.diag(cov)).numpy())


# central differences (the fit) against autograd (here): a shift, rotation or magnification step can straddle a
# node of the bilinear sampling, where the exact derivative jumps (a few % on one pixel's column)
RTOL_FD = {"distance_m": 1e-2, "magnification": 1e-2, "rotation_rad": 1e-2, "shift_x_m": 3e-2, "shift_y_m": 3e-2,
           "crosstalk_sigma_m": 3e-3, "intensity_scale": 3e-3, "background_e": 3e-3}


def _profiled_chi2(I, y, mask, rn, n_par):
    """The fit's χ²: a, b by unweighted LS, weights 1/(μ₀ + rn² + 1) from that μ₀, then a, b by
    weighted LS (numpy's polyfit), Σ r² over the unmasked pixels / (N − n_par)."""
    Ii, yi = I[mask].numpy(), y[mask].numpy()
    a0, b0 = np.polyfit(Ii, yi, 1)
    mu0 = np.clip(a0 * I.numpy() + b0, 0, None)
    w = 1.0 / (mu0 + rn ** 2 + 1.0)
    a, b = np.polyfit(Ii, yi, 1, w=np.sqrt(w[mask.numpy()]))
    r = (yi - a * Ii - b) * np.sqrt(w[mask.numpy()])
    return float((r ** 2).sum()) / (Ii.size - n_par)


def test_noise_free_fit_returns_the_truth_and_the_inverse_jacobian_errors():
    """Model data without noise, started 1 % off: the fit returns the truth (rel 1e-6), χ² ≈ 0, r = 1,
    and σ_k = sqrt((JᵀJ)⁻¹_kk) (χ² < 1 counts as 1; the sandwich vanishes with the residuals) with
    J computed here by autograd (tolerance RTOL_FD: central differences vs exact derivatives)."""
    geo, pats, data = _synthetic(scale=4.0, bg=0.1)        # low counts (μ < 1 on some pixels): the weights' terms matter
    start = dict(TRUE, distance_m=1.01e-3, magnification=1.045, shift_x_m=2.5e-6)
    nominal = dict(TRUE, distance_m=1.0e-3)
    fit = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=nominal, read_noise_e=3.0, start=start,
                         refine_iters=25, bounds=BOUNDS)
    for k in PARAMS:
        assert fit.values[k] == pytest.approx(TRUE[k], rel=1e-5, abs=1e-11), k
    assert fit.values["intensity_scale"] == pytest.approx(4.0, rel=1e-6)
    assert fit.values["background_e"] == pytest.approx(0.1, rel=1e-4)
    assert fit.chi2_reduced < 1e-6 and min(fit.pearson_r) > 1 - 1e-9 and len(fit.pearson_r) == 3
    assert fit.problems == [] and fit.fixed == () and fit.n_starts == 1 and fit.start_losses == []
    assert fit.bounds == BOUNDS and fit.nominal == nominal and math.isnan(fit.registration_quality)
    assert np.allclose(fit.model_e, data, rtol=1e-5) and np.array_equal(fit.data_e, data)
    assert fit.residuals.shape == data.shape and np.abs(fit.residuals).max() < 1e-3
    assert fit.n_clusters == 3 * 2 * 2                               # 3 frames × (12/8 → 2)² tiles
    ind = _autograd_cov(geo, pats, data, fit.values, list(PARAMS), 3.0)
    for i, k in enumerate(list(PARAMS) + ["intensity_scale", "background_e"]):
        assert fit.std[k] == pytest.approx(ind["std"][i], rel=RTOL_FD[k]), k
    assert fit.std_statistical == fit.std and fit.std_model == {} and fit.lut == {}
    assert fitmod.FitResult.params(fit)["magnification"].dtype == F64
    assert {k: float(v) for k, v in fit.params().items()} == {k: fit.values[k] for k in PARAMS}


def test_noisy_fit_errors_are_the_larger_of_jacobian_and_cluster_sandwich():
    """Poisson data plus 60 e⁻ of unmodelled noise (χ² ≈ 5), crosstalk fixed, tiles of 4 px:
    σ_k² = max(χ²·(JᵀJ)⁻¹, B·Σ_c g_c g_cᵀ·B·G/(G−1))_kk, computed here from an autograd Jacobian
    (rel 1e-3: central differences); χ² with the fit's profiled weights (rel 1e-9)."""
    geo, pats, data = _synthetic(seed=1)
    data = data + 60 * np.random.default_rng(7).standard_normal(data.shape)
    data[0, 2, 3] = np.nan
    nominal = dict(TRUE, crosstalk_sigma_m=1.5e-6)
    fit = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=nominal, read_noise_e=2.0, start=TRUE,
                         refine_iters=15, bounds=BOUNDS, fit_crosstalk=False, tile_px=4)
    assert fit.fixed == ("crosstalk_sigma_m",) and fit.values["crosstalk_sigma_m"] == 1.5e-6
    assert fit.std["crosstalk_sigma_m"] == 0.0
    assert fit.residuals.dtype == np.float64 and np.isnan(fit.residuals[0, 2, 3])
    assert np.isnan(fit.data_e[0, 2, 3]) and np.isfinite(fit.residuals[0, 2, 4])
    free = [k for k in PARAMS if k != "crosstalk_sigma_m"]
    ind = _autograd_cov(geo, pats, data, fit.values, free, 2.0, tile=4)
    assert fit.chi2_reduced == pytest.approx(ind["chi2"], rel=1e-9) and 2 < ind["chi2"] < 8
    assert fit.n_clusters == ind["G"] == 27
    for i, k in enumerate(free + ["intensity_scale", "background_e"]):
        assert fit.std[k] == pytest.approx(ind["std"][i], rel=RTOL_FD[k]), k
    # the two differ: the check above tells them apart, both ways
    ratio = torch.diag(ind["cov_cl"]) / torch.diag(ind["cov_j"])
    assert float(ratio.max()) > 1.2 and float(ratio.min()) < 0.8


def test_joint_lut_fit_frees_the_table_with_its_grating_residuals():
    """Joint LUT (plain sin² law): the table is the Bernstein curve of the returned θ, the grating
    χ² is Σ((h − C·sin²(φ(g)/2))/σ_h)²/(levels − shape − 1), and every σ (geometry, a, b, each
    LUT level) is the documented covariance with the LUT residuals as clusters of their own
    (computed here with autograd; rel 1e-3)."""
    lutres = _lut_result()
    table = lutres.phase_rad
    geo = _geo()
    pats = _pats(shapes=((8, 8), (8, 8), (8, 8)))
    m = NearFieldModel(geo, pats, table)
    with torch.no_grad():
        data = (2000 * m.intensity({k: _t(v) for k, v in TRUE.items()}) + 30).numpy()
    data = data + 20 * np.random.default_rng(8).standard_normal(data.shape)
    nominal = dict(TRUE)
    fit = fit_parameters(geo, pats, data, lut_phase_rad=table, nominal=nominal, read_noise_e=1.0, start=TRUE,
                         refine_iters=6, bounds=BOUNDS, fit_crosstalk=False, joint_lut=lutres, check=False)
    L = fit.lut
    assert set(L) == {"phase_rad", "phase_std_rad", "scale_c", "theta", "grating_chi2_reduced"}
    th = torch.as_tensor(L["theta"])
    B = _bernstein(torch.arange(256, dtype=F64) / 255, 4)
    assert th.shape == (4,) and np.allclose(L["phase_rad"], _phi_from_theta(th, B).numpy(), rtol=0, atol=1e-13)
    phi_g = L["phase_rad"][lutres.measured_gray.astype(int)]
    res = (lutres.measured_h - L["scale_c"] * np.sin(phi_g / 2) ** 2) / lutres.measured_h_std
    assert L["grating_chi2_reduced"] == pytest.approx(float((res ** 2).sum()) / (7 - 5), rel=1e-10)
    free = [k for k in PARAMS if k != "crosstalk_sigma_m"]
    q = torch.cat([th, _t([math.log(L["scale_c"])])])
    ind = _autograd_cov(geo, pats, data, fit.values, free, 1.0, table=table, lutres=lutres, q_lut=q)
    assert fit.chi2_reduced == pytest.approx(ind["chi2"], rel=1e-9)
    assert fit.n_clusters == ind["G"] == 3 * 4 + 7
    for i, k in enumerate(free + ["intensity_scale", "background_e"]):
        assert fit.std[k] == pytest.approx(ind["std"][i], rel=RTOL_FD[k]), k
    Jphi = torch.autograd.functional.jacobian(lambda qq: _phi_from_theta(qq[:4], B), q)
    cl = ind["cov"][7:, 7:]
    exp = torch.sqrt(torch.einsum("ip,pq,iq->i", Jphi, cl, Jphi).clamp_min(0)).numpy()
    assert np.allclose(L["phase_std_rad"], exp, rtol=1e-3, atol=1e-12)
    assert float(L["phase_std_rad"][128]) > 0


def test_fit_refuses_mismatched_or_unusable_data():
    geo, pats, data = _synthetic()
    kw = dict(lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, start=TRUE, refine_iters=2)
    with pytest.raises(FitError, match=r"^data \(3, 12\) must be \(P, H, W\) with one frame per pattern \(3\)$"):
        fit_parameters(geo, pats, data[:, 0], **kw)
    with pytest.raises(FitError, match=r"data \(2, 12, 12\) must be \(P, H, W\) with one frame per pattern \(3\)"):
        fit_parameters(geo, pats, data[:2], **kw)
    with pytest.raises(FitError, match=r"^frames \(12, 11\) do not match the camera shape \(12, 12\)$"):
        fit_parameters(geo, pats, data[:, :, :11], **kw)
    bad = data.copy()
    bad[:, :7] = np.nan                                      # 58.3 % masked
    with pytest.raises(FitError, match=r"^only 41\.7 % of the pixels are usable \(not defects or NaN\); check the camera correction$"):
        fit_parameters(geo, pats, bad, **kw)
    ok = data.copy()
    ok[:, :6] = np.nan                                       # exactly half usable: accepted
    fit_parameters(geo, pats, ok, check=False, **kw)
    # crosstalk fixed without a nominal value: 0 (no crosstalk)
    nominal = {k: v for k, v in TRUE.items() if k != "crosstalk_sigma_m"}
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=nominal, read_noise_e=1.0, start=nominal,
                       refine_iters=1, fit_crosstalk=False, check=False)
    assert r.values["crosstalk_sigma_m"] == 0.0 and r.fixed == ("crosstalk_sigma_m",)


def test_failed_checks_name_the_parameter_bound_and_fix():
    """Truth outside the bounds: the fit ends on the bound and says so (with check=False the
    problems are returned); an impossible χ² or correlation limit is reported with its numbers."""
    geo, pats, data = _synthetic()
    b = dict(BOUNDS, magnification=(0.9, 1.0))
    kw = dict(lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, start=dict(TRUE, magnification=0.99999),
              refine_iters=3, bounds=b)
    with pytest.raises(FitError, match=r"^physical-parameter fit failed: magnification = 0\.99999\d* 1 ended on its bound "
                                       r"\[0\.9, 1\]; widen the search \(distance_range\) or check the nominal value"):
        fit_parameters(geo, pats, data, **kw)
    r = fit_parameters(geo, pats, data, check=False, **kw)
    assert re.match(r"magnification = 0\.99999\d* 1 ended on its bound \[0\.9, 1\]", r.problems[0])
    assert r.values["magnification"] == pytest.approx(1.0, abs=1e-4)
    assert all(k in r.values for k in ("intensity_scale", "background_e"))
    r = fit_parameters(geo, pats, data, check=False, max_chi2=-1.0, min_pearson=1.5,
                       **dict(kw, bounds=BOUNDS, start=TRUE, refine_iters=3))
    assert len(r.problems) == 2
    assert r.problems[0].startswith("model/capture correlation r = 1 < 1.5 for at least one frame; the model does not "
                                    "reproduce the captures")
    assert r.problems[1].startswith("reduced χ² = ") and r.problems[1].endswith("exceeds -1: residuals far above "
                                                                                "the noise")
    # the limits themselves pass (strict comparisons): the same fit with its own r and χ² as limits
    ok = fit_parameters(geo, pats, data, check=False, min_pearson=min(r.pearson_r), max_chi2=r.chi2_reduced,
                        **dict(kw, bounds=BOUNDS, start=TRUE, refine_iters=3))
    assert ok.problems == [] and ok.chi2_reduced == r.chi2_reduced
    # several problems are joined with "; "
    with pytest.raises(FitError, match=r"ended on its bound \[0\.9, 1\]; widen the search \(distance_range\) or "
                                       r"check the nominal value; model/capture correlation r = "):
        fit_parameters(geo, pats, data, min_pearson=1.5, **kw)


def test_crosstalk_at_its_lower_bound_is_a_result_not_a_failure():
    true = dict(TRUE, crosstalk_sigma_m=0.0)
    geo, pats, data = _synthetic(true=true)
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=true, read_noise_e=1.0,
                       start=dict(true, crosstalk_sigma_m=1.00001e-6), refine_iters=4,
                       bounds=dict(BOUNDS, crosstalk_sigma_m=(1e-6, 8e-6)), check=False)
    assert r.values["crosstalk_sigma_m"] < 1e-6 + 7e-9 and r.problems == []
    assert not any("crosstalk" in s for s in r.problems)
    # the upper bound still fails
    true = dict(TRUE, crosstalk_sigma_m=3e-6)
    geo, pats, data = _synthetic(true=true)
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=true, read_noise_e=1.0,
                       start=dict(true, crosstalk_sigma_m=1.99999e-6), refine_iters=3,
                       bounds=dict(BOUNDS, crosstalk_sigma_m=(0.0, 2e-6)), check=False)
    assert any(s.startswith("crosstalk_sigma_m = 1.99999e-06 m ended on its bound [0, 2e-06]") for s in r.problems)


def test_uniform_frames_are_not_identifiable():
    """A gray uniform over the whole SLM window shows a plane wave: nothing depends on the
    geometry and a, b are collinear, so JᵀJ is singular — reported. A small uniform square leaves
    the distance barely constrained: its uncertainty (> 5 %) is reported."""
    geo = _geo()
    data = np.random.default_rng(2).poisson(500.0, (2, 12, 12)).astype(float)
    kw = dict(lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, start=TRUE, refine_iters=2, bounds=BOUNDS,
              check=False, min_pearson=-2.0)
    r = fit_parameters(geo, [np.full((16, 16), 100)] * 2, data, **kw)
    assert r.problems == ["the parameters are not identifiable from these frames (condition number 1.36e+15 of the "
                          "normalised JᵀJ); use more or richer patterns, or fix crosstalk (fit_crosstalk=False)"]
    assert r.std["crosstalk_sigma_m"] == 0.0          # no effect at all: held, zero variance (not inf·0)
    r = fit_parameters(geo, [np.full((8, 8), 100)] * 2, data, **kw)
    assert len(r.problems) == 1
    assert re.fullmatch(r"distance uncertainty 0\.001\d* m exceeds 5 % of 0\.001\d* m", r.problems[0])
    assert r.std["distance_m"] > 0.05 * r.values["distance_m"]


def _no_tqdm_monitor(monkeypatch):
    """tqdm's monitor thread can deadlock a forked process at exit (mutation testing forks every
    run): progress bars in these tests run without it."""
    import tqdm.std
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)


def test_multistart_spreads_the_distance_starts_and_keeps_the_best(monkeypatch, capsys):
    """The starts (registration stubbed: tested on its own) spread over ±distance_range, are
    run briefly, sorted by loss, and the best n_refine are refined; default bounds around the
    nominal values."""
    seen = []

    def start_at(model, data_e, z, nominal, bounds, min_quality):
        assert isinstance(model, NearFieldModel) and np.array_equal(data_e, data) and isinstance(z, float)
        seen.append((z, min_quality, dict(bounds)))
        return dict(nominal, distance_m=z), 0.5 + z

    monkeypatch.setattr(fitmod, "_initial_geometry", start_at)
    geo, pats, data = _synthetic()
    nominal = dict(TRUE, magnification=1.1, rotation_rad=0.0, shift_x_m=0.0, shift_y_m=0.0)
    kw = dict(lut_phase_rad=_lut(), nominal=nominal, read_noise_e=1.0, distance_range=0.1, n_starts=3, short_iters=2,
              refine_iters=3, n_refine=1, check=False, min_registration=2.0)
    r = fit_parameters(geo, pats, data, **kw)
    assert capsys.readouterr().err == ""                            # no progress bar unless asked
    assert r.n_starts == 3
    zs = sorted(s[0] for s in r.start_losses)
    assert np.allclose(zs, [0.9e-3, 1.0e-3, 1.1e-3], rtol=1e-12)
    losses = [s[1] for s in r.start_losses]
    assert losses == sorted(losses) and all(np.isfinite(losses))
    assert r.bounds["distance_m"] == pytest.approx((1e-3 * 0.87, 1e-3 * 1.13), rel=1e-12)
    assert r.bounds["magnification"] == pytest.approx((0.85 * 1.1, 1.15 * 1.1), rel=1e-12)
    assert r.bounds["rotation_rad"] == pytest.approx((-math.radians(8), math.radians(8)), rel=1e-12)
    assert r.bounds["shift_x_m"] == (-60e-6, 60e-6) and r.bounds["shift_y_m"] == (-60e-6, 60e-6)
    assert r.bounds["crosstalk_sigma_m"] == (0.0, SLM_P)
    assert [s[1] for s in seen] == [2.0] * 3 and all(s[2] == r.bounds for s in seen)
    assert np.allclose([s[0] for s in seen], [0.9e-3, 1.0e-3, 1.1e-3], rtol=1e-12)    # in this order
    # the kept start is the best after the short runs; its registration quality is reported
    best_z = r.start_losses[0][0]
    assert r.registration_quality == pytest.approx(0.5 + best_z, rel=1e-12)
    _no_tqdm_monitor(monkeypatch)
    fit_parameters(geo, pats, data, **dict(kw, progress=True, short_iters=1, refine_iters=1))
    err = capsys.readouterr().err
    assert "fit: distance starts" in err and "3/3" in err and "start/s" in err
    assert re.search(r"(^|\r)fit: distance starts: ", err)           # the description exactly


def test_fit_parameters_forwards_its_documented_defaults(monkeypatch):
    seen = {}
    monkeypatch.setattr(fitmod, "_fit_parameters", lambda *a, **k: seen.update(args=a, kw=k) or "result")
    assert fit_parameters("geo", "pats", "data", lut_phase_rad="L", nominal="N", read_noise_e=2.0) == "result"
    assert seen["args"] == ("geo", "pats", "data")
    assert seen["kw"] == dict(lut_phase_rad="L", nominal="N", read_noise_e=2.0, distance_range=0.12, n_starts=7,
                              fit_crosstalk=True, bounds=None, start=None, short_iters=12, refine_iters=150,
                              n_refine=2, max_chi2=1000.0, min_pearson=0.8, min_registration=0.3, progress=False,
                              check=True, joint_lut=None, tile_px=8)
    kw = dict(distance_range=0.2, n_starts=3, fit_crosstalk=False, bounds={"a": 1}, start={"b": 2}, short_iters=4,
              refine_iters=9, n_refine=1, max_chi2=5.0, min_pearson=0.1, min_registration=0.2, progress=True,
              check=False, joint_lut="J", tile_px=4)
    fit_parameters("geo", "pats", "data", lut_phase_rad="L", nominal="N", read_noise_e=2.0, **kw)
    assert seen["kw"] == dict(lut_phase_rad="L", nominal="N", read_noise_e=2.0, **kw)


def test_initial_geometry_registers_at_the_start_distance():
    """Data from the model at a known geometry (magnification 1.144, rotation 0.03 rad, shift
    (6, −4) µm, distance 0.30 mm) registered against the simulation at the start distance with the
    nominal geometry (M0 = 1.1): the start carries M = M0/s, the rotation and the shift t·p/M0
    (tolerances: the registration's accuracy, ≈ 0.05 px and 0.3 %); the simulation is made at the
    start distance z, not the nominal one (at 0.35 mm the match is visibly worse); values outside
    the bounds are not taken."""
    from calibration.fit import _initial_geometry
    geo = _geo(cam=(32, 32), n=64)
    pats = [np.random.default_rng(4 + i).integers(0, 256, (24, 24)) for i in range(3)]
    m = NearFieldModel(geo, pats, _lut())
    nominal = dict(TRUE, magnification=1.1, rotation_rad=0.0, shift_x_m=0.0, shift_y_m=0.0, distance_m=0.35e-3)
    truth = dict(nominal, magnification=1.144, rotation_rad=0.03, shift_x_m=6e-6, shift_y_m=-4e-6, distance_m=0.3e-3)
    with torch.no_grad():
        data = m.intensity({k: _t(v) for k, v in truth.items()}).numpy() * 1000
    b = dict(BOUNDS, magnification=(0.9, 1.4))
    vals, q = _initial_geometry(m, data, 0.3e-3, nominal, b, 0.3)
    assert q > 0.91 and vals["distance_m"] == 0.3e-3
    assert vals["magnification"] == pytest.approx(1.144, rel=0.004)
    assert vals["rotation_rad"] == pytest.approx(0.03, abs=0.003)
    assert vals["shift_x_m"] == pytest.approx(6e-6, abs=0.3e-6) and vals["shift_y_m"] == pytest.approx(-4e-6, abs=0.3e-6)
    assert vals["crosstalk_sigma_m"] == nominal["crosstalk_sigma_m"]
    _, q_nom = _initial_geometry(m, data, 0.35e-3, nominal, b, 0.3)
    assert q_nom < q - 0.02
    tight = dict(b, shift_x_m=(-1e-6, 1e-6), magnification=(0.9, 1.1))
    vals, _ = _initial_geometry(m, data, 0.3e-3, nominal, tight, 0.3)
    assert vals["shift_x_m"] == 0.0 and vals["magnification"] == 1.1
    assert vals["shift_y_m"] == pytest.approx(-4e-6, abs=0.3e-6)
    vals, q = _initial_geometry(m, np.random.default_rng(0).random((3, 32, 32)), 0.35e-3, nominal, b, 0.99)
    assert math.isnan(q) and vals == dict(nominal, distance_m=0.35e-3)


def test_initial_geometry_uses_the_better_of_the_first_two_frames_only():
    """Frame 0 unregistrable (noise), frame 1 the model at geometry A with noise, frame 2 an exact
    copy at geometry B: the start is A (a failed frame is skipped, the third frame is not used);
    a single-pattern capture registers its one frame."""
    from calibration.fit import _initial_geometry
    geo = _geo(cam=(32, 32), n=64)
    pats = [np.random.default_rng(4 + i).integers(0, 256, (24, 24)) for i in range(3)]
    m = NearFieldModel(geo, pats, _lut())
    nominal = dict(TRUE, magnification=1.0, rotation_rad=0.0, shift_x_m=0.0, shift_y_m=0.0, distance_m=0.3e-3)
    ga = dict(nominal, shift_x_m=6e-6, shift_y_m=-4e-6)
    gb = dict(nominal, shift_x_m=-9e-6, shift_y_m=7e-6)
    rng = np.random.default_rng(5)
    with torch.no_grad():
        a = m.intensity({k: _t(v) for k, v in ga.items()}).numpy() * 1000
        bb = m.intensity({k: _t(v) for k, v in gb.items()}).numpy() * 1000
    data = np.stack([rng.random((32, 32)), a[1] + 30 * rng.standard_normal((32, 32)), bb[2]])
    b = dict(BOUNDS, magnification=(0.9, 1.4))
    vals, q = _initial_geometry(m, data, 0.3e-3, nominal, b, 0.5)
    assert 0.5 < q < 0.99
    assert vals["shift_x_m"] == pytest.approx(6e-6, abs=0.5e-6) and vals["shift_y_m"] == pytest.approx(-4e-6, abs=0.5e-6)
    m1 = NearFieldModel(geo, pats[1:2], _lut())
    vals, q = _initial_geometry(m1, data[1:2], 0.3e-3, nominal, b, 0.5)
    assert vals["shift_x_m"] == pytest.approx(6e-6, abs=0.5e-6)


# ----------------------------------------------------------------- evaluate / jackknife / LUT
def test_evaluate_is_zero_chi2_and_unit_correlation_on_model_frames():
    geo, pats, data = _synthetic()
    out = evaluate(geo, pats, data, lut_phase_rad=_lut(), values=TRUE, read_noise_e=2.0)
    assert out["chi2_reduced"] < 1e-18 and out["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    # noise of known size: the weighted residuals have unit variance per pixel (Poisson)
    geo, pats, noisy = _synthetic(seed=3)
    out = evaluate(geo, pats, noisy, lut_phase_rad=_lut(), values=TRUE, read_noise_e=0.0)
    assert out["chi2_reduced"] == pytest.approx(1.0, abs=0.2)
    wrong = evaluate(geo, pats, noisy, lut_phase_rad=_lut(), values=dict(TRUE, shift_x_m=-8e-6), read_noise_e=0.0)
    assert wrong["chi2_reduced"] > 5 * out["chi2_reduced"] and wrong["pearson_r"] < out["pearson_r"]
    # χ² exactly: the profiled weighted residuals over N − 2 (a and b re-fitted), rel 1e-9
    m = NearFieldModel(geo, pats, _lut())
    with torch.no_grad():
        I = m.intensity({k: _t(v) for k, v in TRUE.items()})
    y = torch.as_tensor(noisy)
    assert out["chi2_reduced"] == pytest.approx(_profiled_chi2(I, y, torch.isfinite(y), 0.0, 2), rel=1e-9)
    # three usable pixels leave one degree of freedom
    few = np.full_like(noisy, np.nan)
    few[0, 2, 3], few[1, 5, 5], few[2, 7, 1] = noisy[0, 2, 3], noisy[1, 5, 5], noisy[2, 7, 1] + 50
    out3 = evaluate(geo, pats, few, lut_phase_rad=_lut(), values=TRUE, read_noise_e=0.0)
    y3 = torch.as_tensor(few)
    m3 = torch.isfinite(y3)
    assert out3["chi2_reduced"] == pytest.approx(_profiled_chi2(I, torch.where(m3, y3, 0.0), m3, 0.0, 2), rel=1e-9)
    # a missing value counts as 0 (here: no rotation) — the same as giving 0
    part = {k: v for k, v in TRUE.items() if k != "rotation_rad"}
    a = evaluate(geo, pats, noisy, lut_phase_rad=_lut(), values=part, read_noise_e=0.0)
    b = evaluate(geo, pats, noisy, lut_phase_rad=_lut(), values=dict(TRUE, rotation_rad=0.0), read_noise_e=0.0)
    assert a == b


def _fake_result(values, fixed=()):
    return FitResult(values=dict(values), std={}, nominal=dict(values), bounds={"b": (0, 1)}, chi2_reduced=1.0,
                     pearson_r=[1.0], residuals=np.zeros((1, 2, 2)), model_e=np.zeros((1, 2, 2)),
                     data_e=np.zeros((1, 2, 2)), n_starts=1, fixed=fixed)


def test_jackknife_is_the_leave_one_frame_out_spread(monkeypatch):
    """sqrt((n−1)/n·Σ(θ_i − θ̄)²) of refits that each leave one frame out, started from the fit."""
    calls = []

    def fake(geometry, pats, data, **kw):
        assert geometry == "geo"
        calls.append(([int(p[0, 0]) for p in pats], np.asarray(data)[:, 0, 0].tolist(), kw))
        left = ({0, 1, 2, 3} - {int(p[0, 0]) for p in pats}).pop()
        return _fake_result({"distance_m": [1.0, 2.0, 4.0, 7.0][left], "magnification": 1.0})

    monkeypatch.setattr(fitmod, "fit_parameters", fake)
    pats = [np.full((2, 2), i) for i in range(4)]
    data = np.arange(4.0)[:, None, None] * np.ones((4, 2, 2)) + 10
    fit = _fake_result({"distance_m": 3.0}, fixed=("crosstalk_sigma_m",))
    out = jackknife("geo", pats, data, fit, lut_phase_rad="L", read_noise_e=2.5, refine_iters=7)
    v = np.array([1.0, 2.0, 4.0, 7.0])
    assert out["distance_m"] == pytest.approx(math.sqrt(3 / 4 * np.sum((v - v.mean()) ** 2)), rel=1e-12)
    assert out["magnification"] == 0.0
    assert [c[0] for c in calls] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert [c[1] for c in calls][1] == [10.0, 12.0, 13.0]
    kw = calls[0][2]
    assert kw["start"] == fit.values and kw["bounds"] == fit.bounds and kw["nominal"] == fit.nominal
    assert kw["refine_iters"] == 7 and kw["read_noise_e"] == 2.5 and kw["lut_phase_rad"] == "L"
    assert kw["fit_crosstalk"] is False
    jackknife("geo", pats, data, _fake_result({"distance_m": 3.0}), lut_phase_rad="L", read_noise_e=2.5)
    assert calls[-1][2]["fit_crosstalk"] is True and calls[-1][2]["refine_iters"] == 20
    with pytest.raises(FitError, match=r"^a jackknife over frames needs >= 3 fit frames, got 2$"):
        jackknife("geo", pats[:2], data[:2], fit, lut_phase_rad="L", read_noise_e=1.0)
    out = jackknife("geo", pats[:3], data[:3], fit, lut_phase_rad="L", read_noise_e=1.0)   # 3 is enough
    v3 = np.array([1.0, 2.0, 4.0])
    assert out["distance_m"] == pytest.approx(math.sqrt(2 / 3 * np.sum((v3 - v3.mean()) ** 2)), rel=1e-12)


def test_jackknife_progress_bar_only_when_asked(monkeypatch, capsys):
    monkeypatch.setattr(fitmod, "fit_parameters", lambda *a, **k: _fake_result({"distance_m": float(len(a[1]))}))
    pats = [np.zeros((2, 2))] * 3
    fit = _fake_result({"distance_m": 3.0})
    jackknife("geo", pats, np.zeros((3, 2, 2)), fit, lut_phase_rad="L", read_noise_e=1.0)
    assert capsys.readouterr().err == ""
    _no_tqdm_monitor(monkeypatch)
    jackknife("geo", pats, np.zeros((3, 2, 2)), fit, lut_phase_rad="L", read_noise_e=1.0, progress=True)
    err = capsys.readouterr().err
    assert "fit: jackknife" in err and "3/3" in err and "refit" in err
    assert re.search(r"(^|\r)fit: jackknife: ", err) and re.search(r"[\d?]refit/s", err)   # description and unit exactly


def test_model_error_covers_lut_levels_and_guards_the_scale_term():
    keys = list(PARAMS) + ["intensity_scale", "background_e"]
    vals = {k: 1.0 for k in keys}
    vals.update(intensity_scale=100.0, background_e=10.0)
    fine = _fake_result(vals)
    fine.std = {k: 0.2 for k in keys}                       # no std_statistical: std is the statistical part
    fine.model_e = np.full((1, 2, 2), 10.0 - 50.0)          # Ī = (−40 − 10)/100 < 0: no scale term
    fine.lut = {"phase_rad": np.array([0.0, 1.0, 2.0]), "phase_std_rad": np.array([0.3, 0.4, 0.0])}
    coarse = _fake_result(dict(vals, background_e=13.0, distance_m=1.5))
    coarse.lut = {"phase_rad": np.array([0.0, 1.4, 2.0])}
    out = with_model_error(fine, coarse)
    assert out.std_model["intensity_scale"] == 0.0 and out.std_model["background_e"] == 3.0
    assert out.std["distance_m"] == pytest.approx(math.hypot(0.2, 0.5), rel=1e-14)
    assert out.std_statistical == fine.std
    assert np.allclose(out.lut["phase_std_model_rad"], [0.0, 0.4, 0.0], atol=1e-15)
    assert np.array_equal(out.lut["phase_std_statistical_rad"], [0.3, 0.4, 0.0])
    assert np.allclose(out.lut["phase_std_rad"], [0.3, math.hypot(0.4, 0.4), 0.0], rtol=1e-14)
    assert fine.lut == {"phase_rad": fine.lut["phase_rad"], "phase_std_rad": fine.lut["phase_std_rad"]}
    # a second pass keeps the statistical LUT part, not the already-combined total
    again = with_model_error(out, coarse)
    assert np.allclose(again.lut["phase_std_rad"], out.lut["phase_std_rad"], rtol=1e-14)
    # a zero scale: no scale term (no division by zero)
    z = _fake_result(dict(vals, intensity_scale=0.0))
    z.std = {k: 0.2 for k in keys}
    assert with_model_error(z, coarse).std_model["intensity_scale"] == 100.0
    # no LUT on either side: the LUT entry stays as it was
    assert with_model_error(_fake_result(vals), coarse).lut == {}
    # a key the coarse fit lacks, and a fixed one, get no model error
    partial = _fake_result({k: v for k, v in vals.items() if k != "rotation_rad"})
    f2 = _fake_result(vals, fixed=("distance_m",))
    f2.std = {k: 0.2 for k in keys}
    o2 = with_model_error(f2, partial)
    assert o2.std_model["rotation_rad"] == 0.0 and o2.std_model["distance_m"] == 0.0


def test_refined_lut_rescales_to_the_grating_law_and_keeps_monotone():
    base = _lut_result(grating=dict(GRATING, sigma_m=None))
    fit = _fake_result({"distance_m": 1.2e-3, "crosstalk_sigma_m": 0.7e-6})
    fit.std = {"crosstalk_sigma_m": 0.1e-6}
    with pytest.raises(FitError, match=r"^this fit did not free the LUT \(call fit_parameters with joint_lut=…\)$"):
        refined_lut(base, fit)
    phase = np.linspace(0, 6, 256)
    phase[100:110] = 3.0                                      # a dip: made non-decreasing
    fit.lut = {"phase_rad": phase, "phase_std_rad": np.full(256, 0.05), "scale_c": 0.5, "theta": np.array([1.0, 2.0]),
               "grating_chi2_reduced": 1.7}
    out = refined_lut(base, fit)
    g_pi = float(grating_harmonic_model(_t([math.pi]), sigma_m=_t(0.0), z_m=1.2e-3, period_m=64e-6,
                                        wavelength_m=LAM, period_px=8)[0])
    assert out.scale_c == pytest.approx(0.5 * g_pi, rel=1e-12)
    assert out.grating["z_m"] == 1.2e-3 and out.grating["sigma_m"] == 0.7e-6 and base.grating["z_m"] == 1e-3
    exp = np.maximum.accumulate(phase) + np.arange(256) * 1e-9
    assert np.array_equal(out.phase_rad, exp) and np.all(np.diff(out.phase_rad) > 0)
    assert np.array_equal(out.phase_std_rad, np.full(256, 0.05)) and out.chi2_reduced == 1.7
    assert np.array_equal(out.theta, [1.0, 2.0])
    assert out.extra == {"a": 1.0, "joint": 1.0, "crosstalk_sigma_m": 0.7e-6, "crosstalk_sigma_std_m": 0.1e-6}
    # the plain sin² law: the scale is the fit's own; a missing std is NaN
    fit.std = {}
    out = refined_lut(_lut_result(), fit)
    assert out.scale_c == 0.5 and out.grating is None and math.isnan(out.extra["crosstalk_sigma_std_m"])


def test_units_and_params_are_consistent():
    assert set(PARAMS) <= set(UNITS) and UNITS["distance_m"] == "m" and UNITS["background_e"] == "e-"
    assert fitmod.OPTICS_PATHS["distance_m"] == "operator.z_m"


def test_geometry_window_skips_fast_sizes_that_are_not_a_multiple_of_two_upsample():
    # camera 209 px: 1.3·209·5.5 µm / 4 µm = 373.6 → 374 → fast sizes 375 (odd), 378 (≡ 2 mod 4),
    # then 384: the first fast size that is a multiple of 2·upsample = 4
    inst = {"slm_pitch_m": SLM_P, "camera_pitch_m": CAM_P, "distance_m": 1e-4, "wavelength_m": LAM}
    g = geometry_for(inst, (209, 10), [np.zeros((4, 4))], upsample=2, pixel_subsamples=0)
    assert g.sim_n == _smallest_window(374, 4) == 384
    # camera 8 px: 57.2 µm / 4 µm → 15 → 15 (not a multiple of 4), then 16
    g = geometry_for(inst, (8, 8), [np.zeros((2, 2))], upsample=2, pixel_subsamples=0)
    assert g.sim_n == _smallest_window(15, 4) == 16


def test_model_error_scale_term_uses_the_mean_unit_scale_intensity():
    """σ_model(a) = max(|Δa|, σ_model(b)/Ī) with Ī = (mean model − b)/a; Ī = 0 exactly adds nothing
    (no division by zero); a parameter missing from the statistical errors counts as 0."""
    keys = list(PARAMS) + ["intensity_scale", "background_e"]
    vals = {k: 1.0 for k in keys}
    vals.update(intensity_scale=100.0, background_e=10.0)
    coarse = _fake_result(dict(vals, background_e=13.0, intensity_scale=100.5))
    fine = _fake_result(vals)
    fine.std = {k: 0.2 for k in keys if k != "rotation_rad"}
    fine.model_e = np.full((1, 2, 2), 10.0 + 100.0 * 0.25)          # Ī = 0.25
    fine.model_e[0, 0, 0] = np.nan                                  # NaN-ignoring mean
    out = with_model_error(fine, coarse)
    assert out.std_model["intensity_scale"] == pytest.approx(3.0 / 0.25, rel=1e-12)
    assert out.std["intensity_scale"] == pytest.approx(math.hypot(0.2, 12.0), rel=1e-12)
    assert out.std["rotation_rad"] == 0.0 and out.std_model["rotation_rad"] == 0.0
    fine.model_e = np.full((1, 2, 2), 10.0 + 100.0 * 2.0)           # Ī = 2: |Δa| = 0.5 < 3/2
    assert with_model_error(fine, coarse).std_model["intensity_scale"] == pytest.approx(1.5, rel=1e-12)
    fine.model_e = np.full((1, 2, 2), 10.0 + 100.0 * 40.0)          # Ī = 40: |Δa| = 0.5 > 3/40
    assert with_model_error(fine, coarse).std_model["intensity_scale"] == pytest.approx(0.5, rel=1e-12)
    fine.model_e = np.full((1, 2, 2), 10.0)                         # Ī = 0
    assert with_model_error(fine, coarse).std_model["intensity_scale"] == pytest.approx(0.5, rel=1e-12)


def test_no_grad_evaluations_follow_new_values_not_a_cached_kernel():
    """Without autograd, evaluations at a new distance (fresh tensors, or the same tensor written
    in place) give the new pattern — the one a fresh model gives — not the optics layer's cached
    kernel of the previous call (the fast counterpart of test_fit.py's cache test)."""
    geo = _geo()
    pats = _pats()
    vals = dict(TRUE, crosstalk_sigma_m=1e-6)

    def at(model, z):
        return model.intensity({k: _t(z if k == "distance_m" else v) for k, v in vals.items()})

    m = NearFieldModel(geo, pats, _lut())
    with torch.no_grad():
        a1, a2 = at(m, 1.0e-3), at(m, 1.3e-3)
        fresh = at(NearFieldModel(geo, pats, _lut()), 1.3e-3)
        p = {k: _t(v) for k, v in vals.items()}
        b1 = m.intensity(p)
        p["distance_m"].data.fill_(1.3e-3)
        b2 = m.intensity(p)
    assert float((a1 - a2).abs().max()) > 0.05 * float(a2.max())
    assert torch.equal(a2, fresh) and torch.equal(b1, a1) and torch.equal(b2, fresh)


def test_problem_weights_clamp_a_negative_model_at_zero_counts():
    """Below 1 e⁻ the weights 1/(max(μ, 0) + rn² + 1) differ from a clamp at any other level:
    the profiled (a, b) are numpy's weighted polyfit with the weights of the unweighted μ₀, and with
    a, b given the residuals use the clamped model (rel 1e-10; rn = 0 so the clamp dominates)."""
    m = NearFieldModel(_geo(), _pats(), _lut())
    p = {k: _t(v) for k, v in TRUE.items()}
    with torch.no_grad():
        I = m.intensity(p)
    wig = np.where(np.arange(144).reshape(12, 12) % 3, 0.3, -0.4)[None]
    data = (0.8 * I - 0.3).numpy() + wig                   # μ spans ≈ −0.3 … 1.5 e⁻; not exactly linear
    prob = _Problem(m, data, 0.0, BOUNDS, {})
    _, _, a, b = prob.residuals(p)
    Ii, yi = I.numpy().ravel(), data.ravel()
    a0, b0 = np.polyfit(Ii, yi, 1)
    w0 = 1.0 / (np.clip(a0 * Ii + b0, 0, None) + 1.0)
    assert (a0 * Ii + b0).min() < 0 and ((a0 * Ii + b0) < 1).mean() > 0.2
    ea, eb = np.polyfit(Ii, yi, 1, w=np.sqrt(w0))
    assert float(a) == pytest.approx(ea, rel=1e-10) and float(b) == pytest.approx(eb, rel=1e-10)
    r, mu, _, _ = prob.residuals(p, a=_t(0.8), b=_t(-0.3))
    exp = (data - mu.numpy()) / np.sqrt(np.clip(mu.numpy(), 0, None) + 1.0)
    assert np.allclose(r.numpy(), exp, rtol=1e-10, atol=0)


class _FakeReg:
    def __init__(self, rot):
        self.quality, self.rot = 0.9, rot

    def centred(self, shape):
        return 1.0, self.rot, (0.0, 0.0)


def test_initial_geometry_takes_only_candidates_strictly_inside_the_bounds(monkeypatch):
    """Bounds are open (the sigmoid map cannot reach them; to_q clamps 1e-6 inside): a
    registered rotation exactly on a bound is not taken, one just inside is."""
    from calibration.fit import _initial_geometry
    m = NearFieldModel(_geo(), _pats(), _lut())
    nominal = dict(TRUE, magnification=1.0, rotation_rad=0.0, shift_x_m=0.0, shift_y_m=0.0)
    data = np.ones((2, 12, 12))
    for rot, exp in ((0.1, 0.0), (-0.1, 0.0), (0.0999, 0.0999), (-0.0999, -0.0999)):
        monkeypatch.setattr(fitmod, "register", lambda *a, rot=rot, **k: _FakeReg(rot))
        vals, q = _initial_geometry(m, data, 1e-3, nominal, BOUNDS, 0.3)
        assert vals["rotation_rad"] == exp and q == 0.9 and vals["magnification"] == 1.0


def test_joint_lut_with_the_grating_law_uses_the_fit_sigma_and_distance():
    """Joint LUT with the grating law and one degree of freedom (7 grating points, 5 shape
    parameters + log C): the grating χ² is Σ((h − C·M(φ(g); σ, z))/σ_h)² / 1 with the fit's own
    crosstalk σ and distance (rel 1e-10), and every σ is finite."""
    lutres = _lut_result(grating=GRATING, theta=(0.4, -0.3, 0.2, 0.1, 0.05))
    table = lutres.phase_rad
    geo = _geo()
    pats = _pats(shapes=((8, 8), (8, 8)))
    m = NearFieldModel(geo, pats, table)
    with torch.no_grad():
        data = (2000 * m.intensity({k: _t(v) for k, v in TRUE.items()}) + 30).numpy()
    fit = fit_parameters(geo, pats, data, lut_phase_rad=table, nominal=TRUE, read_noise_e=1.0, start=TRUE,
                         refine_iters=2, bounds=BOUNDS, joint_lut=lutres, check=False)
    L = fit.lut
    phi_g = torch.as_tensor(L["phase_rad"][lutres.measured_gray.astype(int)])
    mod = grating_harmonic_model(phi_g, sigma_m=_t(fit.values["crosstalk_sigma_m"]), z_m=fit.values["distance_m"],
                                 period_m=64e-6, wavelength_m=LAM, period_px=8).numpy()
    res = (lutres.measured_h - L["scale_c"] * mod) / lutres.measured_h_std
    assert L["grating_chi2_reduced"] == pytest.approx(float((res ** 2).sum()) / (7 - 6), rel=1e-10)
    assert all(math.isfinite(v) for v in fit.std.values())


def test_refinement_keeps_the_lowest_refined_loss_and_its_registration(monkeypatch):
    """The n_refine best short runs are refined and the lowest *refined* loss wins (here the
    second candidate), with its own registration quality (runs and registration stubbed)."""
    qual = {9: 0.07, 10: 0.05, 11: 0.06}
    short = {9: 3.0, 10: 1.0, 11: 2.0}
    refined = {10: 0.9, 11: 0.1}

    def start_at(model, data_e, z, nominal, bounds, min_quality):
        return dict(nominal, distance_m=z), qual[round(z * 1e4)]

    def run(prob, q0, iters):
        z = round(float(prob.to_params(q0)["distance_m"]) * 1e4)
        return q0.clone(), (short if iters == 2 else refined)[z]

    monkeypatch.setattr(fitmod, "_initial_geometry", start_at)
    monkeypatch.setattr(fitmod, "_run", run)
    geo, pats, data = _synthetic()
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, distance_range=0.1,
                       n_starts=3, short_iters=2, refine_iters=5, n_refine=2, check=False)
    assert r.values["distance_m"] == pytest.approx(1.1e-3, rel=1e-9) and r.registration_quality == 0.06
    assert [s[1] for s in r.start_losses] == [1.0, 2.0, 3.0]


def test_reduced_chi2_with_one_degree_of_freedom():
    """8 usable pixels, 5 free geometry parameters + a, b: χ² is Σr² / (8 − 7) over the returned
    residual map (rel 1e-12)."""
    geo = _geo(cam=(2, 4))
    pats = _pats(shapes=((8, 8),))
    m = NearFieldModel(geo, pats, _lut())
    with torch.no_grad():
        data = (2000 * m.intensity({k: _t(v) for k, v in TRUE.items()}) + 30).numpy()
    data = data + np.array([[[5.0, -3.0, 2.0, -4.0], [1.0, 6.0, -2.0, -5.0]]])
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, start=TRUE,
                       refine_iters=2, bounds=BOUNDS, fit_crosstalk=False, check=False)
    assert r.chi2_reduced == pytest.approx(float(np.nansum(r.residuals ** 2)) / 1, rel=1e-12)
    assert r.chi2_reduced > 0


def test_bound_margin_is_a_fraction_of_the_bound_width():
    """A value 1e-3 below its upper bound, with a bound width of 0.151, is 6.6× the 0.1 %
    margin (1.51e-4) away: not on its bound (the margin scales with hi − lo, not hi + lo)."""
    geo, pats, data = _synthetic()
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, start=TRUE,
                       refine_iters=2, bounds=dict(BOUNDS, magnification=(0.9, 1.051)))
    assert r.problems == [] and r.values["magnification"] == pytest.approx(1.05, abs=1e-6)


def test_run_keeps_iterating_on_a_flat_but_sloped_loss():
    """The fit's loss is a per-pixel mean, so its gradients are small: _run's gradient tolerance
    is 1e-9, not L-BFGS's default 1e-7. The flat quartic 0.01·(q − 1)⁴ from q = 0 is followed to
    |q − 1| < 0.008 (gradient < 2e-8); stopping at a gradient of 1e-7 leaves |q − 1| ≈ 0.013."""
    class Flat:
        def loss(self, q):
            return 0.01 * ((q - 1.0) ** 4).sum()

    q, L = _run(Flat(), torch.zeros(1, dtype=F64), 100)
    assert abs(float(q[0]) - 1.0) < 0.008 and L == pytest.approx(0.01 * (float(q[0]) - 1.0) ** 4, rel=1e-12)


def test_intensity_maps_about_sample_n_half_on_an_odd_window(monkeypatch):
    """An odd window (n = 33, upsample 1): the optical axis is sample n//2 = 16, so the camera map
    uses n//2, not n/2 (rel 1e-9 against the numpy bilinear sampling of a known field)."""
    k, cam = 2, (6, 7)
    geo = Geometry(wavelength_m=LAM, slm_pitch_m=SLM_P, camera_pitch_m=CAM_P, camera_shape=cam, sim_n=33,
                   upsample=1, pixel_subsamples=k)
    m = NearFieldModel(geo, [np.zeros((4, 4), int)], _lut())
    field, _ = _cos_field(n=33, dx=SLM_P)
    monkeypatch.setattr(m, "field_intensity", lambda p: torch.as_tensor(field[None]))
    out = m.intensity({kk: _t(v) for kk, v in GEO_P.items()}).numpy()
    uy = (np.arange(cam[0]) - cam[0] // 2) * CAM_P
    ux = (np.arange(cam[1]) - cam[1] // 2) * CAM_P
    off = ((np.arange(k) + 0.5) / k - 0.5) * CAM_P
    acc = 0
    for oy in off:
        for ox in off:
            X, Y = _map(uy + oy, ux + ox, GEO_P, m.centre_m)
            acc = acc + _bilinear(field, X, Y, dx=SLM_P)
    assert np.allclose(out[0], acc / k ** 2, rtol=1e-9, atol=0)


def test_optics_parameters_are_exactly_the_substituted_paths():
    """The optics system's trainable tensors are the fit's (distance, crosstalk, LUT) at
    OPTICS_PATHS: what functional_call substitutes is what an optimiser over the system sees."""
    m = NearFieldModel(_geo(), _pats(), _lut())
    assert {k for k, _ in m.system.named_parameters()} == set(fitmod.OPTICS_PATHS.values())


def test_identifiability_limit_is_a_condition_number_above_1e12(monkeypatch):
    """The condition number is that of the column-normalised JᵀJ (unit diagonal); exactly 1e12
    passes, the next float above fails (cond stubbed to pin the limit)."""
    geo, pats, data = _synthetic()
    seen = []
    for c, fails in ((1e12, False), (np.nextafter(1e12, np.inf), True)):
        def cond(a, c=c):
            seen.append(torch.diag(a))
            return torch.tensor(c, dtype=F64)
        monkeypatch.setattr(torch.linalg, "cond", cond)
        r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=1.0, start=TRUE,
                           refine_iters=1, bounds=BOUNDS, check=False)
        assert any(s.startswith("the parameters are not identifiable") for s in r.problems) == fails
    assert all(torch.allclose(d, torch.ones_like(d), rtol=1e-12) for d in seen)


def test_distance_uncertainty_above_five_percent_is_reported():
    """Noise-free data at 0.5 e⁻ per unit intensity under 3 e⁻ read noise: the distance is known
    only to ≈ 20 % (σ ∝ 1/scale; far below the 105 % of a uniform frame): above the 5 % limit,
    reported with its numbers."""
    geo, pats, data = _synthetic(scale=0.5, bg=0.1)
    r = fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=3.0, start=TRUE,
                       refine_iters=2, bounds=BOUNDS, check=False)
    ratio = r.std["distance_m"] / r.values["distance_m"]
    assert 0.1 < ratio < 0.5
    assert r.problems == [f"distance uncertainty {r.std['distance_m']:.3g} m exceeds 5 % of "
                          f"{r.values['distance_m']:.6g} m"]


def test_run_returns_a_start_with_a_non_finite_loss_unchanged():
    """A start where the loss is NaN or inf: no L-BFGS step (it would go to NaN parameters), the
    start itself and that loss come back, and the start is not modified."""
    for bad in (float("nan"), float("inf")):
        prob = _Quadratic()
        prob.loss = lambda q, bad=bad: (q * 0).sum() + bad
        q0 = torch.tensor([5.0, 5.0], dtype=F64)
        q, L = _run(prob, q0, 50)
        assert torch.equal(q, q0) and not q.requires_grad and q is not q0
        assert (math.isnan(L) if math.isnan(bad) else L == bad)


def test_non_finite_loss_at_every_start_is_the_fit_error():
    """Data whose loss is NaN everywhere (a NaN read noise makes every weight NaN): the documented
    FitError naming the likely cause, not the optics layer's refusal of a NaN distance that L-BFGS's
    first step used to produce."""
    geo, pats, data = _synthetic(scale=4.0, bg=0.1)
    with pytest.raises(FitError, match=r"^the loss is not finite at any start; check the data \(NaN frames\?\) and the nominal geometry$"):
        fit_parameters(geo, pats, data, lut_phase_rad=_lut(), nominal=TRUE, read_noise_e=float("nan"), start=TRUE,
                       refine_iters=3, bounds=BOUNDS)
