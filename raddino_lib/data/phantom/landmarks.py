"""True anatomical landmarks of phantom frontal images, recomputed without rendering.

For correspondence experiments (match a patch at a landmark of one X-ray to the most similar
patch of another, measure the distance of the match to the *true* landmark) the phantom knows
where every structure is: the renderer draws each frontal image from a per-image geometry
(:class:`~.render.Frontal`: subject anatomy after the image's inspiration and AP
magnification) placed by the image's pose. This module rebuilds exactly that geometry from the
dataset's seed -- the same :func:`~.generate.make_subject`, :func:`~.generate.image_pose` and
:func:`~.render.frontal_geometry` calls that :func:`~.generate.render_task` makes -- and reads
the landmarks off it analytically, so thousands of records take about a second.

Landmarks (:data:`LANDMARKS`; right / left are the PATIENT's sides: patient right is the image
LEFT of a frontal film). "Top", "lowest" and "most lateral" refer to the patient's own axes
(the thorax before the pose's small in-plane rotation), so each landmark is a fixed
anatomical point that moves rigidly with the patient:

- ``apex_right`` / ``apex_left``: lung apex, the topmost point of each lung. The phantom's lung
  is cut flat at the top of the thoracic cavity, so this is the middle of that short top edge
  (or, where the mediastinum is wider than the cavity there, the point where the lung starts).
- ``costophrenic_right`` / ``_left``: costophrenic angle, the lowest lateral corner of each lung,
  where the diaphragm meets the lateral chest wall.
- ``carina``: the tracheal bifurcation, where the centre lines of the two main bronchi meet
  (the trachea's own centre line there lies 0.012 units, ~1 mm, to the patient's right).
- ``heart_border_right``: most lateral point of the right cardiac silhouette (right atrium):
  the patient-rightmost point of the heart outline.
- ``heart_border_left``: most lateral point of the left ventricle contour (patient-leftmost).
- ``aortic_knob``: most lateral point of the aortic arch bulge on the left mediastinal border
  (the medial edge of the left lung there).
- ``hemidiaphragm_right`` / ``_left``: top of each diaphragm dome.

Findings do not move these structures in the phantom (an effusion may *hide* a costophrenic
angle; the landmark stays the anatomical point); cardiomegaly, the AP magnification of the
heart, inspiration and the pose are all reflected. Landmarks may fall under the collimator's
blanked border (masks there are clipped to the exposed field; these points are not).

Pixel coordinates: ``x`` = column, ``y`` = row of the stored ``size x size`` image, origin at
the top-left *corner*, continuous, so pixel ``(row r, col c)`` covers ``[c, c + 1) x [r, r + 1)``
and its centre is at ``(c + 0.5, r + 0.5)``; ``int(x)`` is the column index. Coordinates scale
exactly with the size: a landmark at 64 px is at half its 128 px coordinates.

LATERAL views get NaN: the renderer has no frontal geometry for them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data.phantom.anatomy import Pose
from raddino_lib.data.phantom.generate import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    Subject,
    image_pose,
    make_subject,
    study_plan,
)
from raddino_lib.data.phantom.render import Frontal, frontal_geometry

#: Landmark names; right / left are the patient's sides.
LANDMARKS: tuple[str, ...] = (
    "apex_right",
    "apex_left",
    "costophrenic_right",
    "costophrenic_left",
    "carina",
    "heart_border_right",
    "heart_border_left",
    "aortic_knob",
    "hemidiaphragm_right",
    "hemidiaphragm_left",
)

#: Columns of :func:`landmark_table`: ``<name>_x``, ``<name>_y`` per landmark.
LANDMARK_COLUMNS: tuple[str, ...] = tuple(f"{n}_{c}" for n in LANDMARKS for c in ("x", "y"))

FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")

# Constants of render.py restated here (render.py draws them inline):
CARINA_BELOW_APEX = 0.42  # render_spine_etc / render_devices: carina = g.y_apex + 0.42
DOME_TOP_X = 0.42  # Frontal.diaphragm: lowest diaphragm height at |x| = 0.42 * hw
KNOB_SIGMA = 0.065  # Frontal.med_of: width of the knob's Gaussian bulge

_GRID = 2001  # samples of the knob's 1-D search (then refined by a parabola)


# ----------------------------------------------------------------------- patient frame
def _med(g: Frontal, y: float, side: int) -> float:
    return float(g.med_of(np.array([y], np.float64), side)[0])


def _bisect(f, lo: float, hi: float, n: int = 30) -> float:
    """Root of ``f`` in ``[lo, hi]`` with ``f(lo) > 0 >= f(hi)``."""
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _apex(g: Frontal, side: int) -> tuple[float, float]:
    """Top of the lung region ``med_of(y) < |x| < hw_of(y), y > y_apex`` (render_lungs)."""
    width = lambda y: g.hw_at(y) - _med(g, y, side)  # noqa: E731
    y0 = g.y_apex
    if width(y0) <= 0:
        # The mediastinum is wider than the cavity at its top: the lung starts lower down.
        ys = np.linspace(g.y_apex, g.dome[side], 401)
        ok = np.flatnonzero(g.hw_of(ys) > g.med_of(ys, side))
        if ok.size == 0:
            return math.nan, math.nan
        k = int(ok[0])
        y0 = _bisect(lambda y: -width(y), float(ys[k - 1]), float(ys[k]))
    m = _med(g, y0, side)
    return side * 0.5 * (m + g.hw_at(y0)), y0


def _costophrenic(g: Frontal, side: int) -> tuple[float, float]:
    """Lowest crossing of the lateral wall ``|x| = hw_of(y)`` with the diaphragm ``y = dia(x)``."""
    dia = lambda x: float(g.diaphragm(np.array([x], np.float64), side)[0])  # noqa: E731
    y = dia(g.hw)
    if g.hw_at(y) == g.hw:  # usual case: the wall is vertical (full width) down there
        return side * g.hw, y
    f = lambda y: dia(g.hw_at(y)) - y  # noqa: E731  (> 0: still above the diaphragm)
    # dia(x) <= dome + 0.36 * 0.58^2 for |x| <= hw, so f < 0 below that.
    lo, hi = g.y_apex, g.dome[side] + 0.36 * (1.0 - DOME_TOP_X) ** 2 + 0.01
    ys = np.linspace(lo, hi, 401)
    fs = g.diaphragm(g.hw_of(ys), side) - ys
    above = np.flatnonzero(fs > 0)
    if above.size == 0:
        return math.nan, math.nan
    k = int(above[-1])  # lowest sample still above the diaphragm
    y = _bisect(f, float(ys[k]), float(ys[min(k + 1, len(ys) - 1)]))
    return side * g.hw_at(y), y


def _knob(g: Frontal) -> tuple[float, float]:
    """Most lateral point of the left mediastinal border around the knob's bulge."""
    a = g.anat
    ys = np.linspace(a.knob_y - 2 * KNOB_SIGMA, a.knob_y + 2 * KNOB_SIGMA, _GRID)
    m = g.med_of(ys, 1).astype(np.float64)
    k = int(np.argmax(m))
    y = float(ys[k])
    if 0 < k < len(ys) - 1:  # parabolic refinement of the maximum
        d = m[k - 1] - 2 * m[k] + m[k + 1]
        if d < 0:
            y += 0.5 * (m[k - 1] - m[k + 1]) / d * (ys[1] - ys[0])
    return _med(g, y, 1), y


