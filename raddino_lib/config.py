"""Presets (``smoke``, ``laptop``, ``paper``) and chapter parameter validation.

Every knob that any chapter or library entry point reads lives in :class:`Config`. A chapter's
first code cell is the papermill ``parameters`` cell (``preset`` plus optional overrides); its
second cell calls :func:`chapter_config`, which refuses unknown names and wrongly typed values
(papermill itself only warns about them).

A parameter set to ``None`` in a chapter's parameters cell means "use the preset's value".
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


class ParameterError(ValueError):
    """A chapter or CLI parameter has an unknown name or a value of the wrong type."""


@dataclass(frozen=True)
class Config:
    """All knobs of one run. Field names are the papermill parameter names."""

    preset: str = "laptop"

    # --- run -----------------------------------------------------------------------------
    seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)  # evaluation seeds (the paper uses 5)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 where the device supports it)
    num_workers: int = 0
    # independent cached runs a chapter needs (chapter 3's general-domain and CLIP runs, chapter
    # 6's MIM pair, chapter 7's report generators) train this many at a time, each in its own
    # process on its share of the CPU cores (raddino_lib.lanes); 1: one after the other in the
    # notebook's process
    concurrent_runs: int = 1
    progress: bool = True

    # --- data ----------------------------------------------------------------------------
    data_dir: str | None = None  # a dataset folder in the generic format; None: the phantom
    # or a real dataset as downloaded: an adapter name (vindr, mimic, nih, padchest, ...; see
    # raddino_lib.data.adapters) and its folder; records are built once into .cache/datasets
    dataset: str | None = None
    data_root: str | None = None
    phantom_n: int = 4000
    phantom_size: int = 256
    phantom_seed: int = 0
    max_images: int | None = None  # cap on training images (data-size ablation)
    cohorts: tuple[str, ...] | None = None  # restrict training data to these cohorts
    frontal_only: bool = False

    # --- backbone ------------------------------------------------------------------------
    image_size: int = 96  # encoder input side in pixels
    patch_size: int = 8
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    init: str = "random"  # random | a local folder (DINOv2 / timm / transformers format)
    drop_path: float = 0.1
    layerscale_init: float = 1e-5  # LayerScale gamma at init (DINOv2: 1e-5)
    pixel_mean: float = 0.5  # intensity normalisation of [0, 1] images
    pixel_std: float = 0.25

    # --- self-supervised pretraining (DINOv2 recipe, reference.md section 2) -----------
    pretrain_steps: int = 2000
    batch_size: int = 64
    base_lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_steps: int = 200
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    n_local_crops: int = 4
    global_crop_size: int = 96
    local_crop_size: int = 40
    global_crop_scale: tuple[float, float] = (0.5, 1.0)  # crop side as a fraction of the image
    local_crop_scale: tuple[float, float] = (0.2, 0.5)
    n_prototypes: int = 1024
    head_hidden_dim: int = 512
    head_bottleneck_dim: int = 128
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    teacher_temp_end: float = 0.07
    teacher_temp_warmup_steps: int = 600
    centering: str = "centering"  # centering | sinkhorn_knopp
    momentum_start: float = 0.992
    momentum_end: float = 1.0
    mim: bool = True
    ibot_separate_head: bool = False  # DINOv2 default: the iBOT loss shares the DINO head
    mask_sample_prob: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    grad_clip: float = 3.0
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_steps: int = 100
    checkpoint_every: int = 250
    snapshot_every: int = 250  # teacher-backbone snapshots for the learning curve (0: none)

    # --- evaluation --------------------------------------------------------------------
    probe_epochs: int = 100
    probe_lr: float = 5e-4
    probe_batch_size: int = 96
    probe_max_train: int | None = None
    pixel_floor_size: int = 32  # side of the downsampled raw-pixel baseline
    n_gallery: int = 4
    probe_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # frozen-encoder comparison (paper: 5)
    probe_kinds: tuple[str, ...] = ("cls", "cls+mean", "cls+mean+grid")  # chosen on val
    probe_grid: int = 4  # side of the pooled patch grid of the "cls+mean+grid" features
    embed_batch_size: int = 256
    # more encoders for the comparison chapters, as "name=source" (a local transformers /
    # timm / DINOv2 folder or weights file, "timm:ARCH=FILE", or a hub id where reachable)
    extra_encoders: tuple[str, ...] = ()
    # patch correspondences and attention (chapter 5); corr_* fields never touch training
    corr_pairs: int = 300  # (query, target) image pairs of different subjects
    corr_image_size: int = 0  # encoder input side for patch grids (0: each encoder's own)
    corr_examples: int = 3  # images in the attention and correspondence figures
    # segmentation on frozen encoders (chapter 6); seg_* fields never touch training
    seg_tasks: tuple[str, ...] = ("lungs", "zones", "pneumothorax", "chest_tubes", "ribs")
    seg_max_images: int = 1000  # frontal images with masks, split 70/15/15 by subject (0: all)
    seg_size: int = 128  # side of masks, predictions and Dice
    seg_image_size: int = 128  # encoder input side (0: each encoder's own)
    seg_views: int = 2  # augmented copies of each training image (features computed once)
    seg_steps: int = 300  # optimiser steps per model (at least; see seg_epochs)
    seg_epochs: int = 0  # when > 0, at least this many epochs over the training views
    seg_batch_size: int = 32
    seg_lr: float = 3e-3  # Adam, cosine schedule (the paper: 5e-4)
    seg_linear_lr: float = 1e-2  # the linear heads' learning rate (0: seg_lr)
    seg_loss_size: int = 64  # side of the heads' training loss (0: seg_size; Dice at seg_size)
    seg_dice_over: str = "image"  # soft Dice loss per "image" or over the "batch"
    seg_positive_share: float = 0.0  # share of each batch drawn from images with a rare structure
    seg_eval_every: int = 50  # validation loss every this many steps; the best is kept
    seg_channels: int = 32  # decoder width of the ViTDet and UPerNet heads (mmseg: 512)
    seg_joint: bool = True  # one model per (encoder, head) for all tasks (False: per task)
    seg_separate: tuple[str, ...] = ("ribs",)  # tasks given a model of their own when joint
    seg_linear_layers: int = 4  # blocks concatenated by the linear head (DINOv2: 1 or 4)
    seg_unet_encoder: str = "tu-tinynet_e"  # segmentation-models-pytorch encoder, no weights
    seg_unet_steps: int = 300
    seg_cache: bool = True  # trained models' scores cached by key (a warm rerun trains nothing)
    seg_shots: tuple[int, ...] = (8, 32)  # few-shot training-set sizes (lungs; all is added)
    seg_few_shot_heads: tuple[str, ...] = ("linear", "upernet")  # RAD-DINO's few-shot heads
    seg_mim_heads: tuple[str, ...] = ("linear", "upernet")  # heads of the MIM ablation pair
    # report generation on frozen encoders (chapter 7, Table 5); rg_* never touch pretraining
    rg_lm: str = "gpt2"  # gpt2 | llama (small decoder from scratch) | a local causal-LM folder
    rg_vocab_size: int = 1000  # byte-level BPE trained on the training reports (small LMs)
    # laptop: a 128-wide 4-layer GPT-2 trained 400 steps of 16 reports at lr 3e-3 (~75 s per
    # encoder on 2 cores); more small steps beat fewer large ones for the same compute
    rg_width: int = 128  # small decoder width, depth, heads and dropout
    rg_depth: int = 4
    rg_heads: int = 4
    rg_dropout: float = 0.1
    rg_template: str = "plain"  # prompt template: plain | vicuna_v1 (LLaVA-1.5 + Vicuna)
    rg_max_report_tokens: int = 128  # report tokens kept for training (longer ones are cut)
    rg_token_pool: int = 1  # average-pool the patch grid by this factor before the projector
    rg_max_train: int = 0  # training reports (0: all frontal training reports)
    rg_steps: int = 400  # optimiser steps (at least; see rg_epochs)
    # small decoders: steps of one text-only LM on the training reports that every generator's
    # LM starts from (the pretrained LM of LLaVA; 0: each LM from random init, rg_steps alone)
    rg_prior_steps: int = 0
    rg_epochs: int = 0  # when > 0, at least this many epochs over the training reports
    rg_batch_size: int = 16
    rg_micro_batch: int = 0  # rows per forward pass, gradient accumulation (0: whole batch)
    rg_lr: float = 3e-3  # AdamW, warm-up then cosine (LLaVA-1.5: 2e-5)
    rg_warmup: float = 0.03  # warm-up fraction of the steps (LLaVA-1.5: 3%)
    rg_weight_decay: float = 0.0
    rg_grad_ckpt: bool = False  # gradient checkpointing in the LM
    rg_checkpoint_every: int = 0  # resumable checkpoint every this many steps (0: none)
    rg_max_test: int = 0  # test reports generated and scored (0: all)
    rg_max_new_tokens: int = 128  # greedy decoding length (paper: 150)
    rg_gen_batch_size: int = 64  # images decoded at once (paper: 1)
    rg_bootstrap: int = 500  # bootstrap resamples of the test reports (paper: 500)
    rg_examples: int = 3  # generated reports shown beside their references
    # generator training runs per encoder (seeds seed, seed + 1, ...; the text prior is
    # shared): metrics are averaged over the runs, and their intervals resample the runs as
    # well as the test reports, so a verdict covers the training's variance too
    rg_runs: int = 1

    # --- in-project baselines (chapter 3) -----------------------------------------------
    # general-domain DINO: the same engine and recipe on natural-image crops (DINOv2 stand-in)
    # pretraining sweeps of the ablation chapters (8-10); ablation_* never touch a run's
    # fingerprint except through the fields a sweep point sets
    # laptop: 500 steps of 32 images, about 4.5 min per 64 px run here (0.53 s a step); a
    # 600 x 32 pilot of the reference run left the VinDr-style probe at its random-init level
    ablation_steps: int = 500  # optimiser steps of every sweep point (one budget per sweep)
    ablation_batch_size: int = 32  # images per step of every sweep point (0: batch_size)
    ablation_snapshot_every: int = 100  # teacher snapshots, for early stopping on validation
    ablation_sizes: tuple[int, ...] = (32, 48, 64)  # the resolution ladder (input sides)
    ablation_data_points: int = 3  # rungs of the data-size ladder (the last is all images)
    general_pretrain_steps: int = 1000
    natural_n: int = 4000  # natural-image crops in its training set
    # text-supervised CLIP-style encoder on image-report pairs (BioViL-T/BiomedCLIP stand-in)
    clip_steps: int = 1500
    clip_batch_size: int = 128
    clip_lr: float = 5e-4
    clip_weight_decay: float = 0.1
    clip_warmup_steps: int = 100
    clip_proj_dim: int = 128
    text_width: int = 128
    text_depth: int = 2
    text_heads: int = 4
    text_max_len: int = 64
    vocab_size: int = 1000

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the config (tuples become lists)."""
        items = dataclasses.asdict(self).items()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


