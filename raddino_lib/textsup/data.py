"""Image-report pairs for the text-supervised baseline, and the seeded batch of each step.

Pairs are the rows of one split (``train`` for training) with a non-empty report, frontal and
lateral images alike: a lateral image carries its study's report, as in the paper's
BioViL-T / BiomedCLIP-style training. The images of step ``s`` are a pure function of
``(seed, s)`` (:func:`raddino_lib.ssl.data.batch_positions`) and the augmentation of batch
position ``j`` draws from a generator seeded with ``(seed, s, j)``, so a resumed run sees the
batches an uninterrupted run sees.

Augmentation (light, X-ray safe): a square random resized crop of area fraction
``U(0.6, 1)`` at a uniform position, resized back to the image side (bilinear, antialiased),
then with p = 0.8 brightness and contrast factors ``U(0.9, 1.1)``, clamped to [0, 1]. No
horizontal flip: reports name sides ("left pleural effusion").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raddino_lib.ssl.data import PretrainImages, batch_positions, step_seed

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["PairAugment", "PairBatch", "PairData", "make_pair_batch", "select_pair_records"]

_AUG_TAG = 0xC11A


def select_pair_records(records: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """Rows of ``split`` with a non-empty report (all views), re-indexed.

    Raises:
        ValueError: no such row (the dataset has no reports, or not in this split).
    """
    rep = records["report"].fillna("").astype(str).str.strip()
    df = records[(records["split"] == split) & (rep != "")]
    if len(df) == 0:
        raise ValueError(
            f"no {split!r} rows with a non-empty report: the text-supervised baseline needs "
            "image-report pairs (records.csv 'report' column)"
        )
    return df.reset_index(drop=True)


class PairAugment:
    """Callable ``aug(image [1, S, S], generator) -> [1, size, size]`` (see the module doc)."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.6, 1.0),
        jitter_p: float = 0.8,
        brightness: float = 0.1,
        contrast: float = 0.1,
    ) -> None:
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.jitter_p = jitter_p
        self.brightness = brightness
        self.contrast = contrast

    @staticmethod
    def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        _, h, w = img.shape
        short = min(h, w)
        side = int(round(math.sqrt(self._u(g, *self.scale)) * short))
        side = min(max(side, 1), short)
        top = int(torch.randint(0, h - side + 1, (), generator=g))
        left = int(torch.randint(0, w - side + 1, (), generator=g))
        crop = img[:, top : top + side, left : left + side].unsqueeze(0)
        if side != self.size or h != self.size or w != self.size:
            crop = F.interpolate(
                crop, size=(self.size, self.size), mode="bilinear", align_corners=False,
                antialias=True,
            )  # fmt: skip
        crop = crop.squeeze(0)
        if self._u(g) < self.jitter_p:
            b = self._u(g, 1.0 - self.brightness, 1.0 + self.brightness)
            c = self._u(g, 1.0 - self.contrast, 1.0 + self.contrast)
            crop = crop * b
            mean = crop.mean()
            crop = (crop - mean) * c + mean
        return crop.clamp(0.0, 1.0)


@dataclass
class PairBatch:
    """One step's pairs.

    Attributes:
        images: ``[B, 1, S, S]`` float in [0, 1] (augmented).
        input_ids: ``[B, L]`` token ids, ``L`` = the longest report of the batch (<= max_len).
        attention_mask: ``[B, L]`` 1 for tokens, 0 for padding.
        positives: ``[B, B]`` bool, True where two rows are of the same study (same report).
        indices: ``[B]`` dataset indices.
    """

    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positives: torch.Tensor
    indices: np.ndarray

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            self.images.to(device, non_blocking=True),
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.positives.to(device, non_blocking=True),
            self.indices,
        )


class PairData:
    """Images (``[1, S, S]`` via :class:`raddino_lib.ssl.data.PretrainImages`) and their
    reports tokenised once (``[N, max_len]``, right-padded, ``[BOS] ... [EOS]``)."""

    def __init__(
        self,
        root: str | Path,
        records: pd.DataFrame,
        size: int,
        tokenizer: PreTrainedTokenizerFast,
        max_len: int,
        *,
        progress: bool = True,
    ) -> None:
        self.records = records.reset_index(drop=True)
        self.images = PretrainImages(root, self.records, size, progress=progress)
        enc = tokenizer(
            self.records["report"].astype(str).tolist(),
            truncation=True,
            max_length=max_len,
            padding="max_length",
            return_tensors="pt",
        )
        self.input_ids: torch.Tensor = enc["input_ids"]
        self.attention_mask: torch.Tensor = enc["attention_mask"]
        self.study = torch.from_numpy(pd.factorize(self.records["study_id"])[0].astype(np.int64))

    def __len__(self) -> int:
        return len(self.records)

    def tokens(self, idx: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask ``[b, L]`` of rows ``idx``, cut to their longest report."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        mask = self.attention_mask[idx]
        n = int(mask.sum(dim=1).max())
        return self.input_ids[idx, :n], mask[:, :n]

    def positives(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[b, b]`` bool: rows ``idx`` that belong to the same study."""
        s = self.study[torch.as_tensor(idx, dtype=torch.long)]
        return s[:, None] == s[None, :]


def make_pair_batch(
    data: PairData, augment: PairAugment | None, *, step: int, seed: int, batch_size: int
) -> PairBatch:
    """The batch of ``step`` (deterministic; ``augment=None``: the images as they are)."""
    idx = batch_positions(len(data), batch_size, step, seed)
    imgs = []
    for j, i in enumerate(idx):
        img = data.images[int(i)]
        if augment is not None:
            gen = torch.Generator().manual_seed(step_seed(seed, step, j, _AUG_TAG))
            img = augment(img, gen)
        imgs.append(img)
    ids, mask = data.tokens(idx)
    return PairBatch(torch.stack(imgs), ids, mask, data.positives(idx), idx)
