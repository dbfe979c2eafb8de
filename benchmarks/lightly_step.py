"""The pretraining-step benchmark: this engine's step against lightly's DINOv2 example step
(``examples/pytorch/dinov2.py`` of lightly 1.5/1.6: ``MaskedVisionTransformerTIMM``,
``DINOv2ProjectionHead`` shared by DINO and iBOT, ``DINOLoss``, ``IBOTPatchLoss``,
``KoLeoLoss`` x 0.1, AdamW, momentum update), on the same ViT, crops, masks and batch.

Agreement first: both models start from the same weights (the timm ViT, its mask token and the
projection head are copied), see the same batch, and their first-step DINO, iBOT and KoLeo
losses must agree in fp32 (relative 1e-3) with mean centering (lightly's only centring) at the
same teacher temperature. Only then are the steps timed: ours as the training loop runs it
(bf16 autocast where the CPU has it, fp32 heads, gradient clipping), lightly's as its example
(fp32), and lightly's again under the same bf16 autocast, so the ratio does not come from
precision alone. The three are timed in interleaved rounds and each reported as its median
step, so a drift of the host's speed does not favour one of them.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from raddino_lib.config import make_config
from raddino_lib.models.backbone import spec_from_config
from raddino_lib.ssl.bench import synthetic_batch
from raddino_lib.ssl.schedules import build_schedules
from raddino_lib.ssl.train import build_model, resolve_precision, train_step


class LightlyDINOv2(nn.Module):
    """lightly's example model, built around copies of our student's weights."""

    def __init__(self, ours: nn.Module, cfg) -> None:
        from lightly.models.modules import DINOv2ProjectionHead, MaskedVisionTransformerTIMM

        super().__init__()
        bb = ours.student.backbone
        vit = copy.deepcopy(bb)
        token = nn.Parameter(bb.mask_token.detach().clone().reshape(1, 1, -1))
        self.student_backbone = MaskedVisionTransformerTIMM(
            vit=vit,
            mask_token=token,
            weight_initialization="skip",
            antialias=False,
            pos_embed_initialization="skip",
        )

        def make_head() -> nn.Module:
            return DINOv2ProjectionHead(
                input_dim=bb.embed_dim, hidden_dim=cfg.head_hidden_dim,
                bottleneck_dim=cfg.head_bottleneck_dim, output_dim=cfg.n_prototypes,
            )  # fmt: skip

        head = make_head()
        src = ours.student.dino_head
        ours_linear = [m for m in src.mlp if isinstance(m, nn.Linear)]
        theirs_linear = [m for m in head.layers if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for a, b in zip(ours_linear, theirs_linear, strict=True):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
            head.last_layer.weight_v.copy_(src.last_layer.parametrizations.weight.original1)
            head.last_layer.weight_g.fill_(1.0)
        self.student_head = head
        self.teacher_backbone = copy.deepcopy(self.student_backbone).requires_grad_(False)
        self.teacher_head = make_head()  # weight_norm modules cannot be deep-copied
        self.teacher_head.load_state_dict(head.state_dict())
        self.teacher_head.requires_grad_(False)


def lightly_losses(m: LightlyDINOv2, crit: dict, x_global, x_local, masks, temp: float) -> dict:
    """lightly's example forward and losses; ``masks [2b, N]`` bool (no CLS column)."""
    b2, n = masks.shape
    side = int(round(n**0.5))
    seq_mask = torch.zeros(b2, n + 1, dtype=torch.bool)
    seq_mask[:, 1:] = masks
    with torch.no_grad():
        t_feat = m.teacher_backbone.encode(x_global)
        t_cls = m.teacher_head(t_feat[:, 0])
        t_masked = m.teacher_head(t_feat[seq_mask])
    s_feat = m.student_backbone.encode(x_global, mask=seq_mask)
    s_cls_tok = s_feat[:, 0]
    s_cls = m.student_head(s_cls_tok)
    s_masked = m.student_head(s_feat[seq_mask])
    outs = [s_cls]
    if x_local is not None:
        outs.append(m.student_head(m.student_backbone.encode(x_local)[:, 0]))
    student_out = torch.cat(outs)
    n_views = len(student_out) // (b2 // 2)
    dino = crit["dino"](
        teacher_out=list(t_cls.chunk(2)), student_out=list(student_out.chunk(n_views)),
        teacher_temp=temp,
    )  # fmt: skip
    ibot = crit["ibot"](teacher_out=t_masked, student_out=s_masked,
                        mask=masks.reshape(b2, side, side), teacher_temp=temp)  # fmt: skip
    koleo = sum(crit["koleo"](t) for t in s_cls_tok.chunk(2))
    return {"dino_loss": dino, "ibot_loss": ibot, "koleo_loss": koleo}


