"""Figures of the ablation chapters: a probe score along a pretraining sweep (Figures 1, 2
and A.1 of the paper), with the frozen baselines as horizontal lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raddino_lib.eval.ablation import group_stats

__all__ = ["sweep_figure"]


def sweep_figure(
    sweep: pd.DataFrame,
    groups: Mapping[str, Sequence[str]],
    *,
    x: str,
    xlabel: str,
    baselines: pd.DataFrame | None = None,
    log_x: bool = False,
    title: str = "",
) -> Figure:
    """One panel per finding group: the group's AUPRC (mean and std over probe seeds) at each
    sweep point against column ``x`` of ``sweep``; each baseline row (``label`` column) is a
    dashed horizontal line with its seed std as a band.

    Args:
        sweep: :func:`~raddino_lib.eval.ablation.run_sweep`'s table.
        groups: ``{panel title: findings averaged in it}``.
        baselines: :func:`~raddino_lib.eval.ablation.probe_baselines`' table, or None.
    """
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    order = sweep.sort_values(x)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title_g, findings) in zip(axes[0], groups.items(), strict=True):
        st = group_stats(order, findings)
        xs = order[x].to_numpy(float)
        ax.errorbar(xs, st["mean"], yerr=st["std"], marker="o", capsize=3, color="k",
                    label="this run's sweep")  # fmt: skip
        for xi, yi, lab in zip(xs, st["mean"], order["label"], strict=True):
            ax.annotate(str(lab), (xi, yi), textcoords="offset points", xytext=(4, 6), fontsize=7)
        if baselines is not None and len(baselines):
            bs = group_stats(baselines, findings)
            for i, (lab, m, s) in enumerate(
                zip(baselines["label"], bs["mean"], bs["std"], strict=True)
            ):
                c = colours[(i + 1) % len(colours)]
                ax.axhline(m, ls="--", color=c, lw=1, label=f"{lab} (frozen)")
                ax.axhspan(m - s, m + s, color=c, alpha=0.12, lw=0)
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test AUPRC (mean over findings)")
        ax.set_title(f"{title_g}: " + ", ".join(findings), fontsize=9)
        ax.grid(alpha=0.3)
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(0.0, lo), min(1.0, hi) if np.isfinite(hi) else 1.0)
    axes[0][-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
