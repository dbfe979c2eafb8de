"""A small byte-level BPE tokenizer trained on report text (the ``tokenizers`` library).

:func:`train_tokenizer` learns a GPT-2-style byte-level BPE vocabulary on lower-cased text and
wraps it as a ``transformers`` fast tokenizer, so callers get the usual API (``tok(texts,
padding=..., truncation=True, max_length=L, return_tensors="pt")``, ``tok.decode(ids)``).

* Special tokens, in this id order: ``[PAD]`` = 0, ``[UNK]`` = 1, ``[BOS]`` = 2, ``[EOS]`` = 3
  (:data:`SPECIAL_TOKENS`). Every encoded text is ``[BOS] ... [EOS]``; truncation keeps both.
* Normalisation: lower case only, so ``decode(encode(text), skip_special_tokens=True) ==
  text.lower()`` for any text whose characters were seen in training (byte-level: spaces and
  newlines survive the round trip). Characters never seen in training become ``[UNK]``.
* The alphabet is the characters of the training texts (not all 256 bytes), so a vocabulary of
  a few hundred entries (the smoke preset) still leaves room for merges.

Used by the text-supervised baseline (:mod:`raddino_lib.textsup`) and meant for the report
generator too; nothing here is specific to contrastive training.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "load_tokenizer", "save_tokenizer", "train_tokenizer"]

SPECIAL_TOKENS: tuple[str, str, str, str] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
"""Special tokens; their ids are their positions (PAD 0, UNK 1, BOS 2, EOS 3)."""


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a lower-casing byte-level BPE tokenizer on ``texts``.

    Args:
        texts: training texts (e.g. the training split's reports).
        vocab_size: the largest vocabulary (special tokens + alphabet + merges); the result
            may be smaller when the texts offer no more merges of ``min_frequency``.
        min_frequency: a pair is merged only if it occurs at least this often.

    Returns:
        a ``PreTrainedTokenizerFast`` with pad/unk/bos/eos set (ids 0-3) that wraps each text
        as ``[BOS] ... [EOS]``.

    Raises:
        ValueError: no non-empty text, or ``vocab_size`` too small for the special tokens and
            the alphabet of the texts.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    data = [t for t in texts if isinstance(t, str) and t.strip()]
    if not data:
        raise ValueError("train_tokenizer needs at least one non-empty text")
    alphabet = sorted(set("".join(data).lower()))
    min_vocab = len(SPECIAL_TOKENS) + len(alphabet)
    if vocab_size < min_vocab:
        raise ValueError(
            f"vocab_size={vocab_size} is below the {len(SPECIAL_TOKENS)} special tokens plus the "
            f"{len(alphabet)}-character alphabet of these texts; use vocab_size >= {min_vocab}"
        )
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tok.train_from_iterator(data, trainer=trainer)
    bos, eos = SPECIAL_TOKENS[2], SPECIAL_TOKENS[3]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B:1 {eos}:1",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):  # the trainer adds them first, in order
        raise RuntimeError(f"special token ids are {ids}, expected 0-3 (tokenizers changed?)")
    return _wrap(tok)


def _wrap(tok: object) -> PreTrainedTokenizerFast:
    pad, unk, bos, eos = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        padding_side="right",
        truncation_side="right",
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write ``tokenizer`` to ``directory`` (``tokenizer.json`` + transformers' config files)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Read a tokenizer written by :func:`save_tokenizer`.

    Raises:
        FileNotFoundError: ``directory`` has no ``tokenizer.json``.
    """
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a folder written by save_tokenizer "
            "(train one with train_tokenizer and save it first)"
        )
    return _wrap(Tokenizer.from_file(str(path)))
