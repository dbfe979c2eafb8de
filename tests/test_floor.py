"""The raw-pixel floor: which rows its finding and metadata probes use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raddino_lib.data.records import load_records
from raddino_lib.eval.floor import pixel_features, pixel_floor
from raddino_lib.eval.probe import metadata_probe


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raddino_lib.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("floor") / "phantom"
    generate_dataset(root, 240, size=64, seed=3, progress=False)
    return root


def test_metadata_floor_uses_the_no_finding_frontal_images(
    phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    df = load_records(phantom)
    frontal = df[df["view"] != "LATERAL"].reset_index(drop=True)
    nf = frontal[frontal["no_finding"] == 1].reset_index(drop=True)
    assert 20 < len(nf) < len(frontal)  # a proper subset, or the test proves nothing
    res = pixel_floor(phantom, df, ["cardiomegaly"], size=8, seeds=(0,), progress=False)
    assert res.n_images == len(frontal) and res.n_metadata == len(nf)
    assert res.metadata_rows == "frontal, no_finding = 1"
    assert int(res.metadata.loc["sex", "n"]) == int(nf["sex"].notna().sum())
    # the same numbers as the metadata probe run by hand on those rows
    x = pixel_features(phantom, frontal, 8, progress=False)
    rows = frontal.index[frontal["no_finding"] == 1].to_numpy()
    want = metadata_probe(x[rows], nf, nf["subject_id"], seed=0)
    np.testing.assert_allclose(res.metadata["acc_mean"], want["acc_mean"], atol=1e-9)
    # every frontal image when asked, or when the records have no such column
    everyone = pixel_floor(
        phantom, df, ["cardiomegaly"], size=8, seeds=(0,), metadata_subset=None, progress=False
    )
    assert everyone.n_metadata == len(frontal) and everyone.metadata_rows == "frontal"
    no_col = pixel_floor(
        phantom, df.drop(columns="no_finding"), ["cardiomegaly"], size=8, seeds=(0,),
        progress=False,
    )  # fmt: skip
    assert no_col.n_metadata == len(frontal)
    empty = df.assign(no_finding=0)
    with pytest.raises(ValueError, match="no frontal image has no_finding = 1"):
        pixel_floor(phantom, empty, ["cardiomegaly"], size=8, seeds=(0,), progress=False)
