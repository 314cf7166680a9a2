"""The release gate re-derives every verdict: a hand-edited, partial, smoke or tampered results file never releases.

Results are produced the way the plugin produces them (CriterionCheck -> make_record -> combine ->
write_results) with real evidence files, then edited the way a person (or a bug) would edit them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from shiptwo.checkout import run_info
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.harness.bindings import bound_tests, scan_bindings
from shiptwo.harness.release_gate import EXIT_HOLD, EXIT_RELEASE, EXIT_REHEARSAL, HOLD, REFUSED, RELEASE, REHEARSAL, decide
from shiptwo.harness.results import CriterionCheck, TestOutcome, combine_records, load_results, make_record, write_results
from shiptwo.harness.spec import load_spec
from shiptwo.harness.verifiers import _EVIDENCE, register_evidence

GOLDEN = Path(__file__).parents[1] / "golden"
HEAD = run_info(Path(__file__).parent, "", "")["commit"]  # the gate judges this checkout's commit
RUN_ID = "20260101T000000Z-abcdef"

SPEC = """\
models:
  model1: {name: MODEL-1, release_profiles: [full], required: all}
  model2: {name: MODEL-2, release_profiles: [default, full], required: all}
criteria:
  - {id: AC-G2-001, model: model2, title: defects, metric: defects, comparison: "==", threshold: 0, unit: defects, class: packaging}
  - id: AC-G2-002
    model: model2
    title: pass rate from samples
    metric: pass_at_1
    comparison: ">="
    threshold: {smoke: 0, default: 30, full: 30}
    rationale: smoke only proves the plumbing
    unit: "%"
    class: optimization
    samples: {statistic: pass_pct}
  - id: AC-G2-003
    model: model2
    title: two legs
    metric: kl
    comparison: "<="
    threshold: 0.05
    unit: nats
    class: packaging
    legs:
      - {metric: top1, comparison: ">=", threshold: 0.9, unit: share, judged_on: lower_95}
  - {id: AC-G2-004, model: model2, title: two tests, metric: problems, comparison: "==", threshold: 0, unit: problems, class: packaging}
  - {id: AC-G1-001, model: model1, title: model one, metric: failures, comparison: "==", threshold: 0, unit: failures, class: packaging}
"""

TESTS = """\
import pytest

@pytest.mark.ac("AC-G2-001")
def test_001(criterion): ...

@pytest.mark.ac("AC-G2-002")
def test_002(criterion): ...

@pytest.mark.ac("AC-G2-003")
def test_003(criterion): ...

@pytest.mark.ac("AC-G2-004")
def test_004a(criterion): ...

@pytest.mark.ac("AC-G2-004")
def test_004b(criterion): ...

