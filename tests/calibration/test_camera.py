"""EMVA 1288 photon transfer against the known synthetic camera, and bad input."""
import numpy as np
import pytest

from calibration.camera import characterize_camera
from calibration.capture import Capture, read_capture
from calibration.errors import CameraError


@pytest.fixture(scope="module")
def camera(sample_path):
    return characterize_camera(read_capture(sample_path)), read_capture(sample_path)


def test_gain_read_noise_dark_current_recovered(camera, truth):
    cm, _ = camera
    # K: the tolerance, 3 %; the stated 1σ must be honest (truth within 3σ)
    assert cm.gain_dn_per_e == pytest.approx(truth["gain_dn_per_e"], rel=0.03)
    assert abs(cm.gain_dn_per_e - truth["gain_dn_per_e"]) < 3 * cm.std["gain_dn_per_e"] + 1e-3
    assert cm.read_noise_e == pytest.approx(truth["read_noise_e"], rel=0.10)
    assert cm.dark_current_e_per_s == pytest.approx(truth["dark_current_e_per_s"], rel=0.15)
    assert cm.offset_dn == pytest.approx(truth["offset_dn"], abs=1.0)
    # PRNU 1 % (high-pass estimate over the non-defect pixels; 0.01215 while the hot and dead
    # pixels entered the 7 × 7 local mean): 8 % ≈ 4σ of the estimate (shot-noise share, 4096 pixels)
    assert cm.prnu == pytest.approx(truth["prnu"], rel=0.08)
    # saturation: the variance maximum lies below the full well
    assert 0.8 * truth["full_well_e"] < cm.saturation_capacity_e <= 1.02 * truth["full_well_e"]
    assert 4 <= cm.bad_pixels.sum() <= 20  # 4 dead + 4 hot pixels in the truth


def test_correction_and_sensor(camera, truth):
    cm, cap = camera
    e = cm.correct(cap.frames, cap.exposure_s)
    assert np.isnan(e[:, cm.bad_pixels]).all()
    dark = cap.indices(2)
    # dark frames correct to ~0 e- on average
    assert abs(np.nanmean(e[dark])) < 3.0
    s = cm.sensor(exposure_s=0.01)
    assert s.gain_e_per_dn == pytest.approx(1 / cm.gain_dn_per_e)
    assert s.read_noise_e == pytest.approx(cm.read_noise_e)
    assert s.bit_depth == 12


def test_too_few_flats_is_refused(camera):
    _, cap = camera
    import copy
    c2 = copy.copy(cap)
    c2.image_key = cap.image_key.copy()
    c2.image_key[cap.indices(1)[4:]] = 0  # only two flat pairs left
    with pytest.raises(CameraError, match="photon-transfer curve needs >= 4"):
        characterize_camera(c2)


def _synthetic_flats(seed, *, shape=(64, 64), prnu=0.01, n_hot=8, n_dead=8):
    """An in-memory capture of the EMVA linear camera (K = 0.25 DN/e⁻, 6 e⁻ read noise, 13000 e⁻
    full well, 12 bit) under uniform light: dark pairs at 2 exposures, flat pairs at 7 levels,
    hot pixels at full scale and dead pixels at the offset. Returns (capture, the realised PRNU
    — std of the gain map over the non-defect pixels —, the defect mask)."""
    rng = np.random.default_rng(seed)
    K, off, rn, dc, fw, full = 0.25, 100.0, 6.0, 300.0, 13000.0, 4095
    gain_map = 1 + prnu * rng.standard_normal(shape)
    idx = rng.choice(shape[0] * shape[1], n_hot + n_dead, replace=False)
    hot, dead = np.unravel_index(idx[:n_hot], shape), np.unravel_index(idx[n_hot:], shape)

    def frame(e_mean, t):
        e = rng.poisson(np.clip(e_mean * gain_map + dc * t, 0, None)).astype(float)
        e = np.minimum(e + rn * rng.standard_normal(shape), fw)
        dn = np.round(e * K + off)
        dn[dead] = np.round(off + rng.standard_normal(n_dead))
        dn[hot] = full
        return np.clip(dn, 0, full)

    frames, keys, exps = [], [], []
    for key, levels in ((2, [(0.0, 0.002), (0.0, 0.02)]),
                        (1, [(fw * f, 0.01 * f) for f in (0.1, 0.25, 0.4, 0.55, 0.7, 0.9, 1.2)])):
        for e_mean, t in levels:
            for _ in range(2):
                frames.append(frame(e_mean, t))
                keys.append(key)
                exps.append(t)
    defects = np.zeros(shape, bool)
    defects[hot] = defects[dead] = True
    cap = Capture(path="synthetic", frames=np.stack(frames), bit_depth=12, image_key=np.array(keys),
                  exposure_s=np.array(exps), pattern_id=[""] * len(keys), patterns={}, instrument={}, provenance={})
    return cap, float(gain_map[~defects].std(ddof=1)), defects


def test_prnu_local_mean_excludes_the_flagged_defect_pixels():
    """8 hot + 8 dead pixels on 64 × 64: the high-pass's 7 × 7 local mean must not count them
    (each hot pixel at full scale drags 48 neighbours' ratios down): with them in, PRNU came out
    +35 % (0.01364 against the realised 0.01003); without, within 8 % (≈ 4σ of the estimate: the
    pair-averaged shot noise at mid level is about as large as the PRNU and is subtracted)."""
    cap, prnu_true, defects = _synthetic_flats(1)
    cm = characterize_camera(cap)
    assert np.array_equal(cm.bad_pixels, defects)  # the defects are found first …
    assert cm.prnu == pytest.approx(prnu_true, rel=0.08)  # … and left out of the local mean


# ---------------------------------------------------------------------------------------------
# Value tests: the EMVA 1288 estimates against a simulated camera of known parameters (with the
# statistical tolerance of each estimate), the documented estimator formulas, defects, the
# correction, the Sensor it gives, and the error texts.
# ---------------------------------------------------------------------------------------------
import math  # noqa: E402

from calibration.camera import (QUANT_VAR_DN2, CameraModel, PTCPoint, _linfit,  # noqa: E402
                                _masked_box_mean, _pairs)

TRUE = dict(K=0.25, off=100.0, rn=6.0, dc=300.0, fw=13000.0)
# the first level (2.6 e⁻, ≈ 0.65 DN above dark) is used: the PTC takes every point with a mean > 0
FLAT_FRACS = (2e-4, 0.1, 0.25, 0.4, 0.55, 0.7, 0.9, 1.2)


