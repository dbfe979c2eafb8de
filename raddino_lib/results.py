"""Chapter results as data: ``results/<preset>/<chapter>.json``.

A run on a real dataset (the ``dataset`` parameter) also keeps its own copy,
``results/<preset>/<chapter>@<adapter>.json``, so running one chapter on several datasets
(Tables 3 and 4 come from three) leaves every dataset's numbers on disk; the plain file is
always the latest run, the one the chapter renders.

Each chapter writes its numbers here and renders its tables from what it wrote, so the prose
of the book and the numbers of the run cannot drift apart.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from raddino_lib.atomic import atomic_write_text
from raddino_lib.config import Config
from raddino_lib.paths import project_root, results_dir


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths into JSON-able values (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def results_path(chapter: str, preset: str, dataset: str | None = None) -> Path:
    """``results/<preset>/<chapter>.json``, or the per-dataset copy's path
    (``<chapter>@<adapter>.json``, the adapter's canonical name) when ``dataset`` is given."""
    if dataset:
        from raddino_lib.data.adapters import adapter_name

        return results_dir(preset) / f"{chapter}@{adapter_name(dataset)}.json"
    return results_dir(preset) / f"{chapter}.json"


def save_results(chapter: str, cfg: Config, data: dict[str, Any]) -> Path:
    """Write ``data`` with provenance (config, commit, versions, date) atomically, plus the
    per-dataset copy when ``cfg.dataset`` is set; returns the plain file's path."""
    import torch

    payload = {
        "chapter": chapter,
        "preset": cfg.preset,
        "provenance": {
            "commit": _git_commit(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "machine": platform.machine(),
        },
        "config": cfg.to_dict(),
        "results": _plain(data),
    }
    text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
    path = results_path(chapter, cfg.preset)
    atomic_write_text(path, text)
    if cfg.dataset:
        atomic_write_text(results_path(chapter, cfg.preset, cfg.dataset), text)
    return path


def load_results(chapter: str, preset: str, dataset: str | None = None) -> dict[str, Any]:
    """Read what :func:`save_results` wrote (the ``results`` part): the latest run, or the
    latest on ``dataset``."""
    path = results_path(chapter, preset, dataset)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run the chapter first (raddino chapter {chapter} "
            f"--preset {preset})"
        )
    try:
        return json.loads(path.read_text())["results"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path} is not a results file written by save_results: {exc}") from exc
