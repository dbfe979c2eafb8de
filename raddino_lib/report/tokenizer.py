"""Prompt templates and tokenizers of the report generator.

The instruction is the paper's: ``"<image_tokens> Provide a description of the findings in the
radiology image."`` (section 4.2). A template puts the image placeholder, the instruction and
the report in one sequence:

* ``"plain"`` (small decoders trained from scratch): ``[BOS] <image>\\n{instruction}\\n``
  then the report, then ``[EOS]``;
* ``"vicuna_v1"`` (LLaVA-1.5 with Vicuna v1.5): the Vicuna system line, ``USER: <image>\\n
  {instruction} ASSISTANT:`` then ``" " + report`` and ``</s>``.

The placeholder never goes through the tokenizer: the prompt is tokenized in pieces around it
and the sentinel id :data:`IMAGE_TOKEN_INDEX` (-200, as in LLaVA) marks where
:func:`~raddino_lib.report.model.splice_image_tokens` puts the projected image tokens, so any
tokenizer works unchanged (no new vocabulary entry, no resized embedding table).

Small decoders get a lower-casing byte-level BPE trained on the training split's reports and
the prompt (:func:`train_report_tokenizer`, built on :mod:`raddino_lib.text.tokenizer`); a
local transformers LM folder brings its own tokenizer (:func:`load_lm_tokenizer`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from raddino_lib.text.tokenizer import train_tokenizer

__all__ = [
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKEN_INDEX",
    "INSTRUCTION",
    "TEMPLATES",
    "Template",
    "get_template",
    "load_lm_tokenizer",
    "prompt_ids",
    "report_ids",
    "train_report_tokenizer",
]

INSTRUCTION = "Provide a description of the findings in the radiology image."
"""The paper's instruction (section 4.2)."""
IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200
"""Sentinel id of the image placeholder in token sequences (LLaVA's value)."""

_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class Template:
    """``prompt`` (with one :data:`IMAGE_PLACEHOLDER`) and the text put before the report."""

    name: str
    prompt: str
    report_prefix: str = ""


TEMPLATES: dict[str, Template] = {
    "plain": Template("plain", f"{IMAGE_PLACEHOLDER}\n{INSTRUCTION}\n"),
    "vicuna_v1": Template(
        "vicuna_v1", f"{_VICUNA_SYSTEM} USER: {IMAGE_PLACEHOLDER}\n{INSTRUCTION} ASSISTANT:", " "
    ),
}


def get_template(name: str) -> Template:
    """The template called ``name``; a clear error for unknown names."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown report template {name!r}; choose one of {list(TEMPLATES)}")
    return TEMPLATES[name]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def prompt_ids(tokenizer: PreTrainedTokenizerBase, template: str | Template) -> list[int]:
    """``[BOS] + prompt`` token ids with one :data:`IMAGE_TOKEN_INDEX` at the placeholder."""
    t = get_template(template) if isinstance(template, str) else template
    before, sep, after = t.prompt.partition(IMAGE_PLACEHOLDER)
    if not sep or IMAGE_PLACEHOLDER in after:
        raise ValueError(f"template {t.name!r} must hold exactly one {IMAGE_PLACEHOLDER}")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + _ids(tokenizer, before) + [IMAGE_TOKEN_INDEX] + _ids(tokenizer, after)


def report_ids(
    tokenizer: PreTrainedTokenizerBase, text: str, template: str | Template, max_tokens: int
) -> list[int]:
    """Token ids of the report (the template's prefix + ``text``), cut to ``max_tokens``,
    then ``[EOS]`` (the model learns to stop)."""
    t = get_template(template) if isinstance(template, str) else template
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the generator could not learn to stop")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    return _ids(tokenizer, t.report_prefix + text)[:max_tokens] + [tokenizer.eos_token_id]


def train_report_tokenizer(
    texts: Iterable[str], vocab_size: int, template: str | Template = "plain"
) -> PreTrainedTokenizerBase:
    """Lower-casing byte-level BPE (``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3) trained
    on ``texts`` (the training reports) plus the template's prompt, twice, so that every prompt
    character is in the alphabet and its words can be merged like any word seen twice (the
    prompt starts every training sequence; spelt out letter by letter it would cost dozens of
    positions per sequence)."""
    t = get_template(template) if isinstance(template, str) else template
    prompt = t.prompt.replace(IMAGE_PLACEHOLDER, " ")
    return train_tokenizer([*texts, prompt, prompt], vocab_size)


def load_lm_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local transformers LM folder (never downloads). A missing pad
    token becomes the UNK (else EOS) token, as LLaVA does for Vicuna."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"language-model folder {folder} does not exist")
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok
