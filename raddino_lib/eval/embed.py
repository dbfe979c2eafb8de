"""Frozen-encoder embeddings of whole image arrays (batched, no grad, bf16 where supported).

Features for linear probes follow DINOv2's linear evaluation: the CLS token concatenated with
the mean of the patch tokens (``"cls+mean"``); ``"cls"`` alone is available too.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from raddino_lib.models.backbone import ViTBackbone

__all__ = ["FEATURE_KINDS", "embed_array", "probe_features"]

FEATURE_KINDS = ("cls", "cls+mean")


@torch.no_grad()
def embed_array(
    backbone: ViTBackbone,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Embed ``images [N, S, S]`` (float in [0, 1], ``S`` a multiple of the patch size).

    Returns:
        ``cls [N, D]`` and ``mean_patch [N, D]`` float32 arrays.
    """
    from raddino_lib.ssl.train import resolve_precision

    if images.ndim != 3:
        raise ValueError(f"expected images [N, S, S], got shape {images.shape}")
    device = torch.device(device)
    prec = resolve_precision(precision, device)
    was_training = backbone.training
    backbone.eval().to(device)
    backbone.set_fused_attention(device.type == "cuda")
    cls_out, mean_out = [], []
    try:
        for i in tqdm(
            range(0, len(images), batch_size), desc="embed", disable=not progress, leave=False
        ):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).float()
            x = x.unsqueeze(1).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                out = backbone.forward_tokens(x)
            cls_out.append(out["cls"].float().cpu().numpy())
            mean_out.append(out["patches"].float().mean(1).cpu().numpy())
    finally:
        backbone.train(was_training)
    return {"cls": np.concatenate(cls_out), "mean_patch": np.concatenate(mean_out)}


def probe_features(emb: dict[str, np.ndarray], kind: str = "cls+mean") -> np.ndarray:
    """``[N, D]`` (``"cls"``) or ``[N, 2D]`` (``"cls+mean"``) probe features."""
    if kind == "cls":
        return emb["cls"]
    if kind == "cls+mean":
        return np.concatenate([emb["cls"], emb["mean_patch"]], axis=1)
    raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {kind!r}")
