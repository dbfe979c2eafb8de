"""Figures for the data chapter: galleries with mask overlays, distributions, resolution."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from raddino_lib.data.arrays import resize_area
from raddino_lib.data.schema import FINDING_ABBREV

# Overlay colours per mask group (RGB).
OVERLAY = {
    "lung_right": (0.2, 0.6, 1.0),
    "lung_left": (0.2, 1.0, 0.6),
    "heart": (1.0, 0.4, 0.3),
    "pneumothorax": (1.0, 0.9, 0.1),
    "chest_tube": (1.0, 0.2, 1.0),
}


def overlay_masks(ax: plt.Axes, masks: dict[str, np.ndarray], names: Sequence[str]) -> None:
    """Draw the contour of each mask in ``names`` (``[H, W]`` bool) on ``ax``."""
    for name in names:
        m = masks.get(name)
        if m is None or not m.any():
            continue
        color = OVERLAY.get(name, (1.0, 1.0, 1.0))
        ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=0.8)


def pick_examples(
    df: pd.DataFrame, finding: str, cohort: str | None, k: int, seed: int = 0
) -> pd.DataFrame:
    """Up to ``k`` frontal rows positive for ``finding`` (in ``cohort`` if given)."""
    sel = df[(df[finding] == 1) & (df["view"] != "LATERAL")]
    if cohort is not None:
        sel = sel[sel["cohort"] == cohort]
    return sel.sample(n=min(k, len(sel)), random_state=seed) if len(sel) else sel


def gallery(
    root: str | Path,
    df: pd.DataFrame,
    findings: Sequence[str],
    cohorts: Sequence[str],
    *,
    masks: Sequence[str] = ("lung_right", "lung_left", "pneumothorax", "chest_tube"),
    seed: int = 0,
    cell: float = 1.9,
) -> Figure:
    """Grid of images: one row per finding, one column per cohort, mask contours on top."""
    from raddino_lib.data.records import load_image, load_masks

    fig, axes = plt.subplots(
        len(findings),
        len(cohorts),
        figsize=(cell * len(cohorts), cell * len(findings)),
        squeeze=False,
    )
    for i, f in enumerate(findings):
        for j, c in enumerate(cohorts):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ex = pick_examples(df, f, c, 1, seed=seed + i)
            if len(ex) == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
                ax.set_facecolor("0.9")
            else:
                row = ex.iloc[0]
                ax.imshow(load_image(root, row["path"]), cmap="gray", vmin=0, vmax=1)
                if isinstance(row.get("mask_path"), str) and row["mask_path"]:
                    overlay_masks(ax, load_masks(root, row), masks)
                ax.text(0.02, 0.02, row["view"], color="yellow", fontsize=7, transform=ax.transAxes)
            if i == 0:
                ax.set_title(c, fontsize=9)
            if j == 0:
                ax.set_ylabel(FINDING_ABBREV.get(f, f), fontsize=9)
    fig.tight_layout()
    return fig


def metadata_figure(df: pd.DataFrame) -> Figure:
    """Distributions of age, weight, BMI by cohort and sex share per cohort."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, var in zip(axes[:3], ("age", "weight", "bmi"), strict=True):
        sns.kdeplot(data=df, x=var, hue="cohort", common_norm=False, ax=ax, fill=False)
        ax.set_title(var)
    share = df.groupby("cohort")["sex"].apply(lambda s: (s.astype(str).str[0] == "M").mean())
    axes[3].bar(share.index, share.values, color="0.5")
    axes[3].set_ylim(0, 1)
    axes[3].set_title("share male")
    axes[3].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def prevalence_heatmap(prev: pd.DataFrame, mention: pd.Series | None = None) -> Figure:
    """Heatmap of prevalence (finding x cohort); optional extra column of report mention rate."""
    table = prev.copy()
    if mention is not None:
        table["reported"] = mention.reindex(table.index)
    fig, ax = plt.subplots(figsize=(1.1 * table.shape[1] + 2, 0.38 * table.shape[0] + 1))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="mako_r", vmin=0, vmax=1, cbar=False, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def resolution_figure(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    boxes: Sequence[tuple[int, int, int, int] | None],
    sizes: Sequence[int] = (518, 224, 112),
) -> Figure:
    """Each image (``[H, W]`` at full size) shown at each size, zoomed on its box.

    ``boxes`` are ``(row0, col0, row1, col1)`` in full-size pixels (the finding's region), or
    None to show the whole image. Downsampling uses area averaging, as a resize would.
    """
    fig, axes = plt.subplots(
        len(images), len(sizes), figsize=(2.6 * len(sizes), 2.6 * len(images)), squeeze=False
    )
    for i, (img, title, box) in enumerate(zip(images, titles, boxes, strict=True)):
        full = img.shape[0]
        for j, s in enumerate(sizes):
            small = img if s == full else resize_area(img, s)
            ax = axes[i, j]
            if box is not None:
                r0, c0, r1, c1 = (int(round(v * s / full)) for v in box)
                crop = small[max(r0, 0) : max(r1, r0 + 1), max(c0, 0) : max(c1, c0 + 1)]
            else:
                crop = small
            ax.imshow(crop, cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{s} px", fontsize=10)
            if j == 0:
                ax.set_ylabel(title, fontsize=9)
    fig.tight_layout()
    return fig


def views_grid(root: str | Path, df: pd.DataFrame, cohorts: Sequence[str]) -> Figure:
    """One image per view (rows: PA, AP, LATERAL where present) and cohort (columns)."""
    from raddino_lib.data.records import load_image

    views = [v for v in ("PA", "AP", "LATERAL") if (df["view"] == v).any()]
    fig, axes = plt.subplots(
        len(views), len(cohorts), figsize=(2.2 * len(cohorts), 2.2 * len(views)), squeeze=False
    )
    for i, v in enumerate(views):
        for j, c in enumerate(cohorts):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            sel = df[(df["view"] == v) & (df["cohort"] == c)]
            if len(sel):
                ax.imshow(load_image(root, sel.iloc[0]["path"]), cmap="gray", vmin=0, vmax=1)
            else:
                ax.set_facecolor("0.9")
            if i == 0:
                ax.set_title(c, fontsize=9)
            if j == 0:
                ax.set_ylabel(v)
    fig.tight_layout()
    return fig


def mask_panels(img: np.ndarray, masks: dict[str, np.ndarray]) -> Figure:
    """The image ``[H, W]``, its six lung zones and its 20 ribs as coloured label overlays."""
    from raddino_lib.data.schema import RIB_MASKS, ZONE_MASKS

    def labels(names: Sequence[str]) -> np.ndarray:
        lab = np.zeros(img.shape, dtype=int)
        for k, name in enumerate(names, start=1):
            if name in masks:
                lab[masks[name]] = k
        return lab

    panels = [("image", None), ("lung zones", labels(ZONE_MASKS)), ("ribs", labels(RIB_MASKS))]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, (title, lab) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if lab is not None:
            ax.imshow(np.ma.masked_equal(lab, 0), cmap="tab20", alpha=0.5, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    return fig
