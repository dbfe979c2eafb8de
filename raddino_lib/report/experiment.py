"""Table 5 of the paper, run: report generation from each frozen encoder's patch tokens.

:func:`run_report_generation` takes the encoders, finds the frontal images with a findings
section (:func:`~raddino_lib.report.data.report_records`), builds one tokenizer for all
encoders (a BPE trained on the training reports for a small decoder; the LM folder's own
otherwise), and for each encoder: computes its last-layer patch tokens once (embedding cache),
trains projector + LM on the training split (or loads them from the cache), decodes the test
reports greedily and scores them (:mod:`~raddino_lib.report.metrics`) with medians and 95%
intervals over ``cfg.rg_bootstrap`` resamples of the test reports, the same resamples for
every encoder so that differences between encoders are paired.

With ``cfg.rg_prior_steps > 0`` (small decoders only) the LM is pretrained first, as LLaVA's
is: one decoder learns the training reports alone, with blank image tokens in the prompt
(cached like a generator), and every generator starts from a copy of it with a fresh
projector, then trains ``rg_steps`` steps on its own image tokens. The no-image row is that
prior fine-tuned on blank tokens, so every row has the same training.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from raddino_lib.config import Config
from raddino_lib.eval.bootstrap import Interval, bootstrap_difference_runs
from raddino_lib.report.data import (
    encode_reports,
    patch_tokens,
    pool_tokens,
    report_records,
    select_rows,
)
from raddino_lib.report.generate import generate_reports
from raddino_lib.report.metrics import (
    METRICS,
    RunScores,
    chexbert_positive,
    radgraph_status,
    score_reports,
)
from raddino_lib.report.model import (
    SMALL_LMS,
    Projector,
    ReportGenerator,
    build_small_lm,
    load_lm,
    small_lm_attention,
)
from raddino_lib.report.tokenizer import (
    get_template,
    load_lm_tokenizer,
    prompt_ids,
    train_report_tokenizer,
)
from raddino_lib.report.train import (
    cached_generator,
    fit_generator,
    fit_inputs_dir,
    generator_dir,
    generator_done,
    generator_fingerprint,
    train_fields,
    write_fit_inputs,
)
from raddino_lib.text.labeller import CHEXBERT_14

__all__ = [
    "ReportRun",
    "example_indices",
    "finding_marks",
    "make_tokenizer",
    "prior_steps",
    "run_report_generation",
    "training_steps",
]


@dataclass
class ReportRun:
    """Results of :func:`run_report_generation`.

    Attributes:
        table: one row per encoder: ``encoder``, ``image_size``, ``patch_size``, ``tokens``,
            ``embed_dim``, then ``<metric>`` (median), ``<metric>_lo``, ``<metric>_hi``,
            ``<metric>_point`` for each of :data:`~raddino_lib.report.metrics.METRICS`
            (percent; None for RG_ER when unavailable).
        generated: ``{encoder: [N_test] generated findings}``.
        references: the ``[N_test]`` reference findings sections.
        test_ids: ``image_id`` of the test rows.
        scores: ``{encoder: RunScores}`` (per-report ingredients of every generator run, for
            paired differences).
        info: setup facts (rows, tokenizer, LM, classes averaged, RG_ER status, training).
    """

    table: pd.DataFrame
    generated: dict[str, list[str]]
    references: list[str]
    test_ids: list[str]
    scores: dict[str, RunScores] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def intervals(self, encoder: str) -> dict[str, dict[str, float] | None]:
        """``{metric: {point, median, lo, hi, samples, level} | None}`` of one encoder."""
        row = self.table.set_index("encoder").loc[encoder]
        out: dict[str, dict[str, float] | None] = {}
        for m in METRICS:
            if row[m] is None or (isinstance(row[m], float) and math.isnan(row[m])):
                out[m] = None
            else:
                out[m] = {"median": row[m], "lo": row[f"{m}_lo"], "hi": row[f"{m}_hi"],
                          "point": row[f"{m}_point"]}  # fmt: skip
        return out

    def difference(self, a: str, b: str, metric: str, *, seed: int = 0, samples: int = 500):
        """Bootstrap interval of ``metric(a) - metric(b)``, each averaged over its generator
        runs: the test reports paired (the same resamples), the runs of each drawn on their
        own (None when the metric is unavailable)."""
        sa, sb = self.scores[a].statistics(metric), self.scores[b].statistics(metric)
        if sa is None or sb is None:
            return None
        return bootstrap_difference_runs(sa, sb, len(self.references), samples=samples, seed=seed)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``results/<preset>/07_report_generation.json``."""
        enc = {}
        for name in self.table["encoder"]:
            row = self.table.set_index("encoder").loc[name]
            enc[name] = {
                "image_size": int(row["image_size"]), "patch_size": int(row["patch_size"]),
                "tokens": int(row["tokens"]), "embed_dim": int(row["embed_dim"]),
                "metrics": self.intervals(name),
                "per_class_f1": self.scores[name].per_class() if name in self.scores else {},
            }  # fmt: skip
        return {"encoders": enc, "table": self.table.to_dict(orient="records"), **self.info}


