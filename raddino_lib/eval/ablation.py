"""Pretraining sweeps of the ablation chapters (Table 2, Figures 1, 2 and A.1 of the paper).

A sweep is a list of :class:`SweepPoint`: each is one pretraining run of the book's recipe
with a few fields changed (the initial weights, the input side, the pretraining cohorts and
views), all at the same budget, ``cfg.ablation_steps`` optimiser steps. Runs go through
:func:`raddino_lib.ssl.export.pretrained_encoder`, so they are cached by configuration,
resumed after a kill, and shared between sweeps (the reference point, random init at the
preset's side on all the data, is one run for all three chapters). Each point is then probed
like chapter 3 (:func:`probe_backbone`: logistic probe, feature kind chosen on validation,
``cfg.probe_seeds``, AUPRC mean and std per finding) on the frontal images at its own input
side, and, when the point asks for it, the teacher snapshot to probe is chosen by early
stopping: the snapshot with the best validation AUPRC.

* :func:`init_points`, :func:`resolution_points`, :func:`data_points` -- the three sweeps;
* :func:`point_config` -- the pretraining configuration of a point;
* :func:`run_sweep` -- train (or load) and probe every point; one row per point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from raddino_lib.config import Config

__all__ = [
    "CONTINUAL",
    "RANDOM_INIT",
    "SweepPoint",
    "continual_init",
    "data_points",
    "group_stats",
    "init_points",
    "point_config",
    "resolution_points",
    "probe_backbone",
    "probe_baselines",
    "claim",
    "row_seeds",
    "run_sweep",
    "sweep_point_backbone",
    "sweep_frames",
    "sweep_verdict",
]

RANDOM_INIT = "random init"
CONTINUAL = "continual (general-domain init)"
#: ``init`` value of a point that continues from the general-domain run's weights (resolved
#: to that run's exported folder by :func:`point_config`).
GENERAL_INIT = "general-domain"


@dataclass(frozen=True)
class SweepPoint:
    """One pretraining run of a sweep.

    Attributes:
        label: its name in tables and figures.
        x: the value plotted on the sweep's axis (input side; pretraining images once known).
        overrides: configuration fields of the run (``image_size``, ``cohorts``,
            ``frontal_only``, ``init``: ``"random"`` or :data:`GENERAL_INIT`).
        early_stop: probe the snapshot of best validation AUPRC, not the last one.
    """

    label: str
    x: float = math.nan
    overrides: Mapping[str, Any] = field(default_factory=dict)
    early_stop: bool = False


def _crop(side: int, cfg: Config, base: int) -> int:
    """``base`` (a crop side at ``cfg.image_size``) scaled to ``side``, in whole patches."""
    p = cfg.patch_size
    return max(p, int(round(base * side / cfg.image_size / p)) * p)


def continual_init(cfg: Config, *, train: bool = True) -> str:
    """The folder of the general-domain run's weights (backbone and DINO head, transformers
    layout) that a continual point starts from; trains the run and exports it when missing.
    The folder sits inside the run's cache folder, whose name carries the run's fingerprint,
    so a continual run's own fingerprint changes when the general-domain run does."""
    from raddino_lib.ssl.export import export_run
    from raddino_lib.ssl.general import general_domain_encoder

    _, run = general_domain_encoder(cfg, train=train)
    out = Path(run) / "export"
    if not (out / "config.json").is_file():
        export_run(run, out, overwrite=True)
    return str(out)


def point_config(cfg: Config, point: SweepPoint, *, train: bool = True) -> Config:
    """``cfg`` as ``point``'s run trains it: ``cfg.ablation_steps`` steps of
    ``cfg.ablation_batch_size`` images (0: ``cfg.batch_size``), a teacher snapshot every
    ``cfg.ablation_snapshot_every`` steps, the point's overrides; an ``image_size`` override
    scales the global and local crop sides with it (whole patches)."""
    over = dict(point.overrides)
    if "image_size" in over:
        side = int(over["image_size"])
        if side % cfg.patch_size:
            raise ValueError(
                f"sweep point {point.label!r}: image_size {side} is not a multiple of the "
                f"patch size {cfg.patch_size}"
            )
        over.setdefault("global_crop_size", _crop(side, cfg, cfg.global_crop_size))
        over.setdefault("local_crop_size", _crop(side, cfg, cfg.local_crop_size))
    if over.get("init") == GENERAL_INIT:
        over["init"] = continual_init(cfg, train=train)
    return replace(
        cfg,
        pretrain_steps=cfg.ablation_steps,
        batch_size=cfg.ablation_batch_size or cfg.batch_size,
        snapshot_every=cfg.ablation_snapshot_every,
        **over,
    )


