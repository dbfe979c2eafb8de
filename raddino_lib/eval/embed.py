"""Frozen-encoder embeddings of whole image arrays (batched, no grad, bf16 where supported).

Any :class:`~raddino_lib.models.registry.Encoder` (or a bare ``ViTBackbone``) works.

Features for linear probes follow DINOv2's linear evaluation: the CLS token concatenated with
the mean of the patch tokens (``"cls+mean"``); ``"cls"`` alone is available too. A raw-pixel
baseline keeps the image's layout, which those global features throw away, so
``"cls+mean+grid"`` adds the patch tokens average-pooled to a coarse ``g x g`` grid: the
spatial probe that is the fair match for pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from raddino_lib.allocator import reuse_freed_memory
from raddino_lib.models.backbone import ViTBackbone
from raddino_lib.models.registry import Encoder, ViTEncoder

__all__ = ["FEATURE_KINDS", "bf16_copy", "embed_array", "probe_features"]

M = TypeVar("M", bound=torch.nn.Module)

FEATURE_KINDS = ("cls", "cls+mean", "cls+mean+grid")


@torch.no_grad()
def embed_array(
    encoder: Encoder | ViTBackbone,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    grid: int = 0,
    layers: Sequence[int] = (),
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Embed ``images [N, S, S]`` (float in [0, 1]) with a frozen encoder.

    The encoder's own :class:`~raddino_lib.models.registry.Preprocess` resizes (when ``S``
    differs from its input side), repeats channels and normalises. Batches run without
    gradients, under bf16 autocast where the device supports it (``precision="auto"``).

    Returns:
        ``cls [N, D]`` and ``mean_patch [N, D]`` float32 arrays; with ``grid = g > 0``
        ``grid [N, g * g * D]`` (patch tokens average-pooled to ``g x g`` cells, row-major,
        channels last); for each requested block ``i``, ``layer_<i> [N, h, w, D]`` float16
        (full patch grids, for segmentation heads).
    """
    from raddino_lib.models.registry import load_encoder
    from raddino_lib.ssl.train import resolve_precision

    if images.ndim != 3:
        raise ValueError(f"expected images [N, S, S], got shape {images.shape}")
    enc = load_encoder(encoder)
    device = torch.device(device)
    prec = resolve_precision(precision, device)
    was_training = enc.training
    enc.eval().to(device)
    # bf16: a copy with bf16 parameters under autocast (no per-batch weight casts, a bf16
    # residual stream). ViT-B/14 at 518 px, batch 8, on the project's host, interleaved: 0.72
    # -> 0.66 s/img (1.10x); CLS cosine to fp32 0.99991 (autocast over fp32 weights 0.99997)
    run = bf16_copy(enc) if prec == "bf16" else enc
    if isinstance(run, ViTEncoder):
        # CPU: the plain kernel, which without gradients computes long sequences a few heads at
        # a time (models.attention): 1.2-1.4x faster than the fused CPU kernel from 65 to 1370
        # tokens on the project's host, where the fused one beat timm's all-heads plain form
        # from ~256 tokens on. GPU: fused.
        run.backbone.set_fused_attention(device.type == "cuda")
    out: dict[str, list[np.ndarray]] = {"cls": [], "mean_patch": []}
    if grid > 0:
        out["grid"] = []
    for i in layers:
        out[f"layer_{i}"] = []
    try:
        # large activations are reused, not page-faulted anew each batch (raddino_lib.allocator)
        with reuse_freed_memory():
            for i in tqdm(
                range(0, len(images), batch_size),
                desc=f"embed {getattr(enc, 'name', '')}".strip(),
                disable=not progress,
                leave=False,
            ):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).float()
                x = x.unsqueeze(1).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                    res = run.encode(x, layers)
                patches = res.patches.float()  # [B, h, w, D]
                out["cls"].append(res.cls.float().cpu().numpy())
                out["mean_patch"].append(patches.mean((1, 2)).cpu().numpy())
                if grid > 0:
                    pooled = F.adaptive_avg_pool2d(patches.permute(0, 3, 1, 2), grid)
                    out["grid"].append(pooled.permute(0, 2, 3, 1).reshape(len(x), -1).cpu().numpy())
                for li, t in zip(layers, res.layers, strict=True):
                    out[f"layer_{li}"].append(t.to(torch.float16).cpu().numpy())
    finally:
        enc.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def bf16_copy(enc: M) -> M:
    """A copy of ``enc`` (same device, eval mode) whose floating parameters are bf16; buffers
    (normalisation constants) stay as they are. The caller's module is not touched. Run it
    under bf16 autocast, which casts the (fp32) input to the first layer.

    Its linear layers are :class:`~raddino_lib.models.packed.PackedLinear` where this torch has
    oneDNN's fused linear op: on CPU without gradients, packed weights with the bias and an
    MLP's GELU fused (ViT-B/14 at 518 px on the project's host, freed memory reused, best of
    four interleaved rounds: 0.457 -> 0.425 s/img at batch 8, 0.462 -> 0.425 at batch 4; CLS
    cosine to fp32 0.999997 either way); elsewhere ``F.linear`` as before."""
    import copy

    from raddino_lib.models.packed import pack_linears, packed_linear_supported

    run = copy.deepcopy(enc)
    for p in run.parameters():
        if p.is_floating_point():
            p.data = p.data.to(torch.bfloat16)
    if packed_linear_supported():
        pack_linears(run)
    return run.eval()


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
