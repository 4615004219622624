"""Gray-level bitmaps for SLM drivers: 8-bit PNG / BMP and 16-bit PNG holding 10/12-bit levels.

PNG is written by a small encoder here (grayscale, one IDAT, row filter 0, zlib level 6) so the
bit depth, the sample justification and the text chunks are exactly what we say:

* ``png8`` — colour type 0, bit depth 8, one byte per pixel = the gray level;
* ``png16`` — colour type 0, bit depth 16, big-endian samples. A ``b``-bit level ``g``
  (``b`` = 10 or 12) is stored either **LSB-justified** (``justify="lsb"``, the sample *is* ``g``,
  what SDKs that take raw level arrays expect; the image looks dark in a viewer) or
  **MSB-justified** (``justify="msb"``, the sample is ``g·2^(16−b)``, full-scale in a viewer,
  with a PNG ``sBIT`` chunk declaring ``b`` significant bits, as the PNG specification defines
  for scaled-up samples). The choice is written in a ``tEXt`` chunk (``phaseforge``) and in the
  sidecar;
* ``bmp8`` — 8-bit palettised BMP with a gray palette (Pillow), the format of Meadowlark's and
  Hamamatsu's loaders.

Reading goes through Pillow (an independent decoder), so a verification re-reads the file as a
driver would.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from optics.fileio import atomic_path

from .errors import FabricationError

__all__ = ["write_bitmap", "read_bitmap", "JUSTIFY", "stored_values", "gray_from_stored", "format_for"]

JUSTIFY = ("lsb", "msb")


def format_for(path, bit_depth: int) -> str:
    """File format from the output suffix and the bit depth (``.png`` → png8/png16, ``.bmp`` → bmp8)."""
    s = Path(path).suffix.lower()
    if s == ".png":
        return "png8" if bit_depth == 8 else "png16"
    if s == ".bmp":
        if bit_depth != 8:
            raise FabricationError(f"{path}: BMP holds 8-bit levels only but the export is {bit_depth}-bit; "
                                   f"write a .png (16-bit PNG) or choose --bit-depth 8")
        return "bmp8"
    raise FabricationError(f"{path}: unsupported bitmap suffix {s!r}; use .png (8/16-bit) or .bmp (8-bit)")


def stored_values(gray: np.ndarray, bit_depth: int, justify: str) -> np.ndarray:
    """The sample values written to the file for gray levels ``gray``."""
    if justify not in JUSTIFY:
        raise FabricationError(f"justify must be one of {JUSTIFY}, got {justify!r}")
    g = np.asarray(gray)
    if bit_depth == 8:
        return g.astype(np.uint8)
    shift = 16 - bit_depth if justify == "msb" else 0
    return (g.astype(np.uint16) << shift).astype(np.uint16)


def gray_from_stored(values: np.ndarray, bit_depth: int, justify: str, where: str = "bitmap") -> np.ndarray:
    """Invert :func:`stored_values`; samples that no ``b``-bit level could produce raise."""
    v = np.asarray(values).astype(np.int64)
    if bit_depth == 8:
        if v.max(initial=0) > 255:
            raise FabricationError(f"{where}: sample {int(v.max())} exceeds 8 bits; not an 8-bit SLM bitmap")
        return v.astype(np.uint16)
    if justify == "msb":
        shift = 16 - bit_depth
        low = v & ((1 << shift) - 1)
        if low.any():
            r, c = np.argwhere(low)[0]
            raise FabricationError(f"{where}: sample {int(v[r, c])} at row {r}, column {c} has non-zero low bits "
                                   f"for MSB-justified {bit_depth}-bit levels; the file is corrupted or not "
                                   f"MSB-justified")
        return (v >> shift).astype(np.uint16)
    if v.max(initial=0) >= 2 ** bit_depth:
        r, c = np.argwhere(v >= 2 ** bit_depth)[0]
        raise FabricationError(f"{where}: sample {int(v[r, c])} at row {r}, column {c} exceeds the "
                               f"{bit_depth}-bit range 0 … {2 ** bit_depth - 1}; the file is corrupted or "
                               f"MSB-justified (check the sidecar's justify)")
    return v.astype(np.uint16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bytes(values: np.ndarray, sample_bits: int, significant_bits: int, text: dict) -> bytes:
    h, w = values.shape
    if sample_bits == 8:
        raw = values.astype(np.uint8)
    else:
        raw = values.astype(">u2")
    rows = raw.reshape(h, -1).view(np.uint8).reshape(h, -1)
    filtered = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 per row
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, sample_bits, 0, 0, 0, 0))]
    if significant_bits != sample_bits:
        out.append(_chunk(b"sBIT", bytes([significant_bits])))
    for k, v in text.items():
        out.append(_chunk(b"tEXt", k.encode("latin-1") + b"\x00" + str(v).encode("latin-1", "replace")))
    out.append(_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def write_bitmap(path, gray: np.ndarray, *, bit_depth: int, justify: str = "lsb", text=None) -> Path:
    """Write gray levels ``gray`` (2-D, values in ``0 … 2^b − 1``) atomically; format from the suffix."""
    p = Path(path)
    fmt = format_for(p, bit_depth)
    g = np.asarray(gray)
    if g.ndim != 2:
        raise FabricationError(f"gray levels must be 2-D, got shape {g.shape}")
    if g.min(initial=0) < 0 or g.max(initial=0) >= 2 ** bit_depth:
        raise FabricationError(f"gray levels {int(g.min())} … {int(g.max())} exceed the {bit_depth}-bit range")
    vals = stored_values(g, bit_depth, justify)
    with atomic_path(p, keep_partial=False) as tmp:
        if fmt == "bmp8":
            from PIL import Image
            Image.fromarray(vals.astype(np.uint8), mode="L").save(tmp, format="BMP")
        else:
            sample_bits = 8 if fmt == "png8" else 16
            sig = bit_depth if (sample_bits == 16 and justify == "msb") else sample_bits
            meta = {"phaseforge": f"bit_depth={bit_depth}; justify={justify if sample_bits == 16 else 'none'}"}
            meta.update(text or {})
            tmp.write_bytes(_png_bytes(vals, sample_bits, sig, meta))
    return p


def read_bitmap(path) -> np.ndarray:
    """Sample values of a grayscale bitmap (uint8 or uint16 array) through Pillow."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode == "P":
                pal = np.asarray(im.getpalette()[:768]).reshape(-1, 3)
                idx = np.asarray(im)
                if not (np.all(pal[:, 0] == pal[:, 1]) and np.all(pal[:, 1] == pal[:, 2])):
                    raise FabricationError(f"{p}: the palette is not gray; not an SLM bitmap")
                return pal[idx, 0].astype(np.uint8)
            if im.mode == "L":
                return np.asarray(im).astype(np.uint8)
            if im.mode.startswith("I"):
                return np.asarray(im).astype(np.uint16)
            raise FabricationError(f"{p} is a {im.mode} image; an SLM bitmap is single-channel grayscale")
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError) as exc:
        if isinstance(exc, FabricationError):
            raise
        raise FabricationError(f"{p} cannot be decoded ({exc}); the file is corrupted or not a bitmap — "
                               f"export it again") from exc
