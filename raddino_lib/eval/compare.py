"""Frozen-encoder comparisons: the book's encoder line-up, probes on the same splits, verdicts.

* :func:`book_encoders` -- the in-project stand-ins for the paper's rows, each trained
  through the library and cached (trained on first use): raw pixels (the floor), random
  init, the general-domain DINO (DINOv2's stand-in), the text-supervised CLIP-style encoder
  (BioViL-T / BiomedCLIP's stand-in) and RAD-DINO-mini (chapter 2's run); plus any
  ``name=source`` entries of ``cfg.extra_encoders`` (local folders, hub ids, ``timm:``).
* :func:`encoder_features` -- cached embeddings turned into the candidate probe features.
* :func:`compare_encoders` -- :func:`~raddino_lib.eval.probe.finding_probe` for every
  encoder on the same rows, seeds and training subsets -> :class:`Comparison`.
* :func:`paired_verdict` -- "held" / "did not hold" / "inconclusive" for "A beats B", from
  the per-seed differences (the seeds share their training subsets across encoders).
* :func:`accuracy_verdict` -- the same question for two classifiers scored on the same
  images: a paired bootstrap of the accuracy difference that resamples subjects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raddino_lib.config import Config
from raddino_lib.eval.bootstrap import bootstrap_grouped_mean
from raddino_lib.eval.cache import cached_embeddings
from raddino_lib.eval.embed import probe_features
from raddino_lib.eval.probe import cached_finding_probe
from raddino_lib.models.registry import Encoder, load_encoder

__all__ = [
    "ENCODER_ROLES",
    "Comparison",
    "accuracy_verdict",
    "book_encoders",
    "compare_encoders",
    "compare_metadata",
    "encoder_features",
    "Claim",
    "claims_table",
    "paired_verdict",
    "side_by_side_jobs",
    "train_side_by_side_runs",
]

RAD_DINO = "RAD-DINO-mini"
TEXT_SUP = "text-supervised CLIP"
GENERAL = "general-domain DINO"
RANDOM = "random init"
PIXELS = "raw pixels"
#: The ablation sweeps' shared reference run: RAD-DINO-mini's recipe at the sweep budget
#: (``ablation_steps`` x ``ablation_batch_size``; at ``paper`` the main run's budget). The
#: matched partner of NO_MIM and CONTROL, which are trained at that budget too so that the book
#: trains each of them once (they are sweep runs: :func:`raddino_lib.eval.ablation
#: .sweep_point_backbone`); opt-in.
REFERENCE = "RAD-DINO-mini (sweep budget)"
#: The reference run's recipe without the iBOT (masked image modelling) loss, same budget;
#: trained only when asked for (the segmentation chapter's MIM ablation).
NO_MIM = "RAD-DINO-mini (no MIM)"
#: The paper's RAD-DINO-Control (Table 5): the recipe at the sweep budget pretrained on one
#: cohort only: the data-size ladder's first rung (the phantom's ICU cohort, MIMIC-CXR's
#: stand-in, frontal views, stopped early on the validation probe like that rung), or
#: MIMIC-CXR itself in a real multi-dataset folder (:func:`control_cohorts`); opt-in.
CONTROL = "RAD-DINO-mini-control"
CONTROL_COHORTS: tuple[str, ...] = ("icu",)
CONTROL_COHORTS_REAL: tuple[str, ...] = ("mimic_cxr",)
#: No image: zero tokens of RAD-DINO-mini's geometry (the report chapter's prior-only row, what
#: a generator writes from the training reports alone); opt-in like NO_MIM.
NO_IMAGE = "no image (text prior)"
_OPT_IN = (REFERENCE, NO_MIM, CONTROL, NO_IMAGE)
#: Not an encoder: the phantom's true anatomy parameters, the ceiling of what images show.
ORACLE = "phantom anatomy (oracle)"

# name -> (the paper's rows it stands in for, supervision, pretraining data)
ENCODER_ROLES: dict[str, tuple[str, str, str]] = {
    PIXELS: ("the floor (no encoder)", "none", "-"),
    RANDOM: ("an untrained ViT of the same shape", "none", "-"),
    GENERAL: ("DINOv2 (general domain)", "image only (DINOv2 recipe)", "natural-image crops"),
    TEXT_SUP: ("BioViL-T, BiomedCLIP", "image-report contrastive", "phantom train split + reports"),
    RAD_DINO: ("RAD-DINO", "image only (DINOv2 recipe)", "phantom train split, no text"),
}
# Not in the default line-up (see NO_MIM).
OPT_IN_ROLES: dict[str, tuple[str, str, str]] = {
    REFERENCE: (
        "RAD-DINO at the ablations' budget",
        "image only (DINOv2 recipe)",
        "phantom train split, no text",
    ),
    NO_MIM: (
        "RAD-DINO (no MIM)",
        "image only, DINO + KoLeo, no iBOT",
        "phantom train split, no text",
    ),
    CONTROL: (
        "RAD-DINO-Control",
        "image only (DINOv2 recipe)",
        "phantom train split, ICU cohort frontal only (MIMIC-CXR on real data), no text",
    ),
    NO_IMAGE: ("no paper row: the reports' prior alone", "none", "-"),
}


def control_cohorts(cfg: Config) -> tuple[str, ...]:
    """The cohorts the control encoder pretrains on: ``("icu",)`` on the phantom,
    ``("mimic_cxr",)`` (the adapters' cohort name) on real data (``data_dir`` or
    ``dataset``)."""
    return CONTROL_COHORTS_REAL if cfg.data_dir or cfg.dataset else CONTROL_COHORTS


def no_mim_point(cfg: Config) -> Any:
    """The MIM ablation's run: the sweeps' reference point without the iBOT loss."""
    from raddino_lib.eval.ablation import SweepPoint, reference_point

    ref = reference_point(cfg)
    return SweepPoint(NO_MIM, ref.x, {**ref.overrides, "mim": False})


def control_point(cfg: Config) -> Any:
    """The control's run: the data-size ladder's first rung (one cohort, frontal views,
    early-stopped), its cohorts those of :func:`control_cohorts`."""
    from raddino_lib.eval.ablation import SweepPoint, data_points

    first = data_points(cfg)[0]
    return SweepPoint(CONTROL, first.x, {**first.overrides, "cohorts": control_cohorts(cfg)},
                      early_stop=first.early_stop)  # fmt: skip


def _vit(loader: Callable[[], Any], name: str) -> Callable[[], Encoder]:
    return lambda: load_encoder(loader()[0], name=name)


def book_encoders(
    cfg: Config, *, include: Sequence[str] | None = None, train: bool = True
) -> dict[str, Encoder]:
    """The encoders the book compares, in table order (baselines trained when missing).

    Args:
        include: subset of names (default: all of :data:`ENCODER_ROLES` and the extras;
            :data:`REFERENCE`, :data:`NO_MIM`, :data:`CONTROL` and :data:`NO_IMAGE` only when
            named here).
        train: False raises instead of training a missing baseline.
    """
    from raddino_lib.eval.ablation import reference_point, sweep_point_backbone
    from raddino_lib.ssl.export import pretrained_encoder
    from raddino_lib.ssl.general import general_domain_encoder
    from raddino_lib.textsup.encoder import text_supervised_encoder

    loaders: dict[str, Callable[[], Encoder]] = {
        PIXELS: lambda: load_encoder(f"pixels:{cfg.pixel_floor_size}", name=PIXELS),
        RANDOM: lambda: load_encoder("random", cfg=cfg, seed=cfg.seed, name=RANDOM),
        GENERAL: _vit(lambda: general_domain_encoder(cfg, train=train), GENERAL),
        TEXT_SUP: _vit(lambda: text_supervised_encoder(cfg, train=train), TEXT_SUP),
        RAD_DINO: _vit(lambda: pretrained_encoder(cfg, train=train), RAD_DINO),
        REFERENCE: _vit(
            lambda: sweep_point_backbone(cfg, reference_point(cfg), train=train), REFERENCE
        ),  # fmt: skip
        NO_MIM: _vit(lambda: sweep_point_backbone(cfg, no_mim_point(cfg), train=train), NO_MIM),
        CONTROL: _vit(lambda: sweep_point_backbone(cfg, control_point(cfg), train=train), CONTROL),
        NO_IMAGE: lambda: load_encoder(
            f"blank:{cfg.image_size}:{cfg.patch_size}:{cfg.embed_dim}", name=NO_IMAGE
        ),
    }
    for entry in cfg.extra_encoders:
        name, sep, source = entry.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"extra_encoders entry {entry!r} must be 'name=source'")
        loaders[name] = lambda n=name, s=source: load_encoder(s, name=n)
    names = list(include) if include is not None else [n for n in loaders if n not in _OPT_IN]
    unknown = [n for n in names if n not in loaders]
    if unknown:
        raise ValueError(f"unknown encoder(s) {unknown}; known: {list(loaders)}")
    if train:
        train_side_by_side_runs(cfg, names)
    return {n: loaders[n]() for n in names}


def side_by_side_jobs(cfg: Config, names: Sequence[str]) -> list[Any]:
    """The unfinished training runs behind ``names`` that do not depend on one another, as
    :class:`raddino_lib.lanes.Job` (the main run, the general-domain and CLIP runs, the sweeps'
    reference run and its no-MIM twin; not the control, whose early stopping probes it between
    snapshots). Data folders are resolved here, in this process, so that no two side processes
    generate the same dataset."""
    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.eval.ablation import point_config, reference_point
    from raddino_lib.lanes import Job
    from raddino_lib.ssl.export import pretrained_run_dir
    from raddino_lib.ssl.general import (
        general_domain_config,
        general_domain_data,
        general_domain_run_dir,
    )
    from raddino_lib.textsup.encoder import text_supervised_run_dir

    jobs: list[Job] = []
    if GENERAL in names:
        run = general_domain_run_dir(cfg)
        if not (run / "done.json").is_file():
            jobs.append(Job("pretrain", general_domain_config(cfg), run, general_domain_data(cfg)))
    if TEXT_SUP in names:
        jobs.append(Job("clip", cfg, text_supervised_run_dir(cfg)))
    if RAD_DINO in names:
        jobs.append(Job("pretrain", cfg, pretrained_run_dir(cfg)))
    for name, point in ((REFERENCE, reference_point), (NO_MIM, no_mim_point)):
        if name in names:
            pcfg = point_config(cfg, point(cfg))
            jobs.append(Job("pretrain", pcfg, pretrained_run_dir(pcfg)))
    jobs = [j for j in jobs if not j.done]
    if len(jobs) < 2:
        return []
    root = dataset_dir(cfg)
    return [j if j.data_dir is not None else replace(j, data_dir=root) for j in jobs]


def train_side_by_side_runs(cfg: Config, names: Sequence[str]) -> None:
    """Train the unfinished runs of :func:`side_by_side_jobs` side by side when
    :func:`raddino_lib.lanes.lanes_for` allows two or more at a time (``cfg.concurrent_runs``
    on a CPU); otherwise do nothing, and each encoder trains its run when it is loaded."""
    from raddino_lib.lanes import lanes_for, train_side_by_side

    lanes = lanes_for(cfg)
    if lanes < 2:
        return
    jobs = side_by_side_jobs(cfg, names)
    if jobs:
        train_side_by_side(jobs, lanes=lanes, progress=cfg.progress)


def encoder_features(
    encoder: Encoder, root: str | Path, records: pd.DataFrame, cfg: Config
) -> dict[str, np.ndarray]:
    """Candidate probe features ``{kind: [N, D_kind]}`` of ``records`` (cached embeddings).

    Raw pixels have one kind (``"pixels"``, the flattened image); neural encoders get every
    kind of ``cfg.probe_kinds`` (``"cls"``, ``"cls+mean"``, ``"cls+mean+grid"`` with the
    patch grid pooled to ``cfg.probe_grid``), among which the probe chooses on validation.
    """
    from raddino_lib.ssl.train import resolve_device

    device = str(resolve_device(cfg.device))
    grid = cfg.probe_grid if "cls+mean+grid" in cfg.probe_kinds else 0
    if encoder.kind == "pixels":
        grid = 0
    emb = cached_embeddings(
        encoder, root, records, grid=grid, batch_size=cfg.embed_batch_size, device=device,
        precision=cfg.precision, progress=cfg.progress,
    )  # fmt: skip
    if encoder.kind == "pixels":
        return {"pixels": emb["cls"]}
    return {k: probe_features(emb, k) for k in cfg.probe_kinds}


@dataclass
class Comparison:
    """Probe results of several encoders on the same rows, seeds and training subsets.

    Attributes:
        tables: ``{encoder: finding_probe table}``.
        findings: the finding columns, in order.
        seeds: the probe seeds.
    """

    tables: dict[str, pd.DataFrame]
    findings: list[str]
    seeds: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def subset(self, findings: Sequence[str]) -> Comparison:
        """The same probes restricted to some findings (e.g. one paper table's columns)."""
        missing = [f for f in findings if f not in self.findings]
        if missing:
            raise KeyError(f"findings {missing} were not probed; probed: {self.findings}")
        tables = {}
        for n, t in self.tables.items():
            sub = t.loc[list(findings)].copy()
            sub.attrs.update(t.attrs)
            tables[n] = sub
        return Comparison(tables, list(findings), self.seeds, dict(self.meta))

    def kinds(self) -> dict[str, str]:
        """The feature set each encoder's probe chose on validation."""
        return {n: t.attrs.get("kind", "") for n, t in self.tables.items()}

    def summary(self, metric: str = "auprc", stat: str = "mean") -> pd.DataFrame:
        """Encoders x findings of ``<metric>_<stat>``, plus a ``macro`` column (mean over
        findings; for ``stat="std"`` the std over seeds of the per-seed macro average)."""
        col = f"{metric}_{stat}"
        df = pd.DataFrame({n: t[col] for n, t in self.tables.items()}).T[self.findings]
        if stat == "std":
            df["macro"] = [float(np.std(self.seed_macro(n, metric))) for n in df.index]
        else:
            df["macro"] = df[self.findings].mean(axis=1)
        return df

    def seed_values(self, name: str, finding: str, metric: str = "auprc") -> np.ndarray:
        prefix = "seed_" if metric == "auprc" else f"{metric}_seed_"
        t = self.tables[name]
        return np.array([t.loc[finding, f"{prefix}{s}"] for s in self.seeds], dtype=float)

    def seed_macro(self, name: str, metric: str = "auprc", findings: Sequence[str] | None = None):
        """Per-seed mean over ``findings`` (default all) -> ``[n_seeds]``."""
        fs = list(findings) if findings is not None else self.findings
        return np.nanmean(np.stack([self.seed_values(name, f, metric) for f in fs]), axis=0)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``results/<preset>/<chapter>.json``."""
        out: dict[str, Any] = {"findings": self.findings, "seeds": self.seeds, "encoders": {}}
        for n, t in self.tables.items():
            per = {}
            for f in self.findings:
                r = t.loc[f]
                per[f] = {
                    "auprc_mean": r.get("auprc_mean"), "auprc_std": r.get("auprc_std"),
                    "auroc_mean": r.get("auroc_mean"), "auroc_std": r.get("auroc_std"),
                    "auprc_seeds": self.seed_values(n, f).tolist()
                    if "seed_0" in t.columns or f"seed_{self.seeds[0]}" in t.columns else [],
                    "prevalence": r.get("prevalence"), "n_test_pos": r.get("n_test_pos"),
                    "C": r.get("C"),
                }  # fmt: skip
            out["encoders"][n] = {
                "kind": t.attrs.get("kind"),
                "val_by_kind": t.attrs.get("val_by_kind"),
                "macro_auprc_seeds": self.seed_macro(n).tolist(),
                "findings": per,
            }
        out.update(self.meta)
        return out


def compare_encoders(
    features: Mapping[str, Mapping[str, np.ndarray]],
    records: pd.DataFrame,
    findings: Sequence[str],
    *,
    seeds: Sequence[int],
    progress: bool = False,
) -> Comparison:
    """Run the fast probe for each encoder's candidate features on the same rows and seeds."""
    from tqdm.auto import tqdm

    tables = {}
    for name, feats in tqdm(features.items(), desc="probe", disable=not progress, leave=False):
        tables[name] = cached_finding_probe(
            feats, records[list(findings)], records["split"], records["subject_id"], seeds=seeds
        )
    return Comparison(tables, list(findings), list(seeds))


def paired_verdict(a: np.ndarray, b: np.ndarray, *, share: float = 0.8) -> dict[str, Any]:
    """Is ``a`` ahead of ``b``? Paired per-seed values (same training subsets per seed).

    Returns ``{"verdict", "diff_mean", "diff_std", "wins", "n"}``: "held" when the mean
    difference is positive and ``a`` is ahead on at least ``share`` of the seeds, "did not
    hold" when the reverse is true, "inconclusive" otherwise (the seeds' spread swamps it).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if len(d) == 0:
        return {"verdict": "inconclusive", "diff_mean": float("nan"), "diff_std": float("nan"),
                "wins": 0, "n": 0}  # fmt: skip
    wins, n = int(np.sum(d > 0)), len(d)
    mean = float(d.mean())
    if mean > 0 and wins >= share * n:
        verdict = "held"
    elif mean < 0 and (n - wins) >= share * n:
        verdict = "did not hold"
    else:
        verdict = "inconclusive"
    return {"verdict": verdict, "diff_mean": mean, "diff_std": float(d.std()), "wins": wins,
            "n": n}  # fmt: skip


def accuracy_verdict(
    correct_a: Sequence[int] | np.ndarray,
    correct_b: Sequence[int] | np.ndarray,
    subjects: Sequence[object] | np.ndarray,
    *,
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Is classifier A more accurate than B on the same images? A paired bootstrap over
    subjects (all of a drawn subject's images come along, as they share one anatomy).

    Args:
        correct_a, correct_b: ``[N]`` 1 (right), 0 (wrong) or -1 (not scored) per image, as
            :func:`~raddino_lib.eval.probe.metadata_probe`'s ``correct``; an image counts
            where both are scored.
        subjects: ``[N]`` subject ids.

    Returns:
        ``{"verdict", "diff", "lo", "hi", "n", "subjects"}``: ``diff`` the accuracy of A minus
        that of B over the scored images, ``lo`` / ``hi`` its ``level`` interval over
        ``samples`` subject resamples; "held" when ``lo > 0``, "did not hold" when
        ``hi < 0``, "inconclusive" otherwise (nothing scored: NaNs, inconclusive).
    """
    a, b = np.asarray(correct_a, dtype=int), np.asarray(correct_b, dtype=int)
    groups = np.asarray(subjects)
    if not (a.shape == b.shape == groups.shape) or a.ndim != 1:
        raise ValueError(
            f"correct_a {a.shape}, correct_b {b.shape} and subjects {groups.shape} must be "
            "[N] arrays of one length"
        )
    ok = (a >= 0) & (b >= 0)
    _, sid = np.unique(groups[ok], return_inverse=True)
    k = int(sid.max()) + 1 if ok.any() else 0
    if k == 0:
        nan = float("nan")
        return {"verdict": "inconclusive", "diff": nan, "lo": nan, "hi": nan, "n": 0,
                "subjects": 0}  # fmt: skip
    d = np.bincount(sid, weights=(a[ok] - b[ok]).astype(float), minlength=k)  # per subject
    n = np.bincount(sid, minlength=k)
    iv = bootstrap_grouped_mean(d, n, samples=samples, seed=seed, level=level)
    verdict = "held" if iv.lo > 0 else "did not hold" if iv.hi < 0 else "inconclusive"
    return {"verdict": verdict, "diff": iv.point, "lo": iv.lo, "hi": iv.hi, "n": int(n.sum()),
            "subjects": k}  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """The claim "``a`` beats ``b`` on ``findings``" (macro over them, paired by seed)."""

    text: str
    a: str
    b: str
    findings: tuple[str, ...]
    metric: str = "auprc"


def claims_table(comp: Comparison, claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim: the two macro means, the paired difference and the verdict."""
    rows = []
    for c in claims:
        if c.a not in comp.tables or c.b not in comp.tables:
            continue
        va = comp.seed_macro(c.a, c.metric, c.findings)
        vb = comp.seed_macro(c.b, c.metric, c.findings)
        v = paired_verdict(va, vb)
        rows.append(
            {
                "claim": c.text,
                c.metric + " A": float(np.mean(va)),
                c.metric + " B": float(np.mean(vb)),
                "A - B": v["diff_mean"],
                "± (seeds)": v["diff_std"],
                "A ahead on seeds": f"{v['wins']}/{v['n']}",
                "verdict": v["verdict"],
            }
        )
    return pd.DataFrame(rows).set_index("claim") if rows else pd.DataFrame()


def compare_metadata(
    features: Mapping[str, np.ndarray],
    meta: pd.DataFrame,
    subjects: Sequence[object],
    *,
    variables: Sequence[str] = ("sex", "age", "weight", "bmi"),
    folds: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """:func:`~raddino_lib.eval.probe.metadata_probe` (cached) per encoder on the same rows and
    folds (the folds depend only on the labels, the subjects and ``seed``, so they are shared and
    encoders can be compared fold by fold)."""
    from tqdm.auto import tqdm

    from raddino_lib.eval.probe import cached_metadata_probe

    return {
        name: cached_metadata_probe(
            x, meta, subjects, variables=variables, folds=folds, seed=seed
        )  # fmt: skip
        for name, x in tqdm(features.items(), desc="metadata", disable=not progress, leave=False)
    }
