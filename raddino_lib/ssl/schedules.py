"""Per-step schedules of the DINOv2 recipe (reference.md section 2), as numpy arrays.

Every schedule is an array with one value per optimiser step ``0 .. total_steps - 1``.
End points are exact: a linear warmup ``linspace(start, base, warmup_steps)`` ends on
``base`` at step ``warmup_steps - 1``; the cosine part starts at ``base`` and ends on
``final`` at the last step (DINOv2's own ``CosineScheduler`` stops one cosine step short of
``final``; here the cosine runs over ``n - 1`` intervals so that the last value is ``final``).
As in DINOv2 a warmup of ``W`` steps is ``linspace(start, base, W)``: ``W = 1`` is the single
value ``start``; in every case step ``W`` (the first cosine step) has the value ``base``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from raddino_lib.config import Config

__all__ = [
    "SSLSchedules",
    "build_schedules",
    "constant_schedule",
    "cosine_schedule",
    "last_layer_frozen",
    "last_layer_lr_schedule",
    "lr_schedule",
    "momentum_schedule",
    "scaled_lr",
    "teacher_temp_schedule",
    "weight_decay_schedule",
]


def _check_steps(total_steps: int, **others: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    for name, v in others.items():
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")


def cosine_schedule(
    base_value: float,
    final_value: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup_value: float = 0.0,
    freeze_steps: int = 0,
) -> np.ndarray:
    """``freeze_steps`` zeros, a linear warmup to ``base_value``, then a cosine to ``final_value``.

    Returns ``[total_steps]`` float64. Warmup/freeze longer than the run are truncated.
    """
    _check_steps(total_steps, warmup_steps=warmup_steps, freeze_steps=freeze_steps)
    freeze = np.zeros(min(freeze_steps, total_steps))
    warm = np.linspace(start_warmup_value, base_value, warmup_steps)
    n = total_steps - freeze_steps - warmup_steps
    if n <= 0:
        cos = np.zeros(0)
    elif n == 1:
        cos = np.array([final_value], dtype=float)
    else:
        t = np.arange(n) / (n - 1)
        cos = final_value + 0.5 * (base_value - final_value) * (1.0 + np.cos(np.pi * t))
        cos[0], cos[-1] = base_value, final_value
    return np.concatenate([freeze, warm, cos])[:total_steps].astype(np.float64)


def constant_schedule(value: float, total_steps: int) -> np.ndarray:
    _check_steps(total_steps)
    return np.full(total_steps, float(value))


def scaled_lr(base_lr: float, batch_size: int, reference_batch: int = 1024) -> float:
    """DINOv2's ``sqrt_wrt_1024`` rule: ``base_lr * sqrt(batch / 1024)`` (global batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return base_lr * math.sqrt(batch_size / reference_batch)


def lr_schedule(
    base_lr: float, min_lr: float, total_steps: int, warmup_steps: int, batch_size: int
) -> np.ndarray:
    """Linear warmup from 0 to ``scaled_lr(base_lr, batch)``, cosine down to ``min_lr``."""
    return cosine_schedule(scaled_lr(base_lr, batch_size), min_lr, total_steps, warmup_steps)


def last_layer_lr_schedule(
    base_lr: float,
    min_lr: float,
    total_steps: int,
    warmup_steps: int,
    batch_size: int,
    freeze_steps: int,
) -> np.ndarray:
    """DINOv2's ``last_layer_lr``: the lr schedule with its first ``freeze_steps`` set to 0.

    (Same values as :func:`lr_schedule` after the freeze, unlike DINOv2 which shifts the whole
    warmup+cosine by ``freeze_steps``; keeping the same curve is simpler to reason about.)
    """
    lr = lr_schedule(base_lr, min_lr, total_steps, warmup_steps, batch_size)
    lr[: min(freeze_steps, total_steps)] = 0.0
    return lr


def last_layer_frozen(step: int, freeze_steps: int) -> bool:
    """True while the DINO head's prototype layer must stay frozen (steps ``< freeze_steps``)."""
    return step < freeze_steps


def weight_decay_schedule(start: float, end: float, total_steps: int) -> np.ndarray:
    """Cosine from ``start`` (0.04) to ``end`` (0.4), no warmup."""
    return cosine_schedule(start, end, total_steps)


def momentum_schedule(start: float, end: float, total_steps: int) -> np.ndarray:
    """EMA teacher momentum: cosine from ``start`` (0.992) to ``end`` (1.0)."""
    return cosine_schedule(start, end, total_steps)


def teacher_temp_schedule(
    start: float, end: float, warmup_steps: int, total_steps: int
) -> np.ndarray:
    """Linear ``start`` (0.04) -> ``end`` (0.07) over ``warmup_steps`` (``end`` reached at step
    ``warmup_steps - 1``), then constant ``end``."""
    _check_steps(total_steps, warmup_steps=warmup_steps)
    out = np.full(total_steps, float(end))
    warm = np.linspace(start, end, warmup_steps)[:total_steps]
    out[: len(warm)] = warm
    return out


@dataclass(frozen=True)
class SSLSchedules:
    """All per-step schedules of one run (arrays of length ``total_steps``)."""

    lr: np.ndarray
    last_layer_lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_last_layer_steps: int

    @property
    def total_steps(self) -> int:
        return len(self.lr)

    def at(self, step: int) -> dict[str, float]:
        """The values at ``step`` (the last value for steps past the end)."""
        i = min(max(step, 0), self.total_steps - 1)
        return {
            "lr": float(self.lr[i]),
            "last_layer_lr": float(self.last_layer_lr[i]),
            "weight_decay": float(self.weight_decay[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
            "last_layer_frozen": last_layer_frozen(step, self.freeze_last_layer_steps),
        }


def build_schedules(cfg: Config, total_steps: int | None = None) -> SSLSchedules:
    """Schedules from the config's knobs (``pretrain_steps``, ``batch_size`` as global batch,
    ``base_lr``, ``min_lr``, ``warmup_steps``, ``weight_decay[_end]``, ``momentum_start/end``,
    ``teacher_temp[_end]``, ``teacher_temp_warmup_steps``, ``freeze_last_layer_steps``)."""
    n = cfg.pretrain_steps if total_steps is None else total_steps
    return SSLSchedules(
        lr=lr_schedule(cfg.base_lr, cfg.min_lr, n, cfg.warmup_steps, cfg.batch_size),
        last_layer_lr=last_layer_lr_schedule(
            cfg.base_lr,
            cfg.min_lr,
            n,
            cfg.warmup_steps,
            cfg.batch_size,
            cfg.freeze_last_layer_steps,
        ),
        weight_decay=weight_decay_schedule(cfg.weight_decay, cfg.weight_decay_end, n),
        momentum=momentum_schedule(cfg.momentum_start, cfg.momentum_end, n),
        teacher_temp=teacher_temp_schedule(
            cfg.teacher_temp, cfg.teacher_temp_end, cfg.teacher_temp_warmup_steps, n
        ),
        freeze_last_layer_steps=cfg.freeze_last_layer_steps,
    )
