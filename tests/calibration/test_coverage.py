"""Do the fit's uncertainties cover the truth? Frames from an independent simulator
(:mod:`bench_sim`: exact crosstalk, exact angular spectrum, exact intensity and pixel integration,
other pitches and wavelength than the sample) meet real model error; the reported σ must include
it. Issue 18 item 11: |Δ|/σ <= 2 for >= 90 % of the parameters over >= 10 benches."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration.fit import PARAMS, NearFieldModel, fit_parameters, geometry_for, with_model_error
from calibration.registration import pearson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sim import irradiance, random_bench, random_patterns, frames_e  # noqa: E402

KEYS = list(PARAMS) + ["background_e", "intensity_scale"]


def _instrument(b):
    return dict(wavelength_m=b.wavelength_m, slm_pitch_m=b.slm_pitch_m, camera_pitch_m=b.camera_pitch_m,
                distance_m=b.distance_m, magnification=1.0)


def test_bench_simulator_is_exact_for_a_plane_wave_and_agrees_with_the_fit_model():
    """Independent implementations checked against physics and each other: a uniform SLM (gray 0,
    φ = 0) passes a unit plane wave, whose irradiance is 1 on every pixel after any distance and
    any pixel integration (|H| = 1 for propagating waves; tolerance 1e-9, float64 FFT round-off);
    the random-pattern irradiance agrees with the fit's fine model at the true parameters to
    Pearson r > 0.995 (the two differ only by their discretisation; a wrong sign of the shift,
    rotation or propagation direction gives r < 0.9)."""
    b = random_bench(0)
    flat = irradiance(b, [np.zeros((16, 16), np.uint8)])
    assert np.abs(flat - 1).max() < 1e-9
    pats = random_patterns(b, 2, 0)
    irr = irradiance(b, pats)
    geo = geometry_for(_instrument(b), b.camera_shape, pats, upsample=4, pixel_subsamples=3)
    m = NearFieldModel(geo, pats, b.lut_phase_rad)
    with torch.no_grad():
        fit_model = m.intensity({k: torch.tensor(b.truth()[k], dtype=torch.float64) for k in PARAMS}).numpy()
    assert min(pearson(fit_model[i], irr[i]) for i in range(2)) > 0.995
    wrong = dict(b.truth(), rotation_rad=-b.rotation_rad - 0.02, shift_x_m=-b.shift_x_m - 4e-6)
    with torch.no_grad():
        bad = m.intensity({k: torch.tensor(wrong[k], dtype=torch.float64) for k in PARAMS}).numpy()
    assert pearson(bad[0], irr[0]) < 0.9


def _bench_fit(seed, *, shape=(24, 24), n_frames=3, iters=60):
    """One bench: 3 random frames of 24×24 pixels, the coarse fit from a nominal start 1 % off in
    distance (no rotation, shift or magnification), then the fine fit from it — as ``calibrate``
    does, with the LUT known (the LUT's own coverage is benchmarks/calibration_coverage.py's)."""
    b = random_bench(seed, background_e=(0.0, 30.0)[seed % 2], camera_shape=shape)
    pats = random_patterns(b, n_frames, seed)
    data = frames_e(b, pats, seed)
    tr = b.truth()
    nominal = dict(tr, distance_m=tr["distance_m"] * 1.01, magnification=1.0, rotation_rad=0.0, shift_x_m=0.0,
                   shift_y_m=0.0, crosstalk_sigma_m=1e-6)
    fits = []
    start = nominal
    for up, k in ((2, 0), (4, 3)):
        geo = geometry_for(_instrument(b), b.camera_shape, pats, upsample=up, pixel_subsamples=k)
        f = fit_parameters(geo, pats, data, lut_phase_rad=b.lut_phase_rad, nominal=nominal,
                           read_noise_e=b.read_noise_e, start=start, refine_iters=iters)
        fits.append(f)
        start = f.values
    tr["intensity_scale"] = b.extra["intensity_scale"]
    return tr, with_model_error(fits[1], fits[0])


@pytest.fixture(scope="module")
def bench_fits():
    torch.set_num_threads(1)
    return [_bench_fit(s) for s in range(10)]


def test_uncertainties_cover_the_truth_on_independent_benches(bench_fits):
    """>= 90 % of the 80 parameters (8 × 10 benches) within 2σ of the truth (issue 18 item 11; for
    Gaussian errors 95 % would be expected, so 90 % leaves room for 3–4 chance misses), while the
    statistical σ alone — what calibrate reported before — covers < 80 % (the crosstalk width and
    the background are biased by the model error by 10–70 σ_stat)."""
    z_tot, z_stat = [], []
    for tr, f in bench_fits:
        for k in KEYS:
            d = f.values[k] - tr[k]
            z_tot.append(abs(d) / f.std[k])
            z_stat.append(abs(d) / f.std_statistical[k])
    z_tot, z_stat = np.array(z_tot), np.array(z_stat)
    assert len(z_tot) == 80
    assert np.mean(z_tot <= 2) >= 0.9, np.round(z_tot, 2)
    assert np.mean(z_stat <= 2) < 0.8, np.round(z_stat, 2)


def test_total_uncertainty_is_not_vacuous(bench_fits):
    """Coverage is cheap with huge error bars; these stay useful. Typical (median over the
    benches): distance and magnification σ < 0.5 %, rotation σ < 0.1°, shifts σ < 0.1 µm, crosstalk
    σ < 40 % of the value; worst bench: distance and magnification σ < 2 % (where the coarse fit
    lands far from the fine one, |θ_fine − θ_coarse| is a loose bound: 1.4 % on one bench)."""
    def med_max(f):
        v = np.array([f(tr, fit) for tr, fit in bench_fits])
        return np.median(v), v.max()

    m, w = med_max(lambda tr, f: f.std["distance_m"] / tr["distance_m"])
    assert m < 0.005 and w < 0.02, (m, w)
    m, w = med_max(lambda tr, f: f.std["magnification"])
    assert m < 0.005 and w < 0.02, (m, w)
    assert med_max(lambda tr, f: f.std["rotation_rad"])[0] < math.radians(0.1)
    assert med_max(lambda tr, f: max(f.std["shift_x_m"], f.std["shift_y_m"]))[0] < 1e-7
    assert med_max(lambda tr, f: f.std["crosstalk_sigma_m"] / tr["crosstalk_sigma_m"])[0] < 0.4
