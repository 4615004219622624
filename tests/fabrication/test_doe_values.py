"""fabrication.doe by value: height = φ·λ/(2π(n − n₀)) and the level quantisation, the level and
mask tables, the contrast curve (parsing, monotonicity, gray range, interpolation), every file's
units/tags/metadata read back, the sidecar, and the refusals with the value and the fix.
Hand-computed small cases; fast (the mutation selection of fabrication/doe.py runs them)."""
import json
import math

import numpy as np
import pytest
import tifffile

import gdstk
from fabrication.designs import PhaseDesign
from fabrication.doe import (DOEOptions, export_doe, gray_to_heights, heights_to_gray, level_table,
                             quantize_levels, read_dose_curve)
from fabrication.drc import DRCRules
from fabrication.errors import FabricationError
from fabrication.gds import read_layer_rasters
from optics import materials

# export_doe traces GDS layers under a tqdm bar (disabled unless asked), and every tqdm takes
# tqdm's class lock — by default a multiprocessing lock shared with forked children — and starts a
# monitor thread. A process that forks test runs (mutmut does, one per mutant) must not hand that
# lock to children that may be killed while holding it: a thread lock and no monitor thread here.
import threading  # noqa: E402

from tqdm import std as _tqdm_std  # noqa: E402

_tqdm_std.tqdm.set_lock(threading.RLock())
_tqdm_std.tqdm.monitor_interval = 0

TWO_PI = 2 * math.pi
LAM = 633e-9
N_FS = float(materials.get_material("fused_silica").n(LAM))  # Malitson: 1.4570 at 633 nm


# -- quantisation and level tables ------------------------------------------------------------------
def test_quantize_levels_rounds_the_wrapped_phase_to_the_nearest_level():
    step = TWO_PI / 8
    phi = np.array([0.0, 0.49 * step, 0.51 * step, 3 * step, 7.49 * step, 7.51 * step,
                    TWO_PI - 1e-9, -0.3 * step, -0.6 * step, 3 * TWO_PI + 2 * step, -TWO_PI + 5.2 * step])
    got = quantize_levels(phi, 8)
    assert got.dtype == np.int64
    # 7.51 steps and 2π − ε are nearest to level 8 ≡ 0 (wrapped); −0.6 steps to level 7
    np.testing.assert_array_equal(got, [0, 0, 1, 3, 7, 0, 0, 0, 7, 2, 5])
    np.testing.assert_array_equal(quantize_levels(np.array([[0.24 * TWO_PI, 0.26 * TWO_PI]]), 2), [[0, 1]])


def test_level_table_by_hand():
    h2pi = 1.2e-6
    rows = level_table(4, h2pi, "levels", 3)
    assert len(rows) == 4
    for l, row in enumerate(rows):
        lv, layer, ph, h_um, e_um = row
        assert (lv, layer) == (l, 3 + l)
        assert ph == pytest.approx(TWO_PI * l / 4, rel=1e-15)
        assert h_um == pytest.approx(0.3 * l, rel=1e-12, abs=1e-15)       # l·h_2π/L
        assert e_um == pytest.approx(0.9 - 0.3 * l, rel=1e-12, abs=1e-12)  # top (L−1)·h_2π/L minus h
    assert [r[1] for r in level_table(4, h2pi, "etch", 3)] == [-1, -1, -1, -1]  # etch mode: no level layers