def make_tokenizer(cfg: Config, train_texts: list[str]) -> Any:
    """The BPE of the training reports (small decoders) or the LM folder's tokenizer."""
    if cfg.rg_lm in SMALL_LMS:
        return train_report_tokenizer(train_texts, cfg.rg_vocab_size, cfg.rg_template)
    return load_lm_tokenizer(cfg.rg_lm)


def _tokenizer_id(tok: Any) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else str(getattr(tok, "name_or_path", ""))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# rg_* fields that change only the image-conditioned fine-tuning, not the text prior.
_FINE_TUNE_ONLY = frozenset({"rg_steps", "rg_epochs", "rg_token_pool"})


def prior_steps(cfg: Config) -> int:
    """Steps of the shared text prior (``cfg.rg_prior_steps``; 0: none).

    Raises:
        ValueError: a prior asked for on a pretrained LM folder (it has its own), or negative.
    """
    if cfg.rg_prior_steps < 0:
        raise ValueError(f"rg_prior_steps must be >= 0, got {cfg.rg_prior_steps}")
    if cfg.rg_prior_steps > 0 and cfg.rg_lm not in SMALL_LMS:
        raise ValueError(
            f"rg_prior_steps={cfg.rg_prior_steps} trains a text prior for the small decoders "
            f"({', '.join(SMALL_LMS)}); rg_lm={cfg.rg_lm!r} is a pretrained LM: set "
            "rg_prior_steps=0"
        )
    return cfg.rg_prior_steps


