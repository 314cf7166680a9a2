"""N-gram overlap between documents: how much of a held-out document already occurs in training data.

A document is cut into code tokens (identifiers, numbers and keywords as `\\w+` runs, every other
non-space character alone; whitespace and backslash line continuations ignored, so re-indentation
or a re-wrapped line does not hide a copy), NFKC-normalized first and with invisible characters
dropped (format and control characters, combining marks left over, unassigned and private-use code
points: one after every character, or fullwidth letters, made a copy share none of its n-grams with
the original), and shingled into overlapping n-grams of NGRAM tokens. Its overlap with a reference
set is the share of its n-gram positions whose n-gram occurs anywhere in the reference.

Identifiers in code read as one placeholder (IDENTIFIER); keywords, builtins, numbers and the words
of string literals and comments stay as written. So a type-2 clone (the same code with its names
renamed, or written with look-alike letters in its names) is still a copy: the stdlib's
`encodings/unicode_escape.py` is `raw_unicode_escape.py` with its names changed (69 % of its 13-grams
in train as written, 93 % so read). Strings and comments keep their words because a placeholder
there makes any two sentences of prose alike (a measured 71 % for the unrelated code-page table
`encodings/cp869.py`, whose comments name characters, against 54 % with them kept). Strings and
comments are found by a lexer of Python's literal syntax (CODE_LEXER); in text that is not Python
it still cuts words and punctuation, at worst reading a word of prose as an identifier.

Why these numbers: n = 13 is the n-gram length of GPT-3's contamination analysis (Brown et al.
2020, app. C), which Llama 2's analysis (Touvron et al. 2023, A.6) calls the usual choice; the
near-duplicate cut of 0.7 is PaLM's (Chowdhery et al. 2022, sec. 8: an example is contaminated
when at least 70 % of its n-grams occur in the training data). Tokens rather than BPE pieces, so
the measure does not depend on the tokenizer trained from the very split it judges.

The reference is streamed: only the held-out documents' distinct n-grams are held in memory
(a sorted array of 64-bit hashes and a found-flag each), so a large training split costs time,
not memory.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

NGRAM = 13  # GPT-3's contamination n-gram
NEAR_DUPLICATE_SHARE = 0.7  # PaLM's contamination cut: this share of a document's n-grams in training
CODE_TOKEN = re.compile(r"\w+|[^\w\s]")
IDENTIFIER = "\x00identifier"  # the placeholder; \x00 is a control character, dropped from any text first
KEPT_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
# a string literal (any prefix; triple-quoted first) or a comment, read as words; a line continuation,
# dropped; an identifier, number or keyword; any other non-space character
CODE_LEXER = re.compile(r"""(?P<literal>[rRbBuUfF]{0,2}(?:'''(?:[^\\]|\\[\s\S])*?'''|\"\"\"(?:[^\\]|\\[\s\S])*?\"\"\""""
                        r"""|'(?:\\[\s\S]|[^'\\\n])*'|"(?:\\[\s\S]|[^"\\\n])*")|\#[^\n]*)"""
                        r"""|(?P<continuation>\\\r?\n)|(?P<word>\w+)|[^\w\s]""")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant for the polynomial n-gram hash
# Unicode categories that show nothing between two tokens (control, format, surrogate, private-use,
# unassigned, combining marks NFKC left uncomposed); whitespace among them still separates tokens.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me"})
_NOT_PRINTABLE_ASCII = re.compile(r"[^\t\n\r\x20-\x7e]")  # only these characters need their category looked up


def _invisible_dropped(match: re.Match) -> str:
    c = match.group()
    return "" if unicodedata.category(c) in INVISIBLE_CATEGORIES and not c.isspace() else c


def normalized(text: str) -> str:
    """The text NFKC-normalized, with its invisible characters dropped (module docstring)."""
    return _NOT_PRINTABLE_ASCII.sub(_invisible_dropped, unicodedata.normalize("NFKC", text))


def code_tokens(text: str) -> list[str]:
    """The text's code tokens, normalized, identifiers in code read as IDENTIFIER (module docstring)."""
    out: list[str] = []
    for m in CODE_LEXER.finditer(normalized(text)):
        literal, word = m.group("literal", "word")
        if literal is not None:
            out.extend(CODE_TOKEN.findall(literal))
        elif word is not None:
            out.append(word if word[0].isdigit() or word in KEPT_NAMES else IDENTIFIER)
        elif m.group("continuation") is None:
            out.append(m.group())
    return out


def shingles(text: str, n: int = NGRAM, _token_hash: dict[str, int] | None = None) -> np.ndarray:
    """The 64-bit hash of each of the text's n-token windows, in order (len(tokens) - n + 1 of them;
    none for a text of fewer than n tokens). Deterministic: no per-process hash seed."""
    return token_shingles(code_tokens(text), n, _token_hash)


def token_shingles(toks: Sequence[str], n: int = NGRAM, _token_hash: dict[str, int] | None = None) -> np.ndarray:
    """shingles() of a token sequence already cut (by code_tokens, or another reading of the text)."""
    cache = {} if _token_hash is None else _token_hash
    if len(toks) < n:
        return np.empty(0, dtype=np.uint64)
    ids = np.fromiter((cache[t] if t in cache else cache.setdefault(t, _hash_token(t)) for t in toks),
                      dtype=np.uint64, count=len(toks))
    m = len(ids) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic mod 2**64 is the point
        for k in range(n):
            h = h * _MULTIPLIER + ids[k:k + m]
    return h


def distinct_sorted(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The distinct n-gram hashes of some arrays, sorted. A sort, not np.unique: numpy 2.4's hashing
    unique took 6 s on the default corpus's 2.5M n-grams, this 0.14 s."""
    if not arrays:
        return np.empty(0, dtype=np.uint64)
    a = np.sort(np.concatenate(arrays))
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def _hash_token(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class OverlapIndex:
    """The distinct n-grams of some query documents, each flagged once it is found in a reference
    document; `in_reference(i)` counts query document i's n-gram positions found so far."""

    def __init__(self, query_texts: Sequence[str], n: int = NGRAM):
        self.n = n
        self._token_hash: dict[str, int] = {}
        self.query = [shingles(t, n, self._token_hash) for t in query_texts]
        self.keys = distinct_sorted([g for g in self.query if len(g)])
        self.found = np.zeros(len(self.keys), dtype=bool)

    def add_reference_text(self, text: str) -> None:
        self.add_reference(shingles(text, self.n, self._token_hash))

    def add_reference(self, grams: np.ndarray) -> None:
        if not len(grams) or not len(self.keys):
            return
        pos = np.minimum(np.searchsorted(self.keys, grams), len(self.keys) - 1)
        self.found[pos[self.keys[pos] == grams]] = True

    def ngrams(self, i: int) -> int:
        return len(self.query[i])

    def in_reference(self, i: int) -> int:
        g = self.query[i]
        return int(self.found[np.searchsorted(self.keys, g)].sum()) if len(g) else 0

    def share(self, i: int) -> float:
        """Share of document i's n-grams found in the reference; 0 for a document too short to have one."""
        return self.in_reference(i) / self.ngrams(i) if self.ngrams(i) else 0.0


@dataclass(frozen=True)
class DocumentOverlap:
    path: str
    ngrams: int
    in_reference: int

    @property
    def share(self) -> float:
        return self.in_reference / self.ngrams if self.ngrams else 0.0


def overlap_with(reference_texts: Iterable[str], docs: Sequence[tuple[str, str]], n: int = NGRAM) -> list[DocumentOverlap]:
    """Each (path, text) in `docs` against every reference text: its n-grams and how many occur in the reference."""
    index = OverlapIndex([text for _, text in docs], n)
    for text in reference_texts:
        index.add_reference_text(text)
    return [DocumentOverlap(path, index.ngrams(i), index.in_reference(i)) for i, (path, _) in enumerate(docs)]


def overlap_summary(rows: Sequence[DocumentOverlap], near_duplicate_share: float = NEAR_DUPLICATE_SHARE,
                    n: int = NGRAM, listed: int = 10) -> dict:
    """Counts over every document (exhaustive, nothing sampled): n-grams found in the reference
    overall, the documents at or above the near-duplicate share (each named), the documents too
    short to judge, and the `listed` most-overlapping documents."""
    judged = [r for r in rows if r.ngrams]
    total = sum(r.ngrams for r in judged)
    found = sum(r.in_reference for r in judged)
    near = sorted((r for r in judged if r.share >= near_duplicate_share), key=lambda r: (-r.share, r.path))
    top = sorted(judged, key=lambda r: (-r.share, r.path))[:listed]
    return {
        "ngram_tokens": n, "near_duplicate_share": near_duplicate_share,
        "documents": len(rows), "documents_judged": len(judged), "documents_too_short": len(rows) - len(judged),
        "ngrams": total, "ngrams_in_reference": found, "ngram_share": found / total if total else 0.0,
        "near_duplicates": len(near),
        "near_duplicate_documents": [_row(r) for r in near],
        "most_overlapping": [_row(r) for r in top],
        "documents_with_share_at_least": {f"{t:.1f}": sum(r.share >= t for r in judged) for t in (0.2, 0.5, 0.8)},
    }


def _row(r: DocumentOverlap) -> dict:
    return {"path": r.path, "ngrams": r.ngrams, "in_reference": r.in_reference, "share": round(r.share, 4)}
