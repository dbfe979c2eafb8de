"""BEiT-style block masking for the iBOT branch (DINOv2 ``masking.py`` + ``collate.py``).

:class:`MaskGenerator` places random rectangles on the ``grid_h x grid_w`` patch grid until
the requested number of patches is masked: each rectangle has a target area drawn uniformly in
``[min_num_patches, remaining]`` (remaining capped by ``max_num_patches``) and an aspect ratio
log-uniform in ``[min_aspect, 1 / min_aspect] = [0.3, 3.33]``; a rectangle is kept only if it
adds at least one new patch without overshooting the target (10 tries per rectangle). The
result never exceeds the target and may fall short of it when no rectangle fits (small grids).
Rounding ``h, w`` can give a rectangle of 3 patches (e.g. 1 x 3), and the last one may be
smaller than ``min_num_patches`` when fewer patches remain -- exactly as in BEiT / DINOv2.

:func:`sample_masks` masks ``int(B * mask_sample_prob)`` images of a batch of ``B``: image ``i``
of those gets a target ratio drawn uniformly in ``[r_i, r_{i+1}]`` of
``linspace(ratio_min, ratio_max, n_masked + 1)`` (so the ratios spread evenly over
``[0.1, 0.5]``), target patches ``int(N * ratio)``; the list of masks is then shuffled.
All randomness comes from the given generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MaskGenerator", "as_numpy_rng", "sample_masks"]


def as_numpy_rng(
    generator: torch.Generator | np.random.Generator | int | None,
) -> np.random.Generator:
    """A numpy Generator from a torch Generator (one draw from it), a numpy one, or a seed."""
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return np.random.default_rng(seed)
    if generator is None or isinstance(generator, int | np.integer):
        return np.random.default_rng(generator)
    raise TypeError(
        f"generator must be a torch.Generator, numpy Generator, int seed or None, "
        f"got {type(generator).__name__}"
    )


class MaskGenerator:
    """Block masks on a ``grid_h x grid_w`` patch grid.

    Args:
        grid_h, grid_w: patch grid (``image_size // patch_size`` each).
        min_num_patches: smallest target area of one block (4).
        max_num_patches: largest target area of one block; default ``0.5 * N`` (DINOv2).
        min_aspect: aspect ratios are log-uniform in ``[min_aspect, max_aspect]`` (0.3).
        max_aspect: default ``1 / min_aspect``.

    Call: ``gen(num_masking_patches, rng) -> np.ndarray [grid_h, grid_w] bool``.
    """

    def __init__(
        self,
        grid_h: int,
        grid_w: int,
        min_num_patches: int = 4,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        if grid_h < 1 or grid_w < 1:
            raise ValueError(f"grid must be positive, got {grid_h} x {grid_w}")
        if not 0 < min_aspect:
            raise ValueError(f"min_aspect must be > 0, got {min_aspect}")
        self.height, self.width = int(grid_h), int(grid_w)
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = (
            int(0.5 * self.num_patches) if max_num_patches is None else max_num_patches
        )
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def __repr__(self) -> str:
        return (
            f"MaskGenerator({self.height}x{self.width}, min={self.min_num_patches}, "
            f"max={self.max_num_patches}, log_aspect={self.log_aspect_ratio})"
        )

    def _mask(self, mask: np.ndarray, max_mask_patches: int, rng: np.random.Generator) -> int:
        """Try (10 times) to add one rectangle; returns the number of newly masked patches."""
        delta = 0
        for _ in range(10):
            # like random.uniform(a, b): b < a allowed (fewer patches left than the minimum)
            lo, hi = self.min_num_patches, max_mask_patches
            target_area = lo + (hi - lo) * rng.random()
            aspect_ratio = math.exp(rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = int(rng.integers(0, self.height - h + 1))
                left = int(rng.integers(0, self.width - w + 1))
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= max_mask_patches:
                    block[...] = True
                    delta += new
            if delta > 0:
                break
        return delta

    def __call__(
        self, num_masking_patches: int = 0, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            remaining = min(num_masking_patches - count, self.max_num_patches)
            delta = self._mask(mask, remaining, rng)
            if delta == 0:
                break
            count += delta
        return mask


def sample_masks(
    batch: int,
    grid: int | tuple[int, int],
    mask_sample_prob: float = 0.5,
    ratio: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | np.random.Generator | int | None = None,
    mask_generator: MaskGenerator | None = None,
) -> torch.Tensor:
    """Masks for a batch of ``batch`` images (DINOv2's collate scheme).

    Args:
        batch: number of images ``B`` that go through the student with masks (in DINOv2 the
            two global crops of every image, i.e. ``2 * batch_size``).
        grid: patch grid side or ``(grid_h, grid_w)``; ``N = grid_h * grid_w``.
        mask_sample_prob: share of images that get a mask: exactly ``int(B * prob)`` of them.
        ratio: ``(min, max)`` masked fraction, spread over the masked images by linspace.
        generator: torch / numpy generator or int seed (deterministic given it).
        mask_generator: reuse a :class:`MaskGenerator` (default: one for ``grid``).

    Returns:
        ``[B, N]`` bool tensor, True = masked, patches in row-major order.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    if not 0.0 <= mask_sample_prob <= 1.0:
        raise ValueError(f"mask_sample_prob must be in [0, 1], got {mask_sample_prob}")
    lo, hi = ratio
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"ratio must satisfy 0 <= min <= max <= 1, got {ratio}")
    gen = mask_generator or MaskGenerator(gh, gw)
    if (gen.height, gen.width) != (gh, gw):
        raise ValueError(f"mask_generator is {gen.height}x{gen.width}, grid is {gh}x{gw}")
    rng = as_numpy_rng(generator)
    n = gh * gw
    n_masked = int(batch * mask_sample_prob)
    probs = np.linspace(lo, hi, n_masked + 1)
    masks = [gen(int(n * rng.uniform(probs[i], probs[i + 1])), rng) for i in range(n_masked)]
    masks += [np.zeros((gh, gw), dtype=bool) for _ in range(batch - n_masked)]
    order = rng.permutation(batch)
    out = np.stack([masks[i] for i in order]).reshape(batch, n) if batch else np.zeros((0, n), bool)
    return torch.from_numpy(out)
