"""Segmentation data: tasks, the 70/15/15 split by subject, masks at a side, augmented views.

A *task* is a group of mask channels (left/right lungs, six zones, pneumothorax, chest tube,
20 ribs). Every image gets all task channels at once, so one set of augmented views (and one
pass of each frozen encoder over them) serves every task.

Augmentations (section C.3 of the paper, scaled): random affine (rotation, scale,
translation), a smooth elastic displacement, brightness, contrast and gamma jitter; image and
masks move together (bilinear for the image, nearest for masks). No horizontal flip: lungs,
zones and ribs are named by the patient's side, and a flipped frontal film is not a film of
another patient (the paper flips only for pneumothorax and tubes; one shared set of views keeps
all tasks unflipped here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from raddino_lib.data import schema

__all__ = [
    "SegViews",
    "TASKS",
    "augment",
    "load_mask_stack",
    "make_views",
    "seg_records",
    "split_by_subject",
]

#: task -> mask channels (patient's sides: "right" is image left on a frontal film).
TASKS: dict[str, tuple[str, ...]] = {
    "lungs": schema.LUNG_MASKS,
    "zones": schema.ZONE_MASKS,
    "pneumothorax": ("pneumothorax",),
    "chest_tubes": ("chest_tube",),
    "ribs": schema.RIB_MASKS,
}


def task_channels(task: str) -> tuple[str, ...]:
    if task not in TASKS:
        raise ValueError(f"unknown segmentation task {task!r}; choose from {list(TASKS)}")
    return TASKS[task]


def split_by_subject(
    records: pd.DataFrame, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> pd.Series:
    """``"train"`` / ``"val"`` / ``"test"`` per row, whole subjects in one split.

    Subjects are shuffled with ``seed`` and cut at the cumulative fractions of the subject
    count (the paper: 70/15/15 by subject).
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    subjects = np.array(sorted(records["subject_id"].astype(str).unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(subjects)
    n = len(subjects)
    cut1 = int(round(fractions[0] * n))
    cut2 = cut1 + int(round(fractions[1] * n))
    which = {s: "train" for s in subjects[:cut1]}
    which.update({s: "val" for s in subjects[cut1:cut2]})
    which.update({s: "test" for s in subjects[cut2:]})
    return records["subject_id"].astype(str).map(which).rename("seg_split")


def seg_records(records: pd.DataFrame, max_images: int = 0, seed: int = 0) -> pd.DataFrame:
    """Frontal rows with masks (at most ``max_images``, whole subjects sampled with ``seed``),
    with a ``seg_split`` column from :func:`split_by_subject`.

    Raises:
        ValueError: when no row has a mask file (a dataset without segmentation masks).
    """
    df = records[records["mask_path"].astype(str).str.len() > 0]
    df = df[df["view"].astype(str).str.upper() != "LATERAL"]
    if df.empty:
        raise ValueError(
            "no frontal image with a mask file (records.csv column mask_path is empty "
            "everywhere): segmentation needs masks"
        )
    if max_images and len(df) > max_images:
        subjects = np.array(sorted(df["subject_id"].astype(str).unique()))
        np.random.default_rng(seed).shuffle(subjects)
        counts = df.groupby(df["subject_id"].astype(str)).size()
        keep = subjects[np.cumsum(counts.loc[subjects].to_numpy()) <= max_images]
        df = df[df["subject_id"].astype(str).isin(set(keep))]
    df = df.copy()
    df["seg_split"] = split_by_subject(df, seed=seed).to_numpy()
    return df.reset_index(drop=True)


def load_mask_stack(
    root: str | Path, row: pd.Series, names: tuple[str, ...], size: int
) -> np.ndarray:
    """``[len(names), size, size]`` bool masks of one record, area-resized then thresholded
    at one half.

    Raises:
        KeyError: naming the file and the missing mask names.
    """
    from raddino_lib.data.arrays import resize_area
    from raddino_lib.data.records import load_masks

    masks = load_masks(root, row)
    missing = [n for n in names if n not in masks]
    if missing:
        raise KeyError(
            f"{row.get('mask_path', '?')}: masks {missing} missing (has {sorted(masks)})"
        )
    out = np.empty((len(names), size, size), dtype=bool)
    for i, n in enumerate(names):
        m = masks[n]
        out[i] = m if m.shape == (size, size) else resize_area(m.astype(np.float32), size) >= 0.5
    return out


def augment(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, strength: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine + elastic + intensity jitter of ``images [B, 1, S, S]`` (float in [0, 1])
    and ``masks [B, K, S, S]`` (bool), the same geometry for both.

    Rotation +-10 deg, scale 0.9-1.1, translation +-6 % of the side, elastic displacement up to
    ~2 % of the side (a 4 x 4 random field, bicubic), brightness +-0.08, contrast 0.8-1.2,
    gamma 0.8-1.25; ``strength`` scales every range (0: identity).
    """
    b, _, s, _ = images.shape

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=gen)

    ang = u(-10, 10) * strength * math.pi / 180
    scale = 1 + u(-0.1, 0.1) * strength
    tx, ty = u(-0.12, 0.12) * strength, u(-0.12, 0.12) * strength  # normalised coords span 2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
    )  # [B, 2, 3]
    grid = F.affine_grid(theta, [b, 1, s, s], align_corners=False)
    field = torch.randn(b, 2, 4, 4, generator=gen) * 0.02 * strength
    disp = F.interpolate(field, size=(s, s), mode="bicubic", align_corners=False)
    grid = grid + disp.permute(0, 2, 3, 1)
    img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    msk = F.grid_sample(
        masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    bright = u(-0.08, 0.08).view(b, 1, 1, 1) * strength
    contrast = (1 + u(-0.2, 0.2) * strength).view(b, 1, 1, 1)
    gamma = torch.exp(u(math.log(0.8), math.log(1.25)) * strength).view(b, 1, 1, 1)
    mean = img.mean((2, 3), keepdim=True)
    img = ((img - mean) * contrast + mean + bright).clamp(0, 1) ** gamma
    return img, msk > 0.5


@dataclass
class SegViews:
    """The images a segmentation experiment sees, with all task masks.

    Attributes:
        images: ``[M, S, S]`` float32 in [0, 1].
        masks: ``[M, C, S, S]`` bool, channels :attr:`channels`.
        split: ``[M]`` ``"train"`` / ``"val"`` / ``"test"``.
        source: ``[M]`` row of the records frame each view comes from.
        view: ``[M]`` 0 for the image itself, 1.. for augmented copies (training rows only).
        channels: mask names.
        records: the rows (with ``seg_split``).
    """

    images: np.ndarray
    masks: np.ndarray
    split: np.ndarray
    source: np.ndarray
    view: np.ndarray
    channels: tuple[str, ...]
    records: pd.DataFrame

    def task_masks(self, task: str) -> np.ndarray:
        """``[M, K, S, S]`` bool masks of one task."""
        idx = [self.channels.index(c) for c in task_channels(task)]
        return self.masks[:, idx]

    def rows(self, split: str, *, originals_only: bool = False) -> np.ndarray:
        """Indices of the views of ``split`` (``originals_only``: view 0 only)."""
        keep = self.split == split
        if originals_only:
            keep &= self.view == 0
        return np.flatnonzero(keep)


def make_views(
    root: str | Path,
    records: pd.DataFrame,
    *,
    tasks: tuple[str, ...],
    size: int,
    n_views: int,
    seed: int = 0,
    progress: bool = True,
) -> SegViews:
    """Images and masks of ``records`` (from :func:`seg_records`) at ``size``, plus
    ``n_views`` augmented copies of each training image (deterministic by ``seed``)."""
    from raddino_lib.data.arrays import image_array

    channels = tuple(c for t in tasks for c in task_channels(t))
    images = image_array(root, records, size, progress=progress)
    masks = np.stack(
        [
            load_mask_stack(root, row, channels, size)
            for _, row in tqdm(
                records.iterrows(), total=len(records), desc="masks", disable=not progress,
                leave=False,
            )
        ]
    )  # fmt: skip
    split = records["seg_split"].to_numpy().astype(str)
    src = np.arange(len(records))
    out_i, out_m, out_s, out_src, out_v = (
        [images],
        [masks],
        [split],
        [src],
        [np.zeros(len(src), int)],
    )
    train = np.flatnonzero(split == "train")
    gen = torch.Generator().manual_seed(seed)
    for v in range(1, n_views + 1):
        for i in range(0, len(train), 256):
            idx = train[i : i + 256]
            img, msk = augment(
                torch.from_numpy(images[idx]).unsqueeze(1), torch.from_numpy(masks[idx]), gen
            )
            out_i.append(img[:, 0].numpy())
            out_m.append(msk.numpy())
            out_s.append(split[idx])
            out_src.append(idx)
            out_v.append(np.full(len(idx), v))
    return SegViews(
        images=np.concatenate(out_i).astype(np.float32),
        masks=np.concatenate(out_m),
        split=np.concatenate(out_s),
        source=np.concatenate(out_src),
        view=np.concatenate(out_v),
        channels=channels,
        records=records,
    )
