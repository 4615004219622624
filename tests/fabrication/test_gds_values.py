"""fabrication.gds by value: boundary loops, signed areas, etch-mask bits, polygon layers and
datatypes, the rasteriser's half-open cell-centre rule (slanted edges, polygons reaching outside
the design, slivers) and GDSII units read back with gdstk. Hand-computed small cases; fast
(the mutation selection of fabrication/gds.py and fabrication/doe.py runs them per mutant)."""
import numpy as np
import pytest

import gdstk
from fabrication.errors import FabricationError
from fabrication.gds import (_signed_area, etch_masks, layer_rasters, raster_polygons, rasterize_polygons,
                             read_layer_rasters, trace_loops)


def _centres_inside(shape, cell, inside):
    """Reference raster: ``inside(x, y)`` at every cell centre (row 0 at the top, y up)."""
    h, w = shape
    r, c = np.mgrid[0:h, 0:w]
    return inside((c + 0.5) * cell, (h - 0.5 - r) * cell)


# -- trace_loops / _signed_area -------------------------------------------------------------------
def test_trace_loops_of_one_cell_and_of_a_ring_by_hand():
    [lp] = trace_loops(np.ones((1, 1), bool))
    # counter-clockwise, corners only, starting with the cell's bottom side run +x
    np.testing.assert_array_equal(lp, [[0, 0], [1, 0], [1, 1], [0, 1]])
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    loops = trace_loops(ring)
    assert len(loops) == 2
    areas = sorted(_signed_area(lp) for lp in loops)
    assert areas == [-1.0, 9.0]  # hole clockwise (−1 cell), outer counter-clockwise (+9 cells)
    by_area = {_signed_area(lp): lp for lp in loops}
    np.testing.assert_array_equal(by_area[9.0], [[0, 0], [3, 0], [3, 3], [0, 3]])
    # the hole loop starts with the bottom side of the cell above the hole (row 0, col 1), run +x
    np.testing.assert_array_equal(by_area[-1.0], [[1, 2], [2, 2], [2, 1], [1, 1]])


def test_trace_loops_keeps_diagonal_neighbours_apart_and_starts_on_a_bottom_side():
    m = np.array([[1, 0, 0],
                  [0, 1, 1],
                  [0, 1, 0]], bool)
    loops = trace_loops(m)
    assert sorted(_signed_area(lp) for lp in loops) == [1.0, 3.0]  # two 4-connected components
    h = m.shape[0]
    for lp in loops:
        (x0, y0), (x1, y1) = lp[0], lp[1]
        assert x1 > x0 and y1 == y0 and m[h - 1 - y0, x0]  # first edge: an inside cell's bottom side
    assert trace_loops(np.zeros((2, 3), bool)) == []


def test_signed_area_is_the_shoelace_area_with_orientation():
    rect = np.array([[0, 0], [3, 0], [3, 2], [0, 2]])
    assert _signed_area(rect) == 6.0
    assert _signed_area(rect[::-1]) == -6.0
    ell = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 3], [0, 3]])  # an L of 4 unit cells
    assert _signed_area(ell) == 4.0
    tri = np.array([[0, 0], [4, 0], [1, 3]])
    assert _signed_area(tri) == 6.0


# -- raster_polygons ------------------------------------------------------------------------------
def test_raster_polygons_layer_and_datatype():
    one = np.zeros((3, 3), bool)
    one[0, 0] = True
    [p] = raster_polygons(one, cell_um=2.0, layer=7)
    assert (p.layer, p.datatype) == (7, 0)  # datatype 0 unless asked
    np.testing.assert_allclose(p.points, [[0, 4], [2, 4], [2, 6], [0, 6]])  # row 0 is the top
    [p] = raster_polygons(one, cell_um=2.0, layer=7, datatype=3)
    assert (p.layer, p.datatype) == (7, 3)
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    polys = raster_polygons(ring, cell_um=1.0, layer=4, datatype=5)  # a component with a hole
    assert polys and all((q.layer, q.datatype) == (4, 5) for q in polys)
    assert sum(q.area() for q in polys) == pytest.approx(8.0, rel=1e-12)


def test_holed_polygon_uses_the_requested_precision():
    # cells of 12.3 nm: off gdstk's default 1e-3 µm boolean grid, on a 1e-6 µm one. The hole's
    # keyhole polygon must keep the exact area (8 cells) — rounding vertices to 1 nm would move
    # each edge by up to 0.5 nm, a few % of the area.
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    cell = 0.0123
    polys = raster_polygons(ring, cell_um=cell, layer=1, precision_um=1e-6)
    assert sum(q.area() for q in polys) == pytest.approx(8 * cell ** 2, rel=1e-6)


