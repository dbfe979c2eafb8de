"""Which dataset a run uses: a local folder in the generic format, or the cached phantom.

``dataset_dir(cfg)`` is the one entry point chapters call. With ``cfg.data_dir`` set it checks
the folder and returns it; otherwise it returns the phantom for ``(phantom_n, phantom_size,
phantom_seed)`` from the cache, generating it on first use (into a temporary folder that is
renamed into place, so an interrupted generation never leaves a half dataset behind).
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
    from raddino_lib.data.phantom import GENERATOR_VERSION

    return {"phantom_version": GENERATOR_VERSION}


def dataset_dir(cfg: Config) -> Path:
    """The dataset folder this config points at (generating the phantom when needed)."""
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