def reference_point(cfg: Config, label: str = RANDOM_INIT) -> SweepPoint:
    """Random init, the preset's input side, all cohorts and views: the point every sweep
    shares (one cached run)."""
    return SweepPoint(label, float(cfg.image_size), {"init": "random"})


def init_points(cfg: Config) -> list[SweepPoint]:
    """Table 2: random init against continual pretraining from the general-domain weights
    (backbone and DINO head), same data and budget. The frozen general-domain encoder itself
    is probed by the chapter as a baseline, not trained here."""
    return [reference_point(cfg), SweepPoint(CONTINUAL, float(cfg.image_size),
                                             {"init": GENERAL_INIT})]  # fmt: skip


def resolution_points(cfg: Config) -> list[SweepPoint]:
    """Figures 1 and A.1: the recipe pretrained and probed at each side of
    ``cfg.ablation_sizes`` and at the preset's own side (the shared reference run)."""
    pts = []
    for s in sorted({*cfg.ablation_sizes, cfg.image_size}):
        if s == cfg.image_size:
            pts.append(reference_point(cfg, f"{s} px"))
        else:
            pts.append(SweepPoint(f"{s} px", float(s), {"init": "random", "image_size": int(s)}))
    return pts


#: Figure 2's nested pretraining sets, as phantom cohorts: the ICU cohort (MIMIC-CXR) first,
#: then the frontal images of the inpatient and screening cohorts (CheXpert, NIH), then the
#: outpatient cohort's (PadChest, BRAX), then the lateral views of all.
DATA_LADDER: tuple[tuple[str, tuple[str, ...] | None, bool], ...] = (
    ("ICU frontal", ("icu",), True),
    ("+ inpatient, screening frontal", ("icu", "inpatient", "screening"), True),
    ("+ outpatient frontal", None, True),
    ("+ laterals (all)", None, False),
)


def data_points(cfg: Config) -> list[SweepPoint]:
    """Figure 2: the first ``cfg.ablation_data_points`` - 1 rungs of :data:`DATA_LADDER` and
    its last rung (all images: the shared reference run). Every point but the last stops
    early on the validation probe (small sets overfit at a fixed budget)."""
    n = max(2, min(cfg.ablation_data_points, len(DATA_LADDER)))
    rungs = [*DATA_LADDER[: n - 1], DATA_LADDER[-1]]
    pts = []
    for label, cohorts, frontal in rungs[:-1]:
        over: dict[str, Any] = {"init": "random", "frontal_only": frontal}
        if cohorts is not None:
            over["cohorts"] = cohorts
        pts.append(SweepPoint(label, math.nan, over, early_stop=True))
    pts.append(reference_point(cfg, rungs[-1][0]))
    return pts


def _run_seconds(run: Path) -> float:
    from raddino_lib.ssl.train import read_metrics

    return float(sum(r.get("step_s", 0.0) + r.get("data_s", 0.0) for r in read_metrics(run)))


def _n_images(run: Path) -> int:
    import json

    return int(json.loads((Path(run) / "run.json").read_text())["n_images"])


