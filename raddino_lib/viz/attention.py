"""Last-layer self-attention of any registry encoder, and the CLS attention maps (Figure A.2).

The attention probabilities are read out of the running model without changing what it
computes:

* timm ViTs (this project's backbone, ``timm:`` encoders): a forward hook on the last block's
  ``attn.attn_drop`` module, which receives the softmax probabilities in timm's explicit
  attention path. That path is switched on for the one call (``fused_attn = False``) and
  restored afterwards; it computes the same output as the fused kernel up to rounding.
* transformers ``Dinov2Model`` / CLIP vision towers: ``output_attentions=True`` with the
  eager attention implementation for the one call (the SDPA kernels return no
  probabilities), restored afterwards.

Raw pixels and CNNs have no self-attention: they raise :class:`EncoderError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from raddino_lib.models.registry import (
    Encoder,
    EncoderError,
    HFCLIPEncoder,
    HFDinov2Encoder,
    TimmEncoder,
    ViTEncoder,
)

__all__ = [
    "attention_figure",
    "cls_attention",
    "head_concentration",
    "head_table",
    "region_focus",
    "last_layer_attention",
    "mask_share",
]


def _timm_vit(encoder: Encoder) -> torch.nn.Module:
    if isinstance(encoder, ViTEncoder):
        return encoder.backbone
    if isinstance(encoder, TimmEncoder) and encoder.is_vit:
        return encoder.model
    raise EncoderError(
        f"{encoder.name} ({encoder.kind}) has no self-attention to show: attention maps need "
        "a ViT (this project's runs, timm ViTs, transformers Dinov2/CLIP)"
    )


@contextmanager
def _timm_probabilities(vit: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    attn = vit.blocks[-1].attn
    drop = getattr(attn, "attn_drop", None)
    if drop is None or not hasattr(attn, "fused_attn"):
        raise EncoderError(
            f"{type(attn).__name__}: not a timm Attention with an attn_drop module; cannot read "
            "its attention probabilities"
        )
    seen: list[torch.Tensor] = []
    handle = drop.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    fused = attn.fused_attn
    attn.fused_attn = False
    try:
        yield seen
    finally:
        attn.fused_attn = fused
        handle.remove()


@contextmanager
def _eager(model: torch.nn.Module) -> Iterator[None]:
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


@torch.no_grad()
def last_layer_attention(encoder: Encoder, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Self-attention probabilities of the encoder's last block.

    Args:
        encoder: a registry encoder with self-attention.
        images: grayscale ``[B, 1, H, W]`` in ``[0, 1]`` (resized by the encoder's own
            preprocessing).

    Returns:
        ``(attn [B, heads, N, N], prefix)``: row ``i`` is token ``i``'s distribution over all
        ``N = prefix + h * w`` tokens (rows sum to 1); the first ``prefix`` tokens are the
        class token (and registers), the rest the patch grid in row-major order.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be [B, 1, H, W] grayscale, got {tuple(images.shape)}")
    x = encoder.preprocess.apply(images)
    h, w = x.shape[-2] // encoder.patch_size, x.shape[-1] // encoder.patch_size
    if isinstance(encoder, HFDinov2Encoder | HFCLIPEncoder):
        model = encoder.model
        with _eager(model):
            kwargs = {}
            if isinstance(encoder, HFCLIPEncoder):
                kwargs["interpolate_pos_encoding"] = x.shape[-1] != encoder._native
            out = model(pixel_values=x, output_attentions=True, **kwargs)
        attn = out.attentions[-1].float()
    else:
        vit = _timm_vit(encoder)
        with _timm_probabilities(vit) as seen:
            encoder.forward_features(x)
        if len(seen) != 1:
            raise EncoderError(
                f"{encoder.name}: expected one attention call in the last block, saw {len(seen)}"
            )
        attn = seen[0].float()
    prefix = attn.shape[-1] - h * w
    if prefix < 0:
        raise EncoderError(f"{encoder.name}: {attn.shape[-1]} tokens for a {h}x{w} patch grid")
    return attn, prefix


def cls_attention(encoder: Encoder, images: torch.Tensor, *, renorm: bool = True) -> torch.Tensor:
    """The class token's last-layer attention over the patch grid, per head.

    Args:
        encoder: a registry encoder with self-attention.
        images: grayscale ``[B, 1, H, W]`` in ``[0, 1]``.
        renorm: divide by the mass on patches, so each head's map sums to 1 over the grid
            (the class token's attention to itself and to registers is dropped).

    Returns:
        ``[B, heads, h, w]`` at the encoder's full patch grid.
    """
    attn, prefix = last_layer_attention(encoder, images)
    x_side = encoder.preprocess.image_size
    h = w = x_side // encoder.patch_size
    maps = attn[:, :, 0, prefix:]
    if renorm:
        maps = maps / maps.sum(-1, keepdim=True).clamp_min(1e-12)
    return maps.reshape(attn.shape[0], attn.shape[1], h, w)


def head_concentration(maps: np.ndarray | torch.Tensor, top: float = 0.1) -> np.ndarray:
    """Share of each head's attention that falls on its top ``top`` fraction of patches.

    Args:
        maps: ``[B, heads, h, w]`` CLS maps normalised over the grid (:func:`cls_attention`).

    Returns:
        ``[heads]`` mean over images; ``top`` for a uniform map, 1.0 for a one-patch map.
    """
    m = torch.as_tensor(maps).flatten(2)
    k = max(1, round(top * m.shape[-1]))
    share = m.topk(k, dim=-1).values.sum(-1) / m.sum(-1).clamp_min(1e-12)
    return share.mean(0).numpy()


def mask_share(maps: np.ndarray | torch.Tensor, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of each head's attention falls inside a region, against the region's area.

    Args:
        maps: ``[B, heads, h, w]`` CLS maps normalised over the grid.
        masks: ``[B, S, S]`` boolean region masks (e.g. both lungs), any ``S`` that is a
            multiple of the grid.

    Returns:
        ``(share [B, heads], area [B])``: attention mass inside the region (each patch
        weighted by the fraction of it the region covers) and the region's area fraction;
        ``share / area > 1`` means the head concentrates on the region.
    """
    m = torch.as_tensor(maps, dtype=torch.float32)
    h, w = m.shape[-2:]
    frac = torch.nn.functional.adaptive_avg_pool2d(
        torch.as_tensor(np.asarray(masks), dtype=torch.float32)[:, None], (h, w)
    )  # [B, 1, h, w]
    share = (m * frac).sum((-2, -1)) / m.sum((-2, -1)).clamp_min(1e-12)
    return share.numpy(), frac.mean((1, 2, 3)).numpy()


def region_focus(encoder: Encoder, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per head, the CLS attention inside a region relative to the region's area.

    Args:
        encoder: a registry encoder with self-attention.
        images: ``[B, S, S]`` grayscale in ``[0, 1]``.
        masks: ``[B, S, S]`` boolean regions (e.g. both lungs).

    Returns:
        ``[heads]``: mean over images of :func:`mask_share` divided by the area (1.0: no
        preference for the region).
    """
    maps = cls_attention(encoder, torch.from_numpy(np.asarray(images, np.float32))[:, None])
    share, area = mask_share(maps, masks)
    return (share / np.maximum(area, 1e-12)[:, None]).mean(0)


def head_table(values: dict[str, np.ndarray], digits: int = 3) -> pd.DataFrame:
    """``{encoder: [heads]}`` -> a table with one column per head and their mean."""
    return pd.DataFrame(
        {
            n: {f"head {i}": float(x) for i, x in enumerate(v)} | {"mean": float(np.mean(v))}
            for n, v in values.items()
        }  # fmt: skip
    ).T.round(digits)


def attention_figure(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    *,
    heads: Sequence[int] | None = None,
    alpha: float = 0.55,
    cmap: str = "inferno",
) -> Figure:
    """Figure A.2: rows = encoders, columns = images x (mean over heads, then each head).

    Args:
        images: ``[M, H, W]`` grayscale images in ``[0, 1]``.
        maps: ``{encoder name: [M, heads, h, w]}`` CLS attention (any grid; upsampled to the
            image with nearest-patch blocks so the model's grid stays visible).
        heads: which heads to show after the mean (default: all).
    """
    names = list(maps)
    n_img = len(images)
    n_heads = max(m.shape[1] for m in maps.values())
    show = list(heads) if heads is not None else list(range(n_heads))
    cols = n_img * (1 + len(show))
    fig, axes = plt.subplots(
        len(names), cols, figsize=(1.35 * cols, 1.45 * len(names) + 0.3), squeeze=False
    )
    for r, name in enumerate(names):
        m = maps[name]
        for i in range(n_img):
            panels = [("mean", m[i].mean(0))] + [
                (f"head {k}", m[i, k]) for k in show if k < m.shape[1]
            ]
            for j, (title, a) in enumerate(panels):
                ax = axes[r, i * (1 + len(show)) + j]
                img = images[i]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.imshow(
                    a / max(float(a.max()), 1e-12),
                    cmap=cmap,
                    alpha=alpha,
                    extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5),
                    interpolation="nearest",
                    vmin=0,
                    vmax=1,
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"image {i + 1}: {title}", fontsize=7)
                if j == 0 and i == 0:
                    ax.set_ylabel(name, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig
