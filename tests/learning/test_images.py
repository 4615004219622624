"""Behaviour of learning.images against its promises (splits, formats, errors)."""
from __future__ import annotations

import gzip
import struct

import h5py
import numpy as np
import pytest
import skimage.io

from learning.errors import ImageSourceError, LearningError
from learning.images import (ImageSet, embedded_images, fit_to_size, folder_images, h5_images,
                             idx_images, npy_images, open_image_source, split_indices,
                             to_unit_gray)

SIZE = 16  # small patches keep the embedded set cheap (images scaled to a 64-px short side)


# ---------------------------------------------------------------- embedded
@pytest.fixture(scope="module")
def embedded_splits():
    return {s: embedded_images(SIZE, split=s, seed=0) for s in ("train", "val", "test")}


def test_embedded_items_are_unit_range_float32_of_requested_size(embedded_splits):
    for split, s in embedded_splits.items():
        assert isinstance(s, ImageSet)
        assert len(s) > 0, split
        for i in (0, len(s) // 2, len(s) - 1):
            img = s[i]
            assert img.shape == (SIZE, SIZE)
            assert img.dtype == np.float32
            assert img.min() >= 0.0 and img.max() <= 1.0


def test_embedded_splits_are_disjoint_at_source_item_level(embedded_splits):
    keys = {split: {s.source_key(i) for i in range(len(s))}
            for split, s in embedded_splits.items()}
    assert keys["train"].isdisjoint(keys["val"])
    assert keys["train"].isdisjoint(keys["test"])
    assert keys["val"].isdisjoint(keys["test"])
    # both kinds of source item (image regions and lfw crops) reach the test split
    assert any(k.startswith("lfw_subset/") for k in keys["test"])
    assert any(not k.startswith("lfw_subset/") for k in keys["test"])
    # the 80/10/10 rule holds roughly at the source level
    n = {k: len(v) for k, v in keys.items()}
    assert n["train"] > 4 * n["val"] and n["train"] > 4 * n["test"]


def test_embedded_is_reproducible_and_seed_only_reorders():
    a = embedded_images(SIZE, split="val", seed=3)
    b = embedded_images(SIZE, split="val", seed=3)
    c = embedded_images(SIZE, split="val", seed=4)
    idx = list(range(0, len(a), max(1, len(a) // 40)))
    np.testing.assert_array_equal(a.stack(idx), b.stack(idx))
    assert not np.array_equal(a.stack(idx), c.stack(idx))
    assert len(a) == len(c)
    assert {a.source_key(i) for i in range(len(a))} == {c.source_key(i) for i in range(len(c))}


def test_embedded_n_beyond_enumeration_draws_crops_of_the_same_split():
    base = embedded_images(SIZE, split="test", seed=1)
    big = embedded_images(SIZE, split="test", seed=1, n=base.n_base + 30)
    assert len(big) == base.n_base + 30
    np.testing.assert_array_equal(big[5], base[5])
    test_keys = {base.source_key(i) for i in range(len(base))}
    extra = range(base.n_base, len(big))
    assert {big.source_key(i) for i in extra} <= test_keys
    again = embedded_images(SIZE, split="test", seed=1, n=base.n_base + 30)
    np.testing.assert_array_equal(big[len(big) - 1], again[len(big) - 1])
    small = embedded_images(SIZE, split="test", seed=1, n=7)
    assert len(small) == 7
    with pytest.raises(IndexError):
        small[7]


def test_embedded_bad_split_is_an_error():
    with pytest.raises(ImageSourceError, match="split='training'"):
        embedded_images(SIZE, split="training")


def test_embedded_subsets_partition_the_sources_and_keep_their_split(embedded_splits):
    from skimage.data import lfw_subset
    faces_px = np.asarray(lfw_subset()[:100])
    for split, whole in embedded_splits.items():
        keys = {whole.source_key(i) for i in range(len(whole))}
        faces = open_image_source("embedded:faces", SIZE, split=split)
        natural = open_image_source("embedded:natural", SIZE, split=split)
        fk = {faces.source_key(i) for i in range(len(faces))}
        nk = {natural.source_key(i) for i in range(len(natural))}
        # faces: only the first 100 lfw_subset crops (its faces), never its 100 non-face crops
        assert fk and all(k.startswith("lfw_subset/") and int(k.split("/")[1]) < 100 for k in fk)
        assert nk and not any(k.startswith("lfw_subset/") for k in nk)
        # every item keeps the split it has in the whole set (no test face leaks into training)
        assert fk <= keys and nk <= keys
        assert fk | nk == {k for k in keys if not (k.startswith("lfw_subset/") and int(k.split("/")[1]) >= 100)}
    # a face item is that face's pixels, resized (up to a dihedral transform)
    f = open_image_source("embedded:faces", 25, split="test")
    k = int(f.source_key(0).split("/")[1])
    ref = to_unit_gray(faces_px[k])
    assert any(np.allclose(f[0], np.rot90(t, r), atol=1e-6) for t in (ref, ref[:, ::-1]) for r in range(4))
    with pytest.raises(ImageSourceError, match="embedded:faces"):
        open_image_source("embedded:nonfaces", SIZE)


def test_embedded_nobench_holds_no_region_of_any_benchmark_image(embedded_splits):
    """``embedded:nobench`` (the training source of the distillation benchmark's standard-protocol
    regime) is the whole embedded set minus every patch of BENCHMARK_IMAGE_NAMES, in every split,
    while the plain ``embedded`` set does hold such patches (the cameraman among them)."""
    from learning.images import BENCHMARK_IMAGE_NAMES
    bench = set(BENCHMARK_IMAGE_NAMES)
    seen_bench = set()
    for split, whole in embedded_splits.items():
        keys = {whole.source_key(i) for i in range(len(whole))}
        nb = open_image_source("embedded:nobench", SIZE, split=split)
        nk = {nb.source_key(i) for i in range(len(nb))}
        assert nk and not {k.split("/")[0] for k in nk} & bench
        assert nk == {k for k in keys if k.split("/")[0] not in bench}
        seen_bench |= {k.split("/")[0] for k in keys} & bench
        # extra random crops beyond the enumeration stay in the subset too
        more = open_image_source("embedded:nobench", SIZE, split=split, n=len(nb) + 50)
        assert not {more.source_key(i).split("/")[0] for i in range(len(nb), len(nb) + 50)} & bench
    assert "camera" in seen_bench


# ---------------------------------------------------------------- normalisation
def test_to_unit_gray_rules():
    np.testing.assert_array_equal(to_unit_gray(np.array([[0, 255]], np.uint8)), [[0.0, 1.0]])
    np.testing.assert_allclose(to_unit_gray(np.array([[0, 6553]], np.uint16)),
                               [[0.0, 6553 / 65535]], rtol=1e-6)
    # floats already in [0, 1] are kept; others are min-max normalised per image
    np.testing.assert_array_equal(to_unit_gray(np.array([[0.25, 0.5]])), [[0.25, 0.5]])
    np.testing.assert_allclose(to_unit_gray(np.array([[-2.0, 0.0, 2.0]])), [[0.0, 0.5, 1.0]])
    # int64 holding 8-bit values is divided by 255, not by the int64 maximum
    np.testing.assert_allclose(to_unit_gray(np.array([[51, 255]], np.int64)), [[0.2, 1.0]])
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_allclose(to_unit_gray(red), np.full((2, 2), 0.2125), atol=1e-7)
    with pytest.raises(ImageSourceError, match="NaN"):
        to_unit_gray(np.array([[np.nan, 0.0]]))
    with pytest.raises(ImageSourceError, match="shape"):
        to_unit_gray(np.zeros((2, 3, 5, 7)))


def test_fit_to_size_modes():
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8) / 47
    np.testing.assert_array_equal(fit_to_size(img, 4, "crop"), img[1:5, 2:6])
    out = fit_to_size(img, 3, "resize")
    assert out.shape == (3, 3) and out.dtype == np.float32
    with pytest.raises(ImageSourceError, match="resize='error'"):
        fit_to_size(img, 4, "error")
    with pytest.raises(ImageSourceError, match="smaller than"):
        fit_to_size(img, 7, "crop")


# ---------------------------------------------------------------- folders
def _png(path, shape, value=128):
    skimage.io.imsave(path, np.full(shape, value, np.uint8), check_contrast=False)


def test_folder_reads_resizes_and_converts(tmp_path):
    _png(tmp_path / "a.png", (20, 30), 255)
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[..., 1] = 255
    skimage.io.imsave(tmp_path / "b.png", rgb, check_contrast=False)
    (tmp_path / "notes.txt").write_text("ignored")
    s = folder_images(tmp_path, 8)
    assert len(s) == 2
    np.testing.assert_array_equal(s[0], np.ones((8, 8), np.float32))
    np.testing.assert_allclose(s[1], np.full((8, 8), 0.7154), atol=1e-6)
    assert s.source_key(1) == "b.png"


def test_folder_mixed_sizes_with_resize_error_names_two_files(tmp_path):
    _png(tmp_path / "first.png", (16, 16))
    _png(tmp_path / "second.png", (16, 20))
    with pytest.raises(ImageSourceError) as ei:
        folder_images(tmp_path, 16, resize="error")
    msg = str(ei.value)
    assert "first.png" in msg and "second.png" in msg
    assert "16×20" in msg and "resize='resize'" in msg


def test_folder_unreadable_file_is_named(tmp_path):
    _png(tmp_path / "good.png", (8, 8))
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageSourceError, match="broken.png"):
        folder_images(tmp_path, 8)


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ImageSourceError, match="no image files"):
        folder_images(tmp_path, 8)


# ---------------------------------------------------------------- arrays
def test_npy_round_trip_exact(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "x.npy", data)
    s = npy_images(tmp_path / "x.npy", 6, resize="error")
    assert len(s) == 5
    np.testing.assert_array_equal(s.stack(), (data / 255.0).astype(np.float32))


def test_npz_multi_key_without_key_lists_keys(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.zeros((2, 4, 4)), labels=np.zeros(2))
    with pytest.raises(ImageSourceError) as ei:
        npy_images(tmp_path / "d.npz", 4)
    assert "train" in str(ei.value) and "labels" in str(ei.value) and "key=" in str(ei.value)
    assert len(npy_images(tmp_path / "d.npz", 4, key="train")) == 2
    with pytest.raises(ImageSourceError, match="no array 'nope'"):
        npy_images(tmp_path / "d.npz", 4, key="nope")


def test_h5_missing_dataset_names_it_and_lists_existing(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["faces"] = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ImageSourceError) as ei:
        h5_images(tmp_path / "d.h5", 4)
    assert "'images'" in str(ei.value) and "faces" in str(ei.value)
    s = h5_images(tmp_path / "d.h5", 4, dataset="faces")
    assert len(s) == 3 and s[2].shape == (4, 4)


def _write_idx(path, data: np.ndarray, magic=0x00000803, compress=False):
    n, h, w = data.shape
    raw = struct.pack(">IIII", magic, n, h, w) + data.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_exact(tmp_path, compress):
    data = np.random.default_rng(1).integers(0, 256, size=(4, 7, 5), dtype=np.uint8)
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else ""))
    _write_idx(p, data, compress=compress)
    s = idx_images(p, 5, resize="crop")  # 7×5 → centre 5×5 crop: rows 1..5
    assert len(s) == 4
    np.testing.assert_array_equal(s.stack(), (data[:, 1:6, :] / 255.0).astype(np.float32))


