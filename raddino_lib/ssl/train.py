"""The pretraining loop: ``pretrain(cfg, run_dir)``, single process or under ``torchrun``.

One code path for every scale: the smoke preset (seconds, tests), the laptop preset (a tiny
ViT on the phantom, CPU, bf16 autocast where the CPU has it) and the paper preset (ViT-B/14 at
518, CUDA, NCCL, ``torchrun --nproc_per_node=K -m raddino_lib.cli pretrain ...``).

Per step: the deterministic multi-crop batch (:mod:`raddino_lib.ssl.data`), schedules for
this step, teacher and student forward, DINO + iBOT + KoLeo, backward, per-module gradient
clipping, the frozen prototype layer, AdamW, EMA teacher update, a JSONL line of metrics, a
checkpoint every ``checkpoint_every`` steps. Global RNG (drop path) is reseeded from
``(seed, step, rank)`` every step, so a run killed and restarted on the same folder continues
exactly where the last checkpoint left it and ends with the same weights, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raddino_lib.atomic import atomic_write_text
from raddino_lib.config import Config
from raddino_lib.models.backbone import BackboneSpec, ViTBackbone, spec_from_config
from raddino_lib.ssl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from raddino_lib.ssl.data import (
    BatchStream,
    PretrainBatch,
    PretrainImages,
    select_pretrain_records,
    step_seed,
)
from raddino_lib.ssl.masking import MaskGenerator
from raddino_lib.ssl.meta_arch import SSLModel, StepOutput, reduce_metrics
from raddino_lib.ssl.optim import apply_schedule, param_groups
from raddino_lib.ssl.schedules import build_schedules
from raddino_lib.ssl.views import MultiCropViews

__all__ = [
    "CollapseWarning",
    "PretrainSummary",
    "RunConfigMismatch",
    "check_run_config",
    "run_fields",
    "build_model",
    "list_snapshots",
    "load_run_backbone",
    "load_snapshot",
    "run_spec",
    "save_snapshot",
    "train_step",
    "pretrain",
    "read_metrics",
    "resolve_device",
    "resolve_precision",
    "run_summary",
]

# Config fields that do not change what a pretraining run computes; a resumed run must agree
# on all the others. New fields that only evaluation or the baselines read belong here, or
# every cached run is invalidated.
_EVAL_ONLY = {
    "probe_seeds",
    "probe_kinds",
    "probe_grid",
    "embed_batch_size",
    "extra_encoders",
    "general_pretrain_steps",
    "natural_n",
    # a real dataset by adapter: the run is tied to the resolved records folder (run check)
    # and to datasets.data_identity (export fingerprint), not to these two names
    "dataset",
    "data_root",
    *(
        f.name
        for f in fields(Config)
        if f.name.startswith(("clip_", "text_", "corr_", "seg_", "rg_", "ablation_"))
    ),
    "vocab_size",
    "preset",
    "seeds",
    "num_workers",
    "concurrent_runs",
    "progress",
    "probe_epochs",
    "probe_lr",
    "probe_batch_size",
    "probe_max_train",
    "pixel_floor_size",
    "n_gallery",
    "checkpoint_every",
    "snapshot_every",
    "device",
}


class CollapseWarning(UserWarning):
    """The teacher's outputs say the run is collapsing (one prototype or a constant CLS)."""


class RunConfigMismatch(ValueError):
    """The run folder was started with a different training configuration."""


@dataclass
class PretrainSummary:
    run_dir: Path
    steps: int
    images_seen: int
    seconds: float
    images_per_s: float
    final_metrics: dict[str, float]
    device: str
    precision: str
    world_size: int


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA device is visible; use device='cpu'")
    return torch.device(name)


