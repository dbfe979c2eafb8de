"""Report-generation data: findings sections, token sequences, batches, patch tokens.

The paper generates the *Findings* section of frontal (AP/PA) images and drops studies without
one (section 4.2). :func:`report_records` does the same with any dataset in the generic
format; :func:`encode_reports` turns texts into ``(input_ids, labels)`` with the prompt and
the image sentinel in front and labels only on the report; :func:`collate` pads a batch;
:func:`patch_tokens` gives each image's last-layer patch tokens from the embedding cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from raddino_lib.report.model import IGNORE_INDEX
from raddino_lib.report.tokenizer import Template, prompt_ids, report_ids

__all__ = [
    "TokenSeq",
    "collate",
    "encode_reports",
    "findings_section",
    "patch_tokens",
    "report_records",
    "select_rows",
]

_FINDINGS_RE = re.compile(r"findings\s*:\s*(.*?)(?=\n?\s*\b(?:impression|conclusion)\s*:|$)",
                          re.IGNORECASE | re.DOTALL)  # fmt: skip

_HEADER_RE = re.compile(r"^\s*[A-Z][A-Z /&]{2,}:", re.MULTILINE)

TokenSeq = tuple[list[int], list[int]]
"""One training sequence: ``(input_ids, labels)``, the same length."""


def findings_section(report: str | None) -> str:
    """The report's findings, whitespace collapsed: the text after ``FINDINGS:`` up to
    ``IMPRESSION:`` / ``CONCLUSION:`` (or the end); the whole text when it has no section
    header at all (the MIMIC-CXR adapter already stores the findings section alone); "" when
    it has headers but no findings (the paper drops those studies) or is empty."""
    if not isinstance(report, str):
        return ""
    m = _FINDINGS_RE.search(report)
    if m:
        return " ".join(m.group(1).split())
    return "" if _HEADER_RE.search(report) else " ".join(report.split())


def report_records(records: pd.DataFrame, *, frontal_only: bool = True) -> pd.DataFrame:
    """Rows usable for report generation, with a ``findings`` column: frontal views (AP/PA)
    when ``frontal_only``, and a non-empty findings section.

    Raises:
        KeyError: ``records`` has no ``report`` column.
    """
    if "report" not in records.columns:
        raise KeyError("records have no 'report' column: this dataset has no reports to learn")
    df = records
    if frontal_only and "view" in df.columns:
        df = df[df["view"].astype(str).str.upper().isin(["AP", "PA"])]
    df = df.assign(findings=[findings_section(r) for r in df["report"]])
    return df[df["findings"].str.len() > 0].copy()


def select_rows(df: pd.DataFrame, split: str, max_n: int, seed: int) -> pd.DataFrame:
    """The rows of ``split``; at most ``max_n`` (0: all) drawn with ``seed``, in file order."""
    sub = df[df["split"] == split]
    if max_n and len(sub) > max_n:
        keep = np.sort(np.random.default_rng(seed).choice(len(sub), max_n, replace=False))
        sub = sub.iloc[keep]
    return sub


def encode_reports(
    tokenizer: Any, texts: Sequence[str], template: str | Template, max_report_tokens: int
) -> list[TokenSeq]:
    """``(input_ids, labels)`` per text: ``prompt (with the image sentinel) + report + EOS``;
    labels are -100 on the prompt and the sentinel, the token ids on the report and EOS."""
    prompt = prompt_ids(tokenizer, template)
    out = []
    for t in texts:
        rep = report_ids(tokenizer, t, template, max_report_tokens)
        out.append((prompt + rep, [IGNORE_INDEX] * len(prompt) + rep))
    return out


def collate(seqs: Sequence[TokenSeq], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch -> ``input_ids``, ``attention_mask``, ``labels`` ``[B, L]`` (labels
    -100 and mask 0 on padding)."""
    if not seqs:
        raise ValueError("collate needs at least one sequence")
    n = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (x, y) in enumerate(seqs):
        if len(x) != len(y):
            raise ValueError(f"sequence {i}: {len(x)} ids but {len(y)} labels")
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def patch_tokens(encoder: Any, root: str | Path, records: pd.DataFrame, cfg: Any) -> torch.Tensor:
    """Last-layer patch tokens ``[N, h * w, D]`` float16 of ``records`` (final norm applied),
    through the embedding cache (computed once per encoder and rows, at the encoder's own
    input side)."""
    from raddino_lib.eval.cache import cached_embeddings
    from raddino_lib.ssl.train import resolve_device

    emb = cached_embeddings(
        encoder, root, records, layers=(-1,), batch_size=cfg.embed_batch_size,
        device=str(resolve_device(cfg.device)), precision=cfg.precision, progress=cfg.progress,
    )  # fmt: skip
    grid = torch.from_numpy(np.ascontiguousarray(emb["layer_-1"]))  # [N, h, w, D] float16
    return grid.reshape(grid.shape[0], -1, grid.shape[-1])


def pool_tokens(tokens: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool a square patch grid: ``[N, h * w, D] -> [N, (h / f) * (w / f), D]``.

    ``factor`` 1 returns ``tokens`` unchanged. The grid must be square with a side that
    ``factor`` divides (a side of 8 pools by 2 to 16 tokens, by 4 to 4).

    Raises:
        ValueError: a non-square grid or a side that ``factor`` does not divide.
    """
    if factor < 1:
        raise ValueError(f"rg_token_pool must be at least 1, got {factor}")
    if factor == 1:
        return tokens
    n, t, d = tokens.shape
    side = int(round(t**0.5))
    if side * side != t or side % factor:
        raise ValueError(
            f"rg_token_pool {factor} needs a square patch grid whose side it divides; got "
            f"{t} tokens"
        )
    grid = tokens.reshape(n, side, side, d).permute(0, 3, 1, 2).float()
    pooled = torch.nn.functional.avg_pool2d(grid, factor)
    return pooled.permute(0, 2, 3, 1).reshape(n, -1, d).to(tokens.dtype)
