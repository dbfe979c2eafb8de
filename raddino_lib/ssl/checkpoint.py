"""Training checkpoints: one folder per step, written whole or not at all.

Layout of ``RUN/checkpoints/step_00000250/``:

* ``model.safetensors`` -- :class:`~raddino_lib.ssl.meta_arch.SSLModel` state (student,
  teacher, loss centres);
* ``optimizer.pt`` -- the AdamW state dict (tensors and numbers only, read back with
  ``torch.load(weights_only=True)``);
* ``meta.json`` -- the next step to run, images seen, the config; written last.

The folder is assembled under a hidden temporary name and renamed into place (``os.rename``
of a directory is atomic), so a kill at any moment leaves either the previous checkpoints or
the new complete one; half-written temporaries are ignored and cleaned up on the next save.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

_PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be read back."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    meta: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    ckpt_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``ckpt_dir/step_{step:08d}`` atomically; keep the newest ``keep`` checkpoints."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(f".tmp_{_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_dir / f"{_PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp_{final.name}_{os.getpid()}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    done = sorted(p for p in ckpt_dir.glob(f"{_PREFIX}*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(p: Path) -> bool:
    return all((p / f).is_file() for f in ("model.safetensors", "optimizer.pt", "meta.json"))


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest complete ``step_*`` folder under ``ckpt_dir`` (None when there is none)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    found = sorted(p for p in ckpt_dir.glob(f"{_PREFIX}*") if p.is_dir() and _complete(p))
    return found[-1] if found else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint folder (safetensors + ``weights_only`` optimizer state)."""
    path = Path(path)
    if not _complete(path):
        raise CheckpointError(
            f"{path} is not a complete checkpoint (needs model.safetensors, optimizer.pt and "
            "meta.json); delete it to resume from the previous one"
        )
    try:
        meta = json.loads((path / "meta.json").read_text())
        model = load_file(str(path / "model.safetensors"), device=str(map_location))
        opt = torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file: say which
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return Checkpoint(path, int(meta["step"]), model, opt, meta)
