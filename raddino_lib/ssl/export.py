"""From a run folder to artefacts other code loads: a transformers folder, or the backbone.

* :func:`export_run` -- ``raddino export RUN --out DIR``: the teacher (default) backbone of the
  newest checkpoint as a transformers ``Dinov2Model`` folder with its DINO head, laid out like
  ``microsoft/rad-dino``.
* :func:`pretrained_encoder` -- the cached pretraining run of a config (trained on first use,
  resumed if a previous attempt was interrupted) and its teacher backbone; this is how every
  chapter after chapter 2 gets "the RAD-DINO of this build" without reaching into chapter 2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from raddino_lib.config import Config
from raddino_lib.data.datasets import data_identity
from raddino_lib.models.backbone import ViTBackbone
from raddino_lib.paths import cache_dir
from raddino_lib.ssl.checkpoint import latest_checkpoint, load_checkpoint
from raddino_lib.ssl.train import load_run_backbone, pretrain, run_fields

__all__ = ["ENGINE_VERSION", "export_run", "pretrained_encoder", "pretrained_run_dir"]

# Bump when a change to the engine changes what a run computes (invalidates cached runs).
ENGINE_VERSION = "2"  # 2: the teacher forward runs as a bf16 copy under bf16 autocast


def export_run(
    run_dir: str | Path, out_dir: str | Path, which: str = "teacher", overwrite: bool = False
) -> Path:
    """Write ``run_dir``'s ``which`` backbone (+ its DINO head) as a transformers folder."""
    from raddino_lib.models.formats import export_hf

    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    run_dir = Path(run_dir)
    backbone = load_run_backbone(run_dir, which)
    last = latest_checkpoint(run_dir / "checkpoints")
    assert last is not None  # load_run_backbone checked
    state = load_checkpoint(last).model
    prefix = f"{which}.dino_head."
    head = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return Path(export_hf(backbone, out_dir, head=head or None, overwrite=overwrite))


def _fingerprint(cfg: Config) -> str:
    blob = json.dumps(
        {"engine": ENGINE_VERSION, "config": run_fields(cfg), "data": data_identity(cfg)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def pretrained_run_dir(cfg: Config) -> Path:
    """The cache folder of ``cfg``'s pretraining run (may not exist yet)."""
    return cache_dir("pretrain", f"{cfg.preset}_{_fingerprint(cfg)}")


def pretrained_encoder(cfg: Config, *, train: bool = True) -> tuple[ViTBackbone, Path]:
    """The teacher backbone of ``cfg``'s pretraining run and the run folder.

    Trains the run when it is missing or unfinished (``train=False``: raise instead).
    """
    run = pretrained_run_dir(cfg)
    if not (run / "done.json").is_file():
        if not train:
            raise FileNotFoundError(
                f"no finished pretraining run for this config at {run}; run chapter 2 or "
                "`raddino pretrain` first, or call with train=True"
            )
        pretrain(cfg, run)
    return load_run_backbone(run), run
