"""Dice per image, the paper's segmentation metric (Table 6, Figure 4)."""

from __future__ import annotations

import numpy as np

from raddino_lib.eval.bootstrap import bootstrap_difference

__all__ = ["dice_per_image", "dice_summary", "paired_dice_difference"]


def dice_per_image(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``2 |P & T| / (|P| + |T|)`` for each image and class.

    Args:
        pred, true: ``[N, K, H, W]`` bool (or 0/1) masks.

    Returns:
        ``[N, K]`` float64; 1 where both masks are empty (an image without the structure,
        correctly left empty), 0 where exactly one is.
    """
    pred = np.asarray(pred).astype(bool)
    true = np.asarray(true).astype(bool)
    if pred.shape != true.shape or pred.ndim != 4:
        raise ValueError(
            f"pred and true must both be [N, K, H, W]; got {pred.shape} and {true.shape}"
        )
    inter = (pred & true).sum((2, 3), dtype=np.int64)
    total = pred.sum((2, 3), dtype=np.int64) + true.sum((2, 3), dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return d


def dice_summary(dice: np.ndarray, present: np.ndarray | None = None) -> dict[str, float]:
    """Table 6's "mean (std)": the per-image Dice averaged over the task's classes
    (``[N, K] -> [N]``), then mean and standard deviation over images.

    With ``present`` (``[N]`` bool, the images whose truth contains the structure) also
    ``mean_present`` / ``n_present``: the mean over those images only, which an all-empty
    prediction cannot inflate (NaN when there are none).
    """
    per_image = np.asarray(dice, dtype=np.float64).mean(axis=1)
    out: dict[str, float] = {
        "mean": float(per_image.mean()),
        "std": float(per_image.std(ddof=0)),
        "n": int(len(per_image)),
    }
    if present is not None:
        present = np.asarray(present, dtype=bool)
        if present.shape != per_image.shape:
            raise ValueError(f"present must be [N] = {per_image.shape}, got {present.shape}")
        out["mean_present"] = float(per_image[present].mean()) if present.any() else float("nan")
        out["n_present"] = int(present.sum())
    return out


def paired_dice_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    margin: float = 0.0,
    n_boot: int = 2000,
    seed: int = 0,
    present: np.ndarray | None = None,
) -> dict[str, float | str]:
    """Mean per-image Dice of ``a`` minus ``b`` over the same test images, with a 95%
    bootstrap interval (images resampled, both models on each resampled image).

    ``verdict`` for the claim "``a`` is above ``b - margin``": ``"held"`` when the whole
    interval lies above ``-margin``, ``"did not hold"`` when it lies below, else
    ``"inconclusive"`` (``margin = 0``: "``a`` beats ``b``"; ``margin = 0.03``: "``a`` is within
    three Dice points of ``b`` or better"). With ``present`` (``[N]`` bool, the images that
    contain the structure): ``"not measured"`` when neither model overlaps the structure on
    any of them, since two models that never predict it tie on the empty images and say
    nothing about the claim.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two per-image Dice vectors of one length, got {a.shape}, {b.shape}")
    iv = bootstrap_difference(
        lambda i: float(a[i].mean()), lambda i: float(b[i].mean()), len(a),
        samples=n_boot, seed=seed,
    )  # fmt: skip
    lo, hi = iv.lo, iv.hi
    verdict = "held" if lo > -margin else ("did not hold" if hi < -margin else "inconclusive")
    if present is not None:
        present = np.asarray(present, dtype=bool)
        if present.shape != a.shape:
            raise ValueError(f"present must be [N] = {a.shape}, got {present.shape}")
        if not present.any() or (a[present].max() == 0 and b[present].max() == 0):
            verdict = "not measured"
    return {"diff": iv.point, "lo": float(lo), "hi": float(hi), "n": int(len(a)),
            "margin": margin, "verdict": verdict}  # fmt: skip
