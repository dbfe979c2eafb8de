"""Non-medical grayscale images for the in-project general-domain DINO (a DINOv2 stand-in).

DINOv2 was trained on LVD-142M, 142 M curated web photographs. Nothing may be downloaded
here, so the stand-in is built from what is already installed: the natural sample images that
scikit-image ships *inside its wheel* (:data:`PHOTO_SOURCES`; loaded through ``skimage.data``,
which reads them from the package folder -- the ``skimage.data`` functions that need a
``pooch`` download are never called), cut into many random crops, plus procedural images for
diversity. :func:`ensure_natural` writes ``n`` such ``size`` x ``size`` crops as a dataset
folder in the project's generic format (:mod:`raddino_lib.data.schema`), cached and generated
atomically like the phantom (:func:`raddino_lib.data.datasets.ensure_phantom`).

Each image is one of three kinds (the ``cohort`` column), drawn with :data:`KIND_PROBS`:

* ``photo``: a crop of one of the 15 photographs (chosen uniformly), converted to luminance,
  at a uniform rotation in +-30 degrees, a side log-uniform in 20-90% of the photograph's
  shorter side (shrunk where needed so that the rotated square stays inside the photograph),
  a uniform position, a horizontal flip with p = 0.5 and a gamma ``exp(U(-0.4, 0.4))``;
  a near-uniform crop (pixel std < 0.03: a blank wall, the sky) is redrawn.
  Resampling is bilinear on an area-downsampled pyramid level, so the crop is never sampled
  more than 2x coarser than its source (little aliasing).
* ``texture``: noise with a 1/f^beta power spectrum (beta in 2-4, half of them
  anisotropic at a random orientation), passed with equal odds through nothing, a soft
  threshold (patches) or a sine (marbled bands).
* ``shapes``: 3-14 hard-edged, mutually occluding geometric shapes (polygons, rotated
  rectangles, ellipses, thick lines), some textured, on a smooth noise background, lightly
  blurred, with a little pixel noise. Generic "objects and edges", deliberately not the soft
  overlapping blobs an X-ray is made of.

Records (one row per image): ``subject_id`` = ``study_id`` = ``image_id`` = ``nat000123``
(one subject per crop, so subject-level splits are image-level splits); split
``train``/``val``/``test`` by a seeded permutation (10% test, 10% val, at least one image
each, the rest train); view ``PA`` (every image passes the frontal filters; the label means
nothing here); cohort = the kind; every finding 0 and ``no_finding`` 1 (no labels: the data
are only for self-supervised pretraining); metadata blank; empty ``report`` and
``mask_path``. Images are 8-bit grayscale PNGs under ``images/``. ``crops.csv`` records how
each image was made (kind, source, and side, angle, flip, gamma of photo crops or beta of
textures) and ``dataset.json`` the generator, its version and parameters.

Determinism: image ``i`` is a pure function of ``(seed, i, size)`` (``default_rng([seed,
i])``), so the same seed gives identical pixels whatever ``n`` (a smaller ``n`` is a prefix
of a larger one, except for the split).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from raddino_lib.atomic import atomic_write_text
from raddino_lib.data import schema
from raddino_lib.data.io import encode_png
from raddino_lib.paths import cache_dir

__all__ = [
    "GENERATOR_VERSION",
    "KIND_PROBS",
    "PHOTO_SOURCES",
    "ensure_natural",
    "generate_natural",
    "load_photo",
    "make_image",
    "natural_dir",
]

# Bump when a change alters the pixels or records produced for the same arguments.
GENERATOR_VERSION = "1.0.0"

# Natural photographs inside the scikit-image wheel (skimage/data/*.png|jpg), read offline.
# Left out on purpose: medical/microscopy images (cell, immunohistochemistry, retina,
# microaneurysms, shepp_logan_phantom), synthetic graphics (logo, colorwheel, checkerboard,
# horse, binary_blobs), lfw_subset (25-pixel faces) and everything that needs pooch.
PHOTO_SOURCES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "page",
    "rocket",
    "text",
    "motorcycle",  # the left image of skimage.data.stereo_motorcycle()
)

KIND_PROBS: dict[str, float] = {"photo": 0.7, "texture": 0.15, "shapes": 0.15}

SPLIT_FRACTIONS: dict[str, float] = {"val": 0.1, "test": 0.1}

_PHOTO_SIDE = (0.2, 0.9)  # crop side as a fraction of the photograph's shorter side
_PHOTO_ANGLE = 30.0  # degrees, uniform in +-this
_GAMMA = 0.4  # log-gamma uniform in +-this
_MIN_STD = 0.03  # photo crops with a lower pixel std are redrawn
_MAX_TRIES = 10
_MIN_SIZE = 16
_MIN_N = 3

_CROP_COLUMNS = ("image_id", "kind", "source", "side_px", "angle_deg", "flipped", "gamma", "beta")


# --------------------------------------------------------------------------- sources
@functools.cache
def load_photo(name: str) -> tuple[np.ndarray, ...]:
    """The photograph ``name`` (one of :data:`PHOTO_SOURCES`) as a pyramid of float32 [0, 1]
    luminance images: level 0 at full resolution, each next level 2x area-downsampled, down
    to a shorter side of at least 64 pixels.

    Raises:
        ValueError: ``name`` is not one of :data:`PHOTO_SOURCES`.
        RuntimeError: scikit-image cannot read the image from its own package folder.
    """
    if name not in PHOTO_SOURCES:
        raise ValueError(f"unknown photo source {name!r}; choose one of {PHOTO_SOURCES}")
    try:
        import skimage.data
        from skimage.color import rgb2gray
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise RuntimeError(
            "the natural-image dataset needs scikit-image: `.venv/bin/pip install "
            "scikit-image` (its exact pin is in requirements.lock)"
        ) from exc
    try:
        if name == "motorcycle":
            img = skimage.data.stereo_motorcycle()[0]
        else:
            img = getattr(skimage.data, name)()
    except Exception as exc:
        raise RuntimeError(
            f"scikit-image could not load its bundled sample image {name!r} ({exc}); "
            "reinstall the scikit-image wheel pinned in requirements.lock"
        ) from exc
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = rgb2gray(arr[..., :3])
    elif arr.dtype == np.uint8:
        arr = arr / 255.0
    arr = np.clip(np.asarray(arr, dtype=np.float32), 0.0, 1.0)
    levels = [arr]
    while min(levels[-1].shape) >= 128:
        a = levels[-1]
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        a = a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float32)
        levels.append(a)
    return tuple(levels)


# --------------------------------------------------------------------------- images
def _photo(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """A random crop of a random photograph; near-uniform crops (a blank wall, the sky) are
    redrawn, up to :data:`_MAX_TRIES` times."""
    for _ in range(_MAX_TRIES):
        img, info = _photo_once(rng, size)
        if float(img.std()) >= _MIN_STD:
            break
    return img, info


def _photo_once(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    name = PHOTO_SOURCES[int(rng.integers(len(PHOTO_SOURCES)))]
    pyramid = load_photo(name)
    h0, w0 = pyramid[0].shape
    angle = float(rng.uniform(-_PHOTO_ANGLE, _PHOTO_ANGLE))
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    fit = min(h0, w0) / (abs(c) + abs(s))  # largest side whose rotated square fits
    lo, hi = (math.log(f * min(h0, w0)) for f in _PHOTO_SIDE)
    side = min(math.exp(rng.uniform(lo, hi)), fit * 0.999)
    half = 0.5 * side * (abs(c) + abs(s))  # half-extent of the rotated square's bounding box
    cy = float(rng.uniform(half, h0 - half))
    cx = float(rng.uniform(half, w0 - half))
    flipped = bool(rng.random() < 0.5)
    gamma = float(math.exp(rng.uniform(-_GAMMA, _GAMMA)))
    # pyramid level: at most 2x fewer output pixels than source pixels on it
    step0 = side / size  # level-0 source pixels per output pixel
    level = min(max(int(math.floor(math.log2(step0))), 0) if step0 > 1 else 0, len(pyramid) - 1)
    src = pyramid[level]
    k = 2.0**level
    u = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5  # output coords in [-0.5, 0.5)
    u_x = -u if flipped else u
    yy, xx = np.meshgrid(u * side, u_x * side, indexing="ij")
    sy = cy + s * xx + c * yy
    sx = cx + c * xx - s * yy
    # continuous coordinates (pixel edges at integers) -> pixel indices of the pyramid level
    coords = np.stack([sy / k - 0.5, sx / k - 0.5])
    out = ndimage.map_coordinates(src, coords, order=1, mode="reflect")
    out = np.clip(out, 0.0, 1.0) ** gamma
    info = {
        "source": name,
        "side_px": round(side, 2),
        "angle_deg": round(angle, 2),
        "flipped": int(flipped),
        "gamma": round(gamma, 3),
    }
    return out.astype(np.float32), info


def _power_noise(
    rng: np.random.Generator, size: int, beta: float, anisotropy: float = 1.0
) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f^beta power spectrum, optionally stretched
    (``anisotropy`` < 1) along a random orientation."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    phi = rng.uniform(0.0, math.pi)
    a = fx * math.cos(phi) + fy * math.sin(phi)
    b = -fx * math.sin(phi) + fy * math.cos(phi)
    f = np.sqrt(a**2 + (b * anisotropy) ** 2)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spec = amp * (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
    out = np.fft.irfft2(spec, s=(size, size))
    return (out - out.mean()) / (out.std() + 1e-8)


def _stretch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map to [0, 1] between the 1st and 99th percentile, into a random sub-range."""
    lo, hi = np.percentile(x, [1.0, 99.0])
    y = np.clip((x - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    a = rng.uniform(0.0, 0.35)
    b = rng.uniform(0.65, 1.0)
    return a + (b - a) * y


def _texture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    beta = float(rng.uniform(2.0, 4.0))
    aniso = float(rng.uniform(0.2, 1.0)) if rng.random() < 0.5 else 1.0
    x = _power_noise(rng, size, beta, aniso)
    mode = ("plain", "threshold", "bands")[int(rng.integers(3))]
    if mode == "threshold":
        x = np.tanh(rng.uniform(2.0, 8.0) * (x - rng.uniform(-0.5, 0.5)))
    elif mode == "bands":
        x = np.sin(rng.uniform(2.0, 6.0) * x + rng.uniform(0.0, 2 * math.pi))
    out = _stretch(x, rng)
    return out.astype(np.float32), {"source": f"texture:{mode}", "beta": round(beta, 3)}


def _shapes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    from skimage.draw import ellipse, polygon

    img = _stretch(_power_noise(rng, size, float(rng.uniform(2.5, 3.5))), rng)
    img = img * rng.uniform(0.3, 1.0)
    n_shapes = int(rng.integers(3, 15))
    for _ in range(n_shapes):
        kind = int(rng.integers(4))
        cy, cx = rng.uniform(-0.1, 1.1, size=2) * size
        r = size * math.exp(rng.uniform(math.log(0.04), math.log(0.3)))
        rot = rng.uniform(0.0, math.pi)
        if kind == 0:  # polygon: random angles around a centre
            m = int(rng.integers(3, 9))
            ang = np.sort(rng.uniform(0.0, 2 * math.pi, m))
            rad = r * rng.uniform(0.5, 1.0, m)
            rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), (size, size))
        elif kind == 1:  # rotated rectangle
            hw, hh = r, r * rng.uniform(0.2, 1.0)
            corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
            ys = cy + corners[:, 0] * math.sin(rot) + corners[:, 1] * math.cos(rot)
            xs = cx + corners[:, 0] * math.cos(rot) - corners[:, 1] * math.sin(rot)
            rr, cc = polygon(ys, xs, (size, size))
        elif kind == 2:  # ellipse
            rr, cc = ellipse(cy, cx, r, r * rng.uniform(0.3, 1.0), shape=(size, size), rotation=rot)
        else:  # thick line
            length, width = 2.0 * r, max(1.0, r * rng.uniform(0.03, 0.15))
            dy, dx = math.sin(rot), math.cos(rot)
            along = np.array([-1.0, 1.0, 1.0, -1.0]) * length / 2
            across = np.array([1.0, 1.0, -1.0, -1.0]) * width / 2
            ys = cy + along * dy + across * dx
            xs = cx + along * dx - across * dy
            rr, cc = polygon(ys, xs, (size, size))
        if len(rr) == 0:
            continue
        level = rng.uniform(0.0, 1.0)
        if rng.random() < 0.3:  # textured fill
            tex = _power_noise(rng, size, float(rng.uniform(1.0, 2.0)))[rr, cc]
            img[rr, cc] = np.clip(level + 0.15 * tex, 0.0, 1.0)
        else:
            img[rr, cc] = level
    sigma = float(rng.uniform(0.0, 1.5)) * size / 256
    if sigma > 0.2:
        img = ndimage.gaussian_filter(img, sigma, mode="reflect")
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.03), img.shape)
    out = np.clip(img, 0.0, 1.0)
    return out.astype(np.float32), {"source": f"shapes:{n_shapes}"}


