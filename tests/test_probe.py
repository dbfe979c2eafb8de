from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from raddino_lib.eval.metrics import auprc, quantile_bins
from raddino_lib.eval.probe import finding_probe, metadata_probe


def test_auprc_hand_computed():
    # sorted by score: 0.8 (neg), 0.4 (pos), 0.35 (pos), 0.1 (neg)
    # AP = 0.5 * P(1/2) + 0.5 * P(2/3) = 7/12
    y = np.array([0, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert auprc(y, s) == pytest.approx(7 / 12)


def test_auprc_masks_missing_and_uncertain():
    y = np.array([0, 1, 1, 0, np.nan, -1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 100.0, 100.0])
    assert auprc(y, s) == pytest.approx(7 / 12)


def test_auprc_perfect_and_degenerate():
    assert auprc(np.array([0, 0, 1]), np.array([0.0, 0.1, 0.9])) == 1.0
    assert math.isnan(auprc(np.array([0, 0]), np.array([0.1, 0.2])))
    with pytest.raises(ValueError, match="0/1"):
        auprc(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))


def test_quantile_bins_equal_counts():
    codes, edges = quantile_bins(np.arange(100.0), 5)
    assert np.bincount(codes).tolist() == [20] * 5
    assert edges[0] == 0 and edges[-1] == 99


def _toy(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    x = rng.normal(size=(n, 5))
    x[:, 0] += 2.5 * y  # informative
    labels = pd.DataFrame({"signal": y, "noise": (rng.random(n) < 0.3).astype(float)})
    subjects = np.arange(n) // 2
    split = np.where(subjects % 10 < 7, "train", np.where(subjects % 10 < 8, "val", "test"))
    return x, labels, split, subjects


def test_finding_probe_separates_signal_from_noise():
    x, labels, split, subjects = _toy()
    res = finding_probe(x, labels, split, subjects, seeds=(0, 1, 2))
    assert res.loc["signal", "auprc_mean"] > 0.85
    # a label unrelated to the features scores near its prevalence
    assert abs(res.loc["noise", "auprc_mean"] - res.loc["noise", "prevalence"]) < 0.15
    assert {"seed_0", "seed_1", "seed_2", "auprc_std", "C"} <= set(res.columns)


def test_finding_probe_missing_labels_are_ignored():
    x, labels, split, subjects = _toy()
    y = labels["signal"].to_numpy().copy()
    y[::3] = np.nan
    labels["signal"] = y
    res = finding_probe(x, labels, split, subjects, seeds=(0,))
    assert res.loc["signal", "auprc_mean"] > 0.85


def test_metadata_probe_accuracy_and_chance():
    rng = np.random.default_rng(0)
    n = 500
    age = rng.uniform(20, 90, n)
    sex = rng.choice(["M", "F"], n)
    x = np.stack([age + rng.normal(0, 3, n), (sex == "M") * 3.0 + rng.normal(0, 1, n)], 1)
    meta = pd.DataFrame({"sex": sex, "age": age, "weight": rng.normal(70, 10, n)})
    res = metadata_probe(x, meta, np.arange(n), variables=("sex", "age", "weight"))
    assert res.loc["sex", "acc_mean"] > 0.9
    assert res.loc["age", "acc_mean"] > 0.6  # 5 bins, chance 0.2
    assert res.loc["weight", "acc_mean"] < 0.35  # unrelated to the features
    assert res.loc["age", "chance"] == pytest.approx(0.2)
