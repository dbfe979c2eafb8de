"""The encoder: a timm VisionTransformer with DINOv2's mask token.

Parameter names are timm's, which are DINOv2's original names (``cls_token``, ``pos_embed``,
``mask_token``, ``patch_embed.proj``, ``blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``), so DINOv2 state dicts load with no renaming and the
transformers ``Dinov2Model`` layout is one key map away (:mod:`raddino_lib.models.formats`).

Inputs are grayscale (or 3-channel) images in ``[0, 1]``; :meth:`ViTBackbone.preprocess`
normalises with ``(pixel_mean, pixel_std)`` and repeats the channel to 3, as RAD-DINO's image
processor does for its RGB-converted X-rays. Any side that is a multiple of the patch size is
accepted: position embeddings are resampled (bicubic, timm) for grids other than the native one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from raddino_lib.models.attention import Attention

__all__ = ["BackboneSpec", "ViTBackbone", "build_backbone", "spec_from_config"]


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of one encoder (everything needed to rebuild it from a state dict)."""

    image_size: int = 96
    patch_size: int = 8
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    layerscale_init: float = 1e-5
    pixel_mean: float = 0.5
    pixel_std: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def check(self) -> BackboneSpec:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.pixel_std <= 0:
            raise ValueError(f"pixel_std must be > 0, got {self.pixel_std}")
        return self


def spec_from_config(cfg: Any) -> BackboneSpec:
    """The :class:`BackboneSpec` of a :class:`raddino_lib.config.Config`."""
    return BackboneSpec(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        layerscale_init=cfg.layerscale_init,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
    ).check()


class ViTBackbone(VisionTransformer):
    """timm ViT (class token, LayerScale, qkv bias, dynamic image size) + ``mask_token [1, D]``.

    Forward for training: :meth:`forward_tokens` -> ``{"cls": [B, D], "patches": [B, N, D]}``
    (after the final LayerNorm), with optional masks ``[B, N]`` (True = replace that patch
    embedding by the mask token before position embeddings are added, as DINOv2 does).
    ``forward(x)`` returns the CLS embedding ``[B, D]``.
    """

    def __init__(self, spec: BackboneSpec, drop_path: float = 0.0) -> None:
        spec.check()
        super().__init__(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            in_chans=3,
            num_classes=0,
            global_pool="token",
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            qkv_bias=True,
            init_values=spec.layerscale_init,
            class_token=True,
            dynamic_img_size=True,
            drop_path_rate=drop_path,
            attn_layer=Attention,
        )
        self.spec = spec
        self.mask_token = nn.Parameter(torch.zeros(1, spec.embed_dim))
        self.register_buffer("pixel_mean", torch.tensor(float(spec.pixel_mean)), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(float(spec.pixel_std)), persistent=False)

    # -- attention kernel -------------------------------------------------------------
    def set_fused_attention(self, fused: bool) -> None:
        """Fused SDPA (GPU) or plain softmax attention (CPU: 2.45x faster backward, and in
        inference the cache-blocked form of :class:`~raddino_lib.models.attention.Attention`,
        1.2-1.4x faster than fused from 65 to 1370 tokens)."""
        for blk in self.blocks:
            blk.attn.fused_attn = bool(fused)

    # -- input --------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1 or 3, H, W]`` in [0, 1] -> normalised ``[B, 3, H, W]``."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images [B, 1 or 3, H, W], got {tuple(x.shape)}")
        p = self.spec.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(
                f"image side {tuple(x.shape[-2:])} is not a multiple of the patch size {p}"
            )
        x = (x - self.pixel_mean) / self.pixel_std
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        p = self.spec.patch_size
        return x.shape[-2] // p, x.shape[-1] // p

    # -- forward ------------------------------------------------------------------------
    def forward_tokens(
        self,
        x: torch.Tensor,
        masks: torch.Tensor | None = None,
        *,
        normalized: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Images ``[B, C, H, W]``, masks ``[B, N]`` -> CLS ``[B, D]``, patches ``[B, N, D]``.

        ``normalized=True`` skips :meth:`preprocess` (inputs already normalised, 3 channels).
        """
        if not normalized:
            x = self.preprocess(x)
        tok = self.patch_embed(x)  # [B, h, w, D] (dynamic size -> NHWC)
        if masks is not None:
            b, h, w, d = tok.shape
            if masks.shape != (b, h * w):
                raise ValueError(
                    f"masks must be [B, N] = {(b, h * w)} for this input, got {tuple(masks.shape)}"
                )
            m = masks.reshape(b, h, w, 1).to(tok.device)
            tok = torch.where(m, self.mask_token.to(tok.dtype).view(1, 1, 1, d), tok)
        tok = self._pos_embed(tok)
        tok = self.patch_drop(tok)
        tok = self.norm_pre(tok)
        tok = self.blocks(tok)
        tok = self.norm(tok)
        return {"cls": tok[:, 0], "patches": tok[:, self.num_prefix_tokens :]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_tokens(x)["cls"]

    def num_layers(self) -> int:
        return len(self.blocks)


def build_backbone(
    spec: BackboneSpec, drop_path: float = 0.0, seed: int | None = None
) -> ViTBackbone:
    """A randomly initialised backbone (timm's init; deterministic when ``seed`` is given)."""
    if seed is None:
        return ViTBackbone(spec, drop_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViTBackbone(spec, drop_path)
