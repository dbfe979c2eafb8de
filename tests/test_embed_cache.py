"""Embedding cache: hit, miss on any key change, rebuild on corruption; bf16 close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raddino_lib.config import make_config
from raddino_lib.data.records import load_records
from raddino_lib.eval import cache as cache_mod
from raddino_lib.eval.cache import CacheRebuildWarning, cache_file, cached_embeddings, embedding_key
from raddino_lib.models.registry import load_encoder

CFG = make_config("smoke")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from raddino_lib.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("emb") / "phantom"
    generate_dataset(root, 16, size=64, seed=0, progress=False)
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RADDINO_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def calls(monkeypatch):
    n = {"embed": 0}
    real = cache_mod.embed_array

    def counting(*a, **k):
        n["embed"] += 1
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "embed_array", counting)
    return n


def _enc(seed=0):
    return load_encoder("random", cfg=CFG, seed=seed)


def test_hit_after_first_call(data, calls):
    rec = load_records(data)
    a = cached_embeddings(_enc(), data, rec, grid=2, progress=False)
    b = cached_embeddings(_enc(), data, rec, grid=2, progress=False)
    assert calls["embed"] == 1
    assert set(a) == {"cls", "mean_patch", "grid"}
    assert a["cls"].shape == (16, 32) and a["grid"].shape == (16, 2 * 2 * 32)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_cache_false_neither_reads_nor_writes_nor_hashes(data, calls, tmp_path, monkeypatch):
    rec = load_records(data)
    enc = _enc()
    hashed = []
    real = enc.identity
    monkeypatch.setattr(enc, "identity", lambda: hashed.append(1) or real())
    a = cached_embeddings(enc, data, rec, progress=False, cache=False)
    assert calls["embed"] == 1 and not hashed
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.*"))
    b = cached_embeddings(_enc(), data, rec, progress=False)  # cached from here on
    assert calls["embed"] == 2 and any((tmp_path / "cache").rglob("*.safetensors"))
    c = cached_embeddings(enc, data, rec, progress=False, cache=False)  # not read back
    assert calls["embed"] == 3
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])


@pytest.mark.parametrize(
    "change",
    ["weights", "rows", "grid", "layers", "resolution", "precision"],
)
def test_miss_when_the_key_changes(data, calls, change):
    rec = load_records(data)
    cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")
    enc, kw, rows = _enc(), {"precision": "fp32"}, rec
    if change == "weights":
        enc = _enc(seed=1)
    elif change == "rows":
        rows = rec.iloc[:8]
    elif change == "grid":
        kw["grid"] = 2
    elif change == "layers":
        kw["layers"] = (0,)
    elif change == "resolution":
        enc = enc.at_resolution(48)
    elif change == "precision":
        kw["precision"] = "bf16"
    out = cached_embeddings(enc, data, rows, progress=False, **kw)
    assert calls["embed"] == 2
    assert len(out["cls"]) == len(rows)
    if change == "layers":
        assert out["layer_0"].shape == (16, 4, 4, 32) and out["layer_0"].dtype == np.float16


def test_a_copied_dataset_keeps_its_key_and_changed_content_misses(data, calls, tmp_path):
    import shutil

    from PIL import Image

    rec = load_records(data)
    first = cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")
    copy = shutil.copytree(data, tmp_path / "moved" / "phantom")  # new mtimes, new location
    again = cached_embeddings(_enc(), copy, load_records(copy), progress=False, precision="fp32")
    assert calls["embed"] == 1  # content, not location: the cache follows the folder
    np.testing.assert_array_equal(again["cls"], first["cls"])
    # an image rewritten with other content (another file size) is another dataset
    img = copy / rec["path"].iloc[0]
    Image.fromarray(np.full((64, 64), 7, dtype=np.uint8)).save(img)
    cached_embeddings(_enc(), copy, load_records(copy), progress=False, precision="fp32")
    assert calls["embed"] == 2
    # and so is another records.csv
    (copy / "records.csv").write_text((copy / "records.csv").read_text() + "\n")
    cached_embeddings(_enc(), copy, load_records(copy), progress=False, precision="fp32")
    assert calls["embed"] == 3


def _path(data, enc, rec, **kw):
    key = embedding_key(enc, data, rec, grid=kw.get("grid", 0), layers=(), precision="fp32")
    return cache_file(key)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_file_is_detected_and_rebuilt(data, calls, damage):
    rec = load_records(data)
    ref = cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")
    path = _path(data, _enc(), rec)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "flip":  # a byte of array data, header intact
        raw[-5] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        path.write_bytes(b"not a safetensors file")
    with pytest.warns(CacheRebuildWarning, match="recomputing"):
        again = cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")
    assert calls["embed"] == 2
    np.testing.assert_array_equal(again["cls"], ref["cls"])
    # and the rebuilt file is good again
    cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")
    assert calls["embed"] == 2


def test_cache_file_is_safetensors_with_its_key(data):
    import json

    from safetensors import safe_open

    rec = load_records(data)
    cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")
    path = _path(data, _enc(), rec)
    assert path.suffix == ".safetensors" and path.read_bytes()[8:9] == b"{"
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    key = json.loads(meta["key"])
    assert key["n"] == 16 and key["kind"] == "vit" and key["preprocess"]["image_size"] == 32


def test_bf16_embeddings_close_to_fp32(data):
    import torch

    from raddino_lib.ssl.train import resolve_precision

    if resolve_precision("auto", torch.device("cpu")) != "bf16":
        pytest.skip("this CPU has no fast bf16")
    rec = load_records(data)
    a = cached_embeddings(_enc(), data, rec, progress=False, precision="fp32")["cls"]
    b = cached_embeddings(_enc(), data, rec, progress=False, precision="bf16")["cls"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
