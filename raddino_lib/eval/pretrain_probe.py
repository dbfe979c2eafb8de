"""Sanity probes of a pretraining run: is the frozen encoder better than where it started?

* :func:`encoder_probe` -- per-finding test AUPRC of a logistic probe on one frozen encoder's
  features (CLS + mean patch), mean and std over seeds;
* :func:`learning_curve` -- the same probe on every teacher snapshot of a run (step 0 is the
  random initialisation of that very run), against images seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from raddino_lib.eval.cache import cached_embeddings
from raddino_lib.eval.embed import probe_features
from raddino_lib.eval.probe import cached_finding_probe
from raddino_lib.models.backbone import ViTBackbone

__all__ = [
    "PROBE_KINDS",
    "ProbeComparison",
    "compare_probes",
    "encoder_probe",
    "frontal_records",
    "learning_checks",
    "learning_curve",
    "seed_means",
]

# feature kind -> label used in check names and prose
PROBE_KINDS = {"cls+mean": "global", "cls+mean+grid": "spatial"}


def frontal_records(records: pd.DataFrame) -> pd.DataFrame:
    """Frontal (PA/AP) rows of every split, re-indexed (the probes use frontal images)."""
    out = records[records["view"] != "LATERAL"].reset_index(drop=True)
    if len(out) == 0:
        raise ValueError("no frontal (PA/AP) images in these records")
    return out


def encoder_probe(
    backbone: ViTBackbone,
    root: str | Path,
    frontal: pd.DataFrame,
    findings: Sequence[str],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    feature_kind: str = "cls+mean",
    grid: int = 4,
    device: str = "cpu",
    precision: str = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Finding probe (see :func:`raddino_lib.eval.probe.finding_probe`) on ``backbone``'s
    features of ``frontal`` images at the backbone's native input size (``grid`` is the pooled
    grid side of the ``"cls+mean+grid"`` kind)."""
    # every kind from one cached embedding (with the pooled grid): a snapshot probed with both
    # kinds, or probed again by compare_probes, is embedded once
    emb = cached_embeddings(backbone, root, frontal, grid=grid, device=device,
                            precision=precision, progress=progress)  # fmt: skip
    x = probe_features(emb, feature_kind)
    return cached_finding_probe(
        x, frontal[list(findings)], frontal["split"], frontal["subject_id"], seeds=seeds
    )


