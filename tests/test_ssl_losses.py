"""Hand-computed checks of the DINO head and the DINO / iBOT / KoLeo losses."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from raddino_lib.ssl.heads import DINOHead
from raddino_lib.ssl.losses import (
    DINOLoss,
    IBOTPatchLoss,
    koleo_loss,
    koleo_loss_crops,
    masked_weights,
    prototype_diagnostics,
    sinkhorn_knopp,
)

torch.set_num_threads(1)


def _ce_by_hand(s: list[float], t: list[float], temp: float) -> float:
    """-sum_k t_k log softmax(s / temp)_k, with python math only."""
    z = [v / temp for v in s]
    lse = math.log(sum(math.exp(v) for v in z))
    return -sum(tk * (zk - lse) for tk, zk in zip(t, z, strict=True))


# ----------------------------------------------------------------------------- DINO loss
def test_uniform_student_gives_log_k_per_pair_and_overall() -> None:
    k, b = 7, 5
    loss = DINOLoss(k)
    g = torch.Generator().manual_seed(0)
    teacher = [torch.softmax(torch.randn(b, k, generator=g), -1) for _ in range(2)]
    zeros = torch.zeros(b, k)
    for t in teacher:
        from raddino_lib.ssl.losses.dino import cross_entropy

        assert torch.allclose(cross_entropy(zeros, t, 0.1), torch.full((b,), math.log(k)))
    value = loss([zeros, zeros], teacher, [torch.zeros(b, k)] * 2)
    assert value.item() == pytest.approx(math.log(k), abs=1e-6)


def test_sharp_teacher_equals_hand_cross_entropy() -> None:
    # 2 samples, 3 prototypes; teacher logits = one-hot, made one-hot targets by a tiny temp.
    t_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    loss = DINOLoss(3, student_temp=0.1)
    t = loss.teacher_probs(torch.cat([t_logits, t_logits]), teacher_temp=1e-3)
    assert torch.allclose(t, torch.cat([t_logits, t_logits]), atol=1e-12)
    # student logits: s / 0.1 = [2, 1, 0] and [0, 1, 3]
    s = torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.1, 0.3]])
    ce1 = math.log(math.e**2 + math.e + 1) - 2  # 0.40760596
    ce2 = math.log(1 + math.e + math.e**3) - 3  # 0.16984...
    assert _ce_by_hand([0.2, 0.1, 0.0], [1, 0, 0], 0.1) == pytest.approx(ce1)
    expected = (ce1 + ce2) / 2
    value = loss([s, s], list(t.chunk(2)))
    assert value.item() == pytest.approx(expected, abs=1e-6)
    # student logits equal to the teacher's (one-hot): CE = log(1 + 2 e^-10) per sample
    value = loss([t_logits, t_logits], list(t.chunk(2)))
    assert value.item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)


def test_center_update_hand_values_and_lazy_use() -> None:
    loss = DINOLoss(3, center_momentum=0.9)
    x1 = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0, 2.0], [0.0, 0.0, 6.0]])
    p1 = loss.teacher_probs(x1, teacher_temp=0.5)
    # first call uses the old (zero) centre
    assert torch.allclose(p1, torch.softmax(x1 / 0.5, -1))
    assert torch.allclose(loss.center, torch.tensor([[0.15, 0.15, 0.30]]))
    x2 = torch.ones(2, 3)
    p2 = loss.teacher_probs(x2, teacher_temp=0.5)
    assert torch.allclose(p2, torch.softmax((x2 - torch.tensor([0.15, 0.15, 0.30])) / 0.5, -1))
    # 0.9 * old + 0.1 * batch mean
    assert torch.allclose(loss.center, torch.tensor([[0.235, 0.235, 0.37]]))
    # no update when asked not to; center is a buffer in the state dict, without grad
    loss.teacher_probs(x2 * 10, 0.5, update_center=False)
    assert torch.allclose(loss.center, torch.tensor([[0.235, 0.235, 0.37]]))
    assert "center" in loss.state_dict() and not loss.center.requires_grad


def test_pair_counting_two_global_two_local() -> None:
    k, b = 4, 3
    g = torch.Generator().manual_seed(1)
    sg = [torch.randn(b, k, generator=g) for _ in range(2)]
    sl = [torch.randn(b, k, generator=g) for _ in range(2)]
    t = [torch.softmax(torch.randn(b, k, generator=g), -1) for _ in range(2)]

    def ce(s: torch.Tensor, tt: torch.Tensor) -> float:
        return sum(_ce_by_hand(s[i].tolist(), tt[i].tolist(), 0.1) for i in range(b)) / b

    pairs = [(sg[0], t[1]), (sg[1], t[0])]  # global i <-> teacher of the OTHER global crop
    pairs += [(s, tt) for s in sl for tt in t]  # each local with both
    assert len(pairs) == DINOLoss.n_terms(2, 2) == 6
    expected = sum(ce(s, tt) for s, tt in pairs) / 6
    value = DINOLoss(k)(sg, t, sl)
    assert value.item() == pytest.approx(expected, abs=1e-5)
    # matching a global crop with its own teacher crop is NOT part of the loss
    wrong = (ce(sg[0], t[0]) + ce(sg[1], t[1]) + sum(ce(s, tt) for s, tt in pairs[2:])) / 6
    assert abs(value.item() - wrong) > 1e-3
    assert DINOLoss.n_terms(2, 8) == 18 and DINOLoss.n_terms(2, 0) == 2


def test_dino_loss_errors() -> None:
    loss = DINOLoss(4)
    with pytest.raises(ValueError, match="global"):
        loss([torch.zeros(2, 4)], [torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="prototypes"):
        loss([torch.zeros(2, 5)] * 2, [torch.zeros(2, 4)] * 2)
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(4, centering="mean")


def test_sinkhorn_rows_and_columns() -> None:
    g = torch.Generator().manual_seed(0)
    b, k = 256, 32
    x = torch.randn(b, k, generator=g)
    q = sinkhorn_knopp(x, teacher_temp=1.0, n_iterations=3)
    assert q.shape == (b, k)
    assert torch.allclose(q.sum(1), torch.ones(b), atol=1e-5)  # each sample: a distribution
    col = q.sum(0) / (b / k)  # each prototype: ~B/K of the mass
    assert torch.all((col - 1).abs() < 0.01), col
    # sharper input: still uniform usage within a few percent after 3 rounds
    q = sinkhorn_knopp(torch.randn(b, k, generator=g) * 0.3, teacher_temp=0.1)
    assert torch.all((q.sum(0) / (b / k) - 1).abs() < 0.15)
    # large logits / small temperature do not overflow
    q = sinkhorn_knopp(torch.randn(b, k, generator=g), teacher_temp=0.01)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(b), atol=1e-4)


def test_sinkhorn_mode_leaves_center_alone() -> None:
    loss = DINOLoss(8, centering="sinkhorn_knopp")
    q = loss.teacher_probs(torch.randn(16, 8), 0.07)
    assert torch.allclose(q.sum(1), torch.ones(16), atol=1e-5)
    assert torch.count_nonzero(loss.center) == 0


def test_diagnostics_hand_values() -> None:
    k = 4
    d = prototype_diagnostics(torch.full((5, k), 1 / k))
    assert d["entropy_of_mean"] == pytest.approx(math.log(k))
    assert d["mean_entropy"] == pytest.approx(math.log(k))
    assert d["log_k"] == pytest.approx(math.log(k))
    onehot = torch.eye(k)[[0, 0, 1, 2]]  # mean = [1/2, 1/4, 1/4, 0]
    d = prototype_diagnostics(onehot)
    assert d["n_used"] == 3
    assert d["mean_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert d["entropy_of_mean"] == pytest.approx(1.5 * math.log(2))


# ----------------------------------------------------------------------------- iBOT loss
def test_ibot_weighted_average_by_hand() -> None:
    k = 3
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 4, k, generator=g)
    t = torch.softmax(torch.randn(3, 4, k, generator=g), -1)
    masks = torch.zeros(3, 4, dtype=torch.bool)
    masks[0, 1] = masks[0, 3] = True  # image 0: 2 masked patches
    masks[1, 2] = True  # image 1: 1 masked patch; image 2: none (still counts in B)

    def ce(b: int, n: int) -> float:
        return _ce_by_hand(s[b, n].tolist(), t[b, n].tolist(), 0.1)

    expected = ((ce(0, 1) + ce(0, 3)) / 2 + ce(1, 2) / 1) / 3
    loss = IBOTPatchLoss(k)
    assert loss.forward_dense(s, t, masks).item() == pytest.approx(expected, abs=1e-5)
    assert loss(s[masks], t[masks], masks).item() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(masked_weights(masks), torch.tensor([0.5, 0.5, 1.0]))
    # unmasked patches do not change the loss
    s2, t2 = s.clone(), t.clone()
    s2[~masks] = 100.0 * torch.randn(int((~masks).sum()), k, generator=g)
    t2[~masks] = torch.eye(k)[0]
    assert loss.forward_dense(s2, t2, masks).item() == pytest.approx(expected, abs=1e-5)
    # gradient reaches only masked positions
    sg = s.clone().requires_grad_(True)
    loss.forward_dense(sg, t, masks).backward()
    assert torch.count_nonzero(sg.grad[~masks]) == 0 and torch.count_nonzero(sg.grad[masks]) > 0


def test_ibot_center_and_errors() -> None:
    loss = IBOTPatchLoss(2)
    loss.teacher_probs(torch.tensor([[1.0, 3.0], [3.0, 5.0]]), 0.1)
    assert torch.allclose(loss.center, torch.tensor([[0.2, 0.4]]))
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[0, 0] = True
    with pytest.raises(ValueError, match="masks select 1"):
        loss(torch.zeros(2, 2), torch.zeros(2, 2), masks)
    empty = torch.zeros(2, 4, dtype=torch.bool)
    assert loss(torch.zeros(0, 2), torch.zeros(0, 2), empty).item() == 0.0
    sk = IBOTPatchLoss(4, centering="sinkhorn_knopp")
    q = sk.teacher_probs(torch.randn(10, 4), 0.07)
    assert torch.allclose(q.sum(1), torch.ones(10), atol=1e-5)
    assert sk.teacher_probs(torch.zeros(0, 4), 0.07).shape == (0, 4)  # nothing masked


# ----------------------------------------------------------------------------- KoLeo
def test_koleo_three_unit_vectors() -> None:
    ang = [0.0, math.pi / 3, 5 * math.pi / 6]  # 0, 60, 150 degrees
    x = torch.tensor([[math.cos(a), math.sin(a)] for a in ang])
    # chords 2 sin(d/2): d(0,60)=1, d(60,150)=sqrt2, d(0,150)=2 sin 75 deg
    nn = [1.0, 1.0, math.sqrt(2)]
    expected = -sum(math.log(d + 1e-8) for d in nn) / 3
    assert koleo_loss(x).item() == pytest.approx(expected, abs=1e-6)
    assert koleo_loss(3.0 * x).item() == pytest.approx(expected, abs=1e-6)  # normalised first
    both = torch.cat([x, x.flip(0)])
    assert koleo_loss_crops(both, 2).item() == pytest.approx(2 * expected, abs=1e-6)
    assert koleo_loss_crops(both, 2, "mean").item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="B >= 2"):
        koleo_loss(x[:1])


# ----------------------------------------------------------------------------- head
def test_head_shapes_unit_prototypes_and_freeze() -> None:
    torch.manual_seed(0)
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8)
    assert head(torch.randn(5, 16)).shape == (5, 32)
    assert head(torch.randn(2, 7, 16)).shape == (2, 7, 32)
    assert torch.allclose(head.prototypes.norm(dim=1), torch.ones(32), atol=1e-6)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    assert head.mlp[0].bias.abs().sum() == 0 and head.mlp[0].weight.std() < 0.03
    opt = torch.optim.AdamW(head.parameters(), lr=0.5, weight_decay=0.1)
    head(torch.randn(5, 16)).pow(2).sum().backward()
    opt.step()
    assert torch.allclose(head.prototypes.norm(dim=1), torch.ones(32), atol=1e-6)
    assert torch.all(g == 1)
    # frozen last layer: grads dropped, prototypes unchanged by the step
    before = head.prototypes.detach().clone()
    mlp_before = head.mlp[0].weight.detach().clone()
    opt.zero_grad()
    head.freeze_last_layer = True
    head(torch.randn(5, 16)).pow(2).sum().backward()
    head.apply_freeze()
    for p in head.last_layer.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    opt.step()
    assert torch.equal(head.prototypes.detach(), before)
    assert not torch.equal(head.mlp[0].weight.detach(), mlp_before)
    with pytest.raises(ValueError, match="width 16"):
        head(torch.randn(2, 15))


def test_head_loads_dinov2_weight_norm_keys() -> None:
    a = DINOHead(6, 10, hidden_dim=8, bottleneck_dim=4)
    sd = a.state_dict()
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in sd.items()
    }
    assert "last_layer.weight_v" in legacy
    b = DINOHead(6, 10, hidden_dim=8, bottleneck_dim=4)
    b.load_state_dict(legacy)
    x = torch.randn(3, 6)
    assert torch.allclose(a(x), b(x))


# ----------------------------------------------------------------------------- overfit
def test_overfit_gradient_path() -> None:
    """Linear backbone + DINOHead + DINO loss on 8 fixed inputs, noisy views, EMA teacher with a
    sharper temperature (0.02 vs the student's 0.1): the loss must fall from ~2 to near 0."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d_in, d, k = 16, 32, 16
    student = torch.nn.Sequential(torch.nn.Linear(d_in, d), DINOHead(d, k, 64, 256))
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(k)
    x = torch.randn(8, d_in, generator=g)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)
    w0 = student[0].weight.detach().clone()
    losses, used = [], []
    for _ in range(50):
        views = [x + 0.1 * torch.randn(8, d_in, generator=g) for _ in range(4)]
        with torch.no_grad():
            t = loss_fn.teacher_probs(teacher(torch.cat(views[:2])), teacher_temp=0.02)
        s_global = [student(v) for v in views[:2]]
        value = loss_fn(s_global, list(t.chunk(2)), [student(v) for v in views[2:]])
        opt.zero_grad()
        value.backward()
        opt.step()
        with torch.no_grad():
            for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
                pt.mul_(0.99).add_(ps.detach(), alpha=0.01)
        losses.append(value.item())
        used.append(prototype_diagnostics(t)["n_used"])
    assert 1.5 < losses[0] <= math.log(k) + 1e-6, losses[0]
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0], losses
    assert not torch.equal(student[0].weight.detach(), w0)  # the backbone got gradients
    assert used[-1] >= 3  # several prototypes in use: not collapsed onto one


