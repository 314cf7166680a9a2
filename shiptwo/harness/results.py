"""The results store: one record per executed test, combined per criterion into results.json.

Flow: an acceptance test calls `CriterionCheck.check(measured, evidence)`; the plugin turns the
test's outcome into a record (`make_record`), ships it to the controller (xdist-safe), and at the
end of the session `write_results` merges the combined entries into `reports/results.json`.

Merge policy across runs: results.json is merged per criterion. A criterion executed in this run
replaces its old entry; every other entry is kept as it was, with its own commit, profile and
time, so `pytest -m model1` followed by `pytest -m model2` yields both models. The top-level
`run` block describes the latest run; the report flags entries whose commit or profile differ
from it, and the gate refuses such stale entries unless told otherwise.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json, sha256_bytes, sha256_file
from shiptwo.harness.spec import Criterion

PASS = "PASS"
FAIL = "FAIL"
ERROR = "ERROR"
BLOCKED = "BLOCKED"
SKIPPED = "SKIPPED"
NOT_RUN = "NOT RUN"
NO_TEST = "NO TEST"
STATUSES = (PASS, FAIL, ERROR, BLOCKED, SKIPPED, NOT_RUN, NO_TEST)
RESULTS_SCHEMA_VERSION = 1
OUTCOME_ORDER = (ERROR, FAIL, SKIPPED, PASS)  # combining several tests of one criterion: worst wins
EVIDENCE_LOSS_CURVE = "loss_curve"  # evidence key whose file the report links as an image


# --- measuring ------------------------------------------------------------------------------


def as_number(value) -> float | None:
    """`value` as a float when it is a real number (bool, int, float, numpy/torch scalar), else None."""
    if hasattr(value, "item") and not isinstance(value, numbers.Real):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            return None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def format_number(value: float | None) -> str:
    """Short human form of a measurement or threshold (`None` when missing)."""
    if value is None:
        return "None"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _hash_directory(path: Path) -> dict:
    """A combined SHA-256 over (relative name, file SHA-256) of every file, sorted."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    lines = [f"{p.relative_to(path).as_posix()}  {sha256_file(p)}" for p in files]
    return {"path": str(path.absolute()), "sha256": sha256_bytes("\n".join(lines).encode()), "files": len(files)}


def describe_evidence(evidence: dict | None) -> dict:
    """JSON-safe evidence; values naming an existing file or directory carry its SHA-256."""
    described = {}
    for key, value in (evidence or {}).items():
        if isinstance(value, (str, os.PathLike)) and str(value) and Path(value).exists():
            path = Path(value)
            described[key] = _hash_directory(path) if path.is_dir() else {"path": str(path.absolute()), "sha256": sha256_file(path)}
        elif isinstance(value, os.PathLike):  # a Path that names nothing: say so, never drop it
            described[key] = {"path": str(Path(value).absolute()), "sha256": None, "missing": True}
        else:
            try:
                json.dumps(value, allow_nan=True)
                described[key] = value
            except (TypeError, ValueError):
                described[key] = repr(value)
    return described


class CriterionCheck:
    """What the `criterion` fixture hands a test: the criterion, its threshold, and `check`."""

    def __init__(self, criterion: Criterion, profile: str):
        self.spec = criterion
        self.id = criterion.id
        self.profile = profile
        self.threshold = criterion.threshold_for(profile)
        self.called = False
        self.passed = False
        self.measured: float | None = None
        self.message = ""
        self.evidence: dict = {}

    def evaluate(self, measured, evidence: dict | None = None) -> bool:
        """Compare and record without failing the test; returns whether the criterion is met."""
        if self.called:
            raise ShiptwoError(f"{self.id}: criterion.check called twice in one test")
        self.called = True
        self.evidence = describe_evidence(evidence)
        number = as_number(measured)
        self.measured = number
        unit = self.spec.unit
        limit = f"threshold {self.spec.comparison} {format_number(self.threshold)} (profile {self.profile})"
        if number is None or math.isnan(number):
            self.passed = False
            self.message = f"{self.id}: measured {measured!r} is not a number vs {limit}"
        else:
            self.passed = self.spec.is_met(number, self.profile)
            verdict = "" if self.passed else " — not met"
            self.message = f"{self.id}: measured {format_number(number)} {unit} vs {limit}{verdict}"
        return self.passed

    def check(self, measured, evidence: dict | None = None) -> float | None:
        """Record the measurement and fail the test (pytest.fail) when the threshold is not met."""
        import pytest

        if not self.evaluate(measured, evidence):
            pytest.fail(self.message, pytrace=False)
        return self.measured


# --- records and entries --------------------------------------------------------------------


@dataclass
class TestOutcome:
    """What pytest said about one phase of a bound test."""

    phase: str  # setup | call | teardown
    outcome: str  # passed | failed | skipped
    duration: float
    text: str = ""  # failure text or skip reason