def _capture(seed, *, shape=(64, 64), bits=12, prnu=0.01, dsnu_e=4.0, dark_t=(0.002, 0.01, 0.02, 0.04),
             dark_reps=(2, 2, 2, 2), flat_fracs=FLAT_FRACS, hot=(), dead=(), warm=(),
             bright=(), full_in_flat=(), bright_not_full=(), rn=None, dc=None, envelope=None):
    """Frames of the EMVA linear camera (K = 0.25 DN/e⁻, offset 100 DN, σ_r = 6 e⁻, D = 300 e⁻/s,
    13000 e⁻ full well) under uniform light: dark frames at ``dark_t`` (``dark_reps`` each), flat
    pairs at ``flat_fracs`` of the full well (exposure 0.01 s × fraction). Per-pixel gain map
    (PRNU) and dark-offset map (DSNU, e⁻). Defects by pixel index (row, col): ``hot`` at full scale,
    ``dead`` at the offset, ``warm`` with +60 DN dark offset, ``bright`` with 2.5× conversion gain
    (DN above the offset × 2.5) and at full scale in the brightest flat, ``full_in_flat`` normal
    pixels at full scale in the brightest flat, ``bright_not_full`` 2.2× conversion gain but never
    at full scale (capped at full − 1). ``envelope``: an illumination map multiplying the light
    (vignetting). Returns (capture, gain map, DSNU map in e⁻)."""
    rng = np.random.default_rng(seed)
    K, off, fw = TRUE["K"], TRUE["off"], TRUE["fw"]
    rn = TRUE["rn"] if rn is None else rn
    dc = TRUE["dc"] if dc is None else dc
    full = 2 ** bits - 1
    gain_map = 1 + prnu * rng.standard_normal(shape)
    dsnu_map = dsnu_e * rng.standard_normal(shape)
    light = gain_map if envelope is None else gain_map * envelope

    def frame(e_mean, t, last):
        e = rng.poisson(np.clip(e_mean * light + dc * t, 0, None)).astype(float)
        e = np.minimum(e + dsnu_map + rn * rng.standard_normal(shape), fw)
        dn = np.round(e * K + off)
        for p in warm:
            dn[p] += 60
        for p in bright:
            dn[p] = off + 2.5 * (dn[p] - off)
        for p in bright_not_full:
            dn[p] = min(off + 2.2 * (dn[p] - off), full - 1)
        for p in dead:
            dn[p] = np.round(off + rng.standard_normal())
        for p in hot:
            dn[p] = full
        if last:
            for p in tuple(bright) + tuple(full_in_flat):
                dn[p] = full
        return np.clip(dn, 0, full)

    frames, keys, exps = [], [], []
    for t, reps in zip(dark_t, dark_reps):
        for _ in range(reps):
            frames.append(frame(0.0, t, False))
            keys.append(2)
            exps.append(t)
    for i, f in enumerate(flat_fracs):
        for _ in range(2):
            frames.append(frame(TRUE["fw"] * f, 0.01 * f, i == len(flat_fracs) - 1))
            keys.append(1)
            exps.append(0.01 * f)
    cap = Capture(path="synthetic", frames=np.stack(frames), bit_depth=bits, image_key=np.array(keys),
                  exposure_s=np.array(exps), pattern_id=[""] * len(keys), patterns={}, instrument={},
                  provenance={})
    return cap, gain_map, dsnu_map


@pytest.fixture  # per test (≈ 30 ms): each test that uses it runs the analysis itself
def simulated():
    cap, gain_map, dsnu_map = _capture(0)
    return characterize_camera(cap), cap, gain_map, dsnu_map


def _k_standard_error(n, fracs=(0.1, 0.25, 0.4, 0.55)):
    """1σ of the weighted slope through the origin, from the true camera: points x = K·μ_e,
    Var(σ̂²) = 2σ_y⁴/(n−1) with σ_y² = K²(μ_e + σ_r² + D·t) + 1/12 (pair differences)."""
    K, rn, dc, fw = TRUE["K"], TRUE["rn"], TRUE["dc"], TRUE["fw"]
    s = 0.0
    for f in fracs:
        mu_e = f * fw
        s2 = K ** 2 * (mu_e + rn ** 2 + dc * 0.01 * f) + 1 / 12
        s += (K * mu_e) ** 2 * (n - 1) / (2 * s2 ** 2)
    return 1 / math.sqrt(s)


def test_emva_estimates_recover_the_simulated_camera(simulated):
    """64 × 64 pixels, 4 dark exposures (pairs), 8 flat pairs. Each estimate within 4 of its
    stated σ of the truth; the stated σ of K is the weighted-least-squares standard error of the
    true camera, inflated by sqrt(χ²_red) when the points scatter more than that (χ²_red = 1.30
    for this seed: × 1.14); 0.9 … 1.6 × covers χ²_red up to 2.5 (3 degrees of freedom: 94 %)."""
    cm, cap, gain_map, dsnu_map = simulated
    K = TRUE["K"]
    k_se = _k_standard_error(64 * 64)
    assert 0.9 * k_se < cm.std["gain_dn_per_e"] < 1.6 * k_se
    assert abs(cm.gain_dn_per_e - K) < 4 * cm.std["gain_dn_per_e"]
    assert cm.gain_e_per_dn == 1 / cm.gain_dn_per_e
    # read noise: σ_r² K² + 1/12 from pair differences of 4096 pixels: σ ≈ 0.13 e⁻
    assert 0.05 < cm.std["read_noise_e"] < 0.3
    assert abs(cm.read_noise_e - TRUE["rn"]) < 4 * cm.std["read_noise_e"]
    # dark current from the slope of the dark mean over 2 … 40 ms (the 0.5 e⁻ quantisation steps and
    # the Poisson noise of D·t ≤ 12 e⁻ per pixel): σ ≈ 6 e⁻/s
    assert 2.0 < cm.std["dark_current_e_per_s"] < 15.0
    assert abs(cm.dark_current_e_per_s - TRUE["dc"]) < 4 * cm.std["dark_current_e_per_s"]
    # offset: the realised one (mean DSNU of these 4096 pixels shifts it by K·mean(DSNU))
    off_true = TRUE["off"] + K * dsnu_map.mean()
    assert 0.003 < cm.std["offset_dn"] < 0.05
    assert abs(cm.offset_dn - off_true) < 4 * cm.std["offset_dn"]
    # DSNU: the realised spatial std of the dark offsets (4 e⁻); sampling error of a std over 4096
    # pixels ≈ 1.1 %, plus the subtracted temporal share: within 4 %
    assert cm.dsnu_e == pytest.approx(dsnu_map.std(ddof=1), rel=0.04)
    assert cm.prnu == pytest.approx(gain_map.std(ddof=1), rel=0.08)
    # saturation: the variance maximum is the 0.9 full-well pair (the 1.2 pair is clipped flat)
    i_max = int(np.argmax([p.var_dn2 for p in cm.ptc]))
    assert i_max == 6
    assert cm.saturation_capacity_e == pytest.approx(cm.ptc[6].mean_dn / cm.gain_dn_per_e, rel=1e-12)
    assert cm.saturation_capacity_e == pytest.approx(0.9 * TRUE["fw"], rel=0.03)
    assert cm.std["saturation_capacity_e"] == pytest.approx(
        cm.saturation_capacity_e * cm.std["gain_dn_per_e"] / cm.gain_dn_per_e, rel=1e-12)
    assert not cm.bad_pixels.any() and cm.bit_depth == 12
    assert sorted(cm.std) == ["dark_current_e_per_s", "gain_dn_per_e", "offset_dn", "read_noise_e",
                              "saturation_capacity_e"]