def make_image(index: int, size: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Image ``index`` of the natural dataset with ``(size, seed)``: a ``[size, size]``
    float32 array in [0, 1] and how it was made (``kind``, ``source``, and for photo crops
    ``side_px``, ``angle_deg``, ``flipped``, ``gamma``)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    kinds = list(KIND_PROBS)
    kind = kinds[int(rng.choice(len(kinds), p=[KIND_PROBS[k] for k in kinds]))]
    make = {"photo": _photo, "texture": _texture, "shapes": _shapes}[kind]
    img, info = make(rng, size)
    return img, {"kind": kind, **info}


# --------------------------------------------------------------------------- dataset
def _splits(n: int, seed: int) -> list[str]:
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * n))
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * n))
    perm = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5B117]).permutation(n)
    split = ["train"] * n
    for i in perm[:n_test]:
        split[int(i)] = "test"
    for i in perm[n_test : n_test + n_val]:
        split[int(i)] = "val"
    return split


def _check_args(n: Any, size: Any) -> None:
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < _MIN_N:
        raise ValueError(
            f"n must be an integer >= {_MIN_N} (one image per split at least), got {n!r}"
        )
    if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < _MIN_SIZE:
        raise ValueError(f"size must be an integer >= {_MIN_SIZE} (pixels per side), got {size!r}")


