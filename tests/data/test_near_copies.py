"""Near-copies between validation and test: the test document joins validation, recorded; train is untouched."""

from __future__ import annotations

import pytest

from shiptwo.data.corpus import CorpusConfig, load_corpus, split_of
from shiptwo.errors import ShiptwoError

PROV = {"data_source": "unit test files", "data_license": "CC0-1.0"}


def _cfg(src, **kw) -> CorpusConfig:
    return CorpusConfig(source=str(src), validation_fraction=0.3, test_fraction=0.3, **PROV, **kw)


def _rows(a: int, b: int) -> str:
    return "\n".join(f"    {i:#06x}: {i + 7:#06x},  # CHARACTER {i}" for i in range(a, b))


def _codec(name: str, a: int, b: int) -> str:
    return f'""" Codec {name} generated from {name.upper()}.TXT """\n\ndecoding_map = {{\n{_rows(a, b)}\n}}\n'


def _fragment(a: int, b: int) -> str:
    return "extra = {\n" + _rows(a, b) + "\n}\n"


def _path_in(split: str, cfg: CorpusConfig, stem: str) -> str:
    return next(p for p in (f"{stem}{i}.py" for i in range(1000)) if split_of(p, cfg) == split)


def _corpus_dir(tmp_path, validation: dict[str, str], test: dict[str, str], unrelated: int = 12):
    """Unrelated modules, plus the given validation and test documents (stem -> text), each written at a
    path the hash puts in that split; returns the directory and each stem's path."""
    d = tmp_path / "src"
    d.mkdir()
    cfg = _cfg(d)
    for i in range(unrelated):
        (d / f"m{i}.py").write_text(f"def f{i}(x, y):\n    return [x * {i} + y for _ in range({i + 3})]\n", encoding="utf-8")
    names = {}
    for split, docs in (("validation", validation), ("test", test)):
        for stem, text in docs.items():
            names[stem] = _path_in(split, cfg, stem)
            (d / names[stem]).write_text(text, encoding="utf-8")
    return d, names


def _where(corpus, path: str) -> str:
    return next(s for s, docs in corpus.splits.items() if path in [d.path for d in docs])


def test_a_test_document_copying_validation_joins_validation(tmp_path):
    """A test document that is most of a validation document (a fragment of it) joins validation; the
    validation document stays, train is what the path hash and the train rule made it."""
    d, names = _corpus_dir(tmp_path, {"cp_v": _codec("cp2", 0, 100)}, {"cp_t": _fragment(0, 60)})
    corpus = load_corpus(_cfg(d))
    assert _where(corpus, names["cp_t"]) == "validation" and _where(corpus, names["cp_v"]) == "validation"
    record = corpus.manifest()["held_out_near_copies"]
    assert record["moved_to_validation"] == 1 and record["share_at_least"] == 0.7 and record["ngram_tokens"] == 13
    (m,) = record["documents"]
    assert (m["path"], m["from"], m["to"], m["because"], m["round"]) == (
        names["cp_t"], "test", "validation", "copies the validation split", 1)
    assert m["share"] >= 0.7 and m["in_other"] <= m["ngrams"]
    assert corpus.near_duplicates["moved_to_train"] == 0
    assert [doc.path for doc in corpus.splits["validation"]] == sorted(doc.path for doc in corpus.splits["validation"])
    assert load_corpus(_cfg(d)).fingerprint() == corpus.fingerprint()


def test_a_test_document_holding_a_validation_document_joins_validation(tmp_path):
    """The other direction: a validation document that is most of one test document (60 of its 100 rows,
    so the test document has < 70 % of its n-grams in validation) moves that test document."""
    d, names = _corpus_dir(tmp_path, {"cp_v": _fragment(0, 60)}, {"cp_t": _codec("cp3", 0, 100), "other": _codec("x", 500, 560)})
    corpus = load_corpus(_cfg(d))
    assert _where(corpus, names["cp_t"]) == "validation" and _where(corpus, names["other"]) == "test"
    (m,) = corpus.held_out_near_copies["documents"]
    assert m["path"] == names["cp_t"] and m["because"] == f"holds validation document {names['cp_v']}"
    assert m["share"] < 0.7  # it moved for holding the fragment, not for copying the split


def test_a_mutual_pair_moves_only_its_test_document_and_chains_follow(tmp_path):
    """A copy of a validation document in test moves (the pair is then together in validation, nothing
    else moves for it); a test document copying the moved one follows in a second round."""
    d, names = _corpus_dir(tmp_path, {"cp_v": _codec("cp2", 0, 100)},
                           {"cp_t": _codec("cp3", 0, 100) + _fragment(200, 215), "cp_u": _fragment(200, 215)})
    corpus = load_corpus(_cfg(d))
    moves = [(m["path"], m["round"], m["because"]) for m in corpus.held_out_near_copies["documents"]]
    assert moves == [(names["cp_t"], 1, "copies the validation split"), (names["cp_u"], 2, "copies the validation split")]
    assert _where(corpus, names["cp_v"]) == "validation"


def test_a_test_split_emptied_by_the_rule_is_a_one_line_error(tmp_path):
    d, names = _corpus_dir(tmp_path, {"cp_v": _codec("cp2", 0, 100)}, {"cp_t": _fragment(0, 60)}, unrelated=0)
    (d / _path_in("train", _cfg(d), "walk")).write_text("import os\nprint(os.listdir('.'))\n", encoding="utf-8")
    with pytest.raises(ShiptwoError, match=r"split 'test' is empty .*1 test near-copies of validation to validation"):
        load_corpus(_cfg(d))