def test_photon_transfer_points_follow_the_linear_model(simulated):
    """Each flat pair: μ_y − μ_dark = K·μ_e (PRNU averages out over 4096 pixels: within 0.5 %),
    σ_y² − σ²_dark = K·(μ_y − μ_dark) within 4 σ of the pair-difference variance; the four points
    at or below 70 % of the saturation mean are the ones used."""
    cm, cap, _, _ = simulated
    K, fw = TRUE["K"], TRUE["fw"]
    n = 64 * 64
    assert [p.exposure_s for p in cm.ptc] == pytest.approx([0.01 * f for f in FLAT_FRACS], rel=1e-12)
    assert [p.used for p in cm.ptc] == [True, True, True, True, True, False, False, False]
    assert all(p.n_pixels == n for p in cm.ptc)
    # the faint pair: 2.6 e⁻ = 0.65 DN (± 0.05: 4096 pixels of ≈ 1.6 DN temporal noise, pair mean)
    assert cm.ptc[0].mean_dn == pytest.approx(K * 2e-4 * fw, abs=0.05)
    for p, f in zip(cm.ptc[1:7], FLAT_FRACS[1:7]):
        assert p.mean_dn == pytest.approx(K * f * fw, rel=0.005), f
        s2 = K * p.mean_dn + K ** 2 * (TRUE["rn"] ** 2 + TRUE["dc"] * p.exposure_s) + 1 / 12
        assert abs(p.var_dn2 - K * p.mean_dn) < 4 * s2 * math.sqrt(2 / (n - 1)), f
    # the clipped pair: every pixel at the full well, no temporal variance left above the dark's
    assert cm.ptc[7].var_dn2 < 0
    # dark points: (t, mean, var) = (t, offset + K·D·t, K²(σ_r² + D·t) + 1/12) within 4 σ
    assert [d[0] for d in cm.dark_ptc] == [0.002, 0.01, 0.02, 0.04]
    for t, m, v in cm.dark_ptc:
        var = K ** 2 * (TRUE["rn"] ** 2 + TRUE["dc"] * t) + 1 / 12
        assert abs(v - var) < 4 * var * math.sqrt(2 / (n - 1)), t
        assert m == pytest.approx(TRUE["off"] + K * TRUE["dc"] * t, abs=0.1), t


@pytest.mark.parametrize("seed", [0, 3])  # χ²_red of the PTC fit 1.30 (σ inflated) and 0.62 (not)
def test_estimates_follow_the_documented_formulas(seed):
    """From the returned points, as the module doc states: K the weighted slope through the origin
    (weights (n−1)/(2(σ̂² + σ²_dark)²)), its σ scaled by sqrt(χ²_red) when > 1; offset and K·D the
    ordinary least-squares line of the dark means; σ²_y.dark(0) the intercept of the dark
    variances; σ_r = sqrt(σ²_y.dark(0) − 1/12)/K; D = (K·D)/K; errors propagated to first order."""
    cap, _, _ = _capture(seed)
    cm = characterize_camera(cap)
    n = cm.ptc[0].n_pixels
    t = np.array([d[0] for d in cm.dark_ptc])
    dm = np.array([d[1] for d in cm.dark_ptc])
    dv = np.array([d[2] for d in cm.dark_ptc])
    A = np.stack([np.ones_like(t), t], 1)

    def ols(y):
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        r = y - A @ coef
        return coef, np.linalg.inv(A.T @ A) * (r @ r) / (len(y) - 2)

    (off, kd), cov_m = ols(dm)
    (v0, vs), cov_v = ols(dv)
    used = [p for p in cm.ptc if p.used]
    x = np.array([p.mean_dn for p in used])
    y = np.array([p.var_dn2 for p in used])
    w = (n - 1) / (2 * (y + v0 + vs * np.array([p.exposure_s for p in used])) ** 2)
    K = np.sum(w * x * y) / np.sum(w * x * x)
    chi2 = np.sum(w * (y - K * x) ** 2) / (len(x) - 1)
    k_std = math.sqrt(max(chi2, 1.0) / np.sum(w * x * x))
    assert cm.gain_dn_per_e == pytest.approx(K, rel=1e-12)
    assert cm.std["gain_dn_per_e"] == pytest.approx(k_std, rel=1e-10)
    assert cm.offset_dn == pytest.approx(off, rel=1e-12)
    assert cm.std["offset_dn"] == pytest.approx(math.sqrt(cov_m[0, 0]), rel=1e-9)
    assert cm.dark_current_e_per_s == pytest.approx(kd / K, rel=1e-10)
    assert cm.std["dark_current_e_per_s"] == pytest.approx(
        math.sqrt(cov_m[1, 1]) / K + kd / K * k_std / K, rel=1e-9)
    rn2 = v0 - 1 / 12
    assert cm.read_noise_e == pytest.approx(math.sqrt(rn2) / K, rel=1e-10)
    assert cm.std["read_noise_e"] == pytest.approx(
        math.sqrt(cov_v[0, 0]) / (2 * math.sqrt(rn2)) / K + math.sqrt(rn2) / K * k_std / K, rel=1e-9)
    assert QUANT_VAR_DN2 == 1 / 12
    # the points themselves: dark (t, spatial mean of the pair mean, var(y_A − y_B)/2) and flat
    # (mean of (y_A + y_B)/2 minus the dark line, var(y_A − y_B)/2 minus the dark-variance line)
    dark = cap.indices(2)
    for (tt, m, v), i in zip(cm.dark_ptc, range(0, len(dark), 2)):
        a, b = cap.frames[dark[i]], cap.frames[dark[i + 1]]
        assert cap.exposure_s[dark[i]] == tt
        assert m == pytest.approx(((a + b) / 2).mean(), rel=1e-14)
        assert v == pytest.approx((a - b).var(ddof=1) / 2, rel=1e-12)
    flats = cap.indices(1)
    for p, i in zip(cm.ptc, range(0, len(flats), 2)):
        a, b = cap.frames[flats[i]], cap.frames[flats[i + 1]]
        assert p.mean_dn == pytest.approx((a + b).mean() / 2 - off - kd * p.exposure_s, rel=1e-9, abs=1e-9)
        assert p.var_dn2 == pytest.approx((a - b).var(ddof=1) / 2 - v0 - vs * p.exposure_s, rel=1e-9, abs=1e-9)


def test_dark_and_flat_maps(simulated):
    """Per-pixel dark line ``offset + slope·t`` from the 4 exposure means (8 frames): offsets
    follow ``off + K·DSNU`` (1 DN spread) to the temporal noise of the fit's intercept (≈ 0.95 DN:
    ≈ 1.4 DN² per 2-frame mean × (1/4 + t̄²/Σ(t − t̄)²) = 0.65); the mean
    slope is K·D. The flat map is the normalised gain map (PRNU 1 %) up to shot noise."""
    cm, cap, gain_map, dsnu_map = simulated
    K = TRUE["K"]
    resid = cm.dark_offset_map_dn - (TRUE["off"] + K * dsnu_map)
    assert abs(resid.mean()) < 0.05 and 0.7 < resid.std() < 1.1
    assert cm.dark_slope_map_dn_per_s.mean() == pytest.approx(K * TRUE["dc"], rel=0.05)
    assert np.allclose(cm.dark_dn(0.03)[0], cm.dark_offset_map_dn + 0.03 * cm.dark_slope_map_dn_per_s, rtol=1e-15)
    assert cm.dark_dn([0.0, 0.01]).shape == (2, 64, 64)
    assert np.median(cm.flat_map) == pytest.approx(1.0, abs=2e-3)
    # shot noise of the averaged flats (0.25, 0.4, 0.55 full well, pairs): ≈ 0.59 % per pixel
    # against the 1 % PRNU → correlation ≈ 1/sqrt(1 + 0.59²) ≈ 0.86
    assert np.corrcoef(cm.flat_map.ravel(), gain_map.ravel())[0, 1] > 0.8
    assert np.std(cm.flat_map - gain_map / np.median(gain_map)) < 0.007


