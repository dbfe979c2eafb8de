"""SSL losses, one per module: DINO CLS loss, iBOT masked-patch loss, KoLeo."""

from __future__ import annotations

from raddino_lib.ssl.losses.dino import (
    CENTERING_MODES,
    DINOLoss,
    cross_entropy,
    dist_mean_,
    prototype_diagnostics,
    sinkhorn_knopp,
)
from raddino_lib.ssl.losses.ibot import IBOTPatchLoss, masked_weights
from raddino_lib.ssl.losses.koleo import KoLeoLoss, koleo_loss, koleo_loss_crops

__all__ = [
    "CENTERING_MODES",
    "DINOLoss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "cross_entropy",
    "dist_mean_",
    "koleo_loss",
    "koleo_loss_crops",
    "masked_weights",
    "prototype_diagnostics",
    "sinkhorn_knopp",
]
