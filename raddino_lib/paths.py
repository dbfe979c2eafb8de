"""Where the project keeps results and cached artifacts.

``RADDINO_ROOT`` overrides the project root (default: the nearest folder upwards from the
working directory that holds ``_toc.yml`` and ``pyproject.toml``, else the folder above the
installed package, else the working directory). ``RADDINO_CACHE`` overrides the cache folder
(default ``<root>/.cache``).
"""

from __future__ import annotations

import os
from pathlib import Path


def _is_root(p: Path) -> bool:
    return (p / "_toc.yml").is_file() and (p / "pyproject.toml").is_file()


def project_root() -> Path:
    """The project root folder (see the module docstring for how it is found)."""
    env = os.environ.get("RADDINO_ROOT")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if _is_root(p):
            return p
    pkg_parent = Path(__file__).resolve().parents[1]
    if _is_root(pkg_parent):
        return pkg_parent
    return cwd


def results_dir(preset: str) -> Path:
    """``<root>/results/<preset>``, created if missing."""
    d = project_root() / "results" / preset
    d.mkdir(parents=True, exist_ok=True)
    return d


def cache_dir(*parts: str) -> Path:
    """``<cache>/<parts...>`` (not created: callers create it atomically)."""
    env = os.environ.get("RADDINO_CACHE")
    base = Path(env).resolve() if env else project_root() / ".cache"
    return base.joinpath(*parts)
