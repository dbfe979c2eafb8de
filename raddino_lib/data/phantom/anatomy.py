"""Per-subject anatomy parameters, per-image pose, and their sampling.

Coordinates: anatomy lives in *patient coordinates* (x, y), 1 unit ~ 20 cm, origin at
mid-thorax, y pointing down (feet), x pointing to the image right of a frontal film
(= patient LEFT). A side sign ``s`` is -1 for the patient's right and +1 for the left.
The pose (rotation, scale, translation) maps patient coordinates to normalised image
coordinates in [-1, 1]; rendering evaluates every structure at any pixel size, so
physical-size features scale with the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from raddino_lib.data.phantom.findings import COHORT_TABLE, sample_ctr


@dataclass(frozen=True)
class Metadata:
    """Subject metadata as written to records.csv."""

    sex: str  # "M" or "F"
    age: int  # years
    weight: float  # kg
    height: float  # cm
    bmi: float  # kg/m^2 = weight / (height/100)^2 of the rounded values


@dataclass(frozen=True)
class Anatomy:
    """Subject anatomy in patient coordinates (see module docstring)."""

    thorax_hw: float  # inner thoracic half-width W_t
    y_apex: float  # top of the thoracic cavity
    dome_right: float  # right hemidiaphragm dome height (PA, full inspiration)
    dome_left: float
    ctr: float  # true cardiothoracic ratio (PA)
    heart_aspect: float  # heart half-height / half-width
    heart_y: float  # heart centre (relative to dome_left)
    med_hw: float  # upper mediastinum half-width
    knob: float  # aortic knob bulge (left)
    knob_y: float
    soft_depth: float  # soft-tissue attenuation through the chest (BMI)
    fat: float  # lateral chest-wall / fat-layer thickness
    breast: float  # breast shadow size (0 for men)
    bone: float  # bone density multiplier (osteopenia with age)
    calcification: float  # costal cartilage calcification (0..1, age)
    kyphosis: float  # 0..1 (age)
    rib_drop: float  # how much posterior ribs curve down laterally
    rib_r: float  # rib half-height
    texture: int  # which lung-marking texture variant
    shoulder: float  # shoulder / humeral head position
    markings: float = 1.0  # interstitial lung-marking prominence (rises with age)


def sample_metadata(rng: np.random.Generator, cohort: str) -> Metadata:
    """Sex, age, height, weight, BMI from the cohort's distributions."""
    spec = COHORT_TABLE[cohort]
    female = rng.random() < spec["p_female"]
    age = int(np.clip(round(rng.normal(*spec["age"])), 18, 95))
    height = rng.normal(163.0, 6.5) if female else rng.normal(176.5, 7.0)
    height = round(float(np.clip(height, 140.0, 205.0)), 1)
    bmi_raw = float(np.clip(spec["bmi_median"] * np.exp(rng.normal(0.0, 0.18)), 15.0, 55.0))
    weight = round(bmi_raw * (height / 100.0) ** 2, 1)
    bmi = round(weight / (height / 100.0) ** 2, 2)
    return Metadata("F" if female else "M", age, weight, height, bmi)