# -- etch masks and layers ------------------------------------------------------------------------
def test_etch_masks_are_the_bits_of_the_etch_count_by_hand():
    lv = np.array([[0, 1, 2, 3]])
    masks = etch_masks(lv, 4)
    # m = 3 − l = [3, 2, 1, 0]; mask 1 etches h_2π/2 (bit 1 of m), mask 2 h_2π/4 (bit 0)
    assert len(masks) == 2 and all(k.dtype == np.bool_ for k in masks)
    np.testing.assert_array_equal(masks[0], [[True, True, False, False]])
    np.testing.assert_array_equal(masks[1], [[True, False, True, False]])
    [m2] = etch_masks(np.array([[0, 1]]), 2)  # two levels: one mask, open over level 0
    np.testing.assert_array_equal(m2, [[True, False]])
    assert len(etch_masks(np.arange(8)[None], 8)) == 3


@pytest.mark.parametrize("levels, fix", [(1, 2), (0, 2), (-4, 2), (3, 4), (6, 8), (12, 16)])
def test_etch_masks_refuse_other_level_counts_with_the_next_power_of_two(levels, fix):
    with pytest.raises(FabricationError) as exc:
        etch_masks(np.zeros((1, 1), np.int64), levels)
    msg = str(exc.value)
    assert f"got {levels};" in msg and f"use --levels {fix} or --gds-mode levels" in msg
    assert "power-of-two" in msg


def test_layer_rasters_levels_and_unknown_mode():
    lv = np.array([[0, 2], [1, 2]])
    rs = layer_rasters(lv, 3, "levels")
    assert len(rs) == 3
    for l, r in enumerate(rs):
        np.testing.assert_array_equal(r, lv == l)
    with pytest.raises(FabricationError, match=r"gds mode must be one of \('levels', 'etch'\), got 'bogus'"):
        layer_rasters(lv, 4, "bogus")


# -- rasterize_polygons ---------------------------------------------------------------------------
def test_rasterize_slanted_edges_match_the_analytic_shapes():
    cell, shape = 0.5, (5, 6)  # cell ≠ 1 so that a length mistaken for a count shows
    # a diamond |x − 1.5| + |y − 1.25| < 0.85 (no cell centre on its boundary)
    diamond = [(1.5 + 0.85, 1.25), (1.5, 1.25 + 0.85), (1.5 - 0.85, 1.25), (1.5, 1.25 - 0.85)]
    got = rasterize_polygons([diamond], shape, cell_um=cell)
    want = _centres_inside(shape, cell, lambda x, y: np.abs(x - 1.5) + np.abs(y - 1.25) < 0.85)
    assert got.dtype == np.bool_ and 0 < want.sum() < want.size
    np.testing.assert_array_equal(got, want)
    tri = [(0.0, 0.0), (2.9, 0.0), (0.0, 2.3)]  # a triangle (3 vertices) with one slanted edge
    got = rasterize_polygons([np.array(tri)], shape, cell_um=cell)
    np.testing.assert_array_equal(got, _centres_inside(shape, cell, lambda x, y: x / 2.9 + y / 2.3 < 1))


def test_rasterize_is_half_open_at_cell_centres():
    # edges through cell centres: x ∈ [x_left, x_right), y ∈ [y_low, y_high)
    cell, shape = 2.0, (3, 4)
    rect = [(1.0, 1.0), (5.0, 1.0), (5.0, 3.0), (1.0, 3.0)]  # x ∈ [1, 5), y ∈ [1, 3) in µm
    want = np.zeros(shape, bool)
    want[2, 0:2] = True  # centres x = 1, 3 (not 5), y = 1 (not 3): the bottom row
    np.testing.assert_array_equal(rasterize_polygons([rect], shape, cell_um=cell), want)


def test_rasterize_clips_polygons_reaching_outside_the_design():
    shape, cell = (3, 4), 1.0
    cases = {  # polygon → expected cells (centres x = c + 0.5, y = 2.5 − r)
        "left, below and above": ([(-3, -2), (1.2, -2), (1.2, 10), (-3, 10)], np.s_[:, 0:1]),
        "right": ([(2.2, 0.7), (9, 0.7), (9, 1.9), (2.2, 1.9)], np.s_[1:2, 2:4]),
        "below only": ([(0.2, -5), (3.8, -5), (3.8, 1.7), (0.2, 1.7)], np.s_[1:3, 0:4]),
    }
    for name, (poly, sl) in cases.items():
        want = np.zeros(shape, bool)
        want[sl] = True
        np.testing.assert_array_equal(rasterize_polygons([poly], shape, cell_um=cell), want, err_msg=name)


