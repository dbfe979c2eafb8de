from __future__ import annotations

import json
import math

import numpy as np
import pytest

import raddino_lib.config as rc
from raddino_lib.results import load_results, save_results


def test_presets_share_one_set_of_knobs_and_scale_up():
    s, lap, p = (rc.PRESETS[k] for k in ("smoke", "laptop", "paper"))
    assert s.preset == "smoke" and lap.preset == "laptop" and p.preset == "paper"
    assert s.image_size < lap.image_size < p.image_size == 518
    assert p.patch_size == 14 and p.embed_dim == 768 and p.depth == 12
    assert p.batch_size == 640 and p.n_prototypes == 65536
    assert len(p.seeds) == 5
    assert rc.DEFAULT_PRESET == "laptop"


def test_make_config_applies_and_coerces_overrides():
    cfg = rc.make_config("smoke", base_lr=1, seeds=[3, 4], mask_ratio=[0.2, 0.4], data_dir=None)
    assert cfg.base_lr == 1.0 and isinstance(cfg.base_lr, float)
    assert cfg.seeds == (3, 4)
    assert cfg.mask_ratio == (0.2, 0.4)
    assert cfg.data_dir is None
    assert cfg.image_size == rc.PRESETS["smoke"].image_size


def test_unknown_name_lists_valid_names():
    with pytest.raises(rc.ParameterError) as exc:
        rc.make_config("smoke", pretrian_steps=3)
    msg = str(exc.value)
    assert "'pretrian_steps'" in msg and "pretrain_steps" in msg and "image_size" in msg


@pytest.mark.parametrize(
    "name,value",
    [
        ("pretrain_steps", "ten"),
        ("pretrain_steps", 1.5),
        ("pretrain_steps", True),
        ("mim", 1),
        ("seeds", 3),
        ("mask_ratio", [0.1]),
        ("device", 3),
    ],
)
def test_wrong_types_are_refused(name, value):
    with pytest.raises(rc.ParameterError, match=name):
        rc.make_config("smoke", **{name: value})


def test_unknown_preset():
    with pytest.raises(rc.ParameterError, match="smoke, laptop, paper"):
        rc.make_config("huge")


def test_chapter_config_reads_a_notebook_namespace():
    import os

    ns = {
        "preset": "smoke",
        "pretrain_steps": 7,
        "phantom_n": None,
        "In": [],
        "Out": {},
        "_rc": rc,
        "os": os,
        "get_ipython": lambda: None,
    }
    cfg = rc.chapter_config(ns, "02_x")
    assert cfg.preset == "smoke" and cfg.pretrain_steps == 7
    assert cfg.phantom_n == rc.PRESETS["smoke"].phantom_n  # None keeps the preset's value
    with pytest.raises(rc.ParameterError, match="chapter '02_x'.*'bogus'"):
        rc.chapter_config({**ns, "bogus": 1}, "02_x")


def test_results_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("RADDINO_ROOT", str(tmp_path))
    cfg = rc.make_config("smoke")
    data = {"a": np.float32(0.5), "b": np.arange(3), "nan": float("nan"), "t": (1, 2)}
    path = save_results("01_x", cfg, data)
    assert path == tmp_path / "results" / "smoke" / "01_x.json"
    raw = json.loads(path.read_text())
    assert raw["config"]["preset"] == "smoke" and raw["preset"] == "smoke"
    back = load_results("01_x", "smoke")
    assert back == {"a": 0.5, "b": [0, 1, 2], "nan": None, "t": [1, 2]}
    assert not math.isnan(back["a"])
    with pytest.raises(FileNotFoundError, match="raddino chapter 02_y"):
        load_results("02_y", "smoke")
    # a real dataset's run also keeps its own copy; the plain file is the latest run
    save_results("01_x", rc.make_config("smoke", dataset="candid"), {"v": 1})
    save_results("01_x", rc.make_config("smoke", dataset="rsna"), {"v": 2})
    assert load_results("01_x", "smoke", "candid") == {"v": 1}
    assert load_results("01_x", "smoke", "rsna_pneumonia") == {"v": 2}
    assert load_results("01_x", "smoke") == {"v": 2}
    assert (tmp_path / "results" / "smoke" / "01_x@candid_ptx.json").is_file()
