"""The paper's linear probe (Appendix C.3): a linear layer trained by AdamW on a frozen encoder
whose inputs are augmented images.

:func:`raddino_lib.eval.probe.finding_probe` fits a logistic regression on cached features of
the un-augmented images (fast, exact). The paper instead trained ``nn.Linear`` heads for 100
epochs on augmented images (batch 96, AdamW, lr 5e-5, cosine schedule; random crop, affine,
colour jitter, Gaussian noise, horizontal flip). :func:`augmented_probe` does that and returns
the same table as ``finding_probe`` (same index, same columns, same seeds: seed ``k`` trains on
the same random 80% of the training subjects in both), so chapters can show the two side by
side; :func:`augmented_probe_arrays` is the same probe on arrays already in memory.

Design (what the paper does not say is chosen here and said so):

* features: DINOv2's linear-evaluation features, CLS concatenated with the mean patch token
  (``[N, 2D]``, :func:`raddino_lib.eval.embed.probe_features` ``"cls+mean"``);
* normalisation: fixed feature standardisation (mean / std of the *un-augmented* training
  features, as ``finding_probe``'s ``StandardScaler``) rather than a non-affine BatchNorm.
  A BatchNorm would take its running statistics from augmented training features and then
  apply them to un-augmented validation / test features (a train/test mismatch), would make a
  step depend on the batch's composition, and would make the two probes differ in more than
  the optimiser and the augmentations. The head is one ``nn.Linear(2D, F)`` on standardised
  features (weights start at 0, biases at the training log-odds);
* loss: binary cross-entropy with logits, summed over the labelled (image, finding) entries
  of the batch and divided by their number; missing or uncertain labels (NaN, -1) are masked
  per finding and never enter the loss (:func:`masked_bce`);
* model selection: after every ``eval_every`` epochs the validation loss of each finding is
  computed on un-augmented validation features, and each finding keeps the head row of its
  best epoch. The findings' rows are independent (separate outputs, per-parameter AdamW), so
  this is the same as training one probe per finding and keeping its best-validation-loss
  checkpoint. The paper kept the last checkpoint, having seen no overfitting;
* cost: validation and test features are embedded once per call (from the embedding cache
  when the input side is the encoder's own). Augmented training images go through the frozen
  encoder every epoch, batched, without gradients, under bf16 autocast where the device
  supports it. With ``share_views=True`` (default) one augmented view of every training image
  is embedded per epoch and shared by all seeds (each seed still trains on its own subjects,
  in its own order): the encoder runs once per epoch instead of once per seed and epoch.
  ``share_views=False`` gives each seed its own augmentation draws (``len(seeds) *
  subsample`` times the encoder work). On a CPU the head's tiny steps run on one thread
  (they were 65x slower on two OpenMP threads of a shared 2-core machine); the encoder keeps
  the caller's thread count. The images are held in memory as float32 ``[N, S, S]``.

Determinism: a call is a deterministic function of its arguments (on one machine and thread
count). Batch order uses a ``torch.Generator`` seeded by the seed; shared views use one
seeded by the epoch, so seed ``k``'s result does not depend on which other seeds are in the
call; with ``share_views=False`` each seed's generator also draws its augmentations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from raddino_lib.eval.metrics import auprc
from raddino_lib.models.registry import Encoder, ViTEncoder, load_encoder

__all__ = [
    "DEFAULT_AUGMENT",
    "ProbeAugment",
    "augment_images",
    "augmented_probe",
    "augmented_probe_arrays",
    "class_losses",
    "masked_bce",
]

# Seeds the generator of the shared augmented views of epoch e (VIEW_SEED + e).
VIEW_SEED = 1_000_003


@dataclass(frozen=True)
class ProbeAugment:
    """Augmentations of the paper's probe (C.3) on ``[0, 1]`` grayscale images.

    Applied in this order, with independent draws per image: random resized crop (area
    fraction ``crop_scale``, aspect ratio ``crop_ratio``, log-uniform), an affine map
    (rotation within ``+-rotate`` degrees, translation within ``+-translate`` of the side,
    isotropic scale in ``scale``), all composed into one bilinear resampling at the input
    side (outside the image: 0, black); brightness (x times ``U(1 - brightness, 1 +
    brightness)``) and contrast (distance to the image mean times ``U(1 - contrast, 1 +
    contrast)``) jitter, clipped to [0, 1]; with probability ``noise_p``, Gaussian noise of
    std ``U(0, noise_std)``, clipped. The encoder's own preprocessing follows.

    ``hflip`` (the paper lists random horizontal flips) is off by default: a flipped chest
    X-ray has its heart on the wrong side, which a classifier of cardiomegaly or aortic
    enlargement should not be taught to accept. ``ProbeAugment(hflip=True)`` flips half the
    images, as the paper did.
    """

    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.2
    contrast: float = 0.2
    noise_std: float = 0.02
    noise_p: float = 0.5
    hflip: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must satisfy 0 < lo <= hi, got {self.scale}")
        for name in ("rotate", "translate", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "noise_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


DEFAULT_AUGMENT = ProbeAugment()


def augment_images(x: torch.Tensor, aug: ProbeAugment, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch ``[B, 1, S, S]`` in [0, 1] -> ``[B, 1, S, S]`` in [0, 1].

    Every random number is drawn from ``generator`` (a CPU generator; the same numbers are
    drawn whatever the options and device), so a seeded generator gives the same images.
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected grayscale images [B, 1, H, W], got {tuple(x.shape)}")
    b = x.shape[0]
    f64 = torch.float64

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator, dtype=f64)

    area = u(*aug.crop_scale)
    ratio = torch.exp(u(math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1])))
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop side / image side
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx, cy = (1 - cw) * u(-1, 1), (1 - ch) * u(-1, 1)  # crop centre, normalised coordinates
    ang = torch.deg2rad(u(-aug.rotate, aug.rotate))
    sc = u(*aug.scale)
    tx, ty = 2 * u(-aug.translate, aug.translate), 2 * u(-aug.translate, aug.translate)
    flip = torch.rand(b, generator=generator, dtype=f64) < 0.5
    fx = torch.where(flip & aug.hflip, -1.0, 1.0).to(f64)
    # sampling map (output -> input): p_in = C R(-ang) / sc (Flip p_out - t) + c
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    m = torch.stack([torch.stack([cw * cos, cw * sin], -1),
                     torch.stack([-ch * sin, ch * cos], -1)], 1)  # fmt: skip  # [B, 2, 2]
    t = torch.stack([tx, ty], -1).unsqueeze(-1)  # [B, 2, 1]
    shift = -(m @ t).squeeze(-1) + torch.stack([cx, cy], -1)
    m = m * torch.stack([fx, torch.ones_like(fx)], -1).unsqueeze(1)
    theta = torch.cat([m, shift.unsqueeze(-1)], -1).to(torch.float32)  # [B, 2, 3]

    bright = u(1 - aug.brightness, 1 + aug.brightness).float()
    contrast = u(1 - aug.contrast, 1 + aug.contrast).float()
    sigma = (
        u(0.0, aug.noise_std).float() * (torch.rand(b, generator=generator) < aug.noise_p).float()
    )
    noise = torch.randn(x.shape, generator=generator)

    dev = x.device
    grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # fmt: skip
    view = (-1, 1, 1, 1)
    out = out * bright.to(dev).view(view)
    mean = out.mean((1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast.to(dev).view(view) + mean).clamp(0, 1)
    return (out + sigma.to(dev).view(view) * noise.to(dev)).clamp(0, 1)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits over the labelled entries only.

    Args:
        logits: ``[B, F]``.
        targets: ``[B, F]`` 0/1 (any value, NaN included, where ``mask`` is False).
        mask: ``[B, F]`` bool, True where the label is known.

    Returns:
        scalar: the sum of the labelled entries' losses divided by their number (0 when no
        entry is labelled, with zero gradient). Masked entries change neither value nor
        gradient.
    """
    if logits.shape != targets.shape or mask.shape != logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )
    mask = mask.bool()
    y = torch.where(mask, targets, torch.zeros_like(targets))
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return torch.where(mask, loss, torch.zeros_like(loss)).sum() / mask.sum().clamp(min=1)