def _heart_borders(g: Frontal) -> dict[str, tuple[float, float]]:
    """Extreme-x points of the tilted heart ellipse (render._heart_r2 <= 1)."""
    major, minor, phi = g.heart_axes
    c, s = math.cos(phi), math.sin(phi)
    e = math.hypot(major * c, minor * s)  # horizontal half-extent (= g.heart_a)
    dy = (major**2 - minor**2) * s * c / e  # height of the extreme point above/below centre
    return {
        "heart_border_right": (g.heart_x - e, g.heart_y - dy),
        "heart_border_left": (g.heart_x + e, g.heart_y + dy),
    }


def frontal_landmarks(g: Frontal) -> dict[str, tuple[float, float]]:
    """Landmarks of a frontal geometry in *patient* coordinates (see :mod:`.anatomy`).

    Args:
        g: the renderer's per-image geometry (:func:`~.render.frontal_geometry`).

    Returns:
        name -> ``(x, y)``: x to the patient's left (image right), y towards the feet.
    """
    out: dict[str, tuple[float, float]] = {}
    for side, suffix in ((-1, "right"), (1, "left")):
        out[f"apex_{suffix}"] = _apex(g, side)
        out[f"costophrenic_{suffix}"] = _costophrenic(g, side)
    out["carina"] = (0.0, g.y_apex + CARINA_BELOW_APEX)
    out.update(_heart_borders(g))
    out["aortic_knob"] = _knob(g)
    for side, suffix in ((-1, "right"), (1, "left")):
        out[f"hemidiaphragm_{suffix}"] = (side * DOME_TOP_X * g.hw, g.dome[side])
    return {k: out[k] for k in LANDMARKS}


