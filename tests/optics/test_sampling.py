"""optics.sampling: the light and spectrum budget of a CDP detector window, against hand-computed cases."""
import math
import re
import warnings

import pytest
import torch

from optics.errors import SamplingError
from optics.propagation import _asm_kernel, padded_shape
from optics.sampling import REFUSE_BELOW, WARN_BELOW, GeometryWarning, check_geometry, geometry_report

DX, LAM = 8e-6, 633e-9


def _zc(n):
    return n * DX * DX / LAM


def _mean_overlap_1d(a, n, m):
    """Continuous mean over s uniform on [−a, a] (samples) of |[s − n/2, s + n/2] ∩ [−m/2, m/2]| / n."""
    k = 20001
    tot = 0.0
    for i in range(k):
        s = -a + 2 * a * (i + 0.5) / k
        tot += max(0.0, min(s + n / 2, m / 2) - max(s - n / 2, -m / 2)) / n
    return tot / k


def test_light_fraction_at_the_critical_distance_is_nine_sixteenths():
    # paraxial (fresnel-ir keeps the whole band), M = N, z = z_c: the highest sampled angle moves
    # z_c·λ/(2dx) = N·dx/2, so s is uniform on [−N·dx/2, N·dx/2] and ov = 1 − |s|/(N·dx) has mean 3/4
    # per axis. Tolerance 2/P (P = 128 frequency samples): the band is sampled, not integrated.
    n = 64
    r = geometry_report((n, n), pitch_m=DX, wavelength_m=LAM, z_m=_zc(n), method="fresnel-ir")
    assert r.band_fraction == 1.0
    assert r.light_fraction == pytest.approx(9 / 16, abs=2 / 128)
    assert r.critical_distance_m == pytest.approx(_zc(n), rel=1e-12)


@pytest.mark.parametrize("zc_factor,oversampling", [(2.0, 2.0), (0.5, 1.0), (4.0, 1.5)])
def test_light_fraction_matches_the_continuous_integral(zc_factor, oversampling):
    # shift range a = z·λ/(2dx²) samples; 2-D fraction = (1-D mean overlap)², separable. Tolerance
    # 3/P: the discrete frequency grid (P samples) against the continuous uniform shift.
    n = 32
    m = round(oversampling * n)
    z = zc_factor * _zc(n)
    r = geometry_report((n, n), pitch_m=DX, wavelength_m=LAM, z_m=z, method="fresnel-ir", oversampling=oversampling)
    p = padded_shape((m, m), pitch_m=DX, wavelength_m=LAM, z_m=z, method="fresnel-ir")[0]
    expect = _mean_overlap_1d(z * LAM / (2 * DX * DX), n, m) ** 2
    assert r.light_fraction == pytest.approx(expect, abs=3 / p)


@pytest.mark.parametrize("z", [0.05, 0.02, 0.01])
def test_band_fraction_is_the_asm_kernels_band_limit(z):
    # the criterion restated in optics.sampling must pass exactly the frequencies the operator's
    # band-limited ASM kernel keeps (same grid): equal to the sample
    m = 64
    p = padded_shape((m, m), pitch_m=DX, wavelength_m=LAM, z_m=z, method="asm")
    H = _asm_kernel((m, m), p, DX, LAM, z, True, "drop", False, torch.complex128, "cpu")
    r = geometry_report((32, 32), pitch_m=DX, wavelength_m=LAM, z_m=z, method="asm", oversampling=2.0)
    assert r.band_fraction == float((H.abs() > 0).double().mean())


def test_band_fraction_of_the_readme_geometry_by_hand():
    # README's old example: 32² objects, 2× oversampling (M = 64), pad → P = 128, z = 5 cm.
    # Paraxial band limit |f_i| <= D/(λz), D = min(P/2, P − M)·dx = 64·8 µm = 512 µm: f_c = 16.18 /mm
    # of the Nyquist 62.5 /mm, so (2·f_c·dx)² = 0.0670 of the square band. Tolerance: one frequency
    # sample per axis edge (2/P relative per axis) and the non-paraxial cross term (< 1e-3 here).
    r = geometry_report((32, 32), pitch_m=DX, wavelength_m=LAM, z_m=0.05, method="asm", oversampling=2.0)
    d = 64 * DX
    per_axis = 2 * d / (LAM * 0.05) * DX
    assert r.band_fraction == pytest.approx(per_axis ** 2, rel=2 * 2 / 128 + 1e-3)
    assert r.captured_fraction < REFUSE_BELOW
    assert r.z_m / r.critical_distance_m == pytest.approx(0.05 / _zc(32))


@pytest.mark.parametrize("method", ["fraunhofer", "fresnel-1fft"])
def test_far_field_methods_record_everything(method):
    r = geometry_report((32, 32), pitch_m=DX, wavelength_m=LAM, z_m=1.0, method=method, oversampling=2.0)
    assert (r.band_fraction, r.light_fraction) == (1.0, 1.0)


def test_check_geometry_refuses_with_numbers_and_a_fix_that_works():
    kw = dict(pitch_m=DX, wavelength_m=LAM, method="asm", oversampling=2.0)
    with pytest.raises(SamplingError) as e:
        check_geometry((32, 32), z_m=0.05, **kw)
    msg = str(e.value)
    for part in ("z = 0.05 m", "critical distance", "6.65 %", "1.68 %", "optics.z_m <=", "data.size",
                 "optics.oversampling", "optics.pitch_m"):
        assert part in msg, part
    z_ok = float(re.search(r"optics\.z_m <= ([0-9.e+-]+) m", msg).group(1))
    # the suggested distance passes (no warning): the fix in the message is a real fix
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_geometry((32, 32), z_m=z_ok, **kw).captured_fraction >= WARN_BELOW
    # refuse=False turns the refusal into the named warning
    with pytest.warns(GeometryWarning, match="1.68 %"):
        check_geometry((32, 32), z_m=0.05, refuse=False, **kw)


def test_check_geometry_warns_between_the_thresholds():
    kw = dict(pitch_m=DX, wavelength_m=LAM, method="asm", oversampling=2.0)
    r = geometry_report((32, 32), z_m=0.01, **kw)
    assert REFUSE_BELOW <= r.captured_fraction < WARN_BELOW
    with pytest.warns(GeometryWarning, match="records 41.8 %"):
        check_geometry((32, 32), z_m=0.01, **kw)


def test_auto_is_resolved_like_the_operator():
    # 'auto' picks fresnel-ir beyond 2 z_c of the detector window: no band limit, light lost sideways
    r = geometry_report((32, 32), pitch_m=DX, wavelength_m=LAM, z_m=0.05, method="auto", oversampling=2.0)
    assert r.method == "fresnel-ir" and r.band_fraction == 1.0 and r.light_fraction < 0.1
    assert math.isfinite(r.captured_fraction)


def test_unit_free_fft_records_everything_without_a_pitch():
    from optics.sampling import check_geometry, geometry_report
    rep = geometry_report((32, 32), method="fft", oversampling=2.0)
    assert rep.captured_fraction == 1.0 and rep.detector_samples == 64 and rep.critical_distance_m is None
    assert "unit-free" in rep.summary()
    # what `simulate` calls with a config's (unused) physical values: no warning, no error
    assert check_geometry((32, 32), pitch_m=8e-6, wavelength_m=633e-9, z_m=0.1, method="fft").captured_fraction == 1.0
