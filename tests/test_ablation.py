"""Pretraining sweeps of the ablation chapters: points, their configs, and a real smoke sweep."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from raddino_lib.config import make_config
from raddino_lib.eval import ablation as ab
from raddino_lib.eval import compare as cmp

torch.set_num_threads(1)


def test_point_config_scales_crops_and_sets_the_budget() -> None:
    cfg = make_config("laptop")  # 64 px, patch 8, crops 64 / 32
    pt = ab.SweepPoint("48 px", 48.0, {"init": "random", "image_size": 48})
    c = ab.point_config(cfg, pt)
    assert (c.image_size, c.global_crop_size, c.local_crop_size) == (48, 48, 24)
    assert c.pretrain_steps == cfg.ablation_steps
    assert c.snapshot_every == cfg.ablation_snapshot_every
    assert c.batch_size == cfg.ablation_batch_size == 32
    assert ab.point_config(make_config("laptop", ablation_batch_size=0), pt).batch_size == 64
    c = ab.point_config(cfg, ab.SweepPoint("32", 32.0, {"image_size": 32}))
    assert (c.global_crop_size, c.local_crop_size) == (32, 16)
    paper = make_config("paper")  # 518 px, patch 14, local crops 196
    c = ab.point_config(paper, ab.SweepPoint("224", 224.0, {"image_size": 224}))
    assert (c.global_crop_size, c.local_crop_size) == (224, 84)  # 196 * 224 / 518 = 84.8
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        ab.point_config(cfg, ab.SweepPoint("50", 50.0, {"image_size": 50}))


def test_the_three_sweeps_share_one_reference_run() -> None:
    from raddino_lib.ssl.export import pretrained_run_dir

    cfg = make_config("laptop")
    init = ab.init_points(cfg)
    res = ab.resolution_points(cfg)
    data = ab.data_points(cfg)
    assert [p.label for p in init] == [ab.RANDOM_INIT, ab.CONTINUAL]
    assert [p.x for p in res] == [32.0, 48.0, 64.0]
    assert [p.label for p in data] == [
        "ICU frontal", "+ inpatient, screening frontal", "+ laterals (all)"
    ]  # fmt: skip
    assert [p.early_stop for p in data] == [True, True, False]
    assert data[0].overrides == {"init": "random", "frontal_only": True, "cohorts": ("icu",)}
    # the reference point of every sweep is one cached run
    dirs = {pretrained_run_dir(ab.point_config(cfg, p)) for p in (init[0], res[-1], data[-1])}
    assert len(dirs) == 1
    others = {pretrained_run_dir(ab.point_config(cfg, p)) for p in (*res[:-1], *data[:-1])}
    assert len(others) == 4 and not dirs & others
    # the preset's own side joins the ladder when the sizes leave it out
    assert [p.x for p in ab.resolution_points(make_config("laptop", ablation_sizes=(32,)))] == [
        32.0, 64.0
    ]  # fmt: skip
    assert len(ab.data_points(make_config("laptop", ablation_data_points=9))) == 4
    assert [p.label for p in ab.data_points(make_config("smoke"))] == [
        "ICU frontal", "+ laterals (all)"
    ]  # fmt: skip


def test_sweep_verdict() -> None:
    assert ab.sweep_verdict([0.5, 0.6, 0.55], [0.4, 0.5, 0.45]) == "held"
    assert ab.sweep_verdict([0.4, 0.5, 0.45], [0.5, 0.6, 0.55]) == "did not hold"
    assert ab.sweep_verdict([0.5, 0.4, 0.5], [0.45, 0.5, 0.44]) == "inconclusive at this budget"


# ------------------------------------------------------------------ a real sweep at smoke
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ablation_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADDINO_CACHE", str(root))
        yield root


def test_smoke_sweeps_train_probe_and_reuse_runs(cache: Path) -> None:
    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.data.records import load_records
    from raddino_lib.eval.pretrain_probe import frontal_records

    cfg = make_config("smoke", progress=False, precision="fp32", ablation_steps=3)
    root = dataset_dir(cfg)
    frontal = frontal_records(load_records(root))
    findings = ["lung_opacity", "cardiomegaly"]
    data = ab.run_sweep(cfg, ab.data_points(cfg), root, frontal, findings)
    assert list(data["label"]) == ["ICU frontal", "+ laterals (all)"]
    records = load_records(root)
    train = records[records["split"] == "train"]
    icu = int(((train["cohort"] == "icu") & (train["view"] != "LATERAL")).sum())
    assert data["pretrain_images"].tolist() == [icu, len(train)]
    assert (data["pretrain_steps"] == 3).all() and (data["pretrain_seconds"] > 0).all()
    # early stopping probed a snapshot of the run (1, 2 or 3); the full point its last step
    assert data["probed_step"].iloc[0] in (1, 2, 3) and data["probed_step"].iloc[1] == 3
    for _, r in data.iterrows():
        seeds = np.array([r[f"{f}_seeds"] for f in findings])  # [F, S]
        assert r["macro_mean"] == pytest.approx(float(seeds.mean()))
        assert r["macro_std"] == pytest.approx(float(np.std(seeds.mean(0))))
        assert 0.0 <= r["macro_mean"] <= 1.0 and len(r["macro_seeds"]) == len(cfg.probe_seeds)
        assert r["kind"] in cfg.probe_kinds  # chosen on validation among the candidates
    # the resolution sweep's 32 px point is the data sweep's last run, loaded, not retrained
    ref = cache / "pretrain" / data["run"].iloc[1]
    stamp = (ref / "done.json").stat().st_mtime_ns
    res = ab.run_sweep(cfg, ab.resolution_points(cfg), root, frontal, findings)
    assert res["image_size"].tolist() == [24, 32] and res["run"].iloc[1] == data["run"].iloc[1]
    assert (ref / "done.json").stat().st_mtime_ns == stamp
    assert res["macro_mean"].iloc[1] == pytest.approx(data["macro_mean"].iloc[1])
    # the continual point starts from the exported general-domain weights, head included
    init = ab.run_sweep(cfg, ab.init_points(cfg), root, frontal, findings)
    cont = json.loads((cache / "pretrain" / init["run"].iloc[1] / "run.json").read_text())
    assert "weights from" in cont["init"] and "DINO head" in cont["init"]
    assert "general_smoke_" in cont["init"] and init["run"].iloc[0] == data["run"].iloc[1]
    assert not math.isnan(init["macro_mean"].iloc[1])
    base = ab.probe_baselines(cfg, [cmp.GENERAL], root, frontal, findings)
    assert base["label"].tolist() == [cmp.GENERAL] and 0 <= base["macro_mean"].iloc[0] <= 1
    with pytest.raises(ValueError, match="unknown encoder"):
        ab.probe_baselines(cfg, ["nope"], root, frontal, findings)


def test_early_stopping_stops_training_after_patience(cache: Path) -> None:
    """Training stops once validation has not beaten its best for EARLY_STOP_PATIENCE
    snapshots; the best snapshot is returned; a rerun trains nothing more."""
    import pandas as pd

    from raddino_lib.ssl.train import list_snapshots, read_metrics

    cfg = make_config("smoke", progress=False, precision="fp32", ablation_steps=6)
    pcfg = ab.point_config(cfg, ab.data_points(cfg)[0])
    vals = iter([0.5, 0.6, 0.55, 0.54, 0.9, 0.95] * 2)
    probe = lambda b, s: pd.DataFrame({"val_auprc": [next(vals)]})  # noqa: E731
    run, best, trained, curve = ab._early_stopped_run(pcfg, probe, [0])
    assert ab.EARLY_STOP_PATIENCE == 2
    assert (best, trained) == (2, 4) and curve == {1: 0.5, 2: 0.6, 3: 0.55, 4: 0.54}
    assert max(list_snapshots(run)) == 4 and not (run / "done.json").is_file()
    n = len(read_metrics(run))
    assert n == 4
    vals = iter([0.5, 0.6, 0.55, 0.54])
    assert ab._early_stopped_run(pcfg, probe, [0])[:3] == (run, 2, 4)
    assert len(read_metrics(run)) == n  # nothing trained again
    with pytest.raises(FileNotFoundError, match="no snapshot at step 1"):  # another run
        ab._early_stopped_run(replace(pcfg, pretrain_steps=7), probe, [0], train=False)


def test_paper_table2_macro_averages() -> None:
    from raddino_lib.eval.paper_numbers import TABLE2_AGG, TABLE2_INIT

    for name, row in TABLE2_INIT.items():
        mean = float(np.mean([m for m, _ in row.values()]))
        # the preprint's random-init row averages to 59.99, not its printed 59.82
        tol = 0.2 if name == "RAD-DINO (random init.)" else 0.01
        assert mean == pytest.approx(TABLE2_AGG[name], abs=tol), name


def test_group_stats_average_findings_per_seed() -> None:
    import pandas as pd

    rows = pd.DataFrame({"a_seeds": [[0.2, 0.4], [0.5, 0.5]], "b_seeds": [[0.6, 0.4], [0.1, 0.3]]})
    g = ab.group_stats(rows, ["a", "b"])
    assert g["seeds"].tolist() == [[0.4, 0.4], [0.3, 0.4]]
    assert g["mean"].tolist() == pytest.approx([0.4, 0.35])
    assert g["std"].tolist() == pytest.approx([0.0, 0.05])
    with pytest.raises(KeyError, match=r"\['c'\]"):
        ab.group_stats(rows, ["a", "c"])


def test_sweep_frames() -> None:
    import pandas as pd

    rows = pd.DataFrame({"label": ["p", "q"], "a": [0.1, 0.2], "a_std": [0.01, 0.02],
                         "macro_mean": [0.1, 0.2], "macro_std": [0.0, 0.1]})  # fmt: skip
    mean, std = ab.sweep_frames(rows, ["a"], {"a": "A"})
    assert mean.loc["q", "A"] == 0.2 and std.loc["p", "A"] == 0.01
    assert list(mean.columns) == ["A", "macro"] and std.loc["q", "macro"] == 0.1


def test_claims_from_rows() -> None:
    import pandas as pd

    rows = pd.DataFrame({"label": ["p", "q"], "macro_seeds": [[0.5, 0.6], [0.4, 0.5]],
                         "a_seeds": [[0.2, 0.4], [0.3, 0.3]],
                         "b_seeds": [[0.6, 0.4], [0.1, 0.1]]})  # fmt: skip
    np.testing.assert_allclose(ab.row_seeds(rows, "p"), [0.5, 0.6])
    np.testing.assert_allclose(ab.row_seeds(rows, "q", ["a", "b"]), [0.2, 0.2])
    c = ab.claim("p beats q", ab.row_seeds(rows, "p"), ab.row_seeds(rows, "q"))
    assert c == {"claim": "p beats q", "diff": 10.0, "verdict": "held"}
    gain = ab.claim("a gain", [0.01, -0.02], [0.0, 0.0])
    assert gain["diff"] == -0.5 and gain["verdict"] == "inconclusive at this budget"
    with pytest.raises(KeyError, match="0 rows labelled 'r'"):
        ab.row_seeds(rows, "r")


def test_opt_in_encoders_are_the_sweeps_runs() -> None:
    """The control is the data ladder's first rung and the no-MIM run the reference point
    without iBOT, at the sweep budget, so the book trains each once; at ``paper`` the sweeps'
    reference run is the main run itself."""
    from raddino_lib.ssl.export import pretrained_run_dir

    cfg = make_config("laptop")
    run_of = lambda p: pretrained_run_dir(ab.point_config(cfg, p))  # noqa: E731
    assert run_of(cmp.control_point(cfg)) == run_of(ab.data_points(cfg)[0])
    assert cmp.control_point(cfg).early_stop
    ref, no_mim = (
        ab.point_config(cfg, ab.reference_point(cfg)),
        ab.point_config(cfg, cmp.no_mim_point(cfg)),
    )
    assert replace(ref, mim=False) == no_mim and not no_mim.mim
    assert run_of(cmp.no_mim_point(cfg)) not in {run_of(p) for p in ab.data_points(cfg)}
    # real data: the control pretrains on MIMIC-CXR (the adapters' cohort name), same rung
    real = replace(cfg, data_dir="/data/multi")
    assert cmp.control_point(real).overrides["cohorts"] == ("mimic_cxr",)
    assert cmp.control_point(real).overrides["frontal_only"] is True
    paper = make_config("paper")
    assert pretrained_run_dir(ab.point_config(paper, ab.reference_point(paper))) == (
        pretrained_run_dir(paper)
    )


def test_opt_in_encoders_load_the_sweeps_runs(cache: Path) -> None:
    """book_encoders' control is the early-stopped snapshot the data sweep probed, its
    reference the reference run's last teacher; neither is trained again."""
    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.data.records import load_records
    from raddino_lib.data.schema import VINDR_FINDINGS
    from raddino_lib.data.summary import probe_ready
    from raddino_lib.eval.pretrain_probe import frontal_records
    from raddino_lib.models.registry import load_encoder
    from raddino_lib.ssl.export import pretrained_encoder
    from raddino_lib.ssl.train import load_snapshot

    cfg = make_config("smoke", progress=False, precision="fp32", ablation_steps=3)
    root = dataset_dir(cfg)
    frontal = frontal_records(load_records(root))
    findings, _ = probe_ready(frontal, VINDR_FINDINGS)
    data = ab.run_sweep(cfg, ab.data_points(cfg), root, frontal, findings)
    stamps = {r: (cache / "pretrain" / r / "metrics.jsonl").stat().st_mtime_ns for r in data["run"]}
    enc = cmp.book_encoders(cfg, include=[cmp.CONTROL, cmp.REFERENCE])
    x = torch.rand(2, 1, cfg.image_size, cfg.image_size)
    control = load_encoder(load_snapshot(cache / "pretrain" / data["run"].iloc[0],
                                         int(data["probed_step"].iloc[0])))  # fmt: skip
    ref_backbone, ref_run = pretrained_encoder(ab.point_config(cfg, ab.reference_point(cfg)))
    assert ref_run.name == data["run"].iloc[1]
    for name, want in ((cmp.CONTROL, control), (cmp.REFERENCE, load_encoder(ref_backbone))):
        with torch.no_grad():
            assert torch.equal(enc[name].encode(x).cls, want.encode(x).cls), name
    assert {
        r: (cache / "pretrain" / r / "metrics.jsonl").stat().st_mtime_ns for r in data["run"]
    } == stamps  # nothing trained again


def test_a_continual_runs_name_survives_a_moved_cache(tmp_path, monkeypatch) -> None:
    """A continual point starts from a folder inside the cache; its run name keys on that
    folder relative to the cache, so a copied or moved cache finds its runs again. An init
    folder outside the cache keys on its path."""
    from raddino_lib.ssl.export import pretrained_run_dir

    cfg = make_config("smoke")
    names = []
    for where in ("a", "b"):
        monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / where / "cache"))
        init = tmp_path / where / "cache" / "natural" / "run_x" / "export"
        names.append(pretrained_run_dir(replace(cfg, init=str(init))).name)
    assert names[0] == names[1]
    other = pretrained_run_dir(replace(cfg, init=str(tmp_path / "a" / "cache" / "elsewhere"))).name
    assert other != names[1]
    outside = [pretrained_run_dir(replace(cfg, init=str(tmp_path / w / "dinov2"))).name
               for w in ("a", "b")]  # fmt: skip
    assert outside[0] != outside[1]
    assert pretrained_run_dir(cfg).name != names[1]  # random init
