"""Chapter 3 end to end on a real dataset's own layout: a small VinDr-CXR-style tree of
DICOMs (with planted patient identifiers) read through its adapter, at the smoke preset.

``raddino chapter 03_classification --preset smoke -p dataset vindr -p data_root TREE`` must
build the records folder once into ``.cache/datasets``, probe the findings VinDr-CXR labels,
say which of the paper's findings it cannot probe (VinDr-CXR has no chest-tube label; the
tree has no tuberculosis case) instead of failing, and leak no identifier anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import PHI, make_dicom
from test_adapters import VINDR_HEADER, write_csv

from raddino_lib import cli
from raddino_lib.config import make_config
from raddino_lib.data.datasets import adapter_dataset, adapter_dataset_dir, data_identity
from raddino_lib.data.records import load_records
from raddino_lib.data.schema import VINDR_FINDINGS

REPO = Path(__file__).resolve().parents[1]

# finding column -> images i with i % k == r are positive
POSITIVE = {
    "Cardiomegaly": (3, 0),
    "Lung Opacity": (4, 1),
    "Pleural thickening": (5, 2),
    "Aortic enlargement": (2, 0),
    "Pulmonary fibrosis": (3, 1),
    "Pneumothorax": (4, 3),
    "Pneumonia": (5, 4),
}


def vindr_fixture(root: Path, n_train: int = 40, n_test: int = 16, size: int = 48) -> Path:
    """VinDr-CXR PhysioNet layout: annotations/image_labels_{train,test}.csv (real header),
    {train,test}/{image_id}.dicom, 12-bit MONOCHROME2 DICOMs with a bright 'heart' that is
    larger in cardiomegaly cases."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            iid = f"{split[:2]}{i:04d}"
            on = {c for c, (k, r) in POSITIVE.items() if i % k == r}
            labels = [int(c in on) for c in VINDR_HEADER[2:]]
            labels[VINDR_HEADER.index("No finding") - 2] = int(not on)
            rows.append([iid, "R1", *labels])
            radius = size * (0.28 if "Cardiomegaly" in on else 0.16)
            img = 600 + 300 * rng.random((size, size))
            img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2] += 2500
            make_dicom(root / split / f"{iid}.dicom", img.astype(np.uint16), bits_stored=12)
        write_csv(root / "annotations" / f"image_labels_{split}.csv", VINDR_HEADER, rows)
    return root


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "book"
    root.mkdir()
    shutil.copytree(REPO / "chapters", root / "chapters", ignore=shutil.ignore_patterns("*.ipynb"))
    for name in ("_toc.yml", "_config.yml", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    monkeypatch.setenv("RADDINO_ROOT", str(root))
    monkeypatch.setenv("RADDINO_CACHE", str(root / ".cache"))
    return root


def test_dataset_fields_resolve_through_the_adapter(project: Path, tmp_path: Path):
    src = vindr_fixture(tmp_path / "VinDr-CXR", n_train=6, n_test=2, size=8)
    cfg = make_config("smoke", dataset="vindr", data_root=str(src))
    first = adapter_dataset("vindr", src, progress=False)
    assert first == adapter_dataset_dir("vindr_cxr", src)
    assert first.parent == project / ".cache" / "datasets" and first.name.startswith("vindr_cxr_")
    df = load_records(first, allow_unknown_labels=True)
    assert len(df) == 8 and (df["cohort"] == "vindr_cxr").all()
    stamp = (first / "records.csv").stat().st_mtime_ns
    assert adapter_dataset("vindr_cxr", src, progress=False) == first  # cached
    assert (first / "records.csv").stat().st_mtime_ns == stamp
    assert data_identity(cfg) == {"dataset": "vindr_cxr", "data_root": str(src.resolve())}
    # A changed label table is a new cache entry.
    table = src / "annotations" / "image_labels_test.csv"
    table.write_text(table.read_text() + "te9999,R1," + ",".join(["0"] * 27) + ",1\n")
    make_dicom(src / "test" / "te9999.dicom", np.zeros((8, 8), np.uint16))
    assert adapter_dataset("vindr", src, progress=False) != first
    from raddino_lib.data.datasets import dataset_dir

    with pytest.raises(ValueError, match="set both"):
        dataset_dir(make_config("smoke", dataset="vindr"))
    with pytest.raises(ValueError, match="use one"):
        dataset_dir(make_config("smoke", dataset="vindr", data_root=str(src), data_dir="x"))
    with pytest.raises(KeyError, match="unknown dataset"):
        dataset_dir(make_config("smoke", dataset="openi", data_root=str(src)))


def test_chapter3_runs_on_a_vindr_tree(project: Path, tmp_path: Path, capsys):
    src = vindr_fixture(tmp_path / "VinDr-CXR")
    code = cli.main([
        "chapter", "classification", "-p", "preset", "smoke", "--root", str(project),
        "--no-progress", "-p", "dataset", "vindr", "-p", "data_root", str(src),
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    timing = json.loads((project / "results" / "smoke" / "_timings.json").read_text())
    assert timing["03_classification"]["seconds"] > 1
    assert timing["03_classification"]["peak_rss_mb"] > 100  # the kernel's memory is counted
    res = json.loads((project / "results" / "smoke" / "03_classification.json").read_text())
    r = res["results"]
    assert res["config"]["dataset"] == "vindr" and r["data"] == {"name": "vindr", "images": 56}
    assert r["mention_rate_train"] is None  # VinDr-CXR has no reports...
    encoders = {"raw pixels", "random init", "general-domain DINO", "RAD-DINO-mini"}
    assert {e["encoder"] for e in r["encoders"]} == encoders  # ...so no text-supervised row
    assert set(r["table3"]["encoders"]) == encoders
    skipped = r["findings_skipped"]
    assert skipped["chest_tube"] == "not labelled in this dataset"
    assert "no positive image" in skipped["tuberculosis"]
    assert "no positive image" in skipped["rib_fracture"]
    # Labelled findings are probed (TB and rib fracture have no positive case: blank columns);
    # the chest tube, which VinDr-CXR does not label, is left out.
    assert r["table3"]["findings"] == list(VINDR_FINDINGS)
    assert r["table4"]["findings"] == ["pneumothorax", "rib_fracture", "pneumonia"]
    assert "table_a1" not in r  # no lateral images
    for enc in r["table3"]["encoders"].values():
        for name, f in enc["findings"].items():
            if name == "tuberculosis":
                assert f["auprc_mean"] is None or np.isnan(f["auprc_mean"])
            else:
                assert 0.0 <= f["auprc_mean"] <= 1.0
    untested = r["claims_untested"]
    assert any("text-supervised, rarely" in c and "no text-supervised CLIP" in c for c in untested)
    assert any("lateral" in c and "no probed finding" in c for c in untested)
    assert any(c["claim"].startswith("RAD-DINO-mini > raw pixels") for c in r["claims"])
    assert {c["verdict"] for c in r["claims"]} <= {"held", "did not hold", "inconclusive"}
    # The records folder was built once, in the run's cache; nothing identifying anywhere.
    (records_dir,) = (project / ".cache" / "datasets").iterdir()
    nb = project / "book" / "_executed" / "smoke" / "03_classification.ipynb"
    texts = [
        (records_dir / "records.csv").read_text(),
        (records_dir / "adapter.json").read_text(),
        nb.read_text(),
        json.dumps(res),
        out.out,
        out.err,
    ]
    for t in texts:
        for s in PHI:
            assert s not in t, f"{s!r} leaked"
