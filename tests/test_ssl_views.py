"""Multi-crop views: shapes, counts, determinism, crop scales, flips."""

from __future__ import annotations

import time

import pytest
import torch

from raddino_lib.config import make_config
from raddino_lib.ssl.views import MultiCropViews, gaussian_blur

torch.set_num_threads(1)

H = W = 96


def _ramp(axis: str) -> torch.Tensor:
    r = torch.linspace(0.0, 1.0, W)
    return (
        r.view(1, 1, W).expand(1, H, W) if axis == "x" else r.view(1, H, 1).expand(1, H, W)
    ).clone()


def _plain(**kw: object) -> MultiCropViews:
    """No photometric change and no flips: geometry only."""
    base = dict(
        global_crop_size=64,
        local_crop_size=24,
        n_local_crops=3,
        flip_p=0.0,
        jitter_p=0.0,
        blur_p=(0.0, 0.0, 0.0),
    )
    base.update(kw)
    return MultiCropViews(**base)  # type: ignore[arg-type]


def test_shapes_counts_and_range() -> None:
    cfg = make_config("laptop")
    views = MultiCropViews.from_config(cfg)
    img = torch.rand(1, H, W, generator=torch.Generator().manual_seed(0))
    out = views(img, torch.Generator().manual_seed(0))
    assert len(out["global"]) == 2 and len(out["local"]) == cfg.n_local_crops
    gs, ls = cfg.global_crop_size, cfg.local_crop_size
    assert all(v.shape == (1, gs, gs) and v.dtype == torch.float32 for v in out["global"])
    assert all(v.shape == (1, ls, ls) for v in out["local"])
    assert all(
        float(v.min()) >= 0.0 and float(v.max()) <= 1.0 for v in out["global"] + out["local"]
    )
    with pytest.raises(ValueError, match="grayscale"):
        views(torch.rand(3, H, W))


def test_deterministic_given_generator() -> None:
    views = MultiCropViews(64, 24, 4)
    img = torch.rand(1, H, W, generator=torch.Generator().manual_seed(1))
    a = views(img, torch.Generator().manual_seed(7))
    b = views(img, torch.Generator().manual_seed(7))
    c = views(img, torch.Generator().manual_seed(8))
    for x, y in zip(a["global"] + a["local"], b["global"] + b["local"], strict=True):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(a["local"], c["local"], strict=True))


def test_crop_scale_and_content_match_box() -> None:
    views = _plain()
    sides_g, sides_l = [], []
    for seed in range(40):
        for axis in ("x", "y"):
            img = _ramp(axis)
            out = views(img, torch.Generator().manual_seed(seed), return_boxes=True)
            for crops, boxes in (
                (out["global"], out["global_boxes"]),
                (out["local"], out["local_boxes"]),
            ):
                for crop, box in zip(crops, boxes, strict=True):
                    start = box.left if axis == "x" else box.top
                    lo, hi = start / (W - 1), (start + box.side - 1) / (W - 1)
                    # a ramp stays a ramp: mean and end values match the source box
                    assert float(crop.mean()) == pytest.approx((lo + hi) / 2, abs=0.01)
                    prof = crop[0].mean(0) if axis == "x" else crop[0].mean(1)
                    assert float(prof[0]) == pytest.approx(lo, abs=1.5 / W)
                    assert float(prof[-1]) == pytest.approx(hi, abs=1.5 / W)
            sides_g += [b.side / W for b in out["global_boxes"]]
            sides_l += [b.side / W for b in out["local_boxes"]]
    assert 0.5 - 0.01 <= min(sides_g) and max(sides_g) <= 1.0
    assert 0.2 - 0.01 <= min(sides_l) and max(sides_l) <= 0.5 + 0.01
    assert max(sides_g) - min(sides_g) > 0.3 and max(sides_l) - min(sides_l) > 0.2  # really random


def test_flip_and_blur_probabilities() -> None:
    img = _ramp("x")
    out = _plain(flip_p=1.0)(img, torch.Generator().manual_seed(0), return_boxes=True)
    for crop in out["global"] + out["local"]:
        prof = crop[0].mean(0)
        assert float(prof[0]) > float(prof[-1])  # flipped ramp decreases
    # blur: global 2 rarely (0.1), global 1 and locals half the time
    views = MultiCropViews(32, 16, 4, flip_p=0.0, jitter_p=0.0)
    n, g1, g2, loc = 200, 0, 0, 0
    gen = torch.Generator().manual_seed(0)
    small = torch.rand(1, 32, 32, generator=gen)
    for _ in range(n):
        o = views(small, gen, return_boxes=True)
        g1 += o["global_boxes"][0].blurred
        g2 += o["global_boxes"][1].blurred
        loc += sum(b.blurred for b in o["local_boxes"])
    assert 0.4 < g1 / n < 0.6 and g2 / n < 0.2 and 0.4 < loc / (4 * n) < 0.6


def test_gaussian_blur_preserves_constant_and_mean() -> None:
    const = torch.full((1, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(const, 1.5), const, atol=1e-6)
    x = torch.rand(1, 20, 20, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(x, 1.0)
    assert y.shape == x.shape and y.std() < x.std()


def test_fast_enough_at_laptop_size() -> None:
    views = MultiCropViews.from_config(make_config("laptop"))
    img = torch.rand(1, H, W)
    gen = torch.Generator().manual_seed(0)
    views(img, gen)
    t0 = time.perf_counter()
    for _ in range(20):
        views(img, gen)
    assert (time.perf_counter() - t0) / 20 < 0.02  # < 20 ms per image (6 crops)
