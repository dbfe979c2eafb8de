"""Self-attention for the encoder: timm's module plus a cache-blocked kernel for CPU inference.

timm's :class:`~timm.layers.attention.Attention` has two kernels: the fused
``scaled_dot_product_attention`` and plain softmax attention (``q @ k^T``, softmax, ``@ v``
over all heads at once). On the 2-core CPU hosts of this project neither is fast at long
sequences without a backward pass: the plain kernel writes the whole ``[B, H, N, N]`` score
tensor (180 MB at ViT-B/14, 518 px, batch 4) and reads it back twice, and the fused CPU
flash kernel ran at 160 GFLOP/s there, a fifth of the bf16 matmul peak.

:class:`Attention` adds a third, used only where no gradient is needed and the plain kernel's
score tensor would not stay in cache: the same plain attention, computed for a few heads at a
time from strided views of the ``qkv`` projection, with the score block sized to stay in
cache (:data:`SCORE_BLOCK_BYTES`) and the softmax written in place. Its outputs are those of
timm's plain kernel, bit for bit (the same matmuls and softmax on the same numbers, only
fewer rows at a time; ``tests/test_attention_kernel.py`` checks it).

Measured on the project's AMD EPYC 2-vCPU host (avx512_bf16, no AMX; torch 2.14, bf16,
inference), attention of ViT-B/14 at 518 px (1370 tokens, 12 heads, batch 4), per layer:
fused 144 ms, plain 173 ms, blocked one head at a time 58 ms (2 heads 62 ms, 4 heads 65 ms,
8 heads 105 ms: the score block leaves the 2 MB L2 and then the 32 MB L3). Where the score
tensor fits (short sequences, small batches) and whenever autograd records the graph, the
module runs timm's kernels unchanged, so training is not affected.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers.attention import Attention as TimmAttention
from torch import nn

__all__ = [
    "HF_BLOCKED",
    "SCORE_BLOCK_BYTES",
    "Attention",
    "blocked_attention",
    "blocked_heads",
    "heads_per_block",
    "hf_blocked_attention",
    "register_hf_blocked",
]

SCORE_BLOCK_BYTES = 4 << 20
"""Largest score block ``[g, N, N]`` the blocked kernel computes at once (4 MiB: one head at
1370 tokens in bf16)."""


def heads_per_block(n_tokens: int, itemsize: int, budget: int | None = None) -> int:
    """How many heads' ``[N, N]`` score matrices fit in ``budget`` bytes (at least 1;
    default :data:`SCORE_BLOCK_BYTES`, read at call time)."""
    budget = SCORE_BLOCK_BYTES if budget is None else budget
    return max(1, budget // (n_tokens * n_tokens * itemsize))


def blocked_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, heads: int
) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T * scale) v``, ``heads`` heads at a time.

    Args:
        q, k, v: ``[B, H, N, D]``, any strides whose last dimension is contiguous (views of a
            projection's output, so no copies are made).
        scale: multiplies ``q`` before ``q @ k^T`` (``D ** -0.5``), as timm does.
        heads: heads per score block ``g`` (:func:`heads_per_block`); from ``H`` on, whole
            images (``g // H`` of them) a block.

    Returns:
        ``[B, N, H, D]`` (contiguous), the layout both timm and transformers reshape to
        ``[B, N, H * D]`` before the output projection. Same dtype as ``q``.
    """
    if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"expected q, k, v of one shape [B, H, N, D], got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, H, N, D = q.shape
    out = q.new_empty(B, N, H, D)
    if heads >= H:  # short sequences: whole images at a time, as timm computes them
        per = heads // H
        for b in range(0, B, per):
            x = ((q[b : b + per] * scale) @ k[b : b + per].transpose(-2, -1)).softmax(-1)
            out[b : b + per] = (x @ v[b : b + per]).transpose(1, 2)
        return out
    g = max(1, int(heads))
    if g == 1:  # one head a block: 2-D matmuls read the strided q/k/v views and write into
        # ``out`` in place (bmm copied each head's k^T and v, and wrote y through a copy)
        s2 = q.new_empty(N, N)
        for b in range(B):
            q_b = q[b] * scale  # [H, N, D]
            for h in range(H):
                torch.mm(q_b[h], k[b, h].t(), out=s2)
                torch.softmax(s2, -1, out=s2)
                torch.mm(s2, v[b, h], out=out[b, :, h])
        return out
    scores = q.new_empty(g, N, N)
    y = q.new_empty(g, N, D)
    for b in range(B):
        q_b = q[b] * scale  # [H, N, D]
        for h in range(0, H, g):
            n = min(g, H - h)
            s = scores[:n]
            torch.bmm(q_b[h : h + n], k[b, h : h + n].transpose(1, 2), out=s)
            torch.softmax(s, -1, out=s)  # row by row, so in place is safe
            torch.bmm(s, v[b, h : h + n], out=y[:n])
            out[b, :, h : h + n] = y[:n].transpose(0, 1)
    return out


