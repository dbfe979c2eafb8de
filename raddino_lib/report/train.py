"""Training the projector and the LM (the encoder stays frozen), and the checkpoint cache.

:func:`fit_generator` is LLaVA-1.5's fine-tuning recipe: AdamW, linear warm-up over a fraction
of the steps then cosine decay to 0, gradient clipping at 1, bf16 autocast where the device
supports it, optional gradient checkpointing and gradient accumulation (``micro_batch``). The
batch order depends only on the seed and the step (each epoch a fresh permutation), and every
step reseeds dropout from (seed, step), so a run resumed from its periodic checkpoint
(``resume_path``, written atomically every ``checkpoint_every`` steps) ends with the same
weights as an uninterrupted one.

:func:`cached_generator` keeps the trained projector + LM under
``.cache/report/<preset>_<encoder>_<fingerprint>``, the fingerprint covering every ``rg_*``
field that changes training (:func:`train_fields`), the seed, the precision, the encoder's
weights, the training rows and the tokenizer. The folder is written under a temporary name and
renamed into place, so a reader never sees a half-written checkpoint.

:func:`write_fit_inputs` and :func:`fit_from_inputs` split a :func:`cached_generator` training
in two, so that another process can do the training (:mod:`raddino_lib.lanes`, kind
``"report"``): the first writes the untrained model, its features and token sequences and the
fit's arguments next to the generator's folder; the second trains from them and saves the
generator where :func:`cached_generator` then finds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raddino_lib.atomic import atomic_dir, atomic_save, atomic_write_text
from raddino_lib.config import Config
from raddino_lib.paths import cache_dir
from raddino_lib.report.data import TokenSeq, collate
from raddino_lib.report.model import Projector, ReportGenerator

__all__ = [
    "REPORT_VERSION",
    "FitResult",
    "batch_indices",
    "cached_generator",
    "fit_from_inputs",
    "fit_generator",
    "fit_inputs_dir",
    "generator_dir",
    "generator_done",
    "generator_fingerprint",
    "load_generator",
    "lr_at",
    "save_generator",
    "train_fields",
    "write_fit_inputs",
]

# Bump when a change here changes what training computes (invalidates cached generators).
REPORT_VERSION = "1"
# rg_* fields that only change evaluation, never the trained weights.
_EVAL_ONLY_RG = frozenset(
    {"rg_max_test", "rg_bootstrap", "rg_gen_batch_size", "rg_examples", "rg_max_new_tokens",
     "rg_checkpoint_every", "rg_runs"}  # rg_runs: each run's key carries its own "run"
)  # fmt: skip


def train_fields(cfg: Config) -> dict[str, Any]:
    """The config values a trained generator depends on: ``rg_*`` training fields and the
    seed (precision, encoder, rows and tokenizer are added by the caller)."""
    d = cfg.to_dict()
    out = {k: d[k] for k in sorted(d) if k.startswith("rg_") and k not in _EVAL_ONLY_RG}
    out["seed"] = cfg.seed
    return out


@dataclass
class FitResult:
    """What :func:`fit_generator` did: ``losses`` holds one mean loss per step (all steps,
    also those before a resume); ``resumed_from`` the step it started at."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    tokens_per_s: float = 0.0
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, steps: int, base_lr: float, warmup_ratio: float) -> float:
    """Linear warm-up over ``ceil(warmup_ratio * steps)`` steps, then cosine to 0."""
    warm = math.ceil(warmup_ratio * steps)
    if step < warm:
        return base_lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Rows of batch ``step``: a stream of per-epoch permutations (epoch ``e`` shuffled with
    ``(seed, e)``) cut into ``batch``-sized pieces; depends only on its arguments."""
    if n < 1 or batch < 1:
        raise ValueError(f"need n >= 1 and batch >= 1, got n={n}, batch={batch}")
    start, stop = step * batch, (step + 1) * batch
    out = []
    for e in range(start // n, (stop - 1) // n + 1):
        perm = np.random.default_rng([seed, e]).permutation(n)
        lo, hi = max(start - e * n, 0), min(stop - e * n, n)
        out.append(perm[lo:hi])
    return np.concatenate(out)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def fit_generator(
    model: ReportGenerator,
    features: torch.Tensor,
    seqs: Sequence[TokenSeq],
    *,
    pad_id: int,
    steps: int,
    batch_size: int,
    lr: float,
    warmup_ratio: float = 0.03,
    weight_decay: float = 0.0,
    micro_batch: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    grad_ckpt: bool = False,
    resume_path: Path | None = None,
    resume_key: dict[str, Any] | None = None,
    checkpoint_every: int = 0,
    progress: bool = False,
    desc: str = "report generator",
) -> FitResult:
    """Train ``model`` (projector + LM) on ``features [N, T, D]`` and ``seqs`` (one per row).

    Args:
        micro_batch: rows per forward pass (0: the whole batch); the loss is the mean over all
            report tokens of the batch either way.
        resume_path: where the periodic checkpoint lives (with ``checkpoint_every > 0``); a
            checkpoint there whose ``resume_key`` matches is resumed from.

    Returns:
        :class:`FitResult`; ``model`` is left trained, in eval mode, on ``device``.
    """
    from tqdm.auto import tqdm

    if len(features) != len(seqs):
        raise ValueError(f"{len(features)} feature rows but {len(seqs)} token sequences")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    device = torch.device(device)
    model.to(device)
    if grad_ckpt and hasattr(model.lm, "gradient_checkpointing_enable"):
        model.lm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=lr)
    losses: list[float] = []
    start = 0
    if resume_path is not None and checkpoint_every > 0 and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("key") == resume_key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            start, losses = int(state["step"]), list(state["losses"])
    mb = micro_batch if 0 < micro_batch < batch_size else batch_size
    t0, n_tok = time.perf_counter(), 0
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        torch.manual_seed(seed * 1_000_003 + step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup_ratio)
        idx = batch_indices(len(seqs), batch_size, step, seed)
        batch = collate([seqs[i] for i in idx], pad_id)
        total = int((batch["labels"] != -100).sum())
        model.train()
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for j in range(0, len(idx), mb):
            sl = slice(j, j + mb)
            labels = batch["labels"][sl]
            share = int((labels != -100).sum()) / max(total, 1)
            with _autocast(device, precision):
                out = model(
                    features[idx[sl]].to(device).float(), batch["input_ids"][sl].to(device),
                    batch["attention_mask"][sl].to(device), labels.to(device),
                )  # fmt: skip
            loss = out.loss.float() * share
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(step_loss)
        n_tok += int(batch["attention_mask"].sum()) + len(idx) * (features.shape[1] - 1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        done = step + 1
        if resume_path is not None and checkpoint_every > 0 and done % checkpoint_every == 0:
            if done < steps:
                state = {"key": resume_key, "step": done, "losses": losses,
                         "model": model.state_dict(), "optim": opt.state_dict()}  # fmt: skip
                atomic_save(resume_path, lambda t, s=state: torch.save(s, t), suffix=".pt")
    if grad_ckpt and hasattr(model.lm, "gradient_checkpointing_disable"):
        model.lm.gradient_checkpointing_disable()
    model.eval()
    secs = time.perf_counter() - t0
    return FitResult(
        steps=steps, seconds=round(secs, 2), losses=[round(x, 5) for x in losses],
        tokens_per_s=round(n_tok / secs, 1) if secs > 0 else 0.0, resumed_from=start,
    )  # fmt: skip


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "encoder"


def generator_fingerprint(key: dict[str, Any]) -> str:
    """12 hex digits of a hash of ``key`` and :data:`REPORT_VERSION`: the last part of a
    generator's cache folder name (:func:`generator_dir`)."""
    blob = json.dumps({"version": REPORT_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def generator_dir(preset: str, encoder: str, key: dict[str, Any]) -> Path:
    """``.cache/report/<preset>_<encoder slug>_<fingerprint of key>`` (may not exist)."""
    return cache_dir("report", f"{preset}_{_slug(encoder)}_{generator_fingerprint(key)}")


def save_generator(model: ReportGenerator, folder: Path, info: dict[str, Any]) -> Path:
    """Write ``model`` (``lm/`` via ``save_pretrained``, ``projector.safetensors``) and
    ``run.json`` (``info``) to ``folder`` atomically: a temporary sibling renamed into place."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        model.lm.save_pretrained(str(tmp / "lm"))
        proj = {k: v.detach().cpu().contiguous() for k, v in model.projector.state_dict().items()}
        save_file(proj, str(tmp / "projector.safetensors"))
        meta = {"d_vision": model.projector.d_vision, "d_lm": model.projector.d_lm, **info}
        atomic_write_text(tmp / "run.json", json.dumps(meta, indent=1, default=str))
    return Path(folder)


def load_generator(
    folder: Path,
    key: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> tuple[ReportGenerator, dict[str, Any]] | None:
    """The generator saved in ``folder`` and its ``run.json``; None when the folder is missing,
    incomplete or holds another ``key`` (then it is retrained, with a warning if it existed).
    ``attn_implementation``: the LM's attention kernel (None: transformers' default)."""
    from safetensors.torch import load_file

    from raddino_lib.report.model import load_lm

    run = Path(folder) / "run.json"
    if not run.is_file():
        return None
    try:
        meta = json.loads(run.read_text())
        if key is not None and not _same_key(meta, key):
            raise ValueError("its key differs from the requested one")
        proj = Projector(int(meta["d_vision"]), int(meta["d_lm"]))
        proj.load_state_dict(load_file(str(Path(folder) / "projector.safetensors")))
        lm = load_lm(Path(folder) / "lm", dtype=dtype, attn_implementation=attn_implementation)
    except Exception as exc:
        warnings.warn(f"report generator cache {folder}: {exc}; retraining", stacklevel=2)
        return None
    return ReportGenerator(proj, lm).eval(), meta


def cached_generator(
    folder: Path,
    key: dict[str, Any],
    build: Callable[[], ReportGenerator],
    train: Callable[[ReportGenerator, Path], FitResult],
    *,
    dtype: torch.dtype | None = None,
) -> tuple[ReportGenerator, dict[str, Any]]:
    """Load the generator of ``key`` from ``folder``, or ``build()`` it, ``train(model,
    resume_path)`` it and save it. Returns the model (eval mode) and its ``run.json`` dict
    (``key``, ``fit``: :class:`FitResult` as a dict, ``cached``: whether it was loaded)."""
    got = load_generator(folder, key, dtype=dtype)
    if got is not None:
        model, meta = got
        return model, {**meta, "cached": True}
    model = build()
    resume = folder.with_name(folder.name + ".resume.pt")
    fit = train(model, resume)
    info = {"key": key, "fit": fit.to_dict()}
    save_generator(model, folder, info)
    resume.unlink(missing_ok=True)
    return model, {**info, "cached": False}


def generator_done(folder: Path, key: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a saved generator of ``key`` (its ``run.json`` says so; the
    weights are not loaded)."""
    try:
        meta = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return _same_key(meta, key)


def _same_key(meta: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether a ``run.json``'s key is ``key`` (compared as JSON, as it was written)."""
    return meta.get("key") == json.loads(json.dumps(key, default=str))


def fit_inputs_dir(folder: Path) -> Path:
    """Where :func:`write_fit_inputs` puts a generator's training inputs: ``<folder>.inputs``."""
    return Path(folder).with_name(Path(folder).name + ".inputs")


def write_fit_inputs(
    folder: Path,
    key: dict[str, Any],
    model: ReportGenerator,
    features: torch.Tensor,
    seqs: Sequence[TokenSeq],
    fit_kwargs: dict[str, Any],
    *,
    attn_implementation: str | None = None,
) -> Path:
    """Write what :func:`fit_from_inputs` needs to train ``model`` as
    ``fit_generator(model, features, seqs, **fit_kwargs)`` would here, and save it in
    ``folder`` under ``key``: the untrained model (``init/``), ``features [N, T, D]``
    (safetensors, dtype kept), the token sequences and the arguments (``fit.json``).

    Written under a temporary name and renamed into place (an earlier set is replaced).
    ``fit_kwargs`` must be JSON values (``device`` as a string); ``resume_path``,
    ``resume_key`` and ``progress`` are set by :func:`fit_from_inputs`.
    """
    from safetensors.torch import save_file

    bad = {"resume_path", "resume_key", "progress"} & set(fit_kwargs)
    if bad:
        raise ValueError(f"fit_kwargs must not hold {sorted(bad)} (fit_from_inputs sets them)")
    if len(features) != len(seqs):
        raise ValueError(f"{len(features)} feature rows but {len(seqs)} token sequences")
    inputs = fit_inputs_dir(folder)
    with atomic_dir(inputs) as tmp:
        save_generator(model, tmp / "init", {"key": key, "stage": "untrained"})
        save_file({"features": features.detach().cpu().contiguous()},
                  str(tmp / "features.safetensors"))  # fmt: skip
        spec = {"key": key, "fit": fit_kwargs, "attn_implementation": attn_implementation,
                "seqs": [[list(map(int, i)), list(map(int, lab))] for i, lab in seqs]}  # fmt: skip
        atomic_write_text(tmp / "fit.json", json.dumps(spec, default=str))
    return inputs


def fit_from_inputs(folder: Path, *, progress: bool = False) -> FitResult:
    """Train the generator whose inputs :func:`write_fit_inputs` wrote for ``folder``, save it
    there (``run.json``: its key, the fit, ``trained_in: "side process"``) and remove the
    inputs. Resumes from ``<folder>.resume.pt`` when the fit checkpoints.

    Raises:
        FileNotFoundError: no inputs next to ``folder``.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    inputs = fit_inputs_dir(folder)
    if not (inputs / "fit.json").is_file():
        raise FileNotFoundError(
            f"{inputs / 'fit.json'} is missing: write_fit_inputs writes a generator's training "
            "inputs before a side process can train it"
        )
    spec = json.loads((inputs / "fit.json").read_text())
    got = load_generator(inputs / "init", attn_implementation=spec["attn_implementation"])
    if got is None:
        raise FileNotFoundError(f"{inputs / 'init'} holds no readable untrained generator")
    model = got[0]
    features = load_file(str(inputs / "features.safetensors"))["features"]
    seqs = [(list(i), list(lab)) for i, lab in spec["seqs"]]
    resume = folder.with_name(folder.name + ".resume.pt")
    fit = fit_generator(
        model, features, seqs, resume_path=resume, resume_key=spec["key"], progress=progress,
        **spec["fit"],
    )  # fmt: skip
    save_generator(model, folder, {"key": spec["key"], "fit": fit.to_dict(),
                                   "trained_in": "side process"})  # fmt: skip
    resume.unlink(missing_ok=True)
    shutil.rmtree(inputs, ignore_errors=True)
    return fit
