"""The pytest binding, driven through pytester: markers, unknown ids, results.json, xdist, merging."""

from __future__ import annotations

import json

import pytest

from shiptwo.fileio import sha256_bytes

SPEC = """\
models:
  model1: {name: MODEL-1, min_ship_pct: 100}
  model2: {name: MODEL-2, min_ship_pct: 100}
criteria:
  - {id: AC-P2-001, model: model2, title: defects, metric: defects, comparison: "==", threshold: 0, unit: defects, class: packaging}
  - id: AC-P2-002
    model: model2
    title: loss
    metric: ce
    comparison: "<="
    threshold: {smoke: 10, default: 5, full: 2.2}
    unit: nats
    class: optimization
    depends_on: [AC-P2-001]
    rationale: CPU profiles cannot reach 2.2
  - {id: AC-P1-001, model: model1, title: speed, metric: tps, comparison: ">=", threshold: 30, unit: tok/s, class: infrastructure}
"""

TESTS = """\
import pytest

@pytest.mark.ac("AC-P2-001")
def test_defects(criterion, tmp_path):
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"real bytes")
    criterion.check(0, evidence={"artifact": str(artifact), "note": "hello"})

@pytest.mark.ac("AC-P2-002")
def test_loss(criterion):
    criterion.check(4.5)

@pytest.mark.ac("AC-P1-001")
def test_speed(criterion):
    criterion.check(12.0)
"""


@pytest.fixture
def project(pytester):
    """A pytester directory with an ini (so it is the rootdir) and the small spec."""
    pytester.makeini("[pytest]\n")
    (pytester.path / "spec").mkdir()
    (pytester.path / "spec" / "ship-two.yaml").write_text(SPEC)
    return pytester