_SMOKE = Config(
    preset="smoke",
    layerscale_init=1.0,
    centering="sinkhorn_knopp",
    teacher_temp=0.01,
    teacher_temp_end=0.01,
    seeds=(0, 1),
    phantom_n=96,
    phantom_size=64,
    image_size=32,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    drop_path=0.0,
    pretrain_steps=4,
    batch_size=8,
    warmup_steps=1,
    n_local_crops=2,
    global_crop_size=32,
    local_crop_size=16,
    n_prototypes=64,
    head_hidden_dim=64,
    head_bottleneck_dim=32,
    teacher_temp_warmup_steps=2,
    freeze_last_layer_steps=1,
    checkpoint_every=2,
    snapshot_every=2,
    probe_epochs=3,
    probe_batch_size=16,
    pixel_floor_size=16,
    n_gallery=2,
    probe_seeds=(0, 1),
    probe_grid=2,
    corr_pairs=6,
    corr_examples=2,
    seg_max_images=40,
    seg_size=32,
    seg_image_size=0,
    seg_views=1,
    seg_steps=4,
    seg_batch_size=8,
    seg_eval_every=2,
    seg_channels=8,
    seg_unet_steps=2,
    seg_loss_size=16,
    seg_shots=(4,),
    rg_vocab_size=200,
    rg_width=32,
    rg_depth=1,
    rg_heads=2,
    rg_max_report_tokens=48,
    rg_steps=4,
    rg_prior_steps=4,
    rg_batch_size=8,
    rg_max_test=8,
    rg_max_new_tokens=16,
    rg_gen_batch_size=8,
    rg_bootstrap=50,
    rg_examples=2,
    embed_batch_size=32,
    general_pretrain_steps=4,
    natural_n=64,
    ablation_steps=2,
    ablation_batch_size=0,
    ablation_snapshot_every=1,
    ablation_sizes=(24, 32),
    ablation_data_points=2,
    clip_steps=4,
    clip_batch_size=8,
    clip_warmup_steps=1,
    clip_proj_dim=16,
    text_width=32,
    text_depth=1,
    text_heads=2,
    text_max_len=48,
    vocab_size=200,
)