def _criteria(cfg) -> dict:
    from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss

    k = cfg.n_prototypes
    return {"dino": DINOLoss(output_dim=k, student_temp=cfg.student_temp),
            "ibot": IBOTPatchLoss(output_dim=k, student_temp=cfg.student_temp),
            "koleo": KoLeoLoss()}  # fmt: skip


def compare_steps(quick: bool, steps: int | None = None) -> dict[str, Any]:
    from lightly.models.utils import update_momentum

    torch.manual_seed(0)
    cfg = make_config("laptop", centering="centering", drop_path=0.0, device="cpu")
    if quick:
        cfg = replace(cfg, batch_size=8)
    steps = steps or (2 if quick else 4)
    rounds = 1 if quick else 3
    spec = spec_from_config(cfg)
    model, opt = build_model(cfg, spec, torch.device("cpu"))
    model.train()
    batch = synthetic_batch(cfg, cfg.batch_size)
    temp = float(cfg.teacher_temp)
    lm = LightlyDINOv2(model, cfg).train()
    crit = _criteria(cfg)
    pre = model.student.backbone.preprocess
    x_global = pre(batch.global_crops)
    x_local = pre(batch.local_crops) if batch.local_crops is not None else None

    # --- agreement: same weights, same batch, fp32, first step
    ours = model.step_losses(batch, temp).metrics
    got = lightly_losses(lm, crit, x_global, x_local, batch.masks, temp)
    theirs = {k: float(v.detach()) for k, v in got.items()}
    rel = {k: abs(ours[k] - theirs[k]) / max(abs(theirs[k]), 1e-8) for k in theirs}
    agree = all(v <= 1e-3 for v in rel.values())

    # --- timing: ours as the loop runs it
    prec = resolve_precision(cfg.precision, torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16")
    sched = build_schedules(cfg).at(cfg.warmup_steps)

    def lightly_step(opt_l, bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = lightly_losses(lm, crit, x_global, x_local, batch.masks, temp)
        loss = losses["dino_loss"] + cfg.ibot_weight * losses["ibot_loss"] + (
            cfg.koleo_weight * losses["koleo_loss"])  # fmt: skip
        loss.backward()
        opt_l.step()
        opt_l.zero_grad()
        update_momentum(lm.student_backbone, lm.teacher_backbone, m=0.996)
        update_momentum(lm.student_head, lm.teacher_head, m=0.996)

    # Interleaved rounds, median per step: this host's speed drifts by 10-20% within minutes,
    # so timing one contender after the other favoured whichever ran in a fast spell.
    params = [p for p in lm.parameters() if p.requires_grad]
    opt32, opt16 = torch.optim.AdamW(params, lr=1e-3), torch.optim.AdamW(params, lr=1e-3)
    runners = {
        "ours": lambda: train_step(model, opt, batch, sched, autocast=autocast),
        "fp32": lambda: lightly_step(opt32, False),
        "bf16": lambda: lightly_step(opt16, prec == "bf16"),
    }
    for run in runners.values():
        run()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            t = time.perf_counter()
            for _ in range(steps):
                run()
            times[k].append((time.perf_counter() - t) / steps)
    out = {k: statistics.median(v) for k, v in times.items()}
    ours_s = out["ours"]
    b = cfg.batch_size
    r32, r16 = out["fp32"] / ours_s, out["bf16"] / ours_s
    vit = f"ViT {spec.embed_dim}x{spec.depth} at {cfg.global_crop_size} px, batch {b}"
    return {
        "batch": b, "image_size": cfg.global_crop_size, "local_crops": cfg.n_local_crops,
        "ours_images_per_s": round(b / ours_s, 1),
        "lightly_fp32_images_per_s": round(b / out["fp32"], 1),
        "lightly_bf16_images_per_s": round(b / out["bf16"], 1),
        "ratio": round(r32, 2), "ratio_vs_lightly_bf16": round(r16, 2),
        "goal": 1.3, "rounds": rounds, "steps_per_round": steps,
        "first_step_losses": {"ours": {k: ours[k] for k in theirs}, "lightly": theirs},
        "agree": agree,
        "line": f"pretrain: {vit}: ours {b / ours_s:.0f} img/s, lightly's example "
        f"{b / out['fp32']:.0f} img/s (fp32) / {b / out['bf16']:.0f} (bf16) -> {r32:.2f}x / "
        f"{r16:.2f}x "
        f"(goal 1.3x); first-step losses {'agree' if agree else 'DISAGREE'} "
        f"(max rel diff {max(rel.values()):.1e})",
    }  # fmt: skip