def to_pixels(pose: Pose, size: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates -> continuous pixel coordinates (inverse of :class:`~.render.Canvas`).

    Args:
        pose: the image's pose; size: image side in pixels.
        x, y: ``[...]`` patient coordinates.

    Returns:
        ``(col, row)``, each ``[...]``, origin at the top-left corner (pixel centres at +0.5).
    """
    ca, sa = math.cos(pose.angle), math.sin(pose.angle)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    X = pose.scale * (ca * x - sa * y) + pose.tx
    Y = pose.scale * (sa * x + ca * y) + pose.ty
    return (X + 1.0) * (size / 2.0), (Y + 1.0) * (size / 2.0)


# ------------------------------------------------------------------------- datasets
def _phantom_info(root: str | Path) -> dict:
    meta_path = Path(root) / "dataset.json"
    try:
        info = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: cannot read the dataset description ({e})") from e
    if info.get("generator") != GENERATOR_NAME:
        raise ValueError(
            f"{meta_path}: not a phantom dataset (generator {info.get('generator')!r}); "
            "true landmarks exist only for the built-in phantom"
        )
    if info.get("version") != GENERATOR_VERSION:
        raise ValueError(
            f"{meta_path}: phantom version {info.get('version')} but this code generates "
            f"{GENERATOR_VERSION}; regenerate the dataset to recompute its landmarks"
        )
    return info


def _parse_id(value: object, pattern: str, what: str, where: Path) -> int:
    m = re.fullmatch(pattern, str(value))
    if m is None:
        raise ValueError(f"{where}: {what} {value!r} is not a phantom id")
    return int(m.group(1))


def landmark_table(
    root: str | Path, records: pd.DataFrame, *, inside_only: bool = False
) -> pd.DataFrame:
    """True landmark positions of each record's image, in pixels of the stored image.

    Args:
        root: the phantom dataset folder (``dataset.json`` gives generator, version, seed, size).
        records: ``[N, ...]`` rows of that dataset with ``subject_id`` (``S000123``),
            ``study_id`` (``S000123_0``), ``image_id`` (``I0000042``) and ``view``.
        inside_only: NaN for a landmark outside the image (``x`` or ``y`` not in
            ``[0, size]``). By default such points are returned as they are: the pose can
            place an apex above the top edge or a costophrenic angle beyond the bottom /
            side edge (about 1% and 3% of frontal images at seed 0; the rendered image does
            not show them either).

    Returns:
        ``[N, 2 * len(LANDMARKS)]`` float64 frame, columns :data:`LANDMARK_COLUMNS`
        (``<name>_x`` = column, ``<name>_y`` = row; see the module docstring for the pixel
        convention), same index as ``records``; NaN on LATERAL rows.

    Raises:
        ValueError: the folder is not a phantom of this generator version, or a record does not
            belong to it (ids that are not phantom ids, an image index beyond ``n``, a view the
            study did not acquire).
    """
    info = _phantom_info(root)
    where = Path(root) / "dataset.json"
    seed, size, n = int(info["seed"]), int(info["size"]), int(info["n"])
    missing = [c for c in ("subject_id", "study_id", "image_id", "view") if c not in records]
    if missing:
        raise ValueError(f"landmark_table: records lack the column(s) {missing}")
    subjects: dict[int, Subject] = {}
    plans: dict[tuple[int, int], list[str]] = {}
    out = np.full((len(records), len(LANDMARK_COLUMNS)), np.nan)
    cols = zip(
        records["subject_id"], records["study_id"], records["image_id"], records["view"],
        strict=True,
    )  # fmt: skip
    for r, (sid, stid, iid, view) in enumerate(cols):
        i = _parse_id(sid, r"S(\d+)", "subject_id", where)
        head, _, tail = str(stid).partition("_")
        if head != str(sid) or not tail.isdigit():
            raise ValueError(f"{where}: study_id {stid!r} is not a phantom id of subject {sid}")
        j = int(tail)
        k = _parse_id(iid, r"I(\d+)", "image_id", where)
        if k >= n:
            raise ValueError(f"{where}: image {iid!r} is beyond the dataset's n = {n} images")
        if i not in subjects:
            subjects[i] = make_subject(seed, i)
        subj = subjects[i]
        if j >= subj.n_studies:
            raise ValueError(
                f"{where}: study {stid!r} does not exist for this seed; the records do not "
                "belong to this phantom"
            )
        if (i, j) not in plans:
            plans[(i, j)] = study_plan(seed, subj, j)[0]
        if view not in plans[(i, j)]:
            raise ValueError(
                f"{where}: image {iid!r} is {view!r} but study {stid!r} of this seed acquired "
                f"{plans[(i, j)]}; the records do not belong to this phantom"
            )
        if view not in FRONTAL_VIEWS:
            continue
        pose, _ = image_pose(seed, k, view, subj.anat)
        pts = frontal_landmarks(frontal_geometry(subj.anat, pose, view))
        xy = np.array(list(pts.values()), np.float64)  # [L, 2] patient
        px, py = to_pixels(pose, size, xy[:, 0], xy[:, 1])
        if inside_only:
            off = (px < 0) | (px > size) | (py < 0) | (py > size)
            px[off] = py[off] = np.nan
        out[r, 0::2] = px
        out[r, 1::2] = py
    return pd.DataFrame(out, index=records.index, columns=list(LANDMARK_COLUMNS))


def landmarks_for(
    root: str | Path, row: Mapping | pd.Series, *, inside_only: bool = False
) -> dict[str, tuple[float, float]]:
    """Landmarks of one record: name -> ``(x, y)`` in pixels (NaN for a LATERAL view).

    Same arguments as :func:`landmark_table`, for a single row.
    """
    keys = ("subject_id", "study_id", "image_id", "view")
    t = landmark_table(root, pd.DataFrame([{k: row[k] for k in keys}]), inside_only=inside_only)
    v = t.iloc[0]
    return {name: (float(v[f"{name}_x"]), float(v[f"{name}_y"])) for name in LANDMARKS}
