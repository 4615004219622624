"""Image sources for building phase-retrieval objects.

Every source is an :class:`ImageSet`: a sequence whose items are ``(size, size)`` float32 numpy
arrays, grayscale, with values in ``[0, 1]``. Images are read lazily where the storage allows
it (folders, ``.npy`` memory maps, HDF5, raw IDX), so a source never has to fit in memory.

Sources
-------
* :func:`embedded_images` — the default; no download. Patches of the sample images that
  scikit-image ships inside its wheel, plus the 200 ``lfw_subset`` 25×25 crops, split into
  train/val/test **by source item** (see below) and augmented with the 8 flips/90° rotations.
  ``"embedded:natural"`` keeps the sample-image patches only, ``"embedded:faces"`` the 100
  faces of ``lfw_subset`` only, ``"embedded:nobench"`` every item except the patches of the
  standard CDP benchmark's test images (:data:`BENCHMARK_IMAGE_NAMES`, the cameraman among them),
  for models that a benchmark test set may score.
* :func:`folder_images` — a folder of ``.png/.jpg/.jpeg/.tif/.tiff/.bmp`` files.
* :func:`npy_images` — a ``.npy`` array or one array of a ``.npz`` archive.
* :func:`h5_images` — a dataset of an HDF5 file.
* :func:`idx_images` — MNIST / Fashion-MNIST IDX image files already on disk
  (``train-images-idx3-ubyte`` or ``.gz``).
* :func:`open_image_source` — dispatches a config string (``"embedded"`` or a path) to the above
  and applies the train/val/test split.

Value normalisation (:func:`to_unit_gray`)
------------------------------------------
* ``bool`` → 0 / 1.
* ``uint8``, ``uint16``, ``uint32``, ``int8``, ``int16`` → divided by the dtype maximum
  (255, 65535, …), so a dim 16-bit image stays dim. A signed image with negative values is
  min-max normalised instead.
* ``int32``/``int64``/``uint64`` (not image dtypes; typical of ``np.array(list_of_ints)``) →
  divided by 255 if all values lie in [0, 255], by 65535 if in [0, 65535], else min-max.
* floats → used as they are when every value of the image lies in ``[0, 1]``; otherwise
  min-max normalised per image (a constant image becomes all zeros). NaN/inf → error.
* colour → gray with the ITU-R 709 luma weights ``0.2125 R + 0.7154 G + 0.0721 B`` (those of
  :func:`skimage.color.rgb2gray`); an alpha channel is dropped.

Resizing (``resize=``)
----------------------
* ``"resize"`` (default): centre-crop to the largest centred square (so the aspect ratio is
  kept), then :func:`skimage.transform.resize` to ``size × size`` with bilinear interpolation
  and ``anti_aliasing=True`` (a Gaussian pre-filter when shrinking).
* ``"crop"``: centre crop to ``size × size``; an image smaller than ``size`` is an error.
* ``"error"``: no resampling; every image must already be ``size × size``.

Train/val/test splits
---------------------
* Embedded data: every *source item* — a ``2·size × 2·size`` region of a sample image, or one
  ``lfw_subset`` crop — goes to train/val/test by a hash of its name (BLAKE2b → u ∈ [0, 1):
  train if u < 0.8, val if u < 0.9, else test). All patches and augmentations of a region stay
  in the region's split, so no test pixel is ever seen in training. The assignment does not
  depend on ``seed``; ``seed`` only orders the items (and draws the extra random crops when
  more items are requested than the split holds). Region names are ``<image>/r<row>c<col>`` on
  a grid that depends only on the image's aspect ratio, so the split is (up to rounding) the
  same for every ``size``.
* User data: :func:`split_indices` — a seeded permutation of ``range(n)`` cut 80/10/10.
"""
from __future__ import annotations

import abc
import gzip
import hashlib
import os
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from optics.fileio import refuse_foreign_data

from .errors import ImageSourceError

__all__ = [
    "ImageSet", "SubsetImageSet", "embedded_images", "folder_images", "npy_images",
    "h5_images", "idx_images", "open_image_source", "split_indices", "to_unit_gray",
    "fit_to_size", "EMBEDDED_IMAGE_NAMES", "BENCHMARK_IMAGE_NAMES", "benchmark_images", "training_pool",
    "MATPLOTLIB_POOL_NAMES", "POOL_VALIDATION_NAMES", "EMBEDDED_SUBSETS", "IMAGE_SUFFIXES", "SPLITS",
]

#: Split names accepted everywhere; ``"all"`` means no split.
SPLITS = ("train", "val", "test", "all")
#: Default split fractions (train, val, test).
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
#: File suffixes :func:`folder_images` reads (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: scikit-image sample images used by :func:`embedded_images` (those shipped in the wheel;
#: any that would need a download is skipped). ``cat`` is left out: it is ``chelsea``.
EMBEDDED_IMAGE_NAMES = (
    "camera", "astronaut", "coins", "moon", "text", "page", "coffee", "chelsea", "rocket",
    "brick", "grass", "gravel", "horse", "clock", "immunohistochemistry", "hubble_deep_field",
    "retina", "cell", "shepp_logan_phantom",
)
#: Whole sample images held out as the default test set of the standard CDP benchmark
#: (``benchmarks/cdp_benchmark.py``): six natural and two scientific images. A training pool for a
#: model that the benchmark scores must leave every one of them out whole (not only the hash-split
#: regions: a patch of the cameraman at another size would be in a training split).
BENCHMARK_IMAGE_NAMES = ("camera", "astronaut", "coins", "moon", "coffee", "chelsea", "cell",
                         "immunohistochemistry")
