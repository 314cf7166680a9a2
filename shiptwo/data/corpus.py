"""The training corpus: documents read from the stdlib, a directory of .py files, or JSONL/Parquet.

Every document is NFC-normalized, exact duplicates are removed by content hash, and the split
(train/validation/test) is a deterministic function of the document's path, so a file never
moves between splits when others are added; with one exception: a held-out document whose
n-grams mostly occur in the train split (a near-duplicate: the stdlib's generated codec tables,
say) goes to train, since it would make the held-out loss optimistic, and a test document that
near-copies the validation split joins validation (shiptwo.data.near_copies says why;
shiptwo.data.overlap how it is measured and why these thresholds). Such a move is recorded in the
manifest with its figures, as are files that do not decode: each skipped file and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import sysconfig
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from shiptwo.data.near_copies import join_held_out_near_copies, move_near_duplicates
from shiptwo.data.overlap import NEAR_DUPLICATE_SHARE, NGRAM
from shiptwo.errors import ShiptwoError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
STDLIB_SOURCE = "stdlib"
STDLIB_LICENSE = "PSF-2.0"
# Directories left out of the stdlib corpus: installed packages and the test suites (test data
# contains deliberately malformed and duplicated code that would poison a small corpus).
STDLIB_EXCLUDED_DIRS = ("site-packages", "test", "tests", "idle_test")
CONTENT_FIELD = "content"


@dataclass(frozen=True)
class CorpusConfig:
    """Where the documents come from and how they are split and capped."""

    source: str = STDLIB_SOURCE  # "stdlib", a directory of .py/.jsonl/.parquet files, or one such file
    validation_fraction: float = 0.05
    test_fraction: float = 0.05
    max_files: int | None = None  # cap: keep the first N documents in hash order (deterministic)
    max_file_bytes: int | None = None  # skip (and report) larger files
    data_source: str | None = None  # provenance override; the stdlib gets its own
    data_license: str | None = None
    # a held-out document with at least this share of its near_duplicate_ngram-token n-grams in train goes to train
    near_duplicate_share: float = NEAR_DUPLICATE_SHARE
    near_duplicate_ngram: int = NGRAM

    def __post_init__(self):
        v, t = self.validation_fraction, self.test_fraction
        if not (0 < v < 1 and 0 < t < 1 and v + t < 1):
            raise ShiptwoError(
                f"corpus: validation_fraction {v} and test_fraction {t} must be in (0, 1) with sum < 1"
            )
        if not 0 < self.near_duplicate_share <= 1:
            raise ShiptwoError(f"corpus: near_duplicate_share {self.near_duplicate_share} must be in (0, 1]")
        if isinstance(self.near_duplicate_ngram, bool) or not isinstance(self.near_duplicate_ngram, int) \
                or self.near_duplicate_ngram < 1:
            raise ShiptwoError(f"corpus: near_duplicate_ngram {self.near_duplicate_ngram!r} must be an integer >= 1")


@dataclass
class Document:
    path: str  # relative path (or file:record for JSONL/Parquet): the split key
    text: str
    sha256: str


@dataclass
class Corpus:
    """Documents per split plus the facts the manifest records."""

    splits: dict[str, list[Document]]
    data_source: str
    data_license: str
    duplicates_removed: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    capped_from: int | None = None  # documents available before max_files applied
    exclusion_rule: str = ""
    near_duplicates: dict = field(default_factory=dict)  # the train rule and each document it moved
    held_out_near_copies: dict = field(default_factory=dict)  # the validation/test rule and each document it moved

    def texts(self, split: str) -> list[str]:
        return [d.text for d in self.splits[split]]

    def fingerprint(self) -> str:
        """SHA-256 over every (split, path, content hash): changes iff the corpus changes."""
        h = hashlib.sha256()
        for split in SPLITS:
            for d in self.splits[split]:
                h.update(f"{split}\0{d.path}\0{d.sha256}\n".encode())
        return h.hexdigest()

    def manifest(self, tokens_per_split: dict[str, int] | None = None) -> dict:
        """The corpus manifest (JSON-ready); token counts are added once a tokenizer exists."""
        out = {
            "data_source": self.data_source,
            "data_license": self.data_license,
            "exclusion_rule": self.exclusion_rule,
            "fingerprint": self.fingerprint(),
            "duplicates_removed": self.duplicates_removed,
            "skipped": self.skipped,
            "skipped_count": len(self.skipped),
            "capped_from": self.capped_from,
            "near_duplicates": self.near_duplicates,
            "held_out_near_copies": self.held_out_near_copies,
            "splits": {
                s: {
                    "files": len(self.splits[s]),
                    "bytes": sum(len(d.text.encode("utf-8")) for d in self.splits[s]),
                    "paths": [d.path for d in self.splits[s]],
                }
                for s in SPLITS
            },
        }
        if tokens_per_split is not None:
            for s in SPLITS:
                out["splits"][s]["tokens"] = int(tokens_per_split[s])
        return out


def split_of(path: str, cfg: CorpusConfig) -> str:
    """The split a document belongs to: a stable function of its path alone."""
    u = _hash_unit(path)
    if u < cfg.validation_fraction:
        return "validation"
    if u < cfg.validation_fraction + cfg.test_fraction:
        return "test"
    return "train"


def _hash_unit(path: str) -> float:
    return int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2**64


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(cfg: CorpusConfig) -> Corpus:
    """Read, normalize, deduplicate, cap and split the documents named by `cfg`."""
    skipped: list[dict] = []
    if cfg.source == STDLIB_SOURCE:
        root = stdlib_dir()
        raw = _read_py_dir(root, STDLIB_EXCLUDED_DIRS, cfg, skipped)
        version = ".".join(map(str, sys.version_info[:3]))
        data_source = cfg.data_source or f"CPython {version} standard library"
        data_license = cfg.data_license or STDLIB_LICENSE
        rule = f"*.py under {root}, excluding directories named {', '.join(STDLIB_EXCLUDED_DIRS)}"
    else:
        root = Path(cfg.source)
        if not root.exists():
            raise ShiptwoError(f"corpus: source {cfg.source} does not exist")
        if not (cfg.data_source and cfg.data_license):
            raise ShiptwoError(f"corpus: source {cfg.source} needs data_source and data_license in the recipe")
        raw = _read_path(root, cfg, skipped)
        data_source, data_license = cfg.data_source, cfg.data_license
        rule = f"*.py, *.jsonl ('{CONTENT_FIELD}' field), *.parquet ('{CONTENT_FIELD}' column) under {root}"
    docs, dups = _dedupe(raw)
    if not docs:
        raise ShiptwoError(f"corpus: source {cfg.source} yielded no documents")
    capped_from = None
    if cfg.max_files is not None and len(docs) > cfg.max_files:
        capped_from = len(docs)
        docs = sorted(docs, key=lambda d: _hash_unit("cap:" + d.path))[: cfg.max_files]
        docs.sort(key=lambda d: d.path)
    splits = {s: [] for s in SPLITS}
    for d in docs:
        splits[split_of(d.path, cfg)].append(d)
    near_duplicates = move_near_duplicates(splits, cfg.near_duplicate_share, cfg.near_duplicate_ngram)
    held_out_near_copies = join_held_out_near_copies(splits, cfg.near_duplicate_share, cfg.near_duplicate_ngram)
    for s in SPLITS:
        if not splits[s]:
            raise ShiptwoError(f"corpus: split {s!r} is empty ({len(docs)} documents, "
                               f"{near_duplicates['moved_to_train']} held-out near-duplicates moved to train, "
                               f"{held_out_near_copies['moved_to_validation']} test near-copies of validation to "
                               "validation); "
                               "raise max_files or its fraction")
    return Corpus(splits, data_source, data_license, dups, skipped, capped_from, rule, near_duplicates,
                  held_out_near_copies)


def _doc(path: str, text: str) -> Document:
    text = unicodedata.normalize("NFC", text)
    return Document(path, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def _dedupe(docs: list[Document]) -> tuple[list[Document], int]:
    """Keep the first document (in path order) of each content hash; empty documents are dropped too."""
    seen: set[str] = set()
    out = []
    for d in sorted(docs, key=lambda d: d.path):
        if d.sha256 in seen or not d.text:
            continue
        seen.add(d.sha256)
        out.append(d)
    return out, len(docs) - len(out)


def _read_py_dir(root: Path, excluded: tuple[str, ...], cfg: CorpusConfig, skipped: list[dict]) -> list[Document]:
    docs = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if set(rel.parts[:-1]) & set(excluded):
            continue
        doc = _read_py_file(f, rel.as_posix(), cfg, skipped)
        if doc is not None:
            docs.append(doc)
    return docs


def _read_py_file(f: Path, rel: str, cfg: CorpusConfig, skipped: list[dict]) -> Document | None:
    try:
        data = f.read_bytes()
    except OSError as exc:
        skipped.append({"path": rel, "reason": f"unreadable: {exc.strerror}"})
        return None
    if cfg.max_file_bytes is not None and len(data) > cfg.max_file_bytes:
        skipped.append({"path": rel, "reason": f"larger than max_file_bytes {cfg.max_file_bytes}"})
        return None
    try:
        return _doc(rel, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        skipped.append({"path": rel, "reason": f"not UTF-8 (byte {exc.start})"})
        return None


def _read_path(root: Path, cfg: CorpusConfig, skipped: list[dict]) -> list[Document]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    base = root.parent if root.is_file() else root
    docs = []
    for f in files:
        rel = f.relative_to(base).as_posix()
        if f.suffix == ".py":
            doc = _read_py_file(f, rel, cfg, skipped)
            if doc is not None:
                docs.append(doc)
        elif f.suffix == ".jsonl":
            docs.extend(_read_jsonl(f, rel, cfg, skipped))
        elif f.suffix == ".parquet":
            docs.extend(_read_parquet(f, rel, cfg, skipped))
        elif root.is_file():
            raise ShiptwoError(f"corpus: {f} is not a .py, .jsonl or .parquet file")
    return docs


def _record(rel: str, n: int, value, cfg: CorpusConfig, skipped: list[dict]) -> Document | None:
    path = f"{rel}:{n}"
    if not isinstance(value, str):
        skipped.append({"path": path, "reason": f"'{CONTENT_FIELD}' missing or not a string"})
        return None
    if cfg.max_file_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > cfg.max_file_bytes:
        skipped.append({"path": path, "reason": f"larger than max_file_bytes {cfg.max_file_bytes}"})
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        skipped.append({"path": path, "reason": "contains lone surrogates (not valid Unicode text)"})
        return None
    return _doc(path, value)


def _read_jsonl(f: Path, rel: str, cfg: CorpusConfig, skipped: list[dict]) -> list[Document]:
    docs = []
    try:
        lines = f.read_bytes().split(b"\n")
    except OSError as exc:
        skipped.append({"path": rel, "reason": f"unreadable: {exc.strerror}"})
        return docs
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append({"path": f"{rel}:{n}", "reason": f"not valid UTF-8 JSON ({type(exc).__name__})"})
            continue
        doc = _record(rel, n, obj.get(CONTENT_FIELD) if isinstance(obj, dict) else None, cfg, skipped)
        if doc is not None:
            docs.append(doc)
    return docs


def _read_parquet(f: Path, rel: str, cfg: CorpusConfig, skipped: list[dict]) -> list[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(f, columns=[CONTENT_FIELD])
    except Exception as exc:  # pyarrow raises several unrelated types for bad files / missing column
        raise ShiptwoError(f"corpus: {f}: cannot read '{CONTENT_FIELD}' column ({str(exc).splitlines()[0]})") from None
    docs = []
    for n, value in enumerate(table.column(CONTENT_FIELD).to_pylist(), start=1):
        doc = _record(rel, n, value, cfg, skipped)
        if doc is not None:
            docs.append(doc)
    return docs
