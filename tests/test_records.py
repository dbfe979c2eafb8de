"""records.py / io.py: validation errors name the file and problem; IO round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raddino_lib.data import schema
from raddino_lib.data.io import encode_png, read_masks, read_png, write_masks, write_png
from raddino_lib.data.records import RecordsError, check_subject_splits, load_masks, load_records


def _row(i: int, subject: str, split: str) -> dict:
    r = {c: "" for c in schema.RECORD_COLUMNS}
    r.update(
        subject_id=subject,
        study_id=f"{subject}_0",
        image_id=f"I{i}",
        path=f"images/I{i}.png",
        split=split,
        view="PA",
        cohort="icu",
        sex="F",
        age=50,
        weight=60.0,
        height=160.0,
        bmi=round(60 / 1.6**2, 2),
        report="x",
        mask_path="",
    )
    for f in schema.FINDINGS:
        r[f] = 0
    r["no_finding"] = 1
    return r


def _write(tmp_path, rows, columns=schema.RECORD_COLUMNS):
    pd.DataFrame(rows)[list(columns)].to_csv(tmp_path / "records.csv", index=False)


def test_valid_records_load(tmp_path):
    _write(tmp_path, [_row(0, "S1", "train"), _row(1, "S2", "test")])
    df = load_records(tmp_path)
    assert len(df) == 2 and tuple(df.columns) == schema.RECORD_COLUMNS


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda rows: rows[1].update(subject_id="S1"), "several splits"),
        (lambda rows: rows[0].update(split="training"), "split must be"),
        (lambda rows: rows[0].update(view="XX"), "view must be"),
        (lambda rows: rows[0].update(nodule=2), "must be 0/1"),
        (lambda rows: rows[0].update(nodule=1), "no_finding inconsistent"),
        (lambda rows: rows[0].update(bmi=40.0), "bmi"),
        (lambda rows: rows[1].update(image_id="I0"), "duplicate image_id"),
    ],
)
def test_invalid_records_name_file_and_problem(tmp_path, mutate, match):
    rows = [_row(0, "S1", "train"), _row(1, "S2", "test")]
    mutate(rows)
    _write(tmp_path, rows)
    with pytest.raises(RecordsError, match=match) as e:
        load_records(tmp_path)
    assert "records.csv" in str(e.value)


def test_wrong_columns(tmp_path):
    _write(tmp_path, [_row(0, "S1", "train")], columns=schema.RECORD_COLUMNS[::-1])
    with pytest.raises(RecordsError, match="columns"):
        load_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="records.csv"):
        load_records(tmp_path / "nope")


def test_check_subject_splits():
    df = pd.DataFrame({"subject_id": ["a", "a", "b"], "split": ["train", "val", "test"]})
    with pytest.raises(ValueError, match="'a'"):
        check_subject_splits(df)
    check_subject_splits(df.iloc[1:])


def test_png16_and_masks_roundtrip(tmp_path):
    img = (np.arange(48 * 40, dtype=np.uint32).reshape(48, 40) * 31 % 65536).astype(np.uint16)
    write_png(tmp_path / "a.png", img)
    back = read_png(tmp_path / "a.png")
    assert back.shape == (48, 40) and back.dtype == np.float32
    assert np.array_equal(np.round(back * 65535).astype(np.uint16), img)
    assert encode_png(img) == encode_png(img)
    rng = np.random.default_rng(0)
    masks = {"lung_left": rng.random((33, 17)) > 0.5, "chest_tube": np.zeros((33, 17), bool)}
    write_masks(tmp_path / "m.npz", masks)
    got = read_masks(tmp_path / "m.npz")
    assert set(got) == set(masks) and all(np.array_equal(got[k], masks[k]) for k in masks)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert z["lung_left"].dtype == np.uint8
    assert load_masks(tmp_path, {"mask_path": "m.npz"})["lung_left"].shape == (33, 17)
    assert load_masks(tmp_path, {"mask_path": ""}) == {}