def test_correction_of_the_simulated_flats(simulated):
    """Dark-subtracted, gain- and flat-corrected flats are uniform electrons: the 0.4 full-well
    pair reads 5200 e⁻ at the true gain (± 0.5 %; at the estimated K, 5200·K/K̂) with the PRNU removed (spatial std ≈ shot noise √5200 ≈ 72 e⁻);
    the darks read 0; the clipped 1.2 pair and the 0.9 pair (above 95 % of the saturation
    mean) become NaN, unless saturation_margin=None."""
    cm, cap, _, _ = simulated
    flats = cap.indices(1)
    e = cm.correct(cap.frames[flats[6:8]], cap.exposure_s[flats[6:8]])
    assert e.shape == (2, 64, 64) and not np.isnan(e).any()
    assert np.mean(e) * cm.gain_dn_per_e / TRUE["K"] == pytest.approx(0.4 * TRUE["fw"], rel=0.005)
    assert 60 < np.std(e) < 85
    dark = cap.indices(2)
    ed = cm.correct(cap.frames[dark], cap.exposure_s[dark])
    assert abs(np.mean(ed)) < 0.5
    top = cm.correct(cap.frames[flats[-2:]], cap.exposure_s[flats[-2:]])
    assert np.isnan(top).all()
    assert np.isnan(cm.correct(cap.frames[flats[12:14]], cap.exposure_s[flats[12:14]])).mean() > 0.5
    kept = cm.correct(cap.frames[flats[-2:]], cap.exposure_s[flats[-2:]], saturation_margin=None)
    assert not np.isnan(kept).any()
    assert np.mean(kept) * cm.gain_dn_per_e / TRUE["K"] == pytest.approx(TRUE["fw"], rel=0.01)
    one = cm.correct(cap.frames[flats[6]], cap.exposure_s[flats[6]])
    assert one.shape == (1, 64, 64) and np.array_equal(one[0], e[0])


def _model(**kw):
    """A hand-made 2 × 3 camera: K = 0.5 DN/e⁻, offset map 100 DN, slopes 0/10/20 … DN/s,
    flat map 1/2/0.5 …, one bad pixel, 10-bit ADC, saturation 1000 e⁻."""
    d = dict(gain_dn_per_e=0.5, read_noise_e=3.0, dark_current_e_per_s=40.0, offset_dn=100.0, dsnu_e=1.5,
             prnu=0.02, saturation_capacity_e=1000.0, bit_depth=10,
             std={"gain_dn_per_e": 0.01, "read_noise_e": 0.1},
             dark_offset_map_dn=np.full((2, 3), 100.0),
             dark_slope_map_dn_per_s=np.array([[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]]),
             flat_map=np.array([[1.0, 2.0, 0.5], [1.0, 1.0, 1.0]]),
             bad_pixels=np.array([[False, False, False], [False, False, True]]))
    d.update(kw)
    return CameraModel(**d)


def test_correct_exact_small_case():
    """e = (y − offset − slope·t)/K/flat; NaN at or above 0.95·μ_e.sat·K = 475 DN of signal,
    at the ADC full scale (1023 DN), and on bad pixels."""
    cm = _model()
    fr = np.array([[[150.0, 201.0, 150.0], [575.0, 576.0, 200.0]]])
    e = cm.correct(fr, 0.1)
    # signals: 50, 100, 48, 472, 472, 95 DN
    ref = np.array([[[100.0, 100.0, 192.0], [944.0, 944.0, np.nan]]])
    assert np.array_equal(e, ref, equal_nan=True)
    # signal 475 DN exactly (the margin, >=) is clipped, 474 DN is not
    fr2 = np.array([[[575.0, 575.0, 150.0], [150.0, 150.0, 150.0]]])
    e2 = cm.correct(fr2, 0.1)
    assert np.isnan(e2[0, 0, 0]) and e2[0, 0, 1] == 474.0 / 0.5 / 2.0 and e2[0, 0, 2] == 192.0
    kept = cm.correct(fr2, 0.1, saturation_margin=None)
    assert kept[0, 0, 0] == 950.0 and np.isnan(kept[0, 1, 2])
    # the ADC full scale (1023 DN, >=) is clipped even with a small signal (offset 800 DN here)
    hi = _model(dark_offset_map_dn=np.full((2, 3), 800.0))
    e3 = hi.correct(np.array([[[1023.0, 1022.0, 900.0], [900.0, 900.0, 900.0]]]), 0.0)
    assert np.isnan(e3[0, 0, 0]) and e3[0, 0, 1] == 222.0 / 0.5 / 2.0 and e3[0, 0, 2] == 400.0
    assert hi.correct(np.array([[[1023.0, 1022.0, 900.0], [900.0, 900.0, 900.0]]]), 0.0,
                      saturation_margin=None)[0, 0, 0] == 446.0
    # a margin of 0.5: signal >= 250 DN clipped
    half = cm.correct(np.array([[[349.0, 352.0, 150.0], [150.0, 150.0, 150.0]]]), 0.1, saturation_margin=0.5)
    assert half[0, 0, 0] == 498.0 and np.isnan(half[0, 0, 1])
    # per-frame exposures
    two = cm.correct(np.stack([fr[0], fr[0]]), np.array([0.1, 0.0]))
    assert two[1, 0, 1] == 101.0 and two[0, 0, 1] == 100.0
    with pytest.raises(CameraError, match=r"frames of shape \(3, 3\) do not match the camera model \(2, 3\); use "
                                          r"frames from the same camera and ROI"):
        cm.correct(np.zeros((1, 3, 3)), 0.1)


def test_sensor_and_summary_of_the_model():
    cm = _model()
    s = cm.sensor(exposure_s=0.05, mean_photons=80.0)
    assert float(s.quantum_efficiency) == 1.0 and float(s.mean_photons) == 80.0
    assert float(s.read_noise_e) == 3.0 and float(s.dark_current_e_per_s) == 40.0
    assert float(s.exposure_s) == 0.05 and float(s.gain_e_per_dn) == 2.0 and float(s.offset_dn) == 100.0
    assert s.bit_depth == 10 and float(s.full_well_e) == 1000.0 and s.noise == "poisson"
    d = cm.sensor()
    assert float(d.exposure_s) == 1e-3 and d.mean_photons is None
    # a (noisy) negative dark current is not a physical camera: the sensor gets 0
    assert float(_model(dark_current_e_per_s=-5.0).sensor().dark_current_e_per_s) == 0.0
    assert cm.summary() == {"gain_dn_per_e": 0.5, "read_noise_e": 3.0, "dark_current_e_per_s": 40.0,
                            "offset_dn": 100.0, "dsnu_e": 1.5, "prnu": 0.02, "saturation_capacity_e": 1000.0,
                            "gain_dn_per_e_std": 0.01, "read_noise_e_std": 0.1, "n_bad_pixels": 1}
    assert cm.ptc == [] and cm.dark_ptc == []
    assert PTCPoint(0.01, 1.0, 2.0, 3).used is False


