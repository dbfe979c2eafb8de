"""Image <-> report retrieval with a trained image-text model (no augmentation)."""

from __future__ import annotations

import torch

from raddino_lib.textsup.data import PairData
from raddino_lib.textsup.loss import clip_logits
from raddino_lib.textsup.model import ImageTextModel

__all__ = ["embed_pairs", "retrieval_accuracy"]


@torch.no_grad()
def embed_pairs(
    model: ImageTextModel, data: PairData, *, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings ``[N, E]`` (float32, CPU) of every pair of ``data``."""
    model.eval()
    dev = next(model.parameters()).device
    imgs, txts = [], []
    for s in range(0, len(data), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(data)))
        x = torch.stack([data.images[int(i)] for i in idx]).to(dev)
        ids, mask = data.tokens(idx)
        imgs.append(model.encode_image(x).float().cpu())
        txts.append(model.encode_text(ids.to(dev), mask.to(dev)).float().cpu())
    return torch.cat(imgs), torch.cat(txts)


def retrieval_accuracy(
    model: ImageTextModel, data: PairData, *, ks: tuple[int, ...] = (1, 5), batch_size: int = 256
) -> dict[str, float]:
    """Recall@k over all pairs of ``data``: image -> report among all reports and report ->
    image among all images; any image or report of the same study counts as a hit.

    Returns:
        ``{"i2t@1": ..., "t2i@1": ..., "n": N, "chance@1": mean fraction of positives}``.
    """
    img, txt = embed_pairs(model, data, batch_size=batch_size)
    logits = clip_logits(img, txt, 1.0)
    pos = data.positives(torch.arange(len(data)))
    out: dict[str, float] = {"n": float(len(data)), "chance@1": float(pos.float().mean())}
    for name, lg in (("i2t", logits), ("t2i", logits.T)):
        for k in ks:
            top = lg.topk(min(k, lg.shape[1]), dim=1).indices
            out[f"{name}@{k}"] = float(pos.gather(1, top).any(dim=1).float().mean())
    return out