def learning_curve(
    run_dir: str | Path,
    root: str | Path,
    frontal: pd.DataFrame,
    findings: Sequence[str],
    *,
    batch_size: int,
    seeds: Sequence[int] = (0, 1, 2),
    steps: Sequence[int] | None = None,
    device: str = "cpu",
    precision: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Probe every snapshot of a run.

    Returns:
        one row per snapshot: ``step``, ``images_seen`` (``step * batch_size``),
        ``mean_auprc`` (mean over findings of the seed-mean AUPRC), ``mean_auprc_std`` (std
        over seeds of the finding-mean), and one column per finding.
    """
    from raddino_lib.ssl.train import list_snapshots, load_snapshot

    snaps = list_snapshots(run_dir)
    if not snaps:
        raise FileNotFoundError(f"{run_dir} has no teacher snapshots (snapshot_every was 0?)")
    wanted = list(snaps) if steps is None else [s for s in steps if s in snaps]
    rows = []
    for step in tqdm(wanted, desc="probe snapshots", disable=not progress):
        res = encoder_probe(
            load_snapshot(run_dir, step), root, frontal, findings, seeds=seeds, device=device,
            precision=precision,
        )  # fmt: skip
        seed_cols = [c for c in res.columns if c.startswith("seed_")]
        per_seed = res[seed_cols].mean(axis=0)  # finding-mean per seed
        rows.append(
            {
                "step": step,
                "images_seen": step * batch_size,
                "mean_auprc": float(res["auprc_mean"].mean()),
                "mean_auprc_std": float(np.std(per_seed.to_numpy())),
                **{f: float(res.loc[f, "auprc_mean"]) for f in findings},
            }
        )
    return pd.DataFrame(rows)


def learning_checks(
    metrics: Sequence[dict] | pd.DataFrame,
    curve: pd.DataFrame,
    reference_seed_means: dict[str, Sequence[float]],
    final_seed_means: Sequence[float],
    *,
    tail: float = 0.1,
) -> dict[str, dict]:
    """The issue's learning criteria, each with the numbers behind it.

    Args:
        metrics: per-step records of the run (``metrics.jsonl``).
        curve: :func:`learning_curve` output (first row = initial weights).
        reference_seed_means: per-seed finding-mean AUPRC of each reference (e.g. ``"random
            init"``, ``"raw pixels"``).
        final_seed_means: the same for the run's final teacher (same seeds, same order).
        tail: fraction of the steps averaged for "start" (after the first ``tail``) and "end".

    Returns:
        ``{check: {"passed": bool, **numbers}}`` for ``dino_below_log_k`` (end DINO loss under
        0.9 log K), ``teacher_entropy_falls`` (end mean target entropy at least 0.1 nat below
        its value early in the run), ``prototypes_in_use`` (entropy of the mean target at
        least 0.9 log K at the end: no collapse onto a few prototypes) and one
        ``probe_beats_<reference>`` per reference (the run ahead for every seed).
    """
    df = pd.DataFrame(metrics)
    if df.empty:
        raise ValueError("no metrics: the run has not taken a step")
    n = max(1, int(round(tail * len(df))))
    head, end = df.iloc[n : 2 * n] if len(df) > 2 * n else df.iloc[:n], df.iloc[-n:]
    log_k = float(df["log_k"].iloc[0])
    dino_end = float(end["dino_loss"].mean())
    h_start, h_end = float(head["teacher_entropy"].mean()), float(end["teacher_entropy"].mean())
    hm_end = float(end["teacher_entropy_of_mean"].mean())
    out: dict[str, dict] = {
        "dino_below_log_k": {
            "passed": dino_end < 0.9 * log_k, "dino_loss_end": dino_end, "log_k": log_k,
        },
        "teacher_entropy_falls": {
            "passed": h_end < h_start - 0.1, "start": h_start, "end": h_end, "log_k": log_k,
        },
        "prototypes_in_use": {
            "passed": hm_end >= 0.9 * log_k,
            "entropy_of_mean_end": hm_end,
            "prototypes_used_end": float(end["prototypes_used"].mean()),
            "log_k": log_k,
        },
    }  # fmt: skip
    final = np.asarray(final_seed_means, dtype=float)
    for name, ref in reference_seed_means.items():
        r = np.asarray(ref, dtype=float)
        if r.shape != final.shape:
            raise ValueError(f"{name}: {r.shape} seeds vs {final.shape} for the run")
        key = "probe_beats_" + name.replace(" ", "_")
        out[key] = {
            "passed": bool(np.all(final > r)),
            "run": final.tolist(),
            name: r.tolist(),
            "margin_mean": float(np.mean(final - r)),
        }
    if len(curve):
        out["curve"] = {
            "passed": True,
            "first": float(curve["mean_auprc"].iloc[0]),
            "best": float(curve["mean_auprc"].max()),
            "last": float(curve["mean_auprc"].iloc[-1]),
        }
    return out


def seed_means(result: pd.DataFrame) -> list[float]:
    """Per-seed finding-mean AUPRC of a finding-probe table (NaN findings skipped)."""
    cols = sorted(c for c in result.columns if c.startswith("seed_"))
    return [float(np.nanmean(result[c].to_numpy(dtype=float))) for c in cols]


@dataclass
class ProbeComparison:
    """Raw pixels vs the run's initial and final teacher, for each feature kind.

    Attributes:
        tables: ``{kind: DataFrame}`` per finding (+ ``"mean over findings"``): prevalence,
            raw pixels, random init, this run and its std over seeds.
        seed_means: per-seed finding-mean AUPRC of ``pixels``, ``random_init_<kind>`` and
            ``run_<kind>``.
        checks: :func:`learning_checks` merged over kinds; the probe checks carry the kind's
            label, e.g. ``probe_beats_raw_pixels_spatial``.
    """

    tables: dict[str, pd.DataFrame]
    seed_means: dict[str, list[float]]
    checks: dict[str, dict]


def compare_probes(
    initial: ViTBackbone,
    final: ViTBackbone,
    root: str | Path,
    frontal: pd.DataFrame,
    findings: Sequence[str],
    *,
    metrics: Sequence[dict],
    curve: pd.DataFrame,
    pixel_size: int,
    seeds: Sequence[int] = (0, 1, 2),
    kinds: Sequence[str] = tuple(PROBE_KINDS),
) -> ProbeComparison:
    """Probe raw pixels (``pixel_size``), ``initial`` and ``final`` with every feature kind on
    the same splits and seeds, tabulate, and run :func:`learning_checks` per kind."""
    from raddino_lib.eval.floor import pixel_features

    x_pix = pixel_features(root, frontal, pixel_size, progress=False)
    pixels = cached_finding_probe(
        x_pix, frontal[list(findings)], frontal["split"], frontal["subject_id"], seeds=seeds
    )
    pix_col = f"raw pixels {pixel_size}px"
    tables, means, checks = {}, {"pixels": seed_means(pixels)}, {}
    for kind in kinds:
        label = PROBE_KINDS.get(kind, kind)
        res = {
            who: encoder_probe(bb, root, frontal, findings, seeds=seeds, feature_kind=kind)
            for who, bb in (("random_init", initial), ("run", final))
        }
        t = pd.DataFrame(
            {
                "prevalence": res["run"]["prevalence"],
                pix_col: pixels["auprc_mean"],
                "random init (step 0)": res["random_init"]["auprc_mean"],
                "this run": res["run"]["auprc_mean"],
                "± std": res["run"]["auprc_std"],
            }
        )
        t.loc["mean over findings"] = t.mean(numeric_only=True)
        tables[kind] = t
        for who, r in res.items():
            means[f"{who}_{kind}"] = seed_means(r)
        c = learning_checks(
            metrics,
            curve,
            {"random init": means[f"random_init_{kind}"], "raw pixels": means["pixels"]},
            means[f"run_{kind}"],
        )
        checks.update({(f"{k}_{label}" if k.startswith("probe_") else k): v for k, v in c.items()})
    return ProbeComparison(tables, means, checks)
