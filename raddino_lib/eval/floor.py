"""The raw-pixel floor: logistic regression on downsampled pixels.

Every encoder in the book must beat this. If it is close to 1 for a finding, the data has a
pixel shortcut and no encoder comparison on that finding means anything (see
``shared/notes/cpu-ssl-feasibility.md``: a registered phantom failed exactly this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raddino_lib.data.arrays import image_array
from raddino_lib.eval.probe import cached_finding_probe, cached_metadata_probe


@dataclass
class FloorResult:
    findings: pd.DataFrame  # per finding: auprc_mean, auprc_std, prevalence, ...
    metadata: pd.DataFrame  # per variable: acc_mean, acc_std, chance
    size: int
    n_images: int  # frontal images of the finding probe
    metadata_rows: str = "frontal"  # which frontal images the metadata probe used
    n_metadata: int = 0  # how many


def pixel_features(root: str | Path, df: pd.DataFrame, size: int, progress: bool = True):
    """``[N, size * size]`` float32 raw-pixel features (area-downsampled images)."""
    arr = image_array(root, df, size, progress=progress)
    return arr.reshape(len(arr), -1)


def pixel_floor(
    root: str | Path,
    df: pd.DataFrame,
    findings: Sequence[str],
    *,
    size: int = 32,
    seeds: Sequence[int] = (0, 1, 2),
    metadata: Sequence[str] = ("sex", "age", "weight", "bmi"),
    metadata_subset: str | None = "no_finding",
    progress: bool = True,
) -> FloorResult:
    """Probe findings (frontal images, test AUPRC) and metadata (5-fold accuracy) on pixels.

    The metadata probe runs on the frontal images whose ``metadata_subset`` label is 1 (the
    paper's Table 7 protocol, and chapter 4's: no finding), or on every frontal image when
    ``metadata_subset`` is None or the records have no such column.
    """
    frontal = df[df["view"] != "LATERAL"].reset_index(drop=True)
    if len(frontal) == 0:
        raise ValueError("pixel_floor needs frontal (PA/AP) images; the records have none")
    x = pixel_features(root, frontal, size, progress=progress)
    fin = cached_finding_probe(
        x, frontal[list(findings)], frontal["split"], frontal["subject_id"], seeds=seeds
    )
    rows, which = frontal.index.to_numpy(), "frontal"
    if metadata_subset is not None and metadata_subset in frontal.columns:
        rows = frontal.index[frontal[metadata_subset] == 1].to_numpy()
        which = f"frontal, {metadata_subset} = 1"
        if len(rows) == 0:
            raise ValueError(
                f"pixel_floor: no frontal image has {metadata_subset} = 1; pass "
                "metadata_subset=None to probe metadata on every frontal image"
            )
    sub = frontal.iloc[rows].reset_index(drop=True)
    meta = cached_metadata_probe(x[rows], sub, sub["subject_id"], variables=metadata, seed=seeds[0])
    return FloorResult(
        findings=fin, metadata=meta, size=size, n_images=len(frontal),
        metadata_rows=which, n_metadata=len(sub),
    )  # fmt: skip
