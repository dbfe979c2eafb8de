"""Self-supervised pretraining pieces (DINOv2 recipe), split by concern as DINOv2 is:

* :mod:`raddino_lib.ssl.heads` -- the DINO projection head;
* :mod:`raddino_lib.ssl.losses` -- DINO CLS loss, iBOT patch loss, KoLeo (one per file);
* :mod:`raddino_lib.ssl.masking` -- BEiT-style block masks for half of each batch;
* :mod:`raddino_lib.ssl.schedules` -- lr / weight decay / momentum / teacher temperature;
* :mod:`raddino_lib.ssl.views` -- multi-crop views of grayscale chest X-rays;
* :mod:`raddino_lib.ssl.data` -- which images, in which order, the deterministic batch of a step;
* :mod:`raddino_lib.ssl.meta_arch` -- student, EMA teacher and the losses of one step;
* :mod:`raddino_lib.ssl.optim` -- AdamW groups with layer-wise lr decay;
* :mod:`raddino_lib.ssl.checkpoint` -- atomic checkpoint folders;
* :mod:`raddino_lib.ssl.train` -- the loop (single process or torchrun), snapshots, resume;
* :mod:`raddino_lib.ssl.export` -- transformers export and the cached run of a config;
* :mod:`raddino_lib.ssl.bench` -- timing of one real step at any preset.
"""

from __future__ import annotations

from raddino_lib.ssl.heads import DINOHead
from raddino_lib.ssl.losses import (
    DINOLoss,
    IBOTPatchLoss,
    KoLeoLoss,
    koleo_loss,
    prototype_diagnostics,
    sinkhorn_knopp,
)
from raddino_lib.ssl.masking import MaskGenerator, sample_masks
from raddino_lib.ssl.schedules import SSLSchedules, build_schedules
from raddino_lib.ssl.views import MultiCropViews

__all__ = [
    "DINOHead",
    "DINOLoss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "MaskGenerator",
    "MultiCropViews",
    "SSLSchedules",
    "build_schedules",
    "koleo_loss",
    "prototype_diagnostics",
    "sample_masks",
    "sinkhorn_knopp",
]