def test_defect_pixels_are_found_and_left_out():
    """Hot (full scale in the darks), warm (+60 DN dark offset ≫ 8 MAD + 5), dead (no flat
    response) and bright (2.5× gain, at full scale in a flat) pixels are flagged; a normal pixel
    that reads full scale once in a flat is not, nor is a 2.5× pixel that never reaches full scale
    (the bright rule needs both, per pixel). Flagged pixels leave every statistic: the PTC
    counts the others, and K stays within 4σ."""
    hot, warm, dead, bright, normal_full = [(3, 4), (60, 1)], [(10, 10), (20, 50)], [(30, 30), (5, 60)], \
        [(40, 40)], [(50, 20)]
    cap, _, _ = _capture(1, hot=hot, warm=warm, dead=dead, bright=bright, full_in_flat=normal_full,
                         bright_not_full=[(45, 8)])
    cm = characterize_camera(cap)
    expected = np.zeros((64, 64), bool)
    for p in hot + warm + dead + bright:
        expected[p] = True
    assert np.array_equal(cm.bad_pixels, expected)
    assert cm.summary()["n_bad_pixels"] == 7
    assert all(p.n_pixels == 64 * 64 - 7 for p in cm.ptc)
    assert abs(cm.gain_dn_per_e - TRUE["K"]) < 4 * cm.std["gain_dn_per_e"]
    assert abs(cm.read_noise_e - TRUE["rn"]) < 4 * cm.std["read_noise_e"]
    assert cm.flat_map[expected].tolist() == [1.0] * 7  # neutral flat on defects
    e = cm.correct(cap.frames[cap.indices(1)[:2]], cap.exposure_s[cap.indices(1)[:2]])
    assert np.isnan(e[:, expected]).all() and not np.isnan(e[:, ~expected]).any()


def test_single_dark_pair_and_two_dark_exposures():
    """Dark pairs at one exposure only (the other exposure one frame): the dark variance is that
    pair's, constant in t, with σ² of a variance 2σ⁴/(n−1); the read noise (2 e⁻ here: σ_r²K² =
    0.25 DN², below 1 DN²) still within 4σ."""
    cap, _, _ = _capture(2, dark_t=(0.002, 0.02), dark_reps=(2, 1), rn=2.0)
    cm = characterize_camera(cap)
    assert len(cm.dark_ptc) == 1 and cm.dark_ptc[0][0] == 0.002
    v0 = cm.dark_ptc[0][2]
    K = cm.gain_dn_per_e
    rn2 = v0 - 1 / 12
    assert cm.read_noise_e == pytest.approx(math.sqrt(rn2) / K, rel=1e-12)
    n = 64 * 64
    assert cm.std["read_noise_e"] == pytest.approx(
        math.sqrt(2 * v0 ** 2 / (n - 1)) / (2 * math.sqrt(rn2)) / K
        + cm.read_noise_e * cm.std["gain_dn_per_e"] / K, rel=1e-10)
    assert 0 < rn2 < 1
    # + the D·t = 0.6 e⁻ of the 2 ms pair read as read noise: sqrt(4 + 0.6) − 2 = 0.14 e⁻
    assert abs(cm.read_noise_e - 2.0) < 4 * cm.std["read_noise_e"] + 0.15
    # the PTC subtracts that constant dark variance at every exposure
    mu = cm.ptc[2].mean_dn
    assert cm.ptc[2].var_dn2 == pytest.approx(K * mu, rel=0.1)
    fl = cap.indices(1)
    for p, i in zip(cm.ptc, range(0, len(fl), 2)):
        d = cap.frames[fl[i]] - cap.frames[fl[i + 1]]
        assert p.var_dn2 == pytest.approx(d.var(ddof=1) / 2 - v0, rel=1e-9, abs=1e-9)


def test_linear_fraction_selects_the_points():
    cap, _, _ = _capture(0)
    cm = characterize_camera(cap, linear_fraction=0.5)
    # μ_sat = the 0.9 pair; 50 % of it is 0.45 full well: the faint, 0.1, 0.25, 0.4 pairs
    assert [p.used for p in cm.ptc] == [True, True, True, True, False, False, False, False]
    assert abs(cm.gain_dn_per_e - TRUE["K"]) < 4 * cm.std["gain_dn_per_e"]
    # three points (faint, 0.1, 0.25 ≤ 0.27 full well) are enough …
    three = characterize_camera(cap, linear_fraction=0.3)
    assert sum(p.used for p in three.ptc) == 3
    # the limit is inclusive: with linear_fraction = 1 the saturation pair itself is used
    assert [p.used for p in characterize_camera(cap, linear_fraction=1.0).ptc] == [True] * 7 + [False]
    # the message rounds the percentage: 1.49 % → "1 %"
    with pytest.raises(CameraError, match=r"^only 1 photon-transfer point\(s\) between 0 and 1 % of the"):
        characterize_camera(cap, linear_fraction=0.0149)
    # … two are not
    with pytest.raises(CameraError, match=r"only 2 photon-transfer point\(s\) between 0 and 20 % of the saturation "
                                          r"mean \(2925 DN\); record flats at more exposures below saturation"):
        characterize_camera(cap, linear_fraction=0.2)


def test_refusals_name_what_is_missing():
    cap, _, _ = _capture(3, shape=(16, 16), dark_t=(0.01,), dark_reps=(1,), flat_fracs=(0.1, 0.5))
    with pytest.raises(CameraError) as ei:
        characterize_camera(cap)
    msg = str(ei.value)
    assert msg == ("camera characterisation impossible: dark frames at 1 exposure(s); the dark current needs >= 2 "
                   "exposures (image_key 2); no pair of dark frames at one exposure; the temporal dark noise needs "
                   "pairs; flat frames in pairs at 2 exposure(s); the photon-transfer curve needs >= 4 (image_key "
                   "1, two frames per exposure)")
    # enough of everything but too few pixels
    small, _, _ = _capture(3, shape=(8, 8))
    with pytest.raises(CameraError, match=r"only 64 usable pixels after removing defects; check the frames"):
        characterize_camera(small)
    # flats that are darks
    dark_flats, _, _ = _capture(4, shape=(16, 16), flat_fracs=(1e-4, 2e-4, 3e-4, 4e-4))
    with pytest.raises(CameraError, match=r"flat frames are no brighter than the dark frames \(median \S+ DN above "
                                          r"dark\); check the illumination and the image_key of the flat frames"):
        characterize_camera(dark_flats)


