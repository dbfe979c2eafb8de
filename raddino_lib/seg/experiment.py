"""Table 6 and Figure 4 of the paper, run: heads on frozen encoders, the U-Net ceiling, few-shot.

:func:`run_segmentation` takes the encoders and the (encoder, head) rows to train, computes
each encoder's patch-feature maps once over all views (the blocks its heads read, at
``cfg.seg_image_size``), trains every head (:func:`~raddino_lib.seg.train.fit`), predicts the
test split and scores Dice per image; then trains the end-to-end U-Net on the images, and the
few-shot points (lungs, nested training subsets).

``cfg.seg_joint``: one model per (encoder, head) learns every task at once (one output channel
per mask, the loss averaged over tasks), except the tasks of ``cfg.seg_separate``, which get a
model each; otherwise one model per task, as the paper trained.
Frozen-encoder heads with one 1x1 conv per channel are the same either way up to the shared
BatchNorm; decoders and the U-Net share their width between tasks when joint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from raddino_lib.config import Config
from raddino_lib.seg.cache import load_model_scores, model_key, save_model_scores
from raddino_lib.seg.data import TASKS, SegViews, task_channels
from raddino_lib.seg.heads import build_head, head_layers
from raddino_lib.seg.metrics import dice_per_image, dice_summary
from raddino_lib.seg.train import fit, predict_masks
from raddino_lib.seg.unet import UNet

__all__ = [
    "UNET",
    "UNET_HEAD",
    "SegRun",
    "encoder_maps",
    "example_dice",
    "task_columns",
    "few_shot_sources",
    "run_segmentation",
]

#: Encoder and head labels of the end-to-end baseline in tables ("U-Net (end to end)").
UNET = "U-Net"
UNET_HEAD = "end to end"
TASK_ORDER = tuple(TASKS)


@dataclass
class SegRun:
    """Results of :func:`run_segmentation`.

    Attributes:
        table: one row per (encoder, head, task): Dice ``mean``, ``std``, ``n`` (test images),
            per-class means, training seconds, best step.
        few_shot: one row per (encoder, head, n_train): lung Dice mean and std.
        per_image: ``{(encoder, head, task): [N_test] per-image Dice}`` (class-averaged).
        examples: ``{(encoder, head): [E, C, S, S] bool}`` predictions on the example rows.
        example_rows: view indices of the example test images.
    """

    table: pd.DataFrame
    few_shot: pd.DataFrame
    per_image: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    examples: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    example_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table.to_dict(orient="records"),
            "few_shot": self.few_shot.to_dict(orient="records"),
        }


def _device(cfg: Config) -> tuple[torch.device, str]:
    from raddino_lib.ssl.train import resolve_device, resolve_precision

    dev = resolve_device(cfg.device)
    return dev, resolve_precision(cfg.precision, dev)


def encoder_maps(
    encoder: Any, views: SegViews, layers: Sequence[int], cfg: Config
) -> dict[int, torch.Tensor]:
    """``{block: [M, D, h, w] float16}`` patch maps of every view, the encoder run at
    ``cfg.seg_image_size`` (0: its own side; position embeddings interpolated)."""
    from raddino_lib.eval.correspondence import at_side
    from raddino_lib.eval.embed import embed_array

    enc = at_side(encoder, cfg.seg_image_size)
    uniq = sorted(set(layers))
    dev, prec = _device(cfg)
    emb = embed_array(
        enc, views.images, batch_size=cfg.embed_batch_size, device=dev, precision=prec,
        layers=uniq, progress=cfg.progress,
    )  # fmt: skip
    return {i: torch.from_numpy(emb[f"layer_{i}"]).permute(0, 3, 1, 2).contiguous() for i in uniq}


def few_shot_sources(views: SegViews, n: int, seed: int = 0) -> np.ndarray:
    """Source rows of ``n`` training images (0 or more than there are: all), nested across
    ``n`` for one ``seed`` (the first ``n`` of one shuffle)."""
    src = np.unique(views.source[views.split == "train"])
    order = np.random.default_rng(seed).permutation(src)
    return np.sort(order if n <= 0 or n >= len(order) else order[:n])


def _train_rows(views: SegViews, sources: np.ndarray | None) -> np.ndarray:
    rows = views.rows("train")
    if sources is None:
        return rows
    return rows[np.isin(views.source[rows], sources)]


def _rare_positive_rows(
    masks: np.ndarray, train: np.ndarray, groups: Sequence[Sequence[int]]
) -> np.ndarray:
    """Training rows that contain a structure of a rare task: one whose structure appears on
    under half of the training rows (pneumothorax, chest tubes; not lungs or ribs).
    ``masks``: ``[M, K, S, S]`` bool; ``groups``: the channels of each task."""
    has = masks[train].any((2, 3))  # [N, K]
    rare = np.zeros(len(train), bool)
    for g in groups:
        on = has[:, list(g)].any(1)
        if on.mean() < 0.5:
            rare |= on
    return train[rare]


def _score(
    pred: np.ndarray, true: np.ndarray, tasks: Sequence[str], offsets: Mapping[str, slice]
) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    out = {}
    for t in tasks:
        sl = offsets[t]
        d = dice_per_image(pred[:, sl], true[:, sl])
        summ = dice_summary(d, present=true[:, sl].any((1, 2, 3)))
        summ["per_class"] = dict(zip(task_channels(t), d.mean(0).round(4).tolist(), strict=True))
        out[t] = (summ, d.mean(1))
    return out


def _steps(cfg: Config, steps: int, n_rows: int) -> int:
    """``steps``, raised to ``cfg.seg_epochs`` epochs over ``n_rows`` training rows."""
    if cfg.seg_epochs > 0:
        steps = max(steps, -(-cfg.seg_epochs * n_rows // cfg.seg_batch_size))
    if steps <= 0:
        raise ValueError(
            "seg_steps (or seg_unet_steps) and seg_epochs are both 0: nothing to train"
        )
    return steps


def _train_and_score(
    model: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    views: SegViews,
    tasks: Sequence[str],
    cfg: Config,
    *,
    steps: int,
    lr: float,
    loss_size: int | None = None,
    sources: np.ndarray | None = None,
    example_rows: np.ndarray | None = None,
    desc: str = "",
) -> tuple[dict[str, tuple[dict[str, Any], np.ndarray]], dict[str, Any], np.ndarray | None]:
    dev, prec = _device(cfg)
    chans = [c for t in tasks for c in task_channels(t)]
    idx = [views.channels.index(c) for c in chans]
    masks = views.masks[:, idx]
    offsets, groups, k = {}, [], 0
    for t in tasks:
        n = len(task_channels(t))
        offsets[t] = slice(k, k + n)
        groups.append(list(range(k, k + n)))
        k += n
    train = _train_rows(views, sources)
    steps = _steps(cfg, steps, len(train))
    positive = _rare_positive_rows(masks, train, groups) if cfg.seg_positive_share > 0 else None
    res = fit(
        model, inputs, masks, train, views.rows("val"),
        steps=steps, batch_size=cfg.seg_batch_size, lr=lr, loss_size=loss_size,
        eval_every=cfg.seg_eval_every, seed=cfg.seed, device=dev, precision=prec,
        groups=groups, dice_over=cfg.seg_dice_over, positive_rows=positive,
        positive_share=cfg.seg_positive_share, progress=cfg.progress, desc=desc,
    )  # fmt: skip
    test = views.rows("test")
    size = masks.shape[-1]
    pred = predict_masks(model, inputs, test, size, device=dev, precision=prec)
    scores = _score(pred, masks[test], tasks, offsets)
    ex = None
    if example_rows is not None and len(example_rows):
        ex = predict_masks(model, inputs, example_rows, size, device=dev, precision=prec)
    info = {"seconds": round(res.seconds, 2), "best_step": res.best_step, "steps": steps}
    return scores, info, ex


def _collect(out, encoder: str, head: str, table: list, per_image: dict, examples: dict) -> None:
    """Append one trained model's scores to the run's table, per-image Dice and examples
    (channels of successive task groups concatenated)."""
    scores, info, ex = out
    for t, (summ, pi) in scores.items():
        table.append({"encoder": encoder, "head": head, "task": t, **summ, **info})
        per_image[(encoder, head, t)] = pi
    if ex is not None:
        prev = examples.get((encoder, head))
        examples[(encoder, head)] = ex if prev is None else np.concatenate([prev, ex], 1)


def _opt(head: str, cfg: Config) -> dict[str, Any]:
    """Learning rate and loss side of a frozen-encoder head (the U-Net: ``cfg.seg_lr``, full
    side)."""
    lr = cfg.seg_linear_lr if head == "linear" and cfg.seg_linear_lr > 0 else cfg.seg_lr
    return {"lr": lr, "loss_size": cfg.seg_loss_size or None}


def _groups(
    tasks: Sequence[str], joint: bool, separate: Sequence[str] = ()
) -> list[tuple[str, ...]]:
    """The task groups, one model each: all tasks together when ``joint`` except those in
    ``separate`` (one model each); one model per task otherwise."""
    for t in separate:
        task_channels(t)  # an unknown task name: a clear error
    if not joint:
        return [(t,) for t in tasks]
    together = tuple(t for t in tasks if t not in separate)
    return ([together] if together else []) + [(t,) for t in tasks if t in separate]


def run_segmentation(
    cfg: Config,
    views: SegViews,
    encoders: Mapping[str, Any],
    rows: Sequence[tuple[str, str]],
    *,
    few_shot_rows: Sequence[tuple[str, str]] = (),
    unet: bool = True,
    example_rows: np.ndarray | None = None,
) -> SegRun:
    """Train and score every (encoder, head) of ``rows`` on ``cfg.seg_tasks``, the U-Net, and
    the few-shot lung curve for ``few_shot_rows`` at ``cfg.seg_shots`` (plus all images).

    Args:
        encoders: ``{name: Encoder}``; every name in ``rows`` / ``few_shot_rows`` must be here.
        rows: (encoder name, head) pairs, head one of ``"linear"``, ``"vitdet"``, ``"upernet"``.
    """
    tasks = tuple(cfg.seg_tasks)
    for t in tasks:
        task_channels(t)
    missing = sorted({e for e, _ in [*rows, *few_shot_rows]} - set(encoders))
    if missing:
        raise ValueError(f"rows name encoders that were not given: {missing}")
    joint = cfg.seg_joint
    table: list[dict[str, Any]] = []
    shots: list[dict[str, Any]] = []
    per_image: dict[tuple[str, str, str], np.ndarray] = {}
    examples: dict[tuple[str, str], np.ndarray] = {}
    n_train_all = len(few_shot_sources(views, 0))
    shot_sizes = sorted({*(s for s in cfg.seg_shots if 0 < s < n_train_all), n_train_all})
    order = list(dict.fromkeys(e for e, _ in [*rows, *few_shot_rows]))
    dev, prec = _device(cfg)
    keyed = partial(model_key, cfg, views, device=dev.type, precision=prec)
    for name in tqdm(order, desc="segmentation encoders", disable=not cfg.progress):
        enc = encoders[name]
        heads = [h for e, h in rows if e == name]
        fs_heads = [h for e, h in few_shot_rows if e == name]
        maps = _LazyMaps(enc, views, cfg, {*heads, *fs_heads})
        for head in heads:
            for group in _groups(tasks, joint, cfg.seg_separate):
                k = keyed(encoder=enc.identity(), head=head, tasks=group,
                          layers=maps.layers[head], example_rows=example_rows)  # fmt: skip
                out = _cached(cfg, k, _train_head, maps, head, group, views, cfg,
                              example_rows=example_rows, desc=f"{name} {head}")  # fmt: skip
                _collect(out, name, head, table, per_image, examples)
        for head in fs_heads:
            for n in shot_sizes:
                src = few_shot_sources(views, n, cfg.seed)
                k = keyed(encoder=enc.identity(), head=head, tasks=("lungs",),
                          layers=maps.layers[head], sources=src)  # fmt: skip
                scores, info, _ = _cached(
                    cfg, k, _train_head, maps, head, ("lungs",), views, cfg, sources=src,
                    desc=f"{name} {head} n={n}",
                )  # fmt: skip
                summ = scores["lungs"][0]
                shots.append({"encoder": name, "head": head, "n_train": n, **summ, **info})
        del maps
    if unet:
        for group in _groups(tasks, joint, cfg.seg_separate):
            k = keyed(encoder=UNET, head=UNET_HEAD, tasks=group, example_rows=example_rows,
                      pixel_stats=True)  # fmt: skip
            out = _cached(cfg, k, _train_unet, views, group, cfg, example_rows=example_rows)
            _collect(out, UNET, UNET_HEAD, table, per_image, examples)
    return SegRun(
        table=pd.DataFrame(table),
        few_shot=pd.DataFrame(shots),
        per_image=per_image,
        examples=examples,
        example_rows=np.zeros(0, int) if example_rows is None else np.asarray(example_rows),
    )


class _LazyMaps:
    """One encoder's patch maps for a set of heads, computed on first need (a fully cached
    encoder is never run)."""

    def __init__(self, enc: Any, views: SegViews, cfg: Config, heads: set[str]) -> None:
        self.enc, self.views, self.cfg = enc, views, cfg
        self.layers = {h: head_layers(enc.num_layers, h, cfg.seg_linear_layers) for h in heads}
        self._maps: dict[int, torch.Tensor] | None = None
        self.seconds = 0.0

    def inputs(self, head: str) -> list[torch.Tensor]:
        if self._maps is None:
            t0 = time.perf_counter()
            need = sorted({i for ls in self.layers.values() for i in ls})
            self._maps = encoder_maps(self.enc, self.views, need, self.cfg)
            self.seconds = round(time.perf_counter() - t0, 2)
        return [self._maps[i] for i in self.layers[head]]


def _cached(cfg: Config, key: dict[str, Any], train: Any, *args: Any, **kwargs: Any) -> Any:
    """The trained model of ``key`` from the cache (``cfg.seg_cache``), else
    ``train(*args, **kwargs)``, stored."""
    out = load_model_scores(key) if cfg.seg_cache else None
    if out is None:
        out = train(*args, **kwargs)
        if cfg.seg_cache:
            save_model_scores(key, out)
    return out


def _train_head(
    maps: _LazyMaps,
    head: str,
    group: Sequence[str],
    views: SegViews,
    cfg: Config,
    *,
    sources: np.ndarray | None = None,
    example_rows: np.ndarray | None = None,
    desc: str = "",
) -> Any:
    """Train and score one frozen-encoder head on ``group``'s tasks."""
    inputs = maps.inputs(head)
    torch.manual_seed(cfg.seed)
    n_out = sum(len(task_channels(t)) for t in group)
    model = _head(head, maps.enc.embed_dim, n_out, cfg, len(maps.layers[head]))
    out = _train_and_score(
        model, inputs, views, group, cfg, steps=cfg.seg_steps, **_opt(head, cfg),
        sources=sources, example_rows=example_rows, desc=desc,
    )  # fmt: skip
    out[1]["feature_seconds"] = maps.seconds
    return out