def test_rasterize_slivers_and_degenerate_input_cover_nothing():
    shape = (2, 3)
    sliver = [(0.0, 0.1), (3.0, 0.1), (3.0, 0.4), (0.0, 0.4)]  # between y = 0 and the first centre row
    got = rasterize_polygons([sliver, [(0, 0), (3, 2)]], shape, cell_um=1.0)  # + a 2-point "polygon"
    assert got.dtype == np.bool_ and not got.any()
    empty = rasterize_polygons([], shape, cell_um=1.0)
    assert empty.dtype == np.bool_ and empty.shape == shape and not empty.any()


# -- GDSII read back --------------------------------------------------------------------------------
def test_read_layer_rasters_converts_the_file_user_unit(tmp_path):
    # a library in nanometre user units: the polygon 0 … 4000 nm × 0 … 2000 nm covers the two
    # left cells of the bottom row of a 2 × 3 design of 2 µm cells
    lib = gdstk.Library(unit=1e-9, precision=1e-12)
    cell = lib.new_cell("TOP")
    cell.add(gdstk.rectangle((0, 0), (4000, 2000), layer=3))
    cell.add(gdstk.rectangle((0, 0), (6000, 4000), layer=9))  # a layer not asked for
    path = tmp_path / "nm.gds"
    lib.write_gds(str(path))
    got = read_layer_rasters(path, (2, 3), cell_um=2.0, layers=[3, 4])
    assert sorted(got) == [3, 4]
    np.testing.assert_array_equal(got[3], [[False, False, False], [True, True, False]])
    assert not got[4].any()


def test_read_layer_rasters_refuses_a_damaged_file_naming_it(tmp_path):
    bad = tmp_path / "broken.gds"
    bad.write_bytes(b"not a GDSII stream" * 8)
    with pytest.raises(FabricationError) as exc:
        read_layer_rasters(bad, (2, 2), cell_um=1.0, layers=[1])
    msg = str(exc.value)
    assert str(bad) in msg and "cannot be read as GDSII" in msg and "export it again" in msg


def test_gdstk_polygons_rasterise_back_to_their_raster():
    # gdstk.Polygon objects (not point arrays), unit cells: vertical edges of length exactly 1
    m = np.zeros((6, 7), bool)
    m[0, 0] = True            # a single corner cell
    m[1:6, 1:6] = True
    m[2:5, 2:5] = False       # a hole …
    m[3, 3] = True            # … with an island
    m[5, 6] = True            # touching the ring only diagonally
    polys = raster_polygons(m, cell_um=1.0, layer=1)
    assert all(isinstance(p, gdstk.Polygon) for p in polys)
    np.testing.assert_array_equal(rasterize_polygons(polys, m.shape, cell_um=1.0), m)
    assert sum(p.area() for p in polys) == pytest.approx(m.sum(), rel=1e-12)


def test_random_rasters_trace_to_exact_polygons():
    """Seeded random rasters (islands in holes, diagonal contacts, border cells, single large
    components): every loop is an axis-parallel closed corner path, the loops' signed areas sum
    to the cell count, and the merged polygons cover exactly the raster without overlaps."""
    rng = np.random.default_rng(20)
    for t in range(30):
        h, w = rng.integers(1, 13, 2)
        m = rng.random((h, w)) < rng.uniform(0.3, 0.9)
        loops = trace_loops(m)
        for lp in loops:
            step = np.diff(np.vstack([lp, lp[:1]]), axis=0)
            assert np.all((step[:, 0] == 0) != (step[:, 1] == 0)), (t, lp)  # one axis per edge
            nxt = np.roll(step, -1, axis=0)
            turn = step[:, 0] * nxt[:, 1] - step[:, 1] * nxt[:, 0]  # z of the 2-D cross product
            assert np.all(turn != 0), (t, lp)  # corners only
        assert sum(_signed_area(lp) for lp in loops) == m.sum()
        polys = raster_polygons(m, cell_um=0.5, layer=1)
        assert sum(p.area() for p in polys) == pytest.approx(m.sum() * 0.25, abs=1e-9)
        union = gdstk.boolean(polys, [], "or", precision=1e-4)
        assert sum(p.area() for p in union) == pytest.approx(m.sum() * 0.25, abs=1e-9)
        np.testing.assert_array_equal(rasterize_polygons(polys, m.shape, cell_um=0.5), m)
