"""Dataset adapters: a real dataset's own files -> the generic records format.

Each module has ``build_records(src_dir, *, seed=0, skip_bad=False, ...) -> DataFrame``
(columns exactly ``schema.RECORD_COLUMNS``, ``path`` relative to ``src_dir``, labels
1/0/blank as nullable Int8, ``df.attrs["skipped"]`` = images listed but missing when
``skip_bad=True``) and ``write_dataset(src_dir, out_dir, ...)`` which also writes
``out_dir/records.csv`` (images reached through the ``out_dir/source`` symlink to
``src_dir``; see :func:`raddino_lib.data.adapters._common.write_records`) and the
``adapter.json`` marker, so ``records.load_records(out_dir)`` accepts the blank labels.
Several datasets into one folder: :func:`raddino_lib.data.mixture.write_mixture` (``raddino
dataset``); a chapter reads one through the ``dataset`` / ``data_root`` config fields
(:func:`raddino_lib.data.datasets.adapter_dataset`).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from raddino_lib.data.adapters._common import AdapterError, split_subjects, write_records

ADAPTERS: dict[str, str] = {
    "vindr_cxr": "raddino_lib.data.adapters.vindr_cxr",
    "rsna_pneumonia": "raddino_lib.data.adapters.rsna_pneumonia",
    "candid_ptx": "raddino_lib.data.adapters.candid_ptx",
    "chexpert": "raddino_lib.data.adapters.chexpert",
    "mimic_cxr": "raddino_lib.data.adapters.mimic_cxr",
    "nih_cxr14": "raddino_lib.data.adapters.nih_cxr14",
    "padchest": "raddino_lib.data.adapters.padchest",
    "vindr_ribcxr": "raddino_lib.data.adapters.vindr_ribcxr",
    "brax": "raddino_lib.data.adapters.brax",
    "mimic_lungs": "raddino_lib.data.adapters.mimic_lungs",
}
# Short names accepted by get_adapter (and the ``dataset`` config field).
ALIASES: dict[str, str] = {
    "vindr": "vindr_cxr",
    "rsna": "rsna_pneumonia",
    "candid": "candid_ptx",
    "mimic": "mimic_cxr",
    "nih": "nih_cxr14",
    "chestx-ray14": "nih_cxr14",
    "ribcxr": "vindr_ribcxr",
    "lung-segment-mimic-cxr": "mimic_lungs",
    "mimic-lungs": "mimic_lungs",
}


def adapter_name(name: str) -> str:
    """The canonical adapter name of ``name`` (a key of :data:`ADAPTERS` or an alias)."""
    low = name.strip().lower()
    key = ALIASES.get(low, low.replace("-", "_"))
    if key not in ADAPTERS:
        raise KeyError(
            f"unknown dataset {name!r}; adapters exist for {sorted(ADAPTERS)} "
            f"(aliases {sorted(ALIASES)})"
        )
    return key


def get_adapter(name: str) -> ModuleType:
    """The adapter module for a dataset name (one of :data:`ADAPTERS` or :data:`ALIASES`)."""
    return import_module(ADAPTERS[adapter_name(name)])


__all__ = [
    "ADAPTERS",
    "ALIASES",
    "AdapterError",
    "adapter_name",
    "get_adapter",
    "split_subjects",
    "write_records",
]
