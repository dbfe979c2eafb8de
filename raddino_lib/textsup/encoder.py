"""The cached text-supervised run of a config and its image tower (the baseline encoder).

:func:`text_supervised_encoder` is how chapters get "the BioViL-T / BiomedCLIP stand-in of this
build": the run lives in ``.cache/baselines/clip_<preset>_<fingerprint>``, is trained on first
use (resumed if an earlier attempt was interrupted) and afterwards only loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from raddino_lib.config import Config
from raddino_lib.data.datasets import data_identity
from raddino_lib.models.backbone import BackboneSpec, ViTBackbone
from raddino_lib.paths import cache_dir
from raddino_lib.textsup.train import clip_fields, train_clip

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from raddino_lib.textsup.model import ImageTextModel

__all__ = [
    "TEXTSUP_VERSION",
    "load_image_text_model",
    "load_text_supervised",
    "text_supervised_encoder",
    "text_supervised_run_dir",
]

# Bump when a change to the engine changes what a run computes (invalidates cached runs).
TEXTSUP_VERSION = "1"


def _fingerprint(cfg: Config) -> str:
    blob = json.dumps(
        {"version": TEXTSUP_VERSION, "config": clip_fields(cfg), "data": data_identity(cfg)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def text_supervised_run_dir(cfg: Config) -> Path:
    """The cache folder of ``cfg``'s text-supervised run (may not exist yet)."""
    return cache_dir("baselines", f"clip_{cfg.preset}_{_fingerprint(cfg)}")


def _spec(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a text-supervised run")
    return json.loads(path.read_text())


def load_text_supervised(run_dir: str | Path) -> ViTBackbone:
    """The image tower of a finished run (``image_encoder.safetensors``), eval mode, CPU.

    Raises:
        FileNotFoundError: the run has not finished (no ``image_encoder.safetensors``).
    """
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    path = run_dir / "image_encoder.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the text-supervised run in {run_dir} has not finished; "
            "resume it with raddino_lib.textsup.train_clip(cfg, run_dir)"
        )
    bb = ViTBackbone(BackboneSpec.from_dict(_spec(run_dir)["spec"]))
    bb.load_state_dict(load_file(str(path)))
    return bb.eval()


def load_image_text_model(run_dir: str | Path) -> tuple[ImageTextModel, PreTrainedTokenizerFast]:
    """Both towers of a run's newest checkpoint (eval mode, CPU) and the run's tokenizer."""
    from raddino_lib.ssl.checkpoint import latest_checkpoint, load_checkpoint
    from raddino_lib.text.tokenizer import load_tokenizer
    from raddino_lib.textsup.model import ImageTextModel, TextSpec

    run_dir = Path(run_dir)
    info = _spec(run_dir)
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint under checkpoints/")
    model = ImageTextModel(BackboneSpec.from_dict(info["spec"]), TextSpec.from_dict(info["text"]))
    model.load_state_dict(load_checkpoint(last).model)
    return model.eval(), load_tokenizer(run_dir / "tokenizer")


def text_supervised_encoder(cfg: Config, *, train: bool = True) -> tuple[ViTBackbone, Path]:
    """The image tower of ``cfg``'s text-supervised run and the run folder.

    Trains the run when it is missing or unfinished (``train=False``: raise instead).

    Raises:
        FileNotFoundError: ``train=False`` and no finished run for this config.
    """
    run = text_supervised_run_dir(cfg)
    if not (run / "done.json").is_file():
        if not train:
            raise FileNotFoundError(
                f"no finished text-supervised run for this config at {run}; call "
                "text_supervised_encoder(cfg, train=True) (or run chapter 3) to train it"
            )
        train_clip(cfg, run)
    return load_text_supervised(run), run
