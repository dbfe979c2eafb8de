"""The text-supervised (CLIP-style) baseline: loss, tokenizer, data, training, cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from raddino_lib.config import make_config
from raddino_lib.data.datasets import dataset_dir
from raddino_lib.data.records import load_records
from raddino_lib.ssl.checkpoint import latest_checkpoint
from raddino_lib.text.tokenizer import SPECIAL_TOKENS, load_tokenizer, save_tokenizer
from raddino_lib.text.tokenizer import train_tokenizer as train_tok
from raddino_lib.textsup import encoder as enc_mod
from raddino_lib.textsup.data import PairAugment, PairData, make_pair_batch, select_pair_records
from raddino_lib.textsup.loss import clip_loss, clip_targets
from raddino_lib.textsup.model import INIT_LOG_SCALE, MAX_LOG_SCALE, ImageTextModel
from raddino_lib.textsup.train import (
    RunConfigMismatch,
    build_clip_model,
    read_metrics,
    train_clip,
)


def _cfg(**kw):
    base = dict(precision="fp32", progress=False, clip_steps=6, checkpoint_every=2)
    base.update(kw)
    return make_config("smoke", **base)


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_dir(make_config("smoke", progress=False))


@pytest.fixture(scope="module")
def records(root: Path) -> pd.DataFrame:
    return load_records(root)


def _drop_last_row(csv: Path) -> None:
    """Rewrite a ``records.csv`` without its last row (reports hold quoted newlines)."""
    import pandas as pd

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.iloc[:-1].to_csv(csv, index=False)


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    last = latest_checkpoint(run / "checkpoints")
    assert last is not None
    return load_file(str(last / "model.safetensors"))


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- loss ------------------------------------------------------------------------------------


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_clip_loss_matches_hand_computed_2x2():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # unit rows: cosines [[1, .6], [0, .8]]
    # logits = 2 * cos = [[2, 1.2], [0, 1.6]]; CE of a 2-way softmax = softplus(other - target)
    i2t = (_softplus(1.2 - 2.0) + _softplus(0.0 - 1.6)) / 2
    t2i = (_softplus(0.0 - 2.0) + _softplus(1.2 - 1.6)) / 2
    want = 0.5 * (i2t + t2i)
    assert float(clip_loss(img, txt, 2.0)) == pytest.approx(want, abs=1e-6)
    # embeddings are L2-normalised first: the scale of the inputs does not matter
    assert float(clip_loss(3 * img, 0.5 * txt, torch.tensor(2.0))) == pytest.approx(want, abs=1e-6)


def test_clip_loss_is_log_b_for_identical_embeddings():
    e = torch.randn(1, 8).expand(5, 8)
    assert float(clip_loss(e, e.clone(), 14.3)) == pytest.approx(math.log(5), abs=1e-5)
    # perfectly separated pairs at a large scale: ~0
    eye = torch.eye(4)
    assert float(clip_loss(eye, eye, 100.0)) < 1e-6


def test_clip_positives_share_the_target():
    pos = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    t = clip_targets(pos, 3, torch.device("cpu"))
    assert torch.allclose(t, torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]]))
    # soft targets: each direction's CE is -sum_j t_ij log softmax_j, averaged over rows
    img = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    logits = 3.0 * img @ txt.T  # all rows are unit vectors
    want = 0.5 * (
        -(t * logits.log_softmax(1)).sum(1).mean() - (t * logits.T.log_softmax(1)).sum(1).mean()
    )
    assert float(clip_loss(img, txt, 3.0, positives=pos)) == pytest.approx(float(want), abs=1e-6)
    assert float(clip_loss(img, txt, 3.0, positives=torch.eye(3, dtype=torch.bool))) == (
        pytest.approx(float(clip_loss(img, txt, 3.0)), abs=1e-7)
    )
    with pytest.raises(ValueError, match="symmetric"):
        clip_targets(torch.eye(3, dtype=torch.bool).logical_not(), 3, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"\[B, E\]"):
        clip_loss(torch.zeros(3, 2), torch.zeros(2, 2), 1.0)


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_ids(records: pd.DataFrame, tmp_path: Path):
    train = records.loc[records["split"] == "train", "report"].tolist()
    tok = train_tok(train, 300)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert len(tok) <= 300
    for text in records["report"].iloc[:20]:  # train and held-out reports, with newlines
        ids = tok(text)["input_ids"]
        assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text.lower()
    # BPE merged something: fewer tokens than characters
    assert len(tok(train[0])["input_ids"]) < 0.6 * len(train[0])
    # truncation keeps [EOS]; padding is [PAD] = 0 with mask 0
    b = tok(train[:2] + ["heart"], truncation=True, max_length=12, padding="longest")
    assert all(len(r) == 12 for r in b["input_ids"])
    assert b["input_ids"][0][-1] == 3 and b["input_ids"][2][-1] == 0
    assert b["attention_mask"][2][-1] == 0
    # unseen characters become [UNK]
    assert 1 in tok("zürich €")["input_ids"]
    save_tokenizer(tok, tmp_path / "tok")
    back = load_tokenizer(tmp_path / "tok")
    assert back(train[3])["input_ids"] == tok(train[3])["input_ids"]
    assert back.eos_token_id == 3
    with pytest.raises(ValueError, match="vocab_size"):
        train_tok(train, 20)
    with pytest.raises(FileNotFoundError, match="save_tokenizer"):
        load_tokenizer(tmp_path / "nothing")


# --- data and model --------------------------------------------------------------------------


def test_pairs_include_laterals_and_batches_are_seeded(root: Path, records: pd.DataFrame):
    pairs = select_pair_records(records)
    assert set(pairs["split"]) == {"train"} and "LATERAL" in set(pairs["view"])
    cfg = _cfg()
    tok = train_tok(pairs["report"], cfg.vocab_size)
    data = PairData(root, pairs, cfg.image_size, tok, cfg.text_max_len, progress=False)
    aug = PairAugment(cfg.image_size)
    a = make_pair_batch(data, aug, step=3, seed=0, batch_size=8)
    b = make_pair_batch(data, aug, step=3, seed=0, batch_size=8)
    c = make_pair_batch(data, aug, step=4, seed=0, batch_size=8)
    assert a.images.shape == (8, 1, cfg.image_size, cfg.image_size)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0
    assert a.input_ids.shape == a.attention_mask.shape and a.input_ids.shape[1] <= 48
    assert bool((a.input_ids == 3).any(dim=1).all())  # every row has its [EOS]
    # positives = same study; the augmentation differs from the raw image but stays close
    same = a.positives.numpy()
    studies = data.records["study_id"].to_numpy()[a.indices]
    assert np.array_equal(same, studies[:, None] == studies[None, :])
    raw = make_pair_batch(data, None, step=3, seed=0, batch_size=8)
    assert not torch.equal(raw.images, a.images)
    assert float((raw.images - a.images).abs().mean()) < 0.25


def test_model_shapes_scale_and_tower(records: pd.DataFrame):
    cfg = _cfg()
    tok = train_tok(records["report"], cfg.vocab_size)
    m = ImageTextModel.from_config(cfg, tok)
    with torch.no_grad():
        assert float(m.logit_scale()) == pytest.approx(1 / 0.07, rel=1e-5)
        m.log_scale.fill_(10.0)
        assert float(m.logit_scale()) == pytest.approx(100.0, rel=1e-5)
    assert INIT_LOG_SCALE < MAX_LOG_SCALE
    enc = tok(records["report"].iloc[:3].tolist(), padding=True, truncation=True,
              max_length=cfg.text_max_len, return_tensors="pt")  # fmt: skip
    img, txt, _ = m(torch.rand(3, 1, 32, 32), enc["input_ids"], enc["attention_mask"])
    assert img.shape == txt.shape == (3, cfg.clip_proj_dim)
    bb = m.image_backbone()
    assert bb.spec == m.spec and not bb.training
    with pytest.raises(ValueError, match="vocab_size"):
        ImageTextModel.from_config(_cfg(vocab_size=50), tok)


# --- training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(root: Path, records: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder with only 8 training pairs (the smoke phantom's images, linked)."""
    d = tmp_path_factory.mktemp("tiny_pairs")
    train = records[records["split"] == "train"].head(8)
    rest = records[records["split"] != "train"].head(4)
    out = pd.read_csv(root / "records.csv", dtype=str, keep_default_na=False)
    out = out[out["image_id"].isin(set(train["image_id"]) | set(rest["image_id"]))]
    out.to_csv(d / "records.csv", index=False)
    (d / "images").symlink_to(root / "images", target_is_directory=True)
    return d


