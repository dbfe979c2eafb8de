"""Student and EMA teacher, and the three losses of one step (DINOv2 ``ssl_meta_arch.py``).

Student: backbone (with drop path, masks on the global crops) -> DINO head on the CLS of every
crop, the iBOT head (shared with the DINO head by default) on the masked patch tokens.
Teacher: an EMA copy without drop path that sees the two unmasked global crops only.

Loss = DINO(CLS) + ``ibot_weight`` * iBOT(masked patches) + ``koleo_weight`` * KoLeo(student
backbone CLS of each global crop, summed over the two crops as DINOv2's code does).

Under bf16 autocast the teacher's backbone runs as a bf16 copy of its EMA weights, refreshed
from the float32 master at every step (the EMA itself stays float32: a 0.004 update is below
bf16's resolution). Autocast would cast the same weights at every call and every LayerNorm's
input and output too; the copy took the teacher forward from 0.25 to 0.21 s of a 0.77 s laptop
step on the 2-core CPU, with CLS cosine 0.9999 to the autocast forward.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from raddino_lib.config import Config
from raddino_lib.models.backbone import BackboneSpec, ViTBackbone
from raddino_lib.ssl.data import PretrainBatch
from raddino_lib.ssl.heads import DINOHead
from raddino_lib.ssl.losses.dino import DINOLoss, dist_mean_, prototype_diagnostics
from raddino_lib.ssl.losses.ibot import IBOTPatchLoss
from raddino_lib.ssl.losses.koleo import koleo_loss_crops

__all__ = ["SSLModel", "StepOutput", "Student"]


def _fp32(device_type: str) -> torch.autocast:
    """The heads run in float32 even under bf16 autocast: their logits are cosines whose
    differences between images (~0.05 at the start) are close to bf16's resolution."""
    return torch.autocast(device_type, enabled=False)


class Student(nn.Module):
    """Backbone + heads; ``forward`` runs the student side of one step (the DDP entry point).

    Attributes:
        backbone: :class:`ViTBackbone`.
        dino_head: :class:`DINOHead`.
        ibot_head: a second :class:`DINOHead`, or ``None`` when iBOT shares ``dino_head``.
    """

    def __init__(
        self, backbone: ViTBackbone, dino_head: DINOHead, ibot_head: DINOHead | None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    @property
    def patch_head(self) -> DINOHead:
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None,
        masks: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``global_crops [2b,1,G,G]``, ``local_crops [n_l b,1,L,L]``, ``masks [2b,N]`` ->
        ``cls [2b,D]`` (backbone), ``global_logits [2b,K]``, ``local_logits [n_l b,K]``,
        ``patch_logits [M,K]`` for the ``M = masks.sum()`` masked patches."""
        g = self.backbone.forward_tokens(global_crops, masks)
        loc = self.backbone.forward_tokens(local_crops) if local_crops is not None else None
        with _fp32(global_crops.device.type):
            out = {"cls": g["cls"], "global_logits": self.dino_head(g["cls"].float())}
            if loc is not None:
                out["local_logits"] = self.dino_head(loc["cls"].float())
            out["patch_logits"] = self.patch_head(g["patches"][masks].float())
        return out

    @torch.no_grad()
    def teacher_outputs(
        self,
        global_crops: torch.Tensor,
        masks: torch.Tensor,
        backbone: ViTBackbone | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher side: unmasked global crops -> ``cls [2b, D]``, ``global_logits [2b, K]``,
        ``patch_logits [M, K]`` at the positions the student saw masked.

        ``backbone``: a low-precision copy of ``self.backbone`` to run instead (its input is
        normalised in float32 by ``self.backbone`` and then cast to the copy's dtype)."""
        if backbone is None:
            g = self.backbone.forward_tokens(global_crops)
        else:
            dtype = next(backbone.parameters()).dtype
            x = self.backbone.preprocess(global_crops).to(dtype)
            g = backbone.forward_tokens(x, normalized=True)
        with _fp32(global_crops.device.type):
            return {
                "cls": g["cls"],
                "global_logits": self.dino_head(g["cls"].float()),
                "patch_logits": self.patch_head(g["patches"][masks].float()),
            }


@dataclass
class StepOutput:
    loss: torch.Tensor
    metrics: dict[str, float]


def _cls_std(cls: torch.Tensor) -> float:
    """Spread of L2-normalised CLS embeddings ``[M, D]`` across the batch, scaled by sqrt(D):
    about 1 for isotropic embeddings, 0 when every image maps to the same vector."""
    z = nn.functional.normalize(cls.detach().float(), dim=-1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[-1]))


