"""Report metrics on pairs with hand-computed values, Macro-F1-14 from the labeller, and the
bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raddino_lib.eval.bootstrap import (
    bootstrap,
    bootstrap_difference,
    bootstrap_grouped_mean,
    bootstrap_indices,
)
from raddino_lib.report import metrics as rm
from raddino_lib.report.metrics import (
    bleu4_from_stats,
    bleu_stats,
    chexbert_positive,
    corpus_bleu4,
    macro_f1,
    per_class_f1,
    rouge_l,
    score_reports,
)
from raddino_lib.text.labeller import CHEXBERT_14

REF = "the cat sat on the mat"


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat on the mat", REF) = 5 words: P = 5/5, R = 5/6, F = 2PR/(P+R) = 10/11
    got = rouge_l(["the cat on the mat", REF, "dog", "The Cat, on the mat!"], [REF] * 4)
    np.testing.assert_allclose(got, [10 / 11, 1.0, 0.0, 10 / 11])
    with pytest.raises(ValueError, match="2 generated reports but 1"):
        rouge_l(["a", "b"], ["a"])


def test_bleu4_hand_computed() -> None:
    # vs "the cat sat on a mat": clipped precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty
    assert corpus_bleu4([REF], ["the cat sat on a mat"]) == pytest.approx(
        100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-9
    )
    # all n-grams match but 4 words for 6: brevity penalty exp(1 - 6/4)
    assert corpus_bleu4(["the cat sat on"], [REF]) == pytest.approx(100 * math.exp(-0.5))
    # lower-cased, 13a tokenisation splits the final period
    same = corpus_bleu4(["The Cat sat on the mat."], ["the cat sat on the mat ."])
    assert same == pytest.approx(100.0)


def test_bleu_stats_sum_to_the_corpus_score() -> None:
    hyps = [REF, "the cat sat on", "no acute cardiopulmonary process"]
    refs = ["the cat sat on a mat", REF, "no acute process"]
    stats = bleu_stats(hyps, refs)
    assert stats.shape == (3, 10)
    assert stats[0].tolist() == [6, 6, 5, 3, 2, 1, 6, 5, 4, 3]  # lengths, matches, totals
    assert bleu4_from_stats(stats) == pytest.approx(corpus_bleu4(hyps, refs))
    # corpus BLEU is not the mean of sentence BLEUs
    assert bleu4_from_stats(stats[[0, 1]]) == pytest.approx(corpus_bleu4(hyps[:2], refs[:2]))


def test_macro_f1_hand_computed() -> None:
    true = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 1, fn 1 -> 2/3; class 2: fp 1 -> 0
    np.testing.assert_allclose(per_class_f1(pred, true), [0.5, 2 / 3, 0.0])
    assert macro_f1(pred, true) == pytest.approx((0.5 + 2 / 3) / 2)  # classes with a positive
    assert macro_f1(pred, true, classes=[0, 1, 2]) == pytest.approx((0.5 + 2 / 3) / 3)
    assert math.isnan(per_class_f1(np.zeros((2, 1), bool), np.zeros((2, 1), bool))[0])


def test_chexbert_positives_count_uncertain_as_negative() -> None:
    pos = chexbert_positive([
        "Small left pneumothorax. Possible right effusion.",
        "No acute cardiopulmonary process.",
        "No pneumothorax or effusion. Mild pulmonary edema.",
    ])  # fmt: skip
    c = {name: i for i, name in enumerate(CHEXBERT_14)}
    assert pos.shape == (3, 14)
    assert pos[0, c["Pneumothorax"]] and not pos[0, c["Pleural Effusion"]]
    assert pos[1].tolist() == [name == "No Finding" for name in CHEXBERT_14]
    assert pos[2, c["Edema"]] and not pos[2, c["Pneumothorax"]] and not pos[2, c["No Finding"]]


# -------------------------------------------------------------------------- bootstrap
def test_bootstrap_interval_contains_the_point_and_is_deterministic() -> None:
    x = np.random.default_rng(0).normal(5.0, 2.0, size=300)

    def stat(i):
        return float(x[i].mean())

    a = bootstrap(stat, len(x), samples=500, seed=1)
    assert a.point == pytest.approx(x.mean())
    assert a.lo < a.point < a.hi and a.lo < a.median < a.hi
    # the 95% interval of a mean is about +-1.96 standard errors wide
    assert a.hi - a.lo == pytest.approx(2 * 1.96 * x.std() / math.sqrt(len(x)), rel=0.2)
    assert a.samples == 500
    assert bootstrap(stat, len(x), samples=500, seed=1) == a
    assert bootstrap(stat, len(x), samples=500, seed=2) != a
    assert np.array_equal(bootstrap_indices(7, 3, seed=4), bootstrap_indices(7, 3, seed=4))
    d = bootstrap_difference(stat, stat, len(x), samples=50, seed=1)
    assert (d.point, d.lo, d.hi) == (0.0, 0.0, 0.0)  # paired: the same resamples


def test_score_reports_intervals_per_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    refs = ["Small left pneumothorax.", "Moderate cardiomegaly.", "The lungs are clear.",
            "Small right pleural effusion."] * 5  # fmt: skip
    hyps = ["Small left pneumothorax.", "The lungs are clear.", "The lungs are clear.",
            "Small right pleural effusion. Cardiomegaly."] * 5  # fmt: skip
    monkeypatch.setattr(rm, "radgraph_status", lambda: (False, "not installed"))
    sc = score_reports(hyps, refs)
    assert sc.rg_er is None and sc.rg_er_status == "not installed"
    assert [CHEXBERT_14[i] for i in sc.classes] == [
        "Cardiomegaly", "Pneumothorax", "Pleural Effusion", "No Finding",
    ]  # fmt: skip
    iv = sc.intervals(samples=100, seed=0)
    assert set(iv) == {"rouge_l", "bleu4", "rg_er", "macro_f1_14"} and iv["rg_er"] is None
    # per class: cardiomegaly 0 (1 fp, 1 fn per block), pneumothorax 1, effusion 1,
    # no finding 2/3 (tp 1, fp 1 per block)
    assert iv["macro_f1_14"].point == pytest.approx(100 * (0 + 1 + 1 + 2 / 3) / 4)
    assert iv["rouge_l"].point == pytest.approx(100 * rouge_l(hyps, refs).mean())
    for v in (iv["rouge_l"], iv["bleu4"], iv["macro_f1_14"]):
        assert v.lo <= v.point <= v.hi
    # RG_ER when radgraph is there: per-report rewards, averaged and bootstrapped
    monkeypatch.setattr(rm, "radgraph_status", lambda: (True, "fake"))
    monkeypatch.setattr(rm, "rg_er_scores", lambda h, r: np.linspace(0, 1, len(h)))
    rg = score_reports(hyps, refs).intervals(samples=50, seed=0)["rg_er"]
    assert rg is not None and rg.point == pytest.approx(50.0)


def test_radgraph_is_unavailable_without_the_package() -> None:
    import importlib.util

    ok, why = rm.radgraph_status()
    if importlib.util.find_spec("radgraph") is None:
        assert not ok and "not installed" in why


# ------------------------------------------------------------------ several training runs
def test_one_run_bootstraps_equal_the_plain_ones() -> None:
    from raddino_lib.eval.bootstrap import (
        bootstrap,
        bootstrap_difference,
        bootstrap_difference_runs,
        bootstrap_runs,
    )

    x = np.random.default_rng(1).normal(size=40)
    y = x + np.random.default_rng(2).normal(size=40)
    sa, sb = (lambda i: float(x[i].mean())), (lambda i: float(y[i].mean()))
    assert bootstrap_runs([sa], 40, samples=200, seed=3) == bootstrap(sa, 40, samples=200, seed=3)
    assert bootstrap_difference_runs([sa], [sb], 40, samples=200, seed=3) == bootstrap_difference(
        sa, sb, 40, samples=200, seed=3
    )


def test_run_bootstraps_cover_the_spread_between_runs() -> None:
    from raddino_lib.eval.bootstrap import bootstrap_difference_runs, bootstrap_runs

    const = lambda c: lambda i: float(c)  # noqa: E731  a run whose score ignores the rows
    # two runs scoring 1 and 3: the drawn pairs average 1, 2 or 3 (1/4, 1/2, 1/4)
    iv = bootstrap_runs([const(1), const(3)], 10, samples=500, seed=0)
    assert (iv.point, iv.lo, iv.median, iv.hi) == (2.0, 1.0, 2.0, 3.0)
    d = bootstrap_difference_runs([const(1), const(3)], [const(0)], 10, samples=500, seed=0)
    assert (d.point, d.lo, d.hi) == (2.0, 1.0, 3.0)
    # the runs agree: only the rows move the interval, as with one run
    x = np.arange(10.0)
    mean = lambda i: float(x[i].mean())  # noqa: E731
    same = bootstrap_runs([mean, mean, mean], 10, samples=300, seed=4)
    from raddino_lib.eval.bootstrap import bootstrap

    one = bootstrap(mean, 10, samples=300, seed=4)
    for f in ("point", "median", "lo", "hi"):  # the same up to the rounding of a mean of three
        assert getattr(same, f) == pytest.approx(getattr(one, f), rel=1e-12)


def test_run_scores_average_the_runs() -> None:
    from raddino_lib.report.metrics import RunScores, score_reports

    refs = ["the heart is enlarged.", "no pleural effusion.", "there is a small effusion."]
    gen1 = ["the heart is enlarged.", "no effusion.", "the lungs are clear."]
    gen2 = ["the heart is normal.", "no pleural effusion.", "there is a small effusion."]
    s1, s2 = score_reports(gen1, refs, rg_er=False), score_reports(gen2, refs, rg_er=False)
    rs = RunScores([s1, s2])
    all3 = np.arange(3)
    for m in ("rouge_l", "bleu4", "macro_f1_14"):
        want = [s1.statistic(m)(all3), s2.statistic(m)(all3)]
        assert rs.values(m) == want
        assert rs.intervals(samples=50)[m].point == pytest.approx(np.mean(want))
    assert rs.values("rg_er") is None and rs.intervals(samples=5)["rg_er"] is None
    assert rs.pred is s1.pred and rs.true is s1.true
    f1 = rs.per_class()
    for c, v in s1.per_class().items():
        w = s2.per_class()[c]
        if np.isfinite(v) and np.isfinite(w):
            assert f1[c] == pytest.approx((v + w) / 2)
    with pytest.raises(ValueError, match="different numbers"):
        RunScores([s1, score_reports(gen1[:2], refs[:2], rg_er=False)])


def test_bootstrap_grouped_mean_resamples_whole_groups():
    sums, counts = np.array([3.0, 0.0, 1.0]), np.array([3, 1, 2])  # 4 of 6 rows
    iv = bootstrap_grouped_mean(sums, counts, samples=200, seed=4)
    assert iv.point == pytest.approx(4 / 6) and iv.samples == 200
    idx = bootstrap_indices(3, 200, 4)  # the same group draws, by hand
    want = np.quantile(sums[idx].sum(1) / counts[idx].sum(1), [0.025, 0.975])
    assert (iv.lo, iv.hi) == pytest.approx(tuple(want))
    assert bootstrap_grouped_mean(np.ones(5), np.ones(5)).lo == 1.0  # no spread, no width
    with pytest.raises(ValueError, match=r"\[G\]"):
        bootstrap_grouped_mean(np.ones(3), np.ones(2))
