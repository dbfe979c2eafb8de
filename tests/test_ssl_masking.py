"""Block masking: statistics, share of masked images, contiguity, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raddino_lib.ssl.masking import MaskGenerator, sample_masks


def _neighbour_share(mask: np.ndarray) -> float:
    """Share of masked patches with at least one masked 4-neighbour."""
    p = np.pad(mask, 1)
    nb = p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return float((mask & nb).sum() / max(mask.sum(), 1))


def test_half_of_the_batch_masked_with_ratios_in_range() -> None:
    b, grid = 16, 12
    n = grid * grid
    fracs = []
    for seed in range(30):
        m = sample_masks(b, grid, mask_sample_prob=0.5, ratio=(0.1, 0.5), generator=seed)
        assert m.shape == (b, n) and m.dtype == torch.bool
        assert int(m.any(1).sum()) == b // 2  # exactly half the images
        f = m.float().mean(1)
        f = f[f > 0]
        # never more than the upper ratio; block granularity and int() may undershoot 0.1
        assert float(f.max()) <= 0.5
        assert float(f.min()) >= int(0.1 * n) / n - 0.03
        fracs.append(np.sort(f.numpy()))
    # linspace scheme: the i-th smallest ratio sits in the i-th of 8 bins over [0.1, 0.5]
    mean_sorted = np.mean(fracs, axis=0)
    mids = np.linspace(0.1, 0.5, 9)[:-1] + 0.025
    assert np.all(np.abs(mean_sorted - mids) < 0.04), mean_sorted


def test_configured_share_and_zero_share() -> None:
    m = sample_masks(20, 8, mask_sample_prob=0.25, generator=0)
    assert int(m.any(1).sum()) == 5
    assert not sample_masks(6, 8, mask_sample_prob=0.0, generator=0).any()
    with pytest.raises(ValueError, match="ratio"):
        sample_masks(4, 8, ratio=(0.5, 0.1))


def test_blocks_are_contiguous_rectangles() -> None:
    gen = MaskGenerator(14, 14)
    rng = np.random.default_rng(0)
    for _ in range(50):  # one block on an empty grid is a filled rectangle of >= 3 patches
        mask = np.zeros((14, 14), dtype=bool)
        added = gen._mask(mask, 40, rng)
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert added == mask.sum() == box >= 3
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert max(h / w, w / h) <= 3.4 * 2  # aspect within rounding of [0.3, 3.3]
    shares = []
    for seed in range(20):
        m = sample_masks(8, 14, generator=seed).reshape(8, 14, 14).numpy()
        shares += [_neighbour_share(x) for x in m if x.any()]
    assert np.mean(shares) > 0.95  # blocks, not scattered patches
    # a random scatter of the same density would have far fewer neighbours
    scatter = np.random.default_rng(0).random((14, 14)) < 0.3
    assert _neighbour_share(scatter) < 0.7


def test_never_exceeds_target() -> None:
    gen = MaskGenerator(10, 10)
    rng = np.random.default_rng(1)
    for target in (1, 5, 13, 37, 50):
        for _ in range(10):
            assert gen(target, rng).sum() <= target


def test_deterministic_given_seed_or_generator() -> None:
    a = sample_masks(16, 8, generator=123)
    assert torch.equal(a, sample_masks(16, 8, generator=123))
    assert not torch.equal(a, sample_masks(16, 8, generator=124))
    t1 = sample_masks(16, 8, generator=torch.Generator().manual_seed(5))
    t2 = sample_masks(16, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(t1, t2)
    n1 = sample_masks(16, (6, 9), generator=np.random.default_rng(7))
    n2 = sample_masks(16, (6, 9), generator=np.random.default_rng(7))
    assert n1.shape == (16, 54) and torch.equal(n1, n2)
    with pytest.raises(TypeError, match="generator"):
        sample_masks(4, 8, generator="seed")  # type: ignore[arg-type]
