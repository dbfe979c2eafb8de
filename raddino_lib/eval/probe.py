"""Logistic-regression probes on frozen features (image findings and patient metadata).

The same functions serve every feature source in the book: raw pixels (the floor), a random
ViT, this run's encoder, external encoders. Features are standardised on the training set.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from raddino_lib.eval.logistic import (
    RowSpace,
    fit_multilabel_logistic,
    fit_multinomial_logistic,
)
from raddino_lib.eval.metrics import auprc, quantile_bins

C_GRID: tuple[float, ...] = (0.003, 0.03, 0.3)
# The finding probes' solver precision. The probes are memory-bound matrix products on a CPU;
# float32, with every C of the grid (and then every seed) fitted as columns of one joint fit,
# made the 3456-feature ablation probe 5-9x faster than float64 one fit at a time, with the
# same AUPRCs to 3-4 decimals (2162 x 3456 features, 6 findings, one thread).
PROBE_DTYPE = torch.float32


def _labelled(y: np.ndarray) -> np.ndarray:
    return np.isfinite(y) & (y != -1)


def _prepare(features, labels, split):
    x = np.asarray(features, dtype=np.float64)
    split = np.asarray(split)
    if x.ndim != 2 or len(x) != len(labels) or len(split) != len(x):
        raise ValueError(
            f"features {x.shape}, labels {labels.shape} and split {split.shape} must agree on N"
        )
    tr = split == "train"
    return StandardScaler().fit(x[tr]).transform(x), split


def _column_auprc(y: np.ndarray, ok: np.ndarray, rows: np.ndarray, z: np.ndarray) -> np.ndarray:
    """AUPRC of each column of logits ``z [N, F]`` on ``rows & ok[:, j]``."""
    return np.array(
        [auprc(y[rows & ok[:, j], j], z[rows & ok[:, j], j]) for j in range(y.shape[1])]
    )


def finding_probe(
    features: np.ndarray | Mapping[str, np.ndarray],
    labels: pd.DataFrame,
    split: Sequence[str],
    subjects: Sequence[object],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    subsample: float = 0.8,
    c_grid: Sequence[float] = C_GRID,
) -> pd.DataFrame:
    """Per-finding test AUPRC and AUROC of a logistic probe, mean and std over seeds.

    For each finding, C is chosen on the ``val`` split (fit on all ``train``); then for each seed
    the probe is refit on a random ``subsample`` fraction of the training *subjects* (so seeds
    vary the training split, as in the paper's "5 seeds and training splits") and scored on
    ``test``. Missing or uncertain labels (NaN, -1) are masked per finding. All findings are
    fitted together (:func:`raddino_lib.eval.logistic.fit_multilabel_logistic`: the same
    solutions as one scikit-learn ``LogisticRegression`` per finding), and so are the C grid
    and then the seeds (more columns of one fit, in :data:`PROBE_DTYPE`).

    With several candidate feature sets (a mapping ``{kind: [N, D_kind]}``), the kind is chosen
    once for all findings, by the mean over findings of the best validation AUPRC; test data
    never takes part in the choice.

    Args:
        features: ``[N, D]`` float features, or ``{kind: [N, D_kind]}``.
        labels: ``[N, F]`` 0/1 labels (NaN or -1 = missing), columns are finding names.
        split: ``[N]`` "train" / "val" / "test".
        subjects: ``[N]`` subject ids (subsampling is by subject).

    Returns:
        DataFrame indexed by finding with columns ``auprc_mean, auprc_std, auroc_mean,
        auroc_std, prevalence, C, n_test_pos, val_auprc`` and one ``seed_<k>`` (AUPRC) and
        ``auroc_seed_<k>`` column per seed; NaN for a finding without both classes in train
        and test. ``df.attrs`` holds ``kind`` (the chosen feature set) and ``val_by_kind``.
    """
    cands = dict(features) if isinstance(features, Mapping) else {"features": features}
    if not cands:
        raise ValueError("finding_probe needs at least one feature set")
    subjects = np.asarray(subjects)
    names = list(labels.columns)
    y = labels.to_numpy(dtype=np.float64)
    ok = _labelled(y)
    prepared = {k: _prepare(v, labels, split) for k, v in cands.items()}
    split_arr = next(iter(prepared.values()))[1]
    tr, va, te = (split_arr == s for s in ("train", "val", "test"))
    two = lambda rows, j: len(np.unique(y[rows & ok[:, j], j])) == 2  # noqa: E731
    cols = [j for j in range(len(names)) if two(tr, j) and two(te, j)]
    yc, okc = y[:, cols], ok[:, cols]
    has_val = np.array([two(va, j) for j in cols], dtype=bool)

    # --- choose C per finding and the feature set (validation only)
    best_kind, best_score, val_by_kind = None, -np.inf, {}
    chosen_c = chosen_val = None
    c_grid = sorted(c_grid)
    k = len(cols)
    for kind, (xs, _) in prepared.items():
        # every C of the grid at once: one fit of len(c_grid) x k independent columns, on the
        # training rows' row space (its QR is reused by the seeds' fit below)
        space = RowSpace(xs[tr])
        joint = fit_multilabel_logistic(
            space.features, np.tile(yc[tr], (1, len(c_grid))), np.repeat(c_grid, k),
            mask=np.tile(okc[tr], (1, len(c_grid))), dtype=PROBE_DTYPE, row_space=False,
        )  # fmt: skip
        reduced = [joint.columns(i * k, (i + 1) * k) for i in range(len(c_grid))]
        fits = [space.lift(f) for f in reduced]
        per_c_list = [_column_auprc(yc, okc, va, f.decision_function(xs)) for f in fits]
        per_c = np.stack(per_c_list) if cols else np.zeros((len(c_grid), 0))
        per_c = np.where(np.isfinite(per_c), per_c, -1.0)
        idx = per_c.argmax(0)
        c_vec = np.where(has_val, np.asarray(c_grid)[idx], c_grid[len(c_grid) // 2])
        val = np.where(has_val, per_c.max(0) if cols else 0.0, np.nan)
        score = float(np.nanmean(val)) if np.isfinite(val).any() else float("nan")
        val_by_kind[kind] = score
        if best_kind is None or score > best_score:
            best_kind, best_score, chosen_c, chosen_val = kind, score, c_vec, val
            start, best_space = reduced[int(np.median(idx)) if len(idx) else 0], space
    assert best_kind is not None
    xs = prepared[best_kind][0]

    # --- seeds: refit on a subsample of training subjects, score on test
    train_subjects = np.unique(subjects[tr])
    ap = np.full((len(seeds), len(cols)), np.nan)
    roc = np.full_like(ap, np.nan)
    masks = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        keep_subj = rng.choice(
            train_subjects, size=max(2, int(round(subsample * len(train_subjects)))), replace=False
        )
        keep = tr & np.isin(subjects, keep_subj)
        mask = okc & keep[:, None]
        for j in range(len(cols)):  # a subsample without both classes: use all training rows
            if len(np.unique(yc[mask[:, j], j])) < 2:
                mask[:, j] = okc[:, j] & tr
        masks.append(mask)
    # every seed at once: one fit of len(seeds) x k columns, each masked to its subsample.
    # Only training rows carry weight, so only they are passed (in their row space, as for
    # the choice of C): the same objective and, from a warm start in their span, the same
    # L-BFGS path as a fit on all rows, at (N_train / N)^2 of the cost per iteration
    joint = best_space.lift(fit_multilabel_logistic(
        best_space.features, np.tile(yc[tr], (1, len(seeds))), np.tile(chosen_c, len(seeds)),
        mask=np.concatenate(masks, axis=1)[tr], init=start.tile(len(seeds)), dtype=PROBE_DTYPE,
        row_space=False,
    )) if cols and seeds else None  # fmt: skip
    for si in range(len(seeds)):
        z = joint.columns(si * k, (si + 1) * k).decision_function(xs) if joint else None
        for j in range(len(cols)):
            rows = te & okc[:, j]
            ap[si, j] = auprc(yc[rows, j], z[rows, j])
            roc[si, j] = float(roc_auc_score(yc[rows, j], z[rows, j]))

    rows_out = []
    nan = float("nan")
    for j, name in enumerate(names):
        m_te = te & ok[:, j]
        row: dict[str, object] = {
            "finding": name,
            "prevalence": float(np.mean(y[m_te, j])) if m_te.any() else nan,
            "n_test_pos": int(np.sum(y[m_te, j] == 1)),
        }
        if j not in cols:
            row.update(auprc_mean=nan, auprc_std=nan, auroc_mean=nan, auroc_std=nan, C=nan)
        else:
            k = cols.index(j)
            row.update(
                auprc_mean=float(ap[:, k].mean()), auprc_std=float(ap[:, k].std()),
                auroc_mean=float(roc[:, k].mean()), auroc_std=float(roc[:, k].std()),
                C=float(chosen_c[k]), val_auprc=float(chosen_val[k]),
            )  # fmt: skip
            for si, seed in enumerate(seeds):
                row[f"seed_{seed}"] = float(ap[si, k])
                row[f"auroc_seed_{seed}"] = float(roc[si, k])
        rows_out.append(row)
    out = pd.DataFrame(rows_out).set_index("finding")
    out.attrs.update(kind=best_kind, val_by_kind=val_by_kind)
    return out


# The paper's bins (Appendix C.3): age in years, weight in kg, BMI in kg/m^2; the edges split
# "< 20, 20-40, 40-60, 60-80, > 80" and so on (a value on an edge goes to the upper bin).
PAPER_BIN_EDGES: dict[str, tuple[float, ...]] = {
    "age": (20.0, 40.0, 60.0, 80.0),
    "weight": (50.0, 65.0, 80.0, 95.0),
    "bmi": (18.5, 25.0, 30.0, 35.0),
}
METADATA_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0)


def paper_bins(variable: str, values: np.ndarray) -> np.ndarray:
    """Codes ``0..4`` of ``values`` in the paper's five bins for ``variable``."""
    if variable not in PAPER_BIN_EDGES:
        raise ValueError(f"no paper bins for {variable!r}; known: {sorted(PAPER_BIN_EDGES)}")
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"paper_bins({variable!r}) got NaN/inf values: drop missing rows first")
    return np.digitize(v, PAPER_BIN_EDGES[variable], right=False).astype(np.int64)


