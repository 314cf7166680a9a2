"""Re-derive a recorded PASS instead of trusting it: what the gate checks before it counts one.

For a PASS entry: every leg of the current spec holds on the recorded measurement under the
recorded profile's threshold (the primary figure agrees with its leg record); every test bound to
the criterion ran; every evidence file exists with its recorded SHA-256; the per-sample file yields
the judged figure again; every registered evidence verifier agrees. Each disagreement is one line.
"""

from __future__ import annotations

import random
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.harness.bindings import key_of_nodeid
from shiptwo.harness.evidence import is_file_record, read_samples, same_figure, sample_statistic, verify_file_record
from shiptwo.harness.results import format_number, missing_tests
from shiptwo.harness.spec import Criterion
from shiptwo.harness.verifiers import RecheckRequest, evidence_verifiers, rechecker, required_evidence


def _recorded_legs(entry: dict) -> dict[str, dict]:
    legs = entry.get("legs")
    if not legs:  # a record without legs (schema 1): its primary figure only
        return {}
    return {g.get("metric"): g for g in legs if isinstance(g, dict)}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _interval(value) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) is not None for v in value):
        return float(value[0]), float(value[1])
    return None


def outcome_disagreements(criterion: Criterion, entry: dict, profile: str) -> list[str]:
    """Every leg must hold on the recorded figures against the current spec's threshold for `profile`,
    for the entry and for each of its tests' own records (a criterion with several tests)."""
    problems = _leg_disagreements(criterion, entry, profile)
    nodeids = sorted(entry.get("nodeids") or [])
    if len(nodeids) > 1 and sorted(r.get("nodeid") for r in entry.get("per_test") or []) != nodeids:
        problems.append(f"the records of its {len(nodeids)} tests do not match the tests that ran")
    for rec in entry.get("per_test") or []:
        problems += [f"{rec.get('nodeid')}: {p}" for p in _leg_disagreements(criterion, rec, profile)]
    return problems


def _leg_disagreements(criterion: Criterion, entry: dict, profile: str) -> list[str]:
    problems = []
    recorded = _recorded_legs(entry)
    if not recorded:
        problems.append("no leg records: the result predates re-derivable results (rerun the criterion)")
    primary = recorded.get(criterion.metric, {})
    if recorded and not same_figure(_number(entry.get("measured")), _number(primary.get("measured"))):
        problems.append(f"measured {entry.get('measured')!r} differs from its leg record {primary.get('measured')!r}")
    for leg in criterion.legs:
        rec = recorded.get(leg.metric)
        if rec is None:
            if recorded:
                problems.append(f"leg {leg.metric!r} has no recorded measurement")
            continue
        value, interval = _number(rec.get("measured")), _interval(rec.get("interval"))
        judged = leg.judged_value(value, interval)
        limit = f"{leg.comparison} {format_number(leg.threshold_for(profile, criterion.id))}"
        if not leg.holds(judged, profile):
            what = "measured" if leg.metric == criterion.metric else leg.metric
            shown = format_number(value) if leg.judged_on == "point" else f"{leg.judged_on} {format_number(judged)}"
            problems.append(f"{what} {shown} {leg.unit} does not meet threshold {limit} "
                            f"(current spec, profile {profile}), yet PASS was recorded")
    return problems


def coverage_disagreements(entry: dict, bound: set[str] | None, cid: str = "") -> list[str]:
    """The criterion has a bound test, the entry was recorded for it, every test bound to it (static scan,
    plus what the run expected) ran, and every test recorded as run is one of them: `--rerun` hands the recorded node ids to pytest, so one naming
    another path (a conftest.py in the git-ignored reports/) or an option would run the forger's code."""
    if bound is None:
        return ["cannot check that every bound test ran: no acceptance directory to scan"]
    if not bound:  # else "every bound test ran" holds of nothing: a PASS no test produced
        return [f"no test in acceptance/ is bound to {cid or 'the criterion'}: nothing ran for this PASS"]
    if cid and entry.get("id") != cid:  # the scan binds functions: a parameter bound to another id runs the same one
        return [f"the entry was recorded for {entry.get('id')!r}, not {cid} (its tests ran another criterion)"]
    nodeids = entry.get("nodeids") or []
    problems = [f"recorded test {n} is not bound to {cid or 'the criterion'} in acceptance/"
                for n in sorted(set(nodeids)) if key_of_nodeid(n) not in bound]
    missing = missing_tests(set(bound) | set(entry.get("expected") or []), nodeids)
    return problems + ([f"bound tests did not run in this result: {', '.join(missing)}"] if missing else [])


