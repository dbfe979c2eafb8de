"""Ground truth the phantom knows and a real dataset does not: each subject's anatomy.

The generator samples every subject's anatomy (:class:`~.anatomy.Anatomy`: thorax width,
diaphragm domes, heart size, aortic knob, fat, breast, bone density, calcification, ...) from
its metadata before rendering. Recomputing it from the dataset's seed gives an *oracle*
feature set: a probe on it measures how much of a target the phantom put into the anatomy,
the ceiling an image encoder could reach if it saw the anatomy perfectly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from raddino_lib.data.phantom.anatomy import Anatomy
from raddino_lib.data.phantom.generate import GENERATOR_VERSION, make_subject

#: Anatomy fields used as oracle features (``texture`` is a random id, not a quantity).
ANATOMY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Anatomy) if f.name != "texture"
)


def anatomy_table(root: str | Path, records: pd.DataFrame) -> pd.DataFrame:
    """The true anatomy of each record's subject, recomputed from the phantom's seed.

    Args:
        root: the phantom dataset folder (its ``dataset.json`` gives generator, version, seed).
        records: ``[N, ...]`` rows of that dataset with a ``subject_id`` column (``S000123``).

    Returns:
        ``[N, len(ANATOMY_FIELDS)]`` float frame, same index as ``records``.

    Raises:
        ValueError: the folder is not a phantom of this generator version (a real dataset
            has no such ground truth; an older phantom was sampled by other code).
    """
    meta_path = Path(root) / "dataset.json"
    try:
        info = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: cannot read the dataset description ({e})") from e
    if info.get("generator") != "raddino_lib.data.phantom":
        raise ValueError(
            f"{meta_path}: not a phantom dataset (generator {info.get('generator')!r}); "
            "anatomy ground truth exists only for the built-in phantom"
        )
    if info.get("version") != GENERATOR_VERSION:
        raise ValueError(
            f"{meta_path}: phantom version {info.get('version')} but this code generates "
            f"{GENERATOR_VERSION}; regenerate the dataset to recompute its anatomy"
        )
    seed = int(info["seed"])
    ids = records["subject_id"].astype(str)
    bad = ids[~ids.str.fullmatch(r"S\d+")]
    if len(bad):
        raise ValueError(f"{meta_path}: subject ids like {bad.iloc[0]!r} are not phantom ids")
    cache: dict[int, list[float]] = {}
    rows = []
    for s in ids:
        i = int(s[1:])
        if i not in cache:
            anat = make_subject(seed, i).anat
            cache[i] = [float(getattr(anat, f)) for f in ANATOMY_FIELDS]
        rows.append(cache[i])
    return pd.DataFrame(np.asarray(rows, dtype=np.float64).reshape(-1, len(ANATOMY_FIELDS)),
                        index=records.index, columns=list(ANATOMY_FIELDS))  # fmt: skip
