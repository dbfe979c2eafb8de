"""Segmentation training loss: per-class binary cross-entropy plus soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bce_dice_loss"]


def bce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.0,
    reduction: str = "mean",
    dice_over: str = "image",
) -> torch.Tensor:
    """Mean BCE over pixels and classes + ``1 - soft Dice`` averaged over classes.

    Args:
        logits: ``[B, K, H, W]`` (any float dtype; computed in float32).
        target: ``[B, K, H, W]`` in [0, 1] (0/1 masks, or soft targets of a downsampled mask).
        eps: smoothing of the soft Dice (an empty truth with an all-low prediction gives
            Dice ~1, as the metric does).
        reduction: ``"mean"``: a scalar; ``"none"``: ``[K]``, each class's BCE mean plus its
            ``1 - Dice`` (their mean is the scalar).
        dice_over: ``"image"``: soft Dice per image and class, averaged over the images;
            ``"batch"``: one soft Dice per class over all pixels of the batch. Per image, the
            many images without a small structure (pneumothorax, a chest tube) each reward an
            all-empty prediction, and together with BCE they can hold a head at "nothing
            anywhere"; over the batch, an image without the structure only adds its false
            positives to the denominator, so the few positive images drive the gradient.

    Multi-label (one sigmoid per class): ribs overlap where they cross in projection.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if dice_over not in ("image", "batch"):
        raise ValueError(f"dice_over must be 'image' or 'batch', got {dice_over!r}")
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((0, 2, 3))
    p = torch.sigmoid(logits)
    dims = (0, 2, 3) if dice_over == "batch" else (2, 3)
    inter = (p * target).sum(dims)
    denom = p.sum(dims) + target.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)  # [B, K] per image, [K] over the batch
    per_class = bce + (1 - dice if dice_over == "batch" else (1 - dice).mean(0))
    return per_class if reduction == "none" else per_class.mean()
