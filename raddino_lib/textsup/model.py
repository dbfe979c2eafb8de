"""The image-text model of the text-supervised baseline (CLIP-style two towers).

* image tower: the project's :class:`~raddino_lib.models.backbone.ViTBackbone` with the very
  architecture and pixel normalisation of the DINOv2-style encoder (``spec_from_config``), its
  CLS token ``[B, D]`` projected by ``Linear(D, E, bias=False)``;
* text tower: a transformers ``CLIPTextModel`` (causal transformer, pooled at the first
  ``[EOS]``) of ``text_width`` / ``text_depth`` / ``text_heads``, projected by
  ``Linear(text_width, E, bias=False)``;
* a learnable temperature: ``log_scale`` starts at ``log(1 / 0.07)``; the logit multiplier is
  ``exp(min(log_scale, log(100)))`` as in CLIP.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raddino_lib.models.backbone import BackboneSpec, ViTBackbone, build_backbone, spec_from_config

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from raddino_lib.config import Config

__all__ = ["INIT_LOG_SCALE", "MAX_LOG_SCALE", "ImageTextModel", "TextSpec"]

INIT_LOG_SCALE = math.log(1 / 0.07)
MAX_LOG_SCALE = math.log(100.0)


@dataclass(frozen=True)
class TextSpec:
    """Text tower and projection size (everything beyond the image spec needed to rebuild)."""

    vocab_size: int
    width: int
    depth: int
    heads: int
    max_len: int
    proj_dim: int
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class ImageTextModel(nn.Module):
    """Two towers and a temperature.

    ``forward(images [B, 1, S, S] in [0, 1], input_ids [B, L], attention_mask [B, L])`` ->
    ``(image_emb [B, E], text_emb [B, E], logit_scale [])`` with unnormalised embeddings and the
    exponentiated, clamped scale (feed them to :func:`raddino_lib.textsup.loss.clip_loss`).
    """

    def __init__(self, spec: BackboneSpec, text: TextSpec, drop_path: float = 0.0) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        if text.eos_id == 2:
            # transformers' CLIP pools at argmax(input_ids) when eos_token_id == 2 (legacy)
            raise ValueError("eos_id 2 selects CLIP's legacy pooling; use the tokenizer's [EOS]")
        self.spec = spec
        self.text_spec = text
        self.image = build_backbone(spec, drop_path=drop_path)
        self.image_proj = nn.Linear(spec.embed_dim, text.proj_dim, bias=False)
        tcfg = CLIPTextConfig(
            vocab_size=text.vocab_size,
            hidden_size=text.width,
            intermediate_size=4 * text.width,
            projection_dim=text.proj_dim,
            num_hidden_layers=text.depth,
            num_attention_heads=text.heads,
            max_position_embeddings=text.max_len,
            hidden_act="gelu",
            pad_token_id=text.pad_id,
            bos_token_id=text.bos_id,
            eos_token_id=text.eos_id,
        )
        self.text = CLIPTextModel(tcfg)
        self.text_proj = nn.Linear(text.width, text.proj_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=spec.embed_dim**-0.5)
        nn.init.normal_(self.text_proj.weight, std=text.width**-0.5)
        self.log_scale = nn.Parameter(torch.tensor(INIT_LOG_SCALE))

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: PreTrainedTokenizerFast) -> ImageTextModel:
        """The model of ``cfg`` (image spec, ``text_*``, ``clip_proj_dim``, ``vocab_size``,
        ``drop_path``) with the special-token ids of ``tokenizer``.

        Raises:
            ValueError: the tokenizer's vocabulary is larger than ``cfg.vocab_size``.
        """
        if len(tokenizer) > cfg.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but vocab_size is {cfg.vocab_size}; "
                "raise vocab_size or train the tokenizer with vocab_size=cfg.vocab_size"
            )
        text = TextSpec(
            vocab_size=cfg.vocab_size,
            width=cfg.text_width,
            depth=cfg.text_depth,
            heads=cfg.text_heads,
            max_len=cfg.text_max_len,
            proj_dim=cfg.clip_proj_dim,
            pad_id=int(tokenizer.pad_token_id),
            bos_id=int(tokenizer.bos_token_id),
            eos_id=int(tokenizer.eos_token_id),
        )
        return cls(spec_from_config(cfg), text, drop_path=cfg.drop_path)

    def set_fused_attention(self, fused: bool) -> None:
        """Fused SDPA in the image tower (GPU) or plain attention (faster on CPU)."""
        self.image.set_fused_attention(fused)

    def logit_scale(self) -> torch.Tensor:
        """The logit multiplier ``exp(min(log_scale, log 100))`` (scalar)."""
        return self.log_scale.clamp(max=MAX_LOG_SCALE).exp()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 1 or 3, S, S]`` in [0, 1] -> ``[B, E]`` (projected CLS, not normalised)."""
        return self.image_proj(self.image.forward_tokens(images)["cls"])

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids (each row holds an ``[EOS]``) + mask -> ``[B, E]``."""
        if input_ids.shape[1] > self.text_spec.max_len:
            raise ValueError(
                f"{input_ids.shape[1]} tokens exceed text_max_len={self.text_spec.max_len}; "
                "tokenize with truncation=True, max_length=text_max_len"
            )
        pooled = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_proj(pooled)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            self.encode_image(images),
            self.encode_text(input_ids, attention_mask),
            self.logit_scale(),
        )

    def image_backbone(self) -> ViTBackbone:
        """A detached copy of the image tower (eval mode, CPU, no drop path)."""
        bb = ViTBackbone(self.spec)
        bb.load_state_dict(self.image.state_dict())
        return bb.eval()
