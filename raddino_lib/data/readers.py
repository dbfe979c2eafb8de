"""Reading real chest X-ray files: PNG/JPEG (8/16 bit, grey/RGB/RGBA) and DICOM.

Every reader returns a ``(H, W)`` float32 image in [0, 1] where bright = dense (bone
white), whatever the storage convention. Failures raise :class:`ImageReadError`, whose
message names the file and the problem and never contains a DICOM tag value that could
identify a patient (names, IDs, dates, UIDs of the patient or study).

DICOM pipeline (PS3.3 C.11 "grayscale pipeline"): stored values -> modality LUT
(RescaleSlope/Intercept or a Modality LUT Sequence) -> VOI LUT (a VOI LUT Sequence if
present, else WindowCenter/WindowWidth) -> scale the result by its known output range
(the VOI output range, or the BitsStored range pushed through the modality LUT when no
VOI applies) -> invert MONOCHROME1 so that 1 is always bright.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut
except ImportError:  # pragma: no cover - pydicom 2.x
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi, apply_voi_lut

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")

# Tags that describe the acquisition or pixel encoding and cannot identify a patient.
SAFE_TAGS: tuple[str, ...] = (
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "PatientOrientation",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
)
# Demographics (only with demographics=True): the records format carries sex and age.
DEMOGRAPHIC_TAGS: tuple[str, ...] = ("PatientSex", "PatientAge")
AGE_CAP = 90  # HIPAA Safe Harbor: ages over 89 are aggregated into one "90+" group.


class ImageReadError(ValueError):
    """An image file that cannot be read (message names the file and the problem)."""


# --------------------------------------------------------------------------------------
# Dispatch


def is_dicom(path: str | Path) -> bool:
    """True when ``path`` has a DICOM suffix or the ``DICM`` magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG or DICOM file -> ``(H, W)`` float32 in [0, 1] (1 = bright).

    Dispatch: DICOM when the suffix is ``.dcm``/``.dicom``/``.dic`` or the file has the
    ``DICM`` magic at byte 128, otherwise Pillow (PNG, JPEG, anything Pillow decodes).
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: image file does not exist")
    if not p.is_file():
        raise ImageReadError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: zero-byte file")
    if is_dicom(p):
        return read_dicom(p)
    return read_raster(p)


# --------------------------------------------------------------------------------------
# PNG / JPEG

