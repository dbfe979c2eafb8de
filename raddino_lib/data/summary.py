"""Tables that describe a dataset in the generic format (chapter 1 and the data cards)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raddino_lib.data.schema import FINDINGS


def composition(df: pd.DataFrame) -> pd.DataFrame:
    """Subjects, images and view mix per cohort (plus a total row), like the paper's Table B.1."""
    rows = []
    for cohort, g in [*df.groupby("cohort", sort=True), ("total", df)]:
        views = g["view"].value_counts(normalize=True)
        rows.append(
            {
                "cohort": cohort,
                "subjects": g["subject_id"].nunique(),
                "studies": g["study_id"].nunique(),
                "images": len(g),
                "share": len(g) / len(df),
                **{f"{v} %": 100 * float(views.get(v, 0.0)) for v in ("PA", "AP", "LATERAL")},
            }
        )
    return pd.DataFrame(rows).set_index("cohort")


def prevalence_by_cohort(df: pd.DataFrame, findings: tuple[str, ...] = FINDINGS) -> pd.DataFrame:
    """Fraction of images positive for each finding (rows) in each cohort (columns) and overall."""
    labels = df[list(findings)].astype("float64")  # nullable ints -> float, <NA> -> NaN
    out = labels.groupby(df["cohort"]).mean().T
    out["all"] = labels.mean()
    return out.astype("float64")


def mention_rates(df: pd.DataFrame, findings: tuple[str, ...] = FINDINGS) -> pd.DataFrame:
    """How often each positive finding is written in its report, read by the rule labeller.

    Returns one row per finding: ``positives`` (images with the label), ``mentioned`` (fraction
    of those whose report the labeller reads as positive or uncertain), ``negated_when_positive``
    (fraction whose report says the finding is absent; should be ~0), and
    ``false_mention`` (fraction of negatives whose report reads positive).
    """
    from raddino_lib.text.labeller import label_reports

    read = label_reports(df["report"].fillna("").tolist())
    rows = []
    for f in findings:
        if f == "no_finding":
            continue
        y = df[f].to_numpy(dtype=float)
        r = read[f].to_numpy(dtype=float)
        pos, neg = y == 1, y == 0
        said = (r == 1) | (r == -1)
        rows.append(
            {
                "finding": f,
                "positives": int(pos.sum()),
                "mentioned": float(said[pos].mean()) if pos.any() else np.nan,
                "negated_when_positive": float((r[pos] == 0).mean()) if pos.any() else np.nan,
                "false_mention": float(said[neg].mean()) if neg.any() else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("finding")


NOT_LABELLED = "not labelled in this dataset"


def probe_ready(
    df: pd.DataFrame, findings: tuple[str, ...] | list[str] = FINDINGS
) -> tuple[list[str], dict[str, str]]:
    """Which ``findings`` a probe can score on ``df`` (a records frame with ``split``).

    A finding is ready when its labelled rows (blank = unknown) hold both classes in the
    ``train`` split and in the ``test`` split, which :func:`raddino_lib.eval.probe.finding_probe`
    needs. Returns ``(ready, skipped)``: the ready findings in the given order, and for every
    other one the reason, e.g. ``"not labelled in this dataset"`` or ``"no positive image in
    test"``. Real datasets label only some findings (VinDr-CXR has no chest-tube label), so
    chapters probe the ready ones and say why the rest are missing.
    """
    ready: list[str] = []
    skipped: dict[str, str] = {}
    for f in findings:
        if f not in df.columns:
            skipped[f] = "not a column of the records"
            continue
        y = pd.to_numeric(df[f], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(y).any():
            skipped[f] = NOT_LABELLED
            continue
        why = []
        for split in ("train", "test"):
            v = y[(df["split"] == split).to_numpy() & np.isfinite(y)]
            if not (v == 1).any():
                why.append(f"no positive image in {split}")
            if not (v == 0).any():
                why.append(f"no negative image in {split}")
        if why:
            skipped[f] = ", ".join(why)
        else:
            ready.append(f)
    return ready, skipped