def metadata_targets(meta: pd.DataFrame, variable: str, bins: str = "paper") -> pd.Series:
    """Class codes of one metadata variable (NaN rows dropped): sex -> 0 F / 1 M; age, weight,
    BMI -> five bins (``bins="paper"``: the paper's edges; ``"quantile"``: equal counts)."""
    col = meta[variable]
    col = col[col.notna() & (col.astype(str) != "")]
    if variable == "sex":
        s = col.astype(str).str.upper().str[0]
        bad = ~s.isin(["M", "F"])
        if bad.any():
            raise ValueError(f"sex must be M/F, got {sorted(set(col[bad].astype(str)))[:5]}")
        return (s == "M").astype(np.int64)
    v = col.to_numpy(dtype=np.float64)
    codes = paper_bins(variable, v) if bins == "paper" else quantile_bins(v, 5)[0]
    return pd.Series(codes, index=col.index)


#: L-BFGS iterations of the metadata probes' fits. Raw 32 px pixels (1024 features, 1862 rows,
#: five weakly regularised classes) ran into 1000; at 300 the pixel floor's four accuracies were
#: the same to four decimals, in 61% of the time (65 against 107 s on 2 cores).
METADATA_MAX_ITER = 300


def grid_predict(
    x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, c_grid: Sequence[float]
) -> np.ndarray:
    """Class predictions ``[G, N_eval]`` of a logistic regression fitted on ``(x_fit, y_fit)``
    at each C of ``c_grid``, all C values in one L-BFGS run (:data:`PROBE_DTYPE`).

    Two classes: scikit-learn's binary objective (:func:`fit_multilabel_logistic`, one column
    per C); more: its multinomial one (:func:`fit_multinomial_logistic`). Only the classes
    present in ``y_fit`` are fitted and predicted, as scikit-learn does.
    """
    classes, y_idx = np.unique(np.asarray(y_fit), return_inverse=True)
    g = len(c_grid)
    if len(classes) == 1:
        return np.full((g, len(x_eval)), classes[0])
    if len(classes) == 2:
        m = fit_multilabel_logistic(
            x_fit, np.tile(y_idx[:, None].astype(np.float64), (1, g)), np.asarray(c_grid),
            max_iter=METADATA_MAX_ITER, dtype=PROBE_DTYPE,
        )  # fmt: skip
        return classes[(m.decision_function(x_eval) > 0).astype(np.int64).T]
    m = fit_multinomial_logistic(
        x_fit, y_idx, c_grid, n_classes=len(classes), max_iter=METADATA_MAX_ITER, dtype=PROBE_DTYPE
    )
    return classes[m.predict(x_eval)]


