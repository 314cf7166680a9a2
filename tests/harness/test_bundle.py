"""Verdict bundles: written from a real run, re-verified offline from the bundle alone, and a
tampered per-sample outcome either refused by the manifest or caught by the recomputed verdict."""

from __future__ import annotations

import json
import shutil

import pytest

# pytester removes every module first imported during a test that uses it; C extensions cannot be loaded
# twice, so what the gate imports (verifiers, scipy for the baseline tests, torch for the bundle's
# environment) is imported here, once, before any snapshot.
import scipy.stats  # noqa: F401
import torch  # noqa: F401

import shiptwo.checks.gate_verifiers  # noqa: F401
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json, sha256_file, tree_digests
from shiptwo.harness.bindings import bound_tests, scan_bindings
from shiptwo.harness.bundle import BUNDLE_MANIFEST, BUNDLE_SPEC, bundle_gate_run, gate_from_bundle, open_bundle
from shiptwo.harness.release_gate import REFUSED, RELEASE, decide
from shiptwo.harness.results import load_results
from shiptwo.harness.spec import load_spec

SPEC = """\
models:
  model2: {name: MODEL-2, release_profiles: [default], required: all}
criteria:
  - {id: AC-B2-001, model: model2, title: pass rate, metric: pass_at_1, comparison: ">=", threshold: 50, unit: "%",
     class: optimization, samples: {statistic: pass_pct}, sample_count: 10, change: {max_regression: 2, blocking: true}}
"""

TEST = '''
import json, os, pytest

@pytest.mark.ac("AC-B2-001")
def test_pass_rate(criterion):
    passes, n = (int(x) for x in os.environ.get("BUNDLE_TEST_PASSES", "8/10").split("/"))
    outcomes = [i < passes for i in range(n)]
    path = criterion.evidence_dir / "samples.jsonl"
    path.write_text("".join(json.dumps({"id": f"P/{i}", "prompt_sha256": f"{i:064x}", "output": "x",
                                        "outcome": "pass" if o else "fail"}) + "\\n" for i, o in enumerate(outcomes)))
    criterion.check(100.0 * passes / n, n=n, samples=path)
'''