@pytest.mark.ac("AC-G1-001")
def test_101(criterion): ...
"""

NODE = "acceptance/test_g.py::"
NODEIDS = {"AC-G2-001": ["test_001"], "AC-G2-002": ["test_002"], "AC-G2-003": ["test_003"],
           "AC-G2-004": ["test_004a", "test_004b"], "AC-G1-001": ["test_101"]}


def _samples(path: Path, passes: int, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"t/{i}", "prompt_sha256": "0" * 64, "output": f"x{i}",
                                        "outcome": "pass" if i < passes else "fail"}) + "\n" for i in range(n)))
    return path


class Project:
    """A spec, its acceptance tests, and a results file written through the harness's own code."""

    def __init__(self, root: Path):
        self.root = root
        (root / "spec").mkdir()
        (root / "spec" / "ship-two.yaml").write_text(SPEC)
        (root / "acceptance").mkdir()
        (root / "acceptance" / "test_g.py").write_text(TESTS)
        self.spec_path = root / "spec" / "ship-two.yaml"
        self.spec = load_spec(self.spec_path)
        self.results = root / "reports" / "results.json"
        self.evidence = root / "reports" / "evidence"

    def record(self, profile: str = "default", pass_at_1: tuple[int, int] = (4, 10), only: dict | None = None) -> Path:
        """Measure every criterion (all passing unless told) and write results.json."""
        entries = {}
        for cid in self.spec.criteria:
            check = CriterionCheck(self.spec.criterion(cid), profile, self.evidence / RUN_ID / cid)
            if cid == "AC-G2-001":
                report = check.evidence_dir / "report.json"
                report.write_text('{"defects": []}')
                check.evaluate(0, evidence={"report": report})
            elif cid == "AC-G2-002":
                k, n = pass_at_1
                check.evaluate(100 * k / n, samples=_samples(check.evidence_dir / "samples.jsonl", k, n), n=n)
            elif cid == "AC-G2-003":
                check.evaluate(0.01, legs={"top1": {"value": 0.95, "interval": (0.92, 0.97), "n": 400}})
            else:
                check.evaluate(0)
            names = (only or {}).get(cid, NODEIDS[cid])
            expected = [NODE + t for t in NODEIDS[cid]]
            records = [make_record(NODE + t, self.spec.criterion(cid), profile,
                                   TestOutcome("call", "passed" if check.passed else "failed", 0.1), check, expected)
                       for t in names]
            entries[cid] = combine_records(records)
        run = {"commit": HEAD, "dirty": False, "spec_sha256": self.spec.sha256, "profile": profile, "time": "t", "run_id": RUN_ID}
        write_results(self.results, entries, run)
        return self.results

    def edit(self, fn) -> None:
        doc = json.loads(self.results.read_text())
        fn(doc)
        self.results.write_text(json.dumps(doc))

    def gate(self, *extra: str) -> int:
        return main(["gate", "--spec", str(self.spec_path), "--results", str(self.results), *extra])

    def decide(self, **kw):
        bound = bound_tests(scan_bindings(self.root / "acceptance"), self.root)
        return {d.key: d for d in decide(self.spec, load_results(self.results), checkout={"commit": HEAD}, bound=bound, **kw)}


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


def test_an_honest_passing_run_releases(project, capsys):
    project.record()
    assert project.gate("--model", "model2") == EXIT_RELEASE
    out = capsys.readouterr().out
    assert f"profile default (run {RUN_ID}" in out
    assert "model2 (MODEL-2): RELEASE — ship-% 100.0%, every criterion must pass" in out
    assert "REFUSED" not in out and "re-derived: outcomes, bound tests, evidence hashes" in out
    # what was not re-derived is said too: a CI log shows whether the tests re-ran and the artifacts were rebuilt
    assert "re-run of the tests: not requested (--rerun); rebuild of the artifacts: not requested (--rebuild)" in out


def _entry(cid):
    return lambda doc: doc["criteria"][cid]


def _set(cid, **changes):
    def edit(doc):
        doc["criteria"][cid].update(changes)
    return edit


def _flip_to_pass(doc):
    """The issue's hand edit: a FAIL's outcome changed to PASS, its measured value left as it was."""
    doc["criteria"]["AC-G2-002"]["outcome"] = "PASS"


def _raise_measured_everywhere(doc):
    """A more careful forger: outcome, measured and the leg record all say 40%; the samples say 0%."""
    entry = doc["criteria"]["AC-G2-002"]
    entry.update(outcome="PASS", measured=40.0)
    entry["legs"][0].update(measured=40.0, judged=40.0, met=True)


def _drop_leg(doc):
    doc["criteria"]["AC-G2-003"]["legs"] = doc["criteria"]["AC-G2-003"]["legs"][:1]


def _widen_interval(doc):
    doc["criteria"]["AC-G2-003"]["legs"][1]["interval"] = [0.5, 0.99]


def _relabel_profile(profile):
    def edit(doc):
        doc["run"]["profile"] = profile
        for entry in doc["criteria"].values():
            entry["profile"] = profile
    return edit


