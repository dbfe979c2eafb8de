"""Chapter 7 (report generation, Table 5) runs at the `smoke` preset through papermill and
writes each metric's median and interval per encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from raddino_lib.runner import chapter_names, run_chapter

REPO = Path(__file__).resolve().parents[1]
NAME = "07_report_generation"
ENCODERS = {
    "no image (text prior)", "text-supervised CLIP", "general-domain DINO", "RAD-DINO-mini",
    "RAD-DINO-mini-control", "RAD-DINO-mini (sweep budget)",
}  # fmt: skip


def test_chapter_is_in_the_toc_after_segmentation() -> None:
    names = chapter_names(REPO)
    assert NAME in names and names.index(NAME) == names.index("06_segmentation") + 1


def test_chapter07_runs_at_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "chapters", tmp_path / "chapters",
                    ignore=shutil.ignore_patterns("*.ipynb"))  # fmt: skip
    for name in ("_toc.yml", "_config.yml", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    monkeypatch.setenv("RADDINO_ROOT", str(tmp_path))
    monkeypatch.delenv("RADDINO_CACHE", raising=False)
    nb = run_chapter(NAME, "smoke", root=tmp_path, progress=False)
    assert nb.is_file()
    res = json.loads((tmp_path / "results" / "smoke" / f"{NAME}.json").read_text())
    assert res["preset"] == "smoke"
    r = res["results"]
    assert set(r["encoders"]) == ENCODERS
    for enc in r["encoders"].values():
        assert enc["image_size"] == 32 and enc["tokens"] == 16  # smoke: 32 px, patch 8
        assert set(enc["metrics"]) == {"rouge_l", "bleu4", "rg_er", "macro_f1_14"}
        for m in ("rouge_l", "bleu4", "macro_f1_14"):
            v = enc["metrics"][m]
            assert 0.0 <= v["lo"] <= v["median"] <= v["hi"] <= 100.0
            assert v["lo"] <= v["point"] <= v["hi"]
    if not r["rg_er"]["available"]:
        assert all(e["metrics"]["rg_er"] is None for e in r["encoders"].values())
    assert r["setup"]["n_test"] == 8 and r["setup"]["bootstrap"] == 50
    assert all(t["steps"] == 4 and t["from_prior"] for t in r["training"].values())
    # one text prior (4 steps) for the six generators, all with 16 image tokens
    assert r["setup"]["prior_steps"] == 4 and list(r["setup"]["text_prior"]) == ["16"]
    assert r["setup"]["text_prior"]["16"]["steps"] == 4
    assert len(r["examples"]) == 2 and set(r["examples"][0]["generated"]) == ENCODERS
    assert {c["verdict"] for c in r["claims"]} <= {"held", "did not hold", "inconclusive"}
    # the control is compared with the run of the same budget on all the data
    ctl = {(c["a"], c["b"]) for c in r["claims"] if "control (same budget)" in c["claim"]}
    assert ctl == {("RAD-DINO-mini (sweep budget)", "RAD-DINO-mini-control")}
    assert {c["metric"] for c in r["claims"]} == {"rouge_l", "bleu4", "macro_f1_14"} | (
        {"rg_er"} if r["rg_er"]["available"] else set()
    )