def _train_unet(
    views: SegViews, group: Sequence[str], cfg: Config, *, example_rows: np.ndarray | None
) -> Any:
    """Train and score the end-to-end U-Net on ``group``'s tasks."""
    torch.manual_seed(cfg.seed)
    n_out = sum(len(task_channels(t)) for t in group)
    model = UNet(n_out, cfg.seg_unet_encoder, mean=cfg.pixel_mean, std=cfg.pixel_std)
    images = torch.from_numpy(views.images).unsqueeze(1)
    return _train_and_score(
        model, [images], views, group, cfg, steps=cfg.seg_unet_steps, lr=cfg.seg_lr,
        example_rows=example_rows, desc="U-Net",
    )  # fmt: skip


def _head(head: str, dim: int, k: int, cfg: Config, n_maps: int) -> torch.nn.Module:
    """A fresh head; ``n_maps``: the number of blocks it reads (the linear head concatenates
    them; :func:`head_layers` clamps ``seg_linear_layers`` to the encoder's depth)."""
    return build_head(head, dim, k, channels=cfg.seg_channels, linear_layers=n_maps)


def example_dice(run: SegRun, views: SegViews) -> dict[tuple[str, str], float]:
    """``{(row label, task): Dice}`` of each model on the example image that
    :func:`~raddino_lib.viz.segmentation.example_for_task` shows for the task, where the
    label is ``"encoder (head)"`` and the channels are those of ``cfg.seg_tasks``."""
    from raddino_lib.viz.segmentation import example_for_task

    truth = views.masks[run.example_rows]
    out: dict[tuple[str, str], float] = {}
    for task, chans in task_columns(views).items():
        e = example_for_task(truth, chans)
        for (enc, head), pred in run.examples.items():
            d = dice_per_image(pred[e : e + 1, chans], truth[e : e + 1, chans])
            out[(f"{enc} ({head})", task)] = float(d.mean())
    return out


def task_columns(views: SegViews) -> dict[str, list[int]]:
    """``{task: channel indices into views.masks}`` for the tasks the views hold."""
    out: dict[str, list[int]] = {}
    for t in (t for t in TASK_ORDER if all(c in views.channels for c in task_channels(t))):
        out[t] = [views.channels.index(c) for c in task_channels(t)]
    return out