# -- contrast curve ----------------------------------------------------------------------------------
def _curve(tmp_path, text, name="curve.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_dose_curve_values_comments_and_order(tmp_path):
    p = _curve(tmp_path, "gray,height_um\n# measured 2024-01-01\n255,0.0\n0,1.6  # unexposed\n100,1.0\n")
    g, h = read_dose_curve(p)
    assert g.dtype == np.float64 and h.dtype == np.float64
    np.testing.assert_array_equal(g, [0, 100, 255])  # sorted by gray
    np.testing.assert_array_equal(h, [1.6, 1.0, 0.0])
    # small steps (< 1 µm, < 1 gray apart is impossible: consecutive grays) in either direction
    g, h = read_dose_curve(_curve(tmp_path, "gray,height_um\n0,0.1\n1,0.2\n2,0.25\n", "up.csv"))
    np.testing.assert_array_equal(g, [0, 1, 2])
    np.testing.assert_array_equal(h, [0.1, 0.2, 0.25])
    g, h = read_dose_curve(_curve(tmp_path, "gray,height_um\n0,0.3\n1,0.2\n2,0.15\n", "down.csv"))
    np.testing.assert_array_equal(h, [0.3, 0.2, 0.15])


@pytest.mark.parametrize("text, needle", [
    ("gray,thickness\n0,1\n255,0\n", "lack 'gray' and 'height_um'"),
    ("dose,height_um\n0,1\n255,0\n", "lack 'gray' and 'height_um'"),
    ("gray,height_um\n0,1,7\n255,0\n", "cannot parse as CSV with a 'gray,height_um' header"),
    ("gray,height_um\n0,1.6\n", "needs at least 2 finite rows"),
    ("gray,height_um\n0,1.6\n100,\n255,0\n", "needs at least 2 finite rows"),
    ("gray,height_um\n0,1.6\n,1.0\n255,0\n", "needs at least 2 finite rows"),
])
def test_read_dose_curve_refuses_malformed_files_naming_them(tmp_path, text, needle):
    p = _curve(tmp_path, text)
    with pytest.raises(FabricationError) as exc:
        read_dose_curve(p)
    assert needle in str(exc.value) and str(p) in str(exc.value)
    if "lack" in needle:
        assert "the header 'gray,height_um'" in str(exc.value)


def test_read_dose_curve_missing_file(tmp_path):
    with pytest.raises(FabricationError, match=r"dose curve .*nothere\.csv does not exist"):
        read_dose_curve(tmp_path / "nothere.csv")


@pytest.mark.parametrize("rows, bad_gray", [
    ("0,1.0\n50,0.8\n100,0.9\n150,0.5\n", 100),   # falls, rises at gray 100, falls
    ("0,0.1\n50,0.2\n100,0.15\n150,0.3\n", 100),  # small steps: rises, falls at 100 (all |Δh| < 1)
    ("0,1.6\n100,1.0\n200,1.0\n255,0.0\n", 200),  # a plateau: two grays, one height
    ("0,1.6\n100,1.0\n100,0.9\n255,0.0\n", 100),  # one gray, two heights
    ("0,0.0\n1,0.5\n2,0.5\n3,0.9\n", 2),          # rising, plateau at consecutive grays
])
def test_read_dose_curve_must_be_strictly_monotone_naming_the_row(tmp_path, rows, bad_gray):
    p = _curve(tmp_path, "gray,height_um\n" + rows)
    with pytest.raises(FabricationError) as exc:
        read_dose_curve(p)
    msg = str(exc.value)
    assert str(p) in msg and "strictly monotone in gray" in msg and "re-measure the curve" in msg
    assert f"row with gray {bad_gray} breaks it" in msg


def test_heights_to_gray_interpolates_and_rounds_by_hand():
    curve = (np.array([0.0, 100.0, 255.0]), np.array([1.6, 1.0, 0.0]))
    g = heights_to_gray(np.array([[1.6, 1.3, 1.0], [0.4, 0.0, 1.006]]), curve, 8)
    assert g.dtype == np.int64
    # 1.3 µm: half-way 0 → 100; 0.4 µm: 100 + 0.6·155 = 193; 1.006: 100 − 0.006·100/0.6 = 99
    np.testing.assert_array_equal(g, [[0, 50, 100], [193, 255, 99]])
    np.testing.assert_allclose(gray_to_heights(np.array([0, 50, 193, 255]), curve), [1.6, 1.3, 0.4, 0.0],
                               rtol=1e-12)
    # a rising curve (negative resist), gray given as integers
    up = (np.array([0.0, 10.0]), np.array([0.0, 2.0]))
    np.testing.assert_array_equal(heights_to_gray(np.array([0.0, 0.99, 1.01, 2.0]), up, 8), [0, 5, 5, 10])
    np.testing.assert_allclose(gray_to_heights(np.array([0, 5, 10], dtype=np.uint8), up), [0.0, 1.0, 2.0])


def test_heights_to_gray_range_tolerance_is_1e_9_um():
    curve = (np.array([0.0, 255.0]), np.array([0.0, 1.6]))
    # heights within 1e-9 µm of the curve's ends are rounding, and map to its end grays
    np.testing.assert_array_equal(heights_to_gray(np.array([-1e-9, 1.6 + 1e-9]), curve, 8), [0, 255])
    np.testing.assert_array_equal(heights_to_gray(np.array([0.0, 1.6]), curve, 8), [0, 255])
    for bad in (-2e-9, 1.6 + 2e-9, -0.5, 2.0):
        with pytest.raises(FabricationError) as exc:
            heights_to_gray(np.array([0.8, bad]), curve, 8)
        msg = str(exc.value)
        assert "outside the contrast curve's 0 … 1.6 µm" in msg and "fewer levels" in msg


@pytest.mark.parametrize("gray, bits, ok", [
    ((0, 255), 8, True), ((0, 256), 8, False), ((-1, 200), 8, False), ((0, 65535), 16, True),
    ((0, 65536), 16, False), ((0, 300), 16, True),
])
def test_heights_to_gray_checks_the_bit_range(gray, bits, ok):
    curve = (np.array(gray, dtype=np.float64), np.array([1.0, 0.0]))
    h = np.array([0.5])
    if ok:
        assert heights_to_gray(h, curve, bits).item() == round((gray[0] + gray[1]) / 2)
        return
    with pytest.raises(FabricationError) as exc:
        heights_to_gray(h, curve, bits)
    msg = str(exc.value)
    assert (f"gray values {gray[0]:g} … {gray[1]:g} exceed the {bits}-bit range 0 … {2 ** bits - 1}" in msg
            and "--gray-bits 16" in msg)


# -- export_doe: every file read back ---------------------------------------------------------------
LV = np.array([[0, 1, 2, 3, 0],
               [1, 1, 2, 3, 3],
               [0, 0, 2, 2, 1]])
# off-level phases that round to LV, some a turn away (wrapped)
JITTER = np.array([[0.2, -0.3, 0.1, 0.0, -0.2],
                   [0.0, 0.3, -0.1, 0.2, TWO_PI],
                   [-TWO_PI, 0.1, 0.0, -0.25, 0.3]])
PITCH = 2e-6


def _design(pitch=PITCH, lv=LV, levels=4, jitter=JITTER):
    return PhaseDesign(lv * TWO_PI / levels + jitter, pitch, LAM, levels=levels, source="values-test")


def _sha(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha_array(a):
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_export_levels_reads_back_through_every_file(tmp_path, capsys):
    from fabrication.bitmap import read_bitmap
    h2pi = LAM / (1.5 - 1.0)  # constant index 1.5 in air: h_2π = λ/(n − n₀) = 1.266 µm
    top_um = 3 * (materials.height_for_2pi(wavelength_m=LAM, material="1.5") / 4) * 1e6
    curve = tmp_path / "curve.csv"  # the curve spans exactly the relief: 255 at h = 0, 0 at the top level
    curve.write_text(f"gray,height_um\n0,{top_um!r}\n255,0\n")
    out = tmp_path / "a" / "b"  # a nested folder that does not exist yet
    res = export_doe(_design(), out, options=DOEOptions(material="1.5", levels=4, dose_curve=str(curve),
                                                        stl=True))
    assert capsys.readouterr().err == ""  # no progress bar unless asked
    want_h = LV * h2pi / 4
    assert res.h2pi_m == pytest.approx(h2pi, rel=1e-15)
    np.testing.assert_array_equal(res.level_map, LV)
    np.testing.assert_allclose(res.height_m, want_h, rtol=1e-15, atol=1e-22)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["height_um.tif", "height_gray.png", "relief.gds", "relief.stl", "relief_levels.csv", "doe.json"])
    side = json.loads((out / "doe.json").read_text())
    assert side == json.loads(json.dumps(res.sidecar))

    # TIFF: float32 µm (float32 rounding: 6e-8 relative), 5000 px/cm, the key facts as JSON
    with tifffile.TiffFile(out / "height_um.tif") as t:
        page = t.pages[0]
        h_um = page.asarray()
        assert h_um.dtype == np.float32
        np.testing.assert_allclose(h_um, want_h * 1e6, rtol=1.2e-7, atol=0)
        assert page.tags["XResolution"].value == (5000, 1) and page.tags["YResolution"].value == (5000, 1)
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        assert int(page.tags["PhotometricInterpretation"].value) == 1  # min-is-black
        descs = [tg.value for tg in page.tags.values() if tg.name == "ImageDescription"]
    assert len(descs) == 1
    assert json.loads(descs[0]) == {"format": "phaseforge-doe", "units": "um", "pixel_pitch_m": PITCH,
                                    "wavelength_m": LAM, "material": "n=1.5",
                                    "h_2pi_um": pytest.approx(h2pi * 1e6, rel=1e-15), "levels": 4}
    assert side["files"]["tiff"] == {"path": "height_um.tif", "dtype": "float32", "units": "um",
                                     "sha256": _sha(out / "height_um.tif")}

    # grayscale: gray = 255·(1 − l/3) through the linear curve, 8 bits, the curve in the text chunk
    g = read_bitmap(out / "height_gray.png")
    np.testing.assert_array_equal(g, np.rint(255 * (1 - LV / 3)).astype(int))
    from PIL import Image
    with Image.open(out / "height_gray.png") as im:
        assert im.text["phaseforge-doe"] == f"gray levels of {curve}"
        assert im.text["phaseforge"] == "bit_depth=8; justify=none"
    gray_entry = side["files"]["gray"]
    assert gray_entry == {"path": "height_gray.png", "bits": 8, "dose_curve": str(curve),
                          "dose_curve_gray": [0.0, 255.0], "dose_curve_height_um": [pytest.approx(top_um), 0.0],
                          "pixel_sha256": _sha_array(g.astype("<u2")), "sha256": _sha(out / "height_gray.png")}

    # GDSII: user unit 1 µm, database unit 1 nm, one top cell "DOE", layer 1 + l holds level l
    lib = gdstk.read_gds(str(out / "relief.gds"))
    assert lib.name == "phaseforge" and lib.unit == pytest.approx(1e-6) and lib.precision == pytest.approx(1e-9)
    [top] = lib.top_level()
    assert top.name == "DOE" and {p.datatype for p in top.polygons} == {0}
    rasters = read_layer_rasters(out / "relief.gds", LV.shape, cell_um=2.0, layers=[1, 2, 3, 4])
    for l in range(4):
        np.testing.assert_array_equal(rasters[1 + l], LV == l)
    layers = {}
    for p in top.polygons:
        e = layers.setdefault(str(p.layer), {"polygons": 0, "vertices": 0})
        e["polygons"] += 1
        e["vertices"] += len(p.points)
    for k, e in layers.items():
        e["cells"] = int((LV == int(k) - 1).sum())
    assert side["files"]["gds"] == {
        "path": "relief.gds", "mode": "levels", "cell": "DOE", "user_unit_m": 1e-6, "database_unit_m": 1e-9,
        "cell_size_um": 2.0, "layer0": 1, "grid_exact": True,
        "grid_note": "the cell size is a whole number of database units: every vertex is exact",
        "origin": "bottom-left corner of the design, y up, array row 0 at the top",
        "max_points": 8190, "layers": layers, "naive_rectangles": 15, "sha256": _sha(out / "relief.gds")}
    table = np.genfromtxt(out / "relief_levels.csv", delimiter=",", names=True)
    assert table.dtype.names == ("level", "layer", "phase_rad", "height_um", "etch_depth_um")
    np.testing.assert_array_equal(table["level"], [0, 1, 2, 3])
    np.testing.assert_array_equal(table["layer"], [1, 2, 3, 4])
    assert res.out_dir == out
    np.testing.assert_allclose(table["height_um"], np.arange(4) * h2pi / 4 * 1e6, rtol=1e-8)
    assert side["files"]["levels_csv"] == {"path": "relief_levels.csv"}

    # STL: the default base plate is h_2π thick
    from stl import mesh
    m = mesh.Mesh.from_file(str(out / "relief.stl"))
    base_um = h2pi * 1e6
    tops = np.unique(m.vectors[m.normals[:, 2] > 0][:, :, 2])
    np.testing.assert_allclose(tops, np.unique(want_h * 1e6 + base_um), rtol=1.2e-7, atol=0)
    assert m.vectors[:, :, 0].max() == pytest.approx(5 * 2.0, rel=1e-7)  # x extent: 5 cells of 2 µm
    stl_entry = side["files"]["stl"]
    assert stl_entry["path"] == "relief.stl" and stl_entry["base_um"] == pytest.approx(base_um, rel=1e-12)
    assert stl_entry["origin"] == "bottom-left corner of the design, y up, z = 0 at the bottom of the base plate"
    assert stl_entry["sha256"] == _sha(out / "relief.stl") and stl_entry["units"] == "um"

    # the sidecar's physics and hashes
    assert side["format"] == "phaseforge-doe" and side["format_version"] == "1"
    assert side["design"] == json.loads(json.dumps(_design().describe()))
    mat = side["material"]
    assert mat == {"name": "n=1.5", "sellmeier_b": None, "sellmeier_c_um2": None, "constant_n": 1.5,
                   "wavelength_range_m": None, "n": 1.5, "n_medium": 1.0, "wavelength_m": LAM,
                   "h_2pi_m": pytest.approx(h2pi, rel=1e-15), "formula": "h = φλ/(2π(n(λ) − n₀))"}
    assert side["levels"] == 4 and side["quantisation"] == "l = round(wrap(φ)·L/2π) mod L, h = l·h_2π/L"
    assert side["height"] == {"max_um": pytest.approx(3 * h2pi / 4 * 1e6, rel=1e-14), "min_um": 0.0,
                              "sha256": _sha_array(h_um.astype("<f4")), "hashed_as": "float32 µm, C order"}
    assert side["level_map_sha256"] == _sha_array(LV.astype("<i8"))
    assert side["software"].startswith("phaseforge ") and side["created"].endswith("+00:00")
    assert side["drc"]["ok"] and side["drc"]["violations"] == []


def test_continuous_relief_in_a_medium_and_the_sidecar(tmp_path):
    # h = wrap(φ)·λ/(2π(n(λ) − n₀)) with fused silica in water (n₀ = 1.33)
    phi = np.array([[0.0, 1.0, math.pi, TWO_PI - 0.5], [-1.0, 7.0, 2.5, 0.25]])
    d = PhaseDesign(phi, PITCH, LAM)
    res = export_doe(d, tmp_path / "c", options=DOEOptions(gds=False, n_medium=1.33))
    want = np.mod(phi, TWO_PI) * LAM / (TWO_PI * (N_FS - 1.33))
    assert res.h2pi_m == pytest.approx(LAM / (N_FS - 1.33), rel=1e-12)
    assert N_FS == pytest.approx(1.4570, abs=1e-4)  # Malitson at 633 nm
    np.testing.assert_allclose(res.height_m, want, rtol=1e-12)
    np.testing.assert_allclose(tifffile.imread(res.files["tiff"]), want * 1e6, rtol=1.2e-7)
    side = res.sidecar
    assert res.level_map is None and side["levels"] is None and side["level_map_sha256"] is None
    assert side["quantisation"] == "continuous"
    assert side["material"]["n"] == pytest.approx(N_FS, rel=1e-12) and side["material"]["n_medium"] == 1.33
    assert list(side["material"]["wavelength_range_m"]) == [2.1e-07, 3.71e-06]
    assert set(side["files"]) == {"tiff"}
    res = export_doe(PhaseDesign(np.array([[1.0, 2.0]]), PITCH, LAM), tmp_path / "m",
                     options=DOEOptions(gds=False, material="1.5"))
    h2pi_um = LAM / 0.5 * 1e6
    assert res.sidecar["height"]["min_um"] == pytest.approx(h2pi_um / TWO_PI, rel=1e-12)
    assert res.sidecar["height"]["max_um"] == pytest.approx(2 * h2pi_um / TWO_PI, rel=1e-12)


def test_export_etch_mode_mask_table_and_layers(tmp_path):
    h2pi = LAM / 0.5
    res = export_doe(_design(), tmp_path / "e", options=DOEOptions(material="1.5", levels=4, gds_mode="etch",
                                                                  layer0=5, tiff=False))
    masks = np.genfromtxt(tmp_path / "e" / "relief_masks.csv", delimiter=",", names=True)
    assert masks.dtype.names == ("mask", "layer", "etch_depth_um")
    np.testing.assert_array_equal(masks["mask"], [1, 2])
    np.testing.assert_array_equal(masks["layer"], [5, 6])  # mask j on layer layer0 + j − 1
    np.testing.assert_allclose(masks["etch_depth_um"], [h2pi / 2 * 1e6, h2pi / 4 * 1e6], rtol=1e-8)
    table = np.genfromtxt(tmp_path / "e" / "relief_levels.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(table["layer"], [-1, -1, -1, -1])
    np.testing.assert_allclose(table["etch_depth_um"], (3 - np.arange(4)) * h2pi / 4 * 1e6, rtol=1e-8)
    r = read_layer_rasters(res.files["gds"], LV.shape, cell_um=2.0, layers=[5, 6])
    np.testing.assert_array_equal(r[5], (3 - LV) >= 2)          # etched by h_2π/2: m = 3 − l has bit 1
    np.testing.assert_array_equal(r[6], ((3 - LV) & 1).astype(bool))
    side = res.sidecar
    assert side["files"]["masks_csv"] == {"path": "relief_masks.csv"}
    assert side["files"]["gds"]["mode"] == "etch" and side["files"]["gds"]["layer0"] == 5
    assert {k: v["cells"] for k, v in side["files"]["gds"]["layers"].items()} == {
        "5": int(((3 - LV) >= 2).sum()), "6": int(((3 - LV) & 1).sum())}


@pytest.mark.parametrize("pitch, exact", [(2e-6, True), (2.000001e-6, True), (2.0005e-6, False)])
def test_grid_note_says_whether_the_cell_is_a_whole_number_of_database_units(tmp_path, pitch, exact):
    res = export_doe(_design(pitch=pitch), tmp_path / "g", options=DOEOptions(levels=4, tiff=False))
    gds = res.sidecar["files"]["gds"]
    assert gds["grid_exact"] is exact and gds["cell_size_um"] == pytest.approx(pitch * 1e6, rel=1e-12)
    if exact:
        assert gds["grid_note"] == "the cell size is a whole number of database units: every vertex is exact"
    else:
        assert gds["grid_note"] == ("the cell size is not a whole number of database units: vertices are "
                                    "rounded to the database unit (choose a finer --db-unit-m)")


def test_holed_levels_keep_their_area_at_a_fine_database_unit(tmp_path):
    # 2000.5 nm cells on a 0.1 nm database unit: exact only if the keyhole boolean also works on 0.1 nm
    lv = np.ones((3, 3), int)
    lv[1, 1] = 0  # level 1 is a ring with a hole
    d = PhaseDesign(lv * math.pi, 2.0005e-6, LAM, levels=2)
    res = export_doe(d, tmp_path / "h", options=DOEOptions(levels=2, precision_m=1e-10, tiff=False))
    lib = gdstk.read_gds(res.files["gds"])
    assert lib.precision == pytest.approx(1e-10)
    ring = [p for p in lib.top_level()[0].polygons if p.layer == 2]
    assert sum(p.area() for p in ring) == pytest.approx(8 * 2.0005 ** 2, rel=1e-9)
    assert res.sidecar["files"]["gds"]["database_unit_m"] == 1e-10


def test_holed_levels_at_millimetre_coordinates(tmp_path):
    # a 6 mm layout: the keyhole boolean at the database unit (1 nm) stays in its integer range
    lv = np.ones((3, 3), int)
    lv[1, 1] = 0
    d = PhaseDesign(lv * math.pi, 2e-3, LAM, levels=2)
    res = export_doe(d, tmp_path / "mm", options=DOEOptions(levels=2, tiff=False))
    ring = [p for p in gdstk.read_gds(res.files["gds"]).top_level()[0].polygons if p.layer == 2]
    assert sum(p.area() for p in ring) == pytest.approx(8 * 2000.0 ** 2, rel=1e-12)


def test_progress_bar_names_the_gds_layers(tmp_path, capsys, monkeypatch):
    import re

    from tqdm import std
    # no tqdm monitor thread: a test process that forks (mutmut does) must not inherit one
    monkeypatch.setattr(std.tqdm, "monitor_interval", 0)
    export_doe(_design(), tmp_path / "p", options=DOEOptions(levels=4, tiff=False), progress=True)
    err = capsys.readouterr().err
    assert re.search(r"(^|\r)trace GDS layers: +100%\|[^\r]*\| 4/4 \[[^\r]*[0-9?](layer/s|s/layer)\]", err), err


def test_overwrite_replaces_and_an_existing_folder_is_used(tmp_path):
    out = tmp_path / "o"
    out.mkdir()  # an existing (empty) folder
    export_doe(_design(), out, options=DOEOptions(levels=4, gds=False))
    first = (out / "height_um.tif").read_bytes()
    d2 = _design(lv=np.roll(LV, 1, axis=1), jitter=0.0)
    res = export_doe(d2, out, options=DOEOptions(levels=4, gds=False), overwrite=True)
    assert (out / "height_um.tif").read_bytes() != first
    np.testing.assert_array_equal(res.level_map, np.roll(LV, 1, axis=1))


def test_drc_without_gds_checks_each_level_raster(tmp_path):
    ph = np.zeros((30, 40))
    ph[5:25, 5:35] = math.pi
    ph[17, 37] = math.pi  # one 2 µm cell of level 1, below a 5 µm minimum feature
    d = PhaseDesign(ph, 2e-6, LAM)
    from fabrication.errors import DRCError
    with pytest.raises(DRCError) as exc:
        export_doe(d, tmp_path / "d", options=DOEOptions(levels=2, gds=False, drc=DRCRules(min_feature_m=5e-6)))
    v1 = [v for v in exc.value.report.violations if v.layer == 1]
    assert [(v.rule, v.count) for v in v1] == [("min_feature", 1)]
    assert (v1[0].locations[0]["row"], v1[0].locations[0]["col"]) == (17, 37)
    # a continuous relief has no level rasters: no feature rules to apply
    export_doe(d, tmp_path / "c", options=DOEOptions(gds=False, drc=DRCRules(min_feature_m=5e-6)))


def test_outputs_that_need_no_tiff_or_gds(tmp_path):
    curve = tmp_path / "curve.csv"
    curve.write_text("gray,height_um\n0,2.0\n65535,0\n")
    res = export_doe(_design(), tmp_path / "g", options=DOEOptions(levels=4, tiff=False, gds=False,
                                                                  dose_curve=str(curve), gray_bits=16))
    assert set(res.sidecar["files"]) == {"gray"} and res.sidecar["files"]["gray"]["bits"] == 16
    res = export_doe(_design(), tmp_path / "s", options=DOEOptions(levels=4, tiff=False, gds=False, stl=True))
    assert set(res.sidecar["files"]) == {"stl"}
    # etch mode is a GDS layout: without GDS any level count is fine
    res = export_doe(_design(lv=LV % 3, levels=3), tmp_path / "e6",
                     options=DOEOptions(levels=3, gds=False, gds_mode="etch"))
    np.testing.assert_array_equal(res.level_map, LV % 3)
    # GDS level layers need no power of two
    res = export_doe(_design(lv=LV % 3, levels=3), tmp_path / "l3", options=DOEOptions(levels=3, tiff=False))
    assert sorted(res.sidecar["files"]["gds"]["layers"]) == ["1", "2", "3"]


@pytest.mark.parametrize("kw, needle", [
    (dict(levels=1), "levels must be an integer >= 2 (or None for continuous), got 1"),
    (dict(levels=True), "levels must be an integer >= 2 (or None for continuous), got True"),
    (dict(levels=8.0), "levels must be an integer >= 2 (or None for continuous), got 8.0"),
    (dict(), "GDSII needs discrete height levels; pass --levels (e.g. 8) or --no-gds"),
    (dict(levels=4, gds_mode="bogus"), "gds mode must be one of ('levels', 'etch'), got 'bogus'"),
    (dict(levels=4, gray_bits=12), "gray_bits must be 8 or 16, got 12"),
    (dict(levels=4, tiff=False, gds=False),
     "nothing to write: enable the TIFF, the GDSII, the STL or a grayscale (dose curve) output"),
    (dict(levels=4, stl=True, stl_base_m=0.0), "stl_base_m = 0.0 must be a positive thickness in metres"),
    (dict(levels=4, stl=True, stl_base_m=-1e-6), "stl_base_m = -1e-06 must be a positive thickness in metres"),
    (dict(levels=4, stl=True, stl_base_m=math.inf), "stl_base_m = inf must be a positive thickness in metres"),
    (dict(levels=4, stl=True, stl_base_m=math.nan), "stl_base_m = nan must be a positive thickness in metres"),
])
def test_bad_options_refused_naming_value_and_fix(tmp_path, kw, needle):
    with pytest.raises(FabricationError) as exc:
        export_doe(_design(), tmp_path / "x", options=DOEOptions(**kw))
    assert str(exc.value) == needle
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_level_count_is_checked_before_existing_outputs(tmp_path):
    export_doe(_design(), tmp_path / "x", options=DOEOptions(levels=4))
    with pytest.raises(FabricationError, match="power-of-two"):  # not "output(s) exist"
        export_doe(_design(), tmp_path / "x", options=DOEOptions(levels=6, gds_mode="etch"))


def test_failed_writes_leave_no_partial_files(tmp_path, monkeypatch):
    def broken_tiff(fh, *a, **k):
        fh.write(b"II*\x00partial")
        raise OSError("disk full")
    monkeypatch.setattr(tifffile, "imwrite", broken_tiff)
    with pytest.raises(OSError, match="disk full"):
        export_doe(_design(), tmp_path / "t", options=DOEOptions(levels=4, gds=False))
    assert list((tmp_path / "t").iterdir()) == []
    monkeypatch.undo()

    real = gdstk.Library

    class BrokenLibrary:
        def __init__(self, *a, **k):
            self._lib = real(*a, **k)

        def new_cell(self, name):
            return self._lib.new_cell(name)

        def write_gds(self, path, **k):
            open(path, "wb").write(b"partial")
            raise OSError("disk full")
    monkeypatch.setattr(gdstk, "Library", BrokenLibrary)
    with pytest.raises(OSError, match="disk full"):
        export_doe(_design(), tmp_path / "g", options=DOEOptions(levels=4))
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["height_um.tif"]


def test_existing_outputs_need_overwrite(tmp_path):
    from fabrication.errors import OutputExistsError
    export_doe(_design(), tmp_path / "x", options=DOEOptions(levels=4, gds=False))
    with pytest.raises(OutputExistsError) as exc:
        export_doe(_design(), tmp_path / "x", options=DOEOptions(levels=4, gds=False))
    msg = str(exc.value)
    assert str(tmp_path / "x" / "height_um.tif") in msg and str(tmp_path / "x" / "doe.json") in msg
    assert "pass overwrite=True (CLI: --overwrite)" in msg


def test_stl_base_plate_thickness_as_given(tmp_path):
    from stl import mesh
    res = export_doe(_design(), tmp_path / "s", options=DOEOptions(material="1.5", levels=4, tiff=False, gds=False,
                                                                  stl=True, stl_base_m=2e-6))
    assert res.sidecar["files"]["stl"]["base_um"] == pytest.approx(2.0, rel=1e-12)
    m = mesh.Mesh.from_file(res.files["stl"])
    z = m.vectors[:, :, 2]
    assert z.min() == 0.0 and z.max() == pytest.approx(2.0 + 3 * LAM / 0.5 / 4 * 1e6, rel=1e-6)


def test_gds_polygons_keep_up_to_max_points_vertices(tmp_path):
    # a comb with ~400 corners in one component: whole below the GDSII limit (8190), fractured at 64
    m = np.zeros((4, 200), dtype=bool)
    m[0, :] = True
    m[1, ::2] = True
    d = PhaseDesign(np.where(m, math.pi, 0.0), 2e-6, LAM)
    res = export_doe(d, tmp_path / "whole", options=DOEOptions(levels=2, tiff=False))
    [comb] = [p for p in gdstk.read_gds(res.files["gds"]).top_level()[0].polygons if p.layer == 2]
    assert len(comb.points) == 402 and res.sidecar["files"]["gds"]["max_points"] == 8190
    assert res.sidecar["drc"]["fractured_polygons"] == 0
    res = export_doe(d, tmp_path / "split", options=DOEOptions(levels=2, tiff=False, drc=DRCRules(max_vertices=64)))
    assert res.sidecar["drc"]["fractured_polygons"] == 2  # the DRC saw the polygons: both layers are combs
    parts = [p for p in gdstk.read_gds(res.files["gds"]).top_level()[0].polygons if p.layer == 2]
    assert len(parts) > 1 and max(len(p.points) for p in parts) <= 64
    assert sum(p.area() for p in parts) == pytest.approx(m.sum() * 4.0, rel=1e-12)


def test_height_rules_and_waivers(tmp_path):
    from fabrication.errors import DRCError
    h2pi = LAM / 0.5  # levels of 0.3165 µm; the top level is 0.9495 µm high
    rules = DRCRules(max_height_m=0.9e-6)
    with pytest.raises(DRCError) as exc:
        export_doe(_design(), tmp_path / "h", options=DOEOptions(material="1.5", levels=4, gds=False, drc=rules))
    [v] = exc.value.report.violations
    assert (v.rule, v.count) == ("max_height", 1)  # the top level's one connected region
    assert v.worst == pytest.approx(3 * h2pi / 4 * 1e6, rel=1e-12)
    res = export_doe(_design(), tmp_path / "h", options=DOEOptions(material="1.5", levels=4, gds=False, drc=rules,
                                                                  waive=("max_height",)))
    assert res.sidecar["drc"]["waived"] == ["max_height"] and res.sidecar["drc"]["fatal"] == []