def run_sweep(
    cfg: Config,
    points: Sequence[SweepPoint],
    root: str | Path,
    frontal: pd.DataFrame,
    findings: Sequence[str],
    *,
    train: bool = True,
) -> pd.DataFrame:
    """Pretrain (or load) and probe every point.

    Args:
        root: the dataset folder (pretraining and probe images).
        frontal: the frontal records the probe uses (train / val / test splits).
        findings: probe targets.

    Returns:
        one row per point: ``label``, ``x``, ``image_size``, ``pretrain_images`` (training
        images of the run), ``pretrain_seconds`` (summed step times), ``probed_step``,
        ``macro_mean`` / ``macro_std`` (AUPRC mean over findings; std over seeds of the
        per-seed mean), per finding ``<f>`` and ``<f>_std``, the per-seed macro values
        ``macro_seeds``, ``val_macro`` (the validation AUPRC of the probed snapshot) and
        ``run`` (the run folder name).
    """
    from raddino_lib.ssl.export import pretrained_encoder
    from raddino_lib.ssl.train import load_snapshot

    seeds = list(cfg.probe_seeds)
    rows = []
    for point in tqdm(points, desc="sweep", disable=not cfg.progress):
        t0 = time.time()
        pcfg = point_config(cfg, point, train=train)
        probe = lambda b, s: probe_backbone(b, cfg, root, frontal, findings, s)  # noqa: E731
        if point.early_stop:
            run, step, trained, val_curve = _early_stopped_run(pcfg, probe, seeds[:1], train=train)
            backbone = load_snapshot(run, step)
        else:
            backbone, run = pretrained_encoder(pcfg, train=train)
            step = trained = int(pcfg.pretrain_steps)
            val_curve = {}
        row = {
            "label": point.label, "x": point.x, "image_size": int(pcfg.image_size),
            "pretrain_images": _n_images(run), "pretrain_steps": int(pcfg.pretrain_steps),
            "trained_steps": trained, "val_curve": val_curve,
            "pretrain_seconds": round(_run_seconds(run), 3), "probed_step": step,
            **_probe_row(probe(backbone, seeds), findings, seeds),
            "run": Path(run).name, "seconds": round(time.time() - t0, 1),
        }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_point_backbone(cfg: Config, point: SweepPoint, *, train: bool = True) -> tuple[Any, Path]:
    """The backbone of one sweep point as :func:`run_sweep` probes it (the early-stopped
    snapshot for an ``early_stop`` point, the run's last teacher otherwise) and its run folder.

    Other chapters use it to reuse a sweep's runs as encoders (the report chapter's control is
    the data ladder's first rung; the segmentation chapter's MIM pair is the reference point
    with and without iBOT), so those runs are trained once for the whole book. The probe that
    chooses an early-stopped snapshot is :func:`run_sweep`'s (cached by content, so the
    ablation chapter does not probe the snapshots again).
    """
    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.data.records import load_records
    from raddino_lib.data.schema import VINDR_FINDINGS
    from raddino_lib.data.summary import probe_ready
    from raddino_lib.eval.pretrain_probe import frontal_records
    from raddino_lib.ssl.export import pretrained_encoder
    from raddino_lib.ssl.train import load_snapshot

    pcfg = point_config(cfg, point, train=train)
    if not point.early_stop:
        return pretrained_encoder(pcfg, train=train)
    root = dataset_dir(cfg)
    frontal = frontal_records(load_records(root))
    findings, _ = probe_ready(frontal, VINDR_FINDINGS)
    probe = lambda b, s: probe_backbone(b, cfg, root, frontal, findings, s)  # noqa: E731
    run, step, _, _ = _early_stopped_run(pcfg, probe, list(cfg.probe_seeds)[:1], train=train)
    return load_snapshot(run, step), run


#: Early stopping: training stops once the validation probe has fallen below its best at this
#: many snapshots in a row (the paper stops its small pretraining sets early on a validation
#: probe; it does not say with what patience).
EARLY_STOP_PATIENCE = 2


