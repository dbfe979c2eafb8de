"""Image and mask file IO: 16-bit PNG, packed-bit mask archives, atomic writes.

Everything written here is byte-deterministic: PNGs are encoded by a small pure
zlib encoder (no timestamps, no library-version-dependent chunks) and mask archives
are ``.npz`` zip files written with a fixed ``date_time``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from raddino_lib.atomic import atomic_write_bytes

SHAPE_KEY = "__shape__"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(img: np.ndarray, level: int = 0) -> bytes:
    """Encode a grayscale image as PNG bytes.

    img: (H, W) uint16 (16-bit PNG) or uint8 (8-bit PNG). level: zlib level (0 = stored).
    """
    if img.ndim != 2 or img.dtype not in (np.uint16, np.uint8):
        raise ValueError(
            f"encode_png expects a 2-D uint8/uint16 array, got {img.dtype} {img.shape}"
        )
    h, w = img.shape
    depth = 16 if img.dtype == np.uint16 else 8
    be = img.astype(">u2" if depth == 16 else "u1", copy=False)
    rows = np.zeros((h, 1 + w * be.itemsize), dtype=np.uint8)  # filter byte 0 (None)
    rows[:, 1:] = np.ascontiguousarray(be).view(np.uint8).reshape(h, w * be.itemsize)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)
    # Noisy 16-bit radiographs barely compress (~10%); level 0 ("stored") is ~15x faster.
    comp = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = comp.compress(rows.tobytes()) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write a (H, W) uint8/uint16 grayscale PNG atomically."""
    atomic_write_bytes(path, encode_png(img))


def float_to_uint16(img: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W) uint16 (clipped, rounded)."""
    return (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def read_png(path: str | Path) -> np.ndarray:
    """Read a grayscale PNG (8 or 16 bit) -> (H, W) float32 in [0, 1].

    RGB(A) images are converted to luminance.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float32)
            maxv = 65535.0
        else:
            if mode != "L":
                im = im.convert("L")
            arr = np.asarray(im, dtype=np.float32)
            maxv = 255.0
    return np.clip(arr / maxv, 0.0, 1.0).astype(np.float32)


def encode_masks(masks: Mapping[str, np.ndarray]) -> bytes:
    """Pack boolean masks into deterministic ``.npz`` bytes (readable by ``np.load``).

    masks: name -> (H, W) bool, all the same shape. Each is stored as
    ``np.packbits(mask.ravel())`` (uint8, 1-D) under its name; the shape is stored under
    ``__shape__`` (int64, [H, W]). The zip is written by hand (fixed dates, raw deflate).
    """
    shape = None
    entries: list[tuple[str, bytes]] = []
    for name, m in masks.items():
        m = np.asarray(m, dtype=bool)
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}, expected {shape}")
        entries.append((name, _npy_bytes(np.packbits(m.ravel()))))
    entries.append(
        (SHAPE_KEY, _npy_bytes(np.asarray(shape if shape is not None else (0, 0), dtype="<i8")))
    )
    return _zip_bytes(entries)


def _npy_bytes(arr: np.ndarray) -> bytes:
    """Serialise a 1-D little-endian array in .npy format version 1.0."""
    descr = {"|u1": "|u1", "<i8": "<i8"}[arr.dtype.str]
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({arr.shape[0]},), }}"
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header))
        + header.encode("latin1")
        + arr.tobytes()
    )


_DOS_TIME, _DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00:00


def _zip_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    """Minimal deterministic zip (deflate) of ``name.npy`` entries."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        fname = (name + ".npy").encode("utf-8")
        comp = zlib.compressobj(1, zlib.DEFLATED, -15)
        cdata = comp.compress(data) + comp.flush()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        out += (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                0,
                8,
                _DOS_TIME,
                _DOS_DATE,
                crc,
                len(cdata),
                len(data),
                len(fname),
                0,
            )
            + fname
            + cdata
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                8,
                _DOS_TIME,
                _DOS_DATE,
                crc,
                len(cdata),
                len(data),
                len(fname),
                0,
                0,
                0,
                0,
                0o600 << 16,
                offset,
            )
            + fname
        )
    cd_off = len(out)
    out += central
    out += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), cd_off, 0
    )
    return bytes(out)


def write_masks(path: str | Path, masks: Mapping[str, np.ndarray]) -> None:
    """Write masks (name -> (H, W) bool) as a deterministic packed ``.npz`` atomically."""
    atomic_write_bytes(path, encode_masks(masks))


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Read a packed mask ``.npz`` -> name -> (H, W) bool (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        if SHAPE_KEY not in z.files:
            raise ValueError(f"{path}: mask archive has no {SHAPE_KEY!r} entry")
        h, w = (int(v) for v in z[SHAPE_KEY])
        out = {}
        for k in z.files:
            if k == SHAPE_KEY:
                continue
            out[k] = np.unpackbits(z[k], count=h * w).reshape(h, w).astype(bool)
    return out