def _results(pytester, name="reports/results.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def test_results_json_records_measurement_threshold_and_evidence(project):
    project.makepyfile(test_ac=TESTS)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    data = _results(project)
    assert data["run"]["profile"] == "default" and data["run"]["commit"] == "unknown"
    assert data["run"]["spec_sha256"] == sha256_bytes(SPEC.encode())
    entry = data["criteria"]["AC-P2-001"]
    assert entry["outcome"] == "PASS" and entry["measured"] == 0 and entry["threshold"] == 0
    assert entry["nodeids"] == ["test_ac.py::test_defects"] and entry["comparison"] == "=="
    assert entry["evidence"]["artifact"]["sha256"] == sha256_bytes(b"real bytes")
    assert entry["evidence"]["note"] == "hello"
    assert data["criteria"]["AC-P2-002"]["threshold"] == 5.0


def test_failing_check_message_and_outcome(project):
    project.makepyfile(test_ac=TESTS)
    result = project.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*AC-P1-001: measured 12 tok/s vs threshold >= 30 (profile default)*"])
    entry = _results(project)["criteria"]["AC-P1-001"]
    assert entry["outcome"] == "FAIL" and entry["measured"] == 12.0
    assert "measured 12 tok/s vs threshold >= 30" in entry["message"]


def test_profile_option_and_env_select_thresholds(project, monkeypatch):
    project.makepyfile(test_ac=TESTS)
    project.runpytest("-p", "no:cacheprovider", "--profile", "full", "-k", "loss")
    entry = _results(project)["criteria"]["AC-P2-002"]
    assert (entry["outcome"], entry["threshold"], entry["profile"]) == ("FAIL", 2.2, "full")
    monkeypatch.setenv("SHIPTWO_PROFILE", "smoke")
    project.runpytest("-p", "no:cacheprovider", "-k", "loss")
    entry = _results(project)["criteria"]["AC-P2-002"]
    assert (entry["outcome"], entry["threshold"], entry["profile"]) == ("PASS", 10.0, "smoke")
    result = project.runpytest("-p", "no:cacheprovider", "--profile", "huge")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*unknown profile 'huge'*"])


def test_model_markers_select_one_model(project):
    project.makepyfile(test_ac=TESTS)
    result = project.runpytest("-p", "no:cacheprovider", "-m", "model2")
    result.assert_outcomes(passed=2)
    assert sorted(_results(project)["criteria"]) == ["AC-P2-001", "AC-P2-002"]


def test_unknown_id_is_a_usage_error(project):
    project.makepyfile(test_bad="""
        import pytest

        @pytest.mark.ac("AC-P9-999")
        def test_x(criterion):
            criterion.check(0)
    """)
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*", "*test_bad.py::test_x*AC-P9-999*names an id not in*"])
    assert not (project.path / "reports" / "results.json").exists()


def test_error_outcomes(project):
    project.makepyfile(test_err="""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("artifact missing")

        @pytest.mark.ac("AC-P2-001")
        def test_raises(criterion):
            raise ValueError("boom before check")

        @pytest.mark.ac("AC-P2-002")
        def test_setup_error(criterion, broken):
            criterion.check(1.0)

        @pytest.mark.ac("AC-P1-001")
        def test_never_checks(criterion):
            pass
    """)
    project.runpytest("-p", "no:cacheprovider")
    crit = _results(project)["criteria"]
    assert crit["AC-P2-001"]["outcome"] == "ERROR" and "boom before check" in crit["AC-P2-001"]["message"]
    assert crit["AC-P2-002"]["outcome"] == "ERROR" and "error in setup" in crit["AC-P2-002"]["message"]
    assert crit["AC-P1-001"]["outcome"] == "ERROR" and "without calling criterion.check" in crit["AC-P1-001"]["message"]


def test_non_numeric_measurement_fails_and_skip_keeps_reason(project):
    project.makepyfile(test_nan="""
        import pytest

        @pytest.mark.ac("AC-P2-001")
        def test_none(criterion):
            criterion.check(None)

        @pytest.mark.ac("AC-P2-002")
        def test_nan(criterion):
            criterion.check(float("nan"))

        @pytest.mark.ac("AC-P1-001")
        def test_skip(criterion):
            pytest.skip("no GPU on this machine")
    """)
    project.runpytest("-p", "no:cacheprovider")
    crit = _results(project)["criteria"]
    assert crit["AC-P2-001"]["outcome"] == "FAIL" and "not a number" in crit["AC-P2-001"]["message"]
    assert crit["AC-P2-002"]["outcome"] == "FAIL" and crit["AC-P2-002"]["measured"] is None
    assert crit["AC-P1-001"]["outcome"] == "SKIPPED" and crit["AC-P1-001"]["reason"] == "no GPU on this machine"


def test_several_tests_of_one_criterion_must_all_pass(project):
    project.makepyfile(test_two="""
        import pytest

        @pytest.mark.ac("AC-P2-001")
        def test_a(criterion):
            criterion.check(0)

        @pytest.mark.ac("AC-P2-001")
        def test_b(criterion):
            criterion.check(2)
    """)
    project.runpytest("-p", "no:cacheprovider")
    entry = _results(project)["criteria"]["AC-P2-001"]
    assert entry["outcome"] == "FAIL" and entry["measured"] == 2.0
    assert entry["nodeids"] == ["test_two.py::test_a", "test_two.py::test_b"]


def test_merge_across_two_runs_keeps_both_models(project):
    project.makepyfile(test_ac=TESTS)
    project.runpytest("-p", "no:cacheprovider", "-m", "model1")
    first = _results(project)["criteria"]["AC-P1-001"]
    project.runpytest("-p", "no:cacheprovider", "-m", "model2", "--profile", "smoke")
    crit = _results(project)["criteria"]
    assert sorted(crit) == ["AC-P1-001", "AC-P2-001", "AC-P2-002"]
    assert crit["AC-P1-001"] == first and crit["AC-P1-001"]["profile"] == "default"
    assert crit["AC-P2-002"]["profile"] == "smoke"


def test_results_option_and_malformed_existing_file(project):
    project.makepyfile(test_ac=TESTS)
    (project.path / "out.json").write_text("{not json")
    result = project.runpytest("-p", "no:cacheprovider", "--results", "out.json")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*shiptwo: error: cannot write results:*out.json:1: malformed JSON*"])


def test_xdist_workers_merge_on_controller(project):
    project.makepyfile(test_ac=TESTS)
    project.makepyfile(test_more="""
        import pytest

        @pytest.mark.ac("AC-P2-002")
        def test_loss_again(criterion):
            criterion.check(6.0)
    """)
    project.makepyfile(test_bad="""
        import pytest

        @pytest.mark.ac("AC-P9-999")
        def test_x(criterion):
            criterion.check(0)
    """)
    bad = project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert bad.ret != pytest.ExitCode.OK
    bad.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*", "*AC-P9-999*names an id not in*"])
    (project.path / "test_bad.py").unlink()
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=2, failed=2)
    crit = _results(project)["criteria"]
    assert sorted(crit) == ["AC-P1-001", "AC-P2-001", "AC-P2-002"]
    assert crit["AC-P2-002"]["outcome"] == "FAIL" and len(crit["AC-P2-002"]["nodeids"]) == 2
    assert crit["AC-P2-001"]["evidence"]["artifact"]["sha256"] == sha256_bytes(b"real bytes")
    # every worker kept its evidence under the controller's one run id
    run_dir = project.path / "reports" / "evidence" / _results(project)["run"]["run_id"]
    assert crit["AC-P2-001"]["evidence"]["artifact"]["path"] == str(run_dir / "AC-P2-001" / "artifact.bin")
    assert {e["run_id"] for e in crit.values()} == {run_dir.name}


