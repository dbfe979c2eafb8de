"""Several real datasets as one records folder: the pretraining mixture (the paper's
"Multi-CXR", Table B.1).

:func:`write_mixture` runs each dataset's adapter into ``out_dir/parts/<adapter>/`` (its own
``records.csv``, ``source`` symlink and masks) and writes ``out_dir/records.csv`` over all of
them, with

* paths and mask paths prefixed by ``parts/<adapter>/`` (so they resolve from ``out_dir``),
* ``subject_id``, ``study_id`` and ``image_id`` prefixed by ``<adapter>/`` (ids of different
  datasets never collide: NIH's patient "1" is not CheXpert's),
* ``cohort`` kept (each adapter names its own), so ``--cohorts`` selects datasets,
* with ``all_splits`` naming datasets whose every image is marked ``train``: the paper
  pretrained on all images of its datasets except MIMIC-CXR, where it kept the official
  training split (Appendix B.1). Pretraining reads only ``split == "train"`` rows.

The folder is a dataset in the generic format (with the adapters' ``adapter.json`` marker,
so blank labels are accepted): ``raddino pretrain --data out_dir`` trains on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from raddino_lib.atomic import atomic_write_text
from raddino_lib.data import schema
from raddino_lib.data.adapters import adapter_name, get_adapter
from raddino_lib.data.adapters._common import AdapterError, write_marker
from raddino_lib.data.records import check_subject_splits, load_records

PARTS = "parts"
#: The paper's rule: every image of these datasets goes to pretraining (all but MIMIC-CXR).
PAPER_ALL_SPLITS: tuple[str, ...] = ("brax", "chexpert", "nih_cxr14", "padchest")


def write_mixture(
    out_dir: str | Path,
    sources: Mapping[str, str | Path] | Sequence[tuple[str, str | Path]],
    *,
    seed: int = 0,
    skip_bad: bool = False,
    all_splits: Iterable[str] = (),
    options: Mapping[str, Mapping[str, object]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Build the records of several datasets into one folder; returns the combined frame.

    Args:
        out_dir: the mixture folder (created; an existing part is rebuilt).
        sources: ``{dataset: its own folder}`` or ``[(dataset, folder), ...]``; dataset names
            are adapter names or aliases (``mimic``, ``nih``, ...), each at most once.
        seed: the adapters' split seed.
        skip_bad: passed to every adapter (missing / unreadable images are skipped, counted).
        all_splits: datasets whose every image is marked ``train`` (see the module doc).
        options: extra keyword arguments per dataset, e.g. ``{"mimic_cxr": {"mimic_iv_dir":
            ...}}``. Without one, MIMIC-CXR reads MIMIC-IV from ``<folder>/mimic-iv`` when
            that exists (as the ``dataset``/``data_root`` config fields do).
    """
    from raddino_lib.data.datasets import _adapter_options

    out = Path(out_dir)
    pairs = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    if not pairs:
        raise ValueError("write_mixture needs at least one (dataset, folder)")
    names = [adapter_name(n) for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"each dataset may appear once, got {names}")
    everything = {adapter_name(n) for n in all_splits}
    unknown = everything - set(names)
    if unknown:
        raise ValueError(f"all_splits names {sorted(unknown)}, which are not among {names}")
    opts = {adapter_name(k): dict(v) for k, v in (options or {}).items()}
    frames = []
    for name, (_, root) in zip(names, pairs, strict=True):
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder (dataset {name})")
        part = out / PARTS / name
        kw = {**_adapter_options(name, root), **opts.get(name, {})}
        if progress:
            print(f"{name}: reading {root}", flush=True)
        df = get_adapter(name).write_dataset(root, part, seed=seed, skip_bad=skip_bad, **kw)
        if progress:
            print(f"{name}: {len(df)} images, skipped {df.attrs.get('skipped', 0)}", flush=True)
        df = load_records(part)
        prefix = f"{PARTS}/{name}/"
        df["path"] = prefix + df["path"]
        df["mask_path"] = [prefix + m if m else "" for m in df["mask_path"].fillna("")]
        for col in schema.ID_COLUMNS:
            df[col] = f"{name}/" + df[col].astype(str)
        if name in everything:
            df["split"] = "train"
        frames.append(df)
    mix = pd.concat(frames, ignore_index=True)
    try:
        check_subject_splits(mix, source=str(out))
    except ValueError as e:
        raise AdapterError(str(e)) from None
    mix.attrs["skipped"] = 0
    atomic_write_text(out / "records.csv", mix[list(schema.RECORD_COLUMNS)].to_csv(index=False))
    write_marker(mix, out, parts=names, all_splits=sorted(everything))
    return mix
