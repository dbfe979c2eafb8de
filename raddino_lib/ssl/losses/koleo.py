"""KoLeo regulariser (Sablayrolles et al. 2019; DINOv2 ``koleo_loss.py``).

``L = -mean_i log(min_{j != i} ||x_i - x_j|| + eps)`` on L2-normalised vectors, nearest
neighbour within the batch. DINOv2 applies it to the student backbone CLS tokens of each global
crop separately (never between two crops of the same image) and **sums** the per-crop values,
times the weight 0.1 (reference.md says "mean over global crops"; DINOv2's code sums over the 2
crops -- :func:`koleo_loss_crops` offers both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KoLeoLoss", "koleo_loss", "koleo_loss_crops"]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo loss of one batch ``x [B, D]`` (B >= 2) -> scalar (float32).

    Vectors are L2-normalised first; the nearest neighbour is found by the largest dot product
    (same as the smallest distance on the sphere) with the diagonal excluded, and the distance
    itself is differentiable.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo_loss needs [B, D] with B >= 2, got {tuple(x.shape)}")
    z = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = z @ z.t()
        dots.fill_diagonal_(-2.0)  # below any cosine
        nn_idx = dots.argmax(dim=1)
    dist = (z - z[nn_idx]).norm(dim=-1)
    return -torch.log(dist + eps).mean()


def koleo_loss_crops(
    cls_tokens: torch.Tensor, n_crops: int, reduction: str = "sum", eps: float = 1e-8
) -> torch.Tensor:
    """KoLeo per crop on crop-major ``cls_tokens [n_crops * B, D]``, reduced over crops.

    ``reduction="sum"`` is DINOv2's code; ``"mean"`` is reference.md's wording.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if cls_tokens.shape[0] % n_crops:
        raise ValueError(f"{cls_tokens.shape[0]} rows do not split into {n_crops} crops")
    vals = torch.stack([koleo_loss(c, eps) for c in cls_tokens.chunk(n_crops)])
    return vals.sum() if reduction == "sum" else vals.mean()


class KoLeoLoss(nn.Module):
    """Module wrapper of :func:`koleo_loss`: ``[B, D] -> scalar``."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return koleo_loss(x, self.eps)
