"""Schedule end points (exact) and shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raddino_lib.config import make_config
from raddino_lib.ssl.schedules import (
    build_schedules,
    cosine_schedule,
    last_layer_frozen,
    last_layer_lr_schedule,
    lr_schedule,
    momentum_schedule,
    scaled_lr,
    teacher_temp_schedule,
    weight_decay_schedule,
)


def test_cosine_with_warmup_end_points() -> None:
    s = cosine_schedule(1.0, 0.1, total_steps=100, warmup_steps=10)
    assert len(s) == 100
    assert s[0] == 0.0 and s[9] == 1.0 and s[10] == 1.0
    assert s[-1] == 0.1
    assert np.all(np.diff(s[:10]) > 0) and np.all(np.diff(s[10:]) < 0)
    # midpoint of the cosine: (base + final) / 2
    c = cosine_schedule(1.0, 0.0, total_steps=101)
    assert c[50] == pytest.approx(0.5)
    s = cosine_schedule(2.0, 0.5, 20, warmup_steps=5, start_warmup_value=1.0, freeze_steps=3)
    assert np.all(s[:3] == 0) and s[3] == 1.0 and s[7] == 2.0 and s[-1] == 0.5


def test_lr_scaling_and_schedule() -> None:
    assert scaled_lr(1e-3, 1024) == pytest.approx(1e-3)
    assert scaled_lr(1e-3, 256) == pytest.approx(5e-4)
    assert scaled_lr(1e-3, 640) == pytest.approx(1e-3 * math.sqrt(640 / 1024))
    lr = lr_schedule(1e-3, 1e-6, total_steps=50, warmup_steps=5, batch_size=256)
    assert lr[0] == 0.0 and lr[4] == pytest.approx(5e-4) and lr[-1] == 1e-6
    ll = last_layer_lr_schedule(1e-3, 1e-6, 50, 5, 256, freeze_steps=8)
    assert np.all(ll[:8] == 0) and np.array_equal(ll[8:], lr[8:])
    assert last_layer_frozen(7, 8) and not last_layer_frozen(8, 8)
    with pytest.raises(ValueError, match="batch_size"):
        scaled_lr(1e-3, 0)


def test_weight_decay_momentum_teacher_temp() -> None:
    wd = weight_decay_schedule(0.04, 0.4, 30)
    assert wd[0] == 0.04 and wd[-1] == 0.4 and np.all(np.diff(wd) > 0)
    m = momentum_schedule(0.992, 1.0, 30)
    assert m[0] == 0.992 and m[-1] == 1.0 and np.all(np.diff(m) >= 0)
    tt = teacher_temp_schedule(0.04, 0.07, warmup_steps=10, total_steps=30)
    assert tt[0] == 0.04 and tt[9] == 0.07 and np.all(tt[9:] == 0.07)
    assert tt[5] == pytest.approx(0.04 + 0.03 * 5 / 9)
    # warmup longer than the run: truncated, still starts at the start value
    assert teacher_temp_schedule(0.04, 0.07, 100, 10)[0] == 0.04


def test_build_from_presets() -> None:
    for preset in ("smoke", "laptop", "paper"):
        cfg = make_config(preset)
        s = build_schedules(cfg)
        n = cfg.pretrain_steps
        assert s.total_steps == n
        for arr in (s.lr, s.last_layer_lr, s.weight_decay, s.momentum, s.teacher_temp):
            assert arr.shape == (n,) and np.all(np.isfinite(arr))
        peak = scaled_lr(cfg.base_lr, cfg.batch_size)
        w = cfg.warmup_steps
        assert s.lr[0] == 0.0 and s.lr[w] == pytest.approx(peak)  # cosine starts at the peak
        if w >= 2:  # linspace(0, peak, w) ends on the peak (a 1-step warmup is just [0])
            assert s.lr[w - 1] == pytest.approx(peak)
        assert s.lr[-1] == cfg.min_lr
        assert s.momentum[0] == cfg.momentum_start and s.momentum[-1] == cfg.momentum_end
        assert s.weight_decay[-1] == cfg.weight_decay_end
        assert s.teacher_temp[0] == cfg.teacher_temp
        assert s.teacher_temp[min(cfg.teacher_temp_warmup_steps, n) - 1] == pytest.approx(
            cfg.teacher_temp_end
        )
        v = s.at(0)
        assert v["last_layer_frozen"] and v["last_layer_lr"] == 0.0
        assert s.at(10**9)["momentum"] == cfg.momentum_end
