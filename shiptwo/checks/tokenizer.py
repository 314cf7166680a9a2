"""Acceptance metric on a tokenizer: byte-exact encode→decode round trip."""

from __future__ import annotations

from shiptwo.model.tokenizer import BPETokenizer


def roundtrip_mismatches(tok: BPETokenizer, texts: list[str]) -> int:
    """AC-SHIP2-002: documents whose encode→decode is not byte-exact."""
    return sum(1 for t, ids in zip(texts, tok.encode_batch(texts)) if tok.decode(ids).encode() != t.encode())
