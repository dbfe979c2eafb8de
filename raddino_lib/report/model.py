"""The LLaVA-1.5 style generator: MLP projector, image-token splicing, the causal LM.

* :class:`Projector` -- ``Linear(d_vision, d_lm) -> GELU -> Linear(d_lm, d_lm)`` (LLaVA-1.5's
  ``mlp2x_gelu``), randomly initialised, applied to every patch token.
* :func:`splice_image_tokens` -- replaces the image sentinel (``IMAGE_TOKEN_INDEX``, -200)
  of each sequence by that image's projected tokens; image positions get label -100.
* :func:`build_small_lm` -- a GPT-2 or Llama-style decoder built from a config (no download).
* :func:`load_lm` -- any local transformers causal-LM folder (Vicuna-7B v1.5 in the paper).
* :class:`ReportGenerator` -- projector + LM; ``forward`` gives the LM's output with the loss
  over report tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raddino_lib.report.tokenizer import IMAGE_TOKEN_INDEX

__all__ = [
    "IGNORE_INDEX",
    "SMALL_LMS",
    "Projector",
    "ReportGenerator",
    "Spliced",
    "build_small_lm",
    "load_lm",
    "small_lm_attention",
    "splice_image_tokens",
]

IGNORE_INDEX = -100
"""Label of positions without loss (prompt, image tokens, padding)."""
SMALL_LMS = ("gpt2", "llama")
"""``rg_lm`` values that build a small decoder from scratch; anything else is a folder."""


class Projector(nn.Sequential):
    """``[..., d_vision] -> [..., d_lm]``: Linear, GELU, Linear (LLaVA-1.5)."""

    def __init__(self, d_vision: int, d_lm: int) -> None:
        super().__init__(nn.Linear(d_vision, d_lm), nn.GELU(), nn.Linear(d_lm, d_lm))
        self.d_vision, self.d_lm = d_vision, d_lm


@dataclass
class Spliced:
    """LM inputs with image tokens in place.

    Attributes:
        inputs_embeds: ``[B, L - 1 + N, d]``.
        attention_mask: ``[B, L - 1 + N]`` (1 on the image tokens).
        labels: ``[B, L - 1 + N]`` with -100 on the image tokens, or None.
        image_start: ``[B]`` index of each row's first image token.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    image_start: torch.Tensor


