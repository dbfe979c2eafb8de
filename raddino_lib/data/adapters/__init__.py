"""Dataset adapters: a real dataset's own files -> the generic records format.

Each module has ``build_records(src_dir, *, seed=0, skip_bad=False, ...) -> DataFrame``
(columns exactly ``schema.RECORD_COLUMNS``, ``path`` relative to ``src_dir``, labels
1/0/blank as nullable Int8, ``df.attrs["skipped"]`` = images listed but missing when
``skip_bad=True``) and ``write_dataset(src_dir, out_dir, ...)`` which also writes
``out_dir/records.csv`` (images reached through the ``out_dir/source`` symlink to
``src_dir``; see :func:`raddino_lib.data.adapters._common.write_records`). Read the
result back with ``records.load_records(out_dir, allow_unknown_labels=True)``.
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
}


def get_adapter(name: str) -> ModuleType:
    """The adapter module for a dataset name (one of :data:`ADAPTERS`)."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown dataset {name!r}; adapters exist for {sorted(ADAPTERS)}")
    return import_module(ADAPTERS[name])


__all__ = ["ADAPTERS", "AdapterError", "get_adapter", "split_subjects", "write_records"]
