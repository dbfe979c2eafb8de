"""Classification metrics with the paper's conventions (reference.md section 5)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def auprc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (sklearn's average precision).

    Args:
        y_true: ``[N]`` labels in {0, 1}; NaN or -1 (missing / uncertain) entries are masked out.
        score: ``[N]`` real-valued scores, higher = more likely positive.

    Returns:
        AUPRC over the labelled entries, or NaN when they hold no positive or no negative.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    keep = np.isfinite(y) & (y != -1)
    y, s = y[keep], s[keep]
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0/1 (or NaN/-1 for missing), got {np.unique(y)}")
    return float(average_precision_score(y, s))


def quantile_bins(values: np.ndarray, n_bins: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Bin a continuous variable into ``n_bins`` equal-count intervals (paper, Table 7).

    Returns:
        ``(codes [N] int in 0..n_bins-1, edges [n_bins + 1])``.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError("quantile_bins got NaN/inf values: drop missing rows first")
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1))
    codes = np.clip(np.searchsorted(edges[1:-1], v, side="right"), 0, n_bins - 1)
    return codes.astype(np.int64), edges