def sample_anatomy(rng: np.random.Generator, meta: Metadata, chronic: dict[str, int]) -> Anatomy:
    """Subject anatomy driven by metadata and chronic findings."""
    female = meta.sex == "F"
    a = (meta.age - 50.0) / 25.0
    b = (meta.bmi - 26.0) / 6.0
    hw = (0.63 if female else 0.685) * (meta.height / 170.0) ** 0.6 * np.exp(rng.normal(0, 0.035))
    y_apex = -0.80 + rng.normal(0, 0.02)
    dome_l = 0.42 + 0.04 * b + 0.08 * a + rng.normal(0, 0.03)  # older: lower, flatter domes
    if chronic.get("pulmonary_fibrosis"):
        dome_l -= 0.08  # reduced lung volume
    dome_r = dome_l - rng.uniform(0.04, 0.12)
    ctr = sample_ctr(rng, chronic.get("cardiomegaly", 0), meta.age)
    knob = 0.028 + 0.045 * max(a, 0.0) + rng.normal(0, 0.005)  # aortic unfolding with age
    if chronic.get("aortic_enlargement"):
        knob += rng.uniform(0.035, 0.06)
    anat = Anatomy(
        thorax_hw=float(hw),
        y_apex=float(y_apex),
        dome_right=float(dome_r),
        dome_left=float(dome_l),
        ctr=float(ctr),
        heart_aspect=float(rng.uniform(0.72, 0.86)),
        heart_y=float(-0.16 + rng.normal(0, 0.02)),
        med_hw=float(
            0.085
            + 0.04 * max(a, 0)
            + rng.normal(0, 0.008)
            + (0.025 if chronic.get("aortic_enlargement") else 0.0)
        ),
        knob=float(max(knob, 0.01)),
        knob_y=float(-0.47 - 0.04 * max(a, 0) + rng.normal(0, 0.02)),
        soft_depth=float(np.clip(1.0 + 0.22 * b + rng.normal(0, 0.05), 0.7, 1.9)),
        fat=float(np.clip(0.05 + 0.035 * b + rng.normal(0, 0.01), 0.02, 0.2)),
        breast=float(np.clip(rng.normal(0.22, 0.04) + 0.03 * b, 0.12, 0.35)) if female else 0.0,
        bone=float(
            np.clip(
                1.05 - 0.35 * max(a, -0.6) - (0.08 if female else 0) + rng.normal(0, 0.05),
                0.5,
                1.25,
            )
        ),
        calcification=float(np.clip(0.45 * a + 0.15 + rng.normal(0, 0.15), 0.0, 1.0)),
        kyphosis=float(np.clip(0.4 * a + 0.2 + rng.normal(0, 0.1), 0.0, 1.0)),
        rib_drop=float(rng.uniform(0.10, 0.17) + 0.02 * max(a, 0)),
        rib_r=float(rng.uniform(0.020, 0.026) * (0.95 if female else 1.0)),
        texture=int(rng.integers(0, 1 << 30)),
        shoulder=float(rng.normal(0, 0.03)),
    )
    # Derived without a draw of its own, so the rest of the subject is unchanged; the jitter
    # comes from the texture id.
    jitter = anat.texture % 997 / 997.0 - 0.5
    return replace(anat, markings=float(np.clip(1.0 + 0.6 * a + 0.3 * jitter, 0.4, 2.2)))


@dataclass(frozen=True)
class Pose:
    """Patient -> normalised image coordinates: p_img = scale * R(angle) p + shift."""

    angle: float  # radians
    scale: float
    tx: float
    ty: float
    inspiration: float  # added to dome heights (< 0: domes higher, e.g. AP / poor effort)


def sample_pose(rng: np.random.Generator, view: str, anat: Anatomy) -> Pose:
    """Random pose with the whole thorax width kept inside the image."""
    angle = np.deg2rad(rng.normal(0.0, 3.5))
    angle = float(np.clip(angle, np.deg2rad(-9), np.deg2rad(9)))
    if view == "LATERAL":
        scale = float(rng.uniform(0.78, 1.0))
    else:
        # Field of view: body half-width in the image between ~0.62 and ~0.92.
        target = rng.uniform(0.60, 0.84)
        scale = float(target / anat.thorax_hw)
    half = scale * (anat.thorax_hw + 0.02)
    room = max(0.96 - half, 0.0)
    tx = float(rng.uniform(-room, room) * (0.45 if view == "LATERAL" else 0.9))
    if view == "LATERAL":
        ty = float(rng.uniform(-0.10, 0.12))
    else:
        lo = -0.97 - scale * anat.y_apex  # apex stays inside the image
        hi = 0.98 - scale * (anat.dome_left + 0.12)  # costophrenic angles too
        ty = float(rng.uniform(lo, hi)) if lo < hi else 0.5 * (lo + hi)
    insp = float(rng.normal(0.0, 0.03) + (-0.09 if view == "AP" else 0.0))
    return Pose(angle, scale, tx, ty, insp)
