"""The results store: one record per executed test, combined per criterion into results.json.

Flow: an acceptance test calls `CriterionCheck.check(measured, evidence=..., legs=...)`; the plugin
turns the test's outcome into a record (`make_record`), ships it to the controller (xdist-safe),
and `write_results` merges the combined entries into `reports/results.json`. A criterion is PASS
only when every test bound to it ran in this session and passed; a partial run is NOT RUN.

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
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json
from shiptwo.harness.bindings import key_of_nodeid
from shiptwo.harness.entry_shape import entry_type_problem, too_large
from shiptwo.harness.evidence import describe_evidence, keep_file, read_samples, same_figure, sample_statistic
from shiptwo.harness.spec import Criterion, Leg

PASS = "PASS"
FAIL = "FAIL"
ERROR = "ERROR"
BLOCKED = "BLOCKED"
SKIPPED = "SKIPPED"
NOT_RUN = "NOT RUN"
NO_TEST = "NO TEST"
STATUSES = (PASS, FAIL, ERROR, BLOCKED, SKIPPED, NOT_RUN, NO_TEST)
RESULTS_SCHEMA_VERSION = 2
OUTCOME_ORDER = (ERROR, FAIL, SKIPPED, PASS)  # combining several tests of one criterion: worst wins
RECORDED_OUTCOMES = (*OUTCOME_ORDER, NOT_RUN)  # NOT RUN: only some of the criterion's tests ran
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


class CriterionCheck:
    """What the `criterion` fixture hands a test: the criterion, its threshold and parameters for
    this profile, a surviving evidence directory, and `check`."""

    def __init__(self, criterion: Criterion, profile: str, evidence_dir: Path | None = None):
        self.spec = criterion
        self.id = criterion.id
        self.profile = profile
        self.threshold = criterion.threshold_for(profile)
        self._evidence_dir = evidence_dir
        self.called = False
        self.passed = False
        self.measured: float | None = None
        self.message = ""
        self.evidence: dict = {}
        self.legs: list[dict] = []
        self.interval: list[float] | None = None
        self.n: int | None = None
        self.samples: dict | None = None

    @property
    def evidence_dir(self) -> Path:
        """reports/evidence/<run-id>/<criterion-id>/ (created): write evidence files here, not in tmp_path."""
        if self._evidence_dir is None:
            raise ShiptwoError(f"{self.id}: no evidence directory (the criterion was not made by the shiptwo plugin)")
        self._evidence_dir.mkdir(parents=True, exist_ok=True)
        return self._evidence_dir

    def param(self, name: str):
        """The spec's value of parameter `name` for this run's profile."""
        return self.spec.param(name, self.profile)

    def evaluate(self, measured, evidence: dict | None = None, legs: dict | None = None,
                 interval=None, n: int | None = None, samples=None) -> bool:
        """Judge every leg and record, without failing the test; returns whether all legs hold.
        A leg the spec has but `legs` lacks (or one it does not have) is a ShiptwoError (ERROR)."""
        if self.called:
            raise ShiptwoError(f"{self.id}: criterion.check called twice in one test")
        extra = _leg_figures(self.spec, legs)
        self.interval, self.n = _interval(self.id, "measured", interval), _count(self.id, "measured", n)
        figures = {self.spec.metric: (as_number(measured), self.interval, self.n), **extra}
        if samples is not None:
            self.samples = self._samples(samples, figures)
        elif self.spec.samples is not None:
            raise ShiptwoError(f"{self.id}: the spec judges this criterion on samples: pass samples=PATH")
        self.called = True
        self.evidence = describe_evidence(evidence, self._evidence_dir)
        self.measured = figures[self.spec.metric][0]
        self.legs = [judge_leg(leg, *figures[leg.metric], self.profile) for leg in self.spec.legs]
        self.passed = all(g["met"] for g in self.legs)
        self.message = leg_message(self.id, self.spec.legs, self.legs, self.profile, measured)
        return self.passed

    def _samples(self, path, figures: dict) -> dict:
        """Validate the per-sample file, keep it, and check that it yields the judged figure."""
        samples = read_samples(path)
        record = {**keep_file(Path(path), self._evidence_dir, "samples"), "n": len(samples)}
        rule = self.spec.samples
        if rule is not None:
            metric = rule.metric or self.spec.metric
            value = sample_statistic(samples, rule.statistic)
            if not same_figure(value, figures[metric][0]):
                raise ShiptwoError(f"{self.id}: {path}: the samples give {metric} = {format_number(value)} "
                                   f"({rule.statistic} of {len(samples)}), but {format_number(figures[metric][0])} was measured")
            record.update(statistic=rule.statistic, metric=metric, value=value)
        return record

    def check(self, measured, evidence: dict | None = None, legs: dict | None = None,
              interval=None, n: int | None = None, samples=None) -> float | None:
        """Record the measurements and fail the test (pytest.fail) when a leg does not hold."""
        import pytest

        if not self.evaluate(measured, evidence, legs, interval, n, samples):
            pytest.fail(self.message, pytrace=False)
        return self.measured


def _interval(cid: str, metric: str, interval) -> list[float] | None:
    if interval is None:
        return None
    try:
        lo, hi = (as_number(v) for v in interval)
    except (TypeError, ValueError):
        raise ShiptwoError(f"{cid}: {metric}: interval must be (low, high), not {interval!r}") from None
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ShiptwoError(f"{cid}: {metric}: interval must be two numbers, low <= high, not {interval!r}")
    return [lo, hi]


def _count(cid: str, metric: str, n) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ShiptwoError(f"{cid}: {metric}: n must be a non-negative integer, not {n!r}")
    return int(n)


def _leg_figures(criterion: Criterion, legs: dict | None) -> dict:
    """metric -> (value, interval, n) for every extra leg; a missing or unknown leg is an error."""
    legs = dict(legs or {})
    out = {}
    for leg in criterion.extra_legs:
        if leg.metric not in legs:
            raise ShiptwoError(f"{criterion.id}: leg {leg.metric!r} not measured (pass legs={{{leg.metric!r}: value}})")
        raw = legs.pop(leg.metric)
        if isinstance(raw, dict):
            out[leg.metric] = (as_number(raw.get("value")), _interval(criterion.id, leg.metric, raw.get("interval")),
                               _count(criterion.id, leg.metric, raw.get("n")))
        else:
            out[leg.metric] = (as_number(raw), None, None)
    if legs:
        raise ShiptwoError(f"{criterion.id}: legs {sorted(legs)} are not in the spec (legs: "
                           f"{', '.join(g.metric for g in criterion.extra_legs) or 'none besides the primary'})")
    return out


def judge_leg(leg: Leg, value: float | None, interval, n, profile: str) -> dict:
    """One leg's record: what was measured, what was compared, against what, and whether it held."""
    judged = leg.judged_value(value, interval)
    return {"metric": leg.metric, "measured": None if _is_nan(value) else value, "interval": interval, "n": n,
            "judged_on": leg.judged_on, "judged": None if _is_nan(judged) else judged,
            "comparison": leg.comparison, "threshold": leg.threshold_for(profile), "unit": leg.unit,
            "met": leg.holds(judged, profile)}