def _only_one_of_two_tests(doc):
    entry = doc["criteria"]["AC-G2-004"]
    entry.update(outcome="PASS", nodeids=[NODE + "test_004a"], expected=[])
    entry.pop("missing_tests", None)


def _second_test_edited(doc):
    """Of AC-G2-004's two tests, the one the entry does not show was edited to a failing figure."""
    doc["criteria"]["AC-G2-004"]["per_test"][1].update(measured=3.0)
    doc["criteria"]["AC-G2-004"]["per_test"][1]["legs"][0].update(measured=3.0)


@pytest.mark.parametrize("record_kw, edit, cid, disagreement", [
    pytest.param({}, lambda doc: doc["criteria"]["AC-G2-004"].pop("per_test"), "AC-G2-004",
                 "the records of its 2 tests do not match the tests that ran", id="per-test records removed"),
    pytest.param({}, _second_test_edited, "AC-G2-004",
                 f"{NODE}test_004b: measured 3 problems does not meet threshold == 0", id="second test of a criterion edited"),
    pytest.param({"pass_at_1": (0, 10)}, _flip_to_pass, "AC-G2-002",
                 "measured 0 % does not meet threshold >= 30 (current spec, profile default), yet PASS was recorded",
                 id="outcome flipped FAIL to PASS"),
    pytest.param({"pass_at_1": (0, 10)}, _raise_measured_everywhere, "AC-G2-002",
                 "samples give pass_at_1 = 0 (pass_pct of 10), recorded 40", id="measured edited with its leg"),
    pytest.param({}, _set("AC-G2-002", measured=90.0), "AC-G2-002", "measured 90.0 differs from its leg record 40.0",
                 id="measured edited alone"),
    pytest.param({}, _drop_leg, "AC-G2-003", "leg 'top1' has no recorded measurement", id="leg record removed"),
    pytest.param({}, _widen_interval, "AC-G2-003", "top1 lower_95 0.5 share does not meet threshold >= 0.9",
                 id="interval edited below the bound"),
    pytest.param({"profile": "smoke", "pass_at_1": (1, 10)}, _relabel_profile("default"), "AC-G2-002",
                 "measured 10 % does not meet threshold >= 30 (current spec, profile default)",
                 id="smoke run relabelled as default"),
    pytest.param({"only": {"AC-G2-004": ["test_004a"]}}, _only_one_of_two_tests, "AC-G2-004",
                 f"bound tests did not run in this result: {NODE}test_004b", id="partial re-run edited to PASS"),
])
def test_hand_edited_results_are_refused(project, capsys, record_kw, edit, cid, disagreement):
    project.record(**record_kw)
    project.edit(edit)
    assert project.gate("--model", "model2") == EXIT_HOLD
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): REFUSED" in out, out
    assert f"  {cid} REFUSED: {disagreement}" in out, out


@pytest.mark.parametrize("damage, disagreement", [
    (lambda p: (p / "AC-G2-001" / "report.json").unlink(), "evidence 'report': {} no longer exists"),
    (lambda p: (p / "AC-G2-001" / "report.json").write_text('{"defects": ["hidden"]}'), "evidence 'report': {} has SHA-256"),
    (lambda p: _samples(p / "AC-G2-002" / "samples.jsonl", 10, 10), "evidence 'samples': {} has SHA-256"),
])
def test_deleted_or_altered_evidence_is_refused(project, capsys, damage, disagreement):
    project.record()
    damage(project.evidence / RUN_ID)
    assert project.gate("--model", "model2") == EXIT_HOLD
    out = capsys.readouterr().out
    victim = "report.json" if "report" in disagreement else "samples.jsonl"
    cid = "AC-G2-001" if "report" in disagreement else "AC-G2-002"
    path = project.evidence / RUN_ID / cid / victim
    assert f"  {cid} REFUSED: {disagreement.format(path)}" in out, out


