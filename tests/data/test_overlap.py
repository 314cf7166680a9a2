"""N-gram overlap: a planted near-duplicate is found whatever its whitespace or its names; unrelated code is not."""

from __future__ import annotations

import numpy as np

from shiptwo.data.overlap import (CODE_TOKEN, IDENTIFIER, NGRAM, OverlapIndex, code_tokens, overlap_summary, overlap_with,
                                  shingles)

ID = IDENTIFIER


def table_module(name: str, offset: int, rows: int = 40) -> str:
    """A generated-codec-like module: a header naming it and a long table (as the stdlib's encodings/*.py)."""
    body = "\n".join(f"    {i:#06x}: {i + offset:#06x},  # CHARACTER {i}" for i in range(rows))
    return f'""" Python Character Mapping Codec {name} generated from {name.upper()}.TXT """\n\ndecoding_map = {{\n{body}\n}}\n'


def unrelated_module() -> str:
    return ("import os\n\ndef walk_sizes(root):\n    total = 0\n    for base, dirs, files in os.walk(root):\n"
            "        for f in files:\n            total += os.path.getsize(os.path.join(base, f))\n    return total\n")


def test_code_tokens_ignore_whitespace_and_keep_punctuation():
    assert code_tokens("def f(x):\n\treturn x+1") == ["def", ID, "(", ID, ")", ":", "return", ID, "+", "1"]
    assert code_tokens("a  =\n b") == code_tokens("a = b") == code_tokens("a \\\n = b")  # a line continuation too
    # keywords, builtins and numbers as written; a string's or a comment's words as written, quotes and all
    assert code_tokens("for k in range(len(xs)): print(k, 'no such key', 0x1F)  # see key_name") == [
        "for", ID, "in", "range", "(", "len", "(", ID, ")", ")", ":", "print", "(", ID, ",", "'", "no", "such", "key",
        "'", ",", "0x1F", ")", "#", "see", "key_name"]
    assert code_tokens('b = rb"x\\" y" + """a\nb\\"""" + f\'{k}\'') == [  # escaped quotes do not end a string
        ID, "=", "rb", '"', "x", "\\", '"', "y", '"', "+", '"', '"', '"', "a", "b", "\\", '"', '"', '"', '"', "+", "f",
        "'", "{", "k", "}", "'"]


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
    doc = "1 2 3 4 " * 10
    index = OverlapIndex([doc], n=4)
    assert index.in_reference(0) == 0
    index.add_reference_text("9 1 2 3 4 9")
    # 37 windows, 10 of them "1 2 3 4" (the other three rotations are not in the reference)
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
    tokens = CODE_TOKEN.findall(original)
    assert code_tokens("ｄｅｆ\u00ad ｆ\u200b(x\ufeff)\x1b:\ufe0f") == ["def", ID, "(", ID, ")", ":"]
    copies = [("zero-width.py", "\u200b".join(original)), ("bom.py", "\ufeff ".join(tokens)),
              ("escape.py", " \x1b".join(tokens)), ("selector.py", "\ufe0f ".join(tokens)),
              ("fullwidth.py", original.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}))]
    for row in overlap_with([original], copies):
        assert row.share == 1.0, row.path
    assert code_tokens("1\n2\t3\x0b4") == ["1", "2", "3", "4"]  # whitespace, control or not, still separates


def function_module(names: dict[str, str]) -> str:
    """Ordinary code whose identifiers come from `names`: a type-2 clone is the same with other names."""
    n = names
    return (f"import os\n\n\ndef {n['f']}({n['root']}, {n['pattern']}='*.py'):\n"
            f"    {n['total']} = 0\n    for {n['base']}, {n['dirs']}, {n['files']} in os.walk({n['root']}):\n"
            f"        for {n['f1']} in {n['files']}:\n            if {n['f1']}.endswith({n['pattern']}[1:]):\n"
            f"                {n['total']} += os.path.getsize(os.path.join({n['base']}, {n['f1']}))\n"
            f"    return {n['total']}\n\n\nclass {n['cls']}:\n    def __init__(self, {n['root']}):\n"
            f"        self.{n['root']} = {n['root']}\n        self.{n['cache']} = {{}}\n\n"
            f"    def {n['get']}(self, {n['pattern']}):\n        if {n['pattern']} not in self.{n['cache']}:\n"
            f"            self.{n['cache']}[{n['pattern']}] = {n['f']}(self.{n['root']}, {n['pattern']})\n"
            f"        return self.{n['cache']}[{n['pattern']}]\n")


NAMES = dict(f="tree_size", root="root", pattern="pattern", total="total", base="base", dirs="dirs", files="files",
             f1="name", cls="SizeCache", cache="sizes", get="size_of")


def test_renamed_identifiers_and_look_alike_letters_do_not_hide_a_copy():
    """A type-2 clone (every name changed) or a copy whose names use Cyrillic look-alikes of Latin letters
    shared under 10 % of its 13-grams with the original as written; read with the placeholder, all of them."""
    original = function_module(NAMES)
    renamed = function_module({k: f"v_{i}" for i, k in enumerate(NAMES)})
    look_alike = function_module({k: v.replace("a", "\u0430").replace("e", "\u0435").replace("o", "\u043e")
                                  for k, v in NAMES.items()})
    assert look_alike != original and renamed != original
    rows = overlap_with([original], [("renamed.py", renamed), ("look_alike.py", look_alike)])
    assert [r.share for r in rows] == [1.0, 1.0]


def test_prose_in_strings_and_comments_is_not_a_placeholder():
    """Two docstrings or comment blocks of different words are not copies of each other (a placeholder for
    every word of prose made any two sentences alike), nor are two calls of different builtins."""
    doc_a = '"""' + " ".join(f"alpha{i} reads the file and returns its size" for i in range(6)) + '"""\n'
    doc_b = '"""' + " ".join(f"beta{i} writes a table then closes the stream" for i in range(6)) + '"""\n'
    comments_a = "".join(f"# {w} of the cache is kept\n" for w in ("most", "part", "none", "all") * 3)
    comments_b = "".join(f"# {w} in the list was sorted\n" for w in ("each", "one", "item", "row") * 3)
    calls_a, calls_b = "x = [len(y) for y in z]\n" * 4, "x = [abs(y) for y in z]\n" * 4
    rows = overlap_with([doc_a, comments_a, calls_a], [("doc.py", doc_b), ("comments.py", comments_b), ("calls.py", calls_b)])
    assert [r.share for r in rows] == [0.0, 0.0, 0.0]
