"""N-gram overlap: a planted near-duplicate is found whatever its whitespace; unrelated code is not."""

from __future__ import annotations

import numpy as np

from shiptwo.data.overlap import NGRAM, OverlapIndex, code_tokens, overlap_summary, overlap_with, shingles


def table_module(name: str, offset: int, rows: int = 40) -> str:
    """A generated-codec-like module: a header naming it and a long table (as the stdlib's encodings/*.py)."""
    body = "\n".join(f"    {i:#06x}: {i + offset:#06x},  # CHARACTER {i}" for i in range(rows))
    return f'""" Python Character Mapping Codec {name} generated from {name.upper()}.TXT """\n\ndecoding_map = {{\n{body}\n}}\n'


def unrelated_module() -> str:
    return ("import os\n\ndef walk_sizes(root):\n    total = 0\n    for base, dirs, files in os.walk(root):\n"
            "        for f in files:\n            total += os.path.getsize(os.path.join(base, f))\n    return total\n")


def test_code_tokens_ignore_whitespace_and_keep_punctuation():
    assert code_tokens("def f(x):\n\treturn x+1") == ["def", "f", "(", "x", ")", ":", "return", "x", "+", "1"]
    assert code_tokens("a  =\n b") == code_tokens("a = b")


def test_shingles_count_deterministic_and_short_text_has_none():
    text = table_module("cp1", 0)
    g = shingles(text)
    assert len(g) == len(code_tokens(text)) - NGRAM + 1 and g.dtype == np.uint64
    assert np.array_equal(g, shingles(text))  # no per-process hash seed involved
    assert len(shingles("x = 1")) == 0
    assert len(np.unique(shingles(text, 3))) > 1


def test_planted_near_duplicate_is_found_reindented_and_with_another_header():
    train = [table_module("cp1", 0), unrelated_module()]
    copy = table_module("cp2", 0).replace("    ", "\t")  # another name in its header, tabs for spaces
    rows = overlap_with(train, [("copy.py", copy), ("other.py", table_module("cp3", 7)), ("short.py", "x = 1\n")])
    by = {r.path: r for r in rows}
    assert by["copy.py"].share > 0.9  # only the windows over the changed header differ
    assert by["other.py"].share < 0.05  # same shape, other values: not a copy
    assert by["short.py"].ngrams == 0 and by["short.py"].share == 0.0
    s = overlap_summary(rows, near_duplicate_share=0.7)
    assert s["near_duplicates"] == 1 and [d["path"] for d in s["near_duplicate_documents"]] == ["copy.py"]
    assert s["documents"] == 3 and s["documents_judged"] == 2 and s["documents_too_short"] == 1
    assert s["ngrams"] == by["copy.py"].ngrams + by["other.py"].ngrams
    assert s["ngrams_in_reference"] == by["copy.py"].in_reference + by["other.py"].in_reference


def test_index_counts_repeated_windows_and_grows_with_references():
    doc = "a b c d " * 10
    index = OverlapIndex([doc], n=4)
    assert index.in_reference(0) == 0
    index.add_reference_text("zz a b c d zz")
    # 37 windows, 10 of them "a b c d" (the other three rotations are not in the reference)
    assert (index.ngrams(0), index.in_reference(0)) == (37, 10)
    index.add_reference(index.query[0])
    assert index.share(0) == 1.0


def test_empty_inputs():
    assert overlap_with([], [("a.py", unrelated_module())])[0].in_reference == 0
    assert overlap_with([unrelated_module()], []) == []
    s = overlap_summary([])
    assert s["documents"] == 0 and s["ngram_share"] == 0.0 and s["near_duplicates"] == 0


def test_invisible_and_compatibility_characters_do_not_hide_a_copy():
    """A copy with an invisible character between its characters or tokens (a zero-width space, a BOM,
    a soft hyphen, a control character, a variation selector) or written in compatibility forms (fullwidth)
    shared none of its n-grams with the original: each became a token of its own, or another word."""
    original = table_module("cp1", 0)
    tokens = code_tokens(original)
    assert code_tokens("ｄｅｆ\u00ad ｆ\u200b(x\ufeff)\x1b:\ufe0f") == ["def", "f", "(", "x", ")", ":"]
    copies = [("zero-width.py", "\u200b".join(original)), ("bom.py", "\ufeff ".join(tokens)),
              ("escape.py", " \x1b".join(tokens)), ("selector.py", "\ufe0f ".join(tokens)),
              ("fullwidth.py", original.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}))]
    for row in overlap_with([original], copies):
        assert row.share == 1.0, row.path
    assert code_tokens("a\nb\tc\x0bd") == ["a", "b", "c", "d"]  # whitespace, control or not, still separates