def training_steps(cfg: Config, n_train: int) -> int:
    """``cfg.rg_steps``, raised to ``cfg.rg_epochs`` epochs over ``n_train`` reports."""
    steps = cfg.rg_steps
    if cfg.rg_epochs > 0:
        steps = max(steps, -(-cfg.rg_epochs * n_train // cfg.rg_batch_size))
    if steps <= 0:
        raise ValueError("rg_steps and rg_epochs are both 0: the report generator has no steps")
    return steps


def example_indices(true: np.ndarray, k: int) -> list[int]:
    """``k`` test rows to show: the first ``k - 1`` with an abnormal CheXbert class (most
    classes first) and the first normal one."""
    nf = CHEXBERT_14.index("No Finding")
    abnormal = np.delete(true, nf, axis=1).sum(1)
    order = [int(i) for i in np.argsort(-abnormal, kind="stable") if abnormal[i] > 0]
    normal = [int(i) for i in np.flatnonzero(abnormal == 0)]
    picked = order[: max(k - 1, 0)] + normal[:1]
    rest = [i for i in range(len(true)) if i not in picked]
    return sorted((picked + rest)[:k])


def finding_marks(ref_pos: np.ndarray, gen_pos: np.ndarray) -> str:
    """The labeller's positives of a generated report against its reference: ``✓ class``
    (both), ``+ class`` (generated only), ``− class`` (missed); "" when neither has any."""
    marks = []
    for c, r, g in zip(CHEXBERT_14, ref_pos, gen_pos, strict=True):
        if r and g:
            marks.append(f"✓ {c}")
        elif g:
            marks.append(f"+ {c}")
        elif r:
            marks.append(f"− {c}")
    return ", ".join(marks)


def _device(cfg: Config) -> tuple[torch.device, str]:
    from raddino_lib.ssl.train import resolve_device, resolve_precision

    dev = resolve_device(cfg.device)
    return dev, resolve_precision(cfg.precision, dev)


def _train_side_by_side(
    cfg: Config,
    items: list[tuple[str, Callable[[], dict[str, Any]]]],
    seqs: list,
    n_train: int,
    dev: torch.device,
) -> set[str]:
    """Train the generators that are not cached yet side by side, one process each
    (:mod:`raddino_lib.lanes`), when :func:`~raddino_lib.lanes.lanes_for` allows two or more
    at a time and two or more are missing; returns their labels (empty: none trained here, the
    caller trains them one by one). ``items`` are ``(label, plan)`` with ``plan()`` giving one
    generator's plan (``folder``, ``key``, ``build``, ``feats``, ``fit_kwargs``). Each missing
    generator's untrained model (the text prior's copy with a fresh projector), training
    tokens and fit arguments are written next to its cache folder first
    (:func:`~raddino_lib.report.train.write_fit_inputs`), so a side process trains exactly the
    model the notebook would have.

    On this book's 2-core CPU a report-generator step (batch 16, a 4-layer decoder of width
    128) keeps two threads far from busy, so two generators on one thread each finish sooner
    than one after the other on two.
    """
    from raddino_lib.lanes import Job, lanes_for, train_side_by_side

    lanes = lanes_for(cfg)
    if lanes < 2:
        return set()
    attn = small_lm_attention(dev) if cfg.rg_lm in SMALL_LMS else None
    jobs: dict[str, Job] = {}
    for label, plan in items:
        p = plan()
        if generator_done(p["folder"], p["key"]):
            continue
        kw = p["fit_kwargs"]
        write_fit_inputs(p["folder"], p["key"], p["build"](), p["feats"][:n_train], seqs, kw,
                         attn_implementation=attn)  # fmt: skip
        jobs[label] = Job("report", cfg, p["folder"], n_steps=kw["steps"])
    if len(jobs) < 2:  # nothing to pair: the caller trains it here
        for job in jobs.values():
            shutil.rmtree(fit_inputs_dir(job.run_dir), ignore_errors=True)
        return set()
    train_side_by_side(list(jobs.values()), lanes=lanes, progress=cfg.progress)
    return set(jobs)


def run_label(name: str, run: int) -> str:
    """The label of an encoder's generator run (``name`` for the first run)."""
    return name if run == 0 else f"{name} (run {run + 1})"


def run_report_generation(
    cfg: Config,
    encoders: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    records: pd.DataFrame | None = None,
) -> ReportRun:
    """Train, decode and score a report generator on each encoder's frozen patch tokens.

    Args:
        encoders: ``{name: Encoder}`` in table order.
        root: dataset folder (default: :func:`~raddino_lib.data.datasets.dataset_dir`).
        records: its records (default: ``root/records.csv``).

    Raises:
        ValueError: no training or test reports, or an unknown template.
    """
    from raddino_lib.data.datasets import dataset_dir
    from raddino_lib.data.records import load_records
    from raddino_lib.eval.cache import CACHE_VERSION as EMBEDDING_VERSION
    from raddino_lib.eval.cache import dataset_key

    root = Path(root) if root is not None else dataset_dir(cfg)
    rec = report_records(records if records is not None else load_records(root))
    train = select_rows(rec, "train", cfg.rg_max_train, cfg.seed)
    test = select_rows(rec, "test", cfg.rg_max_test, cfg.seed)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"report generation needs frontal images with a findings section in the train and "
            f"test splits; found {len(train)} and {len(test)}"
        )
    if cfg.rg_runs < 1:
        raise ValueError(
            f"rg_runs must be at least 1 (generator runs per encoder), got {cfg.rg_runs}"
        )
    template = get_template(cfg.rg_template)
    tok = make_tokenizer(cfg, train["findings"].tolist())
    prompt = prompt_ids(tok, template)
    seqs = encode_reports(tok, train["findings"].tolist(), template, cfg.rg_max_report_tokens)
    refs = test["findings"].tolist()
    true = chexbert_positive(refs)
    classes = [int(i) for i in np.flatnonzero(true.any(0))]
    rg_ok, rg_why = radgraph_status()
    dev, prec = _device(cfg)
    steps = training_steps(cfg, len(train))
    rows = pd.concat([train, test])
    rows_key = dataset_key(root, train)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    lm_dtype = torch.bfloat16 if prec == "bf16" and dev.type == "cuda" else None

    def new_lm(max_pos: int) -> torch.nn.Module:
        if cfg.rg_lm in SMALL_LMS:
            return build_small_lm(
                cfg.rg_lm, len(tok), width=cfg.rg_width, depth=cfg.rg_depth,
                heads=cfg.rg_heads, max_positions=max_pos, dropout=cfg.rg_dropout,
                bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=pad_id,
                attn_implementation=small_lm_attention(dev),
            )  # fmt: skip
        return load_lm(cfg.rg_lm, dtype=lm_dtype)

    def _fit_kwargs(n_steps: int, name: str, seed: int) -> dict[str, Any]:
        """:func:`fit_generator`'s arguments besides model, data and resuming (JSON values)."""
        return dict(
            pad_id=int(pad_id), steps=int(n_steps), batch_size=cfg.rg_batch_size, lr=cfg.rg_lr,
            warmup_ratio=cfg.rg_warmup, weight_decay=cfg.rg_weight_decay,
            micro_batch=cfg.rg_micro_batch, seed=seed, device=str(dev), precision=prec,
            grad_ckpt=cfg.rg_grad_ckpt, checkpoint_every=cfg.rg_checkpoint_every, desc=name,
        )  # fmt: skip

    def _fitter(f_train: torch.Tensor, key: dict, kwargs: dict[str, Any]):
        def fit(model: ReportGenerator, resume: Path):
            return fit_generator(
                model, f_train, seqs, resume_path=resume, resume_key=key,
                progress=cfg.progress, **kwargs,
            )  # fmt: skip

        return fit

    base_key = {
        "precision": prec, "rows": rows_key, "n_train": len(train),
        "tokenizer": _tokenizer_id(tok), "lm_version": 2,  # 2: no attention-probability dropout
    }  # fmt: skip
    use_prior = prior_steps(cfg) > 0
    priors: dict[int, dict[str, Any]] = {}  # n_tok -> the text prior's slot (lazily trained)
    prior_time = [0.0]  # seconds spent training or loading priors

    def _prior_slot(n_tok: int, max_pos: int) -> dict[str, Any]:
        """The text prior of ``n_tok`` image tokens: its key, folder and fingerprint now; the
        model only when a generator has to be trained from it (:func:`_prior_lm`)."""
        if n_tok not in priors:
            fields = {k: v for k, v in train_fields(cfg).items() if k not in _FINE_TUNE_ONLY}
            pkey = {**base_key, "train": fields, "stage": "text prior", "tokens": n_tok,
                    "max_positions": max_pos, "steps": prior_steps(cfg)}  # fmt: skip
            folder = generator_dir(cfg.preset, "text prior", pkey)
            priors[n_tok] = {
                "key": pkey, "folder": folder, "max_pos": max_pos, "model": None,
                "fingerprint": generator_fingerprint(pkey),
                "summary": {"steps": prior_steps(cfg), "tokens": n_tok, "folder": str(folder),
                            "cached": None, "train_seconds": None, "final_loss": None},
            }  # fmt: skip
        return priors[n_tok]

    def _prior_lm(slot: dict[str, Any]) -> torch.nn.Module:
        """The prior's LM, trained or loaded on first use: the LM trained on the training
        reports alone with ``n_tok`` blank (zero) image tokens in the prompt, so that its
        positions match the generators' layout. Always float32 (it is trained further)."""
        if slot["model"] is None:
            t = time.perf_counter()

            def build() -> ReportGenerator:
                torch.manual_seed(cfg.seed)
                lm = new_lm(slot["max_pos"])
                d_lm = int(lm.get_input_embeddings().embedding_dim)
                return ReportGenerator(Projector(1, d_lm), lm)

            n_tok = slot["summary"]["tokens"]
            blank = torch.zeros(len(train), n_tok, 1, dtype=torch.float16)  # [N, T, 1]
            fit = _fitter(blank, slot["key"],
                          _fit_kwargs(prior_steps(cfg), "text prior", cfg.seed))  # fmt: skip
            model, info = cached_generator(slot["folder"], slot["key"], build, fit, dtype=None)
            slot["model"] = model.to("cpu")
            fit_info = info.get("fit", {})
            slot["summary"].update(
                cached=info.get("cached", False), train_seconds=fit_info.get("seconds"),
                final_loss=(fit_info.get("losses") or [None])[-1],
            )  # fmt: skip
            prior_time[0] += time.perf_counter() - t
        return slot["model"].lm

    last_tokens: dict[str, Any] = {}  # the last encoder's pooled tokens (runs come in a row)

    def _tokens(name: str, enc: Any) -> torch.Tensor:
        """``[N_train + N_test, T / pool^2, D]`` float16 pooled patch tokens of one encoder,
        read once for all its runs."""
        if last_tokens.get("name") != name:
            last_tokens.clear()
            feats = patch_tokens(enc, root, rows, cfg)  # [N, T, D]
            last_tokens.update(name=name, feats=pool_tokens(feats, cfg.rg_token_pool))
        return last_tokens["feats"]

    def _plan(name: str, enc: Any, run: int = 0) -> dict[str, Any]:
        """One encoder's generator of run ``run`` (seed ``cfg.seed + run``): its pooled patch
        tokens, key, cache folder, builder and fit arguments."""
        feats = _tokens(name, enc)
        n_tok, d_vis = int(feats.shape[1]), int(feats.shape[2])
        prefix = len(prompt) - 1 + n_tok
        max_pos = prefix + cfg.rg_max_report_tokens + 1
        key = {
            **base_key, "train": train_fields(cfg), "encoder": enc.identity(), "tokens": n_tok,
            "d_vision": d_vis, "steps": steps, "max_positions": max_pos,
            "embedding_version": EMBEDDING_VERSION,  # its image tokens come from embed_array
        }  # fmt: skip
        if run:  # the first run keeps the key it had before runs existed
            key["run"] = run
        seed = cfg.seed + run

        prior = _prior_slot(n_tok, max_pos) if use_prior else None
        if prior is not None:
            key["prior"] = prior["fingerprint"]

        def build() -> ReportGenerator:
            if prior is not None:  # a copy of the text prior's LM (trained on first use)
                lm = copy.deepcopy(_prior_lm(prior))
                torch.manual_seed(seed)  # the projector's init, as without a prior
            else:
                torch.manual_seed(seed)
                lm = new_lm(max_pos)
            d_lm = int(lm.get_input_embeddings().embedding_dim)
            return ReportGenerator(Projector(d_vis, d_lm), lm)

        return {
            "feats": feats, "n_tok": n_tok, "d_vis": d_vis, "prefix": prefix,
            "max_pos": max_pos, "key": key, "prior": prior, "build": build,
            "folder": generator_dir(cfg.preset, name, key),
            "fit_kwargs": _fit_kwargs(steps, run_label(name, run), seed),
        }  # fmt: skip

    runs = range(cfg.rg_runs)
    items = [(run_label(n, r), lambda n=n, e=e, r=r: _plan(n, e, r))
             for n, e in encoders.items() for r in runs]  # fmt: skip
    side = _train_side_by_side(cfg, items, seqs, len(train), dev)

    table, generated, scores, training = [], {}, {}, {}
    for name, enc in tqdm(encoders.items(), desc="report generation", disable=not cfg.progress):
        t0, p0 = time.perf_counter(), prior_time[0]
        desc = enc.describe()
        run_scores, run_info = [], []
        for r in runs:
            plan = _plan(name, enc, r)
            feats, n_tok, d_vis = plan["feats"], plan["n_tok"], plan["d_vis"]
            prefix, max_pos, key = plan["prefix"], plan["max_pos"], plan["key"]
            prior, folder = plan["prior"], plan["folder"]
            f_train, f_test = feats[: len(train)], feats[len(train) :]
            fit = _fitter(f_train, key, plan["fit_kwargs"])
            model, info = cached_generator(folder, key, plan["build"], fit, dtype=lm_dtype)
            label = run_label(name, r)
            if label in side:  # trained just now, in a side process
                info = {**info, "cached": False}
            max_new = cfg.rg_max_new_tokens
            if cfg.rg_lm == "gpt2":  # learned positions: never decode past the table
                max_new = min(max_new, max_pos - prefix)
            gen = generate_reports(
                model, f_test, tok, prompt, max_new_tokens=max_new,
                batch_size=cfg.rg_gen_batch_size, device=dev, progress=cfg.progress,
                desc=f"generate {label}",
            )  # fmt: skip
            model.to("cpu")
            run_scores.append(score_reports(gen, refs, true=true, classes=classes, rg_er=rg_ok))
            if r == 0:
                generated[name] = gen
            fit_info = info.get("fit", {})
            run_info.append({
                "run": r, "seed": plan["fit_kwargs"]["seed"], "cached": info.get("cached", False),
                "steps": fit_info.get("steps"), "from_prior": prior is not None,
                "side_process": label in side, "train_seconds": fit_info.get("seconds"),
                "tokens_per_s": fit_info.get("tokens_per_s"),
                "losses": fit_info.get("losses", []), "folder": str(folder),
                "lm_params_m": round(sum(p.numel() for p in model.lm.parameters()) / 1e6, 3),
                "projector_params_m": round(
                    sum(p.numel() for p in model.projector.parameters()) / 1e6, 3),
                "max_new_tokens": max_new,
                "mean_generated_words": float(np.mean([len(g.split()) for g in gen])),
            })  # fmt: skip
            del model, feats
        last_tokens.clear()
        sc = RunScores(run_scores)
        iv: dict[str, Interval | None] = sc.intervals(samples=cfg.rg_bootstrap, seed=cfg.seed)
        row: dict[str, Any] = {
            "encoder": name, "image_size": desc["image_size"], "patch_size": desc["patch_size"],
            "tokens": n_tok, "embed_dim": d_vis,
        }  # fmt: skip
        for m, v in iv.items():
            row[m] = v.median if v is not None else None
            row[f"{m}_lo"] = v.lo if v is not None else None
            row[f"{m}_hi"] = v.hi if v is not None else None
            row[f"{m}_point"] = v.point if v is not None else None
        table.append(row)
        scores[name] = sc
        # the first run's facts at the top level (as before runs existed), every run's below;
        # seconds: the encoder's own time (a text prior trained on the way is in
        # setup.text_prior), all runs
        training[name] = {
            **{k: v for k, v in run_info[0].items() if k not in ("run", "seed")},
            "seconds": round(time.perf_counter() - t0 - (prior_time[0] - p0), 2),
            "runs": run_info,
            "run_values": {m: sc.values(m) for m in METRICS if sc.values(m) is not None},
        }  # fmt: skip
    info = {
        "setup": {
            "n_train": len(train), "n_test": len(test), "template": template.name,
            "prompt_tokens": len(prompt) - 1, "lm": cfg.rg_lm, "vocab": len(tok),
            "steps": steps, "batch_size": cfg.rg_batch_size, "device": str(dev),
            "prior_steps": prior_steps(cfg),
            "text_prior": {str(k): v["summary"] for k, v in priors.items()},
            "precision": prec, "bootstrap": cfg.rg_bootstrap, "seed": cfg.seed,
            "runs": cfg.rg_runs,
            "mean_reference_words": float(np.mean([len(r.split()) for r in refs])),
        },
        "macro_f1_classes": [CHEXBERT_14[i] for i in classes],
        "reference_positives": dict(zip(CHEXBERT_14, true.sum(0).tolist(), strict=True)),
        "rg_er": {"available": rg_ok, "why": rg_why},
        "training": training,
        "scale": "percent",
        "bleu": "sacrebleu corpus BLEU-4, 13a tokenisation, lower-cased, exp smoothing",
        "rouge": "rouge-score rougeL F-measure per report (lower case, no stemming), mean",
    }  # fmt: skip
    return ReportRun(
        table=pd.DataFrame(table),
        generated=generated,
        references=refs,
        test_ids=test["image_id"].astype(str).tolist() if "image_id" in test else [],
        scores=scores,
        info=info,
    )
