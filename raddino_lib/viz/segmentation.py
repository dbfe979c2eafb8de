"""Segmentation figures: mask overlays (Figure A.5) and the few-shot curve (Figure 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["example_for_task", "few_shot_figure", "overlay_figure"]

TRUE_COLOUR = "#2ca02c"  # green: ground truth (as in Figure A.5)
PRED_COLOUR = "#d62728"  # red: prediction


def example_for_task(truth: np.ndarray, channels: Sequence[int]) -> int:
    """Index of the example image with the largest true area in ``channels`` (``truth``
    ``[E, C, S, S]``), so a pneumothorax column shows an image that has one."""
    area = truth[:, list(channels)].sum((1, 2, 3))
    return int(np.argmax(area))


def overlay_figure(
    images: np.ndarray,
    truth: np.ndarray,
    preds: Mapping[str, np.ndarray],
    columns: Mapping[str, Sequence[int]],
    *,
    scores: Mapping[tuple[str, str], float] | None = None,
    panel: float = 2.1,
) -> plt.Figure:
    """Rows: models; columns: tasks. Each panel: the example image of that task, true mask
    outlines in green, predicted outlines in red.

    Args:
        images: ``[E, S, S]`` example images.
        truth: ``[E, C, S, S]`` bool true masks (all channels).
        preds: ``{row label: [E, C, S, S] bool}`` predictions, channels as ``truth``.
        columns: ``{task: channel indices}``.
        scores: optional ``{(row label, task): Dice}`` printed in the panel's corner.
    """
    labels = list(preds)
    fig, axes = plt.subplots(
        len(labels) + 1, len(columns), figsize=(panel * len(columns), panel * (len(labels) + 1)),
        squeeze=False,
    )  # fmt: skip
    for j, (task, chans) in enumerate(columns.items()):
        e = example_for_task(truth, chans)
        rows = [("truth", None), *[(lab, preds[lab]) for lab in labels]]
        for i, (lab, pred) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(images[e], cmap="gray", vmin=0, vmax=1)
            for c in chans:
                if truth[e, c].any():
                    ax.contour(truth[e, c], levels=[0.5], colors=TRUE_COLOUR, linewidths=0.8)
                if pred is not None and pred[e, c].any():
                    ax.contour(pred[e, c], levels=[0.5], colors=PRED_COLOUR, linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(task.replace("_", " "), fontsize=9)
            if j == 0:
                ax.set_ylabel(lab if len(lab) < 28 else lab.replace(" (", "\n("), fontsize=8)
            if scores is not None and pred is not None and (lab, task) in scores:
                ax.text(2, 2, f"{scores[(lab, task)]:.2f}", color="yellow", fontsize=7,
                        va="top", ha="left", bbox={"facecolor": "black", "alpha": 0.6,
                                                   "pad": 1, "linewidth": 0})  # fmt: skip
    fig.suptitle("green: ground truth, red: prediction (Dice of this image in the corner)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def few_shot_figure(
    few_shot: pd.DataFrame, ceiling: float | None = None, ceiling_label: str = "U-Net, all images"
) -> plt.Figure:
    """Lung Dice against training images, one line per (encoder, head), error bars = std over
    test images; the U-Net trained on all images as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for (enc, head), g in few_shot.groupby(["encoder", "head"], sort=False):
        g = g.sort_values("n_train")
        style = "--" if head == "linear" else "-"
        ax.errorbar(g["n_train"], g["mean"], yerr=g["std"], marker="o", ms=4, capsize=2,
                    label=f"{enc} ({head})", linestyle=style)  # fmt: skip
    if ceiling is not None:
        ax.axhline(ceiling, color="k", linestyle=":", linewidth=1, label=ceiling_label)
    ax.set_xscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel("lung Dice (left/right averaged)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
