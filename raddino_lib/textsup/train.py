"""Contrastive image-report training: ``train_clip(cfg, run_dir)`` (resumable, deterministic).

Per step: the seeded batch of pairs (:mod:`raddino_lib.textsup.data`), both towers under bf16
autocast where :func:`~raddino_lib.ssl.train.resolve_precision` picks it, the symmetric InfoNCE
loss (images of one study are all positives of its report), backward, gradient clipping at
:data:`GRAD_CLIP`, AdamW with a linear warm-up and cosine decay to 1% of ``clip_lr`` (no weight
decay on biases, norms, LayerScale gammas and the temperature), a JSONL line of metrics, and an
atomic checkpoint every ``checkpoint_every`` steps and at the end. Global RNG (drop path) is
reseeded from ``(seed, step)`` every step, so a run stopped and resumed on the same folder ends
with the same weights, bit for bit, as an uninterrupted one.

Run folder: ``config.json`` (the training fields, checked on resume), ``tokenizer/`` (trained on
the training reports on first start), ``run.json``, ``metrics.jsonl``, ``checkpoints/``, and
when finished ``image_encoder.safetensors`` (the image tower as a ``ViTBackbone`` state) and
``done.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raddino_lib.atomic import atomic_save, atomic_write_text
from raddino_lib.config import Config
from raddino_lib.models.backbone import spec_from_config
from raddino_lib.ssl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from raddino_lib.ssl.data import step_seed
from raddino_lib.ssl.schedules import cosine_schedule
from raddino_lib.ssl.train import (
    RunConfigMismatch,
    check_run_config,
    read_metrics,
    resolve_device,
    resolve_precision,
)
from raddino_lib.textsup.data import PairAugment, PairData, make_pair_batch, select_pair_records
from raddino_lib.textsup.loss import clip_logits, clip_loss, retrieval_hits
from raddino_lib.textsup.model import ImageTextModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "ClipSummary",
    "GRAD_CLIP",
    "RunConfigMismatch",
    "build_clip_model",
    "clip_fields",
    "read_metrics",
    "run_tokenizer",
    "train_clip",
]

GRAD_CLIP = 1.0  # global gradient-norm clip
FINAL_LR_FRACTION = 0.01  # the cosine ends at this fraction of clip_lr
_INIT_TAG, _STEP_TAG = 0xC1F0, 0xC1F1

# Config fields besides clip_* / text_* / vocab_size that change what a run computes.
_IMAGE_AND_DATA_FIELDS = (
    "image_size",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "layerscale_init",
    "pixel_mean",
    "pixel_std",
    "drop_path",
    "phantom_n",
    "phantom_size",
    "phantom_seed",
    "data_dir",
    "seed",
    "precision",
)


def clip_fields(cfg: Config) -> dict[str, Any]:
    """The config values a text-supervised run depends on (``clip_*``, ``text_*``,
    ``vocab_size``, the image tower's architecture and normalisation, data, seed, precision);
    evaluation fields and the DINO recipe are not among them."""
    d = cfg.to_dict()
    keys = sorted(k for k in d if k.startswith(("clip_", "text_")) or k == "vocab_size")
    out = {k: d[k] for k in [*keys, *_IMAGE_AND_DATA_FIELDS]}
    out["image_spec"] = spec_from_config(cfg).to_dict()  # includes mlp_ratio
    return out


@dataclass
class ClipSummary:
    """What :func:`train_clip` did in this call (``steps``: the total reached)."""

    run_dir: Path
    steps: int
    images_seen: int
    seconds: float
    images_per_s: float
    final_metrics: dict[str, float]
    device: str
    precision: str
    n_pairs: int
    finished: bool


def run_tokenizer(run_dir: Path, texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """The run's tokenizer: ``run_dir/tokenizer`` if present, else trained on ``texts`` and
    saved there (atomically: written beside it and renamed into place)."""
    from raddino_lib.text.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    final = run_dir / "tokenizer"
    if (final / "tokenizer.json").is_file():
        return load_tokenizer(final)
    tok = train_tokenizer(texts, vocab_size)
    tmp = run_dir / ".tokenizer.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    save_tokenizer(tok, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return load_tokenizer(final)


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim < 2 or name.endswith(".bias") or "norm" in name or "gamma" in name


def build_clip_model(
    cfg: Config, tokenizer: PreTrainedTokenizerFast, device: torch.device
) -> tuple[ImageTextModel, torch.optim.AdamW]:
    """The seeded model on ``device`` and its AdamW (groups: with / without weight decay)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(cfg.seed, 0, _INIT_TAG))
        model = ImageTextModel.from_config(cfg, tokenizer)
    model.to(device)
    model.set_fused_attention(device.type == "cuda")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if _no_decay(name, p) else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.clip_weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.clip_lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    return model, optimizer


def _truncate_metrics(run_dir: Path, start: int) -> None:
    rows = [r for r in read_metrics(run_dir) if r["step"] < start]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _save_image_tower(run_dir: Path, model: ImageTextModel) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.image.state_dict().items()}
    path = run_dir / "image_encoder.safetensors"
    atomic_save(path, lambda t: save_file(state, str(t)), suffix=".safetensors")
    return path


