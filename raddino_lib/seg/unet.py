"""The end-to-end upper bound: a U-Net from segmentation-models-pytorch, trained from scratch.

The paper's best U-Net has an EfficientNet-B6 encoder; presets pick the EfficientNet-family
encoder by name (``seg_unet_encoder``: ``"efficientnet-b6"`` at ``paper``, timm's TinyNet-E
-- EfficientNet-B0 scaled to half width, 0.6 depth -- at ``laptop``). No pretrained weights
are ever loaded (``encoder_weights=None``), so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UNet"]


class UNet(nn.Module):
    """``[B, 1, S, S]`` images in [0, 1] -> ``[B, K, S, S]`` logits, any ``S`` (padded to a
    multiple of 32 inside, cropped back)."""

    def __init__(
        self,
        n_classes: int,
        encoder: str = "tu-tinynet_e",
        *,
        mean: float = 0.5,
        std: float = 0.25,
        decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
    ) -> None:
        super().__init__()
        try:
            import segmentation_models_pytorch as smp
        except ImportError as exc:  # pragma: no cover - pinned in requirements.lock
            raise ImportError(
                "the U-Net baseline needs segmentation-models-pytorch: "
                "pip install segmentation-models-pytorch"
            ) from exc
        try:
            self.net = smp.Unet(
                encoder_name=encoder,
                encoder_weights=None,
                in_channels=1,
                classes=n_classes,
                decoder_channels=tuple(decoder_channels),
            )
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"segmentation-models-pytorch could not build a U-Net with encoder {encoder!r}: "
                f"{exc}. Use a name from smp.encoders.get_encoder_names() or 'tu-<timm name>'"
            ) from exc
        self.encoder_name = encoder
        self.mean, self.std = mean, std

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        (x,) = inputs
        s = x.shape[-2:]
        ph, pw = (-s[0]) % 32, (-s[1]) % 32
        x = (x - self.mean) / self.std
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.net(x)[..., : s[0], : s[1]]