def leg_message(cid: str, legs: tuple[Leg, ...], records: list[dict], profile: str, raw_measured=None) -> str:
    """`ID: measured X unit vs threshold >= T (profile p)[; leg Y unit vs ...][ — not met]`."""
    parts = []
    for i, (leg, rec) in enumerate(zip(legs, records)):
        what = "measured" if i == 0 else leg.metric
        limit = f"threshold {leg.comparison} {format_number(rec['threshold'])}"
        if rec["measured"] is None:
            parts.append(f"{what} {raw_measured if i == 0 else rec['measured']!r} is not a number vs {limit}")
            continue
        bound = ""
        if leg.judged_on != "point":
            bound = f" ({leg.judged_on} {format_number(rec['judged'])})" if rec["judged"] is not None else f" (no interval for {leg.judged_on})"
        parts.append(f"{what} {format_number(rec['measured'])} {leg.unit}{bound} vs {limit}")
    text = f"{cid}: {parts[0]} (profile {profile})" + "".join(f"; {p}" for p in parts[1:])
    return text if all(r["met"] for r in records) else text + " — not met"


# --- records and entries --------------------------------------------------------------------


@dataclass
class TestOutcome:
    """What pytest said about one phase of a bound test."""

    __test__ = False  # not a test class, whatever its name

    phase: str  # setup | call | teardown
    outcome: str  # passed | failed | skipped
    duration: float
    text: str = ""  # failure text or skip reason


def _is_nan(value: float | None) -> bool:
    return value is not None and math.isnan(value)


