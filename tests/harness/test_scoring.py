"""Ship-% math: properties with hypothesis, BLOCKED from the DAG, ranking of open criteria."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.harness.results import Results
from shiptwo.harness.scoring import opportunities, score, ship_percentage
from shiptwo.harness.spec import Criterion, Model, Spec

from shiptwo.harness.results import BLOCKED, ERROR, FAIL, NOT_RUN, NO_TEST, PASS, SKIPPED, STATUSES

RUN = {"commit": "abc", "profile": "default", "spec_sha256": "x", "time": "t"}
EXECUTED = (PASS, FAIL, ERROR, SKIPPED)

weights = st.floats(min_value=0.01, max_value=100, allow_nan=False)
statuses = st.sampled_from(STATUSES)
items = st.lists(st.tuples(weights, statuses), min_size=1, max_size=30)


def _spec(deps: dict[str, tuple[str, ...]], weight: dict[str, float] | None = None) -> Spec:
    """A one-model spec whose criteria have the given prerequisites (ids in insertion order)."""
    criteria = {
        cid: Criterion(cid, "model2", cid, "m", "==", 0.0, "u", "data", (weight or {}).get(cid, 1.0), tuple(d))
        for cid, d in deps.items()
    }
    return Spec("spec.yaml", "sha", {"model2": Model("model2", "MODEL-2")}, criteria)


def _results(outcomes: dict[str, str], **overrides) -> Results:
    entries = {cid: {"outcome": o, "profile": "default", "commit": "abc", "time": "t", **overrides} for cid, o in outcomes.items()}
    return Results(RUN, entries)


@given(items)
def test_ship_pct_is_within_bounds(pairs):
    assert 0.0 <= ship_percentage(pairs) <= 100.0


@given(items, st.integers(min_value=0, max_value=29))
def test_a_pass_never_lowers_ship_pct(pairs, index):
    index %= len(pairs)
    improved = list(pairs)
    improved[index] = (pairs[index][0], PASS)
    assert ship_percentage(improved) >= ship_percentage(pairs) - 1e-9


@given(items, st.floats(min_value=0.001, max_value=1000))
def test_weight_scale_invariance(pairs, factor):
    scaled = [(w * factor, s) for w, s in pairs]
    assert abs(ship_percentage(scaled) - ship_percentage(pairs)) < 1e-6


@given(items)
def test_only_pass_counts(pairs):
    as_blocked = [(w, BLOCKED if s == PASS else s) for w, s in pairs]
    assert ship_percentage(as_blocked) == 0.0
    all_pass = [(w, PASS) for w, _ in pairs]
    assert abs(ship_percentage(all_pass) - 100.0) < 1e-9


DAG = {"AC-T-001": (), "AC-T-002": ("AC-T-001",), "AC-T-003": ("AC-T-002",), "AC-T-004": ()}


@settings(max_examples=60)
@given(st.fixed_dictionaries({cid: st.sampled_from(EXECUTED) for cid in DAG}))
def test_blocked_counts_as_not_passed_and_fixing_never_lowers(outcomes):
    spec = _spec(DAG)
    card = score(spec, _results(outcomes))
    for cid, status in card.statuses.items():
        if status.status == BLOCKED:
            assert status.blocked_by and all(card.statuses[b].status != PASS for b in status.blocked_by)
    passed = sum(1 for s in card.statuses.values() if s.status == PASS)
    assert card.models["model2"].ship_pct == 100.0 * passed / len(DAG)
    for cid in DAG:
        fixed = score(spec, _results({**outcomes, cid: PASS}))
        assert fixed.models["model2"].ship_pct >= card.models["model2"].ship_pct


def test_blocked_names_prerequisite_and_root_and_keeps_own_outcome():
    card = score(_spec(DAG), _results({"AC-T-001": FAIL, "AC-T-002": PASS, "AC-T-003": FAIL, "AC-T-004": PASS}))
    two, three = card.statuses["AC-T-002"], card.statuses["AC-T-003"]
    assert (two.status, two.own, two.blocked_by) == (BLOCKED, PASS, ("AC-T-001",))
    assert (three.status, three.own, three.blocked_by, three.root_blockers) == (BLOCKED, FAIL, ("AC-T-002",), ("AC-T-001",))
    assert card.models["model2"].ship_pct == 25.0
    assert card.models["model2"].counts[BLOCKED] == 2


def test_model_without_results_is_not_run_not_zero():
    card = score(_spec(DAG), Results(RUN, {}))
    assert card.models["model2"].ship_pct is None
    assert all(s.status in (NOT_RUN, BLOCKED) for s in card.statuses.values())


def test_no_test_versus_not_run():
    card = score(_spec(DAG), _results({"AC-T-001": PASS}), bound_ids={"AC-T-001", "AC-T-002"})
    assert card.statuses["AC-T-002"].status == NOT_RUN
    assert card.statuses["AC-T-004"].status == NO_TEST


def test_stale_entries_flagged_and_rejected_on_request():
    results = _results({"AC-T-001": PASS, "AC-T-004": PASS})
    results.criteria["AC-T-004"]["commit"] = "old"
    card = score(_spec(DAG), results)
    assert card.statuses["AC-T-004"].status == PASS and "commit old" in card.statuses["AC-T-004"].stale
    strict = score(_spec(DAG), results, reject_stale=True)
    assert strict.statuses["AC-T-004"].status == NOT_RUN


def test_headline_ship_pct_counts_current_results_only():
    """A stale PASS is shown (status PASS, stale reason) but not counted; --allow-stale counts it."""
    results = _results({"AC-T-001": PASS, "AC-T-004": PASS})
    results.criteria["AC-T-004"]["commit"] = "old"
    card = score(_spec(DAG), results)
    assert card.models["model2"].ship_pct == 25.0 and card.models["model2"].stale_passed_weight == 1.0
    assert score(_spec(DAG), results, count_stale=True).models["model2"].ship_pct == 50.0
    assert [o.cid for o in opportunities(card)].count("AC-T-004") == 1  # re-running it would move ship-%


def test_opportunities_count_unblocked_dependents():
    spec = _spec(DAG, weight={"AC-T-004": 3.0})
    card = score(spec, _results({"AC-T-001": FAIL, "AC-T-002": PASS, "AC-T-003": PASS, "AC-T-004": FAIL}))
    ranked = {o.cid: o for o in opportunities(card)}
    # fixing 001 passes 001 and unblocks 002 and 003: 3 of 6 weight units; fixing 004 alone is 3 of 6 too
    assert abs(ranked["AC-T-001"].gain_pct - 50.0) < 1e-9
    assert ranked["AC-T-001"].unblocks == ("AC-T-002", "AC-T-003")
    assert abs(ranked["AC-T-004"].gain_pct - 50.0) < 1e-9
    assert [o.cid for o in opportunities(card)][:2] == ["AC-T-001", "AC-T-004"]