def test_inert_without_ac_marks_and_without_spec(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_plain="def test_ok():\n    assert 1 + 1 == 2\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()
    pytester.makepyfile(test_bound="""
        import pytest

        @pytest.mark.ac("AC-P2-001")
        def test_x(criterion):
            criterion.check(0)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*no spec at*"])


def test_describe_evidence_hashes_files_and_directories(tmp_path):
    from shiptwo.harness.evidence import describe_evidence

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"a")
    before = describe_evidence({"dir": tmp_path / "d"})["dir"]
    (tmp_path / "d" / "a.bin").write_bytes(b"b")
    after = describe_evidence({"dir": tmp_path / "d", "gone": tmp_path / "nope", "n": 3, "obj": object()})
    assert before["files"] == 1 and before["sha256"] != after["dir"]["sha256"]
    assert after["gone"]["missing"] is True and after["gone"]["sha256"] is None
    assert after["n"] == 3 and after["obj"].startswith("<object")


LEG_SPEC = SPEC.replace(
    "  - {id: AC-P1-001, model: model1,",
    """  - id: AC-P2-003
    model: model2
    title: quantized agrees with its reference
    metric: kl
    comparison: "<="
    threshold: 0.05
    unit: nats
    class: packaging
    legs:
      - {metric: top1, comparison: ">=", threshold: 0.9, unit: share, judged_on: lower_95}
    parameters:
      tol: {smoke: 0.1, default: 0.01, full: 0.001}
    samples: {statistic: mean}
  - {id: AC-P1-001, model: model1,""")

LEG_TESTS = '''
import json, pytest

def _samples(path, values):
    path.write_text("".join(json.dumps({"id": str(i), "prompt_sha256": "0" * 64, "output": "x", "value": v}) + "\\n"
                            for i, v in enumerate(values)))
    return path

@pytest.mark.ac("AC-P2-003")
def test_legs(criterion):
    assert criterion.param("tol") == 0.01
    out = criterion.evidence_dir / "note.txt"
    out.write_text("kept")
    samples = _samples(criterion.evidence_dir / "s.jsonl", [0.02, 0.04])
    criterion.check(0.03, evidence={"note": out}, legs={"top1": {"value": 0.95, "interval": (0.91, 0.98), "n": 200}},
                    interval=(0.02, 0.04), n=2, samples=samples)
'''


def test_legs_interval_samples_param_and_evidence_dir(project):
    (project.path / "spec" / "ship-two.yaml").write_text(LEG_SPEC)
    project.makepyfile(test_legs=LEG_TESTS)
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    data = _results(project)
    entry, run_id = data["criteria"]["AC-P2-003"], data["run"]["run_id"]
    assert entry["outcome"] == "PASS" and entry["run_id"] == run_id
    assert [(g["metric"], g["judged"], g["met"]) for g in entry["legs"]] == [("kl", 0.03, True), ("top1", 0.91, True)]
    assert entry["legs"][1]["interval"] == [0.91, 0.98] and entry["legs"][1]["n"] == 200
    assert entry["interval"] == [0.02, 0.04] and entry["n"] == 2 and entry["parameters"] == {"tol": 0.01}
    kept = project.path / "reports" / "evidence" / run_id / "AC-P2-003"
    assert entry["evidence"]["note"]["path"] == str(kept / "note.txt") and (kept / "note.txt").read_text() == "kept"
    assert entry["samples"]["n"] == 2 and entry["samples"]["value"] == pytest.approx(0.03)
    assert entry["samples"]["path"] == str(kept / "s.jsonl")


def _leg_check(tmp_path, samples_rule: bool = False):
    from shiptwo.harness.results import CriterionCheck
    from shiptwo.harness.spec import load_spec

    spec = LEG_SPEC if samples_rule else LEG_SPEC.replace("    samples: {statistic: mean}\n", "")
    (tmp_path / "spec.yaml").write_text(spec)
    return CriterionCheck(load_spec(tmp_path / "spec.yaml").criterion("AC-P2-003"), "default", tmp_path / "ev" / "run" / "AC-P2-003")


@pytest.mark.parametrize("kwargs, message", [
    # the interval's lower bound (0.85) fails the top1 leg although its point figure (0.95) would pass
    ({"legs": {"top1": {"value": 0.95, "interval": (0.85, 0.99)}}}, "top1 0.95 share (lower_95 0.85) vs threshold >= 0.9 — not met"),
    ({"legs": {"top1": 0.95}}, "top1 0.95 share (no interval for lower_95) vs threshold >= 0.9 — not met"),
])
def test_every_leg_must_hold(tmp_path, kwargs, message):
    check = _leg_check(tmp_path)
    assert not check.evaluate(0.03, **kwargs) and check.message.endswith(message), check.message
    assert [g["met"] for g in check.legs] == [True, False]


@pytest.mark.parametrize("call, message", [
    (lambda c: c.evaluate(0.03), "leg 'top1' not measured"),
    (lambda c: c.evaluate(0.03, legs={"top1": 1, "kl2": 0}), "legs ['kl2'] are not in the spec"),
    (lambda c: c.evaluate(0.03, legs={"top1": {"value": 1, "interval": (1, 0.5)}}), "interval must be two numbers"),
    (lambda c: c.evaluate(0.03, legs={"top1": 1}, n=-1), "n must be a non-negative integer"),
    (lambda c: c.param("nope"), "AC-P2-003: no parameter 'nope'"),
])
def test_an_unmeasured_or_unknown_leg_is_an_error(tmp_path, call, message):
    from shiptwo.errors import ShiptwoError

    check = _leg_check(tmp_path)
    with pytest.raises(ShiptwoError, match=message.replace("[", r"\[").replace("(", r"\(")):
        call(check)
    assert not check.called  # the test errors before any verdict is recorded


@pytest.mark.parametrize("values, measured, message", [
    ([0.02, 0.04], 0.05, "the samples give kl = 0.03 (mean of 2), but 0.05 was measured"),
    (None, 0.03, "judges this criterion on samples: pass samples=PATH"),
])
def test_samples_must_yield_the_measured_figure(tmp_path, values, measured, message):
    from shiptwo.errors import ShiptwoError

    check = _leg_check(tmp_path, samples_rule=True)
    kwargs = {}
    if values is not None:
        path = tmp_path / "s.jsonl"
        path.write_text("".join(json.dumps({"id": str(i), "prompt_sha256": "0", "output": "x", "value": v}) + "\n"
                                for i, v in enumerate(values)))
        kwargs["samples"] = path
    with pytest.raises(ShiptwoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check.evaluate(measured, legs={"top1": {"value": 1, "interval": (1, 1)}}, **kwargs)


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "prompt_sha256": "0", "output": "x"}', "needs exactly one of 'outcome' and 'value'"),
    ('{"id": "a", "prompt_sha256": "0", "output": "x", "outcome": "maybe"}', "outcome must be one of pass, fail"),
    ('{"id": "a", "output": "x", "value": 1}', "sample needs a string 'prompt_sha256'"),
    ('{"id": "a", "prompt_sha256": "0", "output": "x", "value": NaN}', "value must be a finite number"),
    ("[1]", "a sample must be a JSON object"),
    ("{", "malformed JSON"),
])
def test_malformed_samples_name_file_and_line(tmp_path, line, message):
    from shiptwo.errors import ShiptwoError
    from shiptwo.harness.evidence import read_samples

    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "z", "prompt_sha256": "0", "output": "", "outcome": "pass"}\n' + line + "\n")
    with pytest.raises(ShiptwoError, match=f"{path}:2: .*{message}"):
        read_samples(path)


TWO_TESTS = """
import pytest

@pytest.mark.ac("AC-P2-001")
def test_first(criterion):
    criterion.check(0)

@pytest.mark.ac("AC-P2-001")
def test_second(criterion):
    criterion.check(1)
"""


def test_partial_rerun_of_a_criterion_is_not_run(project):
    """`pytest -k test_first` runs one of AC-P2-001's two tests: it must not record PASS (issue 11)."""
    project.makepyfile(test_two=TWO_TESTS)
    project.runpytest("-p", "no:cacheprovider", "-k", "test_first").assert_outcomes(passed=1)
    entry = _results(project)["criteria"]["AC-P2-001"]
    assert entry["outcome"] == "NOT RUN" and entry["ran_outcome"] == "PASS"
    assert entry["missing_tests"] == ["test_two.py::test_second"] and "not run: test_two.py::test_second" in entry["message"]
    project.runpytest("-p", "no:cacheprovider", "-k", "test_second")
    assert _results(project)["criteria"]["AC-P2-001"]["outcome"] == "FAIL"  # what ran failed: FAIL, however partial


def test_partial_run_sees_tests_in_files_it_did_not_collect(project):
    """A bound test in another acceptance/ file counts although this session never collected it."""
    (project.path / "acceptance").mkdir()
    (project.path / "acceptance" / "test_a.py").write_text(TWO_TESTS.split('@pytest.mark.ac("AC-P2-001")\ndef test_second')[0])
    (project.path / "acceptance" / "test_b.py").write_text(
        "import pytest\n\n@pytest.mark.ac('AC-P2-001')\ndef test_other(criterion):\n    criterion.check(0)\n")
    project.runpytest("-p", "no:cacheprovider", "acceptance/test_a.py").assert_outcomes(passed=1)
    entry = _results(project)["criteria"]["AC-P2-001"]
    assert entry["outcome"] == "NOT RUN" and entry["missing_tests"] == ["acceptance/test_b.py::test_other"]
    project.runpytest("-p", "no:cacheprovider", "acceptance").assert_outcomes(passed=2)
    assert _results(project)["criteria"]["AC-P2-001"]["outcome"] == "PASS"
