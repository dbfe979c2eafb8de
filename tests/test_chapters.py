"""Every chapter of the book runs at the `smoke` preset through papermill.

The chapters run in a temporary project (their own results/ and .cache/), in _toc.yml order,
sharing one cache as `make book` does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from raddino_lib.runner import chapter_names, run_chapter

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = chapter_names(REPO)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(REPO / "chapters", root / "chapters", ignore=shutil.ignore_patterns("*.ipynb"))
    for name in ("_toc.yml", "_config.yml", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    return root


def test_toc_lists_the_chapters():
    assert CHAPTERS[0] == "01_data"
    for name in CHAPTERS:
        assert (REPO / "chapters" / f"{name}.py").is_file()


@pytest.mark.parametrize("name", CHAPTERS)
def test_papermill_reads_every_parameter(name: str):
    """papermill skips (with a warning) an assignment it cannot parse, e.g. one whose trailing
    comment holds '='; such a parameter would be silently dropped from `--help-notebook`."""
    import jupytext
    from papermill.translators import PythonTranslator

    nb = jupytext.read(REPO / "chapters" / f"{name}.py")
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'parameters'"
    assigned = [ln.split("=")[0].strip() for ln in cells[0].source.splitlines()
                if ln and not ln.startswith(("#", " ")) and "=" in ln]  # fmt: skip
    assert [p.name for p in PythonTranslator.inspect(cells[0])] == assigned


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_runs_at_smoke(project: Path, name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RADDINO_ROOT", str(project))
    nb = run_chapter(name, "smoke", root=project, progress=False)
    assert nb.is_file()
    res = json.loads((project / "results" / "smoke" / f"{name}.json").read_text())
    assert res["preset"] == "smoke" and res["config"]["preset"] == "smoke"
    CHECKS.get(name, lambda r: None)(res["results"])


def _check_01(r: dict) -> None:
    assert r["n_images"] == 96
    floor = r["floor"]
    assert floor["size"] == 16
    aucs = [f["auprc_mean"] for f in floor["findings"] if f["auprc_mean"] is not None]
    assert aucs and all(0.0 <= a <= 1.0 for a in aucs)
    meta = {m["variable"]: m for m in floor["metadata"]}
    assert set(meta) == {"sex", "age", "weight", "bmi"}
    assert all(0.0 <= m["acc_mean"] <= 1.0 for m in meta.values())
    rates = {m["finding"]: m for m in r["mention_rate"]}
    assert "pulmonary_fibrosis" in rates and "no_finding" not in rates


def _check_02(r: dict) -> None:
    t = r["training"]
    assert t["steps"] == 4 and t["images_seen"] == 32 and t["images_per_s"] > 0
    steps = [row["step"] for row in r["learning_curve"]]
    assert steps == [0, 2, 4]  # snapshot_every=2 at smoke, step 0 = the initial weights
    names = {row["finding"] for row in r["probe"]["cls+mean"]}
    assert "mean over findings" in names and "cardiomegaly" in names
    assert set(r["checks"]) >= {
        "dino_below_log_k", "teacher_entropy_falls", "prototypes_in_use",
        "probe_beats_random_init_global", "probe_beats_raw_pixels_global",
    }  # fmt: skip
    assert len(r["probe_seed_means"]["run_cls+mean+grid"]) == 2  # smoke seeds
    assert {"probe_beats_raw_pixels_spatial", "probe_beats_random_init_global"} <= set(r["checks"])


ENCODERS = {
    "raw pixels", "random init", "general-domain DINO", "text-supervised CLIP", "RAD-DINO-mini",
}  # fmt: skip


def _check_03(r: dict) -> None:
    for table, findings in (("table3", 6), ("table4", 4), ("table_a1", 3)):
        t = r[table]
        assert set(t["encoders"]) == ENCODERS and len(t["findings"]) == findings
        assert t["seeds"] == [0, 1]  # smoke probe seeds
        for enc in t["encoders"].values():
            assert enc["kind"] in ("pixels", "cls", "cls+mean", "cls+mean+grid")
            assert len(enc["macro_auprc_seeds"]) == 2
            for f in enc["findings"].values():
                assert f["auprc_mean"] is None or 0.0 <= f["auprc_mean"] <= 1.0
    assert {c["verdict"] for c in r["claims"]} <= {"held", "did not hold", "inconclusive"}
    assert {e["encoder"] for e in r["encoders"]} == ENCODERS
    if "augmented" in r:
        assert set(r["augmented"]["encoders"]) == {"RAD-DINO-mini", "text-supervised CLIP"}


def _check_04(r: dict) -> None:
    oracle = "phantom anatomy (oracle)"
    assert set(r["metadata"]) == ENCODERS | {oracle}
    # Breast shadows are sampled for female subjects only: the true anatomy separates sex.
    oracle_sex = next(row for row in r["metadata"][oracle] if row["variable"] == "sex")
    assert oracle_sex["acc_mean"] >= oracle_sex["chance"] + 0.1
    for rows in r["metadata"].values():
        by_var = {row["variable"]: row for row in rows}
        assert set(by_var) == {"sex", "age", "weight", "bmi"}
        for row in by_var.values():
            assert 0.0 <= row["acc_mean"] <= 1.0 and 0.0 < row["chance"] <= 1.0
    assert r["subset"]["n_images"] > 0
    assert r["claims"]  # image-paired, subject-resampled verdicts, consistent with their interval
    for c in r["claims"]:
        assert c["lo"] <= c["hi"] and 0 < c["images"] <= r["subset"]["n_images"]
        want = "held" if c["lo"] > 0 else "did not hold" if c["hi"] < 0 else "inconclusive"
        assert c["verdict"] == want


def _check_05(r: dict) -> None:
    from raddino_lib.data.phantom.landmarks import LANDMARKS
    from raddino_lib.eval.correspondence import RANDOM_PATCH, SAME_POSITION

    assert r["setup"]["image_px"] == 64 and r["landmarks"]["grid"] == [4, 4]
    summary = r["landmarks"]["summary"]
    assert {"RAD-DINO-mini", "text-supervised CLIP", "random init", SAME_POSITION,
            RANDOM_PATCH} <= set(summary)  # fmt: skip
    for row in summary.values():
        assert 0.0 <= row["median_px"] <= 64 * 2**0.5 and row["n"] > 0
        assert set(row["per_landmark"]) <= set(LANDMARKS)
    # the floor (distance to the own patch centre) is never above half a patch diagonal
    assert summary[SAME_POSITION]["floor_median_px"] <= 8 * 2**0.5 + 1e-6
    heads = r["attention"]["concentration"]["RAD-DINO-mini"]
    assert heads and all(0.0 < c <= 1.0 for c in heads)
    assert {c["verdict"] for c in r["claims"]} <= {"held", "did not hold", "inconclusive"}


def _check_06(r: dict) -> None:
    from raddino_lib.seg.experiment import UNET

    assert r["setup"]["mask_px"] == 32 and sum(r["setup"]["images"].values()) == 40
    rows = {(t["encoder"], t["head"], t["task"]) for t in r["table"]}
    tasks = {"lungs", "zones", "pneumothorax", "chest_tubes", "ribs"}
    for enc, head in [
        ("RAD-DINO-mini", "linear"),
        ("RAD-DINO-mini", "upernet"),
        ("RAD-DINO-mini (no MIM)", "linear"),
        (UNET, "end to end"),
    ]:
        assert {(enc, head, t) for t in tasks} <= rows
    for t in r["table"]:
        assert 0.0 <= t["mean"] <= 1.0 and t["std"] >= 0.0 and t["n"] == 6
    assert {f["n_train"] for f in r["few_shot"]} == {4, 29}
    verdicts = {"held", "did not hold", "inconclusive", "not measured"}
    assert {c["verdict"] for c in r["claims"]} <= verdicts


CHECKS = {
    "01_data": _check_01, "02_pretraining": _check_02, "03_classification": _check_03,
    "04_metadata": _check_04, "05_attention": _check_05, "06_segmentation": _check_06,
}  # fmt: skip