def test_flat_variance_that_does_not_grow_is_refused():
    """Flat pairs with less frame-to-frame variance than the darks below the top level
    (var − σ²_dark < 0; the clipped top pair made noisy, so it is the variance maximum): the
    slope K would be negative, which is refused with the reason; flat
    pairs without any temporal noise (zero variance of the variance: infinite weights) give
    K = nan, refused the same way."""
    rng = np.random.default_rng(0)
    cap, _, _ = _capture(5, shape=(16, 16))
    flats = cap.indices(1)
    cap.frames[flats[-1]] = cap.frames[flats[-2]] + rng.normal(0, 50, (16, 16)).round()
    for i in range(0, len(flats) - 2, 2):
        cap.frames[flats[i + 1]] = cap.frames[flats[i]] + rng.normal(0, 0.5, (16, 16)).round()
    with pytest.raises(CameraError, match=r"photon-transfer slope K = -\S+ DN/e⁻ is not positive; the flat "
                                          r"variances do not grow with the mean — check that flat frames are "
                                          r"real exposures of a uniform field"):
        characterize_camera(cap)
    for i in range(0, len(flats) - 2, 2):
        cap.frames[flats[i + 1]] = cap.frames[flats[i]]
    with np.errstate(divide="ignore", invalid="ignore"), \
            pytest.raises(CameraError, match=r"photon-transfer slope K = nan DN/e⁻ is not positive"):
        characterize_camera(cap)


def test_exposure_grouping_and_helpers():
    """Frames within 1e-6 relative of one exposure are one group; groups in increasing t."""
    exp = np.array([0.02, 0.01, 0.01 * (1 + 5e-7), 0.01 * (1 + 2e-6), 0.02])
    g = _pairs(np.arange(5), exp)
    assert list(g) == [0.01, 0.01 * (1 + 2e-6), 0.02]
    assert g[0.01] == [1, 2] and g[0.02] == [0, 4] and g[0.01 * (1 + 2e-6)] == [3]
    assert _pairs(np.array([1, 2]), exp, rel_tol=1e-5) == {0.01: [1, 2]}
    # the tolerance is relative to the larger of the two: 1.9 − 1 = 0.9 <= 0.5·1.9
    assert _pairs(np.array([0, 1, 2]), np.array([1.0, 1.9, 2.9]), rel_tol=0.5) == {1.0: [0, 1], 2.9: [2]}
    # … and inclusive: |1 − 2| = 0.5·2 exactly
    assert _pairs(np.array([0, 1]), np.array([1.0, 2.0]), rel_tol=0.5) == {1.0: [0, 1]}
    # _linfit: exact line → a, b exact; unweighted covariance scaled by χ²_red (0 here),
    # weighted covariance (AᵀWA)⁻¹ scaled by max(χ²_red, 1)
    x = np.array([0.0, 1.0, 2.0, 3.0])
    a, b, cov = _linfit(x, 2 + 3 * x)
    assert (a, b) == pytest.approx((2.0, 3.0), rel=1e-12) and np.allclose(cov, 0.0, atol=1e-20)
    a, b, cov = _linfit(x, 2 + 3 * x, w=np.full(4, 4.0))
    A = np.stack([np.ones(4), x], 1)
    assert np.allclose(cov, np.linalg.inv(4.0 * A.T @ A), rtol=1e-12)
    y = np.array([0.0, 2.0, 1.0, 3.0])
    a, b, cov = _linfit(x, y)
    r = y - a - b * x
    assert (a, b) == pytest.approx(tuple(np.polyfit(x, y, 1)[::-1]), rel=1e-12)
    assert np.allclose(cov, np.linalg.inv(A.T @ A) * (r @ r) / 2, rtol=1e-12)
    a, b, cov = _linfit(x, y, w=np.ones(4))
    assert np.allclose(cov, np.linalg.inv(A.T @ A) * max((r @ r) / 2, 1.0), rtol=1e-12)
    a, b, cov = _linfit(x, y, w=np.full(4, 100.0))   # χ²_red = 100·0.9/… > 1
    assert np.allclose(cov, np.linalg.inv(100.0 * A.T @ A) * (100.0 * (r @ r) / 2), rtol=1e-12)
    a3, b3, cov3 = _linfit(x[:3], y[:3])            # one degree of freedom: scaled by χ²
    r3 = y[:3] - a3 - b3 * x[:3]
    assert np.allclose(cov3, np.linalg.inv(A[:3].T @ A[:3]) * (r3 @ r3), rtol=1e-12)
    # the fit runs in float64 whatever the input dtype: float32 data (exact small integers here,
    # whose float32 normal-equation inverse would round differently) give the float64 result
    a32, b32, cov32 = _linfit(x.astype(np.float32), y.astype(np.float32))
    a64, b64, cov64 = _linfit(x, y)
    assert (a32, b32) == (a64, b64) and np.array_equal(cov32, cov64)
    a2, b2, cov2 = _linfit(x[:2], y[:2])            # no degrees of freedom: unscaled
    assert (a2, b2) == pytest.approx((0.0, 2.0), abs=1e-12)
    assert np.allclose(cov2, np.linalg.inv(A[:2].T @ A[:2]), rtol=1e-12)
    # masked box mean: the 3 × 3 mean over the masked-in pixels only; no such pixel → the value
    a = np.arange(25, dtype=float).reshape(5, 5)
    mask = np.ones((5, 5), bool)
    mask[2, 2] = False
    m = _masked_box_mean(a, mask, 1)
    assert m[2, 2] == pytest.approx((a[1:4, 1:4].sum() - 12.0) / 8, rel=1e-12)
    assert m[1, 1] == pytest.approx((a[0:3, 0:3].sum() - 12.0) / 8, rel=1e-12)
    none = _masked_box_mean(a, np.zeros((5, 5), bool), 1)
    assert np.array_equal(none, a)


def test_hot_pixel_threshold_and_full_scale_dark_frames():
    """Hot: last-exposure dark mean above median + 8·MAD (×1.4826) + 5 DN, or full scale in any
    dark frame. Integer DN: the median is 103 DN and 1.4826·MAD = 1.4826 DN for this seed, so the
    threshold is 119.86 DN: a pixel at 120.0 DN is hot, one at 119.5 DN is not. A pixel at full
    scale in one dark frame only (its dark line and flat response otherwise usable) is hot."""
    cap, _, _ = _capture(7, dark_reps=(2, 6, 2, 2))
    groups = list(_pairs(cap.indices(2), cap.exposure_s).values())
    last = groups[-1]
    dm = cap.frames[last].mean(0)
    med = np.median(dm)
    assert med == 103.0 and 1.4826 * np.median(np.abs(dm - med)) == pytest.approx(1.4826, rel=1e-12)
    cap.frames[last[0]][22, 22] = cap.frames[last[1]][22, 22] = 120.0
    cap.frames[last[0]][33, 33] = cap.frames[last[1]][33, 33] = 119.5
    cap.frames[groups[1][0]][12, 12] = 4095.0
    cm = characterize_camera(cap)
    assert np.argwhere(cm.bad_pixels).tolist() == [[12, 12], [22, 22]]


