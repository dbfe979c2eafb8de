"""Patch correspondences: geometry helpers, cosine maps and landmark errors on known cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raddino_lib.eval.correspondence import (
    RANDOM_PATCH,
    SAME_POSITION,
    compare_medians,
    landmark_errors,
    patch_centre,
    patch_index,
    sample_pairs,
    similarity_maps,
    summarize_errors,
)


def test_patch_index_and_centre():
    grid = (4, 4)
    assert patch_index(np.array([0.0, 0.0]), 64, grid).tolist() == [0, 0]
    assert patch_index(np.array([63.9, 16.0]), 64, grid).tolist() == [1, 3]  # (row, col)
    assert patch_index(np.array([64.0, 70.0]), 64, grid).tolist() == [3, 3]  # clipped
    assert patch_centre(np.array([1, 3]), 64, grid).tolist() == [56.0, 24.0]  # (x, y)
    pts = np.random.default_rng(0).uniform(0, 64, (50, 2))
    back = patch_centre(patch_index(pts, 64, grid), 64, grid)
    assert np.abs(back - pts).max() <= 8.0  # within half a 16-px patch per axis


def test_a_patch_is_most_similar_to_itself():
    emb = np.random.default_rng(1).normal(size=(5, 6, 8))
    for rc in [(0, 0), (2, 3), (4, 5)]:
        sims = similarity_maps(emb, rc, emb)
        assert sims.shape == (5, 6)
        assert np.unravel_index(np.argmax(sims), sims.shape) == rc
        assert sims[rc] == pytest.approx(1.0, abs=1e-6)
        assert sims.max() <= 1.0 + 1e-6 and sims.min() >= -1.0 - 1e-6
    with pytest.raises(ValueError, match="same D"):
        similarity_maps(emb, (0, 0), np.zeros((1, 5, 6, 7)))


def _shifted_pair():
    """Image 1 = image 0 moved one patch (16 px) right; patch embeddings one-hot by content."""
    h = w = 4
    eye = np.eye(h * (w + 1))
    content = np.arange(h * (w + 1)).reshape(h, w + 1)
    img0 = eye[content[:, 1:]]  # [4, 4, 20]: columns 1..4 of the content
    img1 = eye[content[:, :-1]]  # columns 0..3: everything moved one patch right
    lm = pd.DataFrame({"a_x": [40.0, 56.0], "a_y": [20.0, 20.0], "b_x": [5.0, 21.0],
                       "b_y": [60.0, 60.0]})  # fmt: skip
    return np.stack([img0, img1]), lm


def test_errors_on_a_known_shift():
    patches, lm = _shifted_pair()
    err = landmark_errors(patches, lm, ["a", "b"], np.array([[0, 1]]), 64, encoder="e")
    ours = err[err.encoder == "e"].set_index("landmark")
    # Perfect matches: the error is the distance to the matched patch's centre (the floor).
    assert ours.loc["a", "error_px"] == pytest.approx(np.hypot(56 - 56, 24 - 20))
    assert ours.loc["b", "error_px"] == pytest.approx(np.hypot(24 - 21, 56 - 60))
    np.testing.assert_allclose(ours["error_px"], ours["floor_px"])
    assert (ours["sim"] == 1.0).all()
    same = err[err.encoder == SAME_POSITION].set_index("landmark")
    assert same.loc["a", "error_px"] == pytest.approx(np.hypot(40 - 56, 24 - 20))  # one patch off
    rnd = err[err.encoder == RANDOM_PATCH].set_index("landmark")
    centres = patch_centre(np.stack(np.divmod(np.arange(16), 4), -1), 64, (4, 4))
    assert rnd.loc["a", "error_px"] == pytest.approx(np.hypot(*(centres - [56, 20]).T).mean())
    s = summarize_errors(err, 64)
    assert s["e"]["n"] == 2 and s["e"]["median_px"] < s[SAME_POSITION]["median_px"]
    assert set(s["e"]["per_landmark"]) == {"a", "b"}


def test_missing_landmarks_are_skipped():
    patches, lm = _shifted_pair()
    lm.loc[1, "b_x"] = np.nan
    err = landmark_errors(patches, lm, ["a", "b"], np.array([[0, 1]]), 64, references=False)
    assert err["landmark"].tolist() == ["a"]


def test_sample_pairs_never_pairs_a_subject_with_itself():
    rec = pd.DataFrame({"subject_id": ["s1", "s1", "s2", "s3", "s3", "s4"]})
    pairs = sample_pairs(rec, 12, seed=0)
    assert len(pairs) == 12 and len({tuple(p) for p in pairs}) == 12
    sid = rec.subject_id.to_numpy()
    assert (sid[pairs[:, 0]] != sid[pairs[:, 1]]).all()
    np.testing.assert_array_equal(pairs, sample_pairs(rec, 12, seed=0))


def test_compare_medians_is_paired():
    rng = np.random.default_rng(0)
    rows = []
    for p in range(40):
        base = rng.uniform(5, 30)
        for lm in ("a", "b"):
            rows.append(dict(encoder="good", pair=p, landmark=lm, error_px=base))
            rows.append(dict(encoder="bad", pair=p, landmark=lm, error_px=base + 4.0))
    err = pd.DataFrame(rows)
    r = compare_medians(err, "good", "bad", n_boot=300)
    assert r["diff_px"] == pytest.approx(-4.0) and r["held"] == 1.0 and r["hi_px"] < 0
    r2 = compare_medians(err, "bad", "good", n_boot=300)
    assert r2["held"] == 0.0 and r2["lo_px"] > 0


def test_pixel_patch_grid_cuts_the_image_into_patches():
    from raddino_lib.eval.correspondence import pixel_patch_grid

    img = np.arange(2 * 8 * 8, dtype=float).reshape(2, 8, 8)
    g = pixel_patch_grid(img, (2, 4))
    assert g.shape == (2, 2, 4, 4 * 2)
    raw = img[1, 4:8, 2:4].ravel()  # row 1, col 1 of image 1
    np.testing.assert_allclose(g[1, 1, 1], raw - raw.mean())
    with pytest.raises(ValueError, match="multiple"):
        pixel_patch_grid(img, (3, 4))


def test_side_agreement_counts_matches_on_the_right_side():
    from raddino_lib.eval.correspondence import side_agreement

    lm = pd.DataFrame({"carina_x": [32.0, 32.0], "a_x": [10.0, 10.0], "b_x": [50.0, 50.0]})
    err = pd.DataFrame({
        "encoder": ["e", "e", "f", "f"], "target": [1, 1, 1, 1], "landmark": ["a", "b", "a", "b"],
        "row": [0, 0, 0, 0], "col": [0, 0, 3, 3],  # col 0 -> x 8 (left), col 3 -> x 56 (right)
    })  # fmt: skip
    got = side_agreement(err, lm, 64, (4, 4))
    assert got == {"e": 0.5, "f": 0.5}
    err.loc[1, "col"] = 3
    assert side_agreement(err, lm, 64, (4, 4))["e"] == 1.0
