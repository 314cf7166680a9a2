"""Leakage between the training split and what a model is graded on, measured from outside the corpus builder.

A near-copy of a training file in the validation split makes the validation cross-entropy
optimistic, a false PASS nobody sees; a test document that near-copies validation makes the test
figure depend on the split the checkpoint was chosen on. The corpus builder moves such documents
(shiptwo.data.near_copies); AC-SHIP2-003 re-measures, on the corpus as the build loads it, and
counts what is left. Re-measures with its own code, so that a broken rule cannot vouch for itself:
the text is read by Python's own lexer (`tokenize`), not the builder's regular expression, and
n-grams are compared as exact tuples of tokens in Python sets, not as 64-bit hashes in sorted
arrays. The definition is the same (shiptwo.data.overlap's module docstring: NFKC, invisible
characters dropped, whitespace and line continuations ignored, identifiers in code read as one
placeholder, keywords, builtins, numbers and the words of strings and comments as written), so the
two agree document by document on Python text; a text `tokenize` rejects is cut by a plain
fallback here (words and punctuation, every non-keyword word a placeholder) and counted in
`documents_lexed_by_fallback`, logged. Every document is checked: the counts are exhaustive.

HumanEval's prompts and solutions against the train split (texts_overlap) are evidence beside a
criterion, not a leg, and use the builder's faster measure.
"""

from __future__ import annotations

import builtins
import io
import keyword
import logging
import tokenize
import unicodedata
from collections.abc import Sequence

from shiptwo.data.corpus import Corpus
from shiptwo.data.overlap import DocumentOverlap, overlap_summary, overlap_with

log = logging.getLogger(__name__)

PLACEHOLDER = "<identifier>"  # cannot collide with a token: a token holds either word characters or one other
_KEPT = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
_SHOWN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me"})  # dropped unless whitespace
_LITERAL_TYPES = frozenset({tokenize.STRING, tokenize.COMMENT, tokenize.NUMBER, tokenize.OP, tokenize.ERRORTOKEN})
_SKIPPED_TYPES = frozenset({tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER,
                            tokenize.ENCODING})
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+: f-strings come in pieces
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _normalized(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if c.isspace() or unicodedata.category(c) not in _SHOWN_CATEGORIES)


def _words(s: str) -> list[str]:
    """`s` cut into runs of word characters and single other characters, whitespace dropped (no regex)."""
    out, run = [], []
    for c in s:
        if c.isalnum() or c == "_":  # what a regular expression's \w matches
            run.append(c)
            continue
        if run:
            out.append("".join(run))
            run = []
        if not c.isspace():
            out.append(c)
    if run:
        out.append("".join(run))
    return out


def _name(word: str) -> str:
    return word if word[0].isdigit() or word in _KEPT else PLACEHOLDER


def lexed_tokens(text: str) -> tuple[list[str], bool]:
    """The text's tokens by Python's `tokenize` (module docstring), and False where it could not read
    the text and the fallback cut it."""
    text = _normalized(text)
    out: list[str] = []
    in_fstring = 0
    try:
        for t in tokenize.generate_tokens(io.StringIO(text).readline):
            if t.type in _SKIPPED_TYPES:
                continue
            if t.type == _FSTRING_START:
                in_fstring += 1
            elif t.type == _FSTRING_END:
                in_fstring -= 1
            if t.type == tokenize.NAME and not in_fstring:
                out.append(_name(t.string))
            else:  # strings, comments, numbers, operators and f-string pieces: their words as written
                out.extend(_words(t.string))
    except (tokenize.TokenError, SyntaxError):
        return [_name(w) if w[0].isalnum() or w[0] == "_" else w for w in _words(text)], False
    return out, True


def _grams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def held_out_overlap(corpus: Corpus, near_duplicate_share: float, ngram_tokens: int) -> dict:
    """Each held-out document against the train split and against the other held-out split:
    overlap_summary's counts for `validation` and `test` (against train), `test_in_validation` and
    `validation_in_test`, and how the texts were read."""
    n = ngram_tokens
    fallback: list[str] = []

    def grams_of(d) -> list[tuple[str, ...]]:
        tokens, by_tokenize = lexed_tokens(d.text)
        if not by_tokenize:
            fallback.append(d.path)
        return _grams(tokens, n)

    held = {s: [(d.path, grams_of(d)) for d in corpus.splits[s]] for s in ("validation", "test")}
    wanted = {g for s in held.values() for _, grams in s for g in grams}
    in_train: set[tuple[str, ...]] = set()
    for d in corpus.splits["train"]:
        in_train.update(g for g in grams_of(d) if g in wanted)
    in_split = {s: {g for _, grams in docs for g in grams} for s, docs in held.items()}

    def summary(split: str, reference: set, name: str) -> dict:
        rows = [DocumentOverlap(path, len(grams), sum(g in reference for g in grams)) for path, grams in held[split]]
        return {"split": split, "reference": name, **overlap_summary(rows, near_duplicate_share, n)}

    if fallback:
        log.warning("leakage: %d document(s) not Python to tokenize, cut by the fallback: %s", len(fallback),
                    ", ".join(fallback[:10]))
    return {"validation": summary("validation", in_train, "train"), "test": summary("test", in_train, "train"),
            "test_in_validation": summary("test", in_split["validation"], "validation"),
            "validation_in_test": summary("validation", in_split["test"], "test"),
            "lexer": "tokenize", "documents_lexed_by_fallback": len(fallback), "fallback_documents": fallback}


def texts_overlap(corpus: Corpus, named_texts: Sequence[tuple[str, str]], near_duplicate_share: float,
                  ngram_tokens: int) -> dict:
    """Any (name, text) pairs (benchmark problems, prompts) against the corpus's train split."""
    rows = overlap_with(corpus.texts("train"), named_texts, ngram_tokens)
    return {"reference": "train", **overlap_summary(rows, near_duplicate_share, ngram_tokens)}
