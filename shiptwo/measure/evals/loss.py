"""Held-out loss (AC-SHIP2-003): mean next-token cross-entropy and perplexity on a corpus split,
computed by the trainer's own `evaluate_loss` over the split encoded as the trainer encodes it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError

SPLIT_ALIASES = {"val": "validation"}


@dataclass
class LossResult:
    split: str
    cross_entropy: float  # nats per token
    perplexity: float
    tokens: int
    seq_len: int
    windows: int

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_split_loss(ckpt: Checkpoint, texts: Sequence[str], split: str, seq_len: int | None = None,
                        batch: int = 8, max_windows: int | None = None) -> LossResult:
    """Cross-entropy of `ckpt` on `texts` (one split), in non-overlapping windows of seq_len tokens
    (default: the training seq_len recorded in the checkpoint's summary, else the full context)."""
    from shiptwo.model.tokenizer import encode_split
    from shiptwo.training.objective import evaluate_loss

    if not texts:
        raise ShiptwoError(f"eval loss: split {split!r} has no documents")
    if max_windows is not None and max_windows < 1:  # 0 was reported as too few tokens in the split
        raise ShiptwoError(f"eval loss: --max-windows must be >= 1, got {max_windows}")
    trained = (ckpt.training.get("train_config") or {}).get("seq_len")
    seq_len = seq_len or int(trained or ckpt.config.max_position_embeddings)
    if seq_len > ckpt.config.max_position_embeddings:
        raise ShiptwoError(f"eval loss: seq_len {seq_len} exceeds the context {ckpt.config.max_position_embeddings}")
    tokens = encode_split(ckpt.tokenizer(), list(texts))
    windows = (len(tokens) - 1) // seq_len
    if max_windows is not None:
        windows = min(windows, max_windows)
    ce = evaluate_loss(ckpt.build_model(), tokens, seq_len, batch, max_windows)
    return LossResult(split, ce, math.exp(min(ce, 700.0)), len(tokens), seq_len, windows)


def split_texts(profile: str, split: str, model: str = "model2") -> list[str]:
    """The documents of `split` from the corpus the model's recipe declares for `profile`."""
    from shiptwo.data.corpus import SPLITS, load_corpus
    from shiptwo.training.recipes import load_recipe

    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ShiptwoError(f"eval: unknown split {split!r} (choose from val, {', '.join(SPLITS)})")
    return load_corpus(load_recipe(model, profile).corpus).texts(split)