def class_losses(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-finding mean BCE over labelled entries: ``[N, F]`` -> ``[F]`` (NaN where none)."""
    mask = mask.bool()
    y = torch.where(mask, targets, torch.zeros_like(targets))
    loss = F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none")
    tot = torch.where(mask, loss, torch.zeros_like(loss)).sum(0).double().cpu().numpy()
    n = mask.sum(0).cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, tot / np.maximum(n, 1), np.nan)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (None: unchanged). The head's tiny ops ran 65x
    slower with 2 OpenMP threads than with 1 on a 2-core CPU shared with other processes."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))

    return f


@dataclass
class _Run:
    """One seed's head, optimiser and best-so-far rows (``best_w [F, 2D]``, ``best_b [F]``)."""

    rows: torch.Tensor  # [n] positions of the seed's images among the training rows
    mask: torch.Tensor  # [N_tr, F] bool: labels that enter the seed's loss
    head: nn.Linear
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    best_w: torch.Tensor
    best_b: torch.Tensor
    best_loss: np.ndarray
    best_epoch: np.ndarray


class _Views:
    """Frozen-encoder features ``[B, 2D]`` (CLS ++ mean patch) of augmented image batches."""

    def __init__(self, enc: Encoder, images: torch.Tensor, device: torch.device, bf16: bool):
        self.enc, self.images, self.device, self.bf16 = enc, images, device, bf16

    @torch.no_grad()
    def __call__(
        self, rows: torch.Tensor, aug: ProbeAugment | None, gen: torch.Generator
    ) -> torch.Tensor:
        x = self.images[rows].unsqueeze(1).to(self.device)  # [B, 1, S, S]
        if aug is not None:
            x = augment_images(x, aug, gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.enc.encode(x)
        return torch.cat([out.cls.float(), out.patches.float().mean((1, 2))], dim=1)


def augmented_probe_arrays(
    encoder: Encoder | Any,
    images: np.ndarray,
    labels: pd.DataFrame,
    split: Sequence[str],
    subjects: Sequence[object],
    *,
    base_features: np.ndarray | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    epochs: int = 100,
    lr: float = 5e-5,
    batch_size: int = 96,
    weight_decay: float = 0.01,
    warmup: float = 0.05,
    subsample: float = 0.8,
    augment: ProbeAugment | None = DEFAULT_AUGMENT,
    share_views: bool = True,
    eval_every: int = 1,
    embed_batch_size: int = 256,
    device: str = "cpu",
    precision: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """The augmented linear probe (see the module docstring) on images in memory.

    Args:
        encoder: an :class:`~raddino_lib.models.registry.Encoder` or anything
            :func:`~raddino_lib.models.registry.load_encoder` accepts; frozen (eval mode, no
            gradients), its mode is restored afterwards.
        images: ``[N, S, S]`` float in [0, 1]; augmented at side ``S``, then the encoder's
            preprocessing resizes to its input side.
        labels: ``[N, F]`` 0/1 labels (NaN or -1 = missing), columns are finding names.
        split: ``[N]`` "train" / "val" / "test".
        subjects: ``[N]`` subject ids (seeds subsample training subjects, as ``finding_probe``).
        base_features: ``[N, 2D]`` un-augmented CLS ++ mean-patch features of ``images`` (for
            standardisation, validation and test); computed here when None.
        seeds: one trained head per seed.
        epochs: passes over the seed's training images.
        lr: peak AdamW learning rate (the paper: 5e-5 at 100 epochs of a large training set).
        batch_size: images per optimiser step (the paper: 96).
        weight_decay: AdamW weight decay of the head's weights (not its biases).
        warmup: fraction of the steps with a linear learning-rate warm-up, then cosine to 0.
        subsample: fraction of training subjects per seed.
        augment: the augmentations; None trains on the un-augmented features (no encoder
            passes during training: the SGD head without the augmentations).
        share_views: one augmented view per training image and epoch, shared by the seeds.
        eval_every: epochs between validation-loss evaluations (the last epoch always is).
        embed_batch_size: images per encoder call (shared views and base features).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        precision: ``"auto"`` (bf16 where supported), ``"bf16"`` or ``"fp32"``.

    Returns:
        DataFrame indexed by finding with ``finding_probe``'s columns: ``prevalence,
        n_test_pos, auprc_mean, auprc_std, auroc_mean, auroc_std, C, val_auprc`` and
        ``seed_<k>`` / ``auroc_seed_<k>``; ``C`` is NaN (there is no inverse-L2 strength: the
        head is regularised by weight decay and early stopping), ``val_auprc`` is the mean
        over seeds of the selected heads' validation AUPRC. A finding without both classes
        among the labelled training or test images is NaN (as in ``finding_probe``); a seed's
        subsample without both classes of a finding trains that finding on all training
        images. ``df.attrs``: ``kind`` (``"augmented cls+mean"``), the hyper-parameters,
        ``best_epoch`` (finding -> selected epoch per seed), ``seconds_setup`` and
        ``seconds_per_epoch`` (all seeds of one epoch).
    """
    from raddino_lib.eval.embed import bf16_copy, embed_array, probe_features
    from raddino_lib.ssl.train import resolve_device, resolve_precision

    t0 = time.perf_counter()
    imgs = np.asarray(images)
    n = len(imgs)
    split_arr, subj = np.asarray(split), np.asarray(subjects)
    if imgs.ndim != 3:
        raise ValueError(f"expected images [N, S, S], got shape {imgs.shape}")
    if len(labels) != n or len(split_arr) != n or len(subj) != n:
        raise ValueError(
            f"images {imgs.shape}, labels {labels.shape}, split {split_arr.shape} and subjects "
            f"{subj.shape} must agree on N"
        )
    if epochs < 1 or batch_size < 1 or eval_every < 1 or embed_batch_size < 1:
        raise ValueError(
            f"epochs ({epochs}), batch_size ({batch_size}), eval_every ({eval_every}) and "
            f"embed_batch_size ({embed_batch_size}) must be >= 1"
        )
    if not 0 < subsample <= 1:
        raise ValueError(f"subsample must be in (0, 1], got {subsample}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be in [0, 1), got {warmup}")
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
    if not seeds:
        raise ValueError("augmented_probe needs at least one seed")
    tr, va, te = (split_arr == s for s in ("train", "val", "test"))
    if not (tr.any() and va.any() and te.any()):
        raise ValueError(
            f"need train, val and test images, got {int(tr.sum())} / {int(va.sum())} / "
            f"{int(te.sum())}"
        )

    enc = load_encoder(encoder)
    dev = resolve_device(device)
    bf16 = resolve_precision(precision, dev) == "bf16"
    names = list(labels.columns)
    y = labels.to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(y) & (y != -1)
    bad = ok & ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0/1 (NaN or -1 = missing), got {np.unique(y[bad])}")
    two = lambda rows, j: len(np.unique(y[rows & ok[:, j], j])) == 2  # noqa: E731
    cols = [j for j in range(len(names)) if two(tr, j) and two(te, j)]
    yc, okc = np.where(ok, y, 0.0)[:, cols], ok[:, cols]
    n_f = len(cols)

    was_training = enc.training
    enc.eval().to(dev)
    fused_before = (
        [blk.attn.fused_attn for blk in enc.backbone.blocks] if isinstance(enc, ViTEncoder) else []
    )
    try:
        if base_features is None:
            emb = embed_array(enc, imgs, batch_size=embed_batch_size, device=dev,
                              precision="bf16" if bf16 else "fp32")  # fmt: skip
            base_features = probe_features(emb, "cls+mean")
        base = np.asarray(base_features, dtype=np.float64)
        if base.ndim != 2 or len(base) != n:
            raise ValueError(f"base_features must be [N={n}, 2D], got {base.shape}")
        # the training views through the same weights as embed_array's base features: a
        # bf16-parameter copy under bf16, so that training and test features match
        views_enc = bf16_copy(enc) if bf16 else enc
        if isinstance(views_enc, ViTEncoder):  # as embed_array: blocked on CPU, fused on GPU
            views_enc.backbone.set_fused_attention(dev.type == "cuda")
        mu = base[tr].mean(0)
        sd = base[tr].std(0)
        sd = np.where(sd < 1e-8 * np.maximum(1.0, np.abs(mu)), 1.0, sd)  # as StandardScaler
        mu_t = torch.tensor(mu, dtype=torch.float32, device=dev)
        sd_t = torch.tensor(sd, dtype=torch.float32, device=dev)

        def stand(f: np.ndarray | torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(f, dtype=torch.float32, device=dev)
            return (t - mu_t) / sd_t

        x_va, x_te = stand(base[va]), stand(base[te])
        y_va = torch.tensor(yc[va], dtype=torch.float32, device=dev)
        m_va = torch.tensor(okc[va], device=dev)
        tr_idx = np.flatnonzero(tr)
        train_rows = torch.from_numpy(tr_idx)  # positions in the full arrays
        y_tr = torch.tensor(yc[tr], dtype=torch.float32, device=dev)
        x_tr_plain = stand(base[tr]) if augment is None else None
        views = _Views(views_enc, torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32)),
                       dev, bf16)  # fmt: skip
        dim = base.shape[1]

        # --- per seed: training subjects (finding_probe's rule), mask, head, optimiser
        train_subjects = np.unique(subj[tr])
        runs = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            keep_subj = rng.choice(
                train_subjects, size=max(2, int(round(subsample * len(train_subjects)))),
                replace=False,
            )  # fmt: skip
            keep = np.isin(subj[tr], keep_subj)
            mask = okc[tr] & keep[:, None]  # [N_tr, F]
            for j in range(n_f):  # subsample without both classes: all training rows
                if len(np.unique(yc[tr][mask[:, j], j])) < 2:
                    mask[:, j] = okc[tr][:, j]
            rows = np.flatnonzero(mask.any(1))  # positions among the training rows
            head = nn.Linear(dim, n_f).to(dev)
            prior = np.clip((yc[tr] * mask).sum(0) / np.maximum(mask.sum(0), 1), 1e-3, 1 - 1e-3)
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(torch.tensor(np.log(prior / (1 - prior)), dtype=torch.float32))
            opt = torch.optim.AdamW(
                [{"params": [head.weight], "weight_decay": weight_decay},
                 {"params": [head.bias], "weight_decay": 0.0}],
                lr=lr,
            )  # fmt: skip
            total = epochs * math.ceil(len(rows) / batch_size)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, _lr_lambda(total, int(round(warmup * total)))
            )
            runs.append(
                _Run(
                    rows=torch.from_numpy(rows),
                    mask=torch.tensor(mask, device=dev),
                    head=head,
                    opt=opt,
                    sched=sched,
                    gen=torch.Generator().manual_seed(int(seed)),
                    best_w=head.weight.detach().clone(),
                    best_b=head.bias.detach().clone(),
                    best_loss=np.full(n_f, np.inf),
                    best_epoch=np.zeros(n_f, dtype=int),
                )
            )

        # the head's ops are tiny: one CPU thread for them, the caller's count for the encoder
        head_threads = 1 if dev.type == "cpu" else None
        enc_threads = torch.get_num_threads()

        def step(run: _Run, feats: torch.Tensor, pos: torch.Tensor) -> None:
            """One AdamW step on standardised ``feats [B, 2D]`` of training rows ``pos``."""
            pos = pos.to(dev)
            loss = masked_bce(run.head(feats), y_tr[pos], run.mask[pos])
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.opt.step()
            run.sched.step()

        t_setup = time.perf_counter() - t0
        t_train = time.perf_counter()
        bar = tqdm(range(epochs), desc=f"augmented probe {getattr(enc, 'name', '')}".strip(),
                   disable=not progress, leave=False)  # fmt: skip
        for epoch in bar if n_f else ():  # no finding to train: no encoder passes
            shared: torch.Tensor | None = None
            if augment is None:
                shared = x_tr_plain
            elif share_views:
                gen = torch.Generator().manual_seed(VIEW_SEED + epoch)
                shared = torch.cat([
                    stand(views(train_rows[i : i + embed_batch_size], augment, gen))
                    for i in range(0, len(train_rows), embed_batch_size)
                ])  # fmt: skip
            with _threads(head_threads):
                for run in runs:
                    order = run.rows[torch.randperm(len(run.rows), generator=run.gen)]
                    for i in range(0, len(order), batch_size):
                        pos = order[i : i + batch_size]
                        if shared is not None:
                            feats = shared[pos.to(dev)]
                        else:
                            with _threads(enc_threads):
                                feats = stand(views(train_rows[pos], augment, run.gen))
                        step(run, feats, pos)
                    if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                        with torch.no_grad():
                            losses = class_losses(run.head(x_va), y_va, m_va)
                        better = np.isnan(losses) | (losses < run.best_loss)
                        idx = torch.from_numpy(np.flatnonzero(better)).to(dev)
                        run.best_w[idx] = run.head.weight.detach()[idx]
                        run.best_b[idx] = run.head.bias.detach()[idx]
                        run.best_loss = np.where(better, losses, run.best_loss)
                        run.best_epoch = np.where(better, epoch + 1, run.best_epoch)
        t_train = time.perf_counter() - t_train
    finally:
        if fused_before:
            for blk, f in zip(enc.backbone.blocks, fused_before, strict=True):
                blk.attn.fused_attn = f
        enc.train(was_training)

    # --- test (and validation) scores of the selected heads
    ap = np.full((len(seeds), n_f), np.nan)
    roc, val_ap = np.full_like(ap, np.nan), np.full_like(ap, np.nan)
    for si, run in enumerate(runs):
        with torch.no_grad():
            z_te = (x_te @ run.best_w.T + run.best_b).double().cpu().numpy()
            z_va = (x_va @ run.best_w.T + run.best_b).double().cpu().numpy()
        for k, j in enumerate(cols):
            rows_te = ok[te, j]
            ap[si, k] = auprc(y[te][rows_te, j], z_te[rows_te, k])
            roc[si, k] = float(roc_auc_score(y[te][rows_te, j], z_te[rows_te, k]))
            val_ap[si, k] = auprc(y[va, j], z_va[:, k])  # NaN without both classes in val

    rows_out = []
    nan = float("nan")
    for j, name in enumerate(names):
        m_te = te & ok[:, j]
        row: dict[str, object] = {
            "finding": name,
            "prevalence": float(np.mean(y[m_te, j])) if m_te.any() else nan,
            "n_test_pos": int(np.sum(y[m_te, j] == 1)),
        }
        if j not in cols:
            row.update(auprc_mean=nan, auprc_std=nan, auroc_mean=nan, auroc_std=nan, C=nan)
        else:
            k = cols.index(j)
            v = val_ap[:, k]
            row.update(
                auprc_mean=float(ap[:, k].mean()), auprc_std=float(ap[:, k].std()),
                auroc_mean=float(roc[:, k].mean()), auroc_std=float(roc[:, k].std()),
                C=nan, val_auprc=float(np.mean(v)) if np.isfinite(v).all() else nan,
            )  # fmt: skip
            for si, seed in enumerate(seeds):
                row[f"seed_{seed}"] = float(ap[si, k])
                row[f"auroc_seed_{seed}"] = float(roc[si, k])
        rows_out.append(row)
    out = pd.DataFrame(rows_out).set_index("finding")
    out.attrs.update(
        kind="augmented cls+mean",
        epochs=int(epochs), lr=float(lr), batch_size=int(batch_size),
        weight_decay=float(weight_decay), warmup=float(warmup), subsample=float(subsample),
        augment=None if augment is None else asdict(augment), share_views=bool(share_views),
        normalisation="standardised with un-augmented training features",
        selection=f"best validation loss per finding (every {eval_every} epochs)",
        best_epoch={names[j]: [int(r.best_epoch[k]) for r in runs]
                    for k, j in enumerate(cols)},
        seconds_setup=float(t_setup), seconds_per_epoch=float(t_train / epochs) if n_f else nan,
        encoder=str(getattr(enc, "name", "")), image_side=int(imgs.shape[-1]),
        precision="bf16" if bf16 else "fp32",
    )  # fmt: skip
    return out


def augmented_probe(
    encoder: Encoder | Any,
    root: str | Path,
    records: pd.DataFrame,
    findings: Sequence[str],
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    epochs: int = 100,
    lr: float = 5e-5,
    batch_size: int = 96,
    weight_decay: float = 0.01,
    warmup: float = 0.05,
    subsample: float = 0.8,
    augment: ProbeAugment | None = DEFAULT_AUGMENT,
    share_views: bool = True,
    eval_every: int = 1,
    embed_batch_size: int = 256,
    device: str = "cpu",
    precision: str = "auto",
    progress: bool = True,
    image_size: int | None = None,
    cache: bool = True,
) -> pd.DataFrame:
    """The paper's augmented linear probe of a frozen encoder on dataset records.

    Reads the images of ``records`` (rows of ``root/records.csv`` with ``path``, ``split``,
    ``subject_id`` and the ``findings`` columns) at side ``image_size`` (default: the
    encoder's input side; a larger side keeps detail inside random crops, at the cost of a
    resize per batch), takes the un-augmented CLS ++ mean-patch features from the embedding
    cache (:func:`raddino_lib.eval.cache.cached_embeddings`, the very features
    ``finding_probe`` sees) when the side is the encoder's own, and runs
    :func:`augmented_probe_arrays` (all other arguments are documented there).

    Returns:
        ``finding_probe``'s table for ``findings`` (see :func:`augmented_probe_arrays`).
    """
    from raddino_lib.data.arrays import image_array
    from raddino_lib.eval.cache import cached_embeddings
    from raddino_lib.eval.embed import probe_features
    from raddino_lib.ssl.train import resolve_device

    need = {"path", "split", "subject_id", *findings}
    missing = sorted(need - set(records.columns))
    if missing:
        raise ValueError(f"records lack the columns {missing}")
    if not findings:
        raise ValueError("augmented_probe needs at least one finding")
    enc = load_encoder(encoder)
    side = int(image_size or enc.preprocess.image_size)
    images = image_array(root, records, side, cache=cache, progress=progress)
    base = None
    if side == enc.preprocess.image_size:
        emb = cached_embeddings(
            enc, root, records, batch_size=embed_batch_size, device=str(resolve_device(device)),
            precision=precision, progress=progress, cache=cache,
        )  # fmt: skip
        base = probe_features(emb, "cls+mean")
    return augmented_probe_arrays(
        enc, images, records[list(findings)], records["split"].to_numpy(),
        records["subject_id"].to_numpy(), base_features=base, seeds=seeds, epochs=epochs, lr=lr,
        batch_size=batch_size, weight_decay=weight_decay, warmup=warmup, subsample=subsample,
        augment=augment, share_views=share_views, eval_every=eval_every,
        embed_batch_size=embed_batch_size, device=device, precision=precision,
        progress=progress,
    )  # fmt: skip
