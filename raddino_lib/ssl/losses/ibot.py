"""iBOT masked-patch loss (DINOv2 ``ibot_patch_loss.py``), reference.md section 2.

The student sees the global crops with masked patches replaced by a mask token; the teacher
sees them unmasked. For every masked patch ``p`` of image ``b`` the loss term is
``CE_p = -sum_k t_pk log_softmax(s_p / T_s)_k``; each image's terms are weighted by
``1 / n_masked(b)`` and the sum is divided by the number of images ``B`` in the masked batch
(**including the images without any mask**, as DINOv2 divides by ``masks.shape[0]``):

    L = (1 / B) * sum_b (1 / n_masked(b)) * sum_{p masked in b} CE_p

So a batch where every image is masked gives the mean over images of the per-image mean CE;
with half the images masked the value is half that. Unmasked patches never enter.

In DINOv2 the batch is both global crops (``B = 2 * batch``) and the loss is multiplied by
``loss_scales * ibot_loss_scale = 2 * 1/2 = 1``, i.e. it is exactly this value.

Teacher targets have their own centre (EMA of the mean masked teacher logit, momentum 0.9) or
Sinkhorn-Knopp with ``B`` = the total number of masked patches (all ranks).
"""

from __future__ import annotations

import torch

from raddino_lib.ssl.losses.dino import (
    TeacherTargetLoss,
    cross_entropy,
    dist_sum_,
    sinkhorn_knopp,
)

__all__ = ["IBOTPatchLoss", "masked_weights"]


def masked_weights(masks: torch.Tensor) -> torch.Tensor:
    """``masks [B, N] bool`` -> ``[M]`` weights ``1 / n_masked(b)`` of each masked patch.

    Order is that of ``x[masks]`` (row-major over ``(b, n)``), ``M = masks.sum()``.
    """
    if masks.ndim != 2 or masks.dtype != torch.bool:
        raise ValueError(
            f"masks must be a bool [B, N] tensor, got {masks.dtype} {tuple(masks.shape)}"
        )
    per_image = 1.0 / masks.sum(-1).clamp(min=1).float()
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


class IBOTPatchLoss(TeacherTargetLoss):
    """iBOT patch loss on masked patches.

    Args:
        n_prototypes: ``K`` of the patch head.
        student_temp: 0.1.
        center_momentum: 0.9.
        centering: ``"centering"`` or ``"sinkhorn_knopp"`` (independent of the DINO loss's).
        sinkhorn_iterations: 3.

    Buffers:
        center: ``[1, K]``.
    """

    @torch.no_grad()
    def update_center(self, teacher_masked_logits: torch.Tensor) -> None:
        """EMA update with the mean of the masked teacher logits ``[M, K]`` over *all* ranks'
        masked patches (sum and count all-reduced). DINOv2 averages per-rank means instead,
        which differs when ranks hold different numbers of masked patches; the global mean
        makes a K-process run equal to one process with the same global batch. An empty
        batch (``M = 0`` everywhere) leaves the centre alone; under DDP every rank must call
        this (an empty rank contributes nothing but joins the all-reduce)."""
        self._check_k(teacher_masked_logits, "teacher logits")
        x = teacher_masked_logits.detach().float().reshape(-1, self.n_prototypes)
        total = torch.cat([x.sum(0), torch.tensor([float(x.shape[0])], device=x.device)])
        total = dist_sum_(total)
        count = float(total[-1])
        if count == 0:
            return
        batch_mean = (total[:-1] / count).unsqueeze(0)
        m = self.center_momentum
        self.center.mul_(m).add_(batch_mean.to(self.center.dtype), alpha=1.0 - m)

    @torch.no_grad()
    def teacher_probs(
        self, teacher_masked_logits: torch.Tensor, teacher_temp: float, update_center: bool = True
    ) -> torch.Tensor:
        """Targets ``[M, K]`` for the masked patches' teacher logits ``[M, K]``."""
        self._check_k(teacher_masked_logits, "teacher logits")
        if teacher_masked_logits.ndim != 2:
            raise ValueError(
                f"teacher logits must be [M, K], got {tuple(teacher_masked_logits.shape)}"
            )
        if self.centering == "sinkhorn_knopp":
            n = torch.tensor(
                float(teacher_masked_logits.shape[0]), device=teacher_masked_logits.device
            )
            n = dist_sum_(n)
            return sinkhorn_knopp(
                teacher_masked_logits, teacher_temp, self.sinkhorn_iterations, n_samples=n
            )
        probs = torch.softmax((teacher_masked_logits.float() - self.center) / teacher_temp, -1)
        if update_center:
            self.update_center(teacher_masked_logits)
        return probs

    def forward(
        self,
        student_masked_logits: torch.Tensor,
        teacher_masked_probs: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """Loss from the masked patches only.

        Args:
            student_masked_logits: ``[M, K]`` student logits of the masked patches, in the
                order of ``x[masks]``.
            teacher_masked_probs: ``[M, K]`` teacher targets of the same patches.
            masks: ``[B, N]`` bool, True = masked; ``M == masks.sum()``.

        Returns:
            scalar float32 (0 with a zero gradient when nothing is masked).
        """
        m = int(masks.sum())
        if student_masked_logits.shape[0] != m or teacher_masked_probs.shape[0] != m:
            raise ValueError(
                f"masks select {m} patches but got {student_masked_logits.shape[0]} student and "
                f"{teacher_masked_probs.shape[0]} teacher rows"
            )
        ce = cross_entropy(student_masked_logits, teacher_masked_probs, self.student_temp)
        w = masked_weights(masks).to(ce.device)
        return (ce * w).sum() / masks.shape[0]

    def forward_dense(
        self,
        student_patch_logits: torch.Tensor,
        teacher_patch_probs: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """Same loss from full maps ``[B, N, K]`` (only ``masks`` positions are read)."""
        if (
            student_patch_logits.shape[:2] != masks.shape
            or teacher_patch_probs.shape[:2] != masks.shape
        ):
            raise ValueError(
                f"patch maps {tuple(student_patch_logits.shape)} / "
                f"{tuple(teacher_patch_probs.shape)} do not match masks {tuple(masks.shape)}"
            )
        return self.forward(student_patch_logits[masks], teacher_patch_probs[masks], masks)
