from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from raddino_lib.eval.logistic import fit_multilabel_logistic
from raddino_lib.eval.metrics import auprc, quantile_bins
from raddino_lib.eval.probe import finding_probe, metadata_probe, paper_bins


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
    res = metadata_probe(x, meta, np.arange(n), variables=("sex", "age", "weight"), bins="quantile")
    assert res.loc["sex", "acc_mean"] > 0.9
    assert res.loc["age", "acc_mean"] > 0.6  # 5 bins, chance 0.2
    assert res.loc["weight", "acc_mean"] < 0.35  # unrelated to the features
    assert res.loc["age", "chance"] == pytest.approx(0.2)


def test_paper_bins_edges():
    # Appendix C.3: age < 20, 20-40, 40-60, 60-80, > 80 (an edge value goes to the upper bin)
    age = paper_bins("age", np.array([0, 19.9, 20, 39.9, 40, 79.9, 80, 101]))
    assert age.tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    weight = paper_bins("weight", np.array([49, 50, 64.9, 65, 94.9, 95]))
    assert weight.tolist() == [0, 1, 1, 2, 3, 4]
    bmi = paper_bins("bmi", np.array([18.49, 18.5, 24.9, 25, 30, 35.1]))
    assert bmi.tolist() == [0, 1, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="NaN"):
        paper_bins("age", np.array([np.nan]))
    with pytest.raises(ValueError, match="no paper bins"):
        paper_bins("height", np.array([170.0]))


def test_metadata_probe_paper_bins_and_five_folds():
    rng = np.random.default_rng(1)
    n = 400
    age = rng.uniform(25, 95, n)
    x = np.stack([age + rng.normal(0, 2, n), rng.normal(size=n)], 1)
    meta = pd.DataFrame({"age": age})
    res = metadata_probe(x, meta, np.arange(n), variables=("age",))
    counts = res.loc["age", "counts"]
    assert counts[0] == 0 and sum(counts) == n  # nobody under 20
    assert counts == np.bincount(paper_bins("age", age), minlength=5).tolist()
    assert [f"fold_{k}" for k in range(5)] == [c for c in res.columns if c.startswith("fold_")]
    assert res.loc["age", "acc_mean"] > 0.85


def test_metadata_probe_correct_is_per_image_and_matches_the_folds():
    rng = np.random.default_rng(2)
    n = 300
    age = rng.uniform(20, 90, n)
    age[::7] = np.nan  # unknown: not scored
    x = np.stack([np.nan_to_num(age) + rng.normal(0, 8, n), rng.normal(size=n)], 1)
    res = metadata_probe(x, pd.DataFrame({"age": age}), np.arange(n), variables=("age",),
                         bins="quantile")  # fmt: skip
    correct = np.asarray(res.loc["age", "correct"])
    assert correct.shape == (n,)
    assert (correct[::7] == -1).all() and set(np.unique(correct[np.isfinite(age)])) <= {0, 1}
    scored = correct[correct >= 0]
    assert len(scored) == res.loc["age", "n"]
    # folds of near-equal size: the pooled accuracy is about the mean of the fold accuracies
    folds = [res.loc["age", f"fold_{k}"] for k in range(5)]
    assert scored.mean() == pytest.approx(np.mean(folds), abs=0.01)
    # a second encoder on the same rows is scored on the same folds: same images scored
    other = metadata_probe(rng.normal(size=(n, 3)), pd.DataFrame({"age": age}), np.arange(n),
                           variables=("age",), bins="quantile")  # fmt: skip
    assert ((np.asarray(other.loc["age", "correct"]) >= 0) == (correct >= 0)).all()


