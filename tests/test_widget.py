"""Unit tests of raddino_lib.viz.widget.LandmarkSimilarity (the Python side; the page's side is
tests/test_widget_browser.py)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
import traitlets
from PIL import Image

from raddino_lib.viz import LandmarkSimilarity
from raddino_lib.viz.widget import encode_png, quantize_patches


def _data(seed: int = 0, h: int = 6, w: int = 5, d: int = 32):
    rng = np.random.default_rng(seed)
    img = rng.random((48, 40))
    q = rng.normal(size=(h, w, d))
    t1 = q + 0.02 * rng.normal(size=(h, w, d))  # nearly the query
    t2 = rng.normal(size=(h, w, d))  # unrelated
    return img, q, [img, rng.random((30, 60))], [t1, t2]


def _float_cosine(q: np.ndarray, targets: list[np.ndarray], r: int, c: int) -> np.ndarray:
    v = q[r, c] / np.linalg.norm(q[r, c])
    out = []
    for t in targets:
        out.append(t @ v / np.linalg.norm(t, axis=-1))
    return np.stack(out)


def test_from_patches_state_is_compact_and_consistent() -> None:
    img, q, timgs, tps = _data()
    wdg = LandmarkSimilarity.from_patches(img, q, timgs, tps, labels=["a", "b"])
    assert wdg.grid == [6, 5] and wdg.dim == 32
    assert wdg.landmark == [3, 2]  # centre patch by default
    assert wdg.target_labels == ["a", "b"] and wdg.query_label == "query"
    assert len(wdg.target_images) == 2
    raw = base64.b64decode(wdg.embeddings)
    assert len(raw) == 3 * 6 * 5 * 32  # int8 [(1 + T), h * w, D]
    assert wdg.quantized().shape == (3, 30, 32) and wdg.quantized().dtype == np.int8
    for url in [wdg.query_image, *wdg.target_images]:
        assert url.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(wdg.target_images[1].split(",", 1)[1])))
    assert png.size == (60, 30) and png.mode == "L"  # PIL size is (W, H)
    # The whole state is plain JSON (no binary buffers): the static book can embed it.
    state = wdg.get_state()
    assert not any(isinstance(v, bytes | memoryview) for v in state.values())
    assert state["best"] == [list(b) for b in wdg.best_matches()]


def test_quantisation_round_trip() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 64)) * rng.uniform(0.1, 50, size=(7, 1))
    qz = quantize_patches(x)
    assert qz.dtype == np.int8 and np.abs(qz.astype(int)).max() <= 127
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    back = qz / 127.0
    assert np.abs(back - unit).max() <= 0.5 / 127 + 1e-12  # rounding error only
    # zero vectors stay zero (their similarity is 0, not NaN)
    assert not quantize_patches(np.zeros((2, 8))).any()


def test_similarity_of_a_patch_with_itself_is_the_maximum() -> None:
    img, q, _, _ = _data()
    wdg = LandmarkSimilarity.from_patches(img, q, img, q)  # one target: the query itself
    for r, c in [(0, 0), (2, 3), (5, 4)]:
        sims = wdg.similarity((r, c))
        assert sims.shape == (1, 6, 5)
        assert sims[0, r, c] == pytest.approx(1.0, abs=1e-12)
        assert sims.max() <= 1.0 + 1e-12
        assert wdg.best_matches((r, c)) == [(r, c)]


def test_best_match_follows_the_landmark_and_python_keeps_best_current() -> None:
    img, q, timgs, tps = _data()
    wdg = LandmarkSimilarity.from_patches(img, q, timgs, tps, landmark=(1, 1))
    assert wdg.best[0] == [1, 1]
    wdg.landmark = [4, 3]  # what a click does, seen from Python
    assert wdg.best[0] == [4, 3]
    assert wdg.best == [list(b) for b in wdg.best_matches()]


def test_similarity_matches_float_cosine() -> None:
    img, q, timgs, tps = _data(seed=3, d=128)
    wdg = LandmarkSimilarity.from_patches(img, q, timgs, tps)
    for r, c in [(0, 4), (3, 2)]:
        exact = _float_cosine(q, tps, r, c)
        got = wdg.similarity((r, c))
        assert np.abs(got - exact).max() < 1e-2


def test_accepts_torch_tensors_and_stacked_arrays() -> None:
    img, q, _, _ = _data()
    qt = torch.from_numpy(q).float()
    wdg = LandmarkSimilarity.from_patches(
        torch.from_numpy(img), qt, np.stack([img, img]), torch.stack([qt, qt])
    )
    assert len(wdg.target_images) == 2 and wdg.best_matches((0, 0)) == [(0, 0), (0, 0)]
    u8 = (np.asarray(img) * 255).astype(np.uint8)
    assert LandmarkSimilarity.from_patches(u8, q, u8, q).grid == [6, 5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "query_patches": a["query_patches"][0]}, r"query_patches.*\[h, w, D\]"),
        (lambda a: {**a, "query_patches": a["query_patches"].reshape(30, 32)}, "reshape"),
        (
            lambda a: {
                **a,
                "target_patches": [a["target_patches"][0][:, :4], a["target_patches"][1]],
            },
            "differs from",
        ),
        (
            lambda a: {**a, "target_patches": a["target_patches"][:1]},
            "differ in length: 2 images but 1",
        ),
        (lambda a: {**a, "targets": []}, "at least one target"),
        (lambda a: {**a, "query_image": np.zeros((4, 4, 3))}, r"query_image.*2-D"),
        (lambda a: {**a, "query_image": np.full((4, 4), 2.0)}, r"\[0, 1\]"),
        (lambda a: {**a, "query_image": np.zeros((4, 4), np.uint16)}, "unsupported dtype"),
        (lambda a: {**a, "labels": ["only one"]}, "1 labels for 2 targets"),
        (lambda a: {**a, "landmark": (6, 0)}, r"inside the 6 x 5 patch grid"),
        (lambda a: {**a, "alpha": 1.5}, "alpha"),
        (lambda a: {**a, "colormap": "jet"}, "colormap"),
    ],
    ids=[
        "patches-2d",
        "token-sequence",
        "grid-mismatch",
        "count-mismatch",
        "no-targets",
        "rgb-image",
        "float-range",
        "uint16",
        "labels",
        "landmark",
        "alpha",
        "colormap",
    ],
)
def test_validation_errors_name_the_problem(change, message: str) -> None:
    img, q, timgs, tps = _data()
    args = {
        "query_image": img,
        "query_patches": q,
        "targets": timgs,
        "target_patches": tps,
        "labels": ["a", "b"],
    }
    args = change(args)
    with pytest.raises(ValueError, match=message):
        LandmarkSimilarity.from_patches(
            args.pop("query_image"),
            args.pop("query_patches"),
            args.pop("targets"),
            args.pop("target_patches"),
            **args,
        )


def test_nan_patches_are_refused() -> None:
    img, q, timgs, tps = _data()
    q = q.copy()
    q[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LandmarkSimilarity.from_patches(img, q, timgs, tps)


def test_landmark_set_from_python_is_validated() -> None:
    img, q, timgs, tps = _data()
    wdg = LandmarkSimilarity.from_patches(img, q, timgs, tps)
    with pytest.raises(traitlets.TraitError, match="outside the 6 x 5 patch grid"):
        wdg.landmark = [0, 5]
    assert wdg.landmark == [3, 2]


def test_large_images_are_downsampled_for_the_page() -> None:
    big = np.linspace(0, 1, 1200 * 900).reshape(1200, 900)
    url = encode_png(big, max_side=512)
    png = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert png.size == (384, 512)
    assert Image.open(io.BytesIO(base64.b64decode(encode_png(big).split(",", 1)[1]))).size == (
        900,
        1200,
    )


def test_esm_and_css_ship_with_the_package() -> None:
    img, q, timgs, tps = _data()
    wdg = LandmarkSimilarity.from_patches(img, q, timgs, tps)
    esm = str(wdg._esm)
    assert "export default { render }" in esm
    for name in ["lms-root", "lms-query", "lms-target", "lms-readout", "dataset.row"]:
        assert name in esm
    code = "\n".join(line for line in esm.splitlines() if not line.lstrip().startswith("//"))
    # no imports, no URLs: the JS loads nothing (no network, no libraries)
    assert "import " not in code and "import(" not in code and "://" not in code
    assert ".lms-root" in str(wdg._css)
