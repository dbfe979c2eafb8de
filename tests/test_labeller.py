"""Rule labeller on hand-written, real-style report sentences."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from raddino_lib.data.schema import FINDINGS
from raddino_lib.text import (
    CHEXBERT_14,
    FINDING_TO_CHEXBERT,
    label_chexbert,
    label_report,
    label_reports,
    label_reports_chexbert,
)
from raddino_lib.text.labeller import to_chexbert

CASES: list[tuple[str, dict[str, float]]] = [
    ("No pneumothorax.", {"pneumothorax": 0.0}),
    ("Small left apical pneumothorax.", {"pneumothorax": 1.0}),
    ("Cannot exclude a small pneumothorax.", {"pneumothorax": -1.0}),
    ("Right chest tube in place; no pneumothorax.", {"chest_tube": 1.0, "pneumothorax": 0.0}),
    ("Heart size is normal.", {"cardiomegaly": 0.0}),
    ("The heart is enlarged.", {"cardiomegaly": 1.0}),
    (
        "There is no focal consolidation, effusion or pneumothorax.",
        {"lung_opacity": 0.0, "pleural_effusion": 0.0, "pneumothorax": 0.0},
    ),
    ("Enlarged cardiac silhouette.", {"cardiomegaly": 1.0}),
    ("The heart is not enlarged.", {"cardiomegaly": 0.0}),
    ("The cardiomediastinal silhouette is within normal limits.", {"cardiomegaly": 0.0}),
    ("Small PTX at the right apex.", {"pneumothorax": 1.0}),
    ("Left pigtail catheter in place.", {"chest_tube": 1.0}),
    ("Pneumothorax is not excluded.", {"pneumothorax": -1.0}),
    ("Pneumothorax has resolved.", {"pneumothorax": 0.0}),
    ("Resolved left pleural effusion.", {"pleural_effusion": 0.0}),
    ("Bilateral pleural effusions.", {"pleural_effusion": 1.0}),
    ("Free of pleural effusion.", {"pleural_effusion": 0.0}),
    ("Negative for pneumonia.", {"pneumonia": 0.0}),
    ("No evidence of pneumonia.", {"pneumonia": 0.0}),
    ("Without pleural effusion.", {"pleural_effusion": 0.0}),
    ("Bibasilar opacities likely atelectasis.", {"lung_opacity": 1.0}),
    ("Findings suggest early pneumonia.", {"pneumonia": -1.0}),
    ("Questionable nodule in the left upper lobe.", {"nodule": -1.0}),
    ("Possible right lower lobe consolidation.", {"lung_opacity": -1.0}),
    ("Nodular opacity in the right upper lobe.", {"nodule": 1.0, "lung_opacity": math.nan}),
    ("Bibasilar fibrotic changes.", {"pulmonary_fibrosis": 1.0}),
    ("Upper lobe scarring compatible with prior TB.", {"tuberculosis": 1.0}),
    ("Tortuous thoracic aorta.", {"aortic_enlargement": 1.0}),
    ("The aorta is unfolded.", {"aortic_enlargement": 1.0}),
    ("Ectatic aorta.", {"aortic_enlargement": 1.0}),
    ("Biapical pleural thickening.", {"pleural_thickening": 1.0}),
    ("Acute fracture of the left sixth rib.", {"rib_fracture": 1.0}),
    ("No displaced rib fracture.", {"rib_fracture": 0.0}),
    (
        "ET tube terminates 4 cm above the carina. NG tube tip in the stomach.",
        {"support_devices": 1.0},
    ),
    ("Right IJ central line tip in the SVC.", {"support_devices": 1.0}),
    ("Left PICC terminates in the mid SVC.", {"support_devices": 1.0}),
    ("Left chest wall pacemaker with leads in the right ventricle.", {"support_devices": 1.0}),
    ("The chest tube has been removed.", {"chest_tube": 0.0}),
    ("No change in the small left pleural effusion.", {"pleural_effusion": 1.0}),
    (
        "No pneumothorax, but there is a small left effusion.",
        {"pneumothorax": 0.0, "pleural_effusion": 1.0},
    ),
    (
        "No effusion; however, there is a moderate pneumothorax.",
        {"pleural_effusion": 0.0, "pneumothorax": 1.0},
    ),
    (
        "Left basilar opacity, which may represent pneumonia.",
        {"lung_opacity": 1.0, "pneumonia": -1.0},
    ),
    ("No pericardial effusion.", {"pleural_effusion": math.nan}),
]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_hand_written_sentences(text: str, expected: dict[str, float]) -> None:
    got = label_report(text)
    assert set(got) == set(FINDINGS)
    for finding, value in expected.items():
        assert _same(got[finding], value), (text, finding, got[finding], value)


def test_unmentioned_findings_are_nan() -> None:
    got = label_report("No pneumothorax.")
    assert sum(not math.isnan(v) for v in got.values()) == 2  # pneumothorax + no_finding
    assert math.isnan(got["cardiomegaly"])


def test_no_finding_aggregation() -> None:
    assert label_report("No acute cardiopulmonary process.")["no_finding"] == 1.0
    assert label_report("No pneumothorax. Heart size is normal.")["no_finding"] == 1.0
    assert label_report("Possible small effusion.")["no_finding"] == 0.0
    assert label_report("Cardiomegaly.")["no_finding"] == 0.0


def test_positive_beats_uncertain_beats_negative() -> None:
    text = "No effusion on the left. Possible right effusion. Small right pleural effusion."
    assert label_report(text)["pleural_effusion"] == 1.0
    assert label_report("No left effusion. Possible right effusion.")["pleural_effusion"] == -1.0


def test_label_reports_dataframe() -> None:
    texts = pd.Series(["No pneumothorax.", "Cardiomegaly."], index=["a", "b"])
    df = label_reports(texts)
    assert list(df.columns) == list(FINDINGS)
    assert list(df.index) == ["a", "b"]
    assert df.loc["a", "pneumothorax"] == 0.0
    assert df.loc["b", "cardiomegaly"] == 1.0
    assert label_reports(["", "Cardiomegaly."]).shape == (2, len(FINDINGS))


def test_chexbert_mapping() -> None:
    assert len(CHEXBERT_14) == 14
    assert set(FINDING_TO_CHEXBERT) <= set(FINDINGS)
    assert set(FINDING_TO_CHEXBERT.values()) <= set(CHEXBERT_14)
    mapped = to_chexbert(label_report("Right chest tube in place. Possible pneumothorax."))
    assert set(mapped) == set(CHEXBERT_14)
    assert mapped["Support Devices"] == 1.0
    assert mapped["Pneumothorax"] == -1.0
    assert math.isnan(mapped["Edema"])


# ------------------------------------------------------------------ all 14 CheXbert classes
CHEXBERT_CASES: list[tuple[str, dict[str, float]]] = [
    ("Mild pulmonary edema.", {"Edema": 1.0, "No Finding": 0.0}),
    ("No pulmonary edema.", {"Edema": 0.0, "No Finding": 1.0}),
    ("Findings may represent mild vascular congestion.", {"Edema": -1.0, "No Finding": 0.0}),
    ("Bibasilar atelectasis.", {"Atelectasis": 1.0}),
    ("Possible left lower lobe atelectasis.", {"Atelectasis": -1.0, "No Finding": 0.0}),
    ("Right lower lobe consolidation.", {"Consolidation": 1.0, "Lung Opacity": 1.0}),
    ("No focal consolidation.", {"Consolidation": 0.0, "Lung Opacity": 0.0, "No Finding": 1.0}),
    ("The mediastinum is widened.", {"Enlarged Cardiomediastinum": 1.0}),
    ("Tortuous thoracic aorta.", {"Enlarged Cardiomediastinum": 1.0}),
    (
        "No edema, consolidation or pneumothorax. Small left effusion.",
        {
            "Edema": 0.0,
            "Consolidation": 0.0,
            "Pneumothorax": 0.0,
            "Pleural Effusion": 1.0,
            "No Finding": 0.0,
        },
    ),  # fmt: skip
    (
        "Cardiomegaly with mild interstitial edema; right PICC in place.",
        {"Cardiomegaly": 1.0, "Edema": 1.0, "Support Devices": 1.0, "No Finding": 0.0},
    ),
    (
        "No acute cardiopulmonary process.",
        {c: (1.0 if c == "No Finding" else math.nan) for c in CHEXBERT_14},
    ),
    ("Bibasilar fibrotic changes.", {"No Finding": 0.0}),  # abnormal, no CheXbert class
]


@pytest.mark.parametrize(("text", "expected"), CHEXBERT_CASES)
def test_label_chexbert_hand_written(text: str, expected: dict[str, float]) -> None:
    got = label_chexbert(text)
    assert list(got) == list(CHEXBERT_14)
    for cls, value in expected.items():
        assert _same(got[cls], value), (text, cls, got[cls], value)


def test_label_reports_chexbert_dataframe() -> None:
    df = label_reports_chexbert(pd.Series(["Mild edema.", None], index=["x", "y"]))
    assert list(df.columns) == list(CHEXBERT_14) and list(df.index) == ["x", "y"]
    assert df.loc["x", "Edema"] == 1.0 and df.loc["y", "No Finding"] == 1.0
