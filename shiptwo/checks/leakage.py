"""Leakage between the training split and what a model is graded on, measured from outside the trainer.

A near-copy of a training file in the validation split makes the validation cross-entropy
optimistic, a false PASS nobody sees; so AC-SHIP2-003 re-measures, on the corpus as the build
loads it, how much of each held-out document's n-grams occur in the train split, and counts the
documents at or above the spec's near-duplicate share. The same measure applies to any graded
texts (HumanEval's prompts and canonical solutions). Every document is checked: the counts are
exhaustive, not samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from shiptwo.data.corpus import Corpus
from shiptwo.data.overlap import overlap_summary, overlap_with


def split_overlap(corpus: Corpus, split: str, near_duplicate_share: float, ngram_tokens: int) -> dict:
    """`split`'s documents against the corpus's train split: overlap_summary's counts, with the split named."""
    rows = overlap_with(corpus.texts("train"), [(d.path, d.text) for d in corpus.splits[split]], ngram_tokens)
    return {"split": split, "reference": "train", **overlap_summary(rows, near_duplicate_share, ngram_tokens)}


def texts_overlap(corpus: Corpus, named_texts: Sequence[tuple[str, str]], near_duplicate_share: float,
                  ngram_tokens: int) -> dict:
    """Any (name, text) pairs (benchmark problems, prompts) against the corpus's train split."""
    rows = overlap_with(corpus.texts("train"), named_texts, ngram_tokens)
    return {"reference": "train", **overlap_summary(rows, near_duplicate_share, ngram_tokens)}