def test_samples_rehashed_to_match_still_disagree_with_the_figure(project, capsys):
    """Someone rewrites the sample file AND its recorded hash: the figure no longer follows from it."""
    from shiptwo.fileio import sha256_file

    project.record()
    samples = _samples(project.evidence / RUN_ID / "AC-G2-002" / "samples.jsonl", 1, 10)
    project.edit(lambda doc: doc["criteria"]["AC-G2-002"]["samples"].update(sha256=sha256_file(samples)))
    assert project.gate("--model", "model2") == EXIT_HOLD
    assert "AC-G2-002 REFUSED: samples give pass_at_1 = 10 (pass_pct of 10), recorded 40" in capsys.readouterr().out


def test_smoke_profile_run_is_a_rehearsal_never_a_release(project, capsys):
    project.record(profile="smoke")
    assert project.gate("--model", "model2") == EXIT_REHEARSAL
    out = capsys.readouterr().out
    assert out.startswith("profile smoke")
    assert ("model2 (MODEL-2): REHEARSAL — profile smoke may not release it (release profiles: default, full); "
            "would release") in out
    assert "counted PASSes measured at profile" not in out  # the run's own profile says it all
    decision = project.decide(models=["model2"])["model2"]
    assert decision.verdict == REHEARSAL and not decision.released


def test_allow_stale_never_releases_passes_measured_at_a_profile_that_may_not_release(project, capsys):
    """Smoke results under a run relabelled `default`: stale without --allow-stale; with it, a rehearsal."""
    project.record(profile="smoke")
    project.edit(lambda doc: doc["run"].update(profile="default"))
    assert project.gate("--model", "model2") == EXIT_HOLD
    capsys.readouterr()
    assert project.gate("--model", "model2", "--allow-stale") == EXIT_REHEARSAL
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): REHEARSAL — profile smoke may not release it (release profiles: default, full)" in out
    assert "counted PASSes measured at profile smoke, not a release profile of model2" in out


def test_a_rehearsal_that_holds_exits_1(project, capsys):
    project.record(profile="smoke")
    project.edit(_set("AC-G2-001", outcome="FAIL"))
    assert project.gate("--model", "model2") == EXIT_HOLD
    assert "REHEARSAL — profile smoke may not release it (release profiles: default, full); would not release" in capsys.readouterr().out


def test_model_whose_release_profiles_exclude_the_run_is_a_rehearsal(project, capsys):
    project.record()
    assert project.gate() == EXIT_REHEARSAL  # model1 from a default run: a clean rehearsal; model2 releases: 3 over 0
    out = capsys.readouterr().out
    assert "model1 (MODEL-1): REHEARSAL — profile default may not release it (release profiles: full); would release" in out
    assert "model2 (MODEL-2): RELEASE" in out
    decisions = project.decide()
    assert decisions["model1"].exit_code == EXIT_REHEARSAL and decisions["model2"].exit_code == EXIT_RELEASE


def test_partial_rerun_recorded_by_the_plugin_holds(project, capsys):
    project.record(only={"AC-G2-004": ["test_004a"]})
    assert load_results(project.results).criteria["AC-G2-004"]["outcome"] == "NOT RUN"
    assert project.gate("--model", "model2") == EXIT_HOLD
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): HOLD" in out and "AC-G2-004 NOT RUN: AC-G2-004: only 1 of its bound tests ran" in out


def test_required_all_holds_on_any_open_criterion(project, capsys):
    project.record()
    project.edit(_set("AC-G2-003", outcome="SKIPPED", reason="no llama.cpp"))
    assert project.gate("--model", "model2") == EXIT_HOLD
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): HOLD — ship-% 75.0%, every criterion must pass" in out
    assert "AC-G2-003 SKIPPED: skipped: no llama.cpp" in out


def test_without_an_acceptance_directory_no_pass_is_rederived(project, capsys):
    project.record()
    assert project.gate("--model", "model2", "--acceptance", str(project.root / "nowhere")) == EXIT_HOLD
    assert "cannot check that every bound test ran: no acceptance directory" in capsys.readouterr().out


