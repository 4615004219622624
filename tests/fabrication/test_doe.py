"""DOE export: heights through the material, GDSII read back with gdstk (areas, no overlaps,
holes), etch masks, DRC with locations and waivers, grayscale via a contrast curve,
verification of good and corrupted files, and the first-order efficiency of a blazed grating."""
import json
import math

import numpy as np
import pytest
import tifffile
import torch

import gdstk
from fabrication.designs import PhaseDesign
from fabrication.doe import DOEOptions, export_doe
from fabrication.drc import DRCRules
from fabrication.errors import DRCError, FabricationError
from fabrication.gds import raster_polygons, rasterize_polygons, read_layer_rasters
from fabrication.verify import verify_doe
from optics import materials
from optics.materials import MaterialError, WavelengthRangeError
from optics.propagation import propagate

TWO_PI = 2 * math.pi


def blazed(levels: int, period: int, shape) -> np.ndarray:
    """An N-level blazed grating along x: phase 2π·floor((j mod period)·N/period)/N."""
    j = np.arange(shape[1])
    row = TWO_PI * np.floor((j % period) * levels / period) / levels
    return np.broadcast_to(row, shape).copy()


def _levels_design(L=8, shape=(20, 28), seed=0, pitch=2e-6):
    """Phases on L levels in smooth blobs (so every level forms multi-cell polygons, some with holes)."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    rng = np.random.default_rng(seed)
    ph = np.sin(x / 3.0 + rng.uniform(0, 6)) * 2.5 + np.cos(y / 4.0) * 2.0 + ((x - 14) ** 2 + (y - 10) ** 2) / 40
    lv = np.mod(np.floor(ph * L / TWO_PI), L)
    return PhaseDesign(lv * TWO_PI / L, pitch, 633e-9, levels=L, z_m=0.1, method="fraunhofer", source="test")


def test_fused_silica_2pi_height_at_633nm(tmp_path):
    # Malitson: n(633 nm) = 1.4570, h_2π = 0.633/0.4570 µm = 1.3851 µm
    h = materials.height_for_2pi(wavelength_m=633e-9, material="fused-silica")
    assert h == pytest.approx(1.3851e-6, abs=1e-9)
    d = PhaseDesign(np.array([[0.0, math.pi / 2, math.pi, TWO_PI - 1e-9]]), 2e-6, 633e-9)
    res = export_doe(d, tmp_path / "c", options=DOEOptions(gds=False))
    h_um = tifffile.imread(res.files["tiff"])
    assert h_um.dtype == np.float32
    np.testing.assert_allclose(h_um[0], [0.0, h * 1e6 / 4, h * 1e6 / 2, h * 1e6], rtol=1e-6, atol=1e-6)
    assert json.loads((tmp_path / "c" / "doe.json").read_text())["material"]["h_2pi_m"] == pytest.approx(h)


def _polys_by_layer(path):
    lib = gdstk.read_gds(str(path))
    out = {}
    for cell in lib.top_level():
        for p in cell.get_polygons():
            out.setdefault(p.layer, []).append(p)
    return lib, out


@pytest.mark.parametrize("mode", ["levels", "etch"])
def test_8_level_gds_areas_match_pixels_without_overlaps(tmp_path, mode):
    d = _levels_design()
    res = export_doe(d, tmp_path / mode, options=DOEOptions(levels=8, gds_mode=mode))
    lib, layers = _polys_by_layer(res.files["gds"])
    assert lib.unit == pytest.approx(1e-6) and lib.precision == pytest.approx(1e-9)
    cell_um2 = (d.pixel_pitch_m * 1e6) ** 2
    lv = res.level_map
    expected = ({1 + l: (lv == l) for l in range(8)} if mode == "levels" else
                {1 + j - 1: (((7 - lv) >> (3 - j)) & 1).astype(bool) for j in (1, 2, 3)})
    n_cells = sum(int(m.sum()) for m in expected.values())
    n_polys = sum(len(p) for p in layers.values())
    assert n_polys < n_cells / 2  # merged, not one rectangle per pixel
    for layer, m in expected.items():
        polys = layers.get(layer, [])
        area = sum(p.area() for p in polys)
        assert area == pytest.approx(m.sum() * cell_um2, rel=1e-9)
        union = sum(p.area() for p in gdstk.boolean(polys, [], "or", precision=1e-4))
        assert union == pytest.approx(area, rel=1e-9)  # no overlapping polygons
        np.testing.assert_array_equal(rasterize_polygons(polys, lv.shape, cell_um=2.0), m)
    if mode == "levels":  # levels are disjoint, and together they cover the design
        a = gdstk.boolean(layers[1], layers[2], "and", precision=1e-4)
        assert sum(p.area() for p in a) == pytest.approx(0.0, abs=1e-9)
        assert sum(sum(p.area() for p in v) for v in layers.values()) == pytest.approx(lv.size * cell_um2)
    else:
        masks = np.genfromtxt(tmp_path / mode / "relief_masks.csv", delimiter=",", names=True)
        h2pi = res.h2pi_m * 1e6
        np.testing.assert_allclose(masks["etch_depth_um"], [h2pi / 2, h2pi / 4, h2pi / 8], rtol=1e-8)
    assert all(r.passed and r.mismatched_pixels == 0 for r in verify_doe(res.out_dir, d))


def test_holes_are_kept():
    ring = np.zeros((9, 9), dtype=bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False
    ring[4, 4] = True  # an island inside the hole
    polys = raster_polygons(ring, cell_um=1.0, layer=1)
    assert sum(p.area() for p in polys) == pytest.approx(ring.sum())
    assert len(polys) == 2
    np.testing.assert_array_equal(rasterize_polygons(polys, ring.shape, cell_um=1.0), ring)


def test_gds_polygons_over_the_vertex_limit_are_split_or_reported(tmp_path):
    # a checkerboard-edged comb: one component with many vertices
    m = np.zeros((4, 200), dtype=bool)
    m[0, :] = True
    m[1, ::2] = True
    d = PhaseDesign(np.where(m, math.pi, 0.0), 2e-6, 633e-9)
    res = export_doe(d, tmp_path / "split", options=DOEOptions(levels=2, drc=DRCRules(max_vertices=64)))
    assert res.sidecar["drc"]["fractured_polygons"] >= 1
    _, layers = _polys_by_layer(res.files["gds"])
    assert max(len(p.points) for v in layers.values() for p in v) <= 64
    assert sum(p.area() for p in layers[2]) == pytest.approx(m.sum() * 4.0)
    with pytest.raises(DRCError, match="max_vertices on layer 2"):
        export_doe(d, tmp_path / "strict", options=DOEOptions(levels=2, drc=DRCRules(max_vertices=64, fracture=False)))


def test_planted_sub_minimum_feature_is_caught_with_its_location(tmp_path):
    ph = np.zeros((30, 40))
    ph[5:25, 5:35] = math.pi  # a wide plateau
    ph[17, 30 + 7] = math.pi  # a single 2 µm cell: below a 5 µm minimum feature
    d = PhaseDesign(ph, 2e-6, 633e-9)
    rules = DRCRules(min_feature_m=5e-6)
    with pytest.raises(DRCError) as exc:
        export_doe(d, tmp_path / "drc", options=DOEOptions(levels=2, drc=rules))
    rep = exc.value.report
    v = [x for x in rep.violations if x.rule == "min_feature" and x.layer == 2]
    assert len(v) == 1 and v[0].count == 1
    loc = v[0].locations[0]
    assert (loc["row"], loc["col"]) == (17, 37)
    assert loc["x_um"] == pytest.approx(37.5 * 2) and loc["y_um"] == pytest.approx((30 - 17.5) * 2)
    assert "row 17, col 37" in str(exc.value) and "--waive min_feature" in str(exc.value)
    assert not (tmp_path / "drc" / "relief.gds").exists()  # nothing written
    res = export_doe(d, tmp_path / "drc", options=DOEOptions(levels=2, drc=rules, waive=("min_feature",)))
    s = json.loads((tmp_path / "drc" / "doe.json").read_text())
    assert s["drc"]["waived"] == ["min_feature"] and not s["drc"]["ok"] and s["drc"]["fatal"] == []
    assert res.sidecar["drc"]["violations"][0]["locations"][0]["row"] == 17


def test_spacing_height_and_aspect_rules(tmp_path):
    ph = np.full((20, 20), math.pi)
    ph[10, 4:16] = 0.0  # a one-cell trench: a spacing violation on the π layer
    d = PhaseDesign(ph, 1e-6, 633e-9)
    rules = DRCRules(min_space_m=2e-6, max_height_m=0.5e-6, max_aspect_ratio=0.5)
    with pytest.raises(DRCError) as exc:
        export_doe(d, tmp_path / "r", options=DOEOptions(levels=2, drc=rules))
    got = {(v.rule, v.layer) for v in exc.value.report.violations}
    assert ("min_space", 2) in got and ("max_height", None) in got and ("max_aspect_ratio", None) in got
    ar = [v for v in exc.value.report.violations if v.rule == "max_aspect_ratio"][0]
    h2pi = materials.height_for_2pi(wavelength_m=633e-9, material="fused_silica")
    assert ar.worst == pytest.approx(h2pi / 2 / 1e-6)  # a π step over a 1 µm trench


def test_bad_input_refused_with_the_fix(tmp_path):
    d = _levels_design()
    with pytest.raises(FabricationError, match="power-of-two"):
        export_doe(d, tmp_path / "a", options=DOEOptions(levels=6, gds_mode="etch"))
    with pytest.raises(MaterialError, match="unknown material"):
        export_doe(d, tmp_path / "b", options=DOEOptions(levels=8, material="unobtainium"))
    with pytest.raises(WavelengthRangeError, match="fit range"):
        export_doe(PhaseDesign(d.phase_rad, 2e-6, 5e-6), tmp_path / "c", options=DOEOptions(levels=8))
    with pytest.raises(FabricationError, match="--levels"):
        export_doe(d, tmp_path / "d", options=DOEOptions())
    export_doe(d, tmp_path / "e", options=DOEOptions(levels=8))
    with pytest.raises(FabricationError, match="overwrite"):
        export_doe(d, tmp_path / "e", options=DOEOptions(levels=8))


def test_constant_index_material_and_continuous_relief_verify(tmp_path):
    d = _levels_design()
    res = export_doe(PhaseDesign(d.phase_rad + 0.3, 2e-6, 633e-9), tmp_path / "k",
                     options=DOEOptions(material="1.5", gds=False))
    assert res.h2pi_m == pytest.approx(633e-9 / 0.5)
    [r] = verify_doe(res.out_dir, PhaseDesign(d.phase_rad + 0.3, 2e-6, 633e-9))
    assert r.passed and r.phase_max_rad < 1e-5  # float32 µm heights


def test_grayscale_through_a_contrast_curve(tmp_path):
    d = _levels_design(L=4)
    curve = tmp_path / "curve.csv"  # positive resist: more dose, less height left
    curve.write_text("gray,height_um\n0,1.6\n100,1.0\n255,0.0\n")
    res = export_doe(d, tmp_path / "g", options=DOEOptions(levels=4, gds=False, dose_curve=str(curve)))
    from fabrication.bitmap import read_bitmap
    g = read_bitmap(res.files["gray"]).astype(float)
    h = np.interp(g, [0, 100, 255], [1.6, 1.0, 0.0])
    # rounding to the nearest gray: at most half the steepest height-per-gray step (1.0 µm / 155 grays)
    assert np.abs(h - res.height_m * 1e6).max() <= 0.5 / 155 + 1e-9
    assert all(r.passed for r in verify_doe(res.out_dir, d))
    bad = tmp_path / "low.csv"
    bad.write_text("gray,height_um\n0,0.5\n255,0\n")
    with pytest.raises(FabricationError, match="outside the contrast curve"):
        export_doe(d, tmp_path / "g2", options=DOEOptions(levels=4, gds=False, dose_curve=str(bad)))


def test_verification_passes_then_fails_for_a_corrupted_file(tmp_path):
    d = _levels_design()
    res = export_doe(d, tmp_path / "v", options=DOEOptions(levels=8))
    results = verify_doe(res.out_dir, d)
    assert [r.kind for r in results] == ["tiff", "gds"] and all(r.passed for r in results)
    assert all(r.phase_rms_rad < 1e-6 and r.mismatched_pixels == 0 for r in results)  # a levelled design
    # flip the least significant byte of one float32 height in the TIFF (a 1e-7 relative change)
    tif = tmp_path / "v" / "height_um.tif"
    with tifffile.TiffFile(tif) as t:
        off = t.pages[0].dataoffsets[0]
        assert t.byteorder == "<"  # little-endian float32 samples
    k = int(np.flatnonzero(res.level_map.ravel() > 0)[0])
    data = bytearray(tif.read_bytes())
    data[off + 4 * k] ^= 0x01
    tif.write_bytes(bytes(data))
    # and move one polygon of the GDS by one cell: rewrite it with a shifted layer-3 polygon
    lib = gdstk.read_gds(str(tmp_path / "v" / "relief.gds"))
    cell = lib.top_level()[0]
    p = next(q for q in cell.polygons if q.layer == 3)
    p.translate(2.0, 0)
    lib.write_gds(str(tmp_path / "v" / "relief.gds"))
    results = verify_doe(res.out_dir, d)
    assert not any(r.passed for r in results)
    assert all(any("corrupted" in c or "broken" in c for c in r.causes) for r in results)
    assert results[0].mismatched_pixels == 1


def _first_order_efficiency(phase: np.ndarray, period_cells: int, upsample: int = 8) -> float:
    """Fraunhofer simulation of the grating with square cells (``upsample`` samples each)."""
    u = torch.from_numpy(np.exp(1j * phase)).repeat_interleave(upsample, 0).repeat_interleave(upsample, 1)
    out = propagate(u, pitch_m=1e-6 / upsample, wavelength_m=633e-9, z_m=0.1, method="fraunhofer")
    inten = (out.field.abs() ** 2).numpy()
    n_periods = phase.shape[1] // period_cells
    cy, cx = inten.shape[0] // 2, inten.shape[1] // 2
    return float(inten[cy, cx + n_periods] / inten.sum())


@pytest.mark.parametrize("levels", [4, 8])
def test_quantised_blazed_grating_keeps_its_first_order_efficiency(tmp_path, device_file, levels):
    shape, period = (8, 64), 2 * levels
    phase = blazed(levels, period, shape)
    d = PhaseDesign(phase, 1e-6, 633e-9, levels=levels)
    eta_design = _first_order_efficiency(phase, period)
    # theory for N flat steps per period: sinc²(1/N); the 8-sample cells make it a Dirichlet kernel (≲1e-3)
    assert eta_design == pytest.approx(np.sinc(1 / levels) ** 2, abs=2e-3)
    res = export_doe(d, tmp_path / "g", options=DOEOptions(levels=levels))
    table = np.genfromtxt(tmp_path / "g" / "relief_levels.csv", delimiter=",", names=True)
    rasters = read_layer_rasters(res.files["gds"], shape, cell_um=1.0, layers=[int(x) for x in table["layer"]])
    h_um = sum(rasters[int(r["layer"])] * r["height_um"] for r in table)
    back = materials.height_to_phase(torch.from_numpy(h_um * 1e-6), wavelength_m=633e-9, material="fused_silica").numpy()
    assert abs(_first_order_efficiency(back, period) - eta_design) < 1e-3
    h_tif = tifffile.imread(res.files["tiff"]).astype(np.float64) * 1e-6
    back_t = materials.height_to_phase(torch.from_numpy(h_tif), wavelength_m=633e-9, material="fused_silica").numpy()
    assert abs(_first_order_efficiency(back_t, period) - eta_design) < 1e-3
    # the same grating on an SLM (12-bit linear LUT) and back from the bitmap
    from fabrication.bitmap import read_bitmap
    from fabrication.slm import SLMOptions, export_slm
    from optics.slm import PhaseLUT
    sd = PhaseDesign(phase, 8e-6, 633e-9, levels=levels)
    r = export_slm(sd, "test-panel-12", tmp_path / "g.png", device_file=device_file, options=SLMOptions())
    t, l = r.sidecar["placement"]["top_px"], r.sidecar["placement"]["left_px"]
    g = read_bitmap(r.path)[t:t + shape[0], l:l + shape[1]].astype(np.int64)
    back_s = PhaseLUT.linear(12).gray_to_phase(torch.from_numpy(g)).numpy()
    assert abs(_first_order_efficiency(back_s, period) - eta_design) < 1e-3


def test_stl_relief_encloses_exactly_the_columns_volume(tmp_path):
    from stl import mesh
    d = _levels_design(L=4, shape=(6, 9))
    res = export_doe(d, tmp_path / "s", options=DOEOptions(levels=4, gds=False, stl=True, stl_base_m=1e-6))
    m = mesh.Mesh.from_file(res.files["stl"])
    cell = d.pixel_pitch_m * 1e6
    vol = m.get_mass_properties()[0]
    assert vol == pytest.approx(((res.height_m * 1e6) + 1.0).sum() * cell ** 2, rel=1e-5)
    tops = m.vectors[(m.normals[:, 2] > 0)]  # horizontal faces facing up: one pair per cell at base + h
    np.testing.assert_allclose(np.sort(np.unique(np.round(tops[:, :, 2], 4))),
                               np.sort(np.unique(np.round(res.height_m * 1e6 + 1.0, 4))), atol=1e-4)
    assert res.sidecar["files"]["stl"]["units"] == "um"


def test_polygons_reproduce_any_raster_exactly():
    """Property: for random rasters (islands in holes, diagonal contacts, border cells) the traced
    polygons rasterise back to the raster, their areas sum to its cell count and none overlap."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=40, deadline=None)
    @given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
    def check(m):
        polys = raster_polygons(m, cell_um=0.5, layer=1)
        assert sum(p.area() for p in polys) == pytest.approx(m.sum() * 0.25, abs=1e-9)
        union = gdstk.boolean(polys, [], "or", precision=1e-4)
        assert sum(p.area() for p in union) == pytest.approx(m.sum() * 0.25, abs=1e-9)
        np.testing.assert_array_equal(rasterize_polygons(polys, m.shape, cell_um=0.5), m)

    check()