_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_raster(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG with Pillow -> ``(H, W)`` float32 in [0, 1].

    8-bit images are divided by 255, 16-bit ones (Pillow modes ``I;16*`` and ``I``) by
    65535. Colour images (RGB, RGBA, LA, P, CMYK...) are flattened to luminance with
    Pillow's ITU-R 601-2 weights (L = 0.299 R + 0.587 G + 0.114 B); alpha is ignored.
    Float images (mode ``F``) must already lie in [0, 1] and are clipped.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in _16BIT_MODES:
                arr = np.asarray(im).astype(np.float32) / 65535.0
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            else:
                if mode != "L":
                    im = im.convert("RGB").convert("L") if "A" in mode else im.convert("L")
                arr = np.asarray(im).astype(np.float32) / 255.0
    except FileNotFoundError:
        raise ImageReadError(f"{p}: image file does not exist") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{p}: not a recognised image format (undecodable)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(
            f"{p}: truncated or undecodable image ({type(e).__name__}: {e})"
        ) from None
    if arr.ndim != 2:
        raise ImageReadError(f"{p}: expected a 2-D image after conversion, got {arr.shape}")
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# DICOM


def _dcmread(p: Path, *, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(p, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass  # no preamble / DICM magic: retry once with force=True below
    except FileNotFoundError:
        raise ImageReadError(f"{p}: DICOM file does not exist") from None
    except Exception as e:  # noqa: BLE001 - parser errors come in many types
        # The parser's message may quote element bytes; name only the error type.
        raise ImageReadError(f"{p}: unreadable DICOM ({type(e).__name__})") from None
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels, force=True)
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(f"{p}: unreadable DICOM ({type(e).__name__})") from None
    if len(ds) == 0 or ("Rows" not in ds and "PixelData" not in ds):
        raise ImageReadError(f"{p}: unreadable DICOM (no DICM header and no image elements)")
    return ds


def _transfer_syntax(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(ts) if ts is not None else "unknown"


def _stored_range(ds, arr: np.ndarray) -> tuple[float, float]:
    """Range of the stored values from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or arr.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def _modality_range(ds, arr: np.ndarray) -> tuple[float, float]:
    """Output range of the modality LUT (the same rule pydicom's windowing uses)."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        return 0.0, float(2 ** int(seq[0].LUTDescriptor[2]) - 1)
    lo, hi = _stored_range(ds, arr)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        s, b = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * s + b, hi * s + b))
    return lo, hi


def _voi_kind(ds) -> str | None:
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return None


def _voi_lut_range(ds) -> tuple[float, float]:
    """Actual output range of a VOI LUT (its min/max entry; nominal depth is often wrong)."""
    desc = ds.VOILUTSequence[0].LUTDescriptor
    n = int(desc[0]) or 2**16
    first = int(desc[1])
    out = apply_voi(np.arange(first, first + n, dtype=np.int64), ds)
    lo, hi = float(np.min(out)), float(np.max(out))
    if hi <= lo:
        lo, hi = 0.0, float(2 ** int(desc[2]) - 1)
    return lo, hi


def read_dicom(path: str | Path) -> np.ndarray:
    """Read a single-frame greyscale DICOM -> ``(H, W)`` float32 in [0, 1] (1 = bright).

    Applies the modality LUT, then the VOI LUT/window (a VOI LUT Sequence is preferred
    over WindowCenter/WindowWidth; the first of several windows is used), scales by the
    output range (BitsStored range through the modality LUT when no VOI applies) and
    inverts MONOCHROME1. Only MONOCHROME1/MONOCHROME2 are supported.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: DICOM file does not exist")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: zero-byte file")
    ds = _dcmread(p)
    if "PixelData" not in ds:
        raise ImageReadError(f"{p}: DICOM has no pixel data (PixelData element missing)")
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if pi not in SUPPORTED_PHOTOMETRIC:
        raise ImageReadError(
            f"{p}: unsupported PhotometricInterpretation {pi or '(missing)'!r}; "
            f"only {' and '.join(SUPPORTED_PHOTOMETRIC)} (greyscale) are supported"
        )
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ImageReadError(f"{p}: SamplesPerPixel {ds.SamplesPerPixel} != 1 (not greyscale)")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 - decoders raise many types
        raise ImageReadError(
            f"{p}: cannot decode DICOM pixel data (transfer syntax {_transfer_syntax(ds)}; "
            f"{type(e).__name__}: {e})"
        ) from None
    if arr.ndim != 2:
        raise ImageReadError(f"{p}: expected a single 2-D frame, pixel array has {arr.shape}")
    try:
        lo, hi = _modality_range(ds, arr)
        out = apply_modality_lut(arr, ds)
        kind = _voi_kind(ds)
        if kind is not None:
            if kind == "lut":
                lo, hi = _voi_lut_range(ds)
            out = apply_voi_lut(out, ds, index=0, prefer_lut=True)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageReadError(
            f"{p}: cannot apply the DICOM modality/VOI LUT ({type(e).__name__}: {e})"
        ) from None
    if hi <= lo:
        raise ImageReadError(f"{p}: degenerate output range [{lo}, {hi}] after the LUTs")
    img = (np.asarray(out, dtype=np.float64) - lo) / (hi - lo)
    img = np.clip(img, 0.0, 1.0)
    if pi == "MONOCHROME1":
        img = 1.0 - img
    return img.astype(np.float32)


def _plain(value: Any) -> Any:
    """DICOM element value -> plain Python (MultiValue -> list, DS/IS -> float/int)."""
    from pydicom.multival import MultiValue

    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return None
    if isinstance(value, int | float | str):
        # DSfloat/IS subclass float/int; normalise to the builtin.
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        return str(value)
    return str(value)


def _age_years(value: str) -> int | None:
    """DICOM AS (``nnnY``/``nnnM``/``nnnW``/``nnnD``) -> whole years capped at 90."""
    v = str(value).strip().upper()
    if len(v) < 2 or not v[:-1].isdigit():
        return None
    n, unit = int(v[:-1]), v[-1]
    years = {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}.get(unit)
    if years is None:
        return None
    return min(years, AGE_CAP)


def safe_dicom_header(ds, *, demographics: bool = False) -> dict[str, Any]:
    """Whitelisted, non-identifying header fields of a pydicom Dataset -> dict.

    Only :data:`SAFE_TAGS` (plus ``TransferSyntaxUID``, a standard UID naming the pixel
    encoding) are copied; names, patient/study IDs, dates, times and instance UIDs never
    are. With ``demographics=True`` also ``sex`` ("M"/"F"/"" from PatientSex) and ``age``
    (whole years from PatientAge, capped at 90, or None).
    """
    out: dict[str, Any] = {}
    for tag in SAFE_TAGS:
        if tag in ds:
            v = ds.get(tag)
            if v is not None and v != "":
                out[tag] = _plain(v)
    ts = _transfer_syntax(ds)
    if ts != "unknown":
        out["TransferSyntaxUID"] = ts
    if demographics:
        sex = str(ds.get("PatientSex", "") or "").strip().upper()
        out["sex"] = sex if sex in ("M", "F") else ""
        age = ds.get("PatientAge")
        out["age"] = _age_years(age) if age else None
    return out


def read_dicom_header(path: str | Path, *, demographics: bool = False) -> dict[str, Any]:
    """:func:`safe_dicom_header` of a file, read without its pixel data."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: DICOM file does not exist")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: zero-byte file")
    return safe_dicom_header(_dcmread(p, stop_before_pixels=True), demographics=demographics)


# --------------------------------------------------------------------------------------
# Model input


def preprocess_like_rad_dino(
    img: np.ndarray, size: int = 518, *, resample: str = "bicubic"
) -> np.ndarray:
    """The microsoft/rad-dino image-processor geometry on a ``(H, W)`` [0, 1] image.

    The model card's processor (BitImageProcessor) resizes the shorter side to ``size``
    (518) with bicubic resampling, the longer side to ``int(size * long / short)``, then
    centre-crops ``size x size`` (top/left offset ``(dim - size) // 2``). Here the resize
    runs on float32 (Pillow mode ``F``) and the result is clipped back to [0, 1] (bicubic
    overshoots at edges); ``resample="area"`` uses a box filter instead. Intensity
    normalisation (mean/std) is left to the model wrapper. Returns float32 ``(size, size)``.
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {img.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    filters = {"bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}
    if resample not in filters:
        raise ValueError(f"resample must be one of {sorted(filters)}, got {resample!r}")
    h, w = img.shape
    if h <= w:
        nh, nw = size, max(size, int(size * w / h))
    else:
        nh, nw = max(size, int(size * h / w)), size
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), filters[resample]))
    top, left = (nh - size) // 2, (nw - size) // 2
    out = img[top : top + size, left : left + size]
    return np.clip(out, 0.0, 1.0).astype(np.float32)