def evidence_disagreements(entry: dict, cid: str = "") -> list[str]:
    """Every evidence file and the sample file exist with their recorded SHA-256; registered verifiers
    agree; a record naming a path without its SHA-256, or one the criterion's verifiers require but
    missing, is a disagreement (else deleting a key would skip the check)."""
    problems = []
    records = dict(entry.get("evidence") or {})
    if entry.get("samples") is not None:
        records["samples"] = entry["samples"]
    verifiers = evidence_verifiers()
    for name in required_evidence(cid):
        if not (isinstance(records.get(name), dict) and "path" in records[name]):
            problems.append(f"evidence {name!r}: required for {cid} (a verifier is registered for it), but not recorded")
    for name, value in sorted(records.items()):
        if isinstance(value, dict) and "path" in value and "sha256" not in value:
            problems.append(f"evidence {name!r}: {value['path']} is recorded without its SHA-256")
            continue
        if not is_file_record(value):
            continue
        problem = verify_file_record(name, value)
        if problem:
            problems.append(problem)
        elif name in verifiers:
            problems += [f"evidence {name!r}: {p}" for p in verifiers[name](Path(value["path"]))]
    return problems


def sample_disagreements(criterion: Criterion, entry: dict) -> list[str]:
    """The per-sample file yields the recorded figure of the leg the spec derives from it."""
    rule = criterion.samples
    if rule is None:
        return []
    rec = entry.get("samples")
    if not is_file_record(rec) or not rec.get("sha256"):
        return ["the spec derives this figure from samples, but no per-sample file is recorded"]
    try:
        samples = read_samples(rec["path"])
    except ShiptwoError as exc:
        return [f"samples: {exc}"]
    metric = rule.metric or criterion.metric
    recorded = _number(_recorded_legs(entry).get(metric, {}).get("measured"))
    value = sample_statistic(samples, rule.statistic)
    if not same_figure(value, recorded):
        return [f"samples give {metric} = {format_number(value)} ({rule.statistic} of {len(samples)}), "
                f"recorded {format_number(recorded)}"]
    return []


def rederive(criterion: Criterion, entry: dict, profile: str, bound: set[str] | None) -> list[str]:
    """Every disagreement between a PASS entry and what the gate re-derives (empty: it stands)."""
    problems = outcome_disagreements(criterion, entry, profile)
    problems += coverage_disagreements(entry, bound, criterion.id)
    problems += evidence_disagreements(entry, criterion.id)
    if not any(p.startswith("evidence 'samples'") for p in problems):
        problems += sample_disagreements(criterion, entry)
    return problems


def recheck(criterion: Criterion, entry: dict, profile: str, k: int, seed: int | None = None) -> tuple[list[str], str]:
    """Re-execute `k` randomly chosen samples through the registered rechecker; (disagreements, note)."""
    rule = criterion.samples
    if rule is None or not rule.recheck:
        return [], ""
    fn = rechecker(rule.recheck)
    if fn is None:
        return [f"--recheck: no rechecker registered for kind {rule.recheck!r}"], ""
    samples = read_samples(entry["samples"]["path"])
    chosen = random.Random(seed).sample(samples, min(k, len(samples)))
    params = {name: criterion.param(name, profile) for name in criterion.parameters}
    problems = fn(RecheckRequest(criterion.id, profile, entry, chosen, params, criterion.model))
    return [f"recheck: {p}" for p in problems], f"rechecked {len(chosen)} of {len(samples)} samples ({rule.recheck})"