def test_minimal_captures_are_accepted():
    """The least each check accepts: 100 usable pixels (10 × 10), dark frames at exactly 2
    exposures, exactly 4 flat pairs — here none between 20 % and 70 % of the saturation mean, so
    the flat map is the mid-level pair's (the pair closest to half the brightest median)."""
    cap, _, _ = _capture(8, shape=(10, 10), dark_t=(0.002, 0.02), dark_reps=(2, 2),
                         flat_fracs=(0.05, 0.1, 0.15, 0.9))
    cm = characterize_camera(cap)
    assert len(cm.ptc) == 4 and [p.used for p in cm.ptc] == [True, True, True, False]
    assert not cm.bad_pixels.any()
    # σ_r from the two dark variances: the line through them at t = 0
    (t0, _, v_a), (t1, _, v_b) = cm.dark_ptc
    v0 = v_a - (v_b - v_a) / (t1 - t0) * t0
    assert cm.read_noise_e == pytest.approx(math.sqrt(v0 - 1 / 12) / cm.gain_dn_per_e, rel=1e-10)
    # flat map: the 0.15 pair (median 487.5 DN, closest to half of the 0.9 pair's 2925 DN),
    # dark-subtracted and divided by its median
    fl = cap.indices(1)
    mid = cap.frames[fl[4:6]].mean(0) - cm.dark_dn(0.0015)[0]
    assert np.allclose(cm.flat_map, mid / np.median(mid), rtol=1e-12)


def test_flats_just_brighter_than_the_threshold_are_analysed():
    """The "no brighter than the dark frames" refusal is for a brightest median of <= 10 DN above
    dark; 10.5 DN (42 e⁻) passes that check (and fails later, for too few usable points)."""
    f = 42.0 / TRUE["fw"]
    cap, _, _ = _capture(9, shape=(32, 32), flat_fracs=(f / 4, f / 2, 3 * f / 4, f))
    with pytest.raises(CameraError) as ei:
        characterize_camera(cap)
    assert "no brighter" not in str(ei.value)


def test_noiseless_darks_and_a_uniform_camera():
    """No read noise, no dark current: dark pairs are identical, σ²_y.dark = 0 < 1/12, so the
    read noise is 0 with an undefined (NaN) σ; no DSNU and no PRNU: both estimate 0 (their
    spatial variance is below the temporal share) — the variances are clipped at 0, not at 1."""
    cap, _, _ = _capture(10, rn=0.0, dc=0.0, dsnu_e=0.0, prnu=0.0)
    cm = characterize_camera(cap)
    assert [d[2] for d in cm.dark_ptc] == [0.0, 0.0, 0.0, 0.0]
    assert cm.read_noise_e == 0.0 and math.isnan(cm.std["read_noise_e"])
    assert cm.dsnu_e < 0.3 and cm.prnu < 0.003
    assert abs(cm.gain_dn_per_e - TRUE["K"]) < 4 * cm.std["gain_dn_per_e"]
    assert abs(cm.dark_current_e_per_s) < 1.0


def test_dsnu_prnu_and_flat_map_follow_the_documented_formulas(simulated):
    """DSNU: spatial variance of the mean of all dark frames minus the temporal share
    σ²_y.dark(t̄)/n_dark, in e⁻; PRNU: each pixel of the mid-level flat over the 7 × 7 mean of the
    usable pixels around it, spatial variance minus the pair-averaged temporal share over the
    median²; flat map: the mean of the median-normalised flats between 20 % and 70 % of μ_y.sat."""
    from scipy.ndimage import uniform_filter
    cm, cap, _, _ = simulated
    K = cm.gain_dn_per_e
    good = ~cm.bad_pixels
    t = np.array([d[0] for d in cm.dark_ptc])
    vs, v0 = np.polyfit(t, [d[2] for d in cm.dark_ptc], 1)
    dark = cap.indices(2)
    dmap = cap.frames[dark].mean(0)
    dsnu_var = dmap[good].var(ddof=1) - (v0 + vs * cap.exposure_s[dark].mean()) / len(dark)
    assert cm.dsnu_e == pytest.approx(math.sqrt(dsnu_var) / K, rel=1e-9)
    flats = cap.indices(1)
    ts = cap.exposure_s[flats[::2]]
    fmeans = [cap.frames[flats[2 * i:2 * i + 2]].mean(0) - cm.dark_dn(tt)[0] for i, tt in enumerate(ts)]
    levels = np.array([np.median(m) for m in fmeans])
    i_mid = int(np.argmin(np.abs(levels - 0.5 * levels.max())))
    mid = fmeans[i_mid]
    local = uniform_filter(np.where(good, mid, 0.0), 7, mode="reflect") / uniform_filter(good * 1.0, 7,
                                                                                         mode="reflect")
    hp = mid / local
    temporal = (cm.ptc[i_mid].var_dn2 + v0 + vs * ts[i_mid]) / 2
    prnu_var = hp[good].var(ddof=1) - temporal / np.median(mid) ** 2
    assert cm.prnu == pytest.approx(math.sqrt(prnu_var), rel=1e-9)
    mu_sat = cm.saturation_capacity_e * K
    sel = [m / np.median(m[good]) for m, lv in zip(fmeans, levels) if 0.2 * mu_sat <= lv <= 0.7 * mu_sat]
    assert len(sel) == 3  # the 0.25, 0.4, 0.55 pairs
    assert np.allclose(cm.flat_map, np.mean(sel, axis=0), rtol=1e-12)


def test_noiseless_uniform_darks_hot_threshold():
    """Identical dark frames (no read noise, dark current or DSNU: every dark pixel 100 DN):
    MAD = 0, so the hot threshold is the median + 5 DN (+ 8e-9): a pixel at 105 DN is not hot, one
    at 106 DN is."""
    cap, _, _ = _capture(11, rn=0.0, dc=0.0, dsnu_e=0.0)
    dark = cap.indices(2)
    assert np.all(cap.frames[dark] == 100.0)
    last = dark[-2:]
    cap.frames[last, 5, 5] = 105.0
    cap.frames[last, 6, 6] = 106.0
    cm = characterize_camera(cap)
    assert np.argwhere(cm.bad_pixels).tolist() == [[6, 6]]


def test_flat_exactly_ten_dn_above_dark_is_refused():
    """Noise-free frames: darks 100 DN, flats 110 DN: the brightest median is exactly 10 DN above
    the dark line, which the check refuses (<= 10)."""
    n_d, n_f = 4, 8
    frames = np.concatenate([np.full((n_d, 16, 16), 100.0), np.full((n_f, 16, 16), 110.0)])
    exps = [0.001, 0.001, 0.002, 0.002] + [0.001, 0.001, 0.002, 0.002, 0.003, 0.003, 0.004, 0.004]
    cap = Capture(path="synthetic", frames=frames, bit_depth=12, image_key=np.array([2] * n_d + [1] * n_f),
                  exposure_s=np.array(exps), pattern_id=[""] * 12, patterns={}, instrument={}, provenance={})
    with pytest.raises(CameraError, match=r"^flat frames are no brighter than the dark frames \(median 10 DN "):
        characterize_camera(cap)


def test_vignetted_flats_flag_no_pixel_dead():
    """Illumination falling from 100 % to 30 % across the frame (vignetting): the dead-pixel rule
    compares each pixel with its 7 × 7 neighbourhood, not with the frame median, so no pixel of
    the dim side is flagged; pair differences keep K within 4σ."""
    env = np.tile(np.linspace(1.0, 0.3, 64), (64, 1))
    cap, _, _ = _capture(12, envelope=env)
    cm = characterize_camera(cap)
    assert not cm.bad_pixels.any()
    assert abs(cm.gain_dn_per_e - TRUE["K"]) < 4 * cm.std["gain_dn_per_e"]