def test_training_overfits_eight_pairs(tiny_dir: Path, tmp_path: Path):
    cfg = _cfg(clip_steps=30, clip_batch_size=8, clip_lr=2e-3, clip_warmup_steps=3,
               checkpoint_every=30)  # fmt: skip
    # without augmentation: a pure check that the optimisation fits the pairs (the smoke
    # towers are too small to also learn crop invariance in 30 steps)
    s = train_clip(cfg, tmp_path / "run", data_dir=tiny_dir, augment=False)
    assert s.finished and s.n_pairs == 8 and s.steps == 30
    rows = read_metrics(tmp_path / "run")
    loss = np.array([r["loss"] for r in rows])
    assert loss[:3].mean() == pytest.approx(math.log(8), abs=0.35)
    assert loss[-5:].mean() < 0.5 * loss[:3].mean(), loss.round(3)
    assert np.mean([r["acc_i2t"] for r in rows[-5:]]) > 0.6
    assert {"loss", "acc_i2t", "logit_scale", "lr", "images_per_s"} <= set(rows[-1])
    assert (tmp_path / "run" / "done.json").is_file()
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()
    with pytest.raises(RunConfigMismatch, match="augment"):
        train_clip(cfg, tmp_path / "run", data_dir=tiny_dir)


def test_determinism_resume_and_config_check(tmp_path: Path):
    cfg = _cfg()
    train_clip(cfg, tmp_path / "a")
    train_clip(cfg, tmp_path / "b")
    full = _final_state(tmp_path / "a")
    assert _same_state(full, _final_state(tmp_path / "b"))
    # stop after 3 steps (checkpoint at 2 and 3), then resume to 6: bit-identical
    part = train_clip(cfg, tmp_path / "c", stop_after=3)
    assert not part.finished and not (tmp_path / "c" / "done.json").exists()
    assert not (tmp_path / "c" / "image_encoder.safetensors").exists()
    rest = train_clip(cfg, tmp_path / "c")
    assert rest.finished and rest.steps == 6
    assert _same_state(full, _final_state(tmp_path / "c"))
    ea = load_file(str(tmp_path / "a" / "image_encoder.safetensors"))
    assert _same_state(ea, load_file(str(tmp_path / "c" / "image_encoder.safetensors")))
    losses = [[r["loss"] for r in read_metrics(tmp_path / x)] for x in ("a", "c")]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    # the image tower moved away from its (seeded) initialisation
    init, _ = build_clip_model(
        cfg, load_tokenizer(tmp_path / "a" / "tokenizer"), torch.device("cpu")
    )
    moved = [k for k, v in init.image.state_dict().items() if not torch.equal(v, ea[k])]
    assert "blocks.0.attn.qkv.weight" in moved and "patch_embed.proj.weight" in moved
    with pytest.raises(RunConfigMismatch, match="clip_lr"):
        train_clip(_cfg(clip_lr=1e-3), tmp_path / "a")


