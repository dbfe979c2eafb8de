"""The pretraining engine: determinism, resume, checkpoints, optimizer groups, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from raddino_lib.config import make_config
from raddino_lib.data.records import load_records
from raddino_lib.models.backbone import BackboneSpec, ViTBackbone, spec_from_config
from raddino_lib.ssl import checkpoint as ckpt_mod
from raddino_lib.ssl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from raddino_lib.ssl.data import (
    BatchStream,
    PretrainImages,
    batch_positions,
    make_batch,
    select_pretrain_records,
)
from raddino_lib.ssl.meta_arch import SSLModel
from raddino_lib.ssl.optim import layer_id, param_groups
from raddino_lib.ssl.train import (
    RunConfigMismatch,
    check_run_config,
    load_run_backbone,
    pretrain,
    read_metrics,
)
from raddino_lib.ssl.views import MultiCropViews

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raddino_lib.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("ssl_data")
    os.environ["RADDINO_CACHE"] = str(root / "cache")
    generate_dataset(root / "phantom", 96, size=64, seed=0, progress=False)
    return root / "phantom"


def _cfg(**kw):
    base = dict(precision="fp32", progress=False, pretrain_steps=6, checkpoint_every=2)
    base.update(kw)
    return make_config("smoke", **base)


def _drop_last_row(csv: Path) -> None:
    """Rewrite a ``records.csv`` without its last row (reports hold quoted newlines)."""
    import pandas as pd

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.iloc[:-1].to_csv(csv, index=False)


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    last = latest_checkpoint(run / "checkpoints")
    assert last is not None
    return load_file(str(last / "model.safetensors"))


# --- data -----------------------------------------------------------------------------------

BATCH_KW = dict(
    seed=0, global_batch=8, patch_size=8, mim=True, mask_sample_prob=0.5, mask_ratio=(0.1, 0.5)
)


def _images_and_views(data: Path, cfg) -> tuple[PretrainImages, MultiCropViews]:
    from raddino_lib.data.records import load_records

    recs = select_pretrain_records(load_records(data), cfg)
    return PretrainImages(data, recs, cfg.image_size, progress=False), MultiCropViews.from_config(
        cfg
    )


def test_batch_positions_cover_each_epoch_once():
    seen = np.concatenate([batch_positions(10, 5, s, seed=3) for s in range(2)])
    assert sorted(seen.tolist()) == list(range(10))
    # epoch 2 is a different permutation, still complete
    nxt = np.concatenate([batch_positions(10, 5, s, seed=3) for s in range(2, 4)])
    assert sorted(nxt.tolist()) == list(range(10)) and not np.array_equal(seen, nxt)
    assert np.array_equal(batch_positions(10, 5, 7, seed=3), batch_positions(10, 5, 7, seed=3))


def test_rank_batches_are_slices_of_the_global_batch(data: Path):
    images, views = _images_and_views(data, _cfg())
    kw = dict(step=3, **BATCH_KW)
    whole = make_batch(images, views, **kw)
    parts = [make_batch(images, views, rank=r, world_size=2, **kw) for r in range(2)]
    g = whole.global_crops.reshape(2, 8, *whole.global_crops.shape[1:])
    m = whole.masks.reshape(2, 8, -1)
    for r, p in enumerate(parts):
        sl = slice(4 * r, 4 * r + 4)
        assert torch.equal(p.global_crops, g[:, sl].reshape(8, *g.shape[2:]))
        assert torch.equal(p.masks, m[:, sl].reshape(8, -1))
        assert np.array_equal(p.indices, whole.indices[sl])
    assert whole.masks.any(dim=1).sum() == 8  # half of the 16 global crops are masked


def test_batch_stream_workers_give_the_same_batches(data: Path):
    """Worker processes build exactly the batches the main process builds, in step order."""
    images, views = _images_and_views(data, _cfg())
    ref = [make_batch(images, views, step=s, **BATCH_KW) for s in range(2, 6)]
    for workers in (0, 2):
        got = list(BatchStream(images, views, start=2, end=6, num_workers=workers, **BATCH_KW))
        assert len(got) == 4
        for a, b in zip(ref, got, strict=True):
            assert torch.equal(a.global_crops, b.global_crops)
            assert torch.equal(a.masks, b.masks) and np.array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        BatchStream(images, views, start=0, end=1, num_workers=-1, **BATCH_KW)


def test_select_records_filters(data: Path):
    from raddino_lib.data.records import load_records

    recs = load_records(data)
    cfg = _cfg(max_images=20)
    sel = select_pretrain_records(recs, cfg)
    assert len(sel) == 20 and set(sel["split"]) == {"train"}
    cohort = recs["cohort"].iloc[0]
    only = select_pretrain_records(recs, _cfg(cohorts=(cohort,)))
    assert set(only["cohort"]) == {cohort}
    with pytest.raises(ValueError, match="not in this dataset"):
        select_pretrain_records(recs, _cfg(cohorts=("mars",)))


# --- optimizer groups, EMA, frozen last layer ----------------------------------------------


def test_layer_decay_groups():
    assert layer_id("pos_embed", 4, True) == 0
    assert layer_id("blocks.2.attn.qkv.weight", 4, True) == 3
    assert layer_id("norm.weight", 4, True) == 5
    assert layer_id("mlp.0.weight", 4, False) == 5
    cfg = _cfg()
    model = SSLModel(cfg, spec_from_config(cfg))
    groups = param_groups(
        [("backbone", model.student.backbone, True), ("dino_head", model.student.dino_head, False)],
        n_layers=cfg.depth,
        layer_decay=0.5,
        patch_embed_lr_mult=0.2,
    )
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["backbone.patch_embed.proj.weight"]["lr_mult"] == pytest.approx(0.5**3 * 0.2)
    assert by_name["backbone.blocks.0.attn.qkv.weight"]["lr_mult"] == pytest.approx(0.5**2)
    assert by_name["backbone.blocks.1.attn.qkv.bias"]["wd_mult"] == 0.0
    assert by_name["backbone.blocks.1.ls1.gamma"]["wd_mult"] == 0.0
    assert by_name["backbone.blocks.1.mlp.fc1.weight"]["wd_mult"] == 1.0
    assert by_name["dino_head.mlp.0.weight"]["lr_mult"] == 1.0
    last = [g for g in groups if g["is_last_layer"]]
    assert len(last) == 1 and all(n.startswith("dino_head.last_layer") for n in last[0]["names"])
    n_params = sum(1 for _ in model.student.parameters() if _.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_params


def test_ema_update_is_the_convex_combination():
    cfg = _cfg()
    model = SSLModel(cfg, spec_from_config(cfg))
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before_t = [p.clone() for p in model.teacher.parameters()]
    stud = [p.clone() for p in model.student.parameters()]
    model.update_teacher(0.9)
    for t0, s, t1 in zip(before_t, stud, model.teacher.parameters(), strict=True):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_bf16_teacher_copy_follows_the_ema_and_matches_autocast():
    """Under bf16 autocast the teacher runs as a bf16 copy of its float32 EMA weights: the copy
    is refreshed on every use (equal to the teacher cast after an EMA update), is not part of
    the state dict, and its outputs match the autocast forward of the float32 teacher."""
    from raddino_lib.ssl.bench import synthetic_batch

    cfg = _cfg()
    model = SSLModel(cfg, spec_from_config(cfg))
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    low = model.lowp_teacher_backbone(torch.bfloat16)
    model.update_teacher(0.5)
    low2 = model.lowp_teacher_backbone(torch.bfloat16)
    assert low2 is low  # made once, refreshed in place
    for (name, t), q in zip(
        model.teacher.backbone.named_parameters(), low.parameters(), strict=True
    ):
        assert q.dtype == torch.bfloat16 and not q.requires_grad
        torch.testing.assert_close(q, t.detach().to(torch.bfloat16), rtol=0, atol=0, msg=name)
    assert not any("lowp" in k for k in model.state_dict())
    batch = synthetic_batch(cfg, 4)
    masks = batch.masks
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model.teacher.teacher_outputs(batch.global_crops, masks)
        out = model.teacher.teacher_outputs(batch.global_crops, masks, low)
    for key in ("cls", "global_logits", "patch_logits"):
        a, b = ref[key].float(), out[key].float()
        assert a.shape == b.shape
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        assert float(cos.min()) > 0.99, key
    # a step under bf16 autocast uses the copy; without autocast it does not make one
    fresh = SSLModel(cfg, spec_from_config(cfg))
    fresh.step_losses(batch, 0.04)
    assert "_lowp_teacher" not in fresh.__dict__
    fresh.step_losses(batch, 0.04, autocast=torch.autocast("cpu", dtype=torch.bfloat16))
    assert fresh.__dict__["_lowp_teacher"].pos_embed.dtype == torch.bfloat16


def test_prototypes_frozen_during_first_steps(data: Path, tmp_path: Path):
    cfg = _cfg(freeze_last_layer_steps=2, pretrain_steps=2, checkpoint_every=2)
    pretrain(cfg, tmp_path / "run", data_dir=data)
    state = _final_state(tmp_path / "run")
    key = "student.dino_head.last_layer.parametrizations.weight.original1"
    with torch.random.fork_rng():
        from raddino_lib.ssl.data import step_seed

        torch.manual_seed(step_seed(cfg.seed, 0, 0x1417))  # the run's init seed
        fresh = SSLModel(cfg, spec_from_config(cfg))
    assert torch.equal(state[key], fresh.state_dict()[key])
    other = "student.dino_head.mlp.0.weight"
    assert not torch.equal(state[other], fresh.state_dict()[other])


# --- learning -------------------------------------------------------------------------------


def test_overfits_one_batch(data: Path):
    """One batch, frozen teacher and centre: the student's KL to the teacher targets
    (DINO loss minus the targets' entropy) must nearly vanish."""
    cfg = _cfg(layerscale_init=1.0, koleo_weight=0.0)
    torch.manual_seed(0)
    model = SSLModel(cfg, spec_from_config(cfg))
    images, views = _images_and_views(data, cfg)
    batch = make_batch(images, views, step=0, **BATCH_KW)
    model.dino_loss.center_momentum = 1.0  # the centre stays 0: fixed targets
    model.ibot_loss.center_momentum = 1.0
    opt = torch.optim.AdamW(model.student.parameters(), lr=3e-3, weight_decay=0.0)
    kl = []
    for _ in range(40):
        out = model.step_losses(batch, teacher_temp=0.04)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        kl.append(out.metrics["dino_loss"] - out.metrics["teacher_entropy"])
    assert kl[0] > 0.3 and kl[-1] < 0.3 * kl[0], kl[::8]


# --- checkpoints and resume ---------------------------------------------------------------


def test_resume_is_bit_identical(data: Path, tmp_path: Path):
    cfg = _cfg()
    pretrain(cfg, tmp_path / "full", data_dir=data)
    pretrain(cfg, tmp_path / "split", data_dir=data, stop_after=3)
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step_00000003"
    pretrain(cfg, tmp_path / "split", data_dir=data)
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert [r["step"] for r in mb] == list(range(6))
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]
    assert (tmp_path / "split" / "done.json").is_file()


