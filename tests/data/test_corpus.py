"""Corpus: deterministic splits, dedupe, NFC, reported skips, JSONL/Parquet, manifest."""

from __future__ import annotations

import json
import unicodedata

import pytest

from shiptwo.data.corpus import CorpusConfig, load_corpus, split_of
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json

PROV = {"data_source": "unit test files", "data_license": "CC0-1.0"}


def _cfg(src, **kw) -> CorpusConfig:
    return CorpusConfig(source=str(src), validation_fraction=0.3, test_fraction=0.3, **PROV, **kw)


@pytest.fixture
def pydir(tmp_path):
    d = tmp_path / "src"
    (d / "pkg").mkdir(parents=True)
    for i in range(12):
        (d / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n", encoding="utf-8")
    (d / "pkg" / "dup.py").write_text("def f0(x):\n    return x + 0\n", encoding="utf-8")  # duplicate of m0
    (d / "latin.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))  # not UTF-8
    (d / "nfd.py").write_text(unicodedata.normalize("NFD", "s = 'café'\n"), encoding="utf-8")
    return d


def test_split_is_a_stable_function_of_the_path():
    cfg = CorpusConfig(validation_fraction=0.1, test_fraction=0.1)
    paths = [f"a/b{i}.py" for i in range(2000)]
    splits = [split_of(p, cfg) for p in paths]
    assert splits == [split_of(p, cfg) for p in paths]
    assert 0.07 < splits.count("validation") / 2000 < 0.13 and 0.07 < splits.count("test") / 2000 < 0.13


def test_dedupe_nfc_and_undecodable_files_are_reported(pydir):
    corpus = load_corpus(_cfg(pydir))
    docs = [d for s in corpus.splits.values() for d in s]
    assert corpus.duplicates_removed == 1
    assert [s["path"] for s in corpus.skipped] == ["latin.py"] and "UTF-8" in corpus.skipped[0]["reason"]
    nfd = next(d for d in docs if d.path == "nfd.py")
    assert nfd.text == unicodedata.normalize("NFC", nfd.text) and "café" in nfd.text
    assert len(docs) == 13  # 12 + nfd; the duplicate and the latin-1 file are out, and said so
    assert load_corpus(_cfg(pydir)).fingerprint() == corpus.fingerprint()


def test_manifest_records_counts_and_provenance(pydir, tmp_path):
    corpus = load_corpus(_cfg(pydir))
    m = corpus.manifest({"train": 10, "validation": 2, "test": 3})
    path = atomic_write_json(tmp_path / "corpus_manifest.json", m)
    back = json.loads(path.read_text())
    assert back["data_source"] == PROV["data_source"] and back["data_license"] == PROV["data_license"]
    assert back["duplicates_removed"] == 1 and back["skipped_count"] == 1
    assert back["splits"]["test"]["tokens"] == 3
    assert sum(back["splits"][s]["files"] for s in ("train", "validation", "test")) == 13


def test_cap_is_deterministic_and_recorded(pydir):
    a, b = load_corpus(_cfg(pydir, max_files=9)), load_corpus(_cfg(pydir, max_files=9))
    assert a.capped_from == 13 and a.fingerprint() == b.fingerprint()
    assert sum(len(s) for s in a.splits.values()) == 9


def test_jsonl_and_parquet_with_content_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "data"
    d.mkdir()
    rows = [{"content": f"x = {i}\n"} for i in range(10)]
    (d / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad json\n" + json.dumps({"text": 1}) + "\n")
    pq.write_table(pa.table({"content": [f"y = {i}\n" for i in range(10)]}), d / "b.parquet")
    corpus = load_corpus(_cfg(d))
    assert sum(len(s) for s in corpus.splits.values()) == 20
    reasons = sorted(s["reason"] for s in corpus.skipped)
    assert len(reasons) == 2 and any("JSON" in r for r in reasons) and any("content" in r for r in reasons)


def test_stdlib_default_excludes_tests_and_names_its_source():
    corpus = load_corpus(CorpusConfig(max_files=30, validation_fraction=0.2, test_fraction=0.2))
    paths = [d.path for s in corpus.splits.values() for d in s]
    assert len(paths) == 30 and not any("/test/" in f"/{p}" or "site-packages" in p for p in paths)
    assert corpus.data_source.startswith("CPython ") and corpus.data_license == "PSF-2.0"
    assert corpus.capped_from > 30


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(ShiptwoError, match="does not exist"):
        load_corpus(_cfg(tmp_path / "nope"))
    with pytest.raises(ShiptwoError, match="data_source"):
        load_corpus(CorpusConfig(source=str(tmp_path)))
    with pytest.raises(ShiptwoError, match="fraction"):
        CorpusConfig(validation_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ShiptwoError, match="no documents"):
        load_corpus(_cfg(tmp_path))


def _rows(a: int, b: int) -> str:
    return "\n".join(f"    {i:#06x}: {i + 7:#06x},  # CHARACTER {i}" for i in range(a, b))


def _codec(name: str, a: int, b: int) -> str:
    """A generated-codec-like module (the stdlib's encodings/*.py): a header naming it and a table."""
    return f'""" Codec {name} generated from {name.upper()}.TXT """\n\ndecoding_map = {{\n{_rows(a, b)}\n}}\n'


def _path_in(split: str, cfg: CorpusConfig, stem: str) -> str:
    return next(p for p in (f"{stem}{i}.py" for i in range(1000)) if split_of(p, cfg) == split)


@pytest.fixture
def leaky(tmp_path):
    """Unrelated modules, a codec table in train, a near-copy of it (79 % of its 13-grams in train) in
    validation, and in test a fragment of that copy (11 % in train alone, 99 % once the copy joins train)."""
    d = tmp_path / "leaky"
    d.mkdir()
    cfg = _cfg(d)
    for i in range(12):
        (d / f"m{i}.py").write_text(f"def f{i}(x, y):\n    return [x * {i} + y for _ in range({i + 3})]\n", encoding="utf-8")
    names = {"train": _path_in("train", cfg, "cp_a"), "validation": _path_in("validation", cfg, "cp_b"),
             "test": _path_in("test", cfg, "cp_c")}
    (d / names["train"]).write_text(_codec("cp1", 0, 100), encoding="utf-8")
    (d / names["validation"]).write_text(_codec("cp2", 0, 125), encoding="utf-8")
    (d / names["test"]).write_text("extra = {\n" + _rows(95, 125) + "\n}\n", encoding="utf-8")
    return d, names


def test_held_out_near_duplicates_of_train_move_to_train_and_are_recorded(leaky):
    d, names = leaky
    corpus = load_corpus(_cfg(d))
    paths = {s: [doc.path for doc in corpus.splits[s]] for s in ("train", "validation", "test")}
    assert names["validation"] in paths["train"] and names["validation"] not in paths["validation"]
    # the fragment is a near-copy of the moved copy only: it follows in a second round
    assert names["test"] in paths["train"] and names["test"] not in paths["test"]
    assert paths["train"] == sorted(paths["train"])
    nd = corpus.manifest()["near_duplicates"]
    assert nd["moved_to_train"] == 2 and nd["ngram_tokens"] == 13 and nd["share_at_least"] == 0.7
    first, second = nd["documents"]
    assert (first["path"], first["from"], first["round"]) == (names["validation"], "validation", 1)
    assert 0.7 <= first["share"] < 0.9 and first["in_train"] < first["ngrams"]
    assert (second["path"], second["from"], second["round"]) == (names["test"], "test", 2)
    assert nd["held_out_checked"] == sum(1 for s in ("validation", "test") for _ in paths[s]) + 2
    # every document is still there, once; and the result is deterministic
    assert sum(len(p) for p in paths.values()) == 15
    assert load_corpus(_cfg(d)).fingerprint() == corpus.fingerprint()


def test_near_duplicate_share_is_a_recipe_setting(leaky):
    d, names = leaky
    corpus = load_corpus(_cfg(d, near_duplicate_share=0.95))  # the 79 % copy stays, and so does its fragment
    assert names["validation"] in [doc.path for doc in corpus.splits["validation"]]
    assert corpus.near_duplicates["moved_to_train"] == 0 and corpus.near_duplicates["documents"] == []


@pytest.mark.parametrize("kw, field", [({"near_duplicate_share": 0}, "near_duplicate_share"),
                                       ({"near_duplicate_share": 1.5}, "near_duplicate_share"),
                                       ({"near_duplicate_ngram": 0}, "near_duplicate_ngram"),
                                       ({"near_duplicate_ngram": True}, "near_duplicate_ngram")])
def test_bad_near_duplicate_settings_are_one_line_errors(kw, field):
    with pytest.raises(ShiptwoError, match=f"corpus: {field}"):
        CorpusConfig(**kw)
