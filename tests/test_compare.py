"""Encoder comparison helpers: paired verdicts, tables, subsets, claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raddino_lib.eval.compare import (
    Claim,
    Comparison,
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
