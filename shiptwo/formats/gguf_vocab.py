"""A GGUF vocabulary as llama.cpp reads it, or the first token where our tokenizer would differ.

llama.cpp (llama-vocab.cpp) renames an empty token `[EMPTY_<id>]`, aborts the process on a token
string that repeats (GGML_ASSERT), reads a token type it does not know as UNDEFINED (its BPE
detokenizer then writes nothing for the token), splits a merge at the first space after the first
character, ranks a repeated merge by its first occurrence and applies a merge whose parts or
result are no token (the result falls back to single-byte tokens). It detokenizes a NORMAL token
through the byte-level map (a character outside it becomes `[UNK_BYTE_...]`) and copies a CONTROL
or USER_DEFINED token as written. Our tokenizer (Hugging Face byte-level BPE rebuilt from the
file) refuses merges naming unknown tokens, ranks a repeated merge by its last occurrence, leaves
UNUSED tokens out and runs every token through the byte-level decoder. We reproduce the empty
token's name (logged); every other divergence is refused, naming the field and the token or
merge by its index.
"""

from __future__ import annotations

import gguf
from tokenizers import decoders, pre_tokenizers

K = gguf.Keys
TT = gguf.TokenType
LLAMA_EMPTY_TOKEN = "[EMPTY_{id}]"  # llama.cpp's name for an empty token string
# The token types both readers treat alike; llama.cpp reads any other as UNDEFINED/UNKNOWN/BYTE.
READ_TYPES = (TT.NORMAL, TT.CONTROL, TT.USER_DEFINED, TT.UNUSED)
MAX_SHOWN = 40  # characters of a token a message quotes
_BYTE_ALPHABET = frozenset(pre_tokenizers.ByteLevel.alphabet())


def llama_token_texts(tokens: list[str]) -> list[str]:
    """The token strings as llama.cpp keys them: an empty one named `[EMPTY_<id>]`."""
    return [t or LLAMA_EMPTY_TOKEN.format(id=i) for i, t in enumerate(tokens)]


def split_merge(entry: str) -> tuple[str, str] | None:
    """A merge entry split as llama.cpp splits it (at the first space after the first character);
    None when it holds no such space."""
    pos = entry.find(" ", 1)
    return None if pos < 0 else (entry[:pos], entry[pos + 1:])


def _shown(text: str) -> str:
    return repr(text[:MAX_SHOWN] + ("..." if len(text) > MAX_SHOWN else ""))  # repr escapes line breaks


def vocabulary_problems(tokens: list[str], types: list[int], merges: list[str]) -> list[str]:
    """Where llama.cpp and our tokenizer would read this vocabulary differently: the first token or
    merge of each kind of divergence, by field and index, with the count of its kind; empty when none."""
    found: dict[str, list[str]] = {}

    def note(kind: str, message: str) -> None:
        found.setdefault(kind, []).append(message)

    texts = llama_token_texts(tokens)
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        if text in first:
            note("repeat", f"{K.Tokenizer.LIST}: token {i} {_shown(text)} repeats token {first[text]} "
                           "(llama.cpp aborts on a repeated token string)")
        first.setdefault(text, i)
    decoder = decoders.ByteLevel()
    for i, (text, kind) in enumerate(zip(texts, types)):
        if kind not in READ_TYPES:
            note("type", f"{K.Tokenizer.TOKEN_TYPE}: token {i} has type {kind}, which llama.cpp and ours read "
                         f"differently (both read {', '.join(f'{t.name}={t.value}' for t in READ_TYPES)} alike)")
        elif kind == TT.NORMAL and (odd := next((c for c in text if c not in _BYTE_ALPHABET), None)):
            note("normal", f"{K.Tokenizer.LIST}: NORMAL token {i} {_shown(text)} holds {odd!r}, outside the "
                           "byte-level alphabet (llama.cpp detokenizes it as [UNK_BYTE_...], ours as written)")
        elif kind in (TT.CONTROL, TT.USER_DEFINED) and (ours := decoder.decode([text])) != text:
            note("written", f"{K.Tokenizer.LIST}: {TT(kind).name} token {i} {_shown(text)} is detokenized as "
                            f"written by llama.cpp, as {_shown(ours)} by our byte-level decoder")
        elif kind == TT.UNUSED and len(text) == 1:
            note("unused", f"{K.Tokenizer.LIST}: UNUSED token {i} {_shown(text)} is one character, which "
                           "llama.cpp tokenizes to it and ours drops")
    usable = {t: i for i, t in enumerate(texts) if i < len(types) and types[i] != TT.UNUSED}
    ranked: dict[tuple[str, str], int] = {}
    for j, entry in enumerate(merges):
        pair = split_merge(entry)
        if pair is None:
            note("merge", f"{K.Tokenizer.MERGES}: entry {j} {_shown(entry)} is not two tokens separated by a space")
            continue
        if pair in ranked:
            note("merge-repeat", f"{K.Tokenizer.MERGES}: entry {j} {_shown(entry)} repeats entry {ranked[pair]} "
                                 "(llama.cpp ranks it by the first, ours by the last)")
            continue
        ranked[pair] = j
        named = [("names", pair[0]), ("names", pair[1]), ("makes", pair[0] + pair[1])]
        verb, unknown = next(((v, p) for v, p in named if p not in usable), (None, None))
        if unknown is not None:
            what = "an UNUSED token" if unknown in first else "no token"
            note("merge", f"{K.Tokenizer.MERGES}: entry {j} {_shown(entry)} {verb} {_shown(unknown)}, {what} "
                          "(llama.cpp still applies it; ours cannot)")
    return [items[0] + (f" (and {len(items) - 1} more like it)" if len(items) > 1 else "") for items in found.values()]
