"""Timing of one pretraining step at any preset on synthetic inputs (no dataset needed).

Used for the closing measurements (images/s at the laptop preset, one ViT-B/14 step at 518 on
a CPU) and by the performance chapter. The step is the real one: teacher and student forward,
DINO + iBOT + KoLeo, backward, clipping, AdamW, EMA.
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
from raddino_lib.ssl.meta_arch import SSLModel
from raddino_lib.ssl.train import resolve_device, resolve_precision

__all__ = ["StepTiming", "benchmark_step"]


@dataclass
class StepTiming:
    batch: int
    seconds_per_step: list[float]
    images_per_s: float
    peak_rss_gb: float
    device: str
    precision: str
    params_backbone: int


def benchmark_step(cfg: Config, batch: int, steps: int = 2, warmup: int = 1) -> StepTiming:
    """Time ``steps`` training steps of ``batch`` images (after ``warmup`` untimed ones)."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = SSLModel(cfg, spec_from_config(cfg)).to(device).train()
    fused = device.type == "cuda"
    model.student.backbone.set_fused_attention(fused)
    model.teacher.backbone.set_fused_attention(fused)
    opt = torch.optim.AdamW(model.student.parameters(), lr=1e-4)
    g, loc = cfg.global_crop_size, cfg.local_crop_size
    grid = g // cfg.patch_size
    data = PretrainBatch(
        torch.rand(2 * batch, 1, g, g),
        torch.rand(cfg.n_local_crops * batch, 1, loc, loc) if cfg.n_local_crops else None,
        sample_masks(2 * batch, grid, cfg.mask_sample_prob, cfg.mask_ratio, generator=0),
        torch.arange(batch).numpy(),
    ).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.step_losses(data, cfg.teacher_temp, autocast=autocast)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.student.parameters(), cfg.grad_clip)
        opt.step()
        model.update_teacher(0.996)
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