def train_clip(
    cfg: Config,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
    augment: bool = True,
) -> ClipSummary:
    """Train (or resume) the text-supervised run in ``run_dir`` to ``cfg.clip_steps`` steps.

    Args:
        cfg: the configuration (``clip_*``, ``text_*``, ``vocab_size``, the image tower).
        run_dir: the run folder; an existing one is resumed from its newest checkpoint.
        data_dir: dataset folder (default: :func:`raddino_lib.data.datasets.dataset_dir`).
        stop_after: stop (with a checkpoint) after this many steps in total; the schedule
            still spans ``cfg.clip_steps``.
        progress: show a progress bar (default ``cfg.progress``).
        augment: random resized crops and intensity jitter (``False``: the images as they
            are, e.g. to check that the optimisation can fit a handful of pairs).

    Raises:
        RunConfigMismatch: ``run_dir`` was started with other training fields.
        FloatingPointError: the loss became non-finite (the last checkpoint is kept).
    """
    from tqdm.auto import tqdm

    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.data.records import load_records

    if cfg.clip_steps < 1 or cfg.clip_batch_size < 2:
        raise ValueError(
            f"clip_steps must be >= 1 and clip_batch_size >= 2 (contrastive needs negatives), "
            f"got {cfg.clip_steps} and {cfg.clip_batch_size}"
        )
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    run_dir = Path(run_dir)
    show = cfg.progress if progress is None else progress
    root = Path(data_dir) if data_dir is not None else dataset_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    all_records = load_records(root)
    check_run_config(
        run_dir, {**clip_fields(cfg), "augment": augment}, root, all_records["path"],
        kind="text-supervised run",
    )  # fmt: skip
    records = select_pair_records(all_records, "train")
    tokenizer = run_tokenizer(run_dir, records["report"].astype(str).tolist(), cfg.vocab_size)
    data = PairData(root, records, cfg.image_size, tokenizer, cfg.text_max_len, progress=show)
    aug = PairAugment(cfg.image_size) if augment else None

    model, optimizer = build_clip_model(cfg, tokenizer, device)
    start = 0
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is not None:
        ck = load_checkpoint(last, map_location=device)
        model.load_state_dict(ck.model)
        optimizer.load_state_dict(ck.optimizer)
        start = ck.step
    _truncate_metrics(run_dir, start)
    total = cfg.clip_steps
    end = total if stop_after is None else min(total, stop_after)
    lrs = cosine_schedule(
        cfg.clip_lr, FINAL_LR_FRACTION * cfg.clip_lr, total, warmup_steps=cfg.clip_warmup_steps
    )
    atomic_write_text(
        run_dir / "run.json",
        json.dumps(
            {
                "device": str(device),
                "precision": precision,
                "spec": model.spec.to_dict(),
                "text": model.text_spec.to_dict(),
                "n_pairs": len(data),
                "n_studies": int(data.study.max()) + 1,
                "tokenizer_size": len(tokenizer),
                "torch": torch.__version__,
            },
            indent=1,
        ),
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    b = cfg.clip_batch_size
    model.train()
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=end, initial=start, desc="clip", disable=not show, unit="step",
               dynamic_ncols=True)  # fmt: skip
    with open(run_dir / "metrics.jsonl", "a") as fh:
        try:
            for step in range(start, end):
                ts = time.perf_counter()
                torch.manual_seed(step_seed(cfg.seed, step, _STEP_TAG))
                batch = make_pair_batch(data, aug, step=step, seed=cfg.seed, batch_size=b)
                batch = batch.to(device)
                td = time.perf_counter()
                for g in optimizer.param_groups:
                    g["lr"] = float(lrs[step])
                with autocast:
                    img, txt, scale = model(batch.images, batch.input_ids, batch.attention_mask)
                loss = clip_loss(img, txt, scale, positives=batch.positives)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP))
                optimizer.step()
                with torch.no_grad():
                    logits = clip_logits(img.detach(), txt.detach(), 1.0)
                    acc = float(retrieval_hits(logits, batch.positives).float().mean())
                    acc_t2i = float(retrieval_hits(logits.T, batch.positives).float().mean())
                dt = time.perf_counter() - ts
                metrics = {
                    "loss": float(loss.detach()),
                    "acc_i2t": acc,
                    "acc_t2i": acc_t2i,
                    "logit_scale": float(scale.detach()),
                    "lr": float(lrs[step]),
                    "grad_norm": grad_norm,
                }
                if not math.isfinite(metrics["loss"]):
                    raise FloatingPointError(
                        f"loss is {metrics['loss']} at step {step} of {run_dir}: lower clip_lr "
                        "or check the inputs; the last good checkpoint is kept"
                    )
                rec = {
                    "step": step,
                    "images_seen": (step + 1) * b,
                    **metrics,
                    "images_per_s": b / dt,
                    "data_s": td - ts,
                    "step_s": dt,
                }
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{acc:.2f}",
                                ips=f"{rec['images_per_s']:.0f}", refresh=False)  # fmt: skip
                done = step + 1
                if done % max(cfg.checkpoint_every, 1) == 0 or done == end:
                    save_checkpoint(
                        run_dir / "checkpoints", done, model.state_dict(),
                        optimizer.state_dict(), {"images_seen": done * b},
                    )  # fmt: skip
        finally:
            bar.close()
    seconds = time.perf_counter() - t0
    n_steps = max(end - start, 0)
    finished = end == total
    if finished:
        _save_image_tower(run_dir, model)
        atomic_write_text(
            run_dir / "done.json", json.dumps({"steps": total, "images_seen": total * b}, indent=1)
        )
    return ClipSummary(
        run_dir=run_dir,
        steps=end,
        images_seen=end * b,
        seconds=seconds,
        images_per_s=n_steps * b / seconds if seconds > 0 and n_steps else 0.0,
        final_metrics=metrics,
        device=str(device),
        precision=precision,
        n_pairs=len(data),
        finished=finished,
    )
