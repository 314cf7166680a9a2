"""A baseline is shown on its own terms: the outcomes and figures its run recorded under the thresholds
in force then, with a change of threshold between the runs stated, never read as a change of the model."""

from __future__ import annotations

import pytest

from shiptwo.harness.report import build_report, render
from shiptwo.harness.results import Results
from shiptwo.harness.spec import load_spec

# Today's spec. The baseline ran when AC-T2-001 needed >= 30 (loosened since) and AC-T2-003 >= 10 (tightened).
SPEC = """\
models:
  model2: {name: MODEL-2}
criteria:
  - {id: AC-T2-001, model: model2, title: loosened, metric: score, comparison: ">=", threshold: 20, unit: pts, weight: 2, class: data}
  - {id: AC-T2-002, model: model2, title: unchanged, metric: score, comparison: ">=", threshold: 5, unit: pts, class: data}
  - {id: AC-T2-003, model: model2, title: tightened, metric: score, comparison: ">=", threshold: 20, unit: pts, class: data}
"""
OLD_SPEC = "0" * 64


def _entry(cid: str, measured: float, threshold: float, spec_sha256: str) -> dict:
    met = measured >= threshold
    leg = {"metric": "score", "measured": measured, "interval": None, "n": None, "judged_on": "point", "judged": measured,
           "comparison": ">=", "threshold": threshold, "unit": "pts", "met": met}
    return {"id": cid, "outcome": "PASS" if met else "FAIL", "measured": measured, "comparison": ">=",
            "threshold": threshold, "legs": [leg], "profile": "default", "commit": "c", "time": "t",
            "spec_sha256": spec_sha256}


def _results(path, spec_sha256: str, thresholds: dict) -> Results:
    """The same model's figures (25, 9, 15), judged under `thresholds`."""
    figures = {"AC-T2-001": 25.0, "AC-T2-002": 9.0, "AC-T2-003": 15.0}
    return Results({"commit": "c", "spec_sha256": spec_sha256, "profile": "default", "time": "t"},
                   {cid: _entry(cid, figures[cid], thresholds[cid], spec_sha256) for cid in figures}, str(path))


@pytest.fixture
def report(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.yaml")
    current = _results(tmp_path / "results.json", spec.sha256, {"AC-T2-001": 20, "AC-T2-002": 5, "AC-T2-003": 20})
    baseline = _results(tmp_path / "old.json", OLD_SPEC, {"AC-T2-001": 30, "AC-T2-002": 5, "AC-T2-003": 10})
    return build_report(spec, current, baseline=baseline)


def test_the_baseline_keeps_its_recorded_outcomes_and_states_the_threshold_change(report):
    rows = {r["id"]: r for r in report["baseline"]["criteria"]}
    # the recorded outcomes, as the baseline's run judged them: neither a forged PASS nor a stale one
    assert [(rows[c]["before"], rows[c]["after"]) for c in rows] == [("FAIL", "PASS"), ("PASS", "PASS"), ("PASS", "FAIL")]
    loosened, unchanged, tightened = rows["AC-T2-001"], rows["AC-T2-002"], rows["AC-T2-003"]
    assert (loosened["threshold_changed"], loosened["threshold_before"], loosened["threshold_after"],
            loosened["before_today"]) == (True, ">= 30", ">= 20", "PASS")
    assert (tightened["threshold_before"], tightened["threshold_after"], tightened["before_today"]) == (">= 10", ">= 20", "FAIL")
    assert not unchanged["threshold_changed"] and report["baseline"]["threshold_changes"] == ["AC-T2-001", "AC-T2-003"]
    text = render(report)
    assert "| AC-T2-001 | FAIL → PASS; threshold >= 30 → >= 20, baseline under today's: PASS | 25 → 25 |" in text
    assert "| AC-T2-003 | PASS → FAIL; threshold >= 10 → >= 20, baseline under today's: FAIL | 15 → 15 |" in text
    assert "| AC-T2-002 | PASS → PASS | 9 → 9 |" in text
    assert "another version of the spec (`000000000000`)" in text


def test_a_change_of_threshold_is_not_a_change_of_ship_pct(report):
    """The same figures on both sides: recorded ship-% 50 % (FAIL 2 + PASS 1 + PASS 1 of 4), today's
    thresholds give 75 % before and after, so the model changed by nothing."""
    (model,) = report["baseline"]["models"]
    assert (model["before"], model["before_today"], model["after"], model["delta"]) == ("50.0%", "75.0%", "75.0%", 0.0)
    assert "| model2 | 50.0% (75.0% under today's thresholds) | 75.0% | +0.0 pts |" in render(report)


def test_a_baseline_pass_its_own_recorded_threshold_contradicts_still_shows_as_fail(tmp_path):
    """Judged on its own terms, not waved through: an outcome edited to PASS misses the threshold it recorded."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.yaml")
    current = _results(tmp_path / "results.json", spec.sha256, {"AC-T2-001": 20, "AC-T2-002": 5, "AC-T2-003": 20})
    baseline = _results(tmp_path / "old.json", OLD_SPEC, {"AC-T2-001": 30, "AC-T2-002": 5, "AC-T2-003": 10})
    baseline.criteria["AC-T2-001"]["outcome"] = "PASS"
    rows = {r["id"]: r for r in build_report(spec, current, baseline=baseline)["baseline"]["criteria"]}
    assert rows["AC-T2-001"]["before"] == "FAIL"


def test_an_entry_that_recorded_no_legs_is_no_threshold_change(tmp_path):
    """A test that errored before measuring records no legs, only the primary threshold: under the same
    spec, a criterion with extra legs has not changed its thresholds (the row said `== 0 → == 0; ...`)."""
    (tmp_path / "spec.yaml").write_text(SPEC + "  - {id: AC-T2-004, model: model2, title: legs, metric: score, comparison: \">=\", "
                                         "threshold: 1, unit: pts, class: data, legs: [{metric: leaks, comparison: \"==\", "
                                         "threshold: 0, unit: docs}]}\n")
    spec = load_spec(tmp_path / "spec.yaml")
    runs = []
    for name in ("results.json", "old.json"):
        run = _results(tmp_path / name, spec.sha256, {"AC-T2-001": 20, "AC-T2-002": 5, "AC-T2-003": 20})
        run.criteria["AC-T2-004"] = {"id": "AC-T2-004", "outcome": "ERROR", "message": "boom", "measured": None, "comparison": ">=",
                                     "threshold": 1, "legs": [], "profile": "default", "commit": "c", "time": "t",
                                     "spec_sha256": spec.sha256}
        runs.append(run)
    rows = {r["id"]: r for r in build_report(spec, runs[0], baseline=runs[1])["baseline"]["criteria"]}
    assert not rows["AC-T2-004"]["threshold_changed"], rows["AC-T2-004"]