def test_sigkill_and_resume_gives_the_same_weights(data: Path, tmp_path: Path):
    """A process killed with SIGKILL mid-run, then rerun, ends where an unkilled run ends."""
    steps = 40

    def cmd(out: str) -> list[str]:
        return [
            sys.executable, "-m", "raddino_lib.cli", "pretrain", "--preset", "smoke",
            "--data", str(data), "--out", str(tmp_path / out), "--no-progress",
            "-p", "precision", "fp32", "-p", "pretrain_steps", str(steps),
            "-p", "checkpoint_every", "4",
        ]  # fmt: skip

    # the same thread count in every process: float reductions depend on it
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(cmd("ref"), env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen(
        cmd("killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ck = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        last = latest_checkpoint(ck)
        if last is not None and int(last.name.split("_")[1]) >= 8:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(ck)
    assert killed_at is not None and int(killed_at.name.split("_")[1]) < steps
    done = subprocess.run(cmd("killed"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = _final_state(tmp_path / "ref"), _final_state(tmp_path / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in read_metrics(tmp_path / "killed")] == list(range(steps))


def test_kill_during_save_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch):
    state = {"w": torch.arange(4.0)}
    save_checkpoint(tmp_path, 2, state, {"state": {}, "param_groups": []}, {"x": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(ckpt_mod.torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, {"w": torch.zeros(4)}, {"state": {}}, {"x": 2})
    monkeypatch.undo()
    last = latest_checkpoint(tmp_path)
    assert last is not None and last.name == "step_00000002"
    assert torch.equal(load_checkpoint(last).model["w"], torch.arange(4.0))
    # a half-written folder from a real kill (no meta.json) is skipped, then cleaned up
    half = tmp_path / ".tmp_step_00000006_99"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"garbage")
    bad = tmp_path / "step_00000008"
    bad.mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    save_checkpoint(tmp_path, 10, state, {"state": {}}, {})
    assert not half.exists()
    assert latest_checkpoint(tmp_path).name == "step_00000010"


def test_optimizer_state_loads_weights_only(tmp_path: Path, data: Path):
    cfg = _cfg(pretrain_steps=2)
    pretrain(cfg, tmp_path / "run", data_dir=data)
    ck = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert ck.step == 2 and ck.optimizer["state"]  # AdamW moments present
    assert ck.meta["images_seen"] == 2 * cfg.batch_size


def test_loader_workers_train_the_same_weights(data: Path, tmp_path: Path):
    pretrain(_cfg(), tmp_path / "w0", data_dir=data)
    pretrain(_cfg(num_workers=2), tmp_path / "w2", data_dir=data)
    a, b = _final_state(tmp_path / "w0"), _final_state(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_config_is_refused(data: Path, tmp_path: Path):
    pretrain(_cfg(pretrain_steps=2), tmp_path / "run", data_dir=data)
    with pytest.raises(RunConfigMismatch, match="base_lr"):
        pretrain(_cfg(pretrain_steps=2, base_lr=0.5), tmp_path / "run", data_dir=data)


def test_resume_follows_the_data_by_content_not_folder(data: Path, tmp_path: Path):
    import shutil

    cfg = _cfg(pretrain_steps=4)
    # the uninterrupted run, for the resumed one's weights
    pretrain(cfg, tmp_path / "full", data_dir=data)
    part = pretrain(cfg, tmp_path / "run", data_dir=data, stop_after=2)
    assert part.steps == 2
    # the dataset folder moves (a copied cache with the phantom inside): the run carries on
    moved = shutil.copytree(data, tmp_path / "moved" / "phantom")
    done = pretrain(cfg, tmp_path / "run", data_dir=moved)
    assert done.steps == 4
    rec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert rec["data_dir"] == str(moved)  # the record names the folder it now reads
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # other data (one row fewer) in that folder is refused, naming the data
    pretrain(cfg, tmp_path / "run2", data_dir=moved, stop_after=2)
    _drop_last_row(moved / "records.csv")
    with pytest.raises(RunConfigMismatch, match="data: .*other images or records"):
        pretrain(cfg, tmp_path / "run2", data_dir=moved)


def test_a_continual_run_resumes_in_a_moved_cache(data: Path, tmp_path: Path, monkeypatch):
    """A run that starts from weights inside the cache records that init relative to the
    cache, so its unfinished run resumes after the cache moved (and an old record, with the
    absolute path, still matches where the cache has not moved)."""
    import shutil

    from raddino_lib.ssl.export import export_run

    a, b = tmp_path / "a" / "cache", tmp_path / "b" / "cache"
    monkeypatch.setenv("RADDINO_CACHE", str(a))
    pretrain(_cfg(pretrain_steps=2), a / "natural", data_dir=data)
    export_run(a / "natural", a / "natural" / "export")
    cfg = _cfg(pretrain_steps=4, init=str(a / "natural" / "export"))
    pretrain(cfg, a / "run", data_dir=data, stop_after=2)
    rec = json.loads((a / "run" / "config.json").read_text())
    assert rec["config"]["init"] == "cache:natural/export"
    # an old record named the init by its absolute path: still the same run here
    rec["config"]["init"] = str(a / "natural" / "export")
    (a / "run" / "config.json").write_text(json.dumps(rec))
    assert pretrain(cfg, a / "run", data_dir=data, stop_after=3).steps == 3
    rec = json.loads((a / "run" / "config.json").read_text())
    assert rec["config"]["init"] == "cache:natural/export"  # recorded anew
    shutil.copytree(a, b)
    monkeypatch.setenv("RADDINO_CACHE", str(b))
    done = pretrain(replace(cfg, init=str(b / "natural" / "export")), b / "run", data_dir=data)
    assert done.steps == 4


def test_a_run_record_from_before_content_keys_is_checked_by_folder(data: Path, tmp_path: Path):
    cfg = _cfg(pretrain_steps=4)
    pretrain(cfg, tmp_path / "run", data_dir=data, stop_after=2)
    path = tmp_path / "run" / "config.json"
    old = json.loads(path.read_text())
    del old["data_key"]
    path.write_text(json.dumps(old))
    with pytest.raises(RunConfigMismatch, match="data: .*recorded its folder"):
        check_run_config(tmp_path / "run", old["config"], data.parent, ["x.png"])
    check_run_config(tmp_path / "run", old["config"], data, load_records(data)["path"])
    assert "data_key" in json.loads(path.read_text())  # recorded from now on
    assert pretrain(cfg, tmp_path / "run", data_dir=data).steps == 4


def test_run_backbone_is_the_teacher(data: Path, tmp_path: Path):
    cfg = _cfg(pretrain_steps=2)
    pretrain(cfg, tmp_path / "run", data_dir=data)
    bb = load_run_backbone(tmp_path / "run")
    state = _final_state(tmp_path / "run")
    assert isinstance(bb, ViTBackbone) and not bb.training
    torch.testing.assert_close(bb.state_dict()["cls_token"], state["teacher.backbone.cls_token"])
    assert bb.spec == spec_from_config(cfg)


def test_backbone_masks_replace_patch_embeddings():
    spec = BackboneSpec(
        image_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, layerscale_init=1.0
    )
    torch.manual_seed(0)
    bb = ViTBackbone(spec).eval()
    with torch.no_grad():
        bb.mask_token.normal_()
    x = torch.rand(2, 1, 16, 16)
    y = torch.rand(2, 1, 16, 16)
    y[0] = x[0]
    y[0, :, :8, :8] = 0.0  # patch 0 differs, but it is masked in both
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[0, 0] = True
    with torch.no_grad():
        a = bb.forward_tokens(x, masks)["patches"][0]
        b = bb.forward_tokens(y, masks)["patches"][0]
        c = bb.forward_tokens(y)["patches"][0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="masks must be"):
        bb.forward_tokens(x, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        bb.forward_tokens(torch.rand(1, 1, 15, 16))


def test_metrics_file_has_the_diagnostics(data: Path, tmp_path: Path):
    pretrain(_cfg(pretrain_steps=2), tmp_path / "run", data_dir=data)
    rows = read_metrics(tmp_path / "run")
    need = {
        "loss",
        "dino_loss",
        "ibot_loss",
        "koleo_loss",
        "teacher_entropy",
        "teacher_entropy_of_mean",
        "prototypes_used",
        "cls_std",
        "lr",
        "weight_decay",
        "momentum",
        "teacher_temp",
        "images_per_s",
        "images_seen",
    }
    assert need <= set(rows[0])
    assert rows[0]["dino_loss"] == pytest.approx(
        rows[0]["loss"] - rows[0]["ibot_loss"] - 0.1 * rows[0]["koleo_loss"], rel=1e-5
    )
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["precision"] == "fp32" and run_json["init"] == "random"


def test_torchrun_two_processes_match_one(data: Path, tmp_path: Path):
    """2 processes (gloo, global batch 8 = 2 x 4): the first step's DINO and iBOT losses equal
    the single-process ones at the same seed to 1e-5, and with KoLeo off (it is per rank, as in
    DINOv2) the weights after two steps agree too."""
    steps = 2
    cfg = _cfg(pretrain_steps=steps, koleo_weight=0.0, checkpoint_every=steps)
    pretrain(cfg, tmp_path / "one", data_dir=data)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "raddino_lib.cli",
        "pretrain",
        "--preset",
        "smoke",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "two"),
        "--no-progress",
        "-p",
        "precision",
        "fp32",
        "-p",
        "pretrain_steps",
        str(steps),
        "-p",
        "koleo_weight",
        "0.0",
        "-p",
        "checkpoint_every",
        str(steps),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert len(two) == steps  # only rank 0 wrote
    for key in ("dino_loss", "ibot_loss", "loss"):
        assert two[0][key] == pytest.approx(one[0][key], abs=1e-5), key
    a, b = _final_state(tmp_path / "one"), _final_state(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=k)
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2


def test_cli_pretrain_then_export_loads_in_transformers(data: Path, tmp_path: Path):
    from transformers import AutoImageProcessor, AutoModel

    from raddino_lib.cli import main
    from raddino_lib.models.formats import load_backbone

    run, out = tmp_path / "run", tmp_path / "hf"
    rc = main(
        ["pretrain", "--preset", "smoke", "--data", str(data), "--out", str(run),
         "--no-progress", "-p", "precision", "fp32", "-p", "pretrain_steps", "3",
         "-p", "layerscale_init", "0.5", "--resolution", "48"]
    )  # fmt: skip
    assert rc == 0
    assert json.loads((run / "run.json").read_text())["spec"]["image_size"] == 48
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 2  # refuses to overwrite
    ours = load_run_backbone(run)
    hf = AutoModel.from_pretrained(out).eval()
    proc = AutoImageProcessor.from_pretrained(out)
    assert proc.crop_size["height"] == 48 and proc.image_mean[0] == pytest.approx(0.5)
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        a = ours.forward_tokens(x)
        h = hf(pixel_values=ours.preprocess(x)).last_hidden_state
    assert (h[:, 0] - a["cls"]).abs().max() < 1e-4
    assert (h[:, 1:] - a["patches"]).abs().max() < 1e-4
    back = load_backbone(out)
    assert back.head_state is not None and back.spec == ours.spec
    with torch.no_grad():
        torch.testing.assert_close(back.backbone.forward_tokens(x)["cls"], a["cls"])


def test_cli_pretrain_rejects_bad_arguments(data: Path, tmp_path: Path, capsys):
    from raddino_lib.cli import main

    assert main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "r"),
                 "--resolution", "30"]) == 2  # fmt: skip
    assert "multiple of patch_size" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "r"),
                 "-p", "no_such_knob", "1"]) == 2  # fmt: skip