def test_spec_changed_since_the_run(project, capsys):
    """A tightened threshold: the result is stale; accepted as stale it is re-judged on the current spec."""
    project.record()
    project.spec_path.write_text(SPEC.replace("threshold: 0.05", "threshold: 0.001"))
    assert project.gate("--model", "model2") == EXIT_HOLD
    assert "AC-G2-003 NOT RUN: stale result: judged against another version of the spec" in capsys.readouterr().out
    assert project.gate("--model", "model2", "--allow-stale") == EXIT_HOLD
    assert "AC-G2-003 REFUSED: measured 0.01 nats does not meet threshold <= 0.001" in capsys.readouterr().out


def test_registered_evidence_verifier_is_consulted(project, capsys, monkeypatch):
    """A verifier the model wing registers for an evidence key re-checks that file; its problem refuses."""
    monkeypatch.setattr("shiptwo.harness.verifiers._EVIDENCE", dict(_EVIDENCE))
    register_evidence("report", lambda path: json.loads(path.read_text())["defects"])
    project.record()
    assert project.gate("--model", "model2") == EXIT_RELEASE  # '{"defects": []}': the verifier agrees
    project.edit(lambda doc: None)
    monkeypatch.setattr("shiptwo.harness.verifiers._EVIDENCE", {})
    register_evidence("report", lambda path: ["re-run found 1 defect"])
    assert project.gate("--model", "model2") == EXIT_HOLD
    assert "AC-G2-001 REFUSED: evidence 'report': re-run found 1 defect" in capsys.readouterr().out


def test_results_of_the_old_schema_cannot_release(tmp_path, capsys):
    """The golden results predate leg records: nothing in them can be re-derived."""
    doc = json.loads((GOLDEN / "results.json").read_text())
    doc["run"]["commit"] = HEAD
    for entry in doc["criteria"].values():
        entry["commit"] = HEAD
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    spec = tmp_path / "spec.yaml"
    spec.write_text((GOLDEN / "spec.yaml").read_text())
    assert main(["gate", "--model", "model2", "--spec", str(GOLDEN / "spec.yaml"), "--results", str(path),
                 "--acceptance", str(tmp_path)]) == EXIT_HOLD
    out = capsys.readouterr().out
    assert "AC-G2-001 REFUSED: no leg records" in out


@pytest.mark.parametrize("content, expected", [
    ("{broken", "malformed JSON"),
    ('{"run": {"commit": "a", "spec_sha256": "b", "profile": "default", "time": "t"}, "criteria": {"AC-G2-001": {"outcome": "GREAT"}}}',
     "criteria.AC-G2-001: missing 'profile'"),
    ('[1, 2]', "not a shiptwo results file"),
])
def test_malformed_results_exit_2_with_one_line(project, capsys, content, expected):
    project.results.parent.mkdir(parents=True)
    project.results.write_text(content)
    assert project.gate() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(project.results) in err[0] and expected in err[0]


def test_missing_file_unknown_model_bad_spec_and_bad_k_exit_2(project, tmp_path, capsys):
    assert project.gate() == 2
    assert "cannot read results" in capsys.readouterr().err
    project.record()
    assert project.gate("--model", "model9") == 2
    assert "unknown model 'model9'" in capsys.readouterr().err
    assert project.gate("--recheck", "-1") == 2
    assert "--recheck must be >= 0" in capsys.readouterr().err
    project.spec_path.write_text("models: [")
    assert project.gate() == 2
    assert "malformed YAML" in capsys.readouterr().err
    bad = tmp_path / "r2.json"
    bad.write_text(json.dumps({"run": {"commit": "a", "spec_sha256": "b", "profile": "default", "time": "t"},
                               "criteria": {"AC-G2-001": {"outcome": "GREAT", "profile": "default", "commit": "a", "time": "t"}}}))
    with pytest.raises(ShiptwoError, match="unknown outcome 'GREAT'"):
        load_results(bad)


