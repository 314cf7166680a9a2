"""`shiptwo gate --rebuild` judges a build-time criterion on the rebuild's own clock.

AC-SHIP2-004's figure is the build time the store's manifest records, a record the build wrote: the
gate printed the rebuild's time beside it and judged nothing, so a build time edited down (in the
manifest and results together) or measured on another machine released. The toy project's criteria
run through the real plugin; its AC-R2-001 stands in for a build-time criterion (registered as one).
"""

from __future__ import annotations

import pytest

from shiptwo.checks.gate_verifiers import BUILD_CLOCK_CRITERIA
from shiptwo.harness import verifiers
from shiptwo.harness.rebuild_clock import RebuildOutcome, build_clock_disagreements
from shiptwo.harness.release_gate import REFUSED, RELEASE, decide
from shiptwo.harness.results import load_results
from shiptwo.harness.spec import load_spec
from shiptwo.paths import project_root
from tests.harness.test_gate_rerun import TEST, Project

BOUND = {"AC-R2-001": {"acceptance/test_r.py::test_latency"}, "AC-R2-002": {"acceptance/test_r.py::test_defects"}}


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Project:
    """Both criteria pass: AC-R2-001 records 4 (threshold <= 10)."""
    project = Project(tmp_path_factory.mktemp("clock"))
    (project.root / "acceptance" / "test_r.py").write_text(TEST.replace("25.0", "4.0"))
    project.run_acceptance()
    assert load_results(project.results).criteria["AC-R2-001"]["outcome"] == "PASS"
    return project


@pytest.fixture
def timed(monkeypatch):
    """AC-R2-001 registered as a build-time criterion, for this test only."""
    monkeypatch.setattr(verifiers, "_BUILD_CLOCK", {"AC-R2-001"})


def _decide(project: Project, outcome: RebuildOutcome):
    spec, results = load_spec(project.spec_path), load_results(project.results)
    [d] = decide(spec, results, allow_stale=True, bound=BOUND, rebuild=lambda entries, profile: outcome)
    return d


def test_a_rebuild_within_the_budget_and_near_the_recorded_time_releases(honest, timed):
    d = _decide(honest, RebuildOutcome({"model2": []}, {("model2", "default"): 6.0}))
    assert d.verdict == RELEASE and not d.refusals, d.refusals
    assert ("AC-R2-001: build time judged on the rebuild's too (--rebuild): 6.0 s by the store's clock, recorded 4.0 s, "
            "<= 10 ms") in d.notes  # said, not silent


def test_a_rebuild_over_the_budget_refuses_the_build_time_criterion(honest, timed):
    d = _decide(honest, RebuildOutcome({"model2": []}, {("model2", "default"): 12.0}))
    assert d.verdict == REFUSED and {h.cid for h in d.refusals} == {"AC-R2-001"}
    assert ("--rebuild: the rebuild of model2/default took 12.0 s by the store's clock, not <= 10 ms at profile default "
            "(recorded 4.0 s): this checkout's build misses the budget") in [h.why for h in d.refusals]


def test_a_recorded_time_far_under_the_rebuilds_refuses(honest, timed):
    """Within the budget, but the recorded 4 s is under half of the rebuild's 9.5 s: not this build's reading."""
    d = _decide(honest, RebuildOutcome({"model2": []}, {("model2", "default"): 9.5}))
    assert d.verdict == REFUSED
    [refusal] = d.refusals
    assert refusal.cid == "AC-R2-001" and "recorded build time 4.0 s is under 0.5 of the rebuild's 9.5 s" in refusal.why


def test_an_untimed_rebuild_refuses_and_a_failed_one_is_refused_once(honest, timed):
    d = _decide(honest, RebuildOutcome({"model2": []}))
    assert [(h.cid, h.why) for h in d.refusals] == [
        ("AC-R2-001", "--rebuild: no timed rebuild of model2/default, so its build time is not judged on one")]
    failed = "--rebuild: rebuild of model2/default failed: boom"
    d = _decide(honest, RebuildOutcome({"model2": [failed]}))
    assert [(h.cid, h.why) for h in d.refusals] == [("AC-R2-001", failed), ("AC-R2-002", failed)]


def test_an_unregistered_criterion_is_not_judged_on_the_rebuilds_clock(honest):
    assert _decide(honest, RebuildOutcome({"model2": []}, {("model2", "default"): 1000.0})).verdict == RELEASE


def test_ac_ship2_004_is_registered_and_judged_on_its_spec_thresholds():
    spec = load_spec(project_root() / "spec" / "ship-two.yaml")
    assert "AC-SHIP2-004" in BUILD_CLOCK_CRITERIA and "AC-SHIP2-004" in verifiers.build_clock_criteria()
    criterion = spec.criteria["AC-SHIP2-004"]
    assert build_clock_disagreements(criterion, {"measured": 148.0}, "default", 230.0)[0] == []
    [over], _ = build_clock_disagreements(criterion, {"measured": 400.0}, "default", 650.0)  # over the budget only
    assert "took 650.0 s by the store's clock, not <= 600 seconds at profile default" in over
    [under], _ = build_clock_disagreements(criterion, {"measured": 60.0}, "default", 170.0)
    assert "recorded build time 60.0 s is under 0.5 of the rebuild's 170.0 s of model2/default" in under
    assert build_clock_disagreements(criterion, {"measured": 2.0}, "smoke", 5.0)[0] == []  # a few seconds' jitter
    [forged], note = build_clock_disagreements(criterion, {"measured": True}, "smoke", 5.0)
    assert "recorded build time True is not a number" in forged and note == ""