def test_resume_after_the_dataset_folder_moved(tiny_dir: Path, tmp_path: Path):
    import shutil

    cfg = _cfg(clip_steps=4, clip_batch_size=4)
    train_clip(cfg, tmp_path / "full", data_dir=tiny_dir)
    assert not train_clip(cfg, tmp_path / "run", data_dir=tiny_dir, stop_after=2).finished
    moved = shutil.copytree(tiny_dir, tmp_path / "moved", symlinks=True)
    assert train_clip(cfg, tmp_path / "run", data_dir=moved).finished
    assert _same_state(_final_state(tmp_path / "full"), _final_state(tmp_path / "run"))
    _drop_last_row(moved / "records.csv")
    with pytest.raises(RunConfigMismatch, match="text-supervised run .*data: "):
        train_clip(cfg, tmp_path / "run", data_dir=moved)


def test_cache_entry_trains_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(enc_mod, "cache_dir", lambda *p: tmp_path.joinpath(*p))
    cfg = _cfg(clip_steps=3)
    with pytest.raises(FileNotFoundError, match="train=True"):
        enc_mod.text_supervised_encoder(cfg, train=False)
    bb, run = enc_mod.text_supervised_encoder(cfg)
    assert run == enc_mod.text_supervised_run_dir(cfg) and run.parent == tmp_path / "baselines"
    assert run.name.startswith("clip_smoke_") and (run / "done.json").is_file()
    assert not bb.training and bb.spec.embed_dim == cfg.embed_dim

    def no_training(*a, **k):
        raise AssertionError("the cached run was trained again")

    monkeypatch.setattr(enc_mod, "train_clip", no_training)
    bb2, run2 = enc_mod.text_supervised_encoder(cfg, train=False)
    assert run2 == run and _same_state(bb.state_dict(), bb2.state_dict())
    # the image tower is the trained one, not a fresh init
    state = _final_state(run)
    tower = {k[len("image.") :]: v for k, v in state.items() if k.startswith("image.")}
    assert _same_state(tower, {k: v for k, v in bb2.state_dict().items() if k in tower})
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert bb2.forward_tokens(x)["cls"].shape == (2, cfg.embed_dim)
    model, tok = enc_mod.load_image_text_model(run)
    assert tok.eos_token_id == 3 and not model.training