def generate_natural(
    out_dir: str | Path, n: int, size: int, seed: int = 0, *, progress: bool = True
) -> Path:
    """Write the natural-image dataset ``(n, size, seed)`` into the empty folder ``out_dir``
    (images, ``crops.csv``, ``dataset.json``, then ``records.csv`` last and atomically).

    Raises:
        ValueError: bad ``n``/``size``, or ``out_dir`` exists and is not empty.
    """
    from tqdm.auto import tqdm

    _check_args(n, size)
    n, size, seed = int(n), int(size), int(seed)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"{out} exists and is not an empty folder; choose a new folder (or delete it)"
        )
    (out / "images").mkdir(parents=True, exist_ok=True)
    splits = _splits(n, seed)
    findings = {f: 0 for f in schema.FINDINGS}
    findings["no_finding"] = 1
    rows: list[dict[str, Any]] = []
    crops: list[dict[str, Any]] = []
    counts = {k: 0 for k in KIND_PROBS}
    for i in tqdm(range(n), desc="natural crops", disable=not progress, leave=False):
        img, info = make_image(i, size, seed)
        image_id = f"nat{i:06d}"
        rel = f"images/{image_id}.png"
        u8 = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        (out / rel).write_bytes(encode_png(u8, level=6))  # valid only once records.csv is
        counts[info["kind"]] += 1
        crops.append({"image_id": image_id, **{k: info.get(k, "") for k in _CROP_COLUMNS[1:]}})
        rows.append(
            {
                "subject_id": image_id,
                "study_id": image_id,
                "image_id": image_id,
                "path": rel,
                "split": splits[i],
                "view": "PA",
                "cohort": info["kind"],
                **findings,
                **{m: "" for m in schema.METADATA},
                "report": "",
                "mask_path": "",
            }
        )
    desc = {
        "generator": "natural",
        "version": GENERATOR_VERSION,
        "n": n,
        "size": size,
        "seed": seed,
        "image_format": "8-bit grayscale PNG",
        "kinds": KIND_PROBS,
        "counts": counts,
        "photo_sources": [f"skimage.data.{s}" for s in PHOTO_SOURCES],
        "split_fractions": SPLIT_FRACTIONS,
        "creation": "np.random.default_rng([seed, index]) per image (raddino_lib/data/natural.py)",
    }
    atomic_write_text(out / "dataset.json", json.dumps(desc, indent=1) + "\n")
    atomic_write_text(out / "crops.csv", _csv(_CROP_COLUMNS, crops))
    atomic_write_text(out / "records.csv", _csv(schema.RECORD_COLUMNS, rows))
    return out


def _csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def natural_dir(n: int, size: int, seed: int) -> Path:
    """Cache folder of the natural-image dataset with these parameters (may not exist yet)."""
    return cache_dir("natural", f"v{GENERATOR_VERSION}_n{n}_s{size}_seed{seed}")


def ensure_natural(n: int, size: int, seed: int, *, progress: bool = True) -> Path:
    """The cached natural-image dataset folder ``(n, size, seed)``, generated on first use
    into ``<folder>.partial`` (validated with :func:`raddino_lib.data.records.load_records`)
    and renamed into place, so an interrupted generation never leaves a half dataset."""
    from raddino_lib.data.records import load_records

    _check_args(n, size)
    final = natural_dir(n, size, seed)
    if (final / "records.csv").is_file():
        return final
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    generate_natural(tmp, n, size, seed, progress=progress)
    load_records(tmp)  # the generic format's checks, before the folder becomes visible
    if final.exists():  # a concurrent process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(final)
    return final