def metadata_probe(
    features: np.ndarray | Mapping[str, np.ndarray],
    meta: pd.DataFrame,
    subjects: Sequence[object],
    *,
    variables: Sequence[str] = ("sex", "age", "weight", "bmi"),
    bins: str = "paper",
    folds: int = 5,
    seed: int = 0,
    c_grid: Sequence[float] = METADATA_C_GRID,
) -> pd.DataFrame:
    """Accuracy of a logistic probe for patient metadata, as in the paper's Table 7.

    ``sex`` is binary; age, weight and BMI are cut into five bins (:data:`PAPER_BIN_EDGES`, or
    equal-count bins with ``bins="quantile"``). Accuracy is the mean (std) over ``folds``
    subject-grouped, stratified folds (80/20 for 5 folds). In each fold, C is chosen from
    ``c_grid`` on one grouped inner split of the training part only, then refit on all of it.
    Given several feature kinds, the kind is chosen together with C on that inner split (the
    same rule as the finding probe: never on the test fold).

    Args:
        features: ``[N, D]``, or ``{kind: [N, D_kind]}`` candidate feature kinds.
        meta: ``[N, ...]`` with the ``variables`` columns (blank = unknown, dropped).
        subjects: ``[N]`` subject ids (no subject in two folds).

    Returns:
        DataFrame indexed by variable with ``acc_mean, acc_std, chance`` (majority class),
        ``n``, ``n_classes``, ``counts`` (images per class), ``fold_<k>`` accuracies,
        ``kinds`` (the feature kind chosen in each fold) and ``correct``: ``[N]`` per row of
        ``meta``, 1 where the out-of-fold prediction was right, 0 where wrong, -1 where the
        variable is unknown. The folds depend only on the targets, subjects and ``seed``, so
        two encoders probed on the same rows are scored on the same folds and ``correct``
        pairs them image by image (:func:`raddino_lib.eval.compare.accuracy_verdict`).
    """
    kinds = (
        {k: np.asarray(v, dtype=np.float64) for k, v in features.items()}
        if isinstance(features, Mapping)
        else {"features": np.asarray(features, dtype=np.float64)}
    )
    if not kinds:
        raise ValueError("no feature kinds given")
    groups = np.asarray(subjects)
    for k, x in kinds.items():
        if len(x) != len(meta) or len(groups) != len(x):
            raise ValueError(f"features {k} {x.shape}, meta {meta.shape}, subjects must agree on N")
    rows = []
    for var in variables:
        target = metadata_targets(meta.reset_index(drop=True), var, bins)
        keep = target.index.to_numpy()
        y = target.to_numpy()
        gv = groups[keep]
        counts = np.bincount(y, minlength=2 if var == "sex" else 5)
        accs, chosen = [], []
        correct = np.full(len(meta), -1, dtype=int)
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for tr, te in cv.split(np.zeros((len(y), 1)), y, gv):
            inner = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed)
            itr, iva = next(inner.split(np.zeros((len(tr), 1)), y[tr], gv[tr]))
            best_k, best_c, best = next(iter(kinds)), c_grid[0], -1.0
            for kind, x in kinds.items():
                xv = x[keep]
                sc = StandardScaler().fit(xv[tr][itr])
                pred = grid_predict(
                    sc.transform(xv[tr][itr]), y[tr][itr], sc.transform(xv[tr][iva]), c_grid
                )  # [C, N_val]: every C in one fit
                for c, p in zip(c_grid, pred, strict=True):
                    a = float(np.mean(p == y[tr][iva]))
                    if a > best:
                        best_k, best_c, best = kind, c, a
            xv = kinds[best_k][keep]
            sc = StandardScaler().fit(xv[tr])
            pred = grid_predict(sc.transform(xv[tr]), y[tr], sc.transform(xv[te]), [best_c])[0]
            accs.append(float(np.mean(pred == y[te])))
            correct[keep[te]] = (pred == y[te]).astype(int)
            chosen.append(best_k)
        rows.append(
            {
                "variable": var,
                "acc_mean": float(np.mean(accs)),
                "acc_std": float(np.std(accs)),
                "chance": float(counts.max() / counts.sum()),
                "n": int(len(y)),
                "n_classes": int(np.count_nonzero(counts)),
                "counts": counts.tolist(),
                **{f"fold_{k}": a for k, a in enumerate(accs)},
                "kinds": chosen,
                "correct": correct.tolist(),
            }
        )
    return pd.DataFrame(rows).set_index("variable")