def _early_stopped_run(
    pcfg: Config, probe: Any, seeds: Sequence[int], *, train: bool = True
) -> tuple[Path, int, int, dict[int, float]]:
    """Pretrain ``pcfg``'s run snapshot by snapshot, probing each on validation (one seed),
    and stop once it has not beaten its best for :data:`EARLY_STOP_PATIENCE` snapshots.

    Resumable and cached like any run: snapshots that exist are not trained again, so a rerun
    only re-reads them. Returns ``(run folder, best step, steps trained, {step: validation
    macro AUPRC})``.
    """
    from raddino_lib.ssl.export import pretrained_run_dir
    from raddino_lib.ssl.train import list_snapshots, load_snapshot, pretrain

    run = pretrained_run_dir(pcfg)
    every = int(pcfg.snapshot_every) or int(pcfg.pretrain_steps)
    best, best_step, worse, curve = -math.inf, every, 0, {}
    for s in range(every, int(pcfg.pretrain_steps) + 1, every):
        if s not in list_snapshots(run) and not (run / "done.json").is_file():
            if not train:
                raise FileNotFoundError(f"{run} has no snapshot at step {s}; call with train=True")
            pretrain(pcfg, run, stop_after=s)
        curve[s] = float(np.nanmean(probe(load_snapshot(run, s), seeds)["val_auprc"]))
        if curve[s] > best:
            best, best_step, worse = curve[s], s, 0
        else:
            worse += 1
            if worse >= EARLY_STOP_PATIENCE:
                break
    return run, best_step, max(curve), curve


def probe_backbone(
    backbone: Any,
    cfg: Config,
    root: str | Path,
    frontal: pd.DataFrame,
    findings: Sequence[str],
    seeds: Sequence[int],
) -> pd.DataFrame:
    """Chapter 3's probe of one frozen backbone at its own input side (its embeddings through
    :func:`~raddino_lib.eval.compare.encoder_features`, cached): every feature kind of
    ``cfg.probe_kinds`` (CLS; CLS + mean patch; those plus the patch grid pooled to
    ``cfg.probe_grid``) is a candidate, the kind is chosen once on validation
    (:func:`~raddino_lib.eval.probe.finding_probe`), then fitted per seed and scored on test.
    The grid kind matters here: after a few hundred steps the pooled patch tokens moved the
    VinDr-style probe (0.383 -> 0.398 in a 600 x 32 pilot) where CLS + mean did not."""
    from raddino_lib.eval.compare import encoder_features
    from raddino_lib.eval.probe import cached_finding_probe
    from raddino_lib.models.registry import load_encoder

    feats = encoder_features(load_encoder(backbone), root, frontal, cfg)  # cached embeddings
    return cached_finding_probe(  # the shared reference run and baselines: probed once
        feats, frontal[list(findings)], frontal["split"], frontal["subject_id"], seeds=seeds
    )


def _probe_row(res: pd.DataFrame, findings: Sequence[str], seeds: Sequence[int]) -> dict:
    """One table row from a :func:`~raddino_lib.eval.probe.finding_probe` result."""
    seed_cols = [f"seed_{s}" for s in seeds]
    per_seed = res.loc[list(findings), seed_cols].mean(axis=0).to_numpy()
    row: dict[str, Any] = {
        "macro_mean": float(res.loc[list(findings), "auprc_mean"].mean()),
        "macro_std": float(np.std(per_seed)),
        "macro_seeds": per_seed.tolist(),
        "val_macro": float(np.nanmean(res["val_auprc"])),
        "kind": res.attrs.get("kind", ""),
    }
    for f in findings:
        row[f] = float(res.loc[f, "auprc_mean"])
        row[f"{f}_std"] = float(res.loc[f, "auprc_std"])
        row[f"{f}_seeds"] = [float(res.loc[f, c]) for c in seed_cols]
    return row


def probe_baselines(
    cfg: Config,
    names: Sequence[str],
    root: str | Path,
    frontal: pd.DataFrame,
    findings: Sequence[str],
    *,
    train: bool = True,
) -> pd.DataFrame:
    """The frozen reference encoders of the sweeps' figures, probed exactly as the sweep points
    (same features, seeds and rows): ``names`` among
    :data:`~raddino_lib.eval.compare.GENERAL` and :data:`~raddino_lib.eval.compare.TEXT_SUP`
    (trained on first use, as everywhere in the book). One row per encoder, the columns of
    :func:`run_sweep`'s probe part plus ``label`` and ``image_size``."""
    from raddino_lib.eval import compare as cmp
    from raddino_lib.ssl.general import general_domain_encoder
    from raddino_lib.textsup.encoder import text_supervised_encoder

    loaders = {
        cmp.GENERAL: lambda: general_domain_encoder(cfg, train=train)[0],
        cmp.TEXT_SUP: lambda: text_supervised_encoder(cfg, train=train)[0],
    }
    unknown = [n for n in names if n not in loaders]
    if unknown:
        raise ValueError(f"probe_baselines: unknown encoder(s) {unknown}; known: {list(loaders)}")
    seeds = list(cfg.probe_seeds)
    rows = []
    for n in names:
        backbone = loaders[n]()
        res = probe_backbone(backbone, cfg, root, frontal, findings, seeds)
        rows.append({"label": n, "image_size": int(backbone.spec.image_size),
                     **_probe_row(res, findings, seeds)})  # fmt: skip
    return pd.DataFrame(rows)