def test_metadata_probe_folds_are_grouped_by_subject():
    # Features identify the subject and nothing else; each subject has 4 images with the same
    # sex. Folds that split a subject would let the probe memorise it (accuracy ~1); grouped
    # folds leave it at chance.
    rng = np.random.default_rng(0)
    subj = np.repeat(np.arange(100), 4)
    sex = rng.choice(["M", "F"], 100)[subj]
    x = rng.normal(size=(100, 64))[subj] * 3 + rng.normal(size=(400, 64)) * 0.1
    res = metadata_probe(x, pd.DataFrame({"sex": sex}), subj, variables=("sex",))
    assert res.loc["sex", "acc_mean"] < 0.65


def test_metadata_probe_rejects_unknown_sex_codes():
    meta = pd.DataFrame({"sex": ["M", "F", "X"] * 20})
    with pytest.raises(ValueError, match="sex must be M/F"):
        metadata_probe(np.zeros((60, 2)), meta, np.arange(60), variables=("sex",))


def test_finding_probe_chooses_feature_set_on_validation_and_reports_auroc():
    x, labels, split, subjects = _toy()
    noise = np.random.default_rng(5).normal(size=x.shape)
    res = finding_probe({"noise": noise, "good": x}, labels[["signal"]], split, subjects,
                        seeds=(0, 1))  # fmt: skip
    assert res.attrs["kind"] == "good"
    assert res.attrs["val_by_kind"]["good"] > res.attrs["val_by_kind"]["noise"]
    assert res.loc["signal", "auroc_mean"] > 0.95
    assert {"auroc_seed_0", "auroc_seed_1", "val_auprc"} <= set(res.columns)


def test_finding_probe_uncertain_labels_are_masked():
    x, labels, split, subjects = _toy()
    y = labels["signal"].to_numpy().copy()
    flip = np.arange(len(y)) % 4 == 0
    y_bad = y.copy()
    y_bad[flip] = 1 - y_bad[flip]  # wrong labels...
    y_unc = y_bad.copy()
    y_unc[flip] = -1  # ...marked uncertain: must not hurt
    a = finding_probe(x, pd.DataFrame({"s": y_unc}), split, subjects, seeds=(0,))
    b = finding_probe(x, pd.DataFrame({"s": y_bad}), split, subjects, seeds=(0,))
    assert a.loc["s", "auprc_mean"] > b.loc["s", "auprc_mean"] + 0.1


def test_multilabel_logistic_matches_sklearn_per_column():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d = 400, 20
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, 3)) * 0.5 + rng.normal(size=(n, 3)) > 0.3).astype(float)
    mask = rng.random((n, 3)) > 0.25
    cs = [0.01, 0.1, 1.0]
    fit = fit_multilabel_logistic(x, y, cs, mask=mask, tol=1e-9, max_iter=2000)
    z = fit.decision_function(x)
    for j, c in enumerate(cs):
        m = mask[:, j]
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x[m], y[m, j])
        np.testing.assert_allclose(z[:, j], ref.decision_function(x), atol=1e-3)


def test_joint_fit_of_masked_columns_is_separate_fits_and_float32_agrees():
    """The probe fits every seed (a row mask per column) and every C as columns of one fit:
    each column must be the fit it would be alone; float32 must agree with float64."""
    import torch

    rng = np.random.default_rng(1)
    n, d = 300, 15
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, 2)) + rng.normal(size=(n, 2)) > 0).astype(float)
    masks = [rng.random((n, 2)) > 0.2 for _ in range(3)]
    kw = dict(tol=1e-9, max_iter=3000)
    joint = fit_multilabel_logistic(x, np.tile(y, (1, 3)), [0.1, 1.0] * 3,
                                    mask=np.concatenate(masks, axis=1), **kw)  # fmt: skip
    for i, m in enumerate(masks):
        alone = fit_multilabel_logistic(x, y, [0.1, 1.0], mask=m, **kw)
        np.testing.assert_allclose(
            joint.columns(2 * i, 2 * i + 2).decision_function(x),
            alone.decision_function(x),
            atol=1e-4,
        )
    f32 = fit_multilabel_logistic(x, y, 0.1, mask=masks[0], dtype=torch.float32)
    f64 = fit_multilabel_logistic(x, y, 0.1, mask=masks[0])
    np.testing.assert_allclose(f32.decision_function(x), f64.decision_function(x), atol=1e-2)
    assert f32.coef.dtype == np.float64  # the model is float64 whatever the solver's precision
    with pytest.raises(ValueError, match="dtype must be"):
        fit_multilabel_logistic(x, y, 0.1, dtype=torch.float16)
    assert joint.tile(2).coef.shape == (12, d)