# The laptop recipe departs from DINOv2's defaults where a from-scratch CPU run measured it had
# to (chapter 2 and shared/notes/cpu-ssl-feasibility.md): LayerScale starts at 1 (1e-5 makes
# the CLS token constant across images), Sinkhorn-Knopp targets at a low constant teacher
# temperature (mean centring with the 0.04 -> 0.07 warm-up drifted back to uniform), and no
# local crops (they carry little of an image's identity at 64 px and cost a third of a step).
_LAPTOP = Config(
    preset="laptop",
    image_size=64,
    global_crop_size=64,
    local_crop_size=32,
    n_local_crops=0,
    layerscale_init=1.0,
    centering="sinkhorn_knopp",
    teacher_temp=0.01,
    teacher_temp_end=0.01,
    warmup_steps=100,
    # the book's hour (issue 10): the main run is 800 steps of 64 (51k images; chapter 2's
    # 2000-step run had reached 0.318 of its final 0.328 macro AUPRC by 750 steps), the
    # general-domain run 300 and the text-supervised one 300 (at 500 each they cost 16 of the
    # cold book's 108 minutes; chapter 3's probes put both within 0.005 macro AUPRC of raw
    # pixels and of RAD-DINO-mini either way); at 250 each (session 12, for the hour) they
    # cost about 8 minutes
    pretrain_steps=800,
    snapshot_every=200,
    # the teacher's EMA momentum ends at 0.996, not 1: with DINOv2's cosine to 1 an 800-step
    # run froze its teacher for the last quarter (VinDr-style probe 0.286, +0.016 over random
    # init); ending at 0.996 it kept learning to the last step (0.303, +0.033; the 2000-step
    # run reached 0.328)
    momentum_end=0.996,
    # two runs side by side on the 2 cores (raddino_lib.lanes): the general-domain run beside
    # CLIP and the MIM pair train 1.2-1.3x sooner than one after the other, the report
    # generators 1.6x
    concurrent_runs=2,
    general_pretrain_steps=250,
    clip_steps=250,
    # 96 tokens hold 98% of the phantom's reports
    text_max_len=96,
    # report generators: 400 steps left every per-class F1 but support devices, no finding
    # and effusion at 0 (the generators wrote the prior); 2000 (about 15 epochs) learned
    # cardiomegaly from the image. 1500 steps on the patch grid pooled 2 x 2 (16 tokens;
    # 0.078 s a step here against 0.173 s for 64 tokens with attention dropout and SDPA). Now
    # one text prior of 1500 steps that every generator starts from, then 500 steps each:
    # chapter 7 took 484 s instead of 1136 s, final losses 0.66 instead of 0.73, and every
    # image-conditioned generator still beat the no-image one by 5 or more Macro-F1-14 points.
    # For the hour: a prior of 1000 steps and 400 per generator (about 5 of the 8 minutes)
    rg_steps=400,
    rg_prior_steps=1000,
    rg_token_pool=2,
    # three runs per encoder: one run's verdicts flipped with the order of float sums alone
    # (chapter 7); the two extra runs cost about 4 minutes side by side
    rg_runs=3,
    # segmentation: the few-shot curve and the MIM pair with the linear head only (UPerNet
    # there cost about 9 of the chapter's minutes); 200 steps a model and no augmented copies
    # (300 steps on two copies: 20 of the cold book's minutes for the heads and the U-Net);
    # 160 steps (session 12, for the hour; the convolutions now run channels-last)
    # lr 1e-2 (the paper: 5e-4 over far more steps): at 160 steps and 3e-3 the 20-rib models
    # had not taken off (UPerNet rib Dice 10.9%, U-Net 28.1%); at 1e-2 67.5% and 49.4%, and
    # UPerNet's zones 80.6 -> 89.4% (same steps, same seconds)
    seg_views=1,
    seg_steps=160,
    seg_unet_steps=160,
    seg_lr=1e-2,
    # the ablation sweeps' seven runs (chapters 6-10) cost 23 of the cold book's 90 minutes at
    # 500 steps of 32; 400 steps (12.8k images, 4.6 epochs of the 2.8k training images) cost
    # about 20 of 83; 300 steps (9.6k images, 3.4 epochs) for the hour
    ablation_steps=300,
    seg_few_shot_heads=("linear",),
    seg_mim_heads=("linear",),
    # the augmented (paper) probe: 6 epochs x 5 seeds of one encoder take about a minute and
    # a half here; at that few steps the paper's lr (5e-5 over 100 epochs) barely moves the head
    probe_epochs=6,
    probe_lr=1e-2,
)