def test_idx_bad_magic_is_explained(tmp_path):
    p = tmp_path / "train-labels-idx1-ubyte"
    _write_idx(p, np.zeros((2, 3, 3)), magic=0x00000801)
    with pytest.raises(ImageSourceError) as ei:
        idx_images(p, 3)
    assert "0x00000801" in str(ei.value) and "labels" in str(ei.value)


def test_idx_truncated_is_an_error(tmp_path):
    p = tmp_path / "t-idx3-ubyte"
    p.write_bytes(struct.pack(">IIII", 0x803, 10, 4, 4) + bytes(20))
    with pytest.raises(ImageSourceError, match="truncated"):
        idx_images(p, 4)


# ---------------------------------------------------------------- splits / dispatcher
def test_split_indices_disjoint_cover_and_reproducible():
    parts = [split_indices(101, s, seed=5) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [81, 10, 10]
    assert sorted(np.concatenate(parts).tolist()) == list(range(101))
    np.testing.assert_array_equal(split_indices(101, "val", seed=5), parts[1])
    assert not np.array_equal(split_indices(101, "val", seed=6), parts[1])
    with pytest.raises(ImageSourceError, match="fractions"):
        split_indices(10, "train", fractions=(0.5, 0.5, 0.5))


def test_open_image_source_dispatch_and_split(tmp_path):
    data = np.random.default_rng(2).random((20, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    tr = open_image_source(tmp_path / "x.npy", 8, split="train", seed=0, resize="error")
    te = open_image_source(tmp_path / "x.npy", 8, split="test", seed=0, resize="error")
    assert (len(tr), len(te)) == (16, 2)
    assert {tr.source_key(i) for i in range(len(tr))}.isdisjoint(
        {te.source_key(i) for i in range(len(te))})
    np.testing.assert_array_equal(te[0], data[split_indices(20, "test", 0)[0]])
    assert len(open_image_source(tmp_path / "x.npy", 8, split="all", n=5)) == 5
    emb = open_image_source("embedded", SIZE, split="val", n=3)
    assert len(emb) == 3 and emb[0].shape == (SIZE, SIZE)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 8, 8)))
    assert len(open_image_source(tmp_path / "train-images-idx3-ubyte", 8, split="all")) == 10
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(ImageSourceError, match="cannot tell the format"):
        open_image_source(tmp_path / "data.csv", 8)
    with pytest.raises(LearningError, match="neither 'embedded' nor an existing path"):
        open_image_source(tmp_path / "missing", 8)


def test_benchmark_images_are_the_named_sample_images_resized():
    import skimage.data

    from learning.images import BENCHMARK_IMAGE_NAMES, benchmark_images, fit_to_size
    names, imgs = benchmark_images(64)
    assert names == BENCHMARK_IMAGE_NAMES and imgs.shape == (len(names), 64, 64)
    ref = fit_to_size(skimage.data.camera().astype(np.float32) / 255.0, 64, "resize")
    np.testing.assert_allclose(imgs[names.index("camera")], ref, atol=1e-6)
    assert float(imgs.min()) >= 0.0 and float(imgs.max()) <= 1.0
