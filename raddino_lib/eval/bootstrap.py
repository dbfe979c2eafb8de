"""Bootstrap medians and 95% intervals over test rows (the paper's Table 5: "median and 95%
confidence intervals from 500 bootstrap samples"; the segmentation chapter's paired Dice
differences).

A statistic is any function of a row-index array (``[n]`` ints, with repeats) that returns a
float: a mean of per-report scores, or a corpus statistic such as BLEU-4 or Macro-F1
recomputed on the resampled reports. The resamples depend only on ``(n, samples, seed)``, so
two encoders scored on the same test reports with the same seed see the same resamples and
their differences are paired (:func:`bootstrap_difference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Interval",
    "bootstrap",
    "bootstrap_difference",
    "bootstrap_grouped_mean",
    "bootstrap_difference_runs",
    "bootstrap_indices",
    "bootstrap_runs",
]

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """``point``: the statistic on all rows; ``median``, ``lo``, ``hi``: the median and the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles over the resamples."""

    point: float
    median: float
    lo: float
    hi: float
    samples: int
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def bootstrap_indices(n: int, samples: int = 500, seed: int = 0) -> np.ndarray:
    """``[samples, n]`` row indices drawn with replacement (deterministic by ``seed``)."""
    if n < 1 or samples < 1:
        raise ValueError(f"need n >= 1 rows and samples >= 1, got n={n}, samples={samples}")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _interval(point: float, values: np.ndarray, level: float) -> Interval:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        nan = float("nan")
        return Interval(point, nan, nan, nan, len(values), level)
    a = (1 - level) / 2
    lo, med, hi = np.quantile(v, [a, 0.5, 1 - a])
    return Interval(float(point), float(med), float(lo), float(hi), len(values), level)


def bootstrap(
    stat: Statistic, n: int, *, samples: int = 500, seed: int = 0, level: float = 0.95
) -> Interval:
    """``stat`` on all ``n`` rows and on ``samples`` resamples -> :class:`Interval`."""
    idx = bootstrap_indices(n, samples, seed)
    values = np.array([stat(i) for i in idx], dtype=float)
    return _interval(stat(np.arange(n)), values, level)


def bootstrap_difference(
    stat_a: Statistic,
    stat_b: Statistic,
    n: int,
    *,
    samples: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``stat_a - stat_b`` on the same resamples (paired): the interval of the difference."""
    idx = bootstrap_indices(n, samples, seed)
    values = np.array([stat_a(i) - stat_b(i) for i in idx], dtype=float)
    all_rows = np.arange(n)
    return _interval(stat_a(all_rows) - stat_b(all_rows), values, level)


def bootstrap_grouped_mean(
    sums: np.ndarray, counts: np.ndarray, *, samples: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> Interval:  # fmt: skip
    """The mean of a per-row value whose rows come in groups (a subject's images), with an
    interval that resamples whole groups: ``sums [G]`` (the value summed over each group's
    rows) and ``counts [G]`` (rows per group) -> ``sum / count`` on all groups and on
    ``samples`` resamples of the ``G`` groups (:func:`bootstrap_indices` over groups)."""
    sums, counts = np.asarray(sums, dtype=float), np.asarray(counts, dtype=float)
    if sums.shape != counts.shape or sums.ndim != 1:
        raise ValueError(f"sums {sums.shape} and counts {counts.shape} must be [G] arrays")
    idx = bootstrap_indices(len(sums), samples, seed)
    values = sums[idx].sum(1) / counts[idx].sum(1)
    return _interval(float(sums.sum() / counts.sum()), values, level)


# ------------------------------------------------------------------ several training runs
def _run_values(stats: Sequence[Statistic], idx: np.ndarray) -> np.ndarray:
    """``[K, samples]``: every run's statistic on every resample."""
    if len(stats) == 0:
        raise ValueError("need at least one run's statistic")
    return np.array([[s(i) for i in idx] for s in stats], dtype=float)


def _run_picks(k: int, samples: int, seed: int, stream: int) -> np.ndarray:
    """``[samples, k]`` run indices drawn with replacement, from a stream of their own (the
    row resamples stay those of :func:`bootstrap_indices`)."""
    return np.random.default_rng([seed, stream]).integers(0, k, size=(samples, k))


def _mean_over_picks(values: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """``values [K, samples]``, ``picks [samples, K]`` -> ``[samples]`` mean of the picked runs."""
    return values[picks.T, np.arange(values.shape[1])].mean(0)


def bootstrap_runs(
    stats: Sequence[Statistic], n: int, *, samples: int = 500, seed: int = 0,
    level: float = 0.95,
) -> Interval:  # fmt: skip
    """A statistic averaged over ``K`` training runs scored on the same ``n`` rows, with an
    interval that covers both the rows and the runs: each resample draws the rows (as
    :func:`bootstrap`) and, independently, ``K`` of the runs with replacement, and averages
    the drawn runs' statistics on the drawn rows (a two-level bootstrap). ``point`` is the mean
    over all runs on all rows. With one run it is :func:`bootstrap`, value for value."""
    idx = bootstrap_indices(n, samples, seed)
    values = _run_values(stats, idx)
    picks = _run_picks(len(stats), samples, seed, 1)
    point = float(np.mean([s(np.arange(n)) for s in stats]))
    return _interval(point, _mean_over_picks(values, picks), level)


def bootstrap_difference_runs(
    stats_a: Sequence[Statistic], stats_b: Sequence[Statistic], n: int, *, samples: int = 500,
    seed: int = 0, level: float = 0.95,
) -> Interval:  # fmt: skip
    """:func:`bootstrap_runs` of ``a - b``: the rows are paired (the same resamples for both),
    the runs are drawn independently for ``a`` and for ``b`` (they are separate trainings).
    With one run each it is :func:`bootstrap_difference`, value for value."""
    idx = bootstrap_indices(n, samples, seed)
    va, vb = _run_values(stats_a, idx), _run_values(stats_b, idx)
    da = _mean_over_picks(va, _run_picks(len(stats_a), samples, seed, 1))
    db = _mean_over_picks(vb, _run_picks(len(stats_b), samples, seed, 2))
    rows = np.arange(n)
    point = float(np.mean([s(rows) for s in stats_a]) - np.mean([s(rows) for s in stats_b]))
    return _interval(point, da - db, level)
