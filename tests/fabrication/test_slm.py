"""SLM bitmaps: gray levels of known phases, LUTs, wrapping, carrier (grating equation),
placement, resampling, refusals, and verification of good, corrupted and wrongly-LUT'd files."""
import json
import math

import numpy as np
import pytest
import torch

from fabrication.bitmap import read_bitmap
from fabrication.designs import PhaseDesign
from fabrication.errors import FabricationError
from fabrication.slm import SLMOptions, export_slm, read_lut_csv
from fabrication.verify import verify_slm
from optics.errors import LUTError
from optics.propagation import propagate
from optics.slm import PhaseLUT

TWO_PI = 2 * math.pi
KNOWN = [0.0, math.pi / 2, math.pi, TWO_PI - 1e-6]


def _export(design, tmp_path, device_file, name="m.png", device="test-panel", **opt):
    return export_slm(design, device, tmp_path / name, device_file=device_file, options=SLMOptions(**opt))


def _design(values, pitch=8e-6):
    return PhaseDesign(np.asarray(values, dtype=np.float64).reshape(1, -1), pitch, 633e-9)


@pytest.mark.parametrize("bits,justify", [(8, "lsb"), (10, "lsb"), (12, "lsb"), (10, "msb"), (12, "msb")])
def test_known_phases_to_gray_linear_lut(tmp_path, device_file, bits, justify):
    n = 2 ** bits
    res = _export(_design(KNOWN), tmp_path, device_file, device="test-panel-12", bit_depth=bits, justify=justify)
    raw = read_bitmap(res.path)
    top, left = res.sidecar["placement"]["top_px"], res.sidecar["placement"]["left_px"]
    shift = 16 - bits if (bits > 8 and justify == "msb") else 0
    got = raw[top, left:left + 4].astype(int) >> shift
    # g = round(φ N / 2π) mod N: 0, N/4, N/2 and 2π − ε wraps to 0
    assert got.tolist() == [0, n // 4, n // 2, 0]
    assert raw.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert res.sidecar["justify"] == (justify if bits > 8 else "none")
    if bits > 8 and justify == "lsb":
        assert raw.max() < n  # LSB-justified: the sample is the level


@pytest.mark.parametrize("bits", [8, 10, 12])
def test_known_phases_through_tabulated_lut_invert_by_interpolation(tmp_path, device_file, bits):
    # measured curve: 0 rad at gray 0, 1.2π at gray N/2, 2π(N−1)/N at gray N−1 (piecewise linear between)
    n = 2 ** bits
    csv = tmp_path / "lut.csv"
    csv.write_text("gray,phase_rad\n0,0\n%d,%r\n%d,%r\n" % (n // 2, 1.2 * math.pi, n - 1, TWO_PI * (n - 1) / n))
    lut = read_lut_csv(csv, bit_depth=bits)
    res = _export(_design(KNOWN + [1.6 * math.pi]), tmp_path, device_file, device="test-panel-12", bit_depth=bits,
                  lut=lut, lut_source=str(csv))
    top, left = res.sidecar["placement"]["top_px"], res.sidecar["placement"]["left_px"]
    got = read_bitmap(res.path)[top, left:left + 5].astype(int)
    # inverse of the interpolated curve on each linear segment (levels equispaced there → rounding)
    slope1 = 1.2 * math.pi / (n // 2)
    slope2 = (TWO_PI * (n - 1) / n - 1.2 * math.pi) / (n - 1 - n // 2)
    g_half = round((math.pi / 2) / slope1)
    g_pi = round(math.pi / slope1)
    g_16 = n // 2 + round((1.6 * math.pi - 1.2 * math.pi) / slope2)
    assert got.tolist() == [0, g_half, g_pi, 0, g_16]
    assert res.sidecar["lut"]["source"] == str(csv) and len(res.sidecar["lut"]["levels_rad"]) == n


def test_wrapping_any_multiple_of_2pi_gives_the_same_gray(tmp_path, device_file):
    base = np.array([0.3, 1.7, 4.0, 6.0])
    a = _export(_design(base), tmp_path, device_file, name="a.png").gray
    b = _export(_design(base + TWO_PI * np.array([3, -2, 1, -7])), tmp_path, device_file, name="b.png").gray
    np.testing.assert_array_equal(a, b)


def test_carrier_first_order_lands_where_the_grating_equation_says(tmp_path, device_file):
    """A flat design with a carrier of period (−16, 8) pixels: in the Fraunhofer plane the first
    order sits at x = λz/Λx (+ side) and y = −λz/|Λy|, i.e. N/8 columns right, N/16 rows up."""
    dev_yaml = device_file.read_text() + """
sq-panel:
  name: square panel
  width_px: 64
  height_px: 64
  pixel_pitch_m: 8.0e-6
  bit_depth: 12
  phase_range_rad: 6.283185307179586
  file_format: png16
  source: unit test
"""
    device_file.write_text(dev_yaml)
    d = PhaseDesign(np.zeros((64, 64)), 8e-6, 633e-9)
    res = _export(d, tmp_path, device_file, device="sq-panel", carrier_period_px=(-16.0, 8.0))
    lut = PhaseLUT.linear(12)
    phase = lut.gray_to_phase(torch.from_numpy(read_bitmap(res.path).astype(np.int64)))
    z, lam, p = 0.2, 633e-9, 8e-6
    out = propagate(torch.polar(torch.ones_like(phase), phase), pitch_m=p, wavelength_m=lam, z_m=z,
                    method="fraunhofer")
    inten = out.field.abs() ** 2
    r, c = np.unravel_index(int(torch.argmax(inten)), inten.shape)
    pitch_out = lam * z / (64 * p)
    assert (c - 32) * pitch_out == pytest.approx(lam * z / (8 * p), rel=1e-9)
    assert (r - 32) * pitch_out == pytest.approx(-lam * z / (16 * p), rel=1e-9)
    assert float(inten.max() / inten.sum()) > 0.99  # 12-bit blazed carrier: almost all light in that order
    assert res.sidecar["carrier"]["period_px"] == [-16.0, 8.0]


def test_placement_offset_fill_and_integer_resampling(tmp_path, device_file):
    ph = np.array([[0.0, math.pi], [math.pi / 2, 0.0]])
    d = PhaseDesign(ph, 16e-6, 633e-9)  # 2 × the panel pitch: each design pixel → 2 × 2 SLM pixels
    res = _export(d, tmp_path, device_file, offset_px=(3, -5), fill_phase_rad=math.pi)
    g = res.gray
    top, left = 48 // 2 - 2 + 3, 64 // 2 - 2 - 5
    assert (res.sidecar["placement"]["top_px"], res.sidecar["placement"]["left_px"]) == (top, left)
    np.testing.assert_array_equal(g[top:top + 4, left:left + 4],
                                  [[0, 0, 128, 128], [0, 0, 128, 128], [64, 64, 0, 0], [64, 64, 0, 0]])
    outside = np.ones_like(g, dtype=bool)
    outside[top:top + 4, left:left + 4] = False
    assert np.all(g[outside] == 128)  # fill phase π


def test_sign_switch_negates_the_displayed_phase(tmp_path, device_file):
    res = _export(_design([math.pi / 2]), tmp_path, device_file, sign=-1)
    t, l = res.sidecar["placement"]["top_px"], res.sidecar["placement"]["left_px"]
    assert int(res.gray[t, l]) == 192  # −π/2 ≡ 3π/2 → 3·256/4


def test_refusals_name_the_fix(tmp_path, device_file):
    with pytest.raises(FabricationError, match="--resample"):
        _export(PhaseDesign(np.zeros((4, 4)), 12e-6, 633e-9), tmp_path, device_file)
    res = _export(PhaseDesign(np.zeros((4, 4)), 12e-6, 633e-9), tmp_path, device_file, resample="nearest")
    assert res.sidecar["resampling"]["shape_on_slm_px"] == [6, 6]
    with pytest.raises(FabricationError, match="larger panel"):
        _export(PhaseDesign(np.zeros((50, 10)), 8e-6, 633e-9), tmp_path, device_file, name="big.png")
    with pytest.raises(FabricationError, match="exist"):
        _export(PhaseDesign(np.zeros((4, 4)), 12e-6, 633e-9), tmp_path, device_file, resample="nearest")
    with pytest.raises(FabricationError, match="unknown SLM device 'nope'.*--device-file"):
        _export(_design([0.0]), tmp_path, device_file, name="x.png", device="nope")
    with pytest.raises(FabricationError, match="under 2 pixels"):
        _export(_design([0.0]), tmp_path, device_file, name="c.png", carrier_period_px=(0, 1.5))
    with pytest.raises(FabricationError, match="BMP holds 8-bit"):
        _export(_design([0.0]), tmp_path, device_file, name="c.bmp", device="test-panel-12")
    bad = tmp_path / "bad.csv"
    bad.write_text("gray,phase_rad\n0,0\n100,3\n200,2\n255,6\n")
    with pytest.raises(LUTError, match="not strictly increasing.*unwrap"):
        read_lut_csv(bad, bit_depth=8)
    short = tmp_path / "short.csv"
    short.write_text("gray,phase_rad\n0,0\n")
    with pytest.raises(FabricationError, match="at least the two end gray levels"):
        read_lut_csv(short, bit_depth=8)
    gap = tmp_path / "gap.csv"
    gap.write_text("gray,phase_rad\n0,0\n200,5\n")
    with pytest.raises(LUTError, match="0 … 255"):
        read_lut_csv(gap, bit_depth=8)


def test_verification_passes_for_a_good_export(tmp_path, device_file, lens_design):
    res = _export(lens_design, tmp_path, device_file, carrier_period_px=(0, 6.0))
    r = verify_slm(res.path, lens_design)
    assert r.passed and r.mismatched_pixels == 0 and not r.causes
    # 8-bit linear LUT: the error is the rounding to 2π/256 steps
    assert r.phase_max_rad <= math.pi / 256 + 1e-9
    assert r.phase_rms_rad == pytest.approx(TWO_PI / 256 / math.sqrt(12), rel=0.2)
    assert r.cdp_rel_diff < 0.02


@pytest.mark.parametrize("suffix", [".bmp", ".png"])
def test_verification_fails_for_one_flipped_byte(tmp_path, device_file, lens_design, suffix):
    res = _export(lens_design, tmp_path, device_file, name="m" + suffix)
    data = bytearray(res.path.read_bytes())
    if suffix == ".bmp":
        offset = int.from_bytes(data[10:14], "little")  # start of the pixel array
        row = 48 - 1 - (res.sidecar["placement"]["top_px"] + 5)  # BMP rows are stored bottom-up
        i = offset + row * 64 + res.sidecar["placement"]["left_px"] + 7
    else:
        i = data.index(b"IDAT") + 40  # a byte inside the compressed pixel data
    data[i] ^= 0x40
    res.path.write_bytes(bytes(data))
    r = verify_slm(res.path, lens_design)
    assert not r.passed
    assert any("modified or corrupted" in c for c in r.causes)


def test_verification_names_a_different_design(tmp_path, device_file, lens_design):
    res = _export(lens_design, tmp_path, device_file)
    other = PhaseDesign(lens_design.phase_rad + 0.5, 8e-6, 633e-9)
    r = verify_slm(res.path, other)
    assert not r.passed and any("design differs from the exported one" in c for c in r.causes)


def test_verification_fails_for_a_wrong_lut(tmp_path, device_file, lens_design):
    res = _export(lens_design, tmp_path, device_file)
    r = verify_slm(res.path, lens_design, lut=PhaseLUT.linear(8, 1.8 * math.pi))
    assert not r.passed and any("LUT differs" in c for c in r.causes)
    assert r.phase_max_rad > 0.3


def test_lut_range_too_small_after_wavelength_scaling(tmp_path, device_file, lens_design):
    # a panel calibrated to 2π at 532 nm reaches only 2π·532/633 at the design's 633 nm: the export
    # refuses it (issue 18 item 4) …
    with pytest.raises(FabricationError, match="cannot reach the design's phases.*--rms-tol-rad"):
        _export(lens_design, tmp_path, device_file, lut_wavelength_m=532e-9)
    assert not list(tmp_path.glob("m.png*"))  # nothing written
    # … unless the error is accepted; verification then names the cause
    res = _export(lens_design, tmp_path, device_file, lut_wavelength_m=532e-9, lut_rms_tol_rad=1.0)
    assert res.sidecar["lut"]["scale_to_design_wavelength"] == pytest.approx(532 / 633)
    assert res.sidecar["lut"]["range_check"]["limit_rad"] == 1.0
    r = verify_slm(res.path, lens_design)
    assert not r.passed and r.mismatched_pixels == 0
    assert any("LUT range too small" in c for c in r.causes)
    # at a shorter wavelength than the calibration the LUT spans more than 2π and wraps
    res = _export(PhaseDesign(lens_design.phase_rad, 8e-6, 532e-9), tmp_path, device_file, name="ok.png",
                  lut_wavelength_m=633e-9)
    assert verify_slm(res.path, PhaseDesign(lens_design.phase_rad, 8e-6, 532e-9)).passed


def test_sidecar_records_every_parameter(tmp_path, device_file, lens_design):
    res = _export(lens_design, tmp_path, device_file, carrier_period_px=(0, 4.0), sign=-1)
    s = json.loads(res.sidecar_path.read_text())
    assert s["device"]["key"] == "test-panel" and s["sign"] == -1 and s["options"]["carrier_period_px"] == [0, 4.0]
    assert len(s["pixel_data"]["sha256"]) == 64 and len(s["lut"]["sha256"]) == 64
    assert s["design"]["pixel_pitch_m"] == 8e-6 and s["resampling"]["mode"] == "exact"
    rc = s["lut"]["range_check"]  # a 2π LUT wraps: nothing unreachable, the error is the rounding
    assert rc["lut_wraps"] and rc["unreachable_pixels"] == 0 and rc["gap_rad"] is None
    assert rc["max_error_rad"] <= math.pi / 256 + 1e-9


def test_verification_names_a_carrier_mismatch_and_aliasing(tmp_path, device_file, lens_design):
    res = _export(lens_design, tmp_path, device_file, carrier_period_px=(0, 8.0))
    side = json.loads(res.sidecar_path.read_text())
    side["options"]["carrier_period_px"] = [0, 16.0]  # the file carries period 8, the record says 16
    res.sidecar_path.write_text(json.dumps(side))
    r = verify_slm(res.path, lens_design)
    assert not r.passed and any("carrier mismatch" in c and "0.0625" in c for c in r.causes)
    side["options"]["carrier_period_px"] = [0, 1.5]
    res.sidecar_path.write_text(json.dumps(side))
    r = verify_slm(res.path, lens_design)
    assert not r.passed and any("carrier aliasing" in c for c in r.causes)


def test_non_integer_resampling_is_verified_at_the_design_pixel_centres(tmp_path, device_file, lens_design):
    d = PhaseDesign(lens_design.phase_rad, 12e-6, 633e-9)  # 1.5 panel pixels per design pixel
    res = _export(d, tmp_path, device_file, name="n.png", resample="nearest")
    assert res.sidecar["resampling"]["shape_on_slm_px"] == [36, 48]
    assert verify_slm(res.path, d).passed  # each design centre falls in a panel pixel that took its value
    res = _export(d, tmp_path, device_file, name="l.png", resample="linear")
    r = verify_slm(res.path, d)  # interpolation smooths the phase: beyond the quantisation limit, named
    assert not r.passed and r.mismatched_pixels == 0 and any(c.startswith("resampling") for c in r.causes)


def _lut_csv(path, top_rad, n=256):
    """A linear measured LUT from 0 at gray 0 to ``top_rad`` at gray n − 1."""
    path.write_text("gray,phase_rad\n0,0\n%d,%r\n" % (n - 1, top_rad))
    return path


def test_a_lut_reaching_only_pi_is_refused_without_verify(tmp_path, device_file, lens_design):
    """Issue 18 item 4: `export slm --lut` with a LUT up to π wrote a wrong bitmap with exit 0
    unless --verify was on. The lens design's phases (mod 2π) fill the circle, so about half of them
    lie in the LUT's gap (π, 2π): refused, exit 2, nothing written. The same LUT shows a design
    inside its range, [0, 0.9π], to within its quantisation (verification passes), so the check
    is about reach, not about the LUT being short."""
    from phaseforge.cli import main

    lut = _lut_csv(tmp_path / "pi.csv", math.pi)
    np.save(tmp_path / "lens.npy", lens_design.phase_rad)
    args = ["export", "slm", str(tmp_path / "lens.npy"), "--pitch-m", "8e-6", "--wavelength-m", "633e-9",
            "--device", "test-panel", "--device-file", str(device_file), "--lut", str(lut)]
    assert main(args + ["--out", str(tmp_path / "lens.png")]) == 2
    assert not (tmp_path / "lens.png").exists() and not (tmp_path / "lens.png.json").exists()
    inside = PhaseDesign(0.9 * math.pi * (np.mod(lens_design.phase_rad, TWO_PI) / TWO_PI), 8e-6, 633e-9)
    res = _export(inside, tmp_path, device_file, name="in.png", lut=read_lut_csv(lut, bit_depth=8))
    rc = res.sidecar["lut"]["range_check"]
    assert rc["unreachable_pixels"] == 0
    assert rc["max_error_rad"] <= math.pi / 255 / 2 + 1e-12  # half a LUT step: quantisation only
    assert verify_slm(res.path, inside).passed


def test_a_lut_slightly_short_of_2pi_still_exports(tmp_path, device_file, lens_design):
    """A 2π LUT calibrated at 633 nm used at 640 nm spans 2π·(255/256)·633/640: a 0.09 rad gap.
    The phases falling there go to the nearer end level (error ≤ 0.047 rad); the RMS stays under
    the default limit 1.5·(2π/256)/√12 + 0.005 = 0.0156 rad, so the export goes ahead and
    records the numbers; verification agrees."""
    d = PhaseDesign(lens_design.phase_rad, 8e-6, 640e-9)
    res = _export(d, tmp_path, device_file, lut_wavelength_m=633e-9)
    rc = res.sidecar["lut"]["range_check"]
    assert rc["unreachable_pixels"] > 0 and rc["max_error_rad"] < 0.05
    assert rc["rms_error_rad"] < rc["limit_rad"] == pytest.approx(1.5 * TWO_PI / 256 / math.sqrt(12) + 0.005)
    assert verify_slm(res.path, d).passed


def test_odd_sized_design_centre_and_carrier_origin_on_panel_centre(tmp_path, device_file):
    """Issue 18 item 9: a 101 × 151 design on a 128 × 192 panel. Its centre pixel (50, 75) must
    land on panel pixel (H//2, W//2) = (64, 96), the carrier's origin, as the sidecar says (the
    old (H − h)//2 placement put it at (63, 95)). Checked on the pixels themselves: a design that
    is 0 except π/2 at its centre, and, with a carrier of period 8 along x, the displayed phase at
    the panel centre equals the design's centre phase (the carrier is 0 there)."""
    ph = np.zeros((101, 151))
    ph[50, 75] = math.pi / 2
    d = PhaseDesign(ph, 8e-6, 633e-9)
    res = _export(d, tmp_path, device_file, device="big-panel")
    assert np.argwhere(res.gray == 64).tolist() == [[64, 96]]  # π/2 → gray 64 of 256, only there
    assert (res.sidecar["placement"]["top_px"], res.sidecar["placement"]["left_px"]) == (64 - 50, 96 - 75)
    res = _export(d, tmp_path, device_file, name="c.png", device="big-panel", carrier_period_px=(0, 8.0))
    shown = PhaseLUT.linear(8).gray_to_phase(torch.from_numpy(res.gray.astype(np.int64))).numpy()
    assert shown[64, 96] == pytest.approx(math.pi / 2, abs=1e-12)  # carrier 0 at the design centre
    # every design pixel: shown − carrier(i, j) = design phase, to the 8-bit rounding (π/256)
    j = np.arange(192)[None, :] - 96
    err = np.angle(np.exp(1j * (shown - TWO_PI * j / 8.0)))[14:14 + 101, 21:21 + 151] - ph
    assert np.abs(np.angle(np.exp(1j * err))).max() <= math.pi / 256 + 1e-9
    # an even-sized block sits the same way: 2 × 2 design pixels → 4 × 4, block pixel (2, 2) on (64, 96)
    r2 = _export(PhaseDesign(np.zeros((2, 2)), 16e-6, 633e-9), tmp_path, device_file, name="e.png", device="big-panel")
    assert (r2.sidecar["placement"]["top_px"], r2.sidecar["placement"]["left_px"]) == (62, 94)


def test_verification_names_a_placement_the_convention_does_not_give(tmp_path, device_file):
    """A sidecar whose placement is not the centring convention's (an export made before the odd-size
    fix, which put the block one pixel up-left) is named, with the fix."""
    d = PhaseDesign(np.random.default_rng(0).uniform(0, TWO_PI, (5, 7)), 8e-6, 633e-9)
    res = _export(d, tmp_path, device_file)
    side = json.loads(res.sidecar_path.read_text())
    side["placement"]["top_px"] -= 1
    side["placement"]["left_px"] -= 1
    res.sidecar_path.write_text(json.dumps(side))
    r = verify_slm(res.path, d)
    assert not r.passed and any(c.startswith("placement differs") and "export the design again" in c
                                for c in r.causes)


# ---------------------------------------------------------------------------------------------
# values and messages of each step (mutation testing, issue 20)
# ---------------------------------------------------------------------------------------------
def test_read_lut_table_errors_and_bit_depth(tmp_path):
    from fabrication.slm import read_lut_table

    missing = tmp_path / "none.csv"
    with pytest.raises(FabricationError, match=rf"^LUT file {missing} does not exist$"):
        read_lut_table(missing)
    short = tmp_path / "short.csv"
    short.write_text("gray,phase_rad\n0,0\n")
    with pytest.raises(FabricationError) as e:  # the reader's LUTError, as the package's own error
        read_lut_table(short)
    assert not isinstance(e.value, LUTError) and e.value.__cause__ is None and e.value.__suppress_context__
    csv = tmp_path / "lut.csv"
    csv.write_text("gray,phase_rad\n0,0\n255,6\n")
    assert read_lut_csv(csv, bit_depth=8).levels_rad[255] == 6.0
    with pytest.raises(LUTError, match="covers gray levels 0 … 255 but a 10-bit SLM has 0 … 1023"):
        read_lut_csv(csv, bit_depth=10)  # the given bit depth is used, not the one the table implies


def test_effective_lut_scales_by_the_wavelength_ratio():
    from fabrication.slm import effective_lut

    lut = PhaseLUT.linear(8)
    assert effective_lut(lut, lut_wavelength_m=633e-9, wavelength_m=633e-9) is lut
    eff = effective_lut(lut, lut_wavelength_m=532e-9, wavelength_m=633e-9)
    assert torch.allclose(eff.levels_rad, lut.levels_rad * (532 / 633), rtol=1e-15, atol=0)
    near = effective_lut(lut, lut_wavelength_m=633e-9 * (1 + 1e-10), wavelength_m=633e-9)
    assert near is not lut and float(near.levels_rad[1] / lut.levels_rad[1]) == pytest.approx(1 + 1e-10, rel=1e-14)


def test_resample_exact_values_and_messages():
    from fabrication.slm import resample_phase

    ph = np.array([[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_array_equal(resample_phase(ph, 2.0, "exact"), np.kron(ph, np.ones((2, 2))))
    np.testing.assert_array_equal(resample_phase(ph, 3.0 * (1 + 5e-7), "exact"), np.kron(ph, np.ones((3, 3))))
    same = resample_phase(ph, 1.0, "exact")
    assert same is not ph and np.array_equal(same, ph)  # a copy: the caller may change it
    with pytest.raises(FabricationError, match=r"^resample must be one of \('exact', 'nearest', 'linear'\), "
                                               r"got 'cubic'$"):
        resample_phase(ph, 2.0, "cubic")
    msg = (r"^design pitch / SLM pitch = 1.5 is not an integer, so the design cannot be shown exactly; pass "
           r"--resample nearest\|linear \(resample='nearest'/'linear'\) to interpolate, or design on a pitch that "
           r"is an integer multiple of the SLM pitch$")
    with pytest.raises(FabricationError, match=msg):
        resample_phase(ph, 1.5, "exact")
    for r in (0.4, 2.0 * (1 + 3e-6)):  # rounds to 0; 3e-6 relative off an integer
        with pytest.raises(FabricationError, match="is not an integer"):
            resample_phase(ph, r, "exact")


def test_resample_nearest_picks_the_design_pixel_under_each_centre():
    from fabrication.slm import resample_phase

    ph = np.arange(16, dtype=np.float64).reshape(4, 4) * 0.1
    # ratio 1.5: 6 × 6, centres at (j + ½)/1.5 − ½ = −⅙, ½, 7⁄6, 11⁄6, 5⁄2, 19⁄6 → rows 0, 1, 1, 2, 3, 3
    # (½ and 5⁄2 round up)
    idx = [0, 1, 1, 2, 3, 3]
    np.testing.assert_array_equal(resample_phase(ph, 1.5, "nearest"), ph[np.ix_(idx, idx)])
    # ratio ½: centres 0.5, 2.5 → rows 1, 3
    np.testing.assert_array_equal(resample_phase(ph, 0.5, "nearest"), ph[np.ix_([1, 3], [1, 3])])
    # a single row at ratio 0.4 keeps one row (at least 1 pixel); shape_out overrides the size
    assert resample_phase(ph[:1], 0.4, "nearest").shape == (1, 2)
    np.testing.assert_array_equal(resample_phase(ph[:1, :1], 0.4, "nearest"), ph[:1, :1])  # centre 1.25 → pixel 0
    np.testing.assert_array_equal(resample_phase(ph, 1.5, "nearest", shape_out=(2, 3)), ph[np.ix_([0, 1], [0, 1, 1])])


def _bilinear(ph, y, x):
    """Bilinear interpolation of e^{iφ} at one point by hand (inside the grid)."""
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    ty, tx = y - y0, x - x0
    u = np.exp(1j * ph)
    v = (u[y0, x0] * (1 - ty) * (1 - tx) + u[y0, x0 + 1] * (1 - ty) * tx
         + u[y0 + 1, x0] * ty * (1 - tx) + u[y0 + 1, x0 + 1] * ty * tx)
    return np.angle(v)


def test_resample_linear_interpolates_the_complex_field():
    from fabrication.slm import resample_phase

    ph = np.array([[0.0, 0.4, 1.0], [0.2, 1.5, -2.0], [0.7, -0.3, 2.5]])
    out = resample_phase(ph, 2.0, "linear")  # 6 × 6, centres at (j + ½)/2 − ½ = −¼, ¼, ¾, …, 2¼
    assert out.shape == (6, 6)
    # inside: bilinear between the four neighbours
    for i, j in ((1, 1), (1, 2), (2, 3), (2, 4), (1, 4), (3, 1), (4, 2), (3, 4)):
        y, x = (i + 0.5) / 2 - 0.5, (j + 0.5) / 2 - 0.5
        assert out[i, j] == pytest.approx(_bilinear(ph, y, x), abs=1e-14), (i, j)
    # outside the centres the position is clamped to the edge pixels: corners are the corner values
    assert out[0, 0] == pytest.approx(0.0, abs=1e-15) and out[-1, -1] == pytest.approx(2.5, abs=1e-15)
    assert out[0, -1] == pytest.approx(1.0, abs=1e-15) and out[-1, 0] == pytest.approx(0.7, abs=1e-15)
    # across a wrap the field, not the phase, is interpolated: midway between π − 0.1 and −π + 0.1 is π, not 0
    w = resample_phase(np.array([[math.pi - 0.1, -math.pi + 0.1]]), 2.0, "linear")
    assert abs(w[0, 1]) == pytest.approx(math.pi - 0.05, abs=1e-3) and abs(w[0, 1]) > 3.0
    # a single row: the row index stays 0 (no neighbour below)
    row = resample_phase(np.array([[0.0, 1.0]]), 2.0, "linear")
    assert row.shape == (2, 4) and row[1, 2] == pytest.approx(_bilinear(np.array([[0.0, 1.0], [0.0, 1.0]]), 0, 0.75),
                                                              abs=1e-14)


def test_sample_at_design_centres_inverts_the_resampling():
    from fabrication.slm import resample_phase, sample_at_design_centres

    rng = np.random.default_rng(1)
    d = rng.uniform(-3.0, 3.0, (3, 4))
    slm = resample_phase(d, 3.0, "exact")
    for mode in ("linear", "nearest", "exact"):  # centres inside constant 3 × 3 blocks
        np.testing.assert_allclose(sample_at_design_centres(slm, 3.0, (3, 4), mode), d, rtol=0, atol=1e-14)
    # ratio 1.5, design 2 × 2 on a 3 × 3 panel area: centres at 0.25 and 1.75 panel pixels
    p = np.arange(9, dtype=np.float64).reshape(3, 3) * 0.2
    np.testing.assert_array_equal(sample_at_design_centres(p, 1.5, (2, 2), "nearest"), p[np.ix_([0, 2], [0, 2])])
    got = sample_at_design_centres(p, 1.5, (2, 2))  # default: bilinear
    assert got[0, 1] == pytest.approx(_bilinear(p, 0.25, 1.75), abs=1e-14)


def test_carrier_phase_values():
    from fabrication.slm import carrier_phase

    c = carrier_phase((4, 6), (0, 4.0))
    want = TWO_PI * (np.arange(6) - 3)[None, :] / 4.0 + np.zeros((4, 1))
    np.testing.assert_allclose(c, want, rtol=0, atol=1e-15)
    c = carrier_phase((5, 2), (-8.0, 0.0))
    np.testing.assert_allclose(c, TWO_PI * (np.arange(5) - 2)[:, None] / -8.0 + np.zeros((1, 2)), rtol=0, atol=1e-15)
    c = carrier_phase((3, 5), (0, 4.0))  # odd width: origin at column 5//2 = 2
    np.testing.assert_allclose(c[0], TWO_PI * (np.arange(5) - 2) / 4.0, rtol=0, atol=1e-15)
    c = carrier_phase((4, 6), (8.0, 4.0))
    assert c[2, 3] == 0.0 and c[3, 4] == pytest.approx(TWO_PI * (1 / 8 + 1 / 4), abs=1e-15)


def test_carrier_checks(tmp_path, device_file):
    from fabrication.slm import _check_carrier

    with pytest.raises(FabricationError, match=r"^carrier_period_px must be \(period_y, period_x\) in SLM pixels, "
                                               r"got \(4.0,\)$"):
        _check_carrier((4.0,))
    with pytest.raises(FabricationError, match=r"^carrier period along x is inf; use 0 for no carrier$"):
        _check_carrier((0, float("inf")))
    with pytest.raises(FabricationError, match=r"^carrier period along y is nan"):
        _check_carrier((float("nan"), 0))
    for p in (1.5, -1.5):
        with pytest.raises(FabricationError, match=rf"^carrier period along y = {p:g} SLM pixels is under 2 pixels: "
                                                   rf"the grating aliases \(its first order lands at the alias "
                                                   rf"frequency 1/{p:g} − 1 cycles/pixel\); use \|period\| >= 2$"):
            _check_carrier((p, 0))
    assert _check_carrier([2, -2.0]) == (2.0, -2.0)  # a 2-pixel period is allowed (Nyquist)
    assert _check_carrier((0, 0)) == (0.0, 0.0)


def test_map_to_panel_refusals(tmp_path, device_file):
    from fabrication.devices import get_device
    from fabrication.slm import map_to_panel

    dev = get_device("test-panel", device_file)  # 48 × 64
    d = _design([0.0, 1.0, 2.0, 3.0])
    for s in (0, 2):
        with pytest.raises(FabricationError, match=rf"^sign must be \+1 or -1, got {s}$"):
            map_to_panel(d, dev, SLMOptions(sign=s), 8)
    with pytest.raises(FabricationError, match=r"^the LUT has 4-bit levels but the export is 8-bit; give a LUT for "
                                               r"8 bits or set --bit-depth 4$"):
        map_to_panel(d, dev, SLMOptions(lut=PhaseLUT.linear(4)), 8)
    with pytest.raises(FabricationError, match=r"^the design is 2 x 70 SLM pixels at the panel pitch \(1 x 35 design "
                                               r"pixels × 2\) but test panel 64 x 48 has 48 x 64; crop the design, "
                                               r"design on a coarser grid or choose a larger panel$"):
        map_to_panel(PhaseDesign(np.zeros((1, 35)), 16e-6, 633e-9), dev, SLMOptions(), 8)
    for shape in ((49, 1), (1, 65)):  # one row or column more than the panel …
        with pytest.raises(FabricationError, match=rf"^the design is {shape[0]} x {shape[1]} SLM pixels"):
            map_to_panel(PhaseDesign(np.zeros(shape), 8e-6, 633e-9), dev, SLMOptions(), 8)
    m = map_to_panel(PhaseDesign(np.zeros((48, 64)), 8e-6, 633e-9), dev, SLMOptions(), 8)  # … the panel fits
    assert (m.top, m.left) == (0, 0)
    with pytest.raises(FabricationError, match=r"^offset_px \(0, 31\) moves the 1 x 4 design off the 48 x 64 panel "
                                               r"\(top-left would be row 24, column 61\); use a smaller offset$"):
        map_to_panel(d, dev, SLMOptions(offset_px=(0, 31)), 8)
    for off in ((-25, 0), (0, -31), (24, 0)):
        with pytest.raises(FabricationError, match="moves the 1 x 4 design off"):
            map_to_panel(d, dev, SLMOptions(offset_px=off), 8)
    # the extreme offsets that keep the block on the panel: top-left (0, 0) and bottom-right (47, 63)
    for off, tl in (((-24, -30), (0, 0)), ((23, 30), (47, 60))):
        m = map_to_panel(d, dev, SLMOptions(offset_px=off), 8)
        assert (m.top, m.left) == tl and m.offset == off


def test_map_to_panel_values_and_read_back(tmp_path, device_file):
    from fabrication.devices import get_device
    from fabrication.slm import carrier_phase, map_to_panel

    device_file.write_text(device_file.read_text() + """
cal-panel:
  name: panel calibrated at 532 nm
  width_px: 16
  height_px: 8
  pixel_pitch_m: 8.0e-6
  bit_depth: 8
  phase_range_rad: 6.283185307179586
  file_format: png8
  calibration_wavelength_m: 5.32e-7
  source: unit test
""")
    cal = get_device("cal-panel", device_file)
    d = PhaseDesign(np.array([[0.5, 1.0], [2.0, 3.0]]), 8e-6, 5.32e-7)
    m = map_to_panel(d, cal, SLMOptions(fill_phase_rad=math.pi / 2), 8)
    assert m.lut_wavelength_m == 5.32e-7 and m.lut_eff is m.lut  # the device's calibration wavelength
    assert m.fill_gray == 64 and (m.top, m.left, m.shape_on_slm, m.ratio) == (3, 7, (2, 2), 1.0)
    np.testing.assert_array_equal(m.gray[3:5, 7:9], np.round(d.phase_rad * 256 / TWO_PI).astype(int))
    assert int((m.gray == 64).sum()) == 8 * 16 - 4
    # an explicit LUT wavelength wins over the device's; the design's is the last resort
    m2 = map_to_panel(d, cal, SLMOptions(lut_wavelength_m=633e-9), 8)
    assert m2.lut_wavelength_m == 633e-9
    assert float(m2.lut_eff.levels_rad[1]) == pytest.approx(TWO_PI / 256 * 633 / 532, rel=1e-14)
    plain = get_device("test-panel", device_file)
    assert map_to_panel(d, plain, SLMOptions(), 8).lut_wavelength_m == 5.32e-7
    # a design for 633 nm on the panel calibrated at 532 nm: the LUT's phases shrink by 532/633
    d633 = PhaseDesign(d.phase_rad, 8e-6, 633e-9)
    m4 = map_to_panel(d633, cal, SLMOptions(), 8)
    assert m4.lut_wavelength_m == 5.32e-7 and not m4.lut_eff.wraps
    assert float(m4.lut_eff.levels_rad[1]) == pytest.approx(TWO_PI / 256 * 532 / 633, rel=1e-14)
    assert map_to_panel(d633, plain, SLMOptions(), 8).lut_wavelength_m == 633e-9  # no calibration: the design's
    # sign, carrier, target and the read-back to the design grid
    opt = SLMOptions(sign=-1, carrier_period_px=(0, 4.0), resample="nearest")
    m3 = map_to_panel(d, cal, opt, 8)
    car = carrier_phase((8, 16), (0.0, 4.0))[3:5, 7:9]
    np.testing.assert_allclose(m3.target_rad, -d.phase_rad + car, rtol=0, atol=1e-15)
    assert m3.resample == "nearest" and m3.period == (0.0, 4.0)
    back = m3.phase_on_design_grid(m3.gray, d.shape, sign=-1)
    err = np.angle(np.exp(1j * (back - d.phase_rad)))
    assert np.abs(err).max() <= math.pi / 256 + 1e-12  # half a level of the 8-bit LUT
    # read back through another LUT: a π-shifted table is off by π everywhere
    shifted = PhaseLUT(m3.lut_eff.levels_rad + math.pi)
    back = m3.phase_on_design_grid(m3.gray, d.shape, sign=-1, lut_eff=shifted)
    np.testing.assert_allclose(np.abs(np.angle(np.exp(1j * (back - d.phase_rad)))), math.pi, atol=math.pi / 256 + 1e-12)


def test_default_rms_limit_values():
    from fabrication.slm import default_rms_limit_rad

    assert default_rms_limit_rad(256) == pytest.approx(1.5 * (TWO_PI / 256) / math.sqrt(12) + 0.005, rel=1e-15)
    assert default_rms_limit_rad(4) == pytest.approx(1.5 * (math.pi / 2) / math.sqrt(12) + 0.005, rel=1e-15)
    assert default_rms_limit_rad(0) == 0.005


def test_lut_range_error_counts_the_gap(tmp_path, device_file):
    """A LUT over [0, π] (8 bits, step π/255): targets past half a step beyond either end are in
    its gap; the nearer end level shows them."""
    from fabrication.devices import get_device
    from fabrication.slm import lut_range_error, map_to_panel

    dev = get_device("test-panel", device_file)
    lut = PhaseLUT.linear(8, math.pi)
    step = math.pi / 255
    half = step / 2
    t = [0.5, 4.0, 5.0, math.pi + 0.6 * half, TWO_PI - 0.6 * half, math.pi + 1.4 * half, -0.1]
    m = map_to_panel(_design(t), dev, SLMOptions(lut=lut), 8)
    r = lut_range_error(m)
    # shown levels: round(0.5/step)·step; π; 0 (≡ 2π); π; 0; π; 2π − 0.1 is in the gap (nearer to 0 → 0)
    shown = np.array([round(0.5 / step) * step, math.pi, 0.0, math.pi, 0.0, math.pi, 0.0])
    err = np.angle(np.exp(1j * (shown - np.array(t))))
    assert r["unreachable_pixels"] == 4 and r["pixels"] == 7  # 4.0, 5.0, π + 1.4·half, 2π − 0.1
    assert r["rms_error_rad"] == pytest.approx(float(np.sqrt(np.mean(err ** 2))), rel=1e-12)
    assert r["max_error_rad"] == pytest.approx(TWO_PI - 5.0, rel=1e-12)
    assert r["gap_rad"] == [pytest.approx(math.pi, rel=1e-15), pytest.approx(TWO_PI, rel=1e-15)]
    wr = lut_range_error(map_to_panel(_design(t), dev, SLMOptions(), 8))  # a 2π LUT wraps: no gap
    assert wr["gap_rad"] is None and wr["unreachable_pixels"] == 0 and wr["max_error_rad"] <= math.pi / 256 + 1e-12


def test_lut_range_refusal_message_and_limits(tmp_path, device_file):
    lut = PhaseLUT.linear(8, math.pi)
    t = [0.0, 4.0, 2.0, 5.0]  # shown 0, π, 2.0 ± step/2, 0 (≡ 2π): errors 0, π − 4, ~0, 2π − 5
    d = _design(t)
    step = math.pi / 255
    err = np.array([0.0, math.pi - 4.0, round(2.0 / step) * step - 2.0, TWO_PI - 5.0])
    rms = float(np.sqrt(np.mean(err ** 2)))
    lim = 1.5 * (TWO_PI / 256) / math.sqrt(12) + 0.005
    msg = (rf"^the LUT cannot reach the design's phases: at λ = 6.33e-07 m it spans 3.142 rad, short of 2π even "
           rf"with one more step \(its phases are the ones calibrated at 6.33e-07 m × 1\), so phases between 3.142 "
           rf"and 6.283 rad \(mod 2π\) cannot be shown; 2 of the 4 design-area pixels ask for one, and the mapped "
           rf"phase is off by RMS {rms:.4g} rad \(max {TWO_PI - 5.0:.4g}\) > the limit {lim:.4g} rad. Use a LUT "
           rf"calibrated to 2π at this wavelength \(or check --lut-wavelength-m: the LUT's phases scale by "
           rf"λ_lut/λ\), or accept the error with --rms-tol-rad \(SLMOptions.lut_rms_tol_rad\); nothing was written$")
    with pytest.raises(FabricationError, match=msg):
        _export(d, tmp_path, device_file, lut=lut)
    # a limit just above the RMS lets it through and is recorded; just below refuses
    res = _export(d, tmp_path, device_file, lut=lut, lut_rms_tol_rad=rms * (1 + 1e-9))
    rc = res.sidecar["lut"]["range_check"]
    assert rc["limit_rad"] == rms * (1 + 1e-9) and rc["lut_wraps"] is False and rc["unreachable_pixels"] == 2
    with pytest.raises(FabricationError, match="cannot reach"):
        _export(d, tmp_path, device_file, name="b.png", lut=lut, lut_rms_tol_rad=rms * (1 - 1e-9))
    # a LUT that wraps is never refused, whatever the limit (its error is quantisation only)
    res = _export(d, tmp_path, device_file, name="w.png", lut_rms_tol_rad=1e-12)
    assert res.sidecar["lut"]["range_check"]["lut_wraps"] is True
    assert res.sidecar["lut"]["range_check"]["rms_error_rad"] > 1e-12


def test_export_bit_depth_and_overwrite(tmp_path, device_file):
    for b in (9, 16):
        with pytest.raises(FabricationError, match=rf"^bit depth {b} is not supported; use 8, 10 or 12$"):
            _export(_design([0.0]), tmp_path, device_file, device="test-panel-12", bit_depth=b)
    res = _export(_design([math.pi]), tmp_path, device_file, device="test-panel-12")  # the device's 12 bits
    assert res.sidecar["bit_depth"] == 12 and res.sidecar["file_format"] == "png16"
    assert int(res.gray[res.sidecar["placement"]["top_px"], res.sidecar["placement"]["left_px"]]) == 2048
    res = export_slm(_design([math.pi / 2]), "test-panel-12", tmp_path / "m.png", device_file=device_file,
                     options=SLMOptions(bit_depth=10), overwrite=True)
    assert res.sidecar["bit_depth"] == 10 and int(read_bitmap(res.path).max()) == 256  # π/2 of 1024 levels, lsb


def test_sidecar_values(tmp_path, device_file):
    import hashlib

    from fabrication._io import software_version

    d = PhaseDesign(np.array([[0.0, math.pi / 2], [math.pi, 1.0]]), 8e-6, 633e-9, source="unit")
    res = _export(d, tmp_path, device_file, carrier_period_px=(-8.0, 4.0), offset_px=(1, -2),
                  fill_phase_rad=math.pi, justify="msb")
    s = res.sidecar
    assert json.loads(res.sidecar_path.read_text()) == s and res.sidecar_path == tmp_path / "m.png.json"
    assert s["format"] == "phaseforge-slm-bitmap" and s["format_version"] == "1"
    assert s["file"] == "m.png" and s["file_format"] == "png8"
    assert s["file_sha256"] == hashlib.sha256(res.path.read_bytes()).hexdigest()
    np.testing.assert_array_equal(read_bitmap(res.path), res.gray)
    assert s["pixel_data"]["sha256"] == hashlib.sha256(res.gray.astype("<u2").tobytes()).hexdigest()
    assert s["pixel_data"]["shape"] == [48, 64] and res.gray.dtype == np.uint16
    assert s["bit_depth"] == 8 and s["justify"] == "none"  # 8-bit: no justification
    assert s["device"]["key"] == "test-panel" and s["device"]["width_px"] == 64
    assert s["design"] == d.describe()
    assert s["resampling"] == {"mode": "exact", "ratio": 1.0, "design_pitch_m": 8e-6, "slm_pitch_m": 8e-6,
                               "shape_on_slm_px": [2, 2]}
    pl = s["placement"]
    assert (pl["top_px"], pl["left_px"], pl["offset_px"]) == (24 - 1 + 1, 32 - 1 - 2, [1, -2])
    assert pl["fill_phase_rad"] == math.pi and pl["fill_gray"] == 128
    assert s["sign"] == 1
    c = s["carrier"]
    assert c["period_px"] == [-8.0, 4.0] and c["frequency_cycles_per_px"] == [-0.125, 0.25]
    assert c["first_order_angle_rad"] == [pytest.approx(-math.asin(633e-9 / (8 * 8e-6)), rel=1e-15),
                                          pytest.approx(math.asin(633e-9 / (4 * 8e-6)), rel=1e-15)]
    lut = s["lut"]
    lv = PhaseLUT.linear(8).levels_rad.numpy()
    assert lut["source"] == "linear" and lut["levels_rad"] == lv.tolist()
    assert lut["sha256"] == hashlib.sha256(lv.astype("<f8").tobytes()).hexdigest()
    assert lut["wavelength_m"] == 633e-9 and lut["design_wavelength_m"] == 633e-9
    assert lut["scale_to_design_wavelength"] == 1.0 and lut["wraps_at_design_wavelength"] is True
    assert lut["max_step_at_design_wavelength_rad"] == pytest.approx(TWO_PI / 256, rel=1e-12)
    assert s["options"] == {"bit_depth": 8, "lut_wavelength_m": 633e-9, "resample": "exact", "offset_px": [1, -2],
                            "fill_phase_rad": math.pi, "carrier_period_px": [-8.0, 4.0], "sign": 1, "justify": "msb",
                            "lut_rms_tol_rad": None}
    assert s["software"] == f"phaseforge {software_version()}"
    import datetime as dt
    created = dt.datetime.fromisoformat(s["created"])
    assert created.utcoffset() == dt.timedelta(0) and abs(created - dt.datetime.now(dt.timezone.utc)).total_seconds() < 60
    assert b"phaseforge-design\x00unit [0]" in res.path.read_bytes()  # the design named in the PNG text chunk
    # a LUT given without a source is recorded as "given"; a carrier shorter than λ/pitch saturates at 90°
    res = _export(PhaseDesign(np.zeros((1, 1)), 8e-6, 20e-6), tmp_path, device_file, name="g.png",
                  lut=PhaseLUT.linear(8), carrier_period_px=(0, 2.0))
    assert res.sidecar["lut"]["source"] == "given"
    assert res.sidecar["carrier"]["first_order_angle_rad"] == [0.0, pytest.approx(math.pi / 2, rel=1e-15)]
    assert res.sidecar["carrier"]["frequency_cycles_per_px"] == [0.0, 0.5]


def test_options_from_sidecar_reproduce_the_export(tmp_path, device_file):
    from fabrication.slm import options_from_sidecar

    lut = PhaseLUT.tabulated([0, 100, 255], [0.0, 2.0, 6.2])
    d = PhaseDesign(np.random.default_rng(2).uniform(0, TWO_PI, (3, 5)), 8e-6, 633e-9)
    opt = SLMOptions(bit_depth=8, lut=lut, lut_source="meas.csv", lut_wavelength_m=600e-9, resample="exact",
                     offset_px=(2, -3), fill_phase_rad=1.0, carrier_period_px=(0, -6.0), sign=-1, justify="msb",
                     lut_rms_tol_rad=0.5)
    res = export_slm(d, "test-panel", tmp_path / "a.png", device_file=device_file, options=opt)
    o2, dev = options_from_sidecar(res.sidecar)
    assert dev.key == "test-panel" and dev.shape == (48, 64)
    assert o2.lut.levels_rad.tolist() == lut.levels_rad.tolist() and o2.lut_source == "meas.csv"
    for f in ("bit_depth", "lut_wavelength_m", "resample", "offset_px", "fill_phase_rad", "carrier_period_px",
              "sign", "justify", "lut_rms_tol_rad"):
        assert getattr(o2, f) == getattr(opt, f), f
    assert isinstance(o2.offset_px, tuple) and isinstance(o2.carrier_period_px, tuple)
    again = export_slm(d, "test-panel", tmp_path / "b.png", device_file=device_file, options=o2)
    np.testing.assert_array_equal(again.gray, res.gray)
    side = dict(res.sidecar)
    side["lut"] = {k: v for k, v in side["lut"].items() if k != "source"}
    side["options"] = {k: v for k, v in side["options"].items() if k != "lut_rms_tol_rad"}
    o3, _ = options_from_sidecar(side)  # older sidecars: no LUT source, no tolerance
    assert o3.lut_source == "" and o3.lut_rms_tol_rad is None


def test_max_gap_includes_the_wrap_gap():
    from fabrication.slm import max_gap

    assert max_gap(PhaseLUT.linear(8)) == pytest.approx(TWO_PI / 256, rel=1e-12)
    assert max_gap(PhaseLUT([0.0, 1.0, 2.0, 3.0])) == pytest.approx(TWO_PI - 3.0, rel=1e-12)  # the wrap gap
    assert max_gap(PhaseLUT([1.0, 2.0, 5.0, 7.0])) == pytest.approx(3.0, rel=1e-12)  # gaps 1, 3, 2, 2π − 6


def test_lut_range_error_boundaries(tmp_path, device_file):
    """The gap is (φ_last + Δ/2, φ_0 + 2π − Δ/2) open, Δ the largest step: its ends are reachable (exact
    binary fractions here); a 1-level step LUT (1 bit) has its half step too; a LUT that wraps within
    the 1e-6 tolerance has no gap even where one 2π(1e-6)-wide sliver lies past its half steps."""
    from fabrication.devices import get_device
    from fabrication.slm import lut_range_error, map_to_panel

    dev = get_device("test-panel", device_file)
    lut = PhaseLUT([0.0, 0.5, 1.0, 1.5])  # Δ/2 = 0.25: gap (1.75, 2π − 0.25)
    r = lut_range_error(map_to_panel(_design([1.75, TWO_PI - 0.25, 1.76, TWO_PI - 0.26]), dev, SLMOptions(lut=lut), 2))
    assert r["unreachable_pixels"] == 2 and r["gap_rad"] == [1.5, TWO_PI]
    one = PhaseLUT([0.0, 1.0])  # 1 bit, Δ/2 = 0.5: gap (1.5, 2π − 0.5)
    r = lut_range_error(map_to_panel(_design([1.3, 1.6, TWO_PI - 0.4]), dev, SLMOptions(lut=one), 1))
    assert r["unreachable_pixels"] == 1
    a = TWO_PI * (1 - 0.5e-6) / 256  # 256 equal steps 0.5e-6 relative short of 2π: treated as circular
    lut = PhaseLUT(torch.arange(256, dtype=torch.float64) * a)
    assert lut.wraps
    sliver = 0.5 * ((256 - 0.5) * a + TWO_PI - 0.5 * a)  # between φ_255 + a/2 and 2π − a/2
    r = lut_range_error(map_to_panel(_design([sliver]), dev, SLMOptions(lut=lut), 8))
    assert r["unreachable_pixels"] == 0 and r["gap_rad"] is None


def test_fill_gray_and_device_phase_range(tmp_path, device_file):
    from fabrication.devices import get_device
    from fabrication.slm import map_to_panel

    device_file.write_text(device_file.read_text() + """
pi-panel:
  name: panel reaching pi
  width_px: 8
  height_px: 8
  pixel_pitch_m: 8.0e-6
  bit_depth: 8
  phase_range_rad: 3.141592653589793
  file_format: png8
  source: unit test
""")
    d = _design([0.0, 1.0])
    m = map_to_panel(d, get_device("pi-panel", device_file), SLMOptions(fill_phase_rad=6.2), 8)
    # default LUT: linear over the device's range, top level π
    assert float(m.lut.levels_rad[-1]) == pytest.approx(math.pi, rel=1e-15) and not m.lut.wraps
    assert m.fill_gray == 0  # 6.2 rad is nearest to 2π ≡ gray 0 (wrapped), not to the top level π
    # a fill phase exactly halfway between gray 0 and 1 (π/256 on a 2π 8-bit LUT) goes to the lower one,
    # as every design pixel does (float64 throughout: in float32 π/256 rounds up, past the tie)
    m = map_to_panel(d, get_device("test-panel", device_file), SLMOptions(fill_phase_rad=math.pi / 256), 8)
    assert m.fill_gray == 0


def test_lut_range_limit_is_inclusive_and_message_numbers(tmp_path, device_file):
    lut = PhaseLUT(PhaseLUT.linear(8, math.pi).levels_rad + 0.5)  # [0.5, π + 0.5]: gap (π + 0.5, 2π + 0.5)
    d = _design([0.5, 4.5, 2.5, 5.5])
    res = _export(d, tmp_path, device_file, lut=lut, lut_rms_tol_rad=10.0)
    rc = res.sidecar["lut"]["range_check"]
    assert rc["unreachable_pixels"] == 2 and rc["gap_rad"] == [pytest.approx(math.pi + 0.5), pytest.approx(TWO_PI + 0.5)]
    # an RMS equal to the limit is accepted (refused only when it exceeds it)
    ok = _export(d, tmp_path, device_file, name="eq.png", lut=lut, lut_rms_tol_rad=rc["rms_error_rad"])
    assert ok.sidecar["lut"]["range_check"]["rms_error_rad"] == rc["rms_error_rad"]
    with pytest.raises(FabricationError, match=r"it spans 3.142 rad, short of 2π even with one more step \(its phases "
                                               r"are the ones calibrated at 5.32e-07 m × 0.8404\), so phases between "
                                               r"3.642 and 6.783 rad \(mod 2π\)"):
        _export(d, tmp_path, device_file, name="r.png", lut=PhaseLUT(lut.levels_rad * 633 / 532),
                lut_wavelength_m=532e-9)


def test_sidecar_description_fields(tmp_path, device_file):
    s = _export(_design([0.0]), tmp_path, device_file).sidecar
    assert s["justify_note"] == ("10/12-bit levels in a 16-bit PNG: 'lsb' stores the level itself (sample = g), 'msb' "
                                 "stores g·2^(16−b) with a PNG sBIT chunk; drivers differ — check yours")
    assert s["pixel_data"]["hashed_as"] == "uint16 little-endian, C order, gray levels of the whole panel (rows, columns)"
    assert s["placement"]["centre_convention"] == (
        "design pixel (h//2, w//2) of the h x w block on the SLM grid on panel pixel (H//2, W//2) + offset: "
        "top = H//2 − h//2 + dy, left = W//2 − w//2 + dx")
    assert s["carrier"]["phase"] == ("2π(f_y(i − H//2) + f_x(j − W//2)) over the design area, (i, j) the panel row and "
                                     "column: zero at panel pixel (H//2, W//2), the design centre")
    assert s["lut"]["hashed_as"] == "float64 little-endian levels_rad"
    assert s["resampling"]["ratio"] == 1.0 and s["lut"]["range_check"]["pixels"] == 1


def test_resample_linear_single_column():
    from fabrication.slm import resample_phase

    col = resample_phase(np.array([[0.0], [1.0]]), 2.0, "linear")  # one column: no neighbour to the right
    assert col.shape == (4, 2)
    np.testing.assert_allclose(col[:, 0], col[:, 1], rtol=0, atol=0)
    assert col[2, 0] == pytest.approx(_bilinear(np.array([[0.0, 0.0], [1.0, 1.0]]), 0.75, 0), abs=1e-14)