def test_snapshots_hold_the_initial_and_periodic_teachers(data: Path, tmp_path: Path):
    from raddino_lib.ssl.train import list_snapshots, load_snapshot

    cfg = _cfg(pretrain_steps=4, snapshot_every=2)
    pretrain(cfg, tmp_path / "run", data_dir=data)
    snaps = list_snapshots(tmp_path / "run")
    assert list(snaps) == [0, 2, 4]
    last = load_snapshot(tmp_path / "run", 4)
    state = _final_state(tmp_path / "run")
    assert torch.equal(last.state_dict()["pos_embed"], state["teacher.backbone.pos_embed"])
    first = load_snapshot(tmp_path / "run", 0)
    assert not torch.equal(first.state_dict()["blocks.0.attn.qkv.weight"],
                           last.state_dict()["blocks.0.attn.qkv.weight"])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no snapshot at step 3"):
        load_snapshot(tmp_path / "run", 3)


def test_benchmark_step_runs_a_real_step():
    from raddino_lib.ssl.bench import benchmark_step

    t = benchmark_step(_cfg(), batch=4, steps=2, warmup=1)
    assert len(t.seconds_per_step) == 2 and t.images_per_s > 0
    assert t.params_backbone == sum(
        p.numel() for p in ViTBackbone(spec_from_config(_cfg())).parameters()
    )