@pytest.mark.parametrize("change, why", [
    ({"commit": "0123456789ab"}, "is not the checkout"),
    ({"dirty": True}, "uncommitted working tree"),
    ({"spec_sha256": "f" * 64}, "another version of the spec"),
])
def test_pass_from_other_code_or_spec_is_not_evidence(project, change, why):
    project.record()
    project.edit(_set("AC-G2-001", **change))
    decision = project.decide(models=["model2"])["model2"]
    assert decision.verdict == HOLD and why in decision.holdbacks[0].why
    assert decision.ship_pct == 75.0  # the stale PASS is not counted in the headline ship-%


def test_min_ship_pct_rule_still_supported(project):
    """A model with a list of required ids and a ship-% floor (no `required: all`)."""
    project.spec_path.write_text(SPEC.replace("release_profiles: [default, full], required: all",
                                              "release_profiles: [default], min_ship_pct: 70, required: [AC-G2-001]"))
    project.spec = load_spec(project.spec_path)
    project.record()
    project.edit(_set("AC-G2-004", outcome="FAIL"))
    decision = project.decide(models=["model2"])["model2"]
    assert decision.verdict == RELEASE and decision.ship_pct == 75.0
    project.edit(_set("AC-G2-001", outcome="FAIL"))
    assert project.decide(models=["model2"])["model2"].verdict == HOLD
    assert REFUSED not in {d.verdict for d in project.decide().values()}


def _loosen(project):
    """The reviewer's forgery (f02/f03): the spec's threshold for AC-G2-002 lowered below the figure."""
    project.spec_path.write_text(SPEC.replace("default: 30, full: 30", "default: 0, full: 0"))
    project.spec = load_spec(project.spec_path)


def test_loosened_spec_with_spec_hashes_deleted_is_stale(project):
    """A missing spec_sha256 on an entry is no proof it was judged on this spec: stale, so HOLD."""
    project.record(pass_at_1=(1, 10))  # AC-G2-002 FAILs at 10% against 30
    _loosen(project)

    def forge(doc):
        _flip_to_pass(doc)
        for entry in doc["criteria"].values():
            entry.pop("spec_sha256", None)
    project.edit(forge)
    decision = project.decide(models=["model2"])["model2"]
    assert decision.verdict == HOLD and "no spec_sha256 recorded" in decision.holdbacks[0].why


def test_run_judged_on_another_spec_is_stale_even_if_entries_say_otherwise(project):
    """Entries' spec_sha256 rewritten to the loosened spec's hash: the run block still names the old spec."""
    project.record(pass_at_1=(1, 10))
    _loosen(project)

    def forge(doc):
        _flip_to_pass(doc)
        for entry in doc["criteria"].values():
            entry["spec_sha256"] = project.spec.sha256
    project.edit(forge)
    decision = project.decide(models=["model2"])["model2"]
    assert decision.verdict == HOLD and "latest run was judged against another version" in decision.holdbacks[0].why


