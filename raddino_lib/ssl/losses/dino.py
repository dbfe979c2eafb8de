"""DINO image-level (CLS) loss with mean centering or a Sinkhorn-Knopp teacher.

Follows DINOv2 (``dinov2/loss/dino_clstoken_loss.py`` and ``ssl_meta_arch.py``),
reference.md section 2:

* teacher target ``t = softmax((t_logits - center) / T_t)``, centre an EMA of the batch mean of
  the raw teacher logits with momentum 0.9 (the centre used for a batch is the one from *before*
  that batch's update, as in DINOv2's lazy update), or the Sinkhorn-Knopp (SwAV) normalisation
  with 3 iterations (no centre);
* the teacher sees only the global crops; student global crop ``i`` is matched with teacher
  crop ``j != i`` (with 2 global crops: the *other* one), each local crop with every teacher
  crop;
* one pair contributes ``CE(s, t) = mean_b( -sum_k t_bk log_softmax(s_b / T_s)_k )``;
* normalisation: DINOv2 sums the pair terms and divides by the number of terms
  ``n_g (n_g - 1) + n_l n_g`` (global loss x ``loss_scales = 2`` over its 2-pair batch mean,
  local loss summed over its pairs, both divided by the same count). So the returned loss is
  the **mean over pairs** of the per-pair batch-mean cross-entropy; with 2 global + 2 local
  crops there are 2*1 + 2*2 = 6 terms. (reference.md writes the numerator
  ``-sum_pairs mean_batch(...)``; the division by the number of terms is DINOv2's.)
  With uniform student logits every pair equals ``log K`` and so does the loss.

The module also holds the helpers that the iBOT loss shares: the distributed all-reduce of
the centre, the Sinkhorn-Knopp normalisation and the teacher diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CENTERING_MODES",
    "DINOLoss",
    "cross_entropy",
    "check_centering",
    "dist_mean_",
    "dist_sum_",
    "prototype_diagnostics",
    "sinkhorn_knopp",
]

CENTERING_MODES = ("centering", "sinkhorn_knopp")


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


def _world_size() -> int:
    return dist.get_world_size() if _dist_on() else 1


def dist_mean_(x: torch.Tensor) -> torch.Tensor:
    """In place: average ``x`` over ranks (all-reduce SUM / world size); no-op single-process."""
    if _dist_on():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def dist_sum_(x: torch.Tensor) -> torch.Tensor:
    """In place: sum ``x`` over ranks (all-reduce SUM); no-op single-process."""
    if _dist_on():
        dist.all_reduce(x)
    return x


def check_centering(centering: str) -> str:
    if centering not in CENTERING_MODES:
        raise ValueError(
            f"centering must be one of {', '.join(CENTERING_MODES)}, got {centering!r}"
        )
    return centering


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    n_samples: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Sinkhorn-Knopp teacher targets (DINOv2 / SwAV), all-reduce ready.

    Args:
        teacher_logits: ``[M, K]`` teacher logits of the ``M`` samples on this rank.
        teacher_temp: temperature ``T_t``.
        n_iterations: normalisation rounds (DINOv2: 3).
        n_samples: the global number of samples (all ranks); by default ``M * world_size``
            (pass the all-reduced count when ranks hold different ``M``, as for iBOT).

    Returns:
        ``[M, K]`` float32 targets: every row sums to 1 exactly; every prototype (column)
        receives about ``M_total / K`` of the total mass (exactly after infinitely many rounds).
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects [M, K] logits, got {tuple(teacher_logits.shape)}")
    x = teacher_logits.float() / teacher_temp  # [M, K] = log Q^T up to a constant
    k = x.shape[1]
    b = float(x.shape[0] * _world_size()) if n_samples is None else float(n_samples)
    # DINOv2's loop, in the log domain (exp(x) overflows / underflows at small temperatures):
    #   Q /= sum(Q)                                 (cancelled by the next step, skipped)
    #   repeat: Q /= rowsum (per prototype, all ranks); Q /= K
    #           Q /= colsum (per sample); Q /= B
    #   Q *= B
    if b <= 0:  # nothing on any rank (the same decision everywhere: no collective skipped)
        return torch.zeros_like(x)
    log_b, log_k = math.log(b), math.log(k)
    for _ in range(n_iterations):
        x = x - _dist_logsumexp_over_samples(x) - log_k
        x = x - torch.logsumexp(x, dim=1, keepdim=True) - log_b
    return torch.exp(x + log_b)


def _dist_logsumexp_over_samples(x: torch.Tensor) -> torch.Tensor:
    """``log sum_m exp(x[m, k])`` over the samples of all ranks: ``[M, K] -> [1, K]``."""
    if x.shape[0]:
        mx = x.max(dim=0, keepdim=True).values
    else:  # an empty rank (e.g. no masked patch here) still joins the all-reduces
        mx = x.new_full((1, x.shape[1]), -torch.inf)
    if _dist_on():
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = dist_sum_(torch.exp(x - mx).sum(dim=0, keepdim=True))
    return mx + torch.log(s)


def cross_entropy(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """Per-sample ``-sum_k t_k log_softmax(s / T_s)_k``: ``[..., K], [..., K] -> [...]`` (fp32)."""
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher targets "
            f"{tuple(teacher_probs.shape)} must have the same shape"
        )
    lsm = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs.float() * lsm).sum(dim=-1)


@torch.no_grad()
def prototype_diagnostics(teacher_probs: torch.Tensor) -> dict[str, float]:
    """Collapse diagnostics of teacher targets ``[M, K]`` (or ``[..., K]``), this rank only.

    Returns (natural logs):
        ``entropy_of_mean``: entropy of the mean target distribution (log K when prototype use
            is uniform; near 0 when everything maps to one prototype);
        ``mean_entropy``: mean per-sample entropy (log K: uniform, uninformative targets;
            near 0: confident one-hot targets);
        ``n_used``: number of prototypes that are the argmax of at least one sample;
        ``log_k``: log K, for reference.
    """
    p = teacher_probs.detach().float().reshape(-1, teacher_probs.shape[-1])
    k = p.shape[-1]
    mean = p.mean(dim=0)
    ent_mean = -(mean * torch.log(mean.clamp_min(1e-30))).sum()
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1).mean()
    used = torch.unique(p.argmax(dim=-1)).numel() if p.shape[0] else 0
    return {
        "entropy_of_mean": float(ent_mean),
        "mean_entropy": float(ent),
        "n_used": int(used),
        "log_k": math.log(k),
    }


class TeacherTargetLoss(nn.Module):
    """Shared state of the DINO and iBOT losses: temperatures, centering mode and the centre.

    Buffers:
        center: ``[1, K]``, the EMA of teacher logits (saved in the state dict).
    """

    def __init__(
        self,
        n_prototypes: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        self.n_prototypes = n_prototypes
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = check_centering(centering)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.register_buffer("center", torch.zeros(1, n_prototypes))

    def _check_k(self, x: torch.Tensor, what: str) -> None:
        if x.shape[-1] != self.n_prototypes:
            raise ValueError(
                f"{what} has {x.shape[-1]} prototypes in shape {tuple(x.shape)}, "
                f"expected {self.n_prototypes}"
            )


class DINOLoss(TeacherTargetLoss):
    """DINO CLS-token loss.

    Args:
        n_prototypes: ``K``.
        student_temp: ``T_s`` (0.1).
        center_momentum: EMA momentum of the centre (0.9).
        centering: ``"centering"`` (EMA mean centring) or ``"sinkhorn_knopp"``.
        sinkhorn_iterations: 3.

    Buffers:
        center: ``[1, K]``, the EMA of teacher logits (saved in the state dict).

    Usage per step::

        t = loss.teacher_probs(teacher_logits, teacher_temp)  # [2B, K], crop-major, no grad
        t_list = list(t.chunk(2))
        value = loss(student_global_list, t_list, student_local_list)
    """

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """``center <- m * center + (1 - m) * mean(teacher_logits)`` over all ranks.

        ``teacher_logits``: ``[M, K]`` raw (uncentred) teacher logits of this rank. The batch
        mean is computed locally, then averaged over ranks with ``all_reduce`` when
        ``torch.distributed`` is initialised (equal per-rank batches, as in DINOv2).
        """
        self._check_k(teacher_logits, "teacher logits")
        batch_mean = teacher_logits.detach().float().reshape(-1, self.n_prototypes).mean(0)
        batch_mean = dist_mean_(batch_mean.unsqueeze(0))
        m = self.center_momentum
        self.center.mul_(m).add_(batch_mean.to(self.center.dtype), alpha=1.0 - m)

    @torch.no_grad()
    def teacher_probs(
        self, teacher_logits: torch.Tensor, teacher_temp: float, update_center: bool = True
    ) -> torch.Tensor:
        """Teacher targets ``[M, K]`` (float32, rows sum to 1) from logits ``[M, K]``.

        ``"centering"``: ``softmax((logits - center) / teacher_temp)`` with the current centre,
        then (if ``update_center``) the centre is updated with this batch. ``"sinkhorn_knopp"``:
        Sinkhorn-Knopp over all ``M`` rows (and ranks); the centre is left alone.
        Pass all global crops of the batch at once (crop-major ``[n_global * B, K]``).
        """
        self._check_k(teacher_logits, "teacher logits")
        if teacher_logits.ndim != 2:
            raise ValueError(f"teacher logits must be [M, K], got {tuple(teacher_logits.shape)}")
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_logits, teacher_temp, self.sinkhorn_iterations)
        probs = F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)
        if update_center:
            self.update_center(teacher_logits)
        return probs

    @staticmethod
    def n_terms(n_global: int, n_local: int) -> int:
        """Number of (student crop, teacher crop) pairs: ``n_g (n_g - 1) + n_l n_g``."""
        return n_global * (n_global - 1) + n_local * n_global

    def forward(
        self,
        student_global: Sequence[torch.Tensor],
        teacher_probs: Sequence[torch.Tensor],
        student_local: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """Mean over crop pairs of the batch-mean cross-entropy.

        Args:
            student_global: ``n_g`` student logits ``[B, K]`` of the global crops (same order as
                the teacher's).
            teacher_probs: ``n_g`` teacher targets ``[B, K]`` (from :meth:`teacher_probs`).
            student_local: ``n_l`` student logits ``[B, K]`` of the local crops.

        Returns:
            scalar float32 loss; ``log K`` for uniform student logits.
        """
        n_g, n_l = len(student_global), len(student_local)
        if len(teacher_probs) != n_g or n_g < 2:
            raise ValueError(
                f"need the same number (>= 2) of global student and teacher crops, got "
                f"{n_g} student and {len(teacher_probs)} teacher"
            )
        for x in (*student_global, *student_local, *teacher_probs):
            self._check_k(x, "a crop")
        total = torch.zeros((), device=student_global[0].device)
        for i, s in enumerate(student_global):
            for j, t in enumerate(teacher_probs):
                if i != j:
                    total = total + cross_entropy(s, t, self.student_temp).mean()
        for s in student_local:
            for t in teacher_probs:
                total = total + cross_entropy(s, t, self.student_temp).mean()
        return total / self.n_terms(n_g, n_l)