def test_fingerprint_tracks_training_fields_only():
    base = enc_mod.text_supervised_run_dir(_cfg())
    assert base == enc_mod.text_supervised_run_dir(_cfg())
    for changed in (dict(clip_lr=1e-3), dict(text_depth=2), dict(vocab_size=300),
                    dict(embed_dim=64), dict(phantom_seed=1), dict(seed=1)):  # fmt: skip
        assert enc_mod.text_supervised_run_dir(_cfg(**changed)) != base, changed
    for same in (dict(probe_epochs=7), dict(probe_lr=1e-2), dict(pretrain_steps=99),
                 dict(base_lr=0.1), dict(checkpoint_every=5), dict(progress=True)):  # fmt: skip
        assert enc_mod.text_supervised_run_dir(_cfg(**same)) == base, same
    assert base.name.startswith("clip_smoke_") and len(base.name) == len("clip_smoke_") + 12


def test_run_folders_follow_the_phantom_version(monkeypatch):
    """A cached run trained on an older phantom is never reused after the generator changes."""
    import raddino_lib.data.phantom as phantom
    from raddino_lib.ssl.export import pretrained_run_dir

    cfg = _cfg()
    before = (enc_mod.text_supervised_run_dir(cfg), pretrained_run_dir(cfg))
    monkeypatch.setattr(phantom, "GENERATOR_VERSION", "0.0.0-test")
    after = (enc_mod.text_supervised_run_dir(cfg), pretrained_run_dir(cfg))
    assert before[0] != after[0] and before[1] != after[1]
    # A local dataset folder is named by data_dir, whatever the phantom's version.
    local = _cfg(data_dir="/data/x")
    first = enc_mod.text_supervised_run_dir(local)
    monkeypatch.setattr(phantom, "GENERATOR_VERSION", "0.0.1-test")
    assert enc_mod.text_supervised_run_dir(local) == first