RESIZE_MODES = ("resize", "crop", "error")
_RESIZE_MODES = RESIZE_MODES
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)
_IDX_IMAGES_MAGIC = 0x00000803


# --------------------------------------------------------------------------------------------
# normalisation and resizing
# --------------------------------------------------------------------------------------------
def to_unit_gray(img, what: str = "image") -> np.ndarray:
    """Convert one image to a float32 grayscale ``(H, W)`` array in ``[0, 1]``.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (RGB) and ``(H, W, 4)`` (RGBA) arrays of
    bool, integer or float dtype; the value rules are in the module docstring. ``what`` names
    the image in error messages (a file name, ``"array.npy[12]"``).
    """
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        pass
    elif a.ndim != 2:
        raise ImageSourceError(
            f"{what} has shape {a.shape}; expected a 2-D grayscale image (H, W) or colour "
            f"(H, W, 3|4); convert multi-page / volumetric data to single images first")
    if a.size == 0:
        raise ImageSourceError(f"{what} is empty (shape {a.shape})")
    if a.dtype == np.bool_:
        u = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        u = _int_to_unit(a, what)
    elif np.issubdtype(a.dtype, np.floating):
        u = a.astype(np.float64)
        if not np.all(np.isfinite(u)):
            raise ImageSourceError(
                f"{what} contains NaN or inf; clean the data (e.g. np.nan_to_num) first")
        lo, hi = float(u.min()), float(u.max())
        if lo < 0.0 or hi > 1.0:
            u = (u - lo) / (hi - lo) if hi > lo else np.zeros_like(u)
    else:
        raise ImageSourceError(
            f"{what} has dtype {a.dtype}; expected bool, integer or float pixel values "
            f"(complex data is not an image — encode amplitude and phase separately)")
    if u.ndim == 3:
        c = u.shape[-1]
        if c == 1:
            u = u[..., 0]
        else:
            u = np.tensordot(u[..., :3].astype(np.float64), _LUMA, axes=([-1], [0]))
    return np.clip(u, 0.0, 1.0).astype(np.float32)


def _int_to_unit(a: np.ndarray, what: str) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if a.dtype in (np.uint8, np.uint16, np.uint32, np.int8, np.int16) and lo >= 0:
        return a.astype(np.float64) / float(np.iinfo(a.dtype).max)
    if lo >= 0 and a.dtype not in (np.int8, np.int16):
        if hi <= 255:
            return a.astype(np.float64) / 255.0
        if hi <= 65535:
            return a.astype(np.float64) / 65535.0
    f = a.astype(np.float64)
    return (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)