def make_record(nodeid: str, criterion: Criterion, profile: str, result: TestOutcome, check: CriterionCheck | None,
                expected: list[str] = ()) -> dict:
    """One test's record for its criterion (a JSON-safe dict, shipped between xdist processes);
    `expected` names every test bound to the criterion (node ids or `file::function` keys)."""
    status, message, reason = _classify(result, check)
    called = check is not None and check.called
    return {
        "id": criterion.id,
        "nodeid": nodeid,
        "expected": sorted(expected),
        "outcome": status,
        "reason": reason,
        "message": message,
        "measured": check.measured if called and not _is_nan(check.measured) else None,
        "threshold": criterion.threshold_for(profile),
        "comparison": criterion.comparison,
        "unit": criterion.unit,
        "legs": check.legs if called else [],
        "interval": check.interval if called else None,
        "n": check.n if called else None,
        "samples": check.samples if called else None,
        "parameters": {name: criterion.param(name, profile) for name in criterion.parameters},
        "profile": profile,
        "duration_s": round(result.duration, 6),
        "evidence": check.evidence if called else {},
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


def missing_tests(expected, nodeids) -> list[str]:
    """The expected tests (node ids or `file::function` keys) that none of `nodeids` ran."""
    ran = set(nodeids) | {key_of_nodeid(n) for n in nodeids}
    return sorted(e for e in set(expected) if e not in ran)


def combine_records(records: list[dict]) -> dict:
    """One entry per criterion from its tests' records: the worst outcome decides (all must pass),
    and a criterion whose bound tests did not all run is NOT RUN unless what ran already failed.
    Where every test passed, each with a count over n items and no interval, n is their total."""
    rank = {status: i for i, status in enumerate(OUTCOME_ORDER)}
    worst = min(records, key=lambda r: rank.get(r["outcome"], 0))
    entry = dict(worst)
    entry.pop("nodeid", None)
    entry["nodeids"] = sorted(r["nodeid"] for r in records)
    entry["expected"] = sorted({e for r in records for e in r.get("expected", [])})
    entry["duration_s"] = round(sum(r["duration_s"] for r in records), 6)
    evidence = {}
    for r in records:
        evidence.update(r["evidence"])
    entry["evidence"] = evidence
    if len(records) > 1:  # each test's own figures, so the gate re-derives every one, not only the worst
        entry["per_test"] = [{k: r.get(k) for k in ("nodeid", "outcome", "measured", "n", "legs")} for r in records]
        if all(r["outcome"] == PASS and r.get("n") is not None and not r.get("interval") for r in records):
            entry["n"] = sum(r["n"] for r in records)  # one exhaustive count split over several tests
    missing = missing_tests(entry["expected"], entry["nodeids"])
    if missing:
        entry["missing_tests"] = missing
        if entry["outcome"] in (PASS, SKIPPED):
            entry["ran_outcome"] = entry["outcome"]
            entry["outcome"] = NOT_RUN
            entry["message"] = (f"{entry['id']}: only {len(entry['nodeids'])} of its bound tests ran "
                                f"(outcome {entry['ran_outcome']}); not run: {', '.join(missing)}")
    return entry


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
    huge = too_large(doc["run"], "run")
    if huge:
        raise ShiptwoError(f"{path}: {huge}")
    for cid, entry in doc["criteria"].items():
        if not isinstance(entry, dict):
            raise ShiptwoError(f"{path}: criteria.{cid}: entry must be a mapping")
        for key in _ENTRY_KEYS:
            if key not in entry:
                raise ShiptwoError(f"{path}: criteria.{cid}: missing {key!r}")
        if entry["outcome"] not in RECORDED_OUTCOMES:
            raise ShiptwoError(f"{path}: criteria.{cid}: unknown outcome {entry['outcome']!r}")
        problem = entry_type_problem(entry)
        if problem:
            raise ShiptwoError(f"{path}: criteria.{cid}: {problem}")
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
    except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit, nesting past its stack
        raise ShiptwoError(f"{path}: malformed JSON: {str(exc).split(':')[0]}") from None
    return results_from_json(doc, str(path))


_RUN_FIELDS = ("commit", "dirty", "time", "spec_sha256", "run_id", "environment")  # environment: issue 13's fingerprint


def merge_results(existing: Results | None, entries: dict[str, dict], run: dict) -> Results:
    """Per-criterion merge: this run's entries replace old ones; the rest keep their own run data."""
    merged = dict(existing.criteria) if existing else {}
    for cid, entry in entries.items():
        merged[cid] = {**entry, **{k: run[k] for k in _RUN_FIELDS if k in run}}
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