def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs with bf16 and on CPUs with native bf16 (AVX512-BF16/AMX)."""
    if name not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_bf16() else "fp32"


def _dist_setup(device_name: str) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_name)
    if not dist.is_initialized():
        device = resolve_device(device_name)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    device = resolve_device(device_name)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return rank, dist.get_world_size(), device


def _training_fields(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _EVAL_ONLY}


def _portable_init(init: str) -> str:
    """``init`` as a run records it: a folder inside the cache (a continual run starts from
    another run's export, whose folder name carries that run's fingerprint) as
    ``cache:<path relative to the cache>``, so a cache copied or moved keeps its run names and
    its unfinished runs resume; anything else as it is."""
    from raddino_lib.paths import cache_dir

    if init == "random":
        return init
    try:
        rel = Path(init).resolve().relative_to(cache_dir().resolve())
    except ValueError:
        return init
    return f"cache:{rel.as_posix()}"


def _portable(fields: dict[str, Any]) -> dict[str, Any]:
    if isinstance(fields.get("init"), str):
        return {**fields, "init": _portable_init(fields["init"])}
    return fields


def run_fields(cfg: Config) -> dict[str, Any]:
    """The fields that make a pretraining run (no evaluation-only ones), with a cache-internal
    ``init`` relative to the cache: the run's fingerprint (:mod:`raddino_lib.ssl.export`) and
    its ``config.json`` record these."""
    return _portable(_training_fields(cfg))


def check_run_config(
    run_dir: Path,
    config: dict[str, Any],
    root: Path,
    paths: Sequence[str],
    kind: str = "run",
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Record a run's training fields and data in ``run_dir/config.json``, or check that the
    run already there was started with the same ones (raises :class:`RunConfigMismatch`).

    The data is identified by :func:`~raddino_lib.data.arrays.content_key` of its rows
    (``paths``, relative to ``root``), not by its folder: a run resumed after the dataset
    folder moved (a copied cache with the phantom inside) carries on, and ``config.json`` is
    updated to the new folder. A ``config.json`` from before content keys is checked by folder.
    ``config`` must be JSON-able (tuples compare as lists); ``normalize`` maps a recorded
    config to today's form before comparing (records written before a field's form changed)."""
    from raddino_lib.data.arrays import content_key

    path = run_dir / "config.json"
    want = json.loads(json.dumps({"config": config, "data_dir": str(root)}))
    want["data_key"] = content_key(root, paths)
    if not path.is_file():
        atomic_write_text(path, json.dumps(want, indent=1))
        return
    have = json.loads(path.read_text())
    hc, wc = have.get("config", {}), want["config"]
    if normalize is not None:
        hc = normalize(hc)
    diff = sorted(k for k in set(hc) | set(wc) if hc.get(k) != wc.get(k))
    if "data_key" in have:
        same_data = have["data_key"] == want["data_key"]
    else:
        same_data = have.get("data_dir") == want["data_dir"]
    if diff or not same_data:
        what = [f"{k}: {hc.get(k)!r} -> {wc.get(k)!r}" for k in diff]
        if not same_data:
            why = (
                "other images or records"
                if "data_key" in have
                else "another folder; this run recorded its folder, not its data's content"
            )
            what.append(f"data: {have.get('data_dir')} -> {root} ({why})")
        raise RunConfigMismatch(
            f"{run_dir} holds a {kind} with a different configuration ({'; '.join(what)}); "
            "use another run folder, or delete this one to start over"
        )
    if have != want:  # the same data in a moved folder, or a record from before content keys
        atomic_write_text(path, json.dumps(want, indent=1))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step metric records of a run (``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(run_dir: Path, start: int) -> None:
    rows = [r for r in read_metrics(run_dir) if r["step"] < start]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _init_weights(model: SSLModel, init: str, spec: BackboneSpec) -> str:
    """Load initial backbone (and DINO head) weights from a local path; returns a description."""
    if init == "random":
        return "random"
    from raddino_lib.models.formats import load_backbone

    loaded = load_backbone(init, spec=spec)
    model.student.backbone.load_state_dict(loaded.backbone.state_dict())
    desc = f"{loaded.source_format} weights from {init}"
    if loaded.head_state is not None:
        model.student.dino_head.load_state_dict(loaded.head_state)
        if model.student.ibot_head is not None:
            model.student.ibot_head.load_state_dict(loaded.head_state)
        desc += " with the DINO head"
    model.sync_teacher()
    return desc


def _collapse(metrics: dict[str, float]) -> str | None:
    if metrics["teacher_entropy_of_mean"] < 1.0 or metrics["prototypes_used"] <= 2:
        return (
            f"teacher targets concentrate on {metrics['prototypes_used']} prototype(s) "
            f"(entropy of the mean target {metrics['teacher_entropy_of_mean']:.2f} nats)"
        )
    if metrics["cls_std"] < 0.02:
        return f"teacher CLS embeddings are nearly constant (std {metrics['cls_std']:.3f})"
    return None


def build_model(
    cfg: Config, spec: BackboneSpec, device: torch.device
) -> tuple[SSLModel, torch.optim.AdamW]:
    """The student/teacher model (seeded init, attention kernel for ``device``) and its AdamW
    with DINOv2's parameter groups."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(cfg.seed, 0, 0x1417))
        model = SSLModel(cfg, spec)
    model.to(device)
    fused = device.type == "cuda"
    model.student.backbone.set_fused_attention(fused)
    model.teacher.backbone.set_fused_attention(fused)
    heads = [("dino_head", model.student.dino_head, False)]
    if model.student.ibot_head is not None:
        heads.append(("ibot_head", model.student.ibot_head, False))
    groups = param_groups(
        [("backbone", model.student.backbone, True), *heads],
        n_layers=spec.depth,
        layer_decay=cfg.layer_decay,
        patch_embed_lr_mult=cfg.patch_embed_lr_mult,
    )
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "names"} for g in groups], betas=(0.9, 0.999)
    )
    return model, optimizer


def train_step(
    model: SSLModel,
    optimizer: torch.optim.Optimizer,
    batch: PretrainBatch,
    sched: dict[str, Any],
    student: nn.Module | None = None,
    autocast: torch.autocast | None = None,
) -> tuple[StepOutput, dict[str, float]]:
    """One optimisation step with this step's schedule values (``SSLSchedules.at(step)``):
    losses, backward, gradient clipping per module, the frozen prototype layer, AdamW, EMA.
    Returns the step output and the pre-clipping gradient norms per module."""
    cfg = model.cfg
    apply_schedule(optimizer, sched["lr"], sched["last_layer_lr"], sched["weight_decay"])
    out = model.step_losses(batch, sched["teacher_temp"], student, autocast)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norms = {}
    if cfg.grad_clip > 0:
        for name in ("backbone", "dino_head", "ibot_head"):
            mod = getattr(model.student, name)
            if mod is not None:
                grad_norms[name] = float(nn.utils.clip_grad_norm_(mod.parameters(), cfg.grad_clip))
    if sched["last_layer_frozen"]:
        model.student.dino_head.cancel_last_layer_grads()
        if model.student.ibot_head is not None:
            model.student.ibot_head.cancel_last_layer_grads()
    optimizer.step()
    model.update_teacher(sched["momentum"])
    return out, grad_norms


def pretrain(
    cfg: Config,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
) -> PretrainSummary:
    """Train (or resume) the run in ``run_dir`` to ``cfg.pretrain_steps`` steps.

    Args:
        cfg: the configuration (``cfg.init``: ``"random"`` or a local weights path).
        run_dir: the run folder; an existing one is resumed from its newest checkpoint.
        data_dir: dataset folder (default: :func:`raddino_lib.data.datasets.dataset_dir`).
        stop_after: stop (with a checkpoint) after this many steps in total, e.g. to test
            resumption; the schedules still span ``cfg.pretrain_steps``.
        progress: show a progress bar (default ``cfg.progress``; rank 0 only).
    """
    from tqdm.auto import tqdm

    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.data.records import load_records

    rank, world, device = _dist_setup(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    run_dir = Path(run_dir)
    show = (cfg.progress if progress is None else progress) and rank == 0
    spec = spec_from_config(cfg)
    # rank 0 first: it may generate the phantom and the cached image array; the others wait
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            root = Path(data_dir) if data_dir is not None else dataset_dir(cfg)
            all_records = load_records(root)
            if rank == 0:
                run_dir.mkdir(parents=True, exist_ok=True)
                check_run_config(run_dir, run_fields(cfg), root, all_records["path"],
                                 normalize=_portable)  # fmt: skip
            records = select_pretrain_records(all_records, cfg)
            images = PretrainImages(root, records, cfg.image_size, progress=show)
        if world > 1:
            dist.barrier()
    views = MultiCropViews.from_config(cfg)
    grid = cfg.global_crop_size // cfg.patch_size
    mask_gen = MaskGenerator(grid, grid)

    model, optimizer = build_model(cfg, spec, device)
    init_desc = _init_weights(model, cfg.init, spec)
    start = 0
    ckpt_dir = run_dir / "checkpoints"
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        ck = load_checkpoint(last, map_location=device)
        model.load_state_dict(ck.model)
        optimizer.load_state_dict(ck.optimizer)
        start = ck.step
        init_desc = f"resumed from {last.name}"
    if rank == 0:
        _truncate_metrics(run_dir, start)

    student: nn.Module = model.student
    if world > 1:
        student = nn.parallel.DistributedDataParallel(
            model.student,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
        )
    schedules = build_schedules(cfg)
    total = cfg.pretrain_steps
    end = total if stop_after is None else min(total, stop_after)
    use_bf16 = precision == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    model.train()
    warned: set[str] = set()
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(
        total=end,
        initial=start,
        desc="pretrain",
        disable=not show,
        unit="step",
        dynamic_ncols=True,
    )
    if rank == 0:
        meta_path = run_dir / "run.json"
        atomic_write_text(
            meta_path,
            json.dumps(
                {
                    "init": init_desc,
                    "device": str(device),
                    "precision": precision,
                    "world_size": world,
                    "spec": spec.to_dict(),
                    "n_images": len(images),
                    "torch": torch.__version__,
                },
                indent=1,
            ),
        )
    if rank == 0 and cfg.snapshot_every > 0 and start == 0:
        save_snapshot(run_dir, 0, model)
    metrics_fh = open(run_dir / "metrics.jsonl", "a") if rank == 0 else None  # noqa: SIM115
    try:
        stream = iter(
            BatchStream(
                images,
                views,
                start=start,
                end=end,
                num_workers=cfg.num_workers,
                pin_memory=device.type == "cuda",
                seed=cfg.seed,
                global_batch=cfg.batch_size,
                patch_size=cfg.patch_size,
                mim=cfg.mim,
                mask_sample_prob=cfg.mask_sample_prob,
                mask_ratio=cfg.mask_ratio,
                rank=rank,
                world_size=world,
                mask_generator=mask_gen,
            )
        )
        for step in range(start, end):
            ts = time.perf_counter()
            torch.manual_seed(step_seed(cfg.seed, step, 0xD409, rank))
            batch = next(stream).to(device)
            td = time.perf_counter()
            sched = schedules.at(step)
            out, grad_norms = train_step(model, optimizer, batch, sched, student, autocast)
            metrics = reduce_metrics(out.metrics, device)
            dt = time.perf_counter() - ts
            rec = {
                "step": step,
                "images_seen": (step + 1) * cfg.batch_size,
                **metrics,
                **{k: v for k, v in sched.items() if k != "last_layer_frozen"},
                "grad_norm_backbone": grad_norms.get("backbone", float("nan")),
                "images_per_s": cfg.batch_size / dt,
                "data_s": td - ts,
                "step_s": dt,
            }
            if not all(math.isfinite(metrics[k]) for k in ("loss",)):
                raise FloatingPointError(
                    f"loss is {metrics['loss']} at step {step} of {run_dir}: lower base_lr or "
                    "check the inputs; the last good checkpoint is kept"
                )
            why = _collapse(metrics) if step >= cfg.freeze_last_layer_steps else None
            if why and "collapse" not in warned and rank == 0:
                warnings.warn(f"step {step}: {why}", CollapseWarning, stacklevel=2)
                warned.add("collapse")
            if metrics_fh is not None:
                metrics_fh.write(json.dumps(rec) + "\n")
                metrics_fh.flush()
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.3f}",
                dino=f"{metrics['dino_loss']:.3f}",
                lr=f"{sched['lr']:.1e}",
                ips=f"{rec['images_per_s']:.0f}",
                refresh=False,
            )
            done = step + 1
            if (
                rank == 0
                and cfg.snapshot_every > 0
                and (done % cfg.snapshot_every == 0 or done == total)
            ):
                save_snapshot(run_dir, done, model)
            if done % cfg.checkpoint_every == 0 or done == end:
                if rank == 0:
                    save_checkpoint(
                        ckpt_dir,
                        done,
                        model.state_dict(),
                        optimizer.state_dict(),
                        {"images_seen": done * cfg.batch_size, "config": cfg.to_dict()},
                    )
                if world > 1:
                    dist.barrier()
    finally:
        bar.close()
        if metrics_fh is not None:
            metrics_fh.close()
    seconds = time.perf_counter() - t0
    n_steps = max(end - start, 0)
    summary = PretrainSummary(
        run_dir=run_dir,
        steps=end,
        images_seen=end * cfg.batch_size,
        seconds=seconds,
        images_per_s=n_steps * cfg.batch_size / seconds if seconds > 0 and n_steps else 0.0,
        final_metrics=metrics,
        device=str(device),
        precision=precision,
        world_size=world,
    )
    if rank == 0 and end == total:
        atomic_write_text(
            run_dir / "done.json",
            json.dumps({"steps": total, "images_seen": total * cfg.batch_size}, indent=1),
        )
    return summary


def save_snapshot(run_dir: Path, step: int, model: SSLModel) -> Path:
    """Teacher backbone after ``step`` steps -> ``run_dir/snapshots/step_{step:08d}.safetensors``
    (atomic). Step 0 is the initial weights: the random-init baseline of the same run."""
    from safetensors.torch import save_file

    from raddino_lib.atomic import atomic_save

    state = {
        k: v.detach().cpu().contiguous() for k, v in model.teacher.backbone.state_dict().items()
    }
    path = run_dir / "snapshots" / f"step_{step:08d}.safetensors"
    atomic_save(path, lambda t: save_file(state, str(t)), suffix=".safetensors")
    return path


def list_snapshots(run_dir: str | Path) -> dict[int, Path]:
    """``{step: path}`` of a run's teacher snapshots, in step order."""
    folder = Path(run_dir) / "snapshots"
    found = {int(p.stem.split("_")[1]): p for p in folder.glob("step_*.safetensors")}
    return dict(sorted(found.items()))


def run_spec(run_dir: str | Path) -> BackboneSpec:
    """The backbone architecture a run was trained with (from ``run.json``)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a pretraining run folder")
    return BackboneSpec.from_dict(json.loads(path.read_text())["spec"])


def load_snapshot(run_dir: str | Path, step: int) -> ViTBackbone:
    """The teacher backbone snapshot of ``step`` (eval mode, CPU)."""
    from safetensors.torch import load_file

    snaps = list_snapshots(run_dir)
    if step not in snaps:
        raise FileNotFoundError(f"{run_dir} has no snapshot at step {step}; it has {sorted(snaps)}")
    bb = ViTBackbone(run_spec(run_dir))
    bb.load_state_dict(load_file(str(snaps[step])))
    return bb.eval()


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What a finished (or partial) run did, from its ``metrics.jsonl`` and ``run.json``:
    steps, images seen, epochs, training minutes (sum of step times, so also right for a run
    loaded from the cache or resumed), median images/s after the first 10% of steps, device,
    precision, initial weights and backbone size."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl rows: it never took a step")
    info = json.loads((run_dir / "run.json").read_text())
    spec = BackboneSpec.from_dict(info["spec"])
    steady = [r["images_per_s"] for r in rows[len(rows) // 10 :]]
    return {
        "steps": len(rows),
        "images_seen": rows[-1]["images_seen"],
        "train_images": int(info["n_images"]),
        "epochs": rows[-1]["images_seen"] / info["n_images"],
        "train_minutes": float(sum(r["step_s"] for r in rows)) / 60,
        "images_per_s": float(np.median(steady)),
        "device": info["device"],
        "precision": info["precision"],
        "init": info["init"],
        "parameters_backbone": sum(p.numel() for p in ViTBackbone(spec).parameters()),
    }


def load_run_backbone(run_dir: str | Path, which: str = "teacher") -> ViTBackbone:
    """The ``teacher`` (DINOv2 evaluates it) or ``student`` backbone of a run's newest
    checkpoint, in eval mode on the CPU."""
    run_dir = Path(run_dir)
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint under checkpoints/")
    ck = load_checkpoint(last)
    bb = ViTBackbone(run_spec(run_dir))
    prefix = f"{which}.backbone."
    state = {k[len(prefix) :]: v for k, v in ck.model.items() if k.startswith(prefix)}
    bb.load_state_dict(state)
    return bb.eval()
