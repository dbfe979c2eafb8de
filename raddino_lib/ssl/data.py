"""Pretraining data: which images, in which order, and the multi-crop batch of one step.

Determinism is by construction, not by saved RNG state: the images of step ``s`` are a pure
function of ``(seed, s)`` (a seeded permutation per epoch), every crop of the image at global
batch position ``j`` draws from a generator seeded with ``(seed, s, j)``, and the block masks of
the whole global batch from ``(seed, s)``. A run resumed at step ``s`` therefore sees exactly
the batches an uninterrupted run sees, and a rank of a ``K``-process run sees its slice of the
single-process global batch (``torchrun`` gives the same first-step loss as one process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raddino_lib.config import Config
from raddino_lib.ssl.masking import MaskGenerator, sample_masks
from raddino_lib.ssl.views import MultiCropViews

__all__ = [
    "BatchStream",
    "PretrainBatch",
    "PretrainImages",
    "batch_positions",
    "make_batch",
    "select_pretrain_records",
    "step_seed",
]

# Images held in memory up to this many bytes (float32 at the encoder's side); beyond it they
# are read from disk per item (paper scale).
IN_MEMORY_LIMIT = 4 * 1024**3


def step_seed(seed: int, step: int, *extra: int) -> int:
    """A 63-bit seed from ``(seed, step, *extra)`` (numpy SeedSequence hashing)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), *[int(e) for e in extra]])
    return int.from_bytes(ss.generate_state(2, dtype=np.uint32).tobytes(), "little") >> 1


