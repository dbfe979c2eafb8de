"""AdamW parameter groups with DINOv2's layer-wise lr decay, patch-embed lr multiplier and
no weight decay on biases, norms and LayerScale gammas (``dinov2/utils/param_groups.py``).

Layer ids (``L`` = number of blocks): position / patch embeddings, class and mask tokens -> 0;
``blocks.i`` -> ``i + 1``; the final norm and the heads -> ``L + 1``. The lr multiplier of a
parameter is ``layer_decay ** (L + 1 - layer_id)``, times ``patch_embed_lr_mult`` for the patch
embedding. The DINO head's prototype layer is its own group (it follows the last-layer lr
schedule, which is zero while it is frozen).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["apply_schedule", "layer_id", "param_groups"]


def layer_id(name: str, n_layers: int, is_backbone: bool) -> int:
    """DINOv2's layer index of a parameter name (see the module doc)."""
    if not is_backbone:
        return n_layers + 1
    if name.startswith(("pos_embed", "patch_embed", "mask_token", "cls_token", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return n_layers + 1


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "norm" in name or "gamma" in name


def param_groups(
    named_modules: Iterable[tuple[str, nn.Module, bool]],
    n_layers: int,
    layer_decay: float,
    patch_embed_lr_mult: float,
) -> list[dict]:
    """Groups for ``torch.optim.AdamW``.

    Args:
        named_modules: ``(prefix, module, is_backbone)`` triples, e.g.
            ``[("backbone", student.backbone, True), ("dino_head", head, False)]``.
        n_layers: number of transformer blocks ``L``.

    Returns:
        list of dicts with ``params``, ``lr_mult``, ``wd_mult``, ``is_last_layer`` and
        ``names``; parameters with the same multipliers share a group, in a deterministic order.
    """
    groups: dict[tuple[float, float, bool], dict] = {}
    for prefix, module, is_backbone in named_modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            lr_mult = layer_decay ** (n_layers + 1 - layer_id(name, n_layers, is_backbone))
            if is_backbone and name.startswith("patch_embed"):
                lr_mult *= patch_embed_lr_mult
            wd_mult = 0.0 if _no_decay(name) else 1.0
            is_last = (not is_backbone) and name.startswith("last_layer")
            key = (round(lr_mult, 12), wd_mult, is_last)
            g = groups.setdefault(
                key,
                {
                    "params": [],
                    "names": [],
                    "lr_mult": lr_mult,
                    "wd_mult": wd_mult,
                    "is_last_layer": is_last,
                },
            )
            g["params"].append(p)
            g["names"].append(f"{prefix}.{name}")
    return [groups[k] for k in sorted(groups, key=lambda k: (k[2], -k[0], k[1]))]


def apply_schedule(
    optimizer: torch.optim.Optimizer, lr: float, last_layer_lr: float, weight_decay: float
) -> None:
    """Set every group's ``lr`` and ``weight_decay`` for this step."""
    for g in optimizer.param_groups:
        base = last_layer_lr if g["is_last_layer"] else lr
        g["lr"] = base * g["lr_mult"]
        g["weight_decay"] = weight_decay * g["wd_mult"]