_PAPER = Config(
    preset="paper",
    seeds=(0, 1, 2, 3, 4),
    device="cuda",
    precision="bf16",
    num_workers=8,
    phantom_n=20000,
    phantom_size=518,
    image_size=518,
    patch_size=14,
    embed_dim=768,
    depth=12,
    num_heads=12,
    drop_path=0.3,
    pixel_mean=0.5307,
    pixel_std=0.2583,
    pretrain_steps=60000,
    batch_size=640,
    warmup_steps=6000,
    n_local_crops=8,
    global_crop_size=518,
    local_crop_size=196,
    global_crop_scale=(0.5, 1.0),
    local_crop_scale=(0.2, 0.5),
    n_prototypes=65536,
    head_hidden_dim=2048,
    head_bottleneck_dim=256,
    teacher_temp_warmup_steps=18000,
    freeze_last_layer_steps=600,
    checkpoint_every=1000,
    snapshot_every=10000,
    probe_epochs=100,
    probe_lr=5e-5,
    pixel_floor_size=64,
    n_gallery=6,
    embed_batch_size=64,
    # section C.3: batch 80, Adam 5e-4, cosine, 100 epochs, 518 px, one model per task; the
    # frozen feature maps of a view (4 blocks of 37 x 37 x 768, fp16) take 8.4 MB of RAM
    seg_max_images=0,
    seg_size=518,
    seg_image_size=0,
    seg_views=1,
    seg_steps=0,
    seg_epochs=100,
    seg_batch_size=80,
    seg_lr=5e-4,
    seg_linear_lr=0.0,
    seg_loss_size=0,
    seg_eval_every=100,
    seg_channels=512,
    seg_joint=False,
    seg_unet_encoder="efficientnet-b6",
    seg_unet_steps=0,
    seg_shots=(8, 16, 32, 64, 128, 256),
    # section 4.2 and D: LLaVA-1.5 single-stage fine-tuning of projector + Vicuna-7B v1.5 (a
    # local folder; nothing is downloaded), batch 128, lr 2e-5, cosine, 3% warm-up, 3 epochs,
    # greedy decoding of up to 150 tokens one image at a time, all 2,461 test reports
    rg_lm="models/vicuna-7b-v1.5",
    rg_template="vicuna_v1",
    rg_max_report_tokens=512,
    rg_steps=0,
    rg_epochs=3,
    rg_batch_size=128,
    rg_micro_batch=8,
    rg_lr=2e-5,
    rg_grad_ckpt=True,
    rg_checkpoint_every=200,
    rg_max_test=0,
    rg_max_new_tokens=150,
    rg_gen_batch_size=1,
    rg_examples=5,
    general_pretrain_steps=60000,
    ablation_steps=60000,
    ablation_batch_size=0,
    ablation_snapshot_every=5000,
    ablation_sizes=(224, 336, 448, 518),
    ablation_data_points=4,
    natural_n=100000,
    clip_steps=20000,
    clip_batch_size=256,
    clip_lr=1e-4,
    clip_warmup_steps=1000,
    clip_proj_dim=512,
    text_width=512,
    text_depth=6,
    text_heads=8,
    text_max_len=128,
    vocab_size=8000,
)