def _is_nan(value: float | None) -> bool:
    return value is not None and math.isnan(value)


def make_record(nodeid: str, criterion: Criterion, profile: str, result: TestOutcome, check: CriterionCheck | None) -> dict:
    """One test's record for its criterion (a JSON-safe dict, shipped between xdist processes)."""
    status, message, reason = _classify(result, check)
    return {
        "id": criterion.id,
        "nodeid": nodeid,
        "outcome": status,
        "reason": reason,
        "message": message,
        "measured": check.measured if check and check.called and not _is_nan(check.measured) else None,
        "threshold": criterion.threshold_for(profile),
        "comparison": criterion.comparison,
        "unit": criterion.unit,
        "profile": profile,
        "duration_s": round(result.duration, 6),
        "evidence": check.evidence if check and check.called else {},
    }


def _classify(result: TestOutcome, check: CriterionCheck | None) -> tuple[str, str, str]:
    """(status, message, skip reason) for one phase outcome of a bound test."""
    called = check is not None and check.called
    if result.outcome == "skipped":
        return SKIPPED, "", result.text or "skipped"
    if result.phase != "call" and result.outcome == "failed":
        return ERROR, f"error in {result.phase}: {result.text}", ""
    if result.outcome == "passed":
        if not called:
            return ERROR, "test passed without calling criterion.check", ""
        return (PASS, check.message, "") if check.passed else (FAIL, check.message, "")
    if not called:
        return ERROR, f"raised before criterion.check: {result.text}", ""
    if not check.passed:
        return FAIL, check.message, ""
    return FAIL, f"failed after criterion.check passed: {result.text}", ""


def combine_records(records: list[dict]) -> dict:
    """One entry per criterion from its tests' records: the worst outcome decides (all must pass)."""
    rank = {status: i for i, status in enumerate(OUTCOME_ORDER)}
    worst = min(records, key=lambda r: rank.get(r["outcome"], 0))
    entry = dict(worst)
    entry.pop("nodeid", None)
    entry["nodeids"] = sorted(r["nodeid"] for r in records)
    entry["duration_s"] = round(sum(r["duration_s"] for r in records), 6)
    evidence = {}
    for r in records:
        evidence.update(r["evidence"])
    entry["evidence"] = evidence
    return entry


# --- run identity ---------------------------------------------------------------------------


# --- the store ------------------------------------------------------------------------------


@dataclass
class Results:
    """A results.json document: the latest run and one entry per criterion."""

    run: dict
    criteria: dict[str, dict] = field(default_factory=dict)
    path: str = ""

    def to_json(self) -> dict:
        return {"schema": RESULTS_SCHEMA_VERSION, "run": self.run, "criteria": self.criteria}


_RUN_KEYS = ("commit", "spec_sha256", "profile", "time")
_ENTRY_KEYS = ("outcome", "profile", "commit", "time")


def results_from_json(doc, path: str = "results") -> Results:
    """Validate a parsed results document; ShiptwoError names the file and the field at fault."""
    if not isinstance(doc, dict) or not isinstance(doc.get("run"), dict) or not isinstance(doc.get("criteria"), dict):
        raise ShiptwoError(f"{path}: not a shiptwo results file (needs 'run' and 'criteria' mappings)")
    for key in _RUN_KEYS:
        if key not in doc["run"]:
            raise ShiptwoError(f"{path}: run: missing {key!r}")
    for cid, entry in doc["criteria"].items():
        if not isinstance(entry, dict):
            raise ShiptwoError(f"{path}: criteria.{cid}: entry must be a mapping")
        for key in _ENTRY_KEYS:
            if key not in entry:
                raise ShiptwoError(f"{path}: criteria.{cid}: missing {key!r}")
        if entry["outcome"] not in OUTCOME_ORDER:
            raise ShiptwoError(f"{path}: criteria.{cid}: unknown outcome {entry['outcome']!r}")
    return Results(doc["run"], doc["criteria"], path)


def load_results(path: str | Path) -> Results:
    """Read and validate a results.json."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot read results: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShiptwoError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from exc
    return results_from_json(doc, str(path))


def merge_results(existing: Results | None, entries: dict[str, dict], run: dict) -> Results:
    """Per-criterion merge: this run's entries replace old ones; the rest keep their own run data."""
    merged = dict(existing.criteria) if existing else {}
    for cid, entry in entries.items():
        merged[cid] = {**entry, "commit": run["commit"], "dirty": run["dirty"], "time": run["time"], "spec_sha256": run["spec_sha256"]}
    return Results(run, dict(sorted(merged.items())))


def write_results(path: str | Path, entries: dict[str, dict], run: dict) -> Results:
    """Merge `entries` into the results file at `path` under a lock, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        existing = load_results(path) if path.exists() else None
        merged = merge_results(existing, entries, run)
        atomic_write_json(path, merged.to_json())
    merged.path = str(path)
    return merged
