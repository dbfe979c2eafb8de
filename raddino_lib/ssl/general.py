"""The in-project general-domain DINO encoder: the stand-in for DINOv2 trained on LVD-142M.

The same engine (:func:`raddino_lib.ssl.train.pretrain`) and the same recipe as the chest
X-ray run of a config, trained from random weights for ``cfg.general_pretrain_steps`` steps on
non-medical grayscale images (:mod:`raddino_lib.data.natural`: crops of the photographs that
ship inside scikit-image, plus procedural textures and shapes) instead of chest X-rays. The
natural crops are generated at ``cfg.phantom_size`` so that the engine's image loading
(area-downsampled to ``cfg.image_size``) treats them exactly as it treats the phantom.

Like :func:`raddino_lib.ssl.export.pretrained_encoder`, the run is cached: trained on first
use, resumed from its newest checkpoint when a previous attempt was interrupted, and loaded
from ``.cache/pretrain/general_<preset>_<fingerprint>`` afterwards. Chapter 3 compares it
with the chest X-ray encoder by frozen probes; later chapters use it as the initialisation of
continual pretraining (``init`` = a weights folder exported from its run).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from raddino_lib.config import Config
from raddino_lib.models.backbone import ViTBackbone
from raddino_lib.paths import cache_dir
from raddino_lib.ssl.export import ENGINE_VERSION
from raddino_lib.ssl.train import _training_fields, load_run_backbone, pretrain

__all__ = [
    "general_domain_config",
    "general_domain_data",
    "general_domain_encoder",
    "general_domain_run_dir",
]


def general_domain_config(cfg: Config) -> Config:
    """``cfg`` as the general-domain run trains it: ``pretrain_steps`` =
    ``cfg.general_pretrain_steps`` and random initial weights; the recipe (backbone, crops,
    losses, schedules, batch size, seed) unchanged. Chest-data selections (``data_dir``,
    ``dataset``, ``data_root``, ``cohorts``, ``max_images``, ``frontal_only``) are reset: the
    run reads the natural dataset, which they do not describe."""
    return replace(
        cfg,
        pretrain_steps=cfg.general_pretrain_steps,
        init="random",
        data_dir=None,
        dataset=None,
        data_root=None,
        cohorts=None,
        max_images=None,
        frontal_only=False,
    )


def _natural_params(cfg: Config) -> dict[str, int | str]:
    """The natural dataset of ``cfg``: ``natural_n`` crops at ``phantom_size`` with the
    phantom's seed (the data seed of the chest run)."""
    from raddino_lib.data.natural import GENERATOR_VERSION

    return {
        "version": GENERATOR_VERSION,
        "n": cfg.natural_n,
        "size": cfg.phantom_size,
        "seed": cfg.phantom_seed,
    }


def general_domain_data(cfg: Config) -> Path:
    """The natural-image dataset folder the general-domain run of ``cfg`` trains on
    (generated on first use, see :func:`raddino_lib.data.natural.ensure_natural`)."""
    from raddino_lib.data.natural import ensure_natural

    p = _natural_params(cfg)
    return ensure_natural(int(p["n"]), int(p["size"]), int(p["seed"]), progress=cfg.progress)


def general_domain_run_dir(cfg: Config) -> Path:
    """The cache folder of ``cfg``'s general-domain run (may not exist yet):
    ``pretrain/general_<preset>_<fingerprint>``, the fingerprint covering the engine version,
    the training fields of :func:`general_domain_config` and the natural dataset's generator
    version, ``n``, size and seed."""
    gcfg = general_domain_config(cfg)
    blob = json.dumps(
        {
            "engine": ENGINE_VERSION,
            "config": _training_fields(gcfg),
            "natural": _natural_params(cfg),
        },
        sort_keys=True,
    )
    fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return cache_dir("pretrain", f"general_{cfg.preset}_{fingerprint}")


def general_domain_encoder(cfg: Config, *, train: bool = True) -> tuple[ViTBackbone, Path]:
    """The teacher backbone of ``cfg``'s general-domain run and the run folder.

    Trains the run (generating the natural dataset first if needed) when it is missing or
    unfinished, resuming from its newest checkpoint.

    Raises:
        FileNotFoundError: ``train=False`` and the run has not finished.
    """
    run = general_domain_run_dir(cfg)
    if not (run / "done.json").is_file():
        if not train:
            state = "is unfinished" if run.exists() else "does not exist yet"
            raise FileNotFoundError(
                f"the general-domain DINO run for preset {cfg.preset!r} at {run} {state}; "
                "call general_domain_encoder(cfg) with train=True (or run chapter 3) to train "
                f"it ({cfg.general_pretrain_steps} steps)"
            )
        root = general_domain_data(cfg)
        pretrain(general_domain_config(cfg), run, data_dir=root)
    return load_run_backbone(run), run
