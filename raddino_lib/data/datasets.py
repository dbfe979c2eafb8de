"""Which dataset a run uses: a local folder in the generic format, a real dataset read by its
adapter, or the cached phantom.

``dataset_dir(cfg)`` is the one entry point chapters call. With ``cfg.data_dir`` set it checks
the folder and returns it. With ``cfg.dataset`` (an adapter name such as ``vindr_cxr`` or an
alias such as ``vindr``, see :mod:`raddino_lib.data.adapters`) and ``cfg.data_root`` (that
dataset's own folder, as downloaded) it builds the records folder with the adapter once and
caches it under ``.cache/datasets/<adapter>_<key>`` (:func:`adapter_dataset`). Otherwise it
returns the phantom for ``(phantom_n, phantom_size, phantom_seed)`` from the cache. Both
caches are generated into a temporary folder that is renamed into place, so an interrupted
run never leaves a half dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from raddino_lib.config import Config
from raddino_lib.paths import cache_dir


def phantom_dir(n: int, size: int, seed: int) -> Path:
    """Cache folder of the phantom with these parameters (may not exist yet)."""
    from raddino_lib.data.phantom import GENERATOR_VERSION

    return cache_dir("phantom", f"v{GENERATOR_VERSION}_n{n}_s{size}_seed{seed}")


def ensure_phantom(n: int, size: int, seed: int, *, progress: bool = True) -> Path:
    """Return the cached phantom folder, generating it if it is missing."""
    from raddino_lib.data.phantom import generate_dataset

    final = phantom_dir(n, size, seed)
    if (final / "records.csv").is_file():
        return final
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    generate_dataset(tmp, n, size=size, seed=seed, progress=progress)
    if final.exists():  # a concurrent run finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(final)
    return final


def data_identity(cfg: Config) -> dict[str, str]:
    """What, besides the config fields, decides which images a run trains on.

    A local folder is named by ``cfg.data_dir`` (already a config field); the phantom is named
    by its generator version, so a cached run trained on an older phantom is never reused
    after the generator changes. Run fingerprints (pretraining, text-supervised baseline)
    include this.
    """
    if cfg.data_dir:
        return {"data_dir": str(cfg.data_dir)}
    dataset, data_root = _dataset_fields(cfg)
    if dataset:
        from raddino_lib.data.adapters import adapter_name

        return {"dataset": adapter_name(dataset), "data_root": str(_resolved(data_root))}
    from raddino_lib.data.phantom import GENERATOR_VERSION

    return {"phantom_version": GENERATOR_VERSION}


def dataset_dir(cfg: Config) -> Path:
    """The dataset folder this config points at (building an adapter's records folder or
    generating the phantom when needed)."""
    dataset, data_root = _dataset_fields(cfg)
    if dataset:
        return adapter_dataset(dataset, data_root, progress=cfg.progress)
    if cfg.data_dir:
        root = Path(cfg.data_dir).expanduser()
        if not (root / "records.csv").is_file():
            raise FileNotFoundError(
                f"data_dir={cfg.data_dir!r} has no records.csv: point data_dir at a folder in "
                "the generic format (see raddino_lib.data.schema), e.g. one written by "
                "`raddino phantom --out DIR` or by a dataset adapter"
            )
        return root
    return ensure_phantom(cfg.phantom_n, cfg.phantom_size, cfg.phantom_seed, progress=cfg.progress)


# --------------------------------------------------------------------------------------------
# Real datasets through their adapters

#: Bumped when an adapter's output changes, so cached records folders are rebuilt.
ADAPTER_CACHE_VERSION = 1
#: The adapters split with this seed: a dataset's splits never depend on a run's seeds.
SPLIT_SEED = 0
_SIGNATURE_SUFFIXES = (".csv", ".gz", ".json", ".txt")
_SIGNATURE_SKIP = frozenset({"files", "images", "img"})  # image trees (and MIMIC's reports)


def _dataset_fields(cfg: Config) -> tuple[str | None, str | None]:
    """``(dataset, data_root)`` of ``cfg``, checked: both or neither, and not with data_dir."""
    dataset, data_root = getattr(cfg, "dataset", None), getattr(cfg, "data_root", None)
    if not dataset and not data_root:
        return None, None
    if not (dataset and data_root):
        raise ValueError(
            f"dataset={dataset!r} and data_root={data_root!r}: set both (an adapter name and "
            "the dataset's own folder) or neither"
        )
    if cfg.data_dir:
        raise ValueError(
            f"data_dir={cfg.data_dir!r} and dataset={dataset!r} both set: data_dir is a folder "
            "already in the generic format, dataset + data_root one read by an adapter; use one"
        )
    return dataset, data_root


def _resolved(data_root: str | Path | None) -> Path:
    return Path(str(data_root)).expanduser().resolve()


def _table_signature(root: Path, depth: int = 3) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of the label tables and annotation files under ``root``
    (suffixes .csv/.gz/.json/.txt, at most ``depth`` levels down, image trees skipped)."""
    out = []
    for base, dirs, files in os.walk(root, followlinks=True):
        rel = Path(base).relative_to(root)
        if len(rel.parts) >= depth:
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if d not in _SIGNATURE_SKIP and not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(_SIGNATURE_SUFFIXES):
                st = (Path(base) / f).stat()
                out.append(((rel / f).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def _adapter_options(name: str, root: Path) -> dict[str, Any]:
    """Options an adapter takes from conventional places inside ``root``: MIMIC-CXR (and the
    MIMIC lung masks) read MIMIC-IV demographics from ``root/mimic-iv`` (a folder or a
    symlink) when it exists; the lung masks come from ``root/lung-segment-mimic-cxr`` and
    the zone boxes from ``root/chest-imagenome`` (see the mimic_lungs adapter)."""
    out: dict[str, Any] = {}
    if name in ("mimic_cxr", "mimic_lungs") and (root / "mimic-iv").is_dir():
        out["mimic_iv_dir"] = root / "mimic-iv"
    if name == "mimic_lungs":  # named explicitly so that adding ImaGenome later re-reads
        out["masks_dir"] = root / "lung-segment-mimic-cxr"
        if (root / "chest-imagenome").is_dir():
            out["imagenome_dir"] = root / "chest-imagenome"
    return out


def adapter_dataset_dir(dataset: str, data_root: str | Path) -> Path:
    """The cache folder of ``dataset`` read from ``data_root`` (may not exist yet):
    ``datasets/<adapter>_<key>``, the key covering the adapter, the resolved folder, the
    cache version, the split seed and the size and time of its label tables."""
    from raddino_lib.data.adapters import adapter_name

    name = adapter_name(dataset)
    root = _resolved(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data_root={str(data_root)!r} is not a folder (dataset {name})")
    blob = json.dumps(
        {
            "adapter": name,
            "root": str(root),
            "version": ADAPTER_CACHE_VERSION,
            "split_seed": SPLIT_SEED,
            "tables": _table_signature(root),
            "options": {k: str(v) for k, v in _adapter_options(name, root).items()},
        },
        sort_keys=True,
    )
    return cache_dir("datasets", f"{name}_{hashlib.sha256(blob.encode()).hexdigest()[:12]}")


def adapter_dataset(dataset: str, data_root: str | Path, *, progress: bool = True) -> Path:
    """The records folder of a real dataset: built by its adapter on first use (images stay
    where they are, reached through the folder's ``source`` symlink), then cached.

    Raises:
        KeyError: unknown dataset name. FileNotFoundError: ``data_root`` is not a folder.
        AdapterError: the dataset's files do not look as its adapter expects (the message
            names the file and row).
    """
    from raddino_lib.data.adapters import adapter_name, get_adapter

    name = adapter_name(dataset)
    final = adapter_dataset_dir(name, data_root)
    if (final / "records.csv").is_file():
        return final
    root = _resolved(data_root)
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists() or tmp.is_symlink():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"reading {name} from {root} with its adapter -> {final}", flush=True)
    df = get_adapter(name).write_dataset(root, tmp, seed=SPLIT_SEED, **_adapter_options(name, root))
    if not (tmp / "records.csv").is_file() or len(df) == 0:
        raise ValueError(f"the {name} adapter found no images under {root}")
    if final.exists():  # a concurrent run finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(final)
    return final
