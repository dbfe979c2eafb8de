"""The natural-image dataset (general-domain DINO data) and the cached general-domain run."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raddino_lib.config import make_config
from raddino_lib.data import natural
from raddino_lib.data.natural import (
    KIND_PROBS,
    ensure_natural,
    generate_natural,
    make_image,
    natural_dir,
)
from raddino_lib.data.records import load_image, load_records

N, SIZE = 40, 48


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the natural-image dataset tried to use the network")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("natural_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADDINO_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def ds(cache: Path) -> Path:
    """The dataset, generated with every way out to the network blocked."""
    natural.load_photo.cache_clear()  # the photographs are read inside the guarded block
    with pytest.MonkeyPatch.context() as mp:
        for name in ("connect", "connect_ex", "sendto"):
            mp.setattr(socket.socket, name, _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        root = ensure_natural(N, SIZE, 0, progress=False)
    return root


def test_dataset_format(ds: Path) -> None:
    assert ds == natural_dir(N, SIZE, 0)
    assert not ds.with_name(ds.name + ".partial").exists()
    df = load_records(ds)
    assert len(df) == N
    assert df["split"].value_counts().to_dict() == {"train": 32, "val": 4, "test": 4}
    assert df["subject_id"].is_unique and (df["view"] == "PA").all()
    assert set(df["cohort"]) <= set(KIND_PROBS) and "photo" in set(df["cohort"])
    assert (df["no_finding"] == 1).all() and (df["report"] == "").all()
    assert (df["mask_path"] == "").all() and df["age"].isna().all()
    crops = pd.read_csv(ds / "crops.csv")
    assert list(crops["image_id"]) == list(df["image_id"])
    meta = json.loads((ds / "dataset.json").read_text())
    assert (meta["n"], meta["size"], meta["seed"]) == (N, SIZE, 0)
    assert sum(meta["counts"].values()) == N


def test_images_vary(ds: Path) -> None:
    df = load_records(ds)
    imgs = np.stack([load_image(ds, row) for _, row in df.iterrows()])
    assert imgs.shape == (N, SIZE, SIZE)
    assert (imgs.reshape(N, -1).std(axis=1) > 0.01).all(), "a crop is (nearly) constant"
    flat = imgs.reshape(N, -1)
    dist = np.abs(flat[:, None, :] - flat[None, :, :]).mean(axis=2)
    assert dist[~np.eye(N, dtype=bool)].min() > 0.01, "two crops are (nearly) identical"


def test_deterministic_by_seed(ds: Path, tmp_path: Path) -> None:
    again = generate_natural(tmp_path / "again", N, SIZE, 0, progress=False)
    for name in ("records.csv", "crops.csv", "images/nat000000.png", "images/nat000031.png"):
        assert (again / name).read_bytes() == (ds / name).read_bytes(), name
    other = [make_image(i, SIZE, 1)[0] for i in range(6)]
    same = [load_image(ds, f"images/nat{i:06d}.png") for i in range(6)]
    assert all(np.abs(a - b).mean() > 0.01 for a, b in zip(other, same, strict=True))
    a, info = make_image(3, SIZE, 7)
    b, info_b = make_image(3, SIZE, 7)
    assert np.array_equal(a, b) and info == info_b


def test_cached_and_checked(ds: Path) -> None:
    mtime = (ds / "records.csv").stat().st_mtime_ns
    assert ensure_natural(N, SIZE, 0, progress=False) == ds
    assert (ds / "records.csv").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="n must be"):
        ensure_natural(2, SIZE, 0)
    with pytest.raises(ValueError, match="size must be"):
        ensure_natural(N, 8, 0)
    with pytest.raises(ValueError, match="not an empty folder"):
        generate_natural(ds, N, SIZE, 0, progress=False)


def test_general_domain_encoder_smoke(cache: Path) -> None:
    from raddino_lib.models.backbone import spec_from_config
    from raddino_lib.ssl.export import pretrained_run_dir
    from raddino_lib.ssl.general import (
        general_domain_config,
        general_domain_encoder,
        general_domain_run_dir,
    )
    from raddino_lib.ssl.train import read_metrics

    cfg = make_config("smoke", precision="fp32", progress=False)
    with pytest.raises(FileNotFoundError, match="train=True"):
        general_domain_encoder(cfg, train=False)
    bb, run = general_domain_encoder(cfg)
    assert run == general_domain_run_dir(cfg) != pretrained_run_dir(cfg)
    assert run.name.startswith("general_smoke_")
    assert (run / "done.json").is_file()
    assert bb.spec == spec_from_config(cfg)
    rows = read_metrics(run)
    assert len(rows) == cfg.general_pretrain_steps
    info = json.loads((run / "run.json").read_text())
    splits = load_records(natural_dir(cfg.natural_n, cfg.phantom_size, 0))["split"]
    n_train = int((splits == "train").sum())
    assert info["n_images"] == n_train and info["init"] == "random"
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["pretrain_steps"] == cfg.general_pretrain_steps
    assert general_domain_config(cfg).init == "random"

    mtime = (run / "done.json").stat().st_mtime_ns
    bb2, run2 = general_domain_encoder(cfg)  # cached: no training
    assert run2 == run and len(read_metrics(run)) == len(rows)
    assert (run / "done.json").stat().st_mtime_ns == mtime
    for (k, v), (k2, v2) in zip(bb.state_dict().items(), bb2.state_dict().items(), strict=True):
        assert k == k2 and np.array_equal(v.numpy(), v2.numpy())
    assert general_domain_encoder(cfg, train=False)[1] == run
    longer = make_config("smoke", precision="fp32", progress=False, general_pretrain_steps=5)
    assert general_domain_run_dir(longer) != run
    assert general_domain_run_dir(make_config("smoke", natural_n=65)) != run
