"""Leakage evidence (AC-SHIP2-003): a planted near-duplicate in validation is counted, and the real
default-profile corpus, as the build loads it, leaves none in either held-out split."""

from __future__ import annotations

import hashlib

from shiptwo.checks.leakage import split_overlap, texts_overlap
from shiptwo.data.corpus import Corpus, Document, load_corpus
from shiptwo.data.overlap import NEAR_DUPLICATE_SHARE, NGRAM


def _doc(path: str, text: str) -> Document:
    return Document(path, text, hashlib.sha256(text.encode()).hexdigest())


def _table(name: str, offset: int) -> str:
    rows = "\n".join(f"    {i:#06x}: {i + offset:#06x},  # CHARACTER {i}" for i in range(60))
    return f'"""Codec {name}"""\ndecoding_map = {{\n{rows}\n}}\n'


def test_planted_near_duplicate_in_validation_is_counted():
    corpus = Corpus(splits={
        "train": [_doc("cp1.py", _table("cp1", 0)), _doc("walk.py", "import os\nprint(os.listdir('.'))\n" * 3)],
        "validation": [_doc("cp2.py", _table("cp2", 0)), _doc("cp3.py", _table("cp3", 5)), _doc("tiny.py", "x = 1\n")],
        "test": [_doc("cp4.py", _table("cp4", 9))],
    }, data_source="unit", data_license="CC0-1.0")
    val = split_overlap(corpus, "validation", near_duplicate_share=0.7, ngram_tokens=13)
    assert val["split"] == "validation" and val["reference"] == "train"
    assert val["near_duplicates"] == 1 and val["near_duplicate_documents"][0]["path"] == "cp2.py"
    assert val["documents"] == 3 and val["documents_judged"] == 2 and val["documents_too_short"] == 1
    assert 0 < val["ngram_share"] < 1
    assert split_overlap(corpus, "test", 0.7, 13)["near_duplicates"] == 0
    # a stricter share does not count the planted copy (its header differs): the cut is the caller's
    assert split_overlap(corpus, "validation", 0.999, 13)["near_duplicates"] == 0
    graded = texts_overlap(corpus, [("task/0", _table("cp9", 0)), ("task/1", "def add(a, b):\n    return a + b\n")], 0.7, 13)
    assert graded["near_duplicates"] == 1 and graded["documents_too_short"] == 1


def test_default_profile_corpus_leaves_no_held_out_near_duplicate():
    from shiptwo.training.recipes import load_recipe

    corpus = load_corpus(load_recipe("model2", "default").corpus)
    for split in ("validation", "test"):  # the literature's cut (shiptwo.data.overlap), as the spec's leg uses it
        s = split_overlap(corpus, split, NEAR_DUPLICATE_SHARE, NGRAM)
        assert s["near_duplicates"] == 0, [(d["path"], d["share"]) for d in s["near_duplicate_documents"]]
    moved = corpus.manifest()["near_duplicates"]["documents"]
    assert all(m["share"] >= NEAR_DUPLICATE_SHARE and m["from"] in ("validation", "test") for m in moved)
    train = {d.path for d in corpus.splits["train"]}
    assert all(m["path"] in train for m in moved)
