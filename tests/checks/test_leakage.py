"""Leakage evidence (AC-SHIP2-003): its own lexer and n-gram code agree with the corpus builder's;
planted near-copies are counted, also when the builder's rule is broken; the real default-profile
corpus, as the build loads it, leaves none in either held-out split nor between them."""

from __future__ import annotations

import hashlib
import logging

import pytest

import shiptwo.data.corpus as corpus_module
import shiptwo.data.overlap as overlap_module
from shiptwo.checks.leakage import PLACEHOLDER, held_out_overlap, lexed_tokens, texts_overlap
from shiptwo.data.corpus import Corpus, Document, load_corpus
from shiptwo.data.overlap import IDENTIFIER, NEAR_DUPLICATE_SHARE, NGRAM, code_tokens, overlap_with


def _doc(path: str, text: str) -> Document:
    return Document(path, text, hashlib.sha256(text.encode()).hexdigest())


def _table(name: str, offset: int, rows: int = 60) -> str:
    body = "\n".join(f"    {i:#06x}: {i + offset:#06x},  # CHARACTER {i}" for i in range(rows))
    return f'"""Codec {name}"""\ndecoding_map = {{\n{body}\n}}\n'


TRICKY = [
    "def f(x):\n\treturn x+1  # add one\n",
    's = rb"x\\" y" + """a\nb\\"""" + f\'{k!r:>{w}}\' + u\'caf\u00e9\'\n',
    "total = a + \\\n    b  # continued\nif total: print(len(total), 1.5e-3, 0x1F, 1_000)\n",
    "\u0440\u0430th = \uff50\u200b\u0061th\ufeff(\u00c5ngstr\u00f6m)\n",  # Cyrillic look-alikes, fullwidth, invisible
    "class C:\n    '''doc'''\n    def m(self, *a, **k) -> None: ...\n    x: int = 3\nmatch x:\n    case _: pass\n",
    "async def g():\n    await h()\n    return [i for i in range(3) if i % 2 == 0 or i != 1]\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tokenize_reads_the_text_as_the_builder_does(text):
    tokens, by_tokenize = lexed_tokens(text)
    assert by_tokenize
    assert tokens == [PLACEHOLDER if t == IDENTIFIER else t for t in code_tokens(text)]


def test_text_tokenize_rejects_is_cut_by_the_fallback_and_counted(caplog):
    broken = '"""never closed\nx = 1\n' * 5
    tokens, by_tokenize = lexed_tokens(broken)
    assert not by_tokenize and tokens[:4] == ['"', '"', '"', PLACEHOLDER]
    corpus = Corpus(splits={"train": [_doc("t.py", _table("cp1", 0))], "validation": [_doc("v.py", broken)],
                            "test": [_doc("u.py", _table("cp4", 9))]}, data_source="unit", data_license="CC0-1.0")
    with caplog.at_level(logging.WARNING, logger="shiptwo.checks.leakage"):
        out = held_out_overlap(corpus, 0.7, 13)
    assert out["documents_lexed_by_fallback"] == 1 and out["fallback_documents"] == ["v.py"]
    assert "1 document(s) not Python to tokenize" in caplog.text


def test_planted_near_copies_are_counted_in_every_direction():
    corpus = Corpus(splits={
        "train": [_doc("cp1.py", _table("cp1", 0)), _doc("walk.py", "import os\nprint(os.listdir('.'))\n" * 3)],
        "validation": [_doc("cp2.py", _table("cp2", 0)), _doc("cp3.py", _table("cp3", 5)), _doc("tiny.py", "x = 1\n")],
        "test": [_doc("cp4.py", _table("cp4", 9)), _doc("cp5.py", _table("cp5", 5, 40))],
    }, data_source="unit", data_license="CC0-1.0")
    out = held_out_overlap(corpus, near_duplicate_share=0.7, ngram_tokens=13)
    val, test = out["validation"], out["test"]
    assert val["split"] == "validation" and val["reference"] == "train" and out["lexer"] == "tokenize"
    assert val["near_duplicates"] == 1 and val["near_duplicate_documents"][0]["path"] == "cp2.py"
    assert val["documents"] == 3 and val["documents_judged"] == 2 and val["documents_too_short"] == 1
    assert test["near_duplicates"] == 0 and 0 < val["ngram_share"] < 1
    # cp5 is 40 of cp3's 60 rows: most of cp5 is in validation; cp3 is not mostly in test
    assert [d["path"] for d in out["test_in_validation"]["near_duplicate_documents"]] == ["cp5.py"]
    assert out["validation_in_test"]["near_duplicates"] == 0
    # the same figures as the builder's code, document by document
    builder = {r.path: r for r in overlap_with(corpus.texts("train"), [(d.path, d.text) for d in corpus.splits["validation"]])}
    for row in val["most_overlapping"]:
        assert (row["ngrams"], row["in_reference"]) == (builder[row["path"]].ngrams, builder[row["path"]].in_reference)
    # a stricter share does not count the planted copy (its header differs): the cut is the caller's
    assert held_out_overlap(corpus, 0.999, 13)["validation"]["near_duplicates"] == 0
    graded = texts_overlap(corpus, [("task/0", _table("cp9", 0)), ("task/1", "def add(a, b):\n    return a + b\n")], 0.7, 13)
    assert graded["near_duplicates"] == 1 and graded["documents_too_short"] == 1


def _default_corpus() -> Corpus:
    from shiptwo.training.recipes import load_recipe

    return load_corpus(load_recipe("model2", "default").corpus)


@pytest.fixture(scope="module")
def default_corpus() -> Corpus:
    return _default_corpus()


def test_default_profile_corpus_leaves_no_held_out_near_copy(default_corpus):
    corpus = default_corpus
    out = held_out_overlap(corpus, NEAR_DUPLICATE_SHARE, NGRAM)  # the literature's cut, as the spec's legs use it
    for name in ("validation", "test", "test_in_validation", "validation_in_test"):
        assert out[name]["near_duplicates"] == 0, (name, out[name]["near_duplicate_documents"])
    assert out["documents_lexed_by_fallback"] == 0
    moved = corpus.manifest()["near_duplicates"]["documents"]
    assert all(m["share"] >= NEAR_DUPLICATE_SHARE and m["from"] in ("validation", "test") for m in moved)
    assert "encodings/unicode_escape.py" in [m["path"] for m in moved]  # the renamed copy of raw_unicode_escape.py
    train = {d.path for d in corpus.splits["train"]}
    assert all(m["path"] in train for m in moved)
    builder = {r.path: r for r in overlap_with(corpus.texts("train"), [(d.path, d.text) for d in corpus.splits["test"]])}
    for row in out["test"]["most_overlapping"]:
        assert (row["ngrams"], row["in_reference"]) == (builder[row["path"]].ngrams, builder[row["path"]].in_reference)


def _rules_move_nothing(monkeypatch):
    monkeypatch.setattr(corpus_module, "move_near_duplicates", lambda splits, *_: {"moved_to_train": 0})
    monkeypatch.setattr(corpus_module, "join_held_out_near_copies", lambda splits, *_: {"moved_to_validation": 0})


def _builder_reads_no_tokens(monkeypatch):
    """The builder's tokenizer broken: every document too short to judge, so its rules move nothing (a leg
    that reused that tokenizer counted 0 near-copies among 0 judged documents: a false PASS)."""
    monkeypatch.setattr(overlap_module, "code_tokens", lambda text: [])


@pytest.mark.parametrize("breakage", [_rules_move_nothing, _builder_reads_no_tokens])
def test_a_broken_rule_is_caught_by_the_leg(monkeypatch, breakage, default_corpus):
    """The builder's rules moved nothing (as if broken): the legs' own measure finds what they left, the
    documents the working rule moves in its first round (those >= the share against the path hash's train)."""
    first_round = {(m["from"], m["path"]) for m in default_corpus.near_duplicates["documents"] if m["round"] == 1}
    breakage(monkeypatch)
    out = held_out_overlap(_default_corpus(), NEAR_DUPLICATE_SHARE, NGRAM)
    flagged = {(s, d["path"]) for s in ("validation", "test") for d in out[s]["near_duplicate_documents"]}
    assert flagged == first_round and len(flagged) >= 2  # 7 validation and 2 test documents on CPython 3.11.7
    # the stdlib's CJK codec stubs, near-copies of each other, lie in both held-out splits by path
    assert out["test_in_validation"]["near_duplicates"] >= 1 and out["validation_in_test"]["near_duplicates"] >= 1
