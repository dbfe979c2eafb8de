"""Greedy decoding of reports (the paper: greedy, up to 150 new tokens, 32-bit).

Every sequence of a batch has the same prefix length (``[BOS]``, the prompt and the same
number of image tokens), so batches need no padding and batched greedy decoding gives the
tokens one-at-a-time decoding gives (up to floating-point reduction order). Decoding runs in
the model's own dtype without autocast (float32 for the small decoders), with the LM's
key-value cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from raddino_lib.report.model import ReportGenerator

__all__ = ["generate_reports", "greedy_decode"]


def _cache_arg(lm: torch.nn.Module) -> str:
    """The key-value cache's name in the LM's forward and output: ``cache`` (transformers
    >= 5.2x) or ``past_key_values`` (earlier)."""
    params = inspect.signature(lm.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def greedy_decode(
    model: ReportGenerator,
    features: torch.Tensor,
    prompt: Sequence[int],
    *,
    eos_id: int,
    max_new_tokens: int,
) -> torch.Tensor:
    """New token ids ``[B, <= max_new_tokens]`` for ``features [B, N, D]``.

    ``prompt`` is ``[BOS] + prompt ids`` with the image sentinel (``prompt_ids``). A row stops
    at its first ``eos_id`` (kept in the output); later positions hold ``eos_id``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    dev = next(model.parameters()).device
    b = len(features)
    ids = torch.tensor([list(prompt)] * b, dtype=torch.long, device=dev)
    s = model.splice(features.to(dev), ids)
    mask = s.attention_mask
    out = model.lm(inputs_embeds=s.inputs_embeds, attention_mask=mask, use_cache=True)
    name = _cache_arg(model.lm)
    past = getattr(out, name)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    tokens = []
    for t in range(max_new_tokens):
        nxt = out.logits[:, -1].float().argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        tokens.append(nxt)
        done |= nxt == eos_id
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(b, 1)], 1)
        out = model.lm(input_ids=nxt[:, None], attention_mask=mask, use_cache=True, **{name: past})
        past = getattr(out, name)
    return torch.stack(tokens, 1)


def _decode(tokenizer: Any, ids: torch.Tensor, eos_id: int) -> str:
    row = ids.tolist()
    if eos_id in row:
        row = row[: row.index(eos_id)]
    return " ".join(tokenizer.decode(row, skip_special_tokens=True).split())


def generate_reports(
    model: ReportGenerator,
    features: torch.Tensor,
    tokenizer: Any,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy reports for ``features [N, T, D]`` (text before the first EOS, whitespace
    collapsed), ``batch_size`` images at a time."""
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token")
    model.eval().to(device)
    out: list[str] = []
    for i in tqdm(range(0, len(features), batch_size), desc=desc, disable=not progress,
                  leave=False):  # fmt: skip
        f = features[i : i + batch_size].float()
        ids = greedy_decode(model, f, prompt, eos_id=eos, max_new_tokens=max_new_tokens)
        out.extend(_decode(tokenizer, r, eos) for r in ids.cpu())
    return out
