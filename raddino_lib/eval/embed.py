"""Frozen-encoder embeddings of whole image arrays (batched, no grad, bf16 where supported).

Features for linear probes follow DINOv2's linear evaluation: the CLS token concatenated with
the mean of the patch tokens (``"cls+mean"``); ``"cls"`` alone is available too. A raw-pixel
baseline keeps the image's layout, which those global features throw away, so
``"cls+mean+grid"`` adds the patch tokens average-pooled to a coarse ``g x g`` grid: the
spatial probe that is the fair match for pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from raddino_lib.models.backbone import ViTBackbone

__all__ = ["FEATURE_KINDS", "embed_array", "probe_features"]

FEATURE_KINDS = ("cls", "cls+mean", "cls+mean+grid")


@torch.no_grad()
def embed_array(
    backbone: ViTBackbone,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    grid: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Embed ``images [N, S, S]`` (float in [0, 1], ``S`` a multiple of the patch size).

    Returns:
        ``cls [N, D]`` and ``mean_patch [N, D]`` float32 arrays, and with ``grid = g > 0``
        ``grid [N, g * g * D]``: patch tokens average-pooled to ``g x g`` cells (row-major
        cells, channels last).
    """
    from raddino_lib.ssl.train import resolve_precision

    if images.ndim != 3:
        raise ValueError(f"expected images [N, S, S], got shape {images.shape}")
    device = torch.device(device)
    prec = resolve_precision(precision, device)
    was_training = backbone.training
    backbone.eval().to(device)
    backbone.set_fused_attention(device.type == "cuda")
    cls_out, mean_out, grid_out = [], [], []
    try:
        for i in tqdm(
            range(0, len(images), batch_size), desc="embed", disable=not progress, leave=False
        ):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).float()
            x = x.unsqueeze(1).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                out = backbone.forward_tokens(x)
            patches = out["patches"].float()
            cls_out.append(out["cls"].float().cpu().numpy())
            mean_out.append(patches.mean(1).cpu().numpy())
            if grid > 0:
                h, w = backbone.grid(x)
                maps = patches.reshape(len(x), h, w, -1).permute(0, 3, 1, 2)
                pooled = torch.nn.functional.adaptive_avg_pool2d(maps, grid)
                grid_out.append(pooled.permute(0, 2, 3, 1).reshape(len(x), -1).cpu().numpy())
    finally:
        backbone.train(was_training)
    res = {"cls": np.concatenate(cls_out), "mean_patch": np.concatenate(mean_out)}
    if grid > 0:
        res["grid"] = np.concatenate(grid_out)
    return res


def probe_features(emb: dict[str, np.ndarray], kind: str = "cls+mean") -> np.ndarray:
    """``[N, D]`` (``"cls"``), ``[N, 2D]`` (``"cls+mean"``) or ``[N, (2 + g*g) D]``
    (``"cls+mean+grid"``, needs ``embed_array(..., grid=g)``) probe features."""
    if kind == "cls":
        return emb["cls"]
    if kind == "cls+mean":
        return np.concatenate([emb["cls"], emb["mean_patch"]], axis=1)
    if kind == "cls+mean+grid":
        if "grid" not in emb:
            raise ValueError("kind 'cls+mean+grid' needs embeddings from embed_array(grid=g)")
        return np.concatenate([emb["cls"], emb["mean_patch"], emb["grid"]], axis=1)
    raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {kind!r}")
