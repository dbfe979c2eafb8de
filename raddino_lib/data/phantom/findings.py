"""Cohorts (as data), finding prevalences, co-occurrence and per-study finding sampling.

The cohort table mirrors the mixture of the paper's Table B.1 (Multi-CXR):
MIMIC-CXR (ICU, frontal only, ~25% of images), CheXpert (inpatient, AP/PA + laterals,
~27%), PadChest + BRAX + private (outpatient, PA + laterals, ~35%) and NIH-CXR
(screening-like, PA, mostly healthy, ~13%). ``subject_share`` is set so that the
*image* shares come out roughly at those numbers given the images per subject.

Findings are sampled per study with a logistic model: the cohort's base prevalence,
an age term, a subject-level frailty latent (chronic findings), a study-level acuity
latent (acute findings) and explicit dependencies (pneumonia -> lung opacity,
pneumothorax/effusion -> chest tube, chest tube -> support devices, TB -> pleural
thickening / fibrosis, ...). ``no_finding`` is 1 iff no other finding is present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from raddino_lib.data import schema

COHORTS: tuple[str, ...] = ("icu", "inpatient", "outpatient", "screening")

# One row per cohort. Prevalences are the *base* probabilities fed to the logistic model
# (the realised prevalences shift a little through the dependencies and latents).
COHORT_TABLE: dict[str, dict] = {
    "icu": {
        "mirrors": "MIMIC-CXR",
        "subject_share": 0.40,
        "studies_per_subject": (0.80, 0.15, 0.05),
        "p_ap": 0.90,
        "p_lateral": 0.0,
        "age": (64.0, 16.0),
        "p_female": 0.45,
        "bmi_median": 28.0,
        "prevalence": {
            "lung_opacity": 0.30,
            "cardiomegaly": 0.25,
            "pleural_thickening": 0.05,
            "aortic_enlargement": 0.15,
            "pulmonary_fibrosis": 0.04,
            "tuberculosis": 0.02,
            "pneumothorax": 0.10,
            "chest_tube": 0.10,
            "rib_fracture": 0.06,
            "pneumonia": 0.15,
            "pleural_effusion": 0.30,
            "nodule": 0.06,
            "support_devices": 0.45,
        },
    },
    "inpatient": {
        "mirrors": "CheXpert",
        "subject_share": 0.19,
        "studies_per_subject": (0.40, 0.35, 0.25),
        "p_ap": 0.55,
        "p_lateral": 0.5,
        "age": (60.0, 17.0),
        "p_female": 0.42,
        "bmi_median": 27.0,
        "prevalence": {
            "lung_opacity": 0.22,
            "cardiomegaly": 0.18,
            "pleural_thickening": 0.07,
            "aortic_enlargement": 0.12,
            "pulmonary_fibrosis": 0.05,
            "tuberculosis": 0.03,
            "pneumothorax": 0.08,
            "chest_tube": 0.06,
            "rib_fracture": 0.05,
            "pneumonia": 0.10,
            "pleural_effusion": 0.20,
            "nodule": 0.08,
            "support_devices": 0.28,
        },
    },
    "outpatient": {
        "mirrors": "PadChest + BRAX + private",
        "subject_share": 0.27,
        "studies_per_subject": (0.55, 0.30, 0.15),
        "p_ap": 0.08,
        "p_lateral": 0.6,
        "age": (62.0, 18.0),
        "p_female": 0.50,
        "bmi_median": 26.5,
        "prevalence": {
            "lung_opacity": 0.10,
            "cardiomegaly": 0.12,
            "pleural_thickening": 0.13,
            "aortic_enlargement": 0.22,
            "pulmonary_fibrosis": 0.10,
            "tuberculosis": 0.07,
            "pneumothorax": 0.03,
            "chest_tube": 0.01,
            "rib_fracture": 0.05,
            "pneumonia": 0.05,
            "pleural_effusion": 0.08,
            "nodule": 0.10,
            "support_devices": 0.05,
        },
    },
    "screening": {
        "mirrors": "NIH-CXR",
        "subject_share": 0.14,
        "studies_per_subject": (0.40, 0.35, 0.25),
        "p_ap": 0.05,
        "p_lateral": 0.0,
        "age": (46.0, 16.0),
        "p_female": 0.45,
        "bmi_median": 25.0,
        "prevalence": {
            "lung_opacity": 0.06,
            "cardiomegaly": 0.05,
            "pleural_thickening": 0.04,
            "aortic_enlargement": 0.04,
            "pulmonary_fibrosis": 0.02,
            "tuberculosis": 0.03,
            "pneumothorax": 0.03,
            "chest_tube": 0.01,
            "rib_fracture": 0.02,
            "pneumonia": 0.03,
            "pleural_effusion": 0.03,
            "nodule": 0.05,
            "support_devices": 0.02,
        },
    },
}

# Findings that belong to the subject (same in every study) vs. to the study.
CHRONIC: tuple[str, ...] = (
    "cardiomegaly",
    "aortic_enlargement",
    "tuberculosis",
    "pulmonary_fibrosis",
    "pleural_thickening",
    "nodule",
)
ACUTE: tuple[str, ...] = (
    "rib_fracture",
    "pneumothorax",
    "pneumonia",
    "lung_opacity",
    "pleural_effusion",
    "chest_tube",
    "support_devices",
)
# Log-odds per 15 years of age above 60.
AGE_COEF: dict[str, float] = {
    "cardiomegaly": 0.5,
    "aortic_enlargement": 0.9,
    "pulmonary_fibrosis": 0.8,
    "pleural_thickening": 0.4,
    "nodule": 0.3,
    "tuberculosis": 0.0,
    "pleural_effusion": 0.3,
    "pneumonia": 0.2,
    "rib_fracture": 0.2,
}
# (parent, child, log-odds added to the child when the parent is present)
DEPENDENCIES: tuple[tuple[str, str, float], ...] = (
    ("tuberculosis", "pleural_thickening", 1.6),
    ("tuberculosis", "pulmonary_fibrosis", 0.8),
    ("cardiomegaly", "aortic_enlargement", 0.6),
    ("rib_fracture", "pneumothorax", 1.2),
    ("cardiomegaly", "pleural_effusion", 1.0),
    ("pneumonia", "pleural_effusion", 0.8),
    ("pneumothorax", "chest_tube", 2.8),
    ("pleural_effusion", "chest_tube", 1.2),
    ("pneumonia", "support_devices", 0.7),
    ("pleural_effusion", "support_devices", 0.7),
)
P_OPACITY_GIVEN_PNEUMONIA = 0.9

SEVERITY_FINDINGS: tuple[str, ...] = tuple(f for f in schema.FINDINGS if f != "no_finding")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def cohort_probabilities() -> np.ndarray:
    """Subject-level cohort mixture, shape (len(COHORTS),), summing to 1."""
    p = np.array([COHORT_TABLE[c]["subject_share"] for c in COHORTS], dtype=float)
    return p / p.sum()


def sample_chronic(rng: np.random.Generator, cohort: str, age: float) -> dict[str, int]:
    """Sample the subject-level (chronic) findings. Returns name -> 0/1."""
    spec = COHORT_TABLE[cohort]["prevalence"]
    frailty = rng.standard_normal()
    out: dict[str, int] = {}
    for f in CHRONIC:
        z = _logit(spec[f]) + AGE_COEF.get(f, 0.0) * (age - 60.0) / 15.0 + 0.5 * frailty
        z += sum(w for p, c, w in DEPENDENCIES if c == f and out.get(p, 0))
        out[f] = int(rng.random() < _sigmoid(z))
    return out


def sample_study_findings(
    rng: np.random.Generator, cohort: str, age: float, chronic: Mapping[str, int]
) -> dict[str, int]:
    """Sample one study's labels (chronic ones copied) -> name -> 0/1 for schema.FINDINGS."""
    spec = COHORT_TABLE[cohort]["prevalence"]
    acuity = rng.standard_normal()
    out: dict[str, int] = dict(chronic)
    for f in ACUTE:
        if f == "lung_opacity" and out.get("pneumonia", 0):
            out[f] = int(rng.random() < P_OPACITY_GIVEN_PNEUMONIA)
            continue
        if f == "support_devices" and out.get("chest_tube", 0):
            out[f] = 1
            continue
        z = _logit(spec[f]) + AGE_COEF.get(f, 0.0) * (age - 60.0) / 15.0 + 0.6 * acuity
        z += sum(w for p, c, w in DEPENDENCIES if c == f and out.get(p, 0))
        out[f] = int(rng.random() < _sigmoid(z))
    out["no_finding"] = int(not any(out[f] for f in SEVERITY_FINDINGS))
    return {f: int(out[f]) for f in schema.FINDINGS}


def sample_ctr(rng: np.random.Generator, cardiomegaly: int, age: float) -> float:
    """True (PA-equivalent) cardiothoracic ratio; > 0.5 iff cardiomegaly (with a gap)."""
    if cardiomegaly:
        return float(rng.uniform(0.525, 0.66))
    return float(np.clip(rng.normal(0.42 + 0.0008 * (age - 50.0), 0.03), 0.34, 0.475))


def describe() -> dict:
    """JSON-serialisable description of the cohort/finding model (for dataset.json)."""
    return {
        "cohorts": {c: dict(COHORT_TABLE[c]) for c in COHORTS},
        "chronic": list(CHRONIC),
        "acute": list(ACUTE),
        "age_coef_per_15y": dict(AGE_COEF),
        "dependencies": [list(d) for d in DEPENDENCIES],
        "p_opacity_given_pneumonia": P_OPACITY_GIVEN_PNEUMONIA,
    }
