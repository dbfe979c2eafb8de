"""Report metrics of the paper's Table 5: ROUGE-L, BLEU-4, RG_ER and Macro-F1-14.

* **ROUGE-L**: ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])`` F-measure per report
  (its default tokenizer: lower case, non-alphanumerics become spaces, no stemming), averaged
  over reports.
* **BLEU-4**: sacrebleu's corpus BLEU (n-grams up to 4, ``13a`` tokenisation, lower-cased,
  ``exp`` smoothing, one reference per report): the clipped n-gram counts and lengths of each
  report (:func:`bleu_stats`) are summed over the (resampled) corpus and turned into BLEU
  with sacrebleu's own formula, so the full-set value equals ``sacrebleu.corpus_bleu``.
* **Macro-F1-14**: both texts labelled with the 14 CheXbert classes by the offline rule-based
  labeller (:func:`raddino_lib.text.labeller.label_chexbert`: mentions, negation and
  uncertainty cues); a class is positive only when labelled 1 ("uncertain" counts as
  negative, as in the paper); per-class F1 averaged over the classes that have at least one
  positive reference in the test set (all 14 on MIMIC-CXR; on the phantom, Edema and
  Atelectasis are never written, so they are left out and the table says how many were
  averaged).
* **RG_ER**: RadGraph F1 ("partial" reward: entities with their relation flag) from the
  optional ``radgraph`` package, only when it is installed and its weights are already on the
  machine (loaded with the hub offline: never a download); otherwise marked unavailable.

All values are in percent (0-100), as the paper prints them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raddino_lib.environ import temporary_env
from raddino_lib.eval.bootstrap import Interval, bootstrap, bootstrap_runs
from raddino_lib.text.labeller import CHEXBERT_14, label_reports_chexbert

__all__ = [
    "BLEU_SETTINGS",
    "METRICS",
    "METRIC_LABELS",
    "ReportScores",
    "RunScores",
    "bleu4_from_stats",
    "bleu_stats",
    "chexbert_positive",
    "corpus_bleu4",
    "macro_f1",
    "per_class_f1",
    "radgraph_status",
    "rg_er_scores",
    "rouge_l",
    "score_reports",
]

METRICS: tuple[str, ...] = ("rouge_l", "bleu4", "rg_er", "macro_f1_14")
METRIC_LABELS: dict[str, str] = {
    "rouge_l": "ROUGE-L", "bleu4": "BLEU-4", "rg_er": "RG_ER", "macro_f1_14": "Macro-F1-14",
}  # fmt: skip
BLEU_SETTINGS: dict[str, Any] = {"tokenize": "13a", "lowercase": True, "smooth_method": "exp"}
"""sacrebleu ``BLEU`` options used for BLEU-4 (max n-gram order 4 is sacrebleu's default)."""


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} generated reports but {len(refs)} references")


