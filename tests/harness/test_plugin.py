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
    from shiptwo.harness.results import describe_evidence

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"a")
    before = describe_evidence({"dir": tmp_path / "d"})["dir"]
    (tmp_path / "d" / "a.bin").write_bytes(b"b")
    after = describe_evidence({"dir": tmp_path / "d", "gone": tmp_path / "nope", "n": 3, "obj": object()})
    assert before["files"] == 1 and before["sha256"] != after["dir"]["sha256"]
    assert after["gone"]["missing"] is True and after["gone"]["sha256"] is None
    assert after["n"] == 3 and after["obj"].startswith("<object")
