"""Tables and figures for encoder comparisons (classification and metadata chapters)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["comparison_figure", "mean_std_table"]


def mean_std_table(
    mean: pd.DataFrame,
    std: pd.DataFrame,
    *,
    scale: float = 100.0,
    digits: int = 1,
    highlight: bool = True,
    exclude: Sequence[str] = (),
):
    """``"mean ± std"`` cells (x ``scale``), the best encoder of each column in bold.

    Rows named in ``exclude`` (e.g. reference rows) are shown but never highlighted.
    """
    cells = pd.DataFrame(index=mean.index, columns=mean.columns, dtype=object)
    for r in mean.index:
        for c in mean.columns:
            m, s = mean.loc[r, c], std.loc[r, c] if c in std.columns else np.nan
            if not np.isfinite(m):
                cells.loc[r, c] = "n/a"
            elif np.isfinite(s):
                cells.loc[r, c] = f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"
            else:
                cells.loc[r, c] = f"{m * scale:.{digits}f}"
    if not highlight:
        return cells
    cand = mean.drop(index=[e for e in exclude if e in mean.index])
    best = {c: cand[c].idxmax() for c in mean.columns if cand[c].notna().any()}

    def bold(col: pd.Series) -> list[str]:
        return ["font-weight: bold" if best.get(col.name) == r else "" for r in col.index]

    return cells.style.apply(bold, axis=0)


def comparison_figure(
    mean: pd.DataFrame,
    std: pd.DataFrame,
    *,
    prevalence: pd.Series | None = None,
    title: str = "",
    ylabel: str = "test AUPRC",
) -> Figure:
    """Grouped dots with std bars: findings on x, one colour per encoder; prevalence as a
    grey tick (the AUPRC of a random score)."""
    cols = [c for c in mean.columns if c != "macro"]
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 3.4))
    n = len(mean.index)
    width = 0.8 / max(n, 1)
    x = np.arange(len(cols))
    for i, name in enumerate(mean.index):
        ax.errorbar(
            x - 0.4 + width * (i + 0.5), mean.loc[name, cols], yerr=std.loc[name, cols],
            fmt="o", ms=4, capsize=2, label=name,
        )  # fmt: skip
    if prevalence is not None:
        ax.scatter(x, prevalence[cols], marker="_", s=400, color="0.5", label="prevalence")
    ax.set_xticks(x, cols)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