def test_multinomial_logistic_matches_sklearn_per_c():
    """Every C of the grid is one softmax regression of the joint fit; its probabilities are
    scikit-learn's (lbfgs, multinomial) for that C."""
    from sklearn.linear_model import LogisticRegression

    from raddino_lib.eval.logistic import fit_multinomial_logistic

    rng = np.random.default_rng(2)
    n, d, k = 500, 12, 4
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, k)) + rng.gumbel(size=(n, k))).argmax(1)
    cs = [0.01, 0.1, 1.0]
    fit = fit_multinomial_logistic(x, y, cs, tol=1e-9, max_iter=3000)
    assert fit.coef.shape == (3, k, d) and fit.intercept.shape == (3, k)
    p = fit.predict_proba(x)
    for g, c in enumerate(cs):
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
        np.testing.assert_allclose(p[g], ref.predict_proba(x), atol=1e-3)
        assert (fit.predict(x)[g] == ref.predict(x)).mean() > 0.99
    with pytest.raises(ValueError, match="class codes"):
        fit_multinomial_logistic(x, y - 1, 1.0)
    with pytest.raises(ValueError, match="n_classes is 2"):
        fit_multinomial_logistic(x, y, 1.0, n_classes=2)
    with pytest.raises(ValueError, match="C must be positive"):
        fit_multinomial_logistic(x, y, [1.0, 0.0])


