"""DINO projection head (DINOv2 ``dino_head.py``), reference.md section 2.

Layout (the parameter names match DINOv2's, so its state dicts load):

    mlp.0  Linear(in_dim, hidden_dim) - GELU -
    mlp.2  Linear(hidden_dim, hidden_dim) - GELU -
    mlp.4  Linear(hidden_dim, bottleneck_dim)
    L2 normalise
    last_layer  weight-normed Linear(bottleneck_dim, n_prototypes, bias=False), magnitude g = 1

With the magnitude fixed to 1 every prototype (a row of the effective last-layer weight) is a
unit vector, so the logits are cosine similarities in [-1, 1] between the bottleneck feature and
the prototypes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead"]


def _build_mlp(n_layers: int, in_dim: int, bottleneck_dim: int, hidden_dim: int) -> nn.Sequential:
    if n_layers == 1:
        return nn.Sequential(nn.Linear(in_dim, bottleneck_dim))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
    for _ in range(n_layers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
    layers.append(nn.Linear(hidden_dim, bottleneck_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """MLP -> L2 norm -> unit-norm prototypes.

    Args:
        in_dim: backbone feature width ``D``.
        n_prototypes: number of prototypes ``K`` (DINOv2: 65536).
        hidden_dim: MLP hidden width (DINOv2: 2048).
        bottleneck_dim: width before the prototype layer (DINOv2: 256).
        n_layers: number of Linear layers in the MLP (DINOv2: 3).

    Forward: ``x`` of shape ``[..., D]`` -> logits ``[..., K]`` (each in [-1, 1]).

    The last layer can be frozen for the first steps (DINOv2 freezes it for the first epoch):
    call :meth:`cancel_last_layer_grads` after ``backward()`` and before ``optimizer.step()``,
    or set ``head.freeze_last_layer = True`` and call :meth:`apply_freeze` at the same point.
    """

    def __init__(
        self,
        in_dim: int,
        n_prototypes: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
    ) -> None:
        super().__init__()
        for name, v in {
            "in_dim": in_dim,
            "n_prototypes": n_prototypes,
            "hidden_dim": hidden_dim,
            "bottleneck_dim": bottleneck_dim,
            "n_layers": n_layers,
        }.items():
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DINOHead: {name} must be a positive int, got {v!r}")
        self.in_dim = in_dim
        self.n_prototypes = n_prototypes
        self.bottleneck_dim = bottleneck_dim
        self.mlp = _build_mlp(n_layers, in_dim, bottleneck_dim, hidden_dim)
        self.apply(self._init_weights)
        last = nn.Linear(bottleneck_dim, n_prototypes, bias=False)
        nn.init.trunc_normal_(last.weight, std=0.02)
        self.last_layer = weight_norm(last)  # dim=0: one magnitude per prototype row
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(False)
        self.freeze_last_layer = False
        self._register_load_state_dict_pre_hook(self._rename_legacy_weight_norm)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @staticmethod
    def _rename_legacy_weight_norm(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Accept DINOv2 / RAD-DINO keys ``last_layer.weight_g`` / ``last_layer.weight_v``."""
        for old, new in (("weight_g", "original0"), ("weight_v", "original1")):
            key = f"{prefix}last_layer.{old}"
            if key in state_dict:
                state_dict[f"{prefix}last_layer.parametrizations.weight.{new}"] = state_dict.pop(
                    key
                )

    @property
    def prototypes(self) -> torch.Tensor:
        """Effective prototype matrix ``[K, bottleneck_dim]`` (rows of unit norm)."""
        return self.last_layer.weight

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> L2-normalised bottleneck features ``[..., bottleneck_dim]``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"DINOHead expects features of width {self.in_dim}, got shape {tuple(x.shape)}"
            )
        z = self.mlp(x)
        eps = 1e-6 if z.dtype in (torch.float16, torch.bfloat16) else 1e-12
        return nn.functional.normalize(z, dim=-1, p=2, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., D]`` -> prototype logits ``[..., K]``."""
        return self.last_layer(self.bottleneck(x))

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the prototype layer (the direction ``original1``)."""
        return [p for p in self.last_layer.parameters() if p.requires_grad]

    def cancel_last_layer_grads(self) -> None:
        """Drop the prototype layer's gradients (``grad = None``, as DINOv2 does).

        With ``grad`` None, AdamW skips the parameter entirely: no update, no weight decay, no
        moment update, so the prototypes stay exactly where they were.
        """
        for p in self.last_layer.parameters():
            p.grad = None

    def apply_freeze(self) -> None:
        """Call after ``backward()``: cancels last-layer grads while ``freeze_last_layer``."""
        if self.freeze_last_layer:
            self.cancel_last_layer_grads()
