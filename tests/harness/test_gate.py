"""The release gate: exit 0/1/2, the criteria holding a release back, required ids, stale results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.harness.release_gate import decide
from shiptwo.checkout import run_info
from shiptwo.harness.results import load_results
from shiptwo.harness.spec import load_spec

from shiptwo.harness.results import FAIL, PASS

GOLDEN = Path(__file__).parents[1] / "golden"
SPEC = str(GOLDEN / "spec.yaml")
# The gate judges this checkout: results must name its commit and the spec's SHA-256 to count.
HEAD = run_info(Path(__file__).parent, "", "")["commit"]
SPEC_SHA = load_spec(SPEC).sha256
RUN = {"commit": HEAD, "dirty": False, "spec_sha256": SPEC_SHA, "profile": "default", "time": "t"}
MODEL2 = ["AC-G2-001", "AC-G2-002", "AC-G2-003", "AC-G2-004", "AC-G2-005", "AC-G2-006", "AC-G2-007", "AC-G2-008"]


def _write_results(tmp_path: Path, outcomes: dict[str, str], **entry_overrides) -> str:
    entries = {cid: {"outcome": o, "profile": "default", "commit": HEAD, "spec_sha256": SPEC_SHA, "time": "t",
                     **entry_overrides.get(cid, {})}
               for cid, o in outcomes.items()}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": 1, "run": RUN, "criteria": entries}))
    return str(path)


def test_release_when_ship_pct_and_required_met(tmp_path, capsys):
    outcomes = {cid: PASS for cid in MODEL2}
    outcomes["AC-G2-005"] = FAIL  # 8 of 9 weight units pass: above the 50% floor
    path = _write_results(tmp_path, outcomes)
    assert main(["gate", "--model", "model2", "--spec", SPEC, "--results", path]) == 0
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): RELEASE — ship-% 88.9%" in out and "AC-G2-005" not in out


def _golden_results_at_head(tmp_path: Path) -> str:
    """The golden results as if run on this checkout (its deliberately stale entry stays stale)."""
    doc = json.loads((GOLDEN / "results.json").read_text())
    old_head = doc["run"]["commit"]
    for entry in [doc["run"], *doc["criteria"].values()]:
        if entry.get("commit") == old_head:
            entry["commit"] = HEAD
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_hold_names_every_criterion_below_the_floor(tmp_path, capsys):
    assert main(["gate", "--model", "model2", "--spec", SPEC, "--results", _golden_results_at_head(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): HOLD" in out
    assert "AC-G2-002 FAIL: AC-G2-002: measured 0.04 D/N vs threshold >= 20" in out
    assert "AC-G2-003 BLOCKED: blocked by AC-G2-002 (own outcome PASS)" in out
    assert "AC-G2-005 SKIPPED: skipped: no llama.cpp build on this machine" in out
    assert "AC-G2-008 NOT RUN: stale result: commit 0ld0ld0ld0ld" in out
    assert "AC-G2-001" not in out


def test_required_criterion_holds_back_despite_ship_pct(tmp_path, capsys):
    outcomes = {cid: PASS for cid in MODEL2}
    outcomes["AC-G2-001"] = FAIL
    path = _write_results(tmp_path, outcomes, **{"AC-G2-001": {"message": "AC-G2-001: measured 2 defects"}})
    assert main(["gate", "--model", "model2", "--spec", SPEC, "--results", path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "  AC-G2-001 FAIL [required]: AC-G2-001: measured 2 defects" and len(out) == 2


def test_stale_pass_is_refused_unless_allowed(tmp_path):
    outcomes = {cid: PASS for cid in MODEL2}
    path = _write_results(tmp_path, outcomes, **{"AC-G2-001": {"commit": "old"}})
    spec, results = load_spec(SPEC), load_results(path)
    strict = decide(spec, results, ["model2"])[0]
    assert not strict.released and strict.holdbacks[0].cid == "AC-G2-001" and "stale" in strict.holdbacks[0].why
    assert decide(spec, results, ["model2"], allow_stale=True)[0].released


def test_model_not_run_is_held(tmp_path, capsys):
    path = _write_results(tmp_path, {cid: PASS for cid in MODEL2})
    assert main(["gate", "--spec", SPEC, "--results", path]) == 1
    out = capsys.readouterr().out
    assert "model1 (MODEL-1): HOLD — ship-% not run" in out and "AC-G1-001 NOT RUN" in out
    assert "model2 (MODEL-2): RELEASE" in out


@pytest.mark.parametrize("content, expected", [
    ("{broken", "malformed JSON"),
    ('{"run": {"commit": "a", "spec_sha256": "b", "profile": "default", "time": "t"}, "criteria": {"AC-G2-001": {"outcome": "GREAT"}}}',
     "criteria.AC-G2-001: missing 'profile'"),
    ('[1, 2]', "not a shiptwo results file"),
])
def test_malformed_results_exit_2_with_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "results.json"
    path.write_text(content)
    assert main(["gate", "--spec", SPEC, "--results", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and expected in err[0]


def test_missing_file_unknown_model_and_bad_spec_exit_2(tmp_path, capsys):
    assert main(["gate", "--spec", SPEC, "--results", str(tmp_path / "none.json")]) == 2
    assert "cannot read results" in capsys.readouterr().err
    path = _write_results(tmp_path, {"AC-G2-001": PASS})
    assert main(["gate", "--model", "model9", "--spec", SPEC, "--results", path]) == 2
    assert "unknown model 'model9'" in capsys.readouterr().err
    bad_spec = tmp_path / "spec.yaml"
    bad_spec.write_text("models: [")
    assert main(["gate", "--spec", str(bad_spec), "--results", path]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    with pytest.raises(ShiptwoError, match="unknown outcome 'GREAT'"):
        _bad = tmp_path / "r2.json"
        _bad.write_text(json.dumps({"run": RUN, "criteria": {"AC-G2-001": {"outcome": "GREAT", "profile": "default", "commit": "a", "time": "t"}}}))
        load_results(_bad)


@pytest.mark.parametrize("change, why", [
    ({"commit": "0123456789ab"}, "is not the checkout"),
    ({"dirty": True}, "uncommitted working tree"),
    ({"spec_sha256": "f" * 64}, "another version of the spec"),
])
def test_pass_from_other_code_or_spec_is_not_evidence(tmp_path, change, why):
    outcomes = {cid: PASS for cid in MODEL2}
    path = _write_results(tmp_path, outcomes, **{"AC-G2-001": change})
    decision = decide(load_spec(SPEC), load_results(path), ["model2"], checkout={"commit": HEAD})[0]
    assert not decision.released and why in decision.holdbacks[0].why