def _keyword_defaults(fn: Any) -> dict[str, Any]:
    """``fn``'s keyword-only options and their defaults (so a cache key follows them)."""
    return {
        name: prm.default
        for name, prm in inspect.signature(fn).parameters.items()
        if prm.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _check_options(fn_name: str, options: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"{fn_name}: unknown options {unknown}; known {list(known)}")


def _hash_features(h: Any, features: np.ndarray | Mapping[str, np.ndarray]) -> None:
    """Feed every candidate feature array (name, dtype, shape, bytes) to the hash ``h``."""
    cands = dict(features) if isinstance(features, Mapping) else {"features": features}
    for name in sorted(cands):
        x = np.ascontiguousarray(cands[name])
        h.update(f"{name}|{x.dtype}|{x.shape}|".encode())
        h.update(x.tobytes())


_PROBE_OPTIONS = _keyword_defaults(finding_probe)
# Bump when finding_probe's numbers change for the same inputs (cached results are keyed by it).
PROBE_VERSION = 3


def _probe_key(
    features: np.ndarray | Mapping[str, np.ndarray],
    labels: pd.DataFrame,
    split: Sequence[str],
    subjects: Sequence[object],
    seeds: Sequence[int],
    subsample: float,
    c_grid: Sequence[float],
) -> str:
    """SHA-256 of everything :func:`finding_probe` reads: the feature arrays' bytes, the labels,
    split and subjects, the seeds, subsample, C grid, solver precision and version."""
    import hashlib

    h = hashlib.sha256()
    _hash_features(h, features)
    h.update(pd.util.hash_pandas_object(labels, index=False).to_numpy().tobytes())
    h.update("|".join(labels.columns).encode())
    h.update("\x00".join(map(str, split)).encode())
    h.update("\x00".join(map(str, subjects)).encode())
    meta = [list(map(int, seeds)), float(subsample), [float(c) for c in c_grid],
            str(PROBE_DTYPE), PROBE_VERSION]  # fmt: skip
    h.update(repr(meta).encode())
    return h.hexdigest()[:24]


def _table_to_json(df: pd.DataFrame) -> str:
    """A probe table as JSON: floats round-trip exactly, list cells stay lists, attrs kept."""
    import json

    blob = {
        "index": list(df.index), "index_name": df.index.name, "columns": list(df.columns),
        "data": df.astype(object).where(df.notna(), None).to_numpy().tolist(),
        "dtypes": {c: str(t) for c, t in df.dtypes.items()},
        "attrs": df.attrs,
    }  # fmt: skip
    return json.dumps(blob)


def _table_from_json(text: str) -> pd.DataFrame:
    """Inverse of :func:`_table_to_json` (raises ValueError or KeyError on a damaged file)."""
    import json

    blob = json.loads(text)
    df = pd.DataFrame(blob["data"], index=blob["index"], columns=blob["columns"])
    df = df.astype(blob["dtypes"])
    df.index.name = blob["index_name"]
    df.attrs.update(blob["attrs"])
    return df


def _cached_table(kind: str, key: str, compute: Any, cache: bool) -> pd.DataFrame:
    """The table stored under ``.cache/probes`` for ``key``, else ``compute()`` (stored)."""
    from raddino_lib.atomic import atomic_write_text
    from raddino_lib.paths import cache_dir

    path = cache_dir("probes", f"{kind}{key}.json")
    if cache and path.is_file():
        try:
            return _table_from_json(path.read_text())
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache file: recompute and overwrite it
    df = compute()
    if cache:
        atomic_write_text(path, _table_to_json(df))
    return df


def cached_finding_probe(
    features: np.ndarray | Mapping[str, np.ndarray],
    labels: pd.DataFrame,
    split: Sequence[str],
    subjects: Sequence[object],
    *,
    cache: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """:func:`finding_probe`, its result cached under ``.cache/probes`` by the content of its
    inputs: chapters that probe the same features on the same rows (the ablation sweeps'
    shared reference run and baselines) compute it once. The cached table is the computed one
    exactly (floats round-trip through JSON), ``attrs`` included. ``options``: finding_probe's
    ``seeds``, ``subsample`` and ``c_grid``."""
    _check_options("cached_finding_probe", options, _PROBE_OPTIONS)
    opts = {**_PROBE_OPTIONS, **options}
    key = _probe_key(features, labels, split, subjects, **opts)
    return _cached_table(
        "", key, lambda: finding_probe(features, labels, split, subjects, **opts), cache
    )


_METADATA_OPTIONS = _keyword_defaults(metadata_probe)
# Bump when metadata_probe's numbers change for the same inputs.
# 3: per-image out-of-fold correctness (``correct``) in the table
METADATA_PROBE_VERSION = 3


def cached_metadata_probe(
    features: np.ndarray | Mapping[str, np.ndarray],
    meta: pd.DataFrame,
    subjects: Sequence[object],
    *,
    cache: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """:func:`metadata_probe`, cached like :func:`cached_finding_probe`: keyed by the feature
    arrays' bytes, the metadata columns it reads, the subjects, its options (``variables``,
    ``bins``, ``folds``, ``seed``, ``c_grid``), the solver precision and
    :data:`METADATA_PROBE_VERSION`."""
    import hashlib

    _check_options("cached_metadata_probe", options, _METADATA_OPTIONS)
    opts = {**_METADATA_OPTIONS, **options}
    h = hashlib.sha256()
    _hash_features(h, features)
    cols = [v for v in opts["variables"] if v in meta.columns]
    h.update(pd.util.hash_pandas_object(meta[cols].reset_index(drop=True), index=False)
             .to_numpy().tobytes())  # fmt: skip
    h.update("|".join(cols).encode())
    h.update("\x00".join(map(str, subjects)).encode())
    spec = {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in opts.items()}
    h.update(repr([sorted(spec.items()), str(PROBE_DTYPE), METADATA_PROBE_VERSION]).encode())
    return _cached_table(
        "metadata_", h.hexdigest()[:24],
        lambda: metadata_probe(features, meta, subjects, **opts), cache,
    )  # fmt: skip
