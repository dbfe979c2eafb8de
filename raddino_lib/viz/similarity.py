"""Patch-similarity figures (Figures 3, A.3, A.4) and the landmark-error plot."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raddino_lib.eval.correspondence import patch_centre, patch_index, similarity_maps

__all__ = ["correspondence_figure", "landmark_error_figure"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def correspondence_figure(
    query_image: np.ndarray,
    target_images: Sequence[np.ndarray],
    patches: dict[str, tuple[np.ndarray, np.ndarray]],
    points: dict[str, tuple[float, float]],
    *,
    truth: dict[str, Sequence[tuple[float, float]]] | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
) -> Figure:
    """Query with its landmarks, then per encoder and landmark the similarity on each target.

    Args:
        query_image: ``[S, S]`` in ``[0, 1]``.
        target_images: ``T`` images ``[S, S]``.
        patches: ``{encoder: (query [h, w, D], targets [T, h, w, D])}``.
        points: ``{landmark: (x, y)}`` pixels on the query.
        truth: ``{landmark: [(x, y) on each target]}`` drawn as green crosses.

    Rows: one per (encoder, landmark); columns: the query, then each target with the cosine
    similarity heatmap (``[-1, 1]`` mapped to the colour map's range), a cyan circle at the
    best-matching patch centre and, when given, the true landmark as a green cross.
    """
    size = query_image.shape[0]
    encs, lms = list(patches), list(points)
    n_t = len(target_images)
    nrows = len(encs) * len(lms)
    fig, axes = plt.subplots(nrows, 1 + n_t, figsize=(1.9 * (1 + n_t), 1.9 * nrows), squeeze=False)
    extent = (0, size, size, 0)
    r = 0
    for enc in encs:
        q, ts = patches[enc]
        grid = q.shape[:2]
        for k, lm in enumerate(lms):
            xy = np.asarray(points[lm], dtype=float)
            rc = patch_index(xy, size, grid)
            sims = similarity_maps(q, rc, ts)
            ax = axes[r, 0]
            ax.imshow(query_image, cmap="gray", vmin=0, vmax=1, extent=extent)
            ax.plot(*xy, marker=_MARKERS[k % len(_MARKERS)], color="cyan", ms=7, mec="black")
            ax.set_ylabel(f"{enc}\n{lm}", fontsize=7)
            for j in range(n_t):
                ax = axes[r, 1 + j]
                ax.imshow(target_images[j], cmap="gray", vmin=0, vmax=1, extent=extent)
                ax.imshow(sims[j], cmap=cmap, alpha=alpha, vmin=-1, vmax=1, extent=extent,
                          interpolation="nearest")  # fmt: skip
                best = np.unravel_index(int(np.argmax(sims[j])), sims[j].shape)
                bx, by = patch_centre(np.array(best), size, grid)
                ax.plot(bx, by, marker="o", color="cyan", ms=7, mfc="none", mew=1.6)
                if truth is not None and lm in truth:
                    tx, ty = truth[lm][j]
                    ax.plot(tx, ty, marker="+", color="lime", ms=9, mew=2)
                if r == 0:
                    ax.set_title(f"target {j + 1}", fontsize=8)
            if r == 0:
                axes[0, 0].set_title("query", fontsize=8)
            r += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return fig


def landmark_error_figure(errors: pd.DataFrame, size: float, order: Sequence[str]) -> Figure:
    """Box plots of the best-match error per landmark (x) and encoder (hue), in pixels."""
    import seaborn as sns

    d = errors[errors["encoder"].isin(order)]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    sns.boxplot(data=d, x="landmark", y="error_px", hue="encoder", hue_order=list(order),
                showfliers=False, ax=ax, linewidth=0.8)  # fmt: skip
    ax.set_ylabel(f"error (pixels of a {int(size)} px image)")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    return fig