def select_pretrain_records(records: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The rows pretraining uses: split ``train``, optionally only ``cfg.cohorts``, frontal
    views only when ``cfg.frontal_only``, at most ``cfg.max_images`` (a seeded choice of whole
    subjects' images, so the data-size ablation keeps subjects intact)."""
    df = records[records["split"] == "train"]
    if cfg.cohorts:
        unknown = sorted(set(cfg.cohorts) - set(records["cohort"].unique()))
        if unknown:
            raise ValueError(
                f"cohorts {unknown} are not in this dataset (it has "
                f"{sorted(records['cohort'].unique())})"
            )
        df = df[df["cohort"].isin(cfg.cohorts)]
    if cfg.frontal_only:
        df = df[df["view"].isin(["PA", "AP"])]
    if cfg.max_images is not None and len(df) > cfg.max_images:
        counts = df.groupby("subject_id", sort=True).size()
        order = counts.index[np.random.default_rng(cfg.seed).permutation(len(counts))]
        n_subjects = int(np.searchsorted(counts[order].cumsum().to_numpy(), cfg.max_images)) + 1
        df = df[df["subject_id"].isin(order[:n_subjects])].head(cfg.max_images)
    if len(df) == 0:
        raise ValueError("no training images left after the split/cohort/view/max_images filters")
    return df.reset_index(drop=True)


class PretrainImages:
    """Grayscale training images as ``[1, S, S]`` float tensors in [0, 1] (``S`` = image_size).

    Small datasets are held in memory (area-downsampled once and cached as ``.npy``); larger
    ones are read from disk per item.
    """

    def __init__(
        self, root: str | Path, records: pd.DataFrame, size: int, *, progress: bool = True
    ) -> None:
        from raddino_lib.data.arrays import image_array

        self.root = Path(root)
        self.records = records.reset_index(drop=True)
        self.size = int(size)
        self._array: torch.Tensor | None = None
        if len(self.records) * self.size * self.size * 4 <= IN_MEMORY_LIMIT:
            arr = image_array(self.root, self.records, self.size, progress=progress)
            self._array = torch.from_numpy(arr)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._array is not None:
            return self._array[i].unsqueeze(0)
        from raddino_lib.data.arrays import resize_area
        from raddino_lib.data.records import load_image

        img = load_image(self.root, self.records.iloc[i])
        return torch.from_numpy(resize_area(img, self.size)).unsqueeze(0)


def batch_positions(n_images: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Dataset indices ``[batch_size]`` of the global batch at ``step``.

    The stream is epoch after epoch of seeded permutations of ``range(n_images)``; step ``s``
    takes positions ``s * B ... (s + 1) * B - 1`` of it.
    """
    if n_images < 1:
        raise ValueError("no images to sample from")
    pos = step * batch_size + np.arange(batch_size)
    epochs = pos // n_images
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng(step_seed(seed, int(e), 0x5EED)).permutation(n_images)
        sel = epochs == e
        out[sel] = perm[pos[sel] % n_images]
    return out


@dataclass
class PretrainBatch:
    """One rank's share of a step's batch (crop-major, ``b`` images on this rank).

    Attributes:
        global_crops: ``[2 * b, 1, G, G]`` (all first crops, then all second crops).
        local_crops: ``[n_local * b, 1, L, L]`` or ``None`` when there are no local crops.
        masks: ``[2 * b, N]`` bool block masks of the global crops (all False without MIM).
        indices: ``[b]`` dataset indices.
    """

    global_crops: torch.Tensor
    local_crops: torch.Tensor | None
    masks: torch.Tensor
    indices: np.ndarray

    def pin(self) -> PretrainBatch:
        """The batch in page-locked memory (a faster, asynchronous copy to a GPU)."""
        return PretrainBatch(
            self.global_crops.pin_memory(),
            None if self.local_crops is None else self.local_crops.pin_memory(),
            self.masks.pin_memory(),
            self.indices,
        )

    def to(self, device: torch.device | str) -> PretrainBatch:
        return PretrainBatch(
            self.global_crops.to(device, non_blocking=True),
            None if self.local_crops is None else self.local_crops.to(device, non_blocking=True),
            self.masks.to(device, non_blocking=True),
            self.indices,
        )


def make_batch(
    images: PretrainImages,
    views: MultiCropViews,
    *,
    step: int,
    seed: int,
    global_batch: int,
    patch_size: int,
    mim: bool,
    mask_sample_prob: float,
    mask_ratio: tuple[float, float],
    rank: int = 0,
    world_size: int = 1,
    mask_generator: MaskGenerator | None = None,
) -> PretrainBatch:
    """The multi-crop batch of ``step`` for ``rank`` (deterministic, see the module doc)."""
    if global_batch % world_size:
        raise ValueError(
            f"global batch {global_batch} does not split evenly over {world_size} processes"
        )
    b = global_batch // world_size
    idx = batch_positions(len(images), global_batch, step, seed)
    mine = range(rank * b, (rank + 1) * b)
    g1, g2, locs = [], [], []
    for j in mine:
        gen = torch.Generator().manual_seed(step_seed(seed, step, j))
        v = views(images[int(idx[j])], gen)
        g1.append(v["global"][0])
        g2.append(v["global"][1])
        locs.append(v["local"])
    global_crops = torch.stack(g1 + g2)
    n_local = views.n_local_crops
    local_crops = (
        torch.stack([locs[i][k] for k in range(n_local) for i in range(b)]) if n_local else None
    )
    grid = views.global_crop_size // patch_size
    n = grid * grid
    if mim and mask_sample_prob > 0:
        all_masks = sample_masks(
            2 * global_batch,
            grid,
            mask_sample_prob,
            mask_ratio,
            generator=step_seed(seed, step, 0x3A5C),
            mask_generator=mask_generator,
        ).reshape(2, global_batch, n)
        masks = all_masks[:, rank * b : (rank + 1) * b].reshape(2 * b, n)
    else:
        masks = torch.zeros(2 * b, n, dtype=torch.bool)
    return PretrainBatch(global_crops, local_crops, masks, idx[rank * b : (rank + 1) * b])


class BatchStream(torch.utils.data.Dataset):
    """The batches of steps ``start .. end - 1``, in order, built by :func:`make_batch`.

    With ``num_workers > 0`` a ``DataLoader`` builds the next steps' batches in worker
    processes (``prefetch`` steps ahead per worker) while the model trains on the current
    one; each batch is a pure function of its step, so the batches are identical to the
    ``num_workers = 0`` ones, and a resumed run sees the same stream. Workers run one torch
    thread each. ``pin_memory`` speeds the copy to a GPU.

    Iterating yields :class:`PretrainBatch` objects on the CPU.
    """

    def __init__(
        self,
        images: PretrainImages,
        views: MultiCropViews,
        *,
        start: int,
        end: int,
        num_workers: int = 0,
        prefetch: int = 2,
        pin_memory: bool = False,
        **batch_kw,
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.images, self.views, self.batch_kw = images, views, batch_kw
        self.start, self.end = int(start), int(end)
        self.num_workers, self.prefetch, self.pin_memory = num_workers, prefetch, pin_memory

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, i: int) -> PretrainBatch:
        return make_batch(self.images, self.views, step=self.start + int(i), **self.batch_kw)

    def __iter__(self):
        if self.num_workers == 0:
            for i in range(len(self)):
                batch = self[i]
                yield batch.pin() if self.pin_memory else batch
            return
        loader = torch.utils.data.DataLoader(
            self,
            batch_size=None,
            shuffle=False,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch,
            pin_memory=self.pin_memory,
            worker_init_fn=_one_thread,
            collate_fn=_identity,
        )
        yield from loader


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def _identity(x):
    return x