# ----------------------------------------------------------------------------- distributed
def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 6, generator=g)  # the full batch, identical on every rank
        patches = torch.randn(7, 6, generator=g)
        mine = x.chunk(world)[rank]
        dino = DINOLoss(6)
        dino.teacher_probs(mine, 0.1)
        q = sinkhorn_knopp(mine, 0.1)
        ibot = IBOTPatchLoss(6, centering="sinkhorn_knopp")
        pq = ibot.teacher_probs(patches[:3] if rank == 0 else patches[3:], 0.1)  # 3 vs 4 rows
        ib = IBOTPatchLoss(6)
        ib.update_center(patches[:3] if rank == 0 else patches[3:])
        torch.save(
            {"center": dino.center, "q": q, "pq": pq, "ibot_center": ib.center},
            f"{out_dir}/r{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_center_and_sinkhorn_all_reduce_match_single_process(tmp_path) -> None:  # noqa: ANN001
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    r = [torch.load(tmp_path / f"r{i}.pt") for i in range(2)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=g)
    patches = torch.randn(7, 6, generator=g)
    single = DINOLoss(6)
    single.teacher_probs(x, 0.1)
    assert torch.allclose(r[0]["center"], single.center, atol=1e-6)
    assert torch.allclose(r[1]["center"], single.center, atol=1e-6)
    q = sinkhorn_knopp(x, 0.1)
    assert torch.allclose(torch.cat([r[0]["q"], r[1]["q"]]), q, atol=1e-6)
    pq = sinkhorn_knopp(patches, 0.1)
    assert torch.allclose(torch.cat([r[0]["pq"], r[1]["pq"]]), pq, atol=1e-6)
    ib = IBOTPatchLoss(6)
    ib.update_center(patches)  # 3 + 4 uneven rows: the global mean, not the mean of rank means
    for i in range(2):
        assert torch.allclose(r[i]["ibot_center"], ib.center, atol=1e-6)
