"""Synthetic reports: read back by the rule labeller, they agree with the labels."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from raddino_lib.data.phantom.reports import HEDGE_RATE, MENTION_RATE, write_report
from raddino_lib.data.schema import FINDINGS, VIEWS
from raddino_lib.text import label_report

COHORTS = ("icu", "inpatient", "outpatient", "screening")
ABNORMAL = tuple(f for f in FINDINGS if f != "no_finding")
N_REPORTS = 2000
PREVALENCE = 0.35
HEALTHY_FRACTION = 0.25
BANNED = re.compile(
    r"\b(?:male|female|man|woman|men|women|sex|gender|years?[- ]old|year|age|aged|elderly|"
    r"obese|obesity|overweight|bmi|body mass|kg|lbs?|pounds|weight|breast|nipple)\b",
    re.IGNORECASE,
)
NO_ACUTE = re.compile(
    r"\bno (?:radiographic evidence of )?acute (?:cardiopulmonary|intrathoracic)\b", re.IGNORECASE
)


def _random_labels(rng: np.random.Generator) -> dict[str, int]:
    if rng.random() < HEALTHY_FRACTION:
        labels = dict.fromkeys(ABNORMAL, 0)
    else:
        labels = {f: int(rng.random() < PREVALENCE) for f in ABNORMAL}
    labels["no_finding"] = int(not any(labels.values()))
    return labels


@pytest.fixture(scope="module")
def corpus() -> list[tuple[dict[str, int], str, dict[str, float]]]:
    """(labels, report, labeller output) for N_REPORTS random studies."""
    rng = np.random.default_rng(1234)
    out = []
    for _ in range(N_REPORTS):
        labels = _random_labels(rng)
        view = VIEWS[int(rng.integers(len(VIEWS)))]
        cohort = COHORTS[int(rng.integers(len(COHORTS)))]
        text = write_report(labels, view=view, cohort=cohort, rng=rng)
        out.append((labels, text, label_report(text)))
    return out


def test_format(corpus) -> None:
    for _, text, _ in corpus:
        assert text.startswith("FINDINGS: ")
        head, imp = text.split("\nIMPRESSION: ")
        assert len(head) > len("FINDINGS: ") + 5 and len(imp) > 5


def test_labeller_agrees_with_labels(corpus) -> None:
    """Positive/uncertain only for true positives; negated only for true absences."""
    for labels, text, got in corpus:
        for f in ABNORMAL:
            if got[f] in (1.0, -1.0):
                assert labels[f] == 1, (f, got[f], text)
            elif got[f] == 0.0:
                assert labels[f] == 0, (f, text)


def test_mention_rates_match(corpus) -> None:
    for f in ABNORMAL:
        pos = [got[f] for labels, _, got in corpus if labels[f] == 1]
        n = len(pos)
        assert n > 400, f
        rate = sum(v in (1.0, -1.0) for v in pos) / n
        p = MENTION_RATE[f]
        tol = 4 * math.sqrt(p * (1 - p) / n) + 0.01
        assert abs(rate - p) <= tol, (f, rate, p, tol)


def test_under_reported_findings(corpus) -> None:
    for f in ("pulmonary_fibrosis", "aortic_enlargement", "tuberculosis"):
        pos = [got[f] for labels, _, got in corpus if labels[f] == 1]
        rate = sum(v in (1.0, -1.0) for v in pos) / len(pos)
        assert rate < 0.05, (f, rate)
        assert MENTION_RATE[f] <= 0.04
    for f in ("lung_opacity", "cardiomegaly", "pneumothorax", "pleural_effusion"):
        assert MENTION_RATE[f] >= 0.8


def test_hedges_are_a_minority(corpus) -> None:
    values = [got[f] for labels, _, got in corpus for f in ABNORMAL if labels[f] == 1]
    mentioned = [v for v in values if v in (1.0, -1.0)]
    hedged = sum(v == -1.0 for v in mentioned) / len(mentioned)
    assert 0.07 <= hedged <= 0.17, hedged
    assert max(HEDGE_RATE.values()) < 0.5


def test_absent_findings_are_negated_sometimes(corpus) -> None:
    for f in ("pneumothorax", "pleural_effusion", "lung_opacity", "cardiomegaly"):
        neg = [got[f] == 0.0 for labels, _, got in corpus if labels[f] == 0]
        assert 0.2 < sum(neg) / len(neg) < 0.95, f


def test_healthy_reports(corpus) -> None:
    healthy = [(text, got) for labels, text, got in corpus if labels["no_finding"] == 1]
    assert len(healthy) > 300
    for text, got in healthy:
        assert NO_ACUTE.search(text), text
        assert got["no_finding"] == 1.0
        assert not any(got[f] in (1.0, -1.0) for f in ABNORMAL), text


def test_no_acute_only_without_written_positives(corpus) -> None:
    for _, text, got in corpus:
        written = any(got[f] in (1.0, -1.0) for f in ABNORMAL)
        if NO_ACUTE.search(text):
            assert not written, text
        assert got["no_finding"] == (0.0 if written else 1.0)


def test_no_demographics(corpus) -> None:
    for _, text, _ in corpus:
        assert not BANNED.search(text), BANNED.search(text).group(0)


def test_icu_style(corpus) -> None:
    rng = np.random.default_rng(7)
    labels = dict.fromkeys(FINDINGS, 0)
    labels["support_devices"] = 1
    texts = [write_report(labels, view="AP", cohort="icu", rng=rng) for _ in range(100)]
    assert sum("portable ap" in t.lower() for t in texts) > 30
    assert sum(bool(re.search(r"tube|line|catheter|pacemaker", t, re.I)) for t in texts) > 90


@pytest.mark.parametrize("positives", [(), ("pneumothorax", "chest_tube"), ("cardiomegaly",)])
def test_variety(positives: tuple[str, ...]) -> None:
    labels = {f: int(f in positives) for f in FINDINGS}
    labels["no_finding"] = int(not positives)
    texts = {
        write_report(labels, view="PA", cohort="inpatient", rng=np.random.default_rng(s))
        for s in range(50)
    }
    assert len(texts) > 20


def test_deterministic() -> None:
    labels = {f: int(f in ("pleural_effusion", "nodule")) for f in FINDINGS}
    for seed in range(5):
        a = write_report(labels, view="AP", cohort="icu", rng=np.random.default_rng(seed))
        b = write_report(labels, view="AP", cohort="icu", rng=np.random.default_rng(seed))
        assert a == b


def test_missing_labels_and_unknown_cohort() -> None:
    text = write_report(
        {"pneumothorax": 1}, view="LATERAL", cohort="other", rng=np.random.default_rng(0)
    )
    assert text.startswith("FINDINGS: ")
    got = label_report(text)
    assert all(got[f] != 1.0 for f in ABNORMAL if f != "pneumothorax")
