"""raddino_lib.data.arrays: image arrays cached by the rows' content, not the folder's place."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import raddino_lib.data.records as records_mod
from raddino_lib.data.arrays import content_key, image_array, resize_area
from raddino_lib.data.records import load_records


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from raddino_lib.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("arr") / "phantom"
    generate_dataset(root, 6, size=32, seed=0, progress=False)
    return root


@pytest.fixture
def loads(monkeypatch, tmp_path) -> list[str]:
    """The image paths read from disk (a spy on ``load_image``), with a cache of the test's."""
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))
    read: list[str] = []
    real = records_mod.load_image
    monkeypatch.setattr(records_mod, "load_image", lambda root, p: read.append(p) or real(root, p))
    return read


def test_resize_area_averages_blocks():
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(resize_area(img, 2), [[2.5, 4.5], [10.5, 12.5]])


def test_arrays_are_cached_and_follow_a_copied_folder(data, loads, tmp_path):
    rec = load_records(data)
    a = image_array(data, rec, 16, progress=False)
    assert a.shape == (6, 16, 16) and a.dtype == np.float32 and 0 <= a.min() <= a.max() <= 1
    assert len(loads) == 6
    np.testing.assert_array_equal(image_array(data, rec, 16, progress=False), a)
    assert len(loads) == 6  # from the cache
    moved = shutil.copytree(data, tmp_path / "elsewhere" / "phantom")
    np.testing.assert_array_equal(image_array(moved, load_records(moved), 16, progress=False), a)
    assert len(loads) == 6  # same content elsewhere: same key
    image_array(data, rec, 8, progress=False)
    image_array(data, rec.iloc[:3], 16, progress=False)
    assert len(loads) == 6 + 6 + 3  # another side, other rows: computed


def test_content_key_sees_records_and_file_sizes(data, tmp_path):
    paths = load_records(data)["path"].tolist()
    moved = shutil.copytree(data, tmp_path / "c")
    assert content_key(data, paths) == content_key(moved, paths)
    assert content_key(moved, paths[:-1]) != content_key(moved, paths)
    (moved / paths[0]).write_bytes((moved / paths[0]).read_bytes() + b"\0")
    assert content_key(moved, paths) != content_key(data, paths)
    (moved / "records.csv").write_text((moved / "records.csv").read_text() + "\n")
    assert content_key(moved, paths[1:]) != content_key(data, paths[1:])
