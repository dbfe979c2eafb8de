"""Figures for the pretraining chapter: views and masks, schedules, training curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from raddino_lib.ssl.schedules import SSLSchedules
from raddino_lib.ssl.views import MultiCropViews

__all__ = ["learning_curve_figure", "schedules_figure", "training_curves", "views_figure"]


def views_figure(
    image: torch.Tensor, views: MultiCropViews, masks: torch.Tensor, patch_size: int, seed: int = 0
) -> Figure:
    """One image ``[1, S, S]``, its crop boxes, the two global crops with their block masks
    (``masks [2, N]``, red patches) and the local crops."""
    g = torch.Generator().manual_seed(seed)
    out = views(image, g, return_boxes=True)
    n_loc = len(out["local"])
    ncol = 3 + n_loc
    fig, axes = plt.subplots(1, ncol, figsize=(2.3 * ncol, 2.6))
    ax = axes[0]
    ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    colours = ["tab:blue", "tab:orange"] + ["tab:green"] * n_loc
    boxes = out["global_boxes"] + out["local_boxes"]
    for b, c in zip(boxes, colours, strict=True):
        ax.add_patch(Rectangle((b.left, b.top), b.side, b.side, fill=False, ec=c, lw=1.2))
    ax.set_title("image + crop boxes", fontsize=9)
    for i, crop in enumerate(out["global"]):
        a = axes[1 + i]
        a.imshow(crop[0].numpy(), cmap="gray", vmin=0, vmax=1)
        grid = crop.shape[-1] // patch_size
        m = masks[i].reshape(grid, grid).numpy().astype(float)
        if m.any():
            big = np.kron(m, np.ones((patch_size, patch_size)))
            a.imshow(np.ma.masked_equal(big, 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        a.set_title(f"global {i + 1} ({int(m.sum())}/{m.size} masked)", fontsize=9)
    for j, crop in enumerate(out["local"]):
        a = axes[3 + j]
        a.imshow(crop[0].numpy(), cmap="gray", vmin=0, vmax=1)
        a.set_title(f"local {j + 1}", fontsize=9)
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    return fig


def schedules_figure(s: SSLSchedules) -> Figure:
    """lr (and the prototype layer's), weight decay, teacher momentum and temperature."""
    steps = np.arange(s.total_steps)
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.8))
    axes[0].plot(steps, s.lr, label="lr")
    axes[0].plot(steps, s.last_layer_lr, "--", label="prototype layer")
    axes[0].legend(fontsize=8)
    panels = [
        (axes[1], s.weight_decay, "weight decay"),
        (axes[2], s.momentum, "teacher EMA momentum"),
        (axes[3], s.teacher_temp, "teacher temperature"),
    ]
    for ax, y, title in panels:
        ax.plot(steps, y)
        ax.set_title(title, fontsize=10)
    axes[0].set_title("learning rate", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def _smooth(y: pd.Series, n: int) -> pd.Series:
    return y.rolling(max(1, n), min_periods=1).mean()


def training_curves(rows: Sequence[dict] | pd.DataFrame, smooth: int = 20) -> Figure:
    """Losses, collapse diagnostics and throughput against images seen (running mean)."""
    df = pd.DataFrame(rows)
    x = df["images_seen"]
    log_k = float(df["log_k"].iloc[0])
    fig, axes = plt.subplots(2, 3, figsize=(14, 6.4))
    ax = axes[0, 0]
    ax.plot(x, _smooth(df["dino_loss"], smooth), label="DINO (CLS)")
    ax.axhline(log_k, color="k", ls=":", lw=1, label="log K (uniform)")
    ax.set_title("DINO loss", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    if "ibot_loss" in df:
        ax.plot(x, _smooth(df["ibot_loss"], smooth), label="iBOT (masked patches)")
    if "koleo_loss" in df:
        ax.plot(x, _smooth(df["koleo_loss"], smooth), label="KoLeo")
    ax.set_title("iBOT and KoLeo losses", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    ax.plot(x, _smooth(df["teacher_entropy"], smooth), label="mean target entropy")
    ax.plot(x, _smooth(df["teacher_entropy_of_mean"], smooth), label="entropy of mean target")
    ax.axhline(log_k, color="k", ls=":", lw=1, label="log K")
    ax.set_title("teacher targets (nats)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.plot(x, _smooth(df["prototypes_used"], smooth))
    ax.set_title(f"prototypes used in a batch (of {int(round(np.exp(log_k)))})", fontsize=10)
    ax = axes[1, 1]
    ax.plot(x, _smooth(df["cls_std"], smooth), label="teacher CLS spread")
    ax.plot(x, _smooth(df["teacher_logit_spread"], smooth) * 10, label="centred logit spread x10")
    ax.set_title("collapse diagnostics", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    ax.plot(x, _smooth(df["images_per_s"], smooth))
    ax.set_title("throughput (images/s)", fontsize=10)
    for a in axes.ravel():
        a.set_xlabel("images seen")
    fig.tight_layout()
    return fig


def learning_curve_figure(
    curve: pd.DataFrame, references: dict[str, float], title: str = ""
) -> Figure:
    """Mean probe AUPRC of the run's snapshots against images seen, with reference lines."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.errorbar(
        curve["images_seen"], curve["mean_auprc"], yerr=curve["mean_auprc_std"], marker="o",
        capsize=3, label="this run's teacher",
    )  # fmt: skip
    styles = iter(["--", ":", "-."])
    for name, value in references.items():
        ax.axhline(value, ls=next(styles, "--"), color="0.4", lw=1)
        ax.annotate(name, (curve["images_seen"].max(), value), fontsize=8, ha="right",
                    va="bottom")  # fmt: skip
    ax.set_xlabel("images seen")
    ax.set_ylabel("mean test AUPRC over findings")
    ax.set_title(title or "linear probe on frozen features during pretraining", fontsize=10)
    fig.tight_layout()
    return fig