class SSLModel(nn.Module):
    """Student, teacher and loss state of one pretraining run.

    ``state_dict()`` holds ``student.*``, ``teacher.*``, ``dino_loss.center`` and
    ``ibot_loss.center``: everything a checkpoint needs besides the optimizer.
    """

    def __init__(self, cfg: Config, spec: BackboneSpec) -> None:
        super().__init__()
        self.cfg = cfg
        head_kw = dict(
            n_prototypes=cfg.n_prototypes,
            hidden_dim=cfg.head_hidden_dim,
            bottleneck_dim=cfg.head_bottleneck_dim,
        )
        backbone = ViTBackbone(spec, drop_path=cfg.drop_path)
        dino_head = DINOHead(spec.embed_dim, **head_kw)
        ibot_head = DINOHead(spec.embed_dim, **head_kw) if cfg.ibot_separate_head else None
        self.student = Student(backbone, dino_head, ibot_head)
        teacher_backbone = ViTBackbone(spec, drop_path=0.0)
        self.teacher = Student(
            teacher_backbone,
            copy.deepcopy(dino_head),
            None if ibot_head is None else copy.deepcopy(ibot_head),
        )
        self.sync_teacher()
        self.teacher.requires_grad_(False)
        self.dino_loss = DINOLoss(cfg.n_prototypes, cfg.student_temp, centering=cfg.centering)
        self.ibot_loss = IBOTPatchLoss(cfg.n_prototypes, cfg.student_temp, centering=cfg.centering)

    @torch.no_grad()
    def sync_teacher(self) -> None:
        """Teacher <- student (at initialisation and after loading initial weights)."""
        self.teacher.load_state_dict(self.student.state_dict())

    @torch.no_grad()
    def lowp_teacher_backbone(self, dtype: torch.dtype) -> ViTBackbone:
        """The teacher backbone's weights as a ``dtype`` copy (made on first use, refreshed from
        the float32 teacher on every call, so it always equals the current EMA weights cast).

        The copy is not a registered submodule: it is absent from ``state_dict()``,
        ``parameters()`` and ``.to()``; it follows the teacher's device by itself."""
        src = self.teacher.backbone
        device = src.pos_embed.device
        held = self.__dict__.get("_lowp_teacher")
        if held is None or held.pos_embed.dtype != dtype or held.pos_embed.device != device:
            held = copy.deepcopy(src).to(dtype)
            held.requires_grad_(False)
            held.eval()
            self.__dict__["_lowp_teacher"] = held
        else:
            torch._foreach_copy_(list(held.parameters()), list(src.parameters()))
        held.set_fused_attention(bool(src.blocks[0].attn.fused_attn))
        return held

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA: ``teacher <- m * teacher + (1 - m) * student`` for every parameter."""
        t = [p for p in self.teacher.parameters()]
        s = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)

    def train(self, mode: bool = True) -> SSLModel:
        super().train(mode)
        self.teacher.eval()
        return self

    def step_losses(
        self,
        batch: PretrainBatch,
        teacher_temp: float,
        student: nn.Module | None = None,
        autocast: torch.autocast | None = None,
    ) -> StepOutput:
        """Forward both networks on ``batch`` and return the weighted loss and metrics.

        ``student`` is the module to call (the DDP wrapper under torchrun; default
        ``self.student``). ``autocast`` is an entered-per-call autocast context (bf16) or None.
        Centres are updated (all-reduced across ranks) as a side effect.
        """
        cfg = self.cfg
        student = student if student is not None else self.student
        masks = batch.masks if cfg.mim else torch.zeros_like(batch.masks)
        n_global = 2
        ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
        lowp = None
        if autocast is not None and autocast._enabled and autocast.fast_dtype == torch.bfloat16:
            lowp = self.lowp_teacher_backbone(torch.bfloat16)
        with torch.no_grad(), ctx:
            tg = self.teacher.teacher_outputs(batch.global_crops, masks, lowp)
        t_logits, t_patch_logits = tg["global_logits"], tg["patch_logits"]
        with torch.no_grad():
            spread = float((t_logits - self.dino_loss.center).std(dim=0).mean())
        t_probs = self.dino_loss.teacher_probs(t_logits, teacher_temp)
        with ctx:
            s = student(batch.global_crops, batch.local_crops, masks)
        n_local = 0 if batch.local_crops is None else cfg.n_local_crops
        dino = self.dino_loss(
            list(s["global_logits"].float().chunk(n_global)),
            list(t_probs.chunk(n_global)),
            list(s["local_logits"].float().chunk(n_local)) if n_local else [],
        )
        loss = dino
        metrics: dict[str, float] = {"dino_loss": float(dino.detach())}
        if cfg.mim:
            t_patch = self.ibot_loss.teacher_probs(t_patch_logits.float(), teacher_temp)
            ibot = self.ibot_loss(s["patch_logits"].float(), t_patch, masks)
            loss = loss + cfg.ibot_weight * ibot
            metrics["ibot_loss"] = float(ibot.detach())
        if cfg.koleo_weight > 0:
            koleo = koleo_loss_crops(s["cls"].float(), n_global, reduction="sum")
            loss = loss + cfg.koleo_weight * koleo
            metrics["koleo_loss"] = float(koleo.detach())
        diag = prototype_diagnostics(t_probs)
        metrics.update(
            loss=float(loss.detach()),
            teacher_entropy=diag["mean_entropy"],
            teacher_entropy_of_mean=diag["entropy_of_mean"],
            prototypes_used=diag["n_used"],
            log_k=diag["log_k"],
            cls_std=_cls_std(tg["cls"]),
            teacher_logit_spread=spread,
        )
        return StepOutput(loss, metrics)


def reduce_metrics(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average the loss metrics over ranks (no-op single-process); diagnostics stay rank 0's."""
    keys = [k for k in ("loss", "dino_loss", "ibot_loss", "koleo_loss") if k in metrics]
    if not keys:
        return metrics
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist_mean_(t)
    return {**metrics, **{k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}}
