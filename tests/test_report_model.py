"""Report generator: prompt and labels, image-token splicing, loss masking, training, decoding,
the checkpoint cache and resuming."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from raddino_lib.config import make_config
from raddino_lib.report.data import collate, encode_reports, findings_section, report_records
from raddino_lib.report.generate import generate_reports
from raddino_lib.report.model import (
    IGNORE_INDEX,
    Projector,
    ReportGenerator,
    build_small_lm,
    load_lm,
    splice_image_tokens,
)
from raddino_lib.report.tokenizer import (
    IMAGE_TOKEN_INDEX,
    prompt_ids,
    report_ids,
    train_report_tokenizer,
)
from raddino_lib.report.train import (
    batch_indices,
    cached_generator,
    fit_generator,
    lr_at,
    train_fields,
)

torch.set_num_threads(1)

REPORTS = [
    "The lungs are clear. No pleural effusion.",
    "Small left apical pneumothorax. Right chest tube in place.",
    "Moderate cardiomegaly. Bilateral pleural effusions.",
    "Endotracheal tube in standard position. Left basilar consolidation.",
]


@pytest.fixture(scope="module")
def tok():
    return train_report_tokenizer(REPORTS, 200)


def _tiny(tok, d_vision: int = 16, width: int = 64, depth: int = 2) -> ReportGenerator:
    torch.manual_seed(0)
    lm = build_small_lm("gpt2", len(tok), width=width, depth=depth, heads=2, max_positions=96,
                        dropout=0.0)  # fmt: skip
    return ReportGenerator(Projector(d_vision, width), lm)


# ----------------------------------------------------------------------------- data
def test_findings_section_and_report_records() -> None:
    rep = "FINDINGS: Small  left effusion.\nThe heart is enlarged.\nIMPRESSION: Effusion."
    assert findings_section(rep) == "Small left effusion. The heart is enlarged."
    assert findings_section("Findings: no acute process. Impression: normal.") == (
        "no acute process."
    )
    assert findings_section("IMPRESSION: only an impression.") == ""
    # no header at all: already a findings section (the MIMIC-CXR adapter's report column)
    assert findings_section("Lungs are clear.  No effusion.") == "Lungs are clear. No effusion."
    assert findings_section(None) == ""
    df = pd.DataFrame({
        "view": ["PA", "LATERAL", "AP", "AP"], "split": ["train"] * 4,
        "report": [rep, rep, "IMPRESSION: x.", "FINDINGS: Clear lungs."],
    })  # fmt: skip
    out = report_records(df)
    assert list(out.index) == [0, 3]  # lateral and no-findings rows dropped
    assert out["findings"].tolist() == ["Small left effusion. The heart is enlarged.",
                                        "Clear lungs."]  # fmt: skip
    with pytest.raises(KeyError, match="report"):
        report_records(df.drop(columns="report"))


def test_prompt_and_labels_mask_everything_but_the_report(tok) -> None:
    prompt = prompt_ids(tok, "plain")
    assert prompt[0] == tok.bos_token_id == 2
    assert prompt.count(IMAGE_TOKEN_INDEX) == 1 and prompt[1] == IMAGE_TOKEN_INDEX
    ids, labels = encode_reports(tok, [REPORTS[0]], "plain", 64)[0]
    rep = report_ids(tok, REPORTS[0], "plain", 64)
    assert rep[-1] == tok.eos_token_id == 3
    assert ids == prompt + rep and len(labels) == len(ids)
    assert labels == [IGNORE_INDEX] * len(prompt) + rep
    assert tok.decode(rep[:-1], skip_special_tokens=True) == REPORTS[0].lower()
    # truncation keeps EOS
    assert report_ids(tok, REPORTS[0], "plain", 3) == rep[:3] + [tok.eos_token_id]
    batch = collate(encode_reports(tok, REPORTS[:2], "plain", 64), pad_id=0)
    n0 = len(encode_reports(tok, REPORTS[:1], "plain", 64)[0][0])
    assert batch["attention_mask"][0].sum() == n0
    assert (batch["labels"][0, n0:] == IGNORE_INDEX).all()


# ------------------------------------------------------------------------- splicing
def test_splice_puts_image_tokens_at_the_placeholder() -> None:
    emb = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[2, 5, IMAGE_TOKEN_INDEX, 6, 7, 0], [2, IMAGE_TOKEN_INDEX, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 6, 7, -100], [-100, -100, 8, 9, -100, -100]])
    img = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4) + 100
    s = splice_image_tokens(ids, img, emb, mask, labels)
    assert s.inputs_embeds.shape == (2, 6 - 1 + 3, 4)
    assert s.image_start.tolist() == [2, 1]
    with torch.no_grad():
        torch.testing.assert_close(s.inputs_embeds[0, 2:5], img[0])
        torch.testing.assert_close(s.inputs_embeds[1, 1:4], img[1])
        torch.testing.assert_close(s.inputs_embeds[0, :2], emb(torch.tensor([2, 5])))
        torch.testing.assert_close(s.inputs_embeds[0, 5:7], emb(torch.tensor([6, 7])))
        torch.testing.assert_close(s.inputs_embeds[1, 4:6], emb(torch.tensor([8, 9])))
    assert s.labels.tolist() == [
        [-100, -100, -100, -100, -100, 6, 7, -100],
        [-100, -100, -100, -100, 8, 9, -100, -100],
    ]
    assert s.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0, 0]]


def test_splice_rejects_rows_without_exactly_one_placeholder() -> None:
    emb = torch.nn.Embedding(10, 4)
    img = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"rows \[1\] have \[0\]"):
        splice_image_tokens(torch.tensor([[IMAGE_TOKEN_INDEX, 1], [1, 2]]), img, emb)
    two = torch.tensor([[IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX], [IMAGE_TOKEN_INDEX, 1]])
    with pytest.raises(ValueError, match=r"rows \[0\] have \[2\]"):
        splice_image_tokens(two, img, emb)


def test_loss_is_cross_entropy_over_report_tokens_only(tok) -> None:
    model = _tiny(tok).eval()
    batch = collate(encode_reports(tok, REPORTS[:2], "plain", 64), pad_id=0)
    feats = torch.randn(2, 5, 16)
    with torch.no_grad():
        out = model(feats, batch["input_ids"], batch["attention_mask"], batch["labels"])
        s = model.splice(feats, batch["input_ids"], batch["attention_mask"], batch["labels"])
        logits = model.lm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask).logits
    target = s.labels[:, 1:]
    keep = target != IGNORE_INDEX
    n_report = sum(len(report_ids(tok, r, "plain", 64)) for r in REPORTS[:2])
    assert int(keep.sum()) == n_report  # prompt, image tokens and padding carry no loss
    want = F.cross_entropy(logits[:, :-1][keep], target[keep])
    assert float(out.loss) == pytest.approx(float(want), rel=1e-5)


# --------------------------------------------------------------------------- training
def test_batch_indices_cover_each_row_once_per_epoch() -> None:
    rows = np.concatenate([batch_indices(10, 4, s, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(rows[:10].tolist()) == list(range(10))
    assert sorted(rows[10:].tolist()) == list(range(10))
    assert np.array_equal(batch_indices(10, 4, 2, seed=3), batch_indices(10, 4, 2, seed=3))
    assert not np.array_equal(rows[:10], rows[10:])


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_at(0, 100, 1.0, 0.03) == pytest.approx(1 / 3)
    assert lr_at(2, 100, 1.0, 0.03) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 0.03) == pytest.approx(0.5 * (1 + math.cos(math.pi * 96 / 97)))
    assert lr_at(50, 100, 1.0, 0.0) == pytest.approx(0.5)


def test_tiny_model_overfits_four_reports(tok) -> None:
    """Greedy decoding reproduces 4 training reports from their (distinct) image tokens."""
    model = _tiny(tok)
    feats = torch.randn(4, 4, 16, generator=torch.Generator().manual_seed(0))
    seqs = encode_reports(tok, REPORTS, "plain", 64)
    res = fit_generator(model, feats, seqs, pad_id=0, steps=150, batch_size=4, lr=3e-3,
                        warmup_ratio=0.0, seed=0)  # fmt: skip
    assert res.losses[-1] < 0.05 < res.losses[0]
    out = generate_reports(model, feats, tok, prompt_ids(tok, "plain"), max_new_tokens=40)
    assert out == [r.lower() for r in REPORTS]


def test_resumed_training_ends_with_the_same_weights(tok, tmp_path) -> None:
    feats = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(1))
    seqs = encode_reports(tok, REPORTS, "plain", 64)
    kw = {"pad_id": 0, "steps": 6, "batch_size": 3, "lr": 1e-3, "seed": 0}
    straight = _tiny(tok, width=32, depth=1)
    straight.lm.config.resid_pdrop = 0.1  # dropout on: the per-step reseed must make it match
    path = tmp_path / "resume.pt"
    fit_generator(straight, feats, seqs, resume_path=path, resume_key={"k": 1},
                  checkpoint_every=4, **kw)  # fmt: skip
    assert path.is_file()  # written at step 4 of 6
    resumed = _tiny(tok, width=32, depth=1)
    res = fit_generator(resumed, feats, seqs, resume_path=path, resume_key={"k": 1},
                        checkpoint_every=4, **kw)  # fmt: skip
    assert res.resumed_from == 4 and len(res.losses) == 6
    for (n, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(),
                              strict=True):  # fmt: skip
        assert torch.equal(a, b), n
    other = fit_generator(_tiny(tok, width=32, depth=1), feats, seqs, resume_path=path,
                          resume_key={"k": 2}, checkpoint_every=4, **kw)  # fmt: skip
    assert other.resumed_from == 0  # another key starts over


def test_cached_generator_saves_loads_and_checks_its_key(tok, tmp_path) -> None:
    feats = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(2))
    seqs = encode_reports(tok, REPORTS, "plain", 64)
    calls = []

    def train(model, resume):
        calls.append(resume)
        return fit_generator(model, feats, seqs, pad_id=0, steps=3, batch_size=4, lr=1e-3)

    folder = tmp_path / "gen"
    m1, info1 = cached_generator(folder, {"a": 1}, lambda: _tiny(tok), train)
    assert not info1["cached"] and info1["fit"]["steps"] == 3 and len(calls) == 1
    assert (folder / "lm" / "config.json").is_file() and (
        folder / "projector.safetensors"
    ).is_file()
    assert not list(tmp_path.glob(".gen.*"))  # no temporary folder left behind
    m2, info2 = cached_generator(folder, {"a": 1}, lambda: _tiny(tok), train)
    assert info2["cached"] and len(calls) == 1
    prompt = prompt_ids(tok, "plain")
    assert generate_reports(m1, feats, tok, prompt, max_new_tokens=8) == generate_reports(
        m2, feats, tok, prompt, max_new_tokens=8
    )
    with pytest.warns(UserWarning, match="key differs"):
        _, info3 = cached_generator(folder, {"a": 2}, lambda: _tiny(tok), train)
    assert not info3["cached"] and len(calls) == 2


def test_build_small_lm_kinds_and_load_errors(tmp_path) -> None:
    llama = build_small_lm("llama", 50, width=32, depth=1, heads=2, max_positions=64)
    assert type(llama).__name__ == "LlamaForCausalLM"
    assert llama.get_input_embeddings().embedding_dim == 32
    with pytest.raises(ValueError, match="multiple of rg_heads"):
        build_small_lm("gpt2", 50, width=30, depth=1, heads=4, max_positions=64)
    with pytest.raises(ValueError, match="small LM kind"):
        build_small_lm("t5", 50, width=32, depth=1, heads=2, max_positions=64)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_lm(tmp_path / "vicuna")


def test_rg_fields_do_not_change_pretraining_fingerprints() -> None:
    from raddino_lib.ssl.train import _training_fields
    from raddino_lib.textsup.train import clip_fields

    cfg = make_config("smoke")
    other = replace(cfg, rg_steps=99, rg_width=64, rg_lm="llama")
    assert _training_fields(cfg) == _training_fields(other)
    assert clip_fields(cfg) == clip_fields(other)
    tf = train_fields(cfg)
    assert "rg_steps" in tf and "rg_max_test" not in tf and "rg_bootstrap" not in tf
    assert train_fields(replace(cfg, rg_max_test=3)) == tf
    assert train_fields(replace(cfg, rg_lr=0.5)) != tf


def test_control_encoder_pretrains_on_one_cohort() -> None:
    from raddino_lib.eval import compare as cmp

    cfg = make_config("smoke")
    assert cmp.control_cohorts(cfg) == ("icu",)  # the phantom's MIMIC-CXR stand-in
    assert cmp.control_cohorts(replace(cfg, data_dir="/data/multi")) == ("mimic_cxr",)
    assert cmp.control_cohorts(replace(cfg, dataset="mimic", data_root="/x")) == ("mimic_cxr",)
    assert cmp.CONTROL in cmp.OPT_IN_ROLES and cmp.CONTROL not in cmp.ENCODER_ROLES


def test_pool_tokens_averages_the_patch_grid() -> None:
    from raddino_lib.report.data import pool_tokens

    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)  # a 4 x 4 grid
    assert pool_tokens(x, 1) is x
    y = pool_tokens(x, 2)
    assert y.shape == (2, 4, 3)
    grid = x.reshape(2, 4, 4, 3)
    # token 1 of the pooled grid: rows 0-1, columns 2-3 of the original
    assert torch.allclose(y[:, 1], grid[:, 0:2, 2:4].mean((1, 2)))
    assert torch.allclose(y[:, 2], grid[:, 2:4, 0:2].mean((1, 2)))
    assert pool_tokens(x.half(), 4).dtype == torch.float16
    with pytest.raises(ValueError, match="square patch grid"):
        pool_tokens(x, 3)
    with pytest.raises(ValueError, match="square patch grid"):
        pool_tokens(x[:, :15], 2)
    with pytest.raises(ValueError, match="at least 1"):
        pool_tokens(x, 0)


def test_small_lm_has_no_attention_dropout_and_cpu_uses_eager() -> None:
    from raddino_lib.report.model import small_lm_attention

    assert small_lm_attention("cpu") == "eager" and small_lm_attention("cuda") == "sdpa"
    gpt = build_small_lm("gpt2", 50, width=32, depth=1, heads=2, max_positions=64, dropout=0.3,
                         attn_implementation="eager")  # fmt: skip
    assert gpt.config.attn_pdrop == 0.0 and gpt.config.resid_pdrop == 0.3
    assert gpt.config._attn_implementation == "eager"
    llama = build_small_lm("llama", 50, width=32, depth=1, heads=2, max_positions=64)
    assert llama.config.attention_dropout == 0.0
    # eager and SDPA compute the same function
    torch.manual_seed(0)
    ids = torch.randint(4, 50, (2, 10))
    sd = build_small_lm("gpt2", 50, width=32, depth=1, heads=2, max_positions=64,
                        attn_implementation="sdpa").eval()  # fmt: skip
    eg = build_small_lm("gpt2", 50, width=32, depth=1, heads=2, max_positions=64,
                        attn_implementation="eager").eval()  # fmt: skip
    eg.load_state_dict(sd.state_dict())
    with torch.no_grad():
        assert torch.allclose(sd(ids).logits, eg(ids).logits, atol=1e-5)


def test_generators_start_from_one_shared_text_prior(tmp_path, monkeypatch) -> None:
    """With rg_prior_steps > 0 one text-only LM is trained (blank image tokens, prior steps)
    and every generator starts from an exact copy of it with a fresh projector; a second run
    loads all of it from the cache; a pretrained LM folder refuses a prior."""
    import raddino_lib.report.experiment as rx
    from raddino_lib.models.registry import load_encoder

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    cfg = replace(make_config("smoke"), rg_prior_steps=3, rg_steps=2, rg_max_test=4,
                  rg_bootstrap=10, progress=False)  # fmt: skip
    calls: list[dict] = []
    real_fit = rx.fit_generator

    def spy(model, features, seqs, **kw):
        lm0 = {k: v.detach().clone() for k, v in model.lm.state_dict().items()}
        res = real_fit(model, features, seqs, **kw)
        lm1 = {k: v.detach().clone() for k, v in model.lm.state_dict().items()}
        calls.append({"steps": kw["steps"], "shape": tuple(features.shape), "lm0": lm0,
                      "lm1": lm1, "zero": bool((features == 0).all())})  # fmt: skip
        return res

    monkeypatch.setattr(rx, "fit_generator", spy)
    encs = {n: load_encoder("blank:32:8:32", name=n) for n in ("a", "b")}
    run = rx.run_report_generation(cfg, encs)
    assert [c["steps"] for c in calls] == [3, 2, 2]
    prior = calls[0]
    assert prior["zero"] and prior["shape"][1:] == (16, 1)  # blank tokens, the generators' count
    for c in calls[1:]:
        assert c["shape"][1:] == (16, 32)
        assert all(torch.equal(c["lm0"][k], prior["lm1"][k]) for k in prior["lm1"])
        assert any(not torch.equal(c["lm1"][k], prior["lm1"][k]) for k in prior["lm1"])
    assert run.info["setup"]["prior_steps"] == 3
    assert all(t["from_prior"] and not t["cached"] for t in run.info["training"].values())
    assert run.info["setup"]["text_prior"]["16"]["steps"] == 3

    calls.clear()  # warm: nothing is trained or even loaded, the same reports come back
    again = rx.run_report_generation(cfg, encs)
    assert calls == [] and again.generated == run.generated
    assert all(t["cached"] for t in again.info["training"].values())
    assert again.info["setup"]["text_prior"]["16"]["cached"] is None  # not needed
    # generators gone, prior kept: fine-tuned from the cached prior, they come out the same
    for t in run.info["training"].values():
        shutil.rmtree(t["folder"])
    third = rx.run_report_generation(cfg, encs)
    assert [c["steps"] for c in calls] == [2, 2] and third.generated == run.generated
    assert third.info["setup"]["text_prior"]["16"]["cached"] is True
    calls.clear()
    # the fine-tuning steps do not change the prior's key: only the generators retrain
    rx.run_report_generation(replace(cfg, rg_steps=1), encs)
    assert [c["steps"] for c in calls] == [1, 1]
    with pytest.raises(ValueError, match="rg_prior_steps=3 trains a text prior"):
        rx.prior_steps(replace(cfg, rg_lm=str(tmp_path)))


def test_generator_folder_ends_with_its_fingerprint(tmp_path, monkeypatch) -> None:
    """A generator's cache folder is named by preset, encoder and the fingerprint of its key;
    the fingerprint (which the generators trained from a text prior carry in their own keys)
    changes with any key field and with nothing else."""
    from raddino_lib.report.train import generator_dir, generator_fingerprint

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path))
    key = {"steps": 10, "tokens": 16, "stage": "text prior"}
    folder = generator_dir("laptop", "text prior", key)
    assert folder.parent == tmp_path / "report"
    assert folder.name == f"laptop_text-prior_{generator_fingerprint(key)}"
    assert generator_fingerprint(dict(reversed(list(key.items())))) == generator_fingerprint(key)
    assert generator_fingerprint({**key, "steps": 11}) != generator_fingerprint(key)
    assert len(generator_fingerprint(key)) == 12


def test_fit_from_written_inputs_equals_fitting_here(tok, tmp_path) -> None:
    """write_fit_inputs + fit_from_inputs (what a side process runs) train the same weights as
    fit_generator on the model itself, save the generator where cached_generator finds it and
    remove the inputs; without inputs the error says what is missing."""
    from raddino_lib.report.train import (
        fit_from_inputs,
        fit_inputs_dir,
        generator_done,
        write_fit_inputs,
    )

    feats = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(3)).half()
    seqs = encode_reports(tok, REPORTS, "plain", 64)
    kw = {"pad_id": 0, "steps": 5, "batch_size": 3, "lr": 1e-3, "seed": 4, "device": "cpu",
          "precision": "fp32", "desc": "t"}  # fmt: skip
    torch.manual_seed(0)
    lm = build_small_lm("gpt2", len(tok), width=32, depth=1, heads=2, max_positions=96,
                        dropout=0.1, attn_implementation="eager")  # fmt: skip
    here = ReportGenerator(Projector(16, 32), lm)  # dropout on: reseeded per step, both sides
    folder, key = tmp_path / "gen", {"encoder": "x", "steps": 5}
    write_fit_inputs(folder, key, here, feats, seqs, kw, attn_implementation="eager")
    assert not generator_done(folder, key)
    res_here = fit_generator(here, feats, seqs, **kw)
    res_side = fit_from_inputs(folder)
    assert res_side.losses == res_here.losses and len(res_side.losses) == 5
    assert generator_done(folder, key) and not generator_done(folder, {"encoder": "y"})
    assert not fit_inputs_dir(folder).exists()
    calls = []
    model, info = cached_generator(folder, key, lambda: _tiny(tok), lambda m, r: calls.append(m))
    assert info["cached"] and info["trained_in"] == "side process" and calls == []
    for (n, a), (_, b) in zip(here.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(FileNotFoundError, match="write_fit_inputs"):
        fit_from_inputs(folder)
    with pytest.raises(ValueError, match="resume_key"):
        write_fit_inputs(folder, key, here, feats, seqs, {**kw, "resume_key": key})


def test_generators_side_by_side_write_the_same_reports(tmp_path, monkeypatch) -> None:
    """With two lanes the generators train in side processes (after the text prior, here) and
    come out as the generators trained one after the other in this process: the same losses and
    the same generated reports; a rerun loads them all."""
    import raddino_lib.lanes as lanes
    import raddino_lib.report.experiment as rx
    from raddino_lib.models.registry import load_encoder

    cfg = replace(make_config("smoke"), rg_prior_steps=3, rg_steps=3, rg_max_test=4,
                  rg_bootstrap=10, progress=False)  # fmt: skip
    encs = {n: load_encoder("blank:32:8:32", name=n) for n in ("a", "b", "c")}
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "one"))
    one = rx.run_report_generation(cfg, encs)
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "side"))
    monkeypatch.setattr(lanes, "lanes_for", lambda c: 2)
    side = rx.run_report_generation(cfg, encs)
    assert all(t["side_process"] and not t["cached"] for t in side.info["training"].values())
    assert not any(t["side_process"] for t in one.info["training"].values())
    assert side.generated == one.generated
    for n in encs:
        assert side.info["training"][n]["losses"] == one.info["training"][n]["losses"], n
    again = rx.run_report_generation(cfg, encs)
    assert all(t["cached"] and not t["side_process"] for t in again.info["training"].values())
    assert again.generated == one.generated
    shutil.rmtree(side.info["training"]["b"]["folder"])  # one missing: nothing to pair with
    lone = rx.run_report_generation(cfg, encs)
    b = lone.info["training"]["b"]
    assert not b["cached"] and not b["side_process"] and lone.generated == one.generated
    assert not list((tmp_path / "side" / "report").glob("*.inputs"))


def test_generator_runs_train_with_their_own_seeds(tmp_path, monkeypatch) -> None:
    """rg_runs trains each encoder's generator once per seed (seed, seed + 1, ...): the first
    run keeps the one-run key (cached from a one-run book), the others train from the same
    text prior with their own seed; metrics are the runs' mean and the reports shown are the
    first run's."""
    import raddino_lib.report.experiment as rx
    from raddino_lib.models.registry import load_encoder

    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    cfg = replace(make_config("smoke"), rg_prior_steps=2, rg_steps=3, rg_max_test=4,
                  rg_bootstrap=20, progress=False)  # fmt: skip
    encs = {n: load_encoder("blank:32:8:32", name=n) for n in ("a", "b")}
    one = rx.run_report_generation(cfg, encs)
    calls: list[int] = []
    real_fit = rx.fit_generator
    spy = lambda *a, **kw: calls.append(kw["seed"]) or real_fit(*a, **kw)  # noqa: E731
    monkeypatch.setattr(rx, "fit_generator", spy)
    reads: list[str] = []
    real_tokens = rx.patch_tokens
    tokens_spy = lambda enc, *a: reads.append(enc.name) or real_tokens(enc, *a)  # noqa: E731
    monkeypatch.setattr(rx, "patch_tokens", tokens_spy)
    two = rx.run_report_generation(replace(cfg, rg_runs=2), encs)
    assert calls == [cfg.seed + 1, cfg.seed + 1]  # run 1 of a and of b; run 0s are cached
    assert reads == ["a", "b"]  # each encoder's tokens read once for both runs
    assert two.generated == one.generated and two.info["setup"]["runs"] == 2
    for n in encs:
        t = two.info["training"][n]
        assert [r["seed"] for r in t["runs"]] == [cfg.seed, cfg.seed + 1]
        assert t["runs"][0]["cached"] and not t["runs"][1]["cached"]
        assert t["runs"][0]["folder"] != t["runs"][1]["folder"]
        assert t["runs"][0]["losses"] == one.info["training"][n]["losses"]
        assert t["runs"][1]["losses"] != t["runs"][0]["losses"]
        assert len(two.scores[n].runs) == 2
        row = two.table.set_index("encoder").loc[n]
        for m in ("rouge_l", "bleu4", "macro_f1_14"):
            assert t["run_values"][m] == two.scores[n].values(m)
            assert row[f"{m}_point"] == pytest.approx(np.mean(t["run_values"][m]))
        assert t["run_values"]["rouge_l"][0] == pytest.approx(
            one.table.set_index("encoder").loc[n, "rouge_l_point"]
        )
    assert two.difference("a", "b", "rouge_l", samples=20) is not None
    # image tokens of another embedding-cache version: each generator retrains
    calls.clear()
    monkeypatch.setattr("raddino_lib.eval.cache.CACHE_VERSION", "next")
    rx.run_report_generation(cfg, encs)
    assert calls == [cfg.seed, cfg.seed]
    with pytest.raises(ValueError, match="rg_runs must be at least 1"):
        rx.run_report_generation(replace(cfg, rg_runs=0), encs)
