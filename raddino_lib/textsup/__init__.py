"""Text-supervised baseline: a CLIP-style encoder trained on image-report pairs.

The in-project stand-in for BioViL-T / BiomedCLIP. Its image tower has the architecture and
pixel normalisation of the DINOv2-style encoder, so frozen linear probes compare what the two
objectives learn: this one can only learn what the reports say.
"""

from __future__ import annotations

from raddino_lib.textsup.encoder import (
    TEXTSUP_VERSION,
    load_image_text_model,
    load_text_supervised,
    text_supervised_encoder,
    text_supervised_run_dir,
)
from raddino_lib.textsup.loss import clip_loss
from raddino_lib.textsup.model import ImageTextModel
from raddino_lib.textsup.train import ClipSummary, train_clip

__all__ = [
    "ClipSummary",
    "ImageTextModel",
    "TEXTSUP_VERSION",
    "clip_loss",
    "load_image_text_model",
    "load_text_supervised",
    "text_supervised_encoder",
    "text_supervised_run_dir",
    "train_clip",
]