def test_uncommitted_spec_in_a_checkout_is_refused(project, capsys):
    """In a git checkout the gate judges only the spec committed at HEAD (exit 2, the file named)."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=project.root, check=True)
    subprocess.run([*git, "add", "spec", "acceptance"], cwd=project.root, check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], cwd=project.root, check=True)
    project.record()
    assert project.gate("--model", "model2") != 2  # committed spec: judged (stale here, but no refusal)
    capsys.readouterr()
    _loosen(project)
    assert project.gate("--model", "model2") == 2
    assert "spec/ship-two.yaml: uncommitted change to the spec" in capsys.readouterr().err
    project.spec_path.write_text(SPEC)
    (project.root / "spec" / "recipes").mkdir()
    (project.root / "spec" / "recipes" / "new.yaml").write_text("x: 1\n")  # untracked files count too
    assert project.gate("--model", "model2", "--allow-stale") == 2
    assert "spec/recipes/new.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("cid, edit, field", [
    ("AC-G2-001", lambda e: e.update(legs=5), "legs must be a list of mappings"),
    ("AC-G2-001", lambda e: e.update(legs=[{"metric": [1]}]), r"legs\[0\].metric must be a string"),
    ("AC-G2-001", lambda e: e.update(nodeids=5), "nodeids must be a list of strings"),
    ("AC-G2-001", lambda e: e.update(nodeids=[1, 2]), "nodeids must be a list of strings"),
    ("AC-G2-001", lambda e: e.update(expected=7), "expected must be a list of strings"),
    ("AC-G2-001", lambda e: e.update(evidence=[1]), "evidence must be a mapping"),
    ("AC-G2-001", lambda e: e["evidence"]["report"].update(path=5), "evidence.report.path must be a string"),
    ("AC-G2-004", lambda e: e.update(per_test=[1]), "per_test must be a list of mappings"),
    ("AC-G2-002", lambda e: e["samples"].update(path=5), "samples must be a mapping with a string path"),
    ("AC-G2-001", lambda e: e.update(measured=10**400), "measured is a number too large for a float"),
    ("AC-G2-001", lambda e: e["legs"][0].update(measured=-10**400), r"legs\[0\].measured is a number too large for a float"),
    ("AC-G2-003", lambda e: e["legs"][1].update(interval=[0, 10**400]), r"legs\[1\].interval\[1\] is a number too large"),
    ("AC-G2-004", lambda e: e["per_test"][0].update(measured=10**400), r"per_test\[0\].measured is a number too large"),
])
def test_malformed_entry_fields_are_a_one_line_error(project, capsys, cid, edit, field):
    """f07: a type-corrupted field is exit 2 naming the file, the id and the field, never a traceback."""
    project.record()
    project.edit(lambda doc: edit(doc["criteria"][cid]))
    assert project.gate() == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{project.results}: criteria.{cid}: " in err
    assert re.search(field, err), err


@pytest.mark.parametrize("text, says", [
    ("9" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),  # json.loads' ValueError
    ("[" * 100000 + "]" * 100000, "maximum recursion depth exceeded"),  # json.loads' RecursionError
])
def test_a_number_or_nesting_json_itself_refuses_is_a_one_line_error(project, capsys, text, says):
    """Integers past Python's digit limit and nesting past its recursion limit are valid JSON that
    json.loads cannot read: the gate and the report say so in one line (exit 2), never a traceback."""
    project.record()
    doc = project.results.read_text()
    project.results.write_text(doc.replace('"duration_s": ', f'"duration_s": {text}, "was": ', 1))
    for argv in (["gate", "--spec", str(project.spec_path), "--results", str(project.results)],
                 ["report", "--spec", str(project.spec_path), "--results", str(project.results), "-o", "-"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{project.results}: malformed JSON: " in err and says in err, err


def test_gate_output_shows_a_forged_message_on_its_own_line_as_written(project, capsys):
    """A FAIL's message (and run fields) come from the editable results file and the gate prints them:
    a line break there added a forged 'RELEASE' verdict line to the CI log, an ANSI escape could recolour
    or erase a line, a right-to-left override reorder one. Each shows as an escape, on the line it belongs to."""
    project.record(pass_at_1=(1, 10))
    forged = "\nmodel2 (MODEL-2): RELEASE — ship-% 100.0%, every criterion must pass\r\x1b[2K\x1b[1A\u2028\u202eSSAP"
    project.edit(lambda doc: (doc["criteria"]["AC-G2-002"].update(message="too low" + forged),
                              doc["run"].update(time="t\nmodel1 (MODEL-1): RELEASE")))
    assert project.gate() == EXIT_HOLD
    out = capsys.readouterr().out
    assert not re.search(r"^model[12] \(MODEL-[12]\): RELEASE", out, re.MULTILINE), out
    assert not set(out) & {"\r", "\x1b", "\u2028", "\u202e"}
    assert ("  AC-G2-002 FAIL: too low\\nmodel2 (MODEL-2): RELEASE — ship-% 100.0%, every criterion must pass"
            "\\r\\x1b[2K\\x1b[1A\\u2028(U+202E)SSAP") in out


def test_a_pass_for_a_criterion_no_test_is_bound_to_refuses(project, capsys):
    """'Every bound test ran' held vacuously for a criterion no acceptance test is bound to (its mark
    removed, or its id respelled with a look-alike letter, so the failing test no longer names it): an
    entry with outcome PASS, consistent figures and no tests released. A PASS needs a bound test."""
    project.record(profile="full")
    tests = project.root / "acceptance" / "test_g.py"
    tests.write_text(tests.read_text().replace('ac("AC-G1-001")', 'ac("AC-G1-0O1")'))
    project.edit(_set("AC-G1-001", nodeids=[], expected=[]))
    assert project.gate("--model", "model1") == EXIT_HOLD
    out = capsys.readouterr().out
    assert "AC-G1-001 REFUSED: no test in acceptance/ is bound to AC-G1-001: nothing ran for this PASS" in out, out


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def _loosened_copy_beside_a_commit(project, copy: Path) -> Path:
    """Commit the project, record a run, and copy spec/ and acceptance/ under `copy` with model2's
    threshold loosened 30 -> 3: the copy's spec file."""
    import shutil

    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "spec"]):
        subprocess.run([*GIT, *cmd], cwd=project.root, check=True)
    project.record()
    shutil.copytree(project.root / "spec", copy / "spec")
    shutil.copytree(project.root / "acceptance", copy / "acceptance")
    spec = copy / "spec" / "ship-two.yaml"
    spec.write_text(SPEC.replace("threshold: {smoke: 0, default: 30, full: 30}", "threshold: {smoke: 0, default: 3, full: 3}"))
    return spec