def test_continual_pretraining_starts_from_exported_weights_and_head(data: Path, tmp_path: Path):
    """init=<transformers folder>: the run starts from those backbone and DINO-head weights
    (student and teacher), as RAD-DINO starts from DINOv2 with its head."""
    from raddino_lib.ssl.export import export_run
    from raddino_lib.ssl.train import load_snapshot

    cfg = _cfg(pretrain_steps=2)
    pretrain(cfg, tmp_path / "first", data_dir=data)
    hf = export_run(tmp_path / "first", tmp_path / "hf")
    cont = _cfg(pretrain_steps=2, init=str(hf), base_lr=0.0, min_lr=0.0)
    pretrain(cont, tmp_path / "second", data_dir=data)
    info = json.loads((tmp_path / "second" / "run.json").read_text())
    assert info["init"].startswith("hf weights") and "DINO head" in info["init"]
    start = load_snapshot(tmp_path / "second", 0).state_dict()
    src = load_run_backbone(tmp_path / "first").state_dict()
    for k in src:
        assert torch.equal(start[k], src[k]), k
    first, second = _final_state(tmp_path / "first"), _final_state(tmp_path / "second")
    key = "dino_head.last_layer.parametrizations.weight.original1"
    assert torch.equal(second[f"student.{key}"], first[f"teacher.{key}"])  # lr 0: unchanged


def test_run_summary_reads_what_the_run_did(data: Path, tmp_path: Path):
    from raddino_lib.ssl.train import run_summary

    cfg = _cfg(pretrain_steps=3)
    pretrain(cfg, tmp_path / "run", data_dir=data)
    s = run_summary(tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert s["steps"] == 3 and s["images_seen"] == 3 * cfg.batch_size
    assert s["epochs"] == pytest.approx(3 * cfg.batch_size / s["train_images"])
    assert s["train_minutes"] == pytest.approx(sum(r["step_s"] for r in rows) / 60)
    assert s["precision"] == "fp32" and s["init"] == "random"
    assert s["parameters_backbone"] == sum(
        p.numel() for p in ViTBackbone(spec_from_config(cfg)).parameters()
    )
    with pytest.raises(FileNotFoundError, match="never took a step"):
        run_summary(tmp_path)