def splice_image_tokens(
    input_ids: torch.Tensor,
    image_embeds: torch.Tensor,
    embed_tokens: nn.Module,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> Spliced:
    """Put ``image_embeds [B, N, d]`` where each row of ``input_ids [B, L]`` holds the sentinel.

    Every row must hold exactly one :data:`~raddino_lib.report.tokenizer.IMAGE_TOKEN_INDEX`;
    the other ids are embedded with ``embed_tokens``. The result is ``L - 1 + N`` long for
    every row (no re-padding needed). ``attention_mask`` (default all ones) gets ones on the
    image tokens; ``labels`` get :data:`IGNORE_INDEX` there.

    Raises:
        ValueError: a row without the sentinel or with more than one, or mismatched shapes.
    """
    if input_ids.ndim != 2 or image_embeds.ndim != 3 or len(input_ids) != len(image_embeds):
        raise ValueError(
            f"expected input_ids [B, L] and image_embeds [B, N, d], got {tuple(input_ids.shape)} "
            f"and {tuple(image_embeds.shape)}"
        )
    is_img = input_ids == IMAGE_TOKEN_INDEX
    counts = is_img.sum(1)
    if not bool((counts == 1).all()):
        bad = [int(i) for i in torch.nonzero(counts != 1).flatten()[:5]]
        raise ValueError(
            f"every sequence needs exactly one image placeholder ({IMAGE_TOKEN_INDEX}); rows "
            f"{bad} have {[int(counts[i]) for i in bad]}"
        )
    b, n = image_embeds.shape[:2]
    pos = is_img.float().argmax(1)  # [B]
    text = embed_tokens(input_ids.masked_fill(is_img, 0))  # [B, L, d]
    img = image_embeds.to(text.dtype)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    embeds, masks, labs = [], [], []
    for i in range(b):
        p = int(pos[i])
        embeds.append(torch.cat([text[i, :p], img[i], text[i, p + 1 :]]))
        ones = attention_mask.new_ones(n)
        masks.append(torch.cat([attention_mask[i, :p], ones, attention_mask[i, p + 1 :]]))
        if labels is not None:
            ign = labels.new_full((n,), IGNORE_INDEX)
            labs.append(torch.cat([labels[i, :p], ign, labels[i, p + 1 :]]))
    return Spliced(
        inputs_embeds=torch.stack(embeds),
        attention_mask=torch.stack(masks),
        labels=torch.stack(labs) if labels is not None else None,
        image_start=pos,
    )


def build_small_lm(
    kind: str,
    vocab_size: int,
    *,
    width: int,
    depth: int,
    heads: int,
    max_positions: int,
    dropout: float = 0.1,
    bos_id: int = 2,
    eos_id: int = 3,
    pad_id: int = 0,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised decoder: ``"gpt2"`` (GPT2LMHeadModel) or ``"llama"``
    (LlamaForCausalLM, SwiGLU width 8/3 x ``width`` rounded to 32), tied input/output
    embeddings, built from a config (nothing is downloaded).

    ``dropout`` applies to the embeddings and the residual branches; attention weights get
    none (as in Llama): on this CPU the attention-probability dropout alone took 30% of a
    training step of the laptop decoder. ``attn_implementation`` is transformers' (see
    :func:`small_lm_attention`)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if width % heads:
        raise ValueError(f"rg_width {width} must be a multiple of rg_heads {heads}")
    special = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    if kind == "gpt2":
        conf = GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=width, n_layer=depth,
            n_head=heads, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=0.0,
            tie_word_embeddings=True, **special,
        )  # fmt: skip
        conf._attn_implementation = attn_implementation
        return GPT2LMHeadModel(conf)
    if kind == "llama":
        inter = max(32, int(round(8 * width / 3 / 32)) * 32)
        conf = LlamaConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=inter,
            num_hidden_layers=depth, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=max_positions, attention_dropout=0.0,
            tie_word_embeddings=True, **special,
        )  # fmt: skip
        conf._attn_implementation = attn_implementation
        return LlamaForCausalLM(conf)
    raise ValueError(f"small LM kind must be one of {SMALL_LMS}, got {kind!r}")


def small_lm_attention(device: torch.device | str) -> str:
    """The attention kernel of the small decoders, chosen by measurement: ``"eager"`` on CPU
    (a laptop generator's training step, 16 reports of about 140 tokens, width 128: 0.117 s
    eager against 0.156 s with PyTorch's fused SDPA, whose backward is slow on this CPU for
    short sequences), ``"sdpa"`` elsewhere."""
    return "eager" if torch.device(device).type == "cpu" else "sdpa"


def load_lm(
    folder: str | Path, *, dtype: torch.dtype | None = None, attn_implementation: str | None = None
) -> nn.Module:
    """A causal LM from a local transformers folder (``config.json`` + weights); never
    downloads. ``dtype`` None keeps float32; ``attn_implementation`` None: transformers'
    default."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"rg_lm={str(folder)!r} is neither one of {SMALL_LMS} nor a local transformers "
            "causal-LM folder (no config.json there); point rg_lm at e.g. a vicuna-7b-v1.5 folder"
        )
    from transformers.utils import logging as hf_logging

    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["dtype"] = dtype
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar per cached generator
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), **kw)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class ReportGenerator(nn.Module):
    """Projector + causal LM. The image encoder is not part of it: it takes patch tokens."""

    def __init__(self, projector: Projector, lm: nn.Module) -> None:
        super().__init__()
        self.projector = projector
        self.lm = lm

    @property
    def d_lm(self) -> int:
        return int(self.lm.get_input_embeddings().embedding_dim)

    def splice(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Spliced:
        """``features [B, N, d_vision]`` projected and spliced into ``input_ids [B, L]``."""
        img = self.projector(features.to(self.projector[0].weight.dtype))
        return splice_image_tokens(
            input_ids, img, self.lm.get_input_embeddings(), attention_mask, labels
        )

    def forward(  # type: ignore[override]
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """The LM's output on the spliced sequence (``loss``: mean cross-entropy over the
        positions whose label is not -100, i.e. the report tokens and EOS)."""
        s = self.splice(features, input_ids, attention_mask, labels)
        return self.lm(
            inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask, labels=s.labels,
            use_cache=False,
        )  # fmt: skip