def test_a_git_ignored_spec_in_a_checkout_is_refused(project, capsys):
    """A loosened copy of the spec under the git-ignored reports/ (with acceptance/ beside it) shows in no
    status, so 'no uncommitted change' held for it and the gate judged it: it is not the committed spec."""
    (project.root / ".gitignore").write_text("reports/*\n")
    spec = _loosened_copy_beside_a_commit(project, project.root / "reports" / "copy")
    code = main(["gate", "--spec", str(spec), "--results", str(project.results), "--model", "model2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "reports/copy/spec/ship-two.yaml: git-ignored, so not part of the spec committed at HEAD" in err, err


def test_a_spec_in_a_nested_repository_is_refused(project, capsys):
    """A loosened copy of the spec committed in a git repository of its own inside the checkout is neither
    an uncommitted change nor git-ignored to the checkout's git (a nested repository shows as one untracked
    directory at most, and not at all once that is ignored): the gate judged it against the outer checkout's
    commit, as if committed there. The spec must be a file the checkout tracks."""
    spec = _loosened_copy_beside_a_commit(project, project.root / "vendor" / "copy")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "loosened"]):  # the repository is the spec directory
        subprocess.run([*GIT, *cmd], cwd=spec.parent, check=True)
    (project.root / ".git" / "info" / "exclude").write_text("vendor/copy/spec/\n")  # ignored, but git lists no file in it
    code = main(["gate", "--spec", str(spec), "--results", str(project.results), "--model", "model2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "vendor/copy/spec/ship-two.yaml: not a file the checkout tracks" in err, err


def test_outside_a_git_checkout_the_gate_says_what_it_could_not_check(project, capsys):
    """Without a commit (no .git, or git failing: a moved .git, a container's 'dubious ownership'), results
    from any commit and an edited spec were judged with no word that nothing tied them to the code."""
    project.record()
    project.edit(lambda doc: [e.update(commit="0" * 40) for e in [doc["run"], *doc["criteria"].values()]])
    project.gate("--model", "model2")
    out = capsys.readouterr().out
    assert "note: no git commit here (not a git checkout, or git failed): the results are not tied to this code" in out