@pytest.fixture
def bundled(pytester, tmp_path):
    """A real acceptance run in a pytester project, gated and bundled; (project, bundle dir)."""
    pytester.makeini("[pytest]\n")
    (pytester.path / "spec").mkdir()
    (pytester.path / "spec" / "ship-two.yaml").write_text(SPEC)
    (pytester.path / "acceptance").mkdir()
    (pytester.path / "acceptance" / "test_b.py").write_text(TEST)
    pytester.runpytest("acceptance", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    spec = load_spec(pytester.path / "spec" / "ship-two.yaml")
    results = load_results(pytester.path / "reports" / "results.json")
    bound = bound_tests(scan_bindings(pytester.path / "acceptance"), pytester.path)
    decisions = decide(spec, results, bound=bound)
    assert [d.verdict for d in decisions] == [RELEASE], decisions
    out = bundle_gate_run(tmp_path / "bundle", spec, results, decisions,
                          {"models": None, "allow_stale": False, "bound": bound}, {"cpu_model": "test"})
    return pytester, out


def _samples_file(bundle_dir):
    return next(bundle_dir.glob("evidence/current/AC-B2-001/samples/*.jsonl"))


def _flip_one_pass(path):
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["outcome"] = "fail"
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")


def _rehash_manifest(bundle_dir):
    atomic_write_json(bundle_dir / BUNDLE_MANIFEST, {"schema": 1, "files": tree_digests(bundle_dir, exclude=(BUNDLE_MANIFEST,))})


def test_bundle_holds_what_the_verdict_rests_on(bundled):
    _, out = bundled
    info = json.loads((out / "bundle.json").read_text())
    assert info["verdict"] == [{"model": "model2", "verdict": RELEASE, "ship_pct": 100.0}]
    assert info["gate"]["bound"] == {"AC-B2-001": ["acceptance/test_b.py::test_pass_rate"]}
    assert [a["name"] for a in info["artifacts"]] == ["samples"] and info["artifacts"][0]["bundled"]
    manifest = json.loads((out / BUNDLE_MANIFEST).read_text())
    assert manifest["files"][BUNDLE_SPEC] == sha256_file(out / BUNDLE_SPEC)
    assert set(manifest["files"]) == {BUNDLE_SPEC, "results.json", "bundle.json", _samples_file(out).relative_to(out).as_posix()}


def test_from_bundle_recomputes_offline_from_the_bundle_alone(bundled, tmp_path):
    project, out = bundled
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    shutil.rmtree(project.path / "reports")  # the run's own evidence is gone: only the bundle remains
    decisions, lines = gate_from_bundle(moved, project.path / "spec" / "ship-two.yaml")
    assert [d.verdict for d in decisions] == [RELEASE] and not decisions[0].refusals
    assert "manifest verified" in lines[0] and "bundle spec is the checkout's spec" in lines[1]
    assert str(moved) in open_bundle(moved).results.criteria["AC-B2-001"]["samples"]["path"]


def test_checkout_spec_that_differs_refuses_the_bundle(bundled):
    """B4b/B5b: a bundle judged on another spec than the checkout's is refused, not merely noted."""
    project, out = bundled
    (project.path / "spec" / "ship-two.yaml").write_text(SPEC.replace("threshold: 50", "threshold: 90"))
    with pytest.raises(ShiptwoError, match=r"bundle refused: its spec .* is not the checkout's"):
        gate_from_bundle(out, project.path / "spec" / "ship-two.yaml")


def test_altered_sample_outcome_is_refused_or_changes_the_verdict(bundled):
    project, out = bundled
    checkout_spec = project.path / "spec" / "ship-two.yaml"
    _flip_one_pass(_samples_file(out))
    with pytest.raises(ShiptwoError, match=r"bundle refused: .*samples.*SHA-256 differs from the manifest"):
        gate_from_bundle(out, checkout_spec)
    # who edits evidence can recompute the manifest (the threat model says so): the gate still re-derives
    _rehash_manifest(out)
    decisions, _ = gate_from_bundle(out, checkout_spec)
    assert decisions[0].verdict == REFUSED and "evidence 'samples'" in decisions[0].refusals[0].why
    # also rewrite the recorded hash of the samples file: the figure no longer follows from the samples
    doc = json.loads((out / "results.json").read_text())
    doc["criteria"]["AC-B2-001"]["samples"]["sha256"] = sha256_file(_samples_file(out))
    (out / "results.json").write_text(json.dumps(doc))
    _rehash_manifest(out)
    decisions, _ = gate_from_bundle(out, checkout_spec)
    assert decisions[0].verdict == REFUSED and "samples give pass_at_1 = 70" in decisions[0].refusals[0].why
    (out / "extra.txt").write_text("smuggled")
    with pytest.raises(ShiptwoError, match="extra.txt: extra file not in the manifest"):
        open_bundle(out)
    with pytest.raises(ShiptwoError, match="no such bundle directory"):
        open_bundle(out / "nope")


def _project(pytester):
    pytester.makeini("[pytest]\n")
    (pytester.path / "spec").mkdir(exist_ok=True)
    (pytester.path / "spec" / "ship-two.yaml").write_text(SPEC)
    (pytester.path / "acceptance").mkdir(exist_ok=True)
    (pytester.path / "acceptance" / "test_b.py").write_text(TEST)
    return pytester


def _gate_args(project) -> list[str]:
    return ["gate", "--spec", str(project.path / "spec" / "ship-two.yaml"), "--acceptance", str(project.path / "acceptance"),
            "--results", str(project.path / "reports" / "results.json")]


def test_cli_gate_bundle_then_from_bundle(pytester, tmp_path, capsys):
    from shiptwo.cli import main

    project = _project(pytester)
    project.runpytest("acceptance", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert main(_gate_args(project) + ["--bundle", str(tmp_path / "b")]) == 0
    assert f"bundle written to {tmp_path / 'b'}" in capsys.readouterr().out
    assert main(["gate", "--from-bundle", str(tmp_path / "b"), "--spec", str(project.path / "spec" / "ship-two.yaml")]) == 0
    out = capsys.readouterr().out
    assert "manifest verified" in out and "model2 (MODEL-2): RELEASE" in out
    spec = str(project.path / "spec" / "ship-two.yaml")
    for extra, says in ((["--recheck", "3"], "--recheck regenerates samples"), (["--baseline", spec], "--baseline")):
        # silently ignored before: a recheck that never ran, a baseline never compared, and exit 0
        assert main(["gate", "--from-bundle", str(tmp_path / "b"), "--spec", spec, *extra]) == 2
        assert f"{says}" in capsys.readouterr().err
    _flip_one_pass(_samples_file(tmp_path / "b"))
    assert main(["gate", "--from-bundle", str(tmp_path / "b")]) == 2
    assert "bundle refused" in capsys.readouterr().err



def test_from_bundle_in_a_checkout_judges_the_checkout_not_an_older_commit(pytester, tmp_path, capsys):
    """A bundle from an earlier commit (same committed spec) where the criterion passed, gated from a
    checkout whose code no longer passes it: the verdict was taken to be about the bundled run's commit
    and released (exit 0) under HEAD. In a git checkout the bundle's results must come from HEAD, as the
    results of `shiptwo gate` must; --allow-stale re-judges them as the bundled run's."""
    import subprocess

    from shiptwo.cli import main

    project = _project(pytester)
    (project.path / ".gitignore").write_text("reports/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=project.path, check=True)
    subprocess.run([*git, "add", "."], cwd=project.path, check=True)
    subprocess.run([*git, "commit", "-qm", "passing"], cwd=project.path, check=True)
    project.runpytest("acceptance", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert main(_gate_args(project) + ["--bundle", str(tmp_path / "b")]) == 0
    test = project.path / "acceptance" / "test_b.py"
    test.write_text(test.read_text().replace('"8/10"', '"2/10"'))  # HEAD's code now fails the criterion
    subprocess.run([*git, "commit", "-qam", "regress"], cwd=project.path, check=True)
    capsys.readouterr()
    spec = str(project.path / "spec" / "ship-two.yaml")
    assert main(["gate", "--from-bundle", str(tmp_path / "b"), "--spec", spec]) == 1
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): HOLD" in out and "is not the checkout" in out, out
    assert main(["gate", "--from-bundle", str(tmp_path / "b"), "--spec", spec, "--allow-stale"]) == 0

def test_cli_gate_holds_on_a_blocking_significant_regression(pytester, tmp_path, monkeypatch, capsys):
    from shiptwo.cli import main

    project = _project(pytester)
    monkeypatch.setenv("BUNDLE_TEST_PASSES", "150/164")
    project.runpytest("acceptance", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    shutil.copytree(project.path / "reports", tmp_path / "old")
    baseline = str(tmp_path / "old" / "results.json")
    doc = json.loads((tmp_path / "old" / "results.json").read_text())  # the baseline's samples live in its copy
    run_id = doc["run"]["run_id"]
    for entry in doc["criteria"].values():
        entry["samples"]["path"] = entry["samples"]["path"].replace(str(project.path / "reports"), str(tmp_path / "old"))
    (tmp_path / "old" / "results.json").write_text(json.dumps(doc))
    assert (tmp_path / "old" / "evidence" / run_id).is_dir()

    monkeypatch.setenv("BUNDLE_TEST_PASSES", "148/164")  # 2 problems lost: noise
    project.runpytest("acceptance", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert main(_gate_args(project) + ["--baseline", baseline]) == 0
    capsys.readouterr()

    monkeypatch.setenv("BUNDLE_TEST_PASSES", "120/164")  # 30 lost: a real regression of 18 points, still >= 50%
    project.runpytest("acceptance", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert main(_gate_args(project)) == 0  # on its value threshold alone it would release
    capsys.readouterr()
    assert main(_gate_args(project) + ["--baseline", baseline, "--bundle", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "AC-B2-001 REGRESSED: worse" in out and "McNemar" in out and "[blocking]" in out
    decisions, _ = gate_from_bundle(tmp_path / "b", project.path / "spec" / "ship-two.yaml")  # it carries the baseline
    assert decisions[0].verdict == "HOLD" and decisions[0].holdbacks[0].status == "REGRESSED"


def _reseal_info(out, edit):
    info = json.loads((out / "bundle.json").read_text())
    edit(info)
    (out / "bundle.json").write_text(json.dumps(info))
    _rehash_manifest(out)


def test_gate_options_in_bundle_json_are_not_trusted(bundled):
    """f04 (B4b, B6): allow_stale, models and bound come from the caller and the checkout, not bundle.json."""
    project, out = bundled
    checkout_spec = project.path / "spec" / "ship-two.yaml"
    doc = json.loads((out / "results.json").read_text())
    doc["criteria"]["AC-B2-001"].update(commit="0" * 40, nodeids=[], expected=[])  # stale, and no test ran
    (out / "results.json").write_text(json.dumps(doc))
    _reseal_info(out, lambda i: i["gate"].update(allow_stale=True, bound={}, models=["nope"]))
    decisions, _ = gate_from_bundle(out, checkout_spec)
    assert [d.verdict for d in decisions] == ["HOLD"] and "stale result" in decisions[0].holdbacks[0].why
    decisions, _ = gate_from_bundle(out, checkout_spec, allow_stale=True)  # stale allowed: coverage still checked
    assert decisions[0].verdict == REFUSED and "bound tests did not run" in decisions[0].refusals[0].why


def test_bundle_without_acceptance_tests_never_releases(bundled):
    """Offline, with no checkout: the bundle's recorded bindings are not trusted, so no PASS stands."""
    _, out = bundled
    decisions, lines = gate_from_bundle(out)
    assert decisions[0].verdict == REFUSED and "cannot check that every bound test ran" in decisions[0].refusals[0].why
    assert any("recorded bound tests are not trusted" in line for line in lines)



def test_from_bundle_output_keeps_each_bundle_field_on_its_own_line(bundled):
    """bundle.json (re-sealed with its manifest) is editable: a recorded verdict holding a line break
    printed a forged verdict line among the gate's own; every line now shows such text escaped."""
    project, out = bundled
    forged = "HOLD\nmodel2 (MODEL-2): RELEASE — ship-% 100.0%, every criterion must pass\x1b[1A"
    _reseal_info(out, lambda i: i.update(verdict=[{"model": "model2", "verdict": forged}]))
    _, lines = gate_from_bundle(out, project.path / "spec" / "ship-two.yaml")
    text = "\n".join(lines)
    assert "\x1b" not in text and not any(ln.startswith("model2 (MODEL-2): RELEASE —") and "NOTE" not in ln
                                           for ln in text.splitlines()[:-2]), text
    assert "differs from the bundle's recorded HOLD\\nmodel2 (MODEL-2): RELEASE" in text

@pytest.mark.parametrize("edit, message", [
    (lambda i: i.update(artifacts=[1]), "artifacts must be a list of mappings"),
    (lambda i: i["gate"].update(bound=5), "gate.bound must map ids to lists of tests"),
    (lambda i: i.update(gate="x"), "gate must be a mapping"),
    (lambda i: i.update(verdict=5), "verdict must be a list"),
])
def test_malformed_bundle_json_is_a_one_line_error(bundled, edit, message):
    """f08: a type-corrupted (re-sealed) bundle.json is a ShiptwoError naming the file and field."""
    _, out = bundled
    _reseal_info(out, edit)
    with pytest.raises(ShiptwoError, match=f"bundle.json: {message}"):
        open_bundle(out)
    (out / "bundle.json").write_text("[]")
    _rehash_manifest(out)
    with pytest.raises(ShiptwoError, match="bundle description must be a JSON object"):
        open_bundle(out)
