"""Byte-level BPE tokenizer, trained with Hugging Face `tokenizers`, saved as tokenizer.json.

GPT-2 style: byte-level pre-tokenization with the GPT-2 split regex and no normalizer, so
encode→decode is byte-exact on any text (NFC normalization happens once, in the corpus).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_text

EOT_TOKEN = "<|endoftext|>"



class BPETokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` with the few operations the project uses."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        eot = tok.token_to_id(EOT_TOKEN)
        if eot is None:
            raise ShiptwoError(f"tokenizer: special token {EOT_TOKEN} is missing")
        self.eot_id = eot

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        try:
            return self.tok.encode(text, add_special_tokens=False).ids
        except TypeError:  # tokenizers refuses a str holding lone surrogates (undecodable bytes)
            bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None) if isinstance(text, str) else None
            if bad is None:
                raise
            raise ShiptwoError(f"tokenizer: text holds a lone surrogate at character {bad} (invalid UTF-8 input?)") from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def with_special_tokens(self, tokens: tuple[str, ...]) -> "BPETokenizer":
        """A copy with `tokens` added as special (single-id, never split) tokens; existing ids unchanged."""
        from tokenizers import AddedToken

        tok = Tokenizer.from_str(self.tok.to_str())
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
        return BPETokenizer(tok)

    def to_json(self) -> str:
        return self.tok.to_str()

    @classmethod
    def from_json(cls, text: str, source: str = "tokenizer.json") -> "BPETokenizer":
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as exc:  # tokenizers raises plain Exceptions with long messages
            raise ShiptwoError(f"{source}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "BPETokenizer":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ShiptwoError(f"{path}: cannot read tokenizer ({exc.strerror})") from None
        return cls.from_json(text, source=str(path))

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_json())


def byte_level_bpe(vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None) -> Tokenizer:
    """A GPT-2-style byte-level BPE tokenizer (empty, to train, or from a vocabulary and merges)."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges) if vocab is not None else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, extra_special_tokens: tuple[str, ...] = ()) -> BPETokenizer:
    """Train byte-level BPE on `texts`; the end-of-text token gets id 0."""
    if vocab_size < 256 + 1 + len(extra_special_tokens):
        raise ShiptwoError(f"tokenizer: vocab_size {vocab_size} is below the 256 byte symbols plus specials")
    tok = byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN, *extra_special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return BPETokenizer(tok)


def encode_split(tok: BPETokenizer, texts: list[str]) -> torch.Tensor:
    """Documents joined into one stream, each followed by the end-of-text token (int32)."""
    ids: list[int] = []
    for doc in tok.encode_batch(texts):
        ids.extend(doc)
        ids.append(tok.eot_id)
    return torch.tensor(ids, dtype=torch.int32)
