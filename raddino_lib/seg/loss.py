"""Segmentation training loss: per-class binary cross-entropy plus soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bce_dice_loss"]


def bce_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """Mean BCE over pixels and classes + ``1 - soft Dice`` averaged over images and classes.

    Args:
        logits: ``[B, K, H, W]`` (any float dtype; computed in float32).
        target: ``[B, K, H, W]`` in [0, 1] (0/1 masks, or soft targets of a downsampled mask).
        eps: smoothing of the soft Dice (an empty truth with an all-low prediction gives
            Dice ~1, as the metric does).
        reduction: ``"mean"``: a scalar; ``"none"``: ``[K]``, each class's BCE mean plus its
            ``1 - Dice`` mean over images (their mean is the scalar).

    Multi-label (one sigmoid per class): ribs overlap where they cross in projection.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((0, 2, 3))
    p = torch.sigmoid(logits)
    inter = (p * target).sum((2, 3))
    denom = p.sum((2, 3)) + target.sum((2, 3))
    dice = (2 * inter + eps) / (denom + eps)  # [B, K]
    per_class = bce + (1 - dice).mean(0)
    return per_class if reduction == "none" else per_class.mean()