def test_bright_pixel_rule_uses_the_7x7_neighbourhood():
    """A pixel with 2.035× the mean signal of its 48 neighbours in the mid-level flat and full
    scale in the brightest flat is not 'bright': the rule is signal > 2 × the 7 × 7 mean
    *including the pixel*, 2 × (48 + 2.035)/49 = 2.042 × (a 9 × 9 box would give 2.026 ×, and flag
    it); at 2.5× it is."""
    cap, _, _ = _capture(13, prnu=0.0)
    cm0 = characterize_camera(cap)
    flats = cap.indices(1)
    levels = [float(np.median(cap.frames[flats[i:i + 2]].mean(0) - cm0.dark_dn(cap.exposure_s[flats[i]])[0]))
              for i in range(0, len(flats), 2)]
    i_mid = 2 * int(np.argmin(np.abs(np.array(levels) - 0.5 * max(levels))))
    for (r, c), ratio in (((20, 20), 2.035), ((40, 40), 2.5)):
        nb = cap.frames[flats[i_mid:i_mid + 2], r - 3:r + 4, c - 3:c + 4].mean(0) - 100.0
        local = (nb.sum() - nb[3, 3]) / 48
        cap.frames[flats[i_mid:i_mid + 2], r, c] = 100.0 + ratio * local
        cap.frames[flats[-2:], r, c] = 4095.0
    cm = characterize_camera(cap)
    assert np.argwhere(cm.bad_pixels).tolist() == [[40, 40]]


def test_dark_variance_exactly_the_quantisation_noise():
    """A dark pair whose difference is ±1 DN on 28 of 169 pixels (0 elsewhere): var(y_A − y_B)/2 =
    28/168/2 = 1/12 exactly (in floats too), the quantisation variance: σ_r = 0 and its σ is
    undefined (NaN), not the formula with a clipped square root."""
    cap, _, _ = _capture(14, shape=(13, 13), rn=0.0, dc=0.0, dsnu_e=0.0, dark_t=(0.002, 0.02), dark_reps=(2, 1))
    dark = cap.indices(2)
    d = np.zeros(169)
    d[:14], d[14:28] = 1.0, -1.0
    cap.frames[dark[1]] = cap.frames[dark[0]] + np.random.default_rng(0).permutation(d).reshape(13, 13)
    cm = characterize_camera(cap)
    assert cm.dark_ptc[0][2] == 1 / 12
    assert cm.read_noise_e == 0.0 and math.isnan(cm.std["read_noise_e"])


def test_flat_variance_equal_to_the_dark_variance_gives_zero_gain_refused():
    """Flat pairs whose frame-to-frame difference is the dark pair's (no shot noise at all): every
    var − σ²_dark is exactly 0 below the (noisier) top pair, so K = 0.0 — refused, not divided by."""
    cap, _, _ = _capture(15, shape=(16, 16), dark_t=(0.002, 0.02), dark_reps=(2, 1))
    dark, flats = cap.indices(2), cap.indices(1)
    diff = cap.frames[dark[1]] - cap.frames[dark[0]]
    for i in range(0, len(flats) - 2, 2):
        cap.frames[flats[i + 1]] = cap.frames[flats[i]] + diff
    cap.frames[flats[-1]] = cap.frames[flats[-2]] + 3 * diff
    with pytest.raises(CameraError, match=r"^photon-transfer slope K = 0.0 DN/e⁻ is not positive"):
        characterize_camera(cap)


def test_two_dark_exposures_state_uncertainties_that_cover_the_truth():
    """Dark pairs at only two exposures: each dark line passes exactly through its two points, so
    its covariance cannot come from residuals (it was (AᵀA)⁻¹ in the wrong units: stated σ 10–30 ×
    the real spread). Over 12 simulated 32 × 32 cameras (known σ_r, D, offset) the stated σ must
    be the size of the seed-to-seed spread (0.5–2.5 ×: the first-order propagation adds the K term
    linearly, so it may overstate) and every estimate within 4 stated σ of the truth."""
    T = TRUE
    est = {"read_noise_e": [], "dark_current_e_per_s": [], "offset_dn": []}
    for seed in range(12):
        cap, _, dsnu = _capture(seed, shape=(32, 32), dark_t=(0.002, 0.04), dark_reps=(2, 2))
        cm = characterize_camera(cap)
        truth = {"read_noise_e": T["rn"], "dark_current_e_per_s": T["dc"],
                 "offset_dn": T["off"] + T["K"] * dsnu.mean()}   # the realised offset (mean DSNU)
        for k in est:
            value = {"read_noise_e": cm.read_noise_e, "dark_current_e_per_s": cm.dark_current_e_per_s,
                     "offset_dn": cm.offset_dn}[k]
            est[k].append((value - truth[k], cm.std[k]))
    for k, rows in est.items():
        err, sd = np.array(rows).T
        assert np.all(np.abs(err) < 4 * sd), (k, err, sd)
        spread = float(np.sqrt(np.mean(err ** 2)))
        assert 0.5 < float(np.median(sd)) / spread < 2.5, (k, np.median(sd), spread)


def test_two_dark_exposures_covariance_follows_the_documented_formula():
    """The line through two points (t₁, y₁), (t₂, y₂) with known variances v₁, v₂ has
    var(a) = (t₂²v₁ + t₁²v₂)/(t₂ − t₁)² and var(b) = (v₁ + v₂)/(t₂ − t₁)², written out here
    (not through the module's matrix code): v = 2σ̂⁴/(n−1) for the pair-difference variances,
    v = σ²_y.dark(t)/(frames·n) for the dark means (here 2 and 3 frames). Float64 round-off: 1e-9."""
    cap, _, _ = _capture(5, shape=(32, 32), dark_t=(0.002, 0.04), dark_reps=(2, 3))
    cm = characterize_camera(cap)
    n = cm.ptc[0].n_pixels
    (t1, _, s1), (t2, _, s2) = cm.dark_ptc

    def line_var(v1, v2):
        return (t2 ** 2 * v1 + t1 ** 2 * v2) / (t2 - t1) ** 2, (v1 + v2) / (t2 - t1) ** 2

    va, _ = line_var(2 * s1 ** 2 / (n - 1), 2 * s2 ** 2 / (n - 1))
    v0 = s1 - (s2 - s1) / (t2 - t1) * t1                      # the variance line's intercept
    vs = (s2 - s1) / (t2 - t1)
    K, k_std = cm.gain_dn_per_e, cm.std["gain_dn_per_e"]
    rn2 = v0 - 1 / 12
    assert cm.read_noise_e == pytest.approx(math.sqrt(rn2) / K, rel=1e-9)
    assert cm.std["read_noise_e"] == pytest.approx(
        math.sqrt(va) / (2 * math.sqrt(rn2)) / K + cm.read_noise_e * k_std / K, rel=1e-9)
    vm_a, vm_b = line_var((v0 + vs * t1) / (2 * n), (v0 + vs * t2) / (3 * n))
    assert cm.std["offset_dn"] == pytest.approx(math.sqrt(vm_a), rel=1e-9)
    assert cm.std["dark_current_e_per_s"] == pytest.approx(
        math.sqrt(vm_b) / K + abs(cm.dark_current_e_per_s) * k_std / K, rel=1e-9)
