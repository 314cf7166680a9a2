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
