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