def test_wide_features_solve_in_the_row_space_to_sklearns_optimum():
    """With more features than rows both fits solve in the row space of x (QR): the same
    optimum as the full solve and as scikit-learn's, for the binary and the softmax objective,
    with a warm start from a full-dimensional model and with masked labels."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from raddino_lib.eval.logistic import _row_space, fit_multinomial_logistic

    rng = np.random.default_rng(3)
    n, d = 60, 400
    x = rng.normal(size=(n, d))
    z, q = _row_space(torch.as_tensor(x))
    assert q is not None and tuple(q.shape) == (d, n) and tuple(z.shape) == (n, n)
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=1e-10)  # orthonormal basis
    np.testing.assert_allclose(z @ q.T, x, atol=1e-10)  # spans the rows of x
    assert _row_space(torch.as_tensor(x.T))[1] is None  # D <= N: left as it is
    y = (x[:, :3].sum(1) + rng.normal(size=n) > 0).astype(float)[:, None]
    mask = rng.random((n, 1)) > 0.1
    kw = dict(mask=mask, tol=1e-10, max_iter=5000)
    for c in (0.01, 1.0):
        red = fit_multilabel_logistic(x, y, c, **kw)
        full = fit_multilabel_logistic(x, y, c, row_space=False, **kw)
        m = mask[:, 0]
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x[m], y[m, 0])
        np.testing.assert_allclose(red.decision_function(x), full.decision_function(x), atol=2e-3)
        np.testing.assert_allclose(red.decision_function(x)[:, 0], ref.decision_function(x),
                                   atol=2e-3)  # fmt: skip
        # the weights lie in the row space: nothing of them is orthogonal to x's rows
        w = red.coef[0]
        np.testing.assert_allclose(w - q.numpy() @ (q.numpy().T @ w), 0, atol=1e-10)
    warm = fit_multilabel_logistic(x, y, 1.0, init=full.tile(1), **kw)
    np.testing.assert_allclose(warm.decision_function(x), red.decision_function(x), atol=2e-3)
    yk = rng.integers(0, 3, n)
    red = fit_multinomial_logistic(x, yk, [0.1, 1.0], tol=1e-10, max_iter=5000)
    for g, c in enumerate((0.1, 1.0)):
        ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, yk)
        np.testing.assert_allclose(red.predict_proba(x)[g], ref.predict_proba(x), atol=2e-3)


def test_row_space_once_then_lift_is_the_same_fit():
    """A RowSpace computed once, fitted with row_space=False and lifted back, is the same
    model as a fit that reduces internally (float64: to 1e-8 in the decision function), warm
    start included; narrow features pass through untouched."""
    from raddino_lib.eval.logistic import RowSpace

    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 300))
    y = (x[:, :2].sum(1) + rng.normal(size=50) > 0).astype(float)[:, None].repeat(2, 1)
    space = RowSpace(x)
    assert space.features.shape == (50, 50) and space.basis.shape == (300, 50)
    kw = dict(tol=1e-9, max_iter=3000)
    inner = fit_multilabel_logistic(x, y, [0.1, 1.0], **kw)
    once = space.lift(fit_multilabel_logistic(space.features, y, [0.1, 1.0], row_space=False,
                                              **kw))  # fmt: skip
    assert once.coef.shape == (2, 300)
    np.testing.assert_allclose(once.decision_function(x), inner.decision_function(x), atol=1e-8)
    start = fit_multilabel_logistic(space.features, y, [0.1, 1.0], row_space=False, max_iter=5)
    warm = space.lift(fit_multilabel_logistic(space.features, y, [0.1, 1.0], row_space=False,
                                              init=start, **kw))  # fmt: skip
    np.testing.assert_allclose(warm.decision_function(x), inner.decision_function(x), atol=1e-3)
    narrow = RowSpace(x[:, :10])
    assert narrow.basis is None and narrow.features.shape == (50, 10)
    m = fit_multilabel_logistic(narrow.features, y, 1.0, row_space=False, **kw)
    assert narrow.lift(m) is m


def test_grid_predict_matches_sklearn_and_handles_missing_classes():
    from sklearn.linear_model import LogisticRegression

    from raddino_lib.eval.probe import grid_predict

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 10))
    x_ev = rng.normal(size=(100, 10))
    # five bins of which the training rows hold only codes 1, 3 and 4 (as in a fold)
    y = np.array([1, 3, 4])[(x @ rng.normal(size=(10, 3)) + rng.gumbel(size=(400, 3))).argmax(1)]
    yb = (x[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(np.int64) * 5  # binary, codes 0 / 5
    for target in (y, yb):
        pred = grid_predict(x, target, x_ev, [0.01, 1.0])
        assert pred.shape == (2, 100) and set(np.unique(pred)) <= set(np.unique(target))
        for g, c in enumerate((0.01, 1.0)):
            ref = LogisticRegression(C=c, max_iter=5000).fit(x, target).predict(x_ev)
            assert (pred[g] == ref).mean() >= 0.97
    assert (grid_predict(x, np.full(400, 2), x_ev, [1.0]) == 2).all()


def test_cached_finding_probe_returns_the_computed_table(tmp_path, monkeypatch):
    """Same inputs -> the cached table, identical to the computed one (attrs included); any
    change of features, labels or seeds -> a new computation."""
    from raddino_lib.eval import probe as probe_mod

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    n = 240
    x = {"a": rng.normal(size=(n, 6)), "b": rng.normal(size=(n, 3))}
    y = (x["a"][:, :2] + rng.normal(size=(n, 2)) > 0.5).astype(float)
    y[::7, 1] = np.nan
    labels = pd.DataFrame(y, columns=["f1", "f2"])
    split = np.array(["train"] * 160 + ["val"] * 40 + ["test"] * 40)
    subjects = np.arange(n) // 2
    calls = []
    real = probe_mod.finding_probe

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(probe_mod, "finding_probe", counting)
    first = probe_mod.cached_finding_probe(x, labels, split, subjects, seeds=[0, 1])
    again = probe_mod.cached_finding_probe(x, labels, split, subjects, seeds=[0, 1])
    assert len(calls) == 1 and len(list((tmp_path / "probes").glob("*.json"))) == 1
    pd.testing.assert_frame_equal(first, again)
    assert again.attrs == first.attrs and again.attrs["kind"] in ("a", "b")
    probe_mod.cached_finding_probe(x, labels, split, subjects, seeds=[0, 2])
    labels2 = labels.copy()
    labels2.iloc[0, 0] = 1 - labels2.iloc[0, 0]
    probe_mod.cached_finding_probe(x, labels2, split, subjects, seeds=[0, 1])
    x2 = {**x, "b": x["b"] + 1e-9}
    probe_mod.cached_finding_probe(x2, labels, split, subjects, seeds=[0, 1])
    assert len(calls) == 4
    with pytest.raises(TypeError, match="unknown options \\['seed'\\]"):
        probe_mod.cached_finding_probe(x, labels, split, subjects, seed=[0])


def test_metadata_probe_chooses_the_feature_kind_on_the_inner_split():
    rng = np.random.default_rng(3)
    n = 300
    sex = rng.choice(["M", "F"], n)
    good = ((sex == "M") * 3.0 + rng.normal(0, 1, n))[:, None]
    noise = rng.normal(size=(n, 5))
    meta = pd.DataFrame({"sex": sex})
    res = metadata_probe({"noise": noise, "good": good}, meta, np.arange(n), variables=("sex",))
    assert res.loc["sex", "kinds"] == ["good"] * 5
    assert res.loc["sex", "acc_mean"] > 0.9
    alone = metadata_probe(good, meta, np.arange(n), variables=("sex",))
    # the same folds: one kind given directly gives the same fold accuracies
    assert [res.loc["sex", f"fold_{k}"] for k in range(5)] == [
        alone.loc["sex", f"fold_{k}"] for k in range(5)
    ]


def test_cached_metadata_probe_returns_the_computed_table(tmp_path, monkeypatch):
    """Same inputs -> the stored table, equal to the computed one (list cells included); other
    features, metadata or options -> computed again."""
    from raddino_lib.eval import probe as probe_mod

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path))
    rng = np.random.default_rng(5)
    n = 200
    meta = pd.DataFrame({"sex": rng.choice(["M", "F"], n), "age": rng.uniform(20, 90, n)})
    x = {"a": np.c_[(meta["sex"] == "M") * 2.0 + rng.normal(size=n), rng.normal(size=(n, 3))],
         "b": rng.normal(size=(n, 2))}  # fmt: skip
    subjects = np.arange(n) // 2
    calls = []
    real = probe_mod.metadata_probe

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(probe_mod, "metadata_probe", counting)
    kw = dict(variables=("sex", "age"), folds=3)
    first = probe_mod.cached_metadata_probe(x, meta, subjects, **kw)
    again = probe_mod.cached_metadata_probe(x, meta, subjects, **kw)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again)
    assert isinstance(again.loc["sex", "kinds"], list) and len(again.loc["sex", "kinds"]) == 3
    assert first.loc["sex", "acc_mean"] > 0.7
    probe_mod.cached_metadata_probe(x, meta, subjects, seed=1, **kw)
    meta2 = meta.copy()
    meta2.loc[0, "age"] = 95.0
    probe_mod.cached_metadata_probe(x, meta2, subjects, **kw)
    probe_mod.cached_metadata_probe({"a": x["a"]}, meta, subjects, **kw)
    assert len(calls) == 4
    with pytest.raises(TypeError, match="unknown options \\['seeds'\\]"):
        probe_mod.cached_metadata_probe(x, meta, subjects, seeds=[0])
