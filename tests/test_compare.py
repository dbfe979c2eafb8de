"""Encoder comparison helpers: paired verdicts, tables, subsets, claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raddino_lib.eval.compare import (
    Claim,
    Comparison,
    accuracy_verdict,
    claims_table,
    compare_encoders,
    paired_verdict,
)


def test_paired_verdict_rules():
    assert paired_verdict([0.5] * 5, [0.4] * 5)["verdict"] == "held"
    assert paired_verdict([0.4] * 5, [0.5] * 5)["verdict"] == "did not hold"
    # ahead on average but only on 3 of 5 seeds: the spread swamps it
    v = paired_verdict([0.6, 0.6, 0.6, 0.3, 0.3], [0.5] * 5)
    assert v["verdict"] == "inconclusive" and v["wins"] == 3 and v["n"] == 5
    assert v["diff_mean"] == pytest.approx(-0.0 + (0.1 * 3 - 0.2 * 2) / 5)
    assert paired_verdict([np.nan], [0.1])["verdict"] == "inconclusive"


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    subjects = np.arange(n)
    split = np.where(subjects % 10 < 6, "train", np.where(subjects % 10 < 8, "val", "test"))
    y = (rng.random((n, 2)) < 0.3).astype(float)
    good = rng.normal(size=(n, 4)) + np.c_[2.5 * y, np.zeros((n, 2))]
    bad = rng.normal(size=(n, 4))
    rec = pd.DataFrame({"a": y[:, 0], "b": y[:, 1], "split": split, "subject_id": subjects})
    return rec, {"good": {"k": good}, "bad": {"k": bad}}


def test_compare_encoders_summary_subset_and_claims():
    rec, feats = _data()
    comp = compare_encoders(feats, rec, ("a", "b"), seeds=(0, 1, 2, 3, 4))
    s = comp.summary()
    assert list(s.columns) == ["a", "b", "macro"]
    assert s.loc["good", "macro"] == pytest.approx(s.loc["good", ["a", "b"]].mean())
    assert s.loc["good", "a"] > 0.8 and s.loc["bad", "a"] < 0.5
    np.testing.assert_allclose(
        comp.seed_macro("good"),
        np.mean([comp.seed_values("good", "a"), comp.seed_values("good", "b")], axis=0),
    )
    sub = comp.subset(["b"])
    assert sub.findings == ["b"] and sub.summary().loc["good", "b"] == s.loc["good", "b"]
    with pytest.raises(KeyError, match="not probed"):
        comp.subset(["c"])
    table = claims_table(comp, [Claim("good > bad", "good", "bad", ("a", "b"))])
    assert table.loc["good > bad", "verdict"] == "held"
    assert table.loc["good > bad", "A ahead on seeds"] == "5/5"
    js = comp.to_json()
    assert js["encoders"]["good"]["findings"]["a"]["auprc_seeds"] == list(
        comp.seed_values("good", "a")
    )
    assert isinstance(comp, Comparison)


def test_accuracy_verdict_hand_cases():
    subj = np.repeat(np.arange(10), 3)  # 10 subjects, 3 images each
    right, wrong = np.ones(30, int), np.zeros(30, int)
    v = accuracy_verdict(right, wrong, subj)
    assert v["verdict"] == "held" and v["diff"] == v["lo"] == v["hi"] == 1.0
    assert v["n"] == 30 and v["subjects"] == 10
    assert accuracy_verdict(wrong, right, subj)["verdict"] == "did not hold"
    same = accuracy_verdict(right, right, subj)
    assert same["verdict"] == "inconclusive" and same["lo"] == same["hi"] == 0.0
    # A right on one more image than B out of 30: +1/30, never significant
    b = right.copy()
    b[0] = 0
    v = accuracy_verdict(right, b, subj, samples=500)
    assert v["diff"] == pytest.approx(1 / 30) and v["lo"] == 0.0 and v["verdict"] == "inconclusive"
    # unscored images (-1) on either side drop out of both
    a2, b2 = right.copy(), wrong.copy()
    a2[:3], b2[3:6] = -1, -1
    v = accuracy_verdict(a2, b2, subj)
    assert v["n"] == 24 and v["subjects"] == 8 and v["diff"] == 1.0
    nothing = accuracy_verdict(-right, -right, subj)
    assert nothing["verdict"] == "inconclusive" and nothing["n"] == 0
    with pytest.raises(ValueError, match="one length"):
        accuracy_verdict(right, right[:-1], subj)


def test_accuracy_verdict_resamples_subjects_not_images():
    # one subject with 20 images all in A's favour, 19 subjects with 1 image and no difference:
    # +20/39 on the images, but it all rides on one subject, so the interval reaches 0
    subj = np.concatenate([np.zeros(20, int), np.arange(1, 20)])
    a = np.ones(39, int)
    b = np.concatenate([np.zeros(20, int), np.ones(19, int)])
    v = accuracy_verdict(a, b, subj, samples=2000, seed=0)
    assert v["diff"] == pytest.approx(20 / 39)
    assert v["lo"] == 0.0 and v["verdict"] == "inconclusive"
    # as 39 independent subjects, the same images would hold
    assert accuracy_verdict(a, b, np.arange(39), samples=2000, seed=0)["verdict"] == "held"
