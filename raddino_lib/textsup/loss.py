"""The CLIP objective: symmetric InfoNCE over an in-batch image-text similarity matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["clip_logits", "clip_loss", "clip_targets", "retrieval_hits"]


def clip_logits(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Scaled cosine similarities ``[B, B]``: row ``i`` is image ``i`` against every text.

    Args:
        image_emb: ``[B, E]`` image embeddings (any norm; L2-normalised here).
        text_emb: ``[B, E]`` text embeddings of the paired reports, same order.
        logit_scale: the multiplier (the *exponentiated* learnable scale, e.g. ``1 / 0.07``).
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            "image_emb and text_emb must both be [B, E] with the same shape, got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=img.dtype, device=img.device)
    return scale * img @ txt.T


def clip_targets(positives: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
    """Target distribution ``[B, B]``: the identity, or uniform over each row's ``positives``.

    ``positives`` ``[B, B]`` bool marks pairs that count as matches (e.g. a frontal and a
    lateral image of one study share a report); its diagonal must be True and it must be
    symmetric, so the same matrix serves both directions.
    """
    if positives is None:
        return torch.eye(b, device=device)
    if positives.shape != (b, b):
        raise ValueError(f"positives must be [B, B] = {(b, b)}, got {tuple(positives.shape)}")
    pos = positives.to(device=device, dtype=torch.bool)
    if not bool(pos.diagonal().all()) or not bool((pos == pos.T).all()):
        raise ValueError("positives must be symmetric with a True diagonal (each pair matches)")
    t = pos.float()
    return t / t.sum(dim=1, keepdim=True)


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): the mean of the image->text and text->image cross-entropies
    of :func:`clip_logits`; the target of row ``i`` is column ``i`` (or uniform over
    ``positives[i]``, see :func:`clip_targets`). Returns a float32 scalar.

    Identical embeddings everywhere give ``log(B)``; perfectly separated pairs with a large
    ``logit_scale`` give ~0.
    """
    logits = clip_logits(image_emb, text_emb, logit_scale)
    targets = clip_targets(positives, logits.shape[0], logits.device)
    i2t = F.cross_entropy(logits, targets)
    t2i = F.cross_entropy(logits.T, targets)
    return 0.5 * (i2t + t2i)


def retrieval_hits(logits: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]`` bool: row ``i``'s highest-scoring column is one of its matches (top-1 hit)."""
    best = logits.argmax(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    if positives is None:
        return best == rows
    return positives.to(logits.device)[rows, best].bool()
