"""Timing of one pretraining step at any preset on synthetic inputs (no dataset needed).

Used for the closing measurements (images/s at the laptop preset, one ViT-B/14 step at 518 on
a CPU) and by the performance chapter. The step is the training loop's own
(:func:`~raddino_lib.ssl.train.train_step`): teacher and student forward, DINO + iBOT + KoLeo,
backward, clipping, AdamW, EMA.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from raddino_lib.config import Config
from raddino_lib.models.backbone import spec_from_config
from raddino_lib.ssl.data import PretrainBatch
from raddino_lib.ssl.masking import sample_masks
from raddino_lib.ssl.schedules import build_schedules
from raddino_lib.ssl.train import build_model, resolve_device, resolve_precision, train_step

__all__ = ["StepTiming", "benchmark_step", "synthetic_batch"]


@dataclass
class StepTiming:
    batch: int
    seconds_per_step: list[float]
    images_per_s: float
    peak_rss_gb: float
    device: str
    precision: str
    params_backbone: int


def synthetic_batch(cfg: Config, batch: int, seed: int = 0) -> PretrainBatch:
    """A random multi-crop batch of ``batch`` images with the preset's crops and block masks:
    ``global_crops [2 * batch, 1, G, G]``, ``local_crops [n_local * batch, 1, L, L]`` or None,
    ``masks [2 * batch, (G / patch)^2]``."""
    gen = torch.Generator().manual_seed(seed)
    g, loc = cfg.global_crop_size, cfg.local_crop_size
    grid = g // cfg.patch_size
    return PretrainBatch(
        torch.rand(2 * batch, 1, g, g, generator=gen),
        torch.rand(cfg.n_local_crops * batch, 1, loc, loc, generator=gen)
        if cfg.n_local_crops
        else None,
        sample_masks(2 * batch, grid, cfg.mask_sample_prob, cfg.mask_ratio, generator=seed),
        torch.arange(batch).numpy(),
    )


def benchmark_step(cfg: Config, batch: int, steps: int = 2, warmup: int = 1) -> StepTiming:
    """Time ``steps`` training steps (:func:`raddino_lib.ssl.train.train_step`, the loop's own)
    of ``batch`` images after ``warmup`` untimed ones."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    spec = spec_from_config(cfg)
    model, opt = build_model(cfg, spec, device)
    model.train()
    sched = build_schedules(cfg).at(cfg.warmup_steps)  # peak lr, past the warm-up
    data = synthetic_batch(cfg, batch).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(model, opt, data, sched, autocast=autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return StepTiming(
        batch=batch,
        seconds_per_step=times,
        images_per_s=batch * len(times) / sum(times),
        peak_rss_gb=rss,
        device=str(device),
        precision=precision,
        params_backbone=sum(p.numel() for p in model.student.backbone.parameters()),
    )