def blocked_attention(qkv: torch.Tensor, num_heads: int, scale: float, heads: int) -> torch.Tensor:
    """:func:`blocked_heads` from timm's fused ``qkv`` projection.

    Args:
        qkv: ``[B, N, 3 * C]``, the output of the ``qkv`` linear layer (q, k, v in that
            order, each ``C = num_heads * head_dim`` wide, head-major), as timm lays it out.
        num_heads: ``H``.
        scale: multiplies ``q`` before ``q @ k^T`` (``head_dim ** -0.5``).
        heads: heads per score block (:func:`heads_per_block`).

    Returns:
        ``[B, N, C]``: the heads concatenated as timm does before the output projection.
    """
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(
            f"expected qkv [B, N, 3 * C] with C divisible by {num_heads} heads, "
            f"got shape {tuple(qkv.shape)}"
        )
    B, N, C3 = qkv.shape
    q, k, v = qkv.view(B, N, 3, num_heads, C3 // 3 // num_heads).permute(2, 0, 3, 1, 4)
    return blocked_heads(q, k, v, scale, heads).view(B, N, C3 // 3)


def _compute_itemsize(x: torch.Tensor) -> int:
    """Bytes per element of the scores: the autocast dtype's where autocast is on."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device).itemsize
    return x.element_size()


class Attention(TimmAttention):
    """timm's attention (same parameters and state-dict names) with the blocked kernel.

    ``fused_attn`` keeps its meaning (True: ``scaled_dot_product_attention``). With it False,
    the forward is timm's plain kernel, except that without autograd, with no mask, gate,
    QK-norm, attention dropout or hook on ``attn_drop`` (which reads the probabilities that
    the blocked kernel never holds whole), and where the plain kernel's ``[B, H, N, N]``
    scores would exceed :data:`SCORE_BLOCK_BYTES`, it is :func:`blocked_attention` (same
    outputs, faster).
    """

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if self.fused_attn or not self._blockable(attn_mask, is_causal):
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, _ = x.shape
        g = heads_per_block(N, _compute_itemsize(x))
        if g >= B * self.num_heads:  # timm's one-shot scores fit in cache: nothing to gain
            return super().forward(x)
        out = blocked_attention(self.qkv(x), self.num_heads, self.scale, g)
        return self.proj_drop(self.proj(self.norm(out)))

    def _blockable(self, attn_mask: torch.Tensor | None, is_causal: bool) -> bool:
        return (
            not torch.is_grad_enabled()
            and attn_mask is None
            and not is_causal
            and getattr(self, "gate", None) is None
            and isinstance(self.q_norm, nn.Identity)
            and isinstance(self.k_norm, nn.Identity)
            and not (self.training and self.attn_drop.p > 0)
            # a hook on attn_drop reads the probabilities (viz.attention): give it timm's path
            and not self.attn_drop._forward_hooks
            and not self.attn_drop._forward_pre_hooks
        )


# ------------------------------------------------------------------ transformers models
HF_BLOCKED = "raddino_blocked"
"""The name :func:`register_hf_blocked` gives the kernel in transformers' attention registry."""


def hf_blocked_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function (``Dinov2Model``, CLIP): :func:`blocked_heads` on CPU
    without gradients, mask or dropout where the scores would leave the cache; transformers'
    SDPA otherwise (GPU, training, short sequences). ``query`` etc. ``[B, H, N, D]``; returns
    ``([B, N, H, D], None)`` as transformers' functions do."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    B, H, N, D = query.shape
    g = heads_per_block(N, query.element_size())
    if (
        query.device.type != "cpu"
        or torch.is_grad_enabled()
        or attention_mask is not None
        or dropout
        or kwargs.get("is_causal")
        or key.shape != query.shape
        or g >= B * H
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scale = D**-0.5 if scaling is None else float(scaling)
    return blocked_heads(query, key, value, scale, g), None


def register_hf_blocked() -> str:
    """Register :func:`hf_blocked_attention` with transformers (idempotent); returns its name,
    for ``model.set_attn_implementation``."""
    from transformers import AttentionInterface

    AttentionInterface.register(HF_BLOCKED, hf_blocked_attention)
    return HF_BLOCKED