def rouge_l(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure per (generated, reference) pair -> ``[N]`` in [0, 1]."""
    from rouge_score import rouge_scorer

    _check_pairs(hyps, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = zip(hyps, refs, strict=True)
    return np.array([scorer.score(r, h)["rougeL"].fmeasure for h, r in pairs], dtype=float)


def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(**BLEU_SETTINGS)


def bleu_stats(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Per-pair BLEU sufficient statistics ``[N, 10]``: hypothesis length, reference length,
    matched 1..4-grams (clipped), hypothesis 1..4-grams (sacrebleu's order)."""
    _check_pairs(hyps, refs)
    bleu = _bleu()
    rows = []
    for h, r in zip(hyps, refs, strict=True):
        s = bleu.corpus_score([h], [[r]])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.array(rows, dtype=np.int64).reshape(len(rows), 10)


def bleu4_from_stats(stats: np.ndarray) -> float:
    """Corpus BLEU-4 (0-100) of summed :func:`bleu_stats` rows (``[N, 10]`` or ``[10]``)."""
    from sacrebleu.metrics import BLEU

    s = np.asarray(stats)
    s = s.sum(0) if s.ndim == 2 else s
    res = BLEU.compute_bleu(
        correct=[int(x) for x in s[2:6]], total=[int(x) for x in s[6:10]], sys_len=int(s[0]),
        ref_len=int(s[1]), smooth_method=BLEU_SETTINGS["smooth_method"], max_ngram_order=4,
    )  # fmt: skip
    return float(res.score)


def corpus_bleu4(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacrebleu corpus BLEU-4 (0-100) with :data:`BLEU_SETTINGS`."""
    _check_pairs(hyps, refs)
    return float(_bleu().corpus_score(list(hyps), [list(refs)]).score)


def chexbert_positive(texts: Sequence[str]) -> np.ndarray:
    """``[N, 14]`` bool: the labeller found the class positive (uncertain -> negative)."""
    return (label_reports_chexbert(list(texts)).to_numpy() == 1.0).astype(bool)


def per_class_f1(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """F1 per column of ``[N, K]`` bool arrays -> ``[K]`` (nan where a class has no positive
    in either)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ")
    tp = (pred & true).sum(0)
    denom = 2 * tp + (pred & ~true).sum(0) + (~pred & true).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def macro_f1(pred: np.ndarray, true: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """Mean F1 over ``classes`` (column indices; default: those with a positive in ``true``),
    in [0, 1]; nan if no class qualifies."""
    f1 = per_class_f1(pred, true)
    cols = list(classes) if classes is not None else list(np.flatnonzero(np.asarray(true).any(0)))
    vals = f1[cols] if cols else np.array([])
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if len(vals) else float("nan")


def _hub_offline():
    return temporary_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


_RADGRAPH: dict[str, Any] = {}


def _radgraph_scorer() -> Any:
    if "scorer" not in _RADGRAPH:
        from radgraph import F1RadGraph  # type: ignore[import-not-found]

        with _hub_offline():
            _RADGRAPH["scorer"] = F1RadGraph(reward_level="partial")
    return _RADGRAPH["scorer"]


def radgraph_status() -> tuple[bool, str]:
    """``(available, why)``: RG_ER needs the ``radgraph`` package and its weights already on
    this machine (loaded with the hub offline, so nothing is downloaded)."""
    if importlib.util.find_spec("radgraph") is None:
        return False, "the optional radgraph package is not installed"
    try:
        _radgraph_scorer()
    except Exception as exc:  # missing weights, offline hub, incompatible versions
        return False, f"radgraph could not load its model offline ({type(exc).__name__}: {exc})"
    return True, "radgraph F1RadGraph(reward_level='partial')"


def rg_er_scores(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """RadGraph partial-reward F1 per pair -> ``[N]`` in [0, 1] (needs :func:`radgraph_status`)."""
    _check_pairs(hyps, refs)
    with _hub_offline():
        out = _radgraph_scorer()(hyps=list(hyps), refs=list(refs))
    rewards = out[1] if isinstance(out, tuple | list) else out
    return np.asarray(rewards, dtype=float).reshape(len(hyps))


@dataclass
class ReportScores:
    """Per-report ingredients of every metric, for point values and bootstrap resamples.

    Attributes:
        rouge: ``[N]`` ROUGE-L F per report.
        bleu: ``[N, 10]`` BLEU statistics (:func:`bleu_stats`).
        pred, true: ``[N, 14]`` CheXbert positives of generated and reference reports.
        classes: the class indices Macro-F1 averages over.
        rg_er: ``[N]`` RadGraph F1 per report, or None when unavailable.
        rg_er_status: why RG_ER is (un)available.
    """

    rouge: np.ndarray
    bleu: np.ndarray
    pred: np.ndarray
    true: np.ndarray
    classes: list[int]
    rg_er: np.ndarray | None = None
    rg_er_status: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rouge)

    def statistic(self, metric: str) -> Callable[[np.ndarray], float] | None:
        """``idx -> value in percent`` for ``metric`` (None for RG_ER when unavailable)."""
        if metric == "rouge_l":
            return lambda i: 100 * float(self.rouge[i].mean())
        if metric == "bleu4":
            return lambda i: bleu4_from_stats(self.bleu[i])
        if metric == "macro_f1_14":
            return lambda i: 100 * macro_f1(self.pred[i], self.true[i], self.classes)
        if metric == "rg_er":
            if self.rg_er is None:
                return None
            return lambda i: 100 * float(self.rg_er[i].mean())
        raise ValueError(f"unknown metric {metric!r}; known: {METRICS}")

    def intervals(self, *, samples: int = 500, seed: int = 0) -> dict[str, Interval | None]:
        """Median and 95% interval of every metric over ``samples`` resamples (None: RG_ER
        unavailable)."""
        out: dict[str, Interval | None] = {}
        for m in METRICS:
            stat = self.statistic(m)
            n = len(self)
            out[m] = None if stat is None else bootstrap(stat, n, samples=samples, seed=seed)
        return out

    def per_class(self) -> dict[str, float]:
        """F1 per CheXbert class on all reports (nan: no positive in either)."""
        return dict(zip(CHEXBERT_14, per_class_f1(self.pred, self.true).tolist(), strict=True))


@dataclass
class RunScores:
    """One encoder's :class:`ReportScores` over several generator training runs (seeds) on the
    same test reports.

    Metrics are averaged over the runs; their intervals resample the runs as well as the
    reports (:func:`~raddino_lib.eval.bootstrap.bootstrap_runs`), so they cover the training
    as well as the test sampling. ``true`` is the references' (shared); ``pred`` is the first
    run's (the run whose reports the chapter shows).
    """

    runs: list[ReportScores]

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("RunScores needs at least one run's ReportScores")
        if len({len(r) for r in self.runs}) != 1:
            raise ValueError(
                f"the runs scored different numbers of reports: {[len(r) for r in self.runs]}"
            )

    def __len__(self) -> int:
        return len(self.runs[0])

    @property
    def true(self) -> np.ndarray:
        return self.runs[0].true

    @property
    def pred(self) -> np.ndarray:
        return self.runs[0].pred

    def statistics(self, metric: str) -> list[Callable[[np.ndarray], float]] | None:
        """Every run's ``idx -> value in percent`` (None: the metric is unavailable)."""
        stats = [r.statistic(metric) for r in self.runs]
        return None if any(s is None for s in stats) else stats  # type: ignore[return-value]

    def values(self, metric: str) -> list[float] | None:
        """Every run's value on all reports (None: unavailable)."""
        stats = self.statistics(metric)
        return None if stats is None else [s(np.arange(len(self))) for s in stats]

    def intervals(self, *, samples: int = 500, seed: int = 0) -> dict[str, Interval | None]:
        """Run-averaged value and 95% interval of every metric over ``samples`` resamples of
        the reports and the runs (None: RG_ER unavailable)."""
        out: dict[str, Interval | None] = {}
        for m in METRICS:
            stats = self.statistics(m)
            out[m] = (
                None if stats is None
                else bootstrap_runs(stats, len(self), samples=samples, seed=seed)
            )  # fmt: skip
        return out

    def per_class(self) -> dict[str, float]:
        """F1 per CheXbert class, the mean over runs (nan: no positive in any run or reference)."""
        per = np.array([list(r.per_class().values()) for r in self.runs], dtype=float)
        with np.errstate(all="ignore"):
            valid = np.isfinite(per).any(0)
            mean = np.where(valid, np.nanmean(np.where(valid, per, 0.0), 0), np.nan)
        return dict(zip(CHEXBERT_14, mean.tolist(), strict=True))


def score_reports(
    hyps: Sequence[str],
    refs: Sequence[str],
    *,
    true: np.ndarray | None = None,
    classes: Sequence[int] | None = None,
    rg_er: bool = True,
) -> ReportScores:
    """Everything the metrics need for ``hyps`` against ``refs``.

    Args:
        true: the references' CheXbert positives when already computed (shared by encoders).
        classes: Macro-F1 classes (default: those with a positive reference).
        rg_er: try RadGraph (only used when :func:`radgraph_status` says it is available).
    """
    _check_pairs(hyps, refs)
    t = chexbert_positive(refs) if true is None else np.asarray(true, bool)
    cls = list(classes) if classes is not None else list(np.flatnonzero(t.any(0)))
    rg, status = None, "not requested"
    if rg_er:
        ok, status = radgraph_status()
        if ok:
            rg = rg_er_scores(hyps, refs)
    return ReportScores(
        rouge=rouge_l(hyps, refs), bleu=bleu_stats(hyps, refs), pred=chexbert_positive(hyps),
        true=t, classes=cls, rg_er=rg, rg_er_status=status,
    )  # fmt: skip