PRESETS: dict[str, Config] = {"smoke": _SMOKE, "laptop": _LAPTOP, "paper": _PAPER}
DEFAULT_PRESET = "laptop"

_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Config)
VALID_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Config))

# Names IPython/papermill put into a kernel's namespace that are not parameters.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(name: str, value: Any, tp: Any) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float, list -> tuple) or raise ParameterError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(name, value, arg)
            except ParameterError as exc:
                errors.append(str(exc))
        raise ParameterError(
            f"parameter {name!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        )
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ParameterError(
                f"parameter {name!r} must be a list of {_type_name(args[0])}, got {value!r}"
            )
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(name, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ParameterError(
                f"parameter {name!r} must have {len(args)} values, got {len(value)}: {value!r}"
            )
        return tuple(_check_value(name, v, a) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ParameterError(
        f"parameter {name!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )


def _unknown_message(unknown: list[str]) -> str:
    return (
        f"unknown parameter(s) {', '.join(repr(u) for u in unknown)}. "
        f"Valid names: {', '.join(VALID_NAMES)}"
    )


def validate_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and types of ``params``; return them coerced (``preset`` included).

    Raises:
        ParameterError: an unknown name (the message lists the valid ones), an unknown preset,
            or a value of the wrong type.
    """
    unknown = sorted(k for k in params if k not in VALID_NAMES)
    if unknown:
        raise ParameterError(_unknown_message(unknown))
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:  # None means: keep the preset's value
            continue
        if name == "preset":
            if value not in PRESETS:
                raise ParameterError(
                    f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}"
                )
            out[name] = value
            continue
        out[name] = _check_value(name, value, _FIELD_TYPES[name])
    return out


def make_config(preset: str = DEFAULT_PRESET, **overrides: Any) -> Config:
    """The ``preset``'s config with ``overrides`` applied (validated)."""
    checked = validate_overrides({"preset": preset, **overrides})
    base = PRESETS[checked.pop("preset", preset)]
    return replace(base, **checked)


def chapter_config(namespace: Mapping[str, Any], chapter: str) -> Config:
    """Build the config of a chapter from the variables its parameters cell defined.

    Call it in the cell right after the parameters cell (and papermill's injected cell), before
    anything else is defined: every public, non-module variable of ``namespace`` is taken as a
    parameter. Names starting with ``_`` are ignored, so import helpers as ``_rc``.

    Raises:
        ParameterError: naming the chapter, the unknown parameters and the valid names.
    """
    params = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _KERNEL_NAMES
        and not isinstance(v, types.ModuleType)
        and not callable(v)
    }
    try:
        preset = params.pop("preset", DEFAULT_PRESET) or DEFAULT_PRESET
        return make_config(preset, **params)
    except ParameterError as exc:
        raise ParameterError(f"chapter {chapter!r}: {exc}") from None


def describe(cfg: Config, keys: tuple[str, ...] | None = None) -> str:
    """A short Markdown table of the config's values (all, or ``keys``), for chapters."""
    base = PRESETS[cfg.preset]
    rows = ["| parameter | value | preset default |", "|---|---|---|"]
    for f in fields(cfg):
        if keys is not None and f.name not in keys:
            continue
        v, d = getattr(cfg, f.name), getattr(base, f.name)
        rows.append(f"| `{f.name}` | {v!r} | {'' if v == d else repr(d)} |")
    return "\n".join(rows)


__all__ = [
    "Config",
    "DEFAULT_PRESET",
    "PRESETS",
    "ParameterError",
    "VALID_NAMES",
    "chapter_config",
    "describe",
    "make_config",
    "validate_overrides",
]


def with_resolution(cfg: Config, resolution: int) -> Config:
    """``cfg`` at another encoder input side: ``image_size`` and the global crop become
    ``resolution``; the local crop keeps its ratio to the global crop (paper: 196 / 518),
    rounded to a multiple of the patch size."""
    p = cfg.patch_size
    if resolution < p or resolution % p:
        raise ParameterError(
            f"resolution {resolution} must be a positive multiple of patch_size {p}"
        )
    ratio = cfg.local_crop_size / cfg.global_crop_size
    local = max(p, int(round(resolution * ratio / p)) * p)
    return replace(cfg, image_size=resolution, global_crop_size=resolution, local_crop_size=local)