def group_stats(rows: pd.DataFrame, findings: Sequence[str]) -> pd.DataFrame:
    """AUPRC averaged over a group of ``findings`` for each row of a sweep or baseline table:
    ``mean`` (over seeds of the per-seed group mean), ``std`` (over seeds) and ``seeds``
    (the per-seed group means), computed from the per-finding ``<f>_seeds`` columns."""
    missing = [f for f in findings if f"{f}_seeds" not in rows.columns]
    if missing:
        raise KeyError(f"group_stats: findings {missing} were not probed in this table")
    out = []
    for _, r in rows.iterrows():
        per_seed = np.nanmean(np.array([r[f"{f}_seeds"] for f in findings], float), axis=0)
        out.append({"mean": float(per_seed.mean()), "std": float(per_seed.std()),
                    "seeds": per_seed.tolist()})  # fmt: skip
    return pd.DataFrame(out, index=rows.index)


def sweep_frames(
    rows: pd.DataFrame, findings: Sequence[str], names: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(mean, std)`` frames indexed by ``label``: one column per finding (renamed by
    ``names``, e.g. the paper's abbreviations) and ``macro``; for
    :func:`raddino_lib.viz.compare.mean_std_table`."""
    names = dict(names or {})
    idx = rows["label"].tolist()
    mean = pd.DataFrame({names.get(f, f): rows[f].to_numpy() for f in findings}, index=idx)
    std = pd.DataFrame({names.get(f, f): rows[f"{f}_std"].to_numpy() for f in findings}, index=idx)
    mean["macro"] = rows["macro_mean"].to_numpy()
    std["macro"] = rows["macro_std"].to_numpy()
    return mean, std


def row_seeds(rows: pd.DataFrame, label: str, findings: Sequence[str] | None = None) -> np.ndarray:
    """Per-seed AUPRC of the row ``label`` of a sweep or baseline table: its macro over all
    probed findings (``findings=None``) or the mean over ``findings`` (see :func:`group_stats`)."""
    hit = rows[rows["label"] == label]
    if len(hit) != 1:
        labels = list(rows["label"])
        raise KeyError(f"row_seeds: {len(hit)} rows labelled {label!r} (labels: {labels})")
    if findings is None:
        return np.asarray(hit["macro_seeds"].iloc[0], float)
    return np.asarray(group_stats(hit, findings)["seeds"].iloc[0], float)


def claim(text: str, a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """One claims-table row: ``a`` ahead of ``b`` (paired per-seed values; ``b`` may be zeros
    for "``a`` is a gain"): ``diff`` (mean difference x 100) and :func:`sweep_verdict`."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return {"claim": text, "diff": round(100 * float((a - b).mean()), 2),
            "verdict": sweep_verdict(a, b)}  # fmt: skip


def sweep_verdict(a: Sequence[float], b: Sequence[float], *, share: float = 0.8) -> str:
    """Is the sweep point with per-seed values ``a`` ahead of ``b``? The same rule as the
    encoder comparisons (:func:`raddino_lib.eval.compare.paired_verdict`): "held",
    "did not hold" or "inconclusive at this budget" when the seeds' spread swamps it."""
    from raddino_lib.eval.compare import paired_verdict

    v = paired_verdict(np.asarray(a), np.asarray(b), share=share)["verdict"]
    return "inconclusive at this budget" if v == "inconclusive" else v
