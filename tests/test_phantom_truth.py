"""The phantom's anatomy ground truth agrees with what it rendered and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raddino_lib.data.phantom import generate_dataset
from raddino_lib.data.phantom.truth import ANATOMY_FIELDS, anatomy_table
from raddino_lib.data.records import load_records


def test_anatomy_table_matches_records(tmp_path):
    root = tmp_path / "ph"
    generate_dataset(root, 60, size=32, seed=5, workers=1, progress=False)
    rec = load_records(root)
    t = anatomy_table(root, rec)
    assert list(t.columns) == list(ANATOMY_FIELDS) and len(t) == len(rec)
    female = (rec["sex"] == "F").to_numpy()
    assert female.any() and (~female).any()
    # Breast shadows exist exactly for female subjects (anatomy is sampled from metadata).
    assert np.all(t.loc[female, "breast"] > 0) and np.all(t.loc[~female, "breast"] == 0)
    # One anatomy per subject: rows of the same subject are identical.
    for _, g in t.groupby(rec["subject_id"]):
        assert np.all(g.to_numpy() == g.to_numpy()[0])
    # Older subjects have lower bone density on average (the generator's age term).
    age = rec["age"].to_numpy(float)
    assert np.corrcoef(age, t["bone"])[0, 1] < -0.3


def test_anatomy_table_refuses_other_data(tmp_path):
    root = tmp_path / "ph"
    generate_dataset(root, 4, size=32, seed=1, workers=1, progress=False)
    rec = load_records(root)
    meta = root / "dataset.json"
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({**info, "version": "0.9.0"}))
    with pytest.raises(ValueError, match="regenerate"):
        anatomy_table(root, rec)
    meta.write_text(json.dumps({**info, "generator": "hospital PACS export"}))
    with pytest.raises(ValueError, match="not a phantom"):
        anatomy_table(root, rec)
