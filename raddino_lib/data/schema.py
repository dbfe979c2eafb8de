"""Names shared by every dataset in the project's generic on-disk format.

A dataset folder holds ``records.csv`` (one row per image, columns below), image files
(paths in the ``path`` column, relative to the folder) and optional mask files
(``mask_path``; one ``.npz`` per image, see :mod:`raddino_lib.data.records`).
The phantom writes this format; the real-dataset adapters produce it too.
"""

from __future__ import annotations

# Multi-label findings, one 0/1 column each (blank = unknown for real data).
# The first six are the VinDr-CXR findings of the paper's Table 3, then the
# CANDID-PTX findings of Table 4, then the rest.
VINDR_FINDINGS: tuple[str, ...] = (
    "lung_opacity",
    "cardiomegaly",
    "pleural_thickening",
    "aortic_enlargement",
    "pulmonary_fibrosis",
    "tuberculosis",
)
CANDID_FINDINGS: tuple[str, ...] = ("pneumothorax", "chest_tube", "rib_fracture")
OTHER_FINDINGS: tuple[str, ...] = (
    "pneumonia",
    "pleural_effusion",
    "nodule",
    "support_devices",
)
FINDINGS: tuple[str, ...] = VINDR_FINDINGS + CANDID_FINDINGS + OTHER_FINDINGS + ("no_finding",)

# Findings small or faint enough that downsampling loses them (resolution ablation).
SMALL_FINDINGS: tuple[str, ...] = ("pneumothorax", "chest_tube", "rib_fracture", "nodule")

# Short labels used in tables, as in the paper.
FINDING_ABBREV: dict[str, str] = {
    "lung_opacity": "LO",
    "cardiomegaly": "CM",
    "pleural_thickening": "PL-T",
    "aortic_enlargement": "AE",
    "pulmonary_fibrosis": "PF",
    "tuberculosis": "TB",
    "pneumothorax": "PTX",
    "chest_tube": "Tube",
    "rib_fracture": "Fx",
    "pneumonia": "PNA",
    "pleural_effusion": "PE",
    "nodule": "Nod",
    "support_devices": "SD",
    "no_finding": "NF",
}

VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL")
SPLITS: tuple[str, ...] = ("train", "val", "test")
METADATA: tuple[str, ...] = ("sex", "age", "weight", "height", "bmi")

ID_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", "image_id")
RECORD_COLUMNS: tuple[str, ...] = (
    *ID_COLUMNS,
    "path",
    "split",
    "view",
    "cohort",
    *FINDINGS,
    *METADATA,
    "report",
    "mask_path",
)

# Mask names. Left/right are the PATIENT's sides (patient left is image right on a PA film).
LUNG_MASKS: tuple[str, ...] = ("lung_right", "lung_left")
ZONE_MASKS: tuple[str, ...] = (
    "zone_right_upper",
    "zone_right_mid",
    "zone_right_lower",
    "zone_left_upper",
    "zone_left_mid",
    "zone_left_lower",
)
RIB_MASKS: tuple[str, ...] = tuple(f"rib_R{i}" for i in range(1, 11)) + tuple(
    f"rib_L{i}" for i in range(1, 11)
)
FINDING_MASKS: tuple[str, ...] = ("pneumothorax", "chest_tube")
# Anatomy masks that the phantom also writes (used for checks such as the CTR).
ANATOMY_MASKS: tuple[str, ...] = ("heart", "thorax")
MASK_NAMES: tuple[str, ...] = LUNG_MASKS + ZONE_MASKS + RIB_MASKS + FINDING_MASKS + ANATOMY_MASKS