def fit_to_size(img: np.ndarray, size: int, resize: str = "resize",
                what: str = "image") -> np.ndarray:
    """Bring a ``(H, W)`` float image to ``(size, size)`` by ``resize`` mode (module docstring)."""
    from skimage.transform import resize as sk_resize

    _check_resize_mode(resize)
    h, w = img.shape
    if (h, w) == (size, size):
        return np.ascontiguousarray(img, dtype=np.float32)
    if resize == "error":
        raise ImageSourceError(
            f"{what} is {h}×{w} pixels, not {size}×{size}, and resize='error' forbids "
            f"resampling; pass resize='resize' (scale) or resize='crop' (centre crop), or set "
            f"the object size to match the data")
    if resize == "crop":
        if h < size or w < size:
            raise ImageSourceError(
                f"{what} is {h}×{w} pixels, smaller than the {size}×{size} crop; pass "
                f"resize='resize' to scale it up, or choose size ≤ {min(h, w)}")
        t, l = (h - size) // 2, (w - size) // 2
        return np.ascontiguousarray(img[t:t + size, l:l + size], dtype=np.float32)
    s = min(h, w)
    t, l = (h - s) // 2, (w - s) // 2
    sq = img[t:t + s, l:l + s].astype(np.float64)
    out = sk_resize(sq, (size, size), order=1, mode="reflect", anti_aliasing=True,
                    preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _check_resize_mode(resize: str) -> None:
    if resize not in _RESIZE_MODES:
        raise ImageSourceError(
            f"resize={resize!r} is not a resize mode; use one of {', '.join(_RESIZE_MODES)}")


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ImageSourceError(f"image size must be a positive integer (pixels); got {size!r}")
    return int(size)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ImageSourceError(f"split={split!r} is not a split; use one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------------------------
# ImageSet
# --------------------------------------------------------------------------------------------
def sequence_index(i, n: int, what: str, context: str = "") -> int:
    """``i`` (negative counts from the end) as an index into ``n`` items, or a TypeError /
    IndexError naming ``what`` — the one index check of the learning sequences."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} index must be an integer, got {type(i).__name__}")
    j = int(i) + n if i < 0 else int(i)
    if not 0 <= j < n:
        raise IndexError(f"{what} index {int(i)} out of range for {n} {what}s{context}")
    return j


class ImageSet(Sequence, abc.ABC):
    """A sequence of ``(size, size)`` float32 grayscale images in ``[0, 1]``.

    ``len(s)`` items; ``s[i]`` (negative ``i`` allowed) returns one numpy array; ``s.subset(idx)``
    a view on some items; ``s.stack()`` all (or some) items as one ``(k, size, size)`` array;
    ``s.source_key(i)`` the name of the source item image ``i`` comes from (a file name, an
    array index, an embedded region), used to check split disjointness. Sets are picklable
    (open file handles are dropped and reopened lazily), so they work in DataLoader workers.
    """

    size: int
    description: str

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def _get(self, i: int) -> np.ndarray:
        """Image ``i`` (0 ≤ i < len) as a ``(size, size)`` float32 array in [0, 1]."""

    @abc.abstractmethod
    def source_key(self, i: int) -> str:
        """Name of the source item image ``i`` comes from."""

    def _index(self, i) -> int:
        return sequence_index(i, len(self), "image", f" ({self.description})")

    def __getitem__(self, i) -> np.ndarray:
        if isinstance(i, slice):
            return self.subset(range(*i.indices(len(self))))
        return self._get(self._index(i))

    def subset(self, indices) -> "SubsetImageSet":
        """The images at ``indices`` (any integer sequence, order kept) as a new ImageSet."""
        return SubsetImageSet(self, indices)

    def stack(self, indices=None) -> np.ndarray:
        """Images at ``indices`` (default: all) stacked into a ``(k, size, size)`` float32 array."""
        idx = range(len(self)) if indices is None else indices
        out = np.empty((len(idx), self.size, self.size), dtype=np.float32)
        for k, i in enumerate(idx):
            out[k] = self[i]
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}: {len(self)} × {self.size}²>"


class SubsetImageSet(ImageSet):
    """Items ``indices`` of another :class:`ImageSet`."""

    def __init__(self, parent: ImageSet, indices):
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ImageSourceError(f"subset indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        n = len(parent)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ImageSourceError(
                f"subset indices span [{idx.min()}, {idx.max()}] but the source has {n} images")
        self.parent = parent
        self.indices = np.where(idx < 0, idx + n, idx)
        self.size = parent.size
        self.description = f"{parent.description} subset"

    def __len__(self) -> int:
        return int(self.indices.size)

    def _get(self, i: int) -> np.ndarray:
        return self.parent[int(self.indices[i])]

    def source_key(self, i: int) -> str:
        return self.parent.source_key(int(self.indices[self._index(i)]))


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def split_indices(n: int, split: str, seed: int = 0,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Indices (sorted, int64) of ``split`` among ``n`` items.

    A permutation of ``range(n)`` drawn from ``numpy.random.default_rng(seed)`` is cut at
    ``round(n·f_train)`` and ``round(n·(f_train + f_val))``: the three splits are disjoint,
    cover ``range(n)``, and depend only on ``(n, seed, fractions)``. ``split="all"`` returns
    ``arange(n)``.
    """
    _check_split(split)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ImageSourceError(f"number of items must be a non-negative integer; got {n!r}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not np.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-9:
        raise ImageSourceError(
            f"split fractions {fractions!r} must be three non-negative numbers "
            f"(train, val, test) summing to 1, e.g. (0.8, 0.1, 0.1)")
    if split == "all":
        return np.arange(n, dtype=np.int64)
    perm = np.random.default_rng(int(seed)).permutation(int(n))
    b1 = int(round(n * fr[0]))
    b2 = max(b1, min(int(n), int(round(n * (fr[0] + fr[1])))))
    part = {"train": perm[:b1], "val": perm[b1:b2], "test": perm[b2:]}[split]
    return np.sort(part).astype(np.int64)


def _hash_unit(key: str) -> float:
    """Deterministic u ∈ [0, 1) from a string (BLAKE2b, 64 bits; independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


def _hash_split(key: str, fractions=DEFAULT_FRACTIONS) -> str:
    u = _hash_unit(key)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


# --------------------------------------------------------------------------------------------
# embedded images
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _sample_image(name: str) -> np.ndarray | None:
    """A scikit-image sample image as float32 gray in [0, 1], or None if it needs a download."""
    import skimage.data

    try:
        img = getattr(skimage.data, name)()
    except Exception:  # noqa: BLE001 — pooch missing / no network / renamed: skip the image
        return None
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    return to_unit_gray(img, f"skimage.data.{name}")


@lru_cache(maxsize=8)
def _embedded_sources(size: int) -> tuple[tuple[str, ...], tuple[np.ndarray, ...],
                                         tuple[bool, ...]]:
    """All embedded source items at ``size``: (keys, pixel arrays, is_region flags).

    Regions are ``2·size × 2·size`` blocks of the sample image scaled so that its short side is
    ``4·size`` (grid centred; leftover border pixels unused); faces are ``size × size``.
    """
    from skimage.data import lfw_subset
    from skimage.transform import resize as sk_resize

    keys: list[str] = []
    arrays: list[np.ndarray] = []
    regions: list[bool] = []
    r2 = 2 * size
    for name in EMBEDDED_IMAGE_NAMES:
        img = _sample_image(name)
        if img is None:
            continue
        h, w = img.shape
        scale = 4 * size / min(h, w)
        hh, ww = max(r2, int(round(h * scale))), max(r2, int(round(w * scale)))
        big = np.clip(sk_resize(img.astype(np.float64), (hh, ww), order=1, mode="reflect",
                                anti_aliasing=True, preserve_range=True), 0, 1)
        nr, nc = hh // r2, ww // r2
        t0, l0 = (hh - nr * r2) // 2, (ww - nc * r2) // 2
        for r in range(nr):
            for c in range(nc):
                blk = big[t0 + r * r2:t0 + (r + 1) * r2, l0 + c * r2:l0 + (c + 1) * r2]
                keys.append(f"{name}/r{r}c{c}")
                arrays.append(np.ascontiguousarray(blk, dtype=np.float32))
                regions.append(True)
    faces = np.asarray(lfw_subset(), dtype=np.float64)
    for k in range(faces.shape[0]):
        keys.append(f"lfw_subset/{k}")
        arrays.append(fit_to_size(to_unit_gray(faces[k]), size, "resize"))
        regions.append(False)
    for a in arrays:
        a.setflags(write=False)
    return tuple(keys), tuple(arrays), tuple(regions)


def benchmark_images(size: int = 128) -> tuple[tuple[str, ...], np.ndarray]:
    """The standard CDP benchmark's held-out test images (:data:`BENCHMARK_IMAGE_NAMES`).

    Each whole sample image, gray in ``[0, 1]``, centre-cropped to its largest square and resized
    to ``size × size`` (:func:`fit_to_size`, ``"resize"``). Returns ``(names, (n, size, size)
    float32 array)``; an image that does not load offline is an error (they ship inside the
    scikit-image wheel).
    """
    size = _check_size(size)
    names, arrays = [], []
    for name in BENCHMARK_IMAGE_NAMES:
        img = _sample_image(name)
        if img is None:
            raise ImageSourceError(f"the benchmark image skimage.data.{name} did not load; it ships with "
                                   f"scikit-image >= 0.21 — reinstall scikit-image, or pass --images DIR")
        names.append(name)
        arrays.append(fit_to_size(img, size, "resize"))
    return tuple(names), np.stack(arrays).astype(np.float32)


def _dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """Element ``t`` ∈ 0..7 of the square's symmetry group: rot90 by ``t % 4``, then a
    left-right flip when ``t >= 4``."""
    out = np.rot90(img, t % 4)
    if t >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class EmbeddedImageSet(ImageSet):
    """Built-in image set of :func:`embedded_images` (see there)."""

    _CROPS_PER_REGION = 5  # four aligned quadrants + the centred crop

    def __init__(self, size: int, split: str, seed: int, n: int | None, subset: str = "all"):
        self.size = size
        self.split = split
        self.seed = int(seed)
        keys, arrays, is_region = _embedded_sources(size)
        chosen = [k for k, key in enumerate(keys)
                  if _in_embedded_subset(key, subset) and (split == "all" or _hash_split(key) == split)]
        if not chosen:
            raise ImageSourceError(f"embedded split {split!r} of subset {subset!r} is empty at size {size}")
        self._keys = [keys[k] for k in chosen]
        self._arrays = [arrays[k] for k in chosen]
        self._is_region = [is_region[k] for k in chosen]
        base: list[tuple[int, int, int]] = []
        for s, region in enumerate(self._is_region):
            for crop in range(self._CROPS_PER_REGION if region else 1):
                for t in range(8):
                    base.append((s, crop, t))
        base_arr = np.asarray(base, dtype=np.int64)
        perm = np.random.default_rng([self.seed, 0x5EED]).permutation(len(base))
        self._base = base_arr[perm]
        self.n_base = len(base)
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                              or n < 1):
            raise ImageSourceError(f"n must be a positive integer or None; got {n!r}")
        self._len = self.n_base if n is None else int(n)
        self.n_source_items = len(self._keys)
        self.description = f"embedded{'' if subset == 'all' else ':' + subset} split={split} seed={seed}"

    def __len__(self) -> int:
        return self._len

    def _item(self, i: int) -> tuple[int, tuple[int, int], int]:
        """(source index, (top, left) offset, dihedral element) of item ``i``."""
        s = self.size
        if i < self.n_base:
            src, crop, t = (int(v) for v in self._base[i])
            off = [(0, 0), (0, s), (s, 0), (s, s), (s // 2, s // 2)][crop]
            return src, (off if self._is_region[src] else (0, 0)), t
        rng = np.random.default_rng([self.seed, 0xC0FFEE, i])
        src = int(rng.integers(len(self._keys)))
        off = tuple(int(v) for v in rng.integers(0, s + 1, size=2)) if self._is_region[src] \
            else (0, 0)
        return src, off, int(rng.integers(8))

    def _get(self, i: int) -> np.ndarray:
        src, (t, l), d = self._item(i)
        patch = self._arrays[src][t:t + self.size, l:l + self.size]
        return _dihedral(patch, d)

    def source_key(self, i: int) -> str:
        return self._keys[self._item(self._index(i))[0]]


#: ``subset=`` of :func:`embedded_images` (config: ``"embedded"``, ``"embedded:natural"``,
#: ``"embedded:faces"``)
EMBEDDED_SUBSETS = ("all", "natural", "faces", "nobench")
#: ``skimage.data.lfw_subset()``: "100 first images are faces and subsequent 100 are non-faces"
_LFW_N_FACES = 100


def _in_embedded_subset(key: str, subset: str) -> bool:
    if subset == "all":
        return True
    if subset == "nobench":  # every item but the benchmark images' patches, in every split
        return key.split("/", 1)[0] not in BENCHMARK_IMAGE_NAMES
    if key.startswith("lfw_subset/"):
        return subset == "faces" and int(key.split("/", 1)[1]) < _LFW_N_FACES
    return subset == "natural"


def embedded_images(size: int, *, split: str = "train", seed: int = 0,
                    n: int | None = None, subset: str = "all") -> EmbeddedImageSet:
    """Built-in images (no download): sample-image patches and ``lfw_subset`` crops.

    ``subset``: ``"all"`` (default), ``"natural"`` (the sample-image patches only),
    ``"faces"`` (the 100 faces of ``lfw_subset`` only, without its 100 non-face crops) or
    ``"nobench"`` (everything except the patches of :data:`BENCHMARK_IMAGE_NAMES`: no region of a
    benchmark test image in any split). A source item keeps its split in every subset.

    Source items (see the module docstring for the split rule):

    * each sample image of :data:`EMBEDDED_IMAGE_NAMES` that loads offline is converted to gray,
      scaled so its short side is ``4·size`` pixels (anti-aliased) and cut into a centred grid of
      ``2·size × 2·size`` regions; each region yields 5 ``size × size`` crops (its four
      quadrants and its centre);
    * each of the 200 ``skimage.data.lfw_subset()`` 25×25 images (100 faces, 100 non-faces) is
      resized to ``size × size`` and yields one crop.

    Each crop appears under the 8 flips/90° rotations. With ``n=None`` the set holds every
    (crop, transform) of the split once, in an order drawn from ``seed``. With ``n`` it holds
    ``n`` items: the first ``n`` of that order, and when ``n`` exceeds it, additional random
    crops (uniform offset within a random region of the split, random transform) drawn from
    ``numpy.random.default_rng([seed, 0xC0FFEE, i])`` for item ``i``. The same arguments always
    give identical arrays. Items are cut on access; the scaled regions of all images of the
    split are cached (about ``4·size²`` floats per region).
    """
    size = _check_size(size)
    _check_split(split)
    if subset not in EMBEDDED_SUBSETS:
        raise ImageSourceError(f"embedded subset {subset!r} is not one of {EMBEDDED_SUBSETS}")
    return EmbeddedImageSet(size, split, seed, n, subset)


# --------------------------------------------------------------------------------------------
# folder
# --------------------------------------------------------------------------------------------
class FolderImageSet(ImageSet):
    """Image files of one folder, read on access (see :func:`folder_images`)."""

    def __init__(self, root: Path, files: list[Path], size: int, resize: str):
        self.root = root
        self.files = files
        self.size = size
        self.resize = resize
        self.description = f"folder {root}"

    def __len__(self) -> int:
        return len(self.files)

    def _get(self, i: int) -> np.ndarray:
        f = self.files[i]
        img = _read_image_file(f)
        if img.ndim == 3 and img.shape[-1] == 2:  # gray + alpha
            img = img[..., 0]
        return fit_to_size(to_unit_gray(img, str(f)), self.size, self.resize, str(f))

    def source_key(self, i: int) -> str:
        return self.files[self._index(i)].name


def _read_image_file(f: Path) -> np.ndarray:
    import warnings

    import skimage.io

    try:
        with warnings.catch_warnings():  # imageio probes every plugin (DICOM…) on bad files
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.asarray(skimage.io.imread(str(f)))
    except Exception as exc:  # noqa: BLE001 — any decoder failure means "unreadable"
        raise ImageSourceError(
            f"cannot read image file {f}: {type(exc).__name__}: {exc}; remove or re-export the "
            f"file (supported: {', '.join(IMAGE_SUFFIXES)})") from exc


def _image_file_shape(f: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header (Pillow), falling back to a full decode."""
    try:
        from PIL import Image

        with Image.open(f) as im:
            w, h = im.size
        return int(h), int(w)
    except Exception:  # noqa: BLE001 — let the full reader produce the precise error
        img = _read_image_file(f)
        return int(img.shape[0]), int(img.shape[1])


def folder_images(path, size: int, *, resize: str = "resize",
                  recursive: bool = False) -> FolderImageSet:
    """Images of a folder: every file whose suffix is in :data:`IMAGE_SUFFIXES`, sorted by path.

    Files are decoded with :func:`skimage.io.imread` on access, converted to gray in [0, 1]
    (:func:`to_unit_gray`) and fitted to ``size`` (:func:`fit_to_size`). At construction every
    file's header is read, so an unreadable file is reported at once, naming the file; with
    ``resize="error"`` images of different sizes are reported naming two files that differ.
    ``recursive=True`` also takes files in sub-folders.
    """
    size = _check_size(size)
    _check_resize_mode(resize)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ImageSourceError(f"image folder {root} does not exist or is not a directory")
    it = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        others = sorted(p.name for p in root.iterdir())[:5]
        raise ImageSourceError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {root}"
            + (f"; it holds e.g. {', '.join(others)}" if others else " (the folder is empty)")
            + "; point to a folder of images, or use a .npy/.npz/.h5/IDX file")
    shapes = [_image_file_shape(f) for f in files]
    if resize == "error":
        first = shapes[0]
        for f, s in zip(files, shapes):
            if s != first:
                raise ImageSourceError(
                    f"images differ in size and resize='error': {files[0]} is "
                    f"{first[0]}×{first[1]} but {f} is {s[0]}×{s[1]}; pass resize='resize' or "
                    f"resize='crop', or make all images {size}×{size}")
        if first != (size, size):
            raise ImageSourceError(
                f"images in {root} are {first[0]}×{first[1]} (e.g. {files[0]}), not "
                f"{size}×{size}, and resize='error' forbids resampling; pass resize='resize' "
                f"or resize='crop', or set the size to {first[0]}")
    if resize == "crop":
        for f, (h, w) in zip(files, shapes):
            if h < size or w < size:
                raise ImageSourceError(
                    f"{f} is {h}×{w} pixels, smaller than the {size}×{size} crop; pass "
                    f"resize='resize', or choose size ≤ {min(h, w)}")
    return FolderImageSet(root, files, size, resize)


# --------------------------------------------------------------------------------------------
# arrays: .npy / .npz / HDF5 / IDX
# --------------------------------------------------------------------------------------------
def _stack_layout(shape: tuple[int, ...], what: str) -> str:
    """How to read one image out of an array: 'hw' (single), 'nhw', 'nhwc' or 'nchw'."""
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4:
        if shape[-1] in (1, 3, 4):
            return "nhwc"
        if shape[1] in (1, 3, 4):
            return "nchw"
    raise ImageSourceError(
        f"{what} has shape {shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with "
        f"C in 1, 3, 4, or a single (H, W) image")


class _ArrayImageSet(ImageSet):
    """Images stored in an array-like ``(N, H, W[, C])``; the array is (re)opened lazily in
    each process by :meth:`_open_array` and never pickled."""

    def __init__(self, path: Path, size: int, resize: str, shape: tuple[int, ...], what: str):
        self.path = path
        self.size = size
        self.resize = resize
        self.shape = tuple(int(s) for s in shape)
        self.what = what
        self.layout = _stack_layout(self.shape, what)
        self.description = what
        self._arr = None
        self._pid = None

    @abc.abstractmethod
    def _open_array(self):
        """Open the backing array-like (memory map, HDF5 dataset, in-memory array)."""

    def _array(self):
        if self._arr is None or self._pid != os.getpid():
            self._arr = self._open_array()
            self._pid = os.getpid()
        return self._arr

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arr"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return 1 if self.layout == "hw" else self.shape[0]

    def _get(self, i: int) -> np.ndarray:
        a = self._array()
        img = np.asarray(a if self.layout == "hw" else a[i])
        if self.layout == "nchw":
            img = np.moveaxis(img, 0, -1)
        what = f"{self.what}[{i}]"
        return fit_to_size(to_unit_gray(img, what), self.size, self.resize, what)

    def source_key(self, i: int) -> str:
        return f"{self.path.name}[{self._index(i)}]"


class NpyImageSet(_ArrayImageSet):
    """A ``.npy`` array, memory-mapped."""

    def _open_array(self):
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


class NpzImageSet(_ArrayImageSet):
    """One array of a ``.npz`` archive (loaded into memory once per process: zip members
    cannot be memory-mapped)."""

    def __init__(self, path: Path, key: str, size: int, resize: str, array: np.ndarray):
        super().__init__(path, size, resize, array.shape, f"{path}[{key!r}]")
        self.key = key
        self._arr = array
        self._pid = os.getpid()

    def _open_array(self):
        with np.load(self.path, allow_pickle=False) as z:
            return z[self.key]


class H5ImageSet(_ArrayImageSet):
    """A dataset of an HDF5 file, opened read-only and lazily in each process."""

    def __init__(self, path: Path, dataset: str, size: int, resize: str, shape):
        super().__init__(path, size, resize, shape, f"{path}:{dataset}")
        self.dataset = dataset
        self._file = None

    def _open_array(self):
        import h5py

        self._file = h5py.File(self.path, "r")
        return self._file[self.dataset]

    def __getstate__(self):
        state = super().__getstate__()
        state["_file"] = None
        return state


class IdxImageSet(_ArrayImageSet):
    """An IDX (MNIST-style) ``uint8`` image file; raw files are memory-mapped, ``.gz`` files are
    decompressed into memory once per process."""

    def __init__(self, path: Path, size: int, resize: str, shape: tuple[int, int, int]):
        super().__init__(path, size, resize, shape, str(path))

    def _open_array(self):
        n, h, w = self.shape
        if self.path.suffix.lower() == ".gz":
            with gzip.open(self.path, "rb") as fh:
                raw = fh.read()
            return np.frombuffer(raw, dtype=np.uint8, count=n * h * w, offset=16).reshape(n, h, w)
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=16, shape=(n, h, w))


def npy_images(path, size: int, key: str | None = None, *,
               resize: str = "resize") -> _ArrayImageSet:
    """Images from a ``.npy`` array or one array of a ``.npz`` archive.

    The array is ``(N, H, W)``, ``(N, H, W, C)``, ``(N, C, H, W)`` (C ∈ {1, 3, 4}) or one
    ``(H, W)`` image; values follow :func:`to_unit_gray`. ``.npy`` files are memory-mapped
    (``allow_pickle=False``). For a ``.npz`` with several arrays pass ``key``; without it the
    error lists the keys.
    """
    size = _check_size(size)
    _check_resize_mode(resize)
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageSourceError(f"array file {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise ImageSourceError(f"cannot read {p} as a .npy array: {exc}") from exc
        s = NpyImageSet(p, size, resize, arr.shape, str(p))
        del arr
        return s
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.files)
                if key is None:
                    if len(keys) != 1:
                        raise ImageSourceError(
                            f"{p} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); pass "
                            f"key=<one of them> (config: data.key) to choose the images")
                    key = keys[0]
                if key not in keys:
                    raise ImageSourceError(
                        f"{p} has no array {key!r}; it holds: {', '.join(keys) or 'nothing'}")
                arr = z[key]
        except ImageSourceError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ImageSourceError(f"cannot read {p} as a .npz archive: {exc}") from exc
        return NpzImageSet(p, key, size, resize, arr)
    raise ImageSourceError(f"{p} is not a .npy or .npz file; use open_image_source for others")


def h5_images(path, size: int, dataset: str = "images", *,
              resize: str = "resize") -> H5ImageSet:
    """Images from dataset ``dataset`` of an HDF5 file (shapes as in :func:`npy_images`).

    The file is opened read-only, lazily, once per process (safe in DataLoader workers). A
    missing dataset is an error that lists the datasets the file holds.
    """
    import h5py

    size = _check_size(size)
    _check_resize_mode(resize)
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageSourceError(f"HDF5 file {p} does not exist")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise ImageSourceError(f"cannot open {p} as an HDF5 file: {exc}") from exc
    with f:
        refuse_foreign_data(f, p, ImageSourceError, what="an HDF5 image source")
        obj = f.get(dataset)
        if not isinstance(obj, h5py.Dataset):
            found: list[str] = []
            f.visititems(lambda name, o: found.append(f"{name} {o.shape}")
                         if isinstance(o, h5py.Dataset) else None)
            raise ImageSourceError(
                f"{p} has no dataset {dataset!r}; it holds: {', '.join(found) or 'no datasets'}; "
                f"pass dataset=<name> (config: data.dataset)")
        shape = obj.shape
    return H5ImageSet(p, dataset, size, resize, shape)


def _read_idx_header(p: Path) -> tuple[int, int, int]:
    opener = gzip.open if p.suffix.lower() == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ImageSourceError(f"cannot read IDX file {p}: {exc}") from exc
    if len(head) < 4:
        raise ImageSourceError(f"{p} is too short ({len(head)} bytes) to be an IDX file")
    (magic,) = struct.unpack(">I", head[:4])
    if magic != _IDX_IMAGES_MAGIC:
        hint = ""
        if magic == 0x00000801:
            hint = (" (that is an IDX labels file, e.g. train-labels-idx1-ubyte; pass the "
                    "images file)")
        raise ImageSourceError(
            f"{p} has magic number 0x{magic:08x}, not 0x{_IDX_IMAGES_MAGIC:08x} (IDX, unsigned "
            f"bytes, 3 dimensions){hint}; pass an MNIST-style images file such as "
            f"train-images-idx3-ubyte or train-images-idx3-ubyte.gz")
    if len(head) < 16:
        raise ImageSourceError(f"{p} ends inside its IDX header ({len(head)} of 16 bytes)")
    n, h, w = struct.unpack(">III", head[4:16])
    return int(n), int(h), int(w)


def idx_images(path, size: int, *, resize: str = "resize") -> IdxImageSet:
    """Images from an IDX file (MNIST / Fashion-MNIST format), raw or gzip-compressed.

    Header: big-endian ``uint32`` magic ``0x00000803`` (unsigned bytes, 3 dimensions), then
    ``N, H, W`` as big-endian ``uint32``; then ``N·H·W`` bytes. A different magic number or a
    data length that does not match the header is an error. Values are divided by 255.
    """
    size = _check_size(size)
    _check_resize_mode(resize)
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageSourceError(f"IDX file {p} does not exist")
    n, h, w = _read_idx_header(p)
    if p.suffix.lower() == ".gz":
        with gzip.open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            total = fh.tell()
    else:
        total = p.stat().st_size
    if total - 16 < n * h * w:
        raise ImageSourceError(
            f"{p} header promises {n} images of {h}×{w} ({n * h * w} bytes) but holds only "
            f"{total - 16} data bytes; the file is truncated — download it again")
    return IdxImageSet(p, size, resize, (n, h, w))


# --------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------
def _is_idx_name(p: Path) -> bool:
    name = p.name.lower()
    return "idx" in name or name.endswith(".ubyte") or name.endswith(".ubyte.gz")


def open_image_source(spec, size: int, *, split: str = "train", seed: int = 0,
                      resize: str = "resize", n: int | None = None, key: str | None = None,
                      dataset: str = "images") -> ImageSet:
    """Open an image source from a config value and return the requested split.

    ``spec``:

    * ``"embedded"`` → :func:`embedded_images` (``split``, ``seed`` and ``n`` passed on);
      ``"embedded:natural"`` / ``"embedded:faces"`` / ``"embedded:nobench"`` → only its
      sample-image patches / only the 100 ``lfw_subset`` faces / all but the benchmark images;
    * a directory → :func:`folder_images`;
    * ``*.npy`` / ``*.npz`` → :func:`npy_images` (``key`` picks the ``.npz`` member);
    * ``*.h5`` / ``*.hdf5`` / ``*.he5`` → :func:`h5_images` (``dataset`` picks the dataset);
    * a name containing ``idx`` or ending in ``.ubyte[.gz]`` → :func:`idx_images`.

    For user data the split is :func:`split_indices` (``len(source), split, seed``) and ``n``
    (if given) keeps the first ``n`` items of the split (error if the split holds fewer).
    ``split="all"`` skips splitting.
    """
    size = _check_size(size)
    _check_split(split)
    _check_resize_mode(resize)
    name, _, subset = spec.strip().lower().partition(":") if isinstance(spec, str) else ("", "", "")
    if name == "embedded":
        if (subset or "all") in EMBEDDED_SUBSETS:
            return embedded_images(size, split=split, seed=seed, n=n, subset=subset or "all")
        if not Path(spec).expanduser().exists():
            raise ImageSourceError(
                f"image source {spec!r}: the embedded subsets are 'embedded', 'embedded:natural', "
                f"'embedded:faces' and 'embedded:nobench'")
    p = Path(spec).expanduser()
    if not p.exists():
        raise ImageSourceError(
            f"image source {str(spec)!r} is neither 'embedded' nor an existing path; give "
            f"'embedded', a folder of images, a .npy/.npz/.h5/.hdf5 file, or an IDX file")
    suffix = p.suffix.lower()
    if p.is_dir():
        src: ImageSet = folder_images(p, size, resize=resize)
    elif suffix in (".npy", ".npz"):
        src = npy_images(p, size, key, resize=resize)
    elif suffix in (".h5", ".hdf5", ".he5"):
        src = h5_images(p, size, dataset, resize=resize)
    elif _is_idx_name(p):
        src = idx_images(p, size, resize=resize)
    else:
        raise ImageSourceError(
            f"cannot tell the format of {p} from its name; supported: a folder of images, "
            f".npy, .npz, .h5/.hdf5, or IDX files named like train-images-idx3-ubyte[.gz]")
    if split != "all":
        src = src.subset(split_indices(len(src), split, seed))
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ImageSourceError(f"n must be a positive integer or None; got {n!r}")
        if n > len(src):
            raise ImageSourceError(
                f"requested n={n} images but split {split!r} of {p} holds {len(src)}; lower n "
                f"or use split='all'")
        src = src.subset(range(int(n)))
    return src


# --------------------------------------------------------------------------------------------
# the training pool of learned reconstructors scored by the standard CDP benchmark
# --------------------------------------------------------------------------------------------
#: Extra images read offline from matplotlib's own sample data (``matplotlib.cbook.get_sample_data``;
#: shipped inside the matplotlib wheel under its PSF-based licence): a portrait photograph
#: (``grace_hopper.jpg``, U.S. Navy, public domain), a brain MRI slice (``s1045.ima.gz``, 256²
#: big-endian uint16) and a digital elevation model (``jacksboro_fault_dem.npz``, USGS, public
#: domain), the last two min-max normalised.
MATPLOTLIB_POOL_NAMES = ("grace_hopper", "mri_s1045", "jacksboro_dem")
#: Pool images kept for validation (early stopping, model choice): never benchmark images.
POOL_VALIDATION_NAMES = ("rocket", "mri_s1045")


def _matplotlib_sample(name: str) -> np.ndarray:
    from matplotlib import cbook

    try:
        if name == "grace_hopper":
            import matplotlib.image as mpimg
            with cbook.get_sample_data("grace_hopper.jpg") as f:
                return to_unit_gray(mpimg.imread(f, format="jpg"), "matplotlib grace_hopper.jpg")
        if name == "mri_s1045":
            with cbook.get_sample_data("s1045.ima.gz") as f:
                a = np.frombuffer(f.read(), ">u2").reshape(256, 256).astype(np.float64)
        elif name == "jacksboro_dem":
            a = np.asarray(cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"], np.float64)
        else:
            raise ImageSourceError(f"unknown matplotlib pool image {name!r}; one of {MATPLOTLIB_POOL_NAMES}")
    except (OSError, KeyError) as exc:
        raise ImageSourceError(f"matplotlib sample image {name!r} did not load offline ({exc}); "
                               f"reinstall matplotlib (its wheel ships mpl-data/sample_data)") from exc
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    return a.astype(np.float32)


def training_pool(*, split: str = "train", exclude=BENCHMARK_IMAGE_NAMES) -> dict:
    """Whole gray images in ``[0, 1]`` (full resolution) for training learned reconstructors
    scored by the standard CDP benchmark, as ``{name: (H, W) float32}``.

    The pool: every embedded scikit-image sample image (:data:`EMBEDDED_IMAGE_NAMES`) that
    loads offline, minus ``exclude`` (default :data:`BENCHMARK_IMAGE_NAMES`, so no benchmark
    image — the cameraman included — is ever seen whole or in part), plus
    :data:`MATPLOTLIB_POOL_NAMES`. ``split="train"`` leaves out :data:`POOL_VALIDATION_NAMES`,
    ``"val"`` returns only those, ``"all"`` both. Patches are cut by the caller (the training
    script), so they can have any size and augmentation. The ``lfw_subset`` 25×25 crops are not
    in the pool: at patch sizes ≥ 48 they would be 2× upsampled blur.
    """
    if split not in ("train", "val", "all"):
        raise ImageSourceError(f"training_pool split {split!r} is not one of ('train', 'val', 'all')")
    exclude = set(exclude)
    out = {}
    for name in EMBEDDED_IMAGE_NAMES + MATPLOTLIB_POOL_NAMES:
        if name in exclude:
            continue
        is_val = name in POOL_VALIDATION_NAMES
        if (split == "train" and is_val) or (split == "val" and not is_val):
            continue
        img = _matplotlib_sample(name) if name in MATPLOTLIB_POOL_NAMES else _sample_image(name)
        if img is not None:
            out[name] = img
    if not out:
        raise ImageSourceError(f"the training pool (split {split!r}) is empty: no sample image loaded "
                               f"offline; reinstall scikit-image and matplotlib")
    return out
