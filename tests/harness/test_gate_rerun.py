"""`shiptwo gate --rerun`: a results file forged consistently (outcome, figure and leg record edited
together) passes every re-derivation from results.json alone; re-running the bound acceptance
tests catches it. The project is real: its acceptance test runs through the plugin in a subprocess,
as the gate's re-run does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.harness.release_gate import (
    EXIT_HOLD,
    EXIT_RELEASE,
    REFUSED,
    RELEASE,
    decide,
)
from shiptwo.harness.rerun import Rerun, RerunOutcome
from shiptwo.harness.results import load_results
from shiptwo.harness.spec import load_spec

SPEC = """\
models:
  model2: {name: MODEL-2, release_profiles: [default], required: all}
criteria:
  - {id: AC-R2-001, model: model2, title: latency, metric: latency_ms, comparison: "<=", threshold: 10, unit: ms, class: packaging}
  - {id: AC-R2-002, model: model2, title: defects, metric: defects, comparison: "==", threshold: 0, unit: defects, class: packaging}
"""

TEST = """\
import pytest

@pytest.mark.ac("AC-R2-001")
def test_latency(criterion):
    log = criterion.evidence_dir / "timings.txt"
    log.write_text("25.0")
    criterion.check(25.0, evidence={"timings": log})  # the honest figure misses its threshold (<= 10)

@pytest.mark.ac("AC-R2-002")
def test_defects(criterion):
    criterion.check(0)
"""


class Project:
    def __init__(self, root: Path):
        self.root = root
        (root / "spec").mkdir()
        (root / "acceptance").mkdir()
        self.spec_path = root / "spec" / "ship-two.yaml"
        self.spec_path.write_text(SPEC)
        (root / "acceptance" / "test_r.py").write_text(TEST)
        self.results = root / "reports" / "results.json"

    def run_acceptance(self) -> None:
        subprocess.run([sys.executable, "-m", "pytest", "acceptance", "-q", "-p", "no:cacheprovider", "--rootdir", str(self.root),
                        "--profile", "default", "--spec", str(self.spec_path), "--results", str(self.results),
                        "--evidence-root", str(self.root / "reports" / "evidence")], cwd=self.root, capture_output=True, check=False)

    def forge(self) -> None:
        """What the reviewer did: the FAIL becomes a PASS with consistent figures."""
        doc = json.loads(self.results.read_text())
        entry = doc["criteria"]["AC-R2-001"]
        entry.update(outcome="PASS", measured=5.0, message="latency_ms = 5 ms (threshold <= 10)")
        entry["legs"][0].update(measured=5.0, judged=5.0, met=True)
        self.results.write_text(json.dumps(doc))

    def gate(self, *extra: str) -> int:
        return main(["gate", "--spec", str(self.spec_path), "--results", str(self.results), "--allow-stale", *extra])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("rerun"))
    project.run_acceptance()
    assert load_results(project.results).criteria["AC-R2-001"]["outcome"] == "FAIL"
    return project


def test_forged_pass_releases_without_rerun_and_is_refused_with_it(recorded, capsys):
    recorded.forge()
    before = recorded.results.read_bytes()
    assert recorded.gate() == EXIT_RELEASE  # the documented hole: re-derivation alone cannot see it
    capsys.readouterr()
    assert recorded.gate("--rerun") == EXIT_HOLD
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): REFUSED" in out
    assert "AC-R2-001 REFUSED: re-run gives FAIL (fresh measured 25, recorded 5)" in out
    assert "AC-R2-002: re-run PASS (fresh measured 0, recorded 0)" in out
    assert "re-run (--rerun): 2 criteria: AC-R2-001, AC-R2-002 (profile default," in out
    assert recorded.results.read_bytes() == before  # the re-run wrote only to a temp dir
    assert len(list((recorded.root / "reports" / "evidence").iterdir())) == 1


def test_genuine_pass_stands_under_rerun(tmp_path):
    project = Project(tmp_path)
    (tmp_path / "acceptance" / "test_r.py").write_text(TEST.replace("25.0", "4.0"))
    project.run_acceptance()
    spec, results = load_spec(project.spec_path), load_results(project.results)
    rerun = Rerun(tmp_path, project.spec_path)
    bound = {"AC-R2-001": {"acceptance/test_r.py::test_latency"}, "AC-R2-002": {"acceptance/test_r.py::test_defects"}}
    [d] = decide(spec, results, allow_stale=True, bound=bound, rerun=rerun)
    assert d.verdict == RELEASE and not d.refusals, d
    assert [ids for _, ids, _ in rerun.log] == [["AC-R2-001", "AC-R2-002"]]
    assert len(list((tmp_path / "reports" / "evidence").iterdir())) == 1  # the first run's; the re-run's went to a temp dir


def test_rerun_without_an_entry_or_with_an_error_refuses(recorded):
    spec, results = load_spec(recorded.spec_path), load_results(recorded.results)
    bound = {"AC-R2-001": {"acceptance/test_r.py::test_latency"}, "AC-R2-002": {"acceptance/test_r.py::test_defects"}}
    calls = []

    def broken(profile, tests):
        calls.append((profile, tests))
        return RerunOutcome({}, 0.1, "pytest exited 4: usage error")

    [d] = decide(spec, results, allow_stale=True, bound=bound, rerun=broken)
    assert d.verdict == REFUSED
    assert calls and all(p == "default" for p, _ in calls)
    assert any("re-run recorded no result for AC-R2-002: pytest exited 4" in h.why for h in d.refusals)


def test_rerun_does_not_combine_with_from_bundle(recorded, tmp_path, capsys):
    assert recorded.gate("--rerun", "--from-bundle", str(tmp_path)) == 2
    assert "--rerun re-runs tests in the checkout" in capsys.readouterr().err


EVIL_CONFTEST = """\
import shiptwo.harness.results as results

_evaluate = results.CriterionCheck.evaluate

def evaluate(self, measured, *args, **kwargs):  # what the re-run measures is now what the forger wants
    return _evaluate(self, 5.0 if self.id == "AC-R2-001" else measured, *args, **kwargs)

results.CriterionCheck.evaluate = evaluate
"""


@pytest.mark.parametrize("smuggled", ["reports/evidence/x", "-preports.evidence.x.conftest"])
def test_rerun_runs_only_bound_tests_not_paths_the_results_name(recorded, tmp_path, smuggled, capsys):
    """The forged PASS also names, among the tests that ran, a directory under the git-ignored reports/
    (whose conftest.py would patch the measurement in the re-run's process) or a pytest option loading
    it as a plugin: the gate refuses a recorded test not bound to the criterion, and never runs it."""
    recorded.forge()
    evil = recorded.root / "reports" / "evidence" / "x"
    evil.mkdir(parents=True, exist_ok=True)
    (evil / "conftest.py").write_text(EVIL_CONFTEST)
    doc = json.loads(recorded.results.read_text())
    entry = doc["criteria"]["AC-R2-001"]
    entry["nodeids"] = sorted([*entry["nodeids"], smuggled])
    entry["per_test"] = [{"nodeid": n, "outcome": "PASS", "measured": 5.0, "legs": entry["legs"]} for n in entry["nodeids"]]
    forged = tmp_path / "results.json"
    forged.write_text(json.dumps(doc))
    code = main(["gate", "--spec", str(recorded.spec_path), "--results", str(forged), "--allow-stale", "--rerun"])
    out = capsys.readouterr().out
    assert code == EXIT_HOLD, out
    assert f"AC-R2-001 REFUSED: recorded test {smuggled} is not bound to AC-R2-001 in acceptance/" in out



@pytest.mark.parametrize("variable, value", [("PYTEST_ADDOPTS", "-p shiptwo_forger"), ("PYTEST_PLUGINS", "shiptwo_forger")])
def test_rerun_ignores_pytest_options_and_plugins_from_the_environment(recorded, monkeypatch, variable, value, capsys):
    """pytest reads options (PYTEST_ADDOPTS) and plugins (PYTEST_PLUGINS) from the environment: set where
    the gate runs (a CI variable), either loaded a plugin into the re-run that patched its measurement, and
    the forged PASS re-ran as a PASS. The re-run takes its options from the gate and the committed config only."""
    recorded.forge()
    plugin = recorded.root / "shiptwo_forger.py"  # importable in the re-run: its directory is the project root
    plugin.write_text(EVIL_CONFTEST)
    monkeypatch.setenv(variable, value)
    try:
        code = recorded.gate("--rerun")
    finally:
        plugin.unlink()
    out = capsys.readouterr().out
    assert code == EXIT_HOLD, out
    assert "AC-R2-001 REFUSED: re-run gives FAIL (fresh measured 25, recorded 5)" in out
    assert f"ignored from the environment: {variable}" in out  # said, not silent

def test_rerun_that_errored_refuses_even_with_a_pass_entry(recorded):
    """pytest exiting 2-5 (interrupted, internal or usage error) is a refusal, whatever results it wrote."""
    spec, results = load_spec(recorded.spec_path), load_results(recorded.results)
    bound = {"AC-R2-001": {"acceptance/test_r.py::test_latency"}, "AC-R2-002": {"acceptance/test_r.py::test_defects"}}

    def errored(profile, tests):
        return RerunOutcome({cid: {"outcome": "PASS", "measured": 0} for cid in tests}, 0.1, "pytest exited 3: INTERNALERROR")

    [d] = decide(spec, results, allow_stale=True, bound=bound, rerun=errored)
    assert d.verdict == REFUSED
    assert any("re-run of AC-R2-002 errored: pytest exited 3: INTERNALERROR" in h.why for h in d.refusals), d.refusals


SAMPLED_SPEC = """\
models:
  model2: {name: MODEL-2, release_profiles: [default], required: all}
criteria:
  - {id: AC-R2-003, model: model2, title: validity, metric: valid_pct, comparison: ">=", threshold: 50, unit: "%",
     class: optimization, samples: {statistic: pass_pct}}
"""

SAMPLED_TEST = """\
import json
import pytest

@pytest.mark.ac("AC-R2-003")
def test_validity(criterion):
    path = criterion.evidence_dir / "samples.jsonl"
    rows = [{"id": str(i), "prompt_sha256": "0" * 64, "output": "x", "outcome": "fail" if i else "pass"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\\n" for r in rows))
    criterion.check(25.0, samples=path)  # the honest share misses its floor (>= 50)
"""


def failing_entry(tmp_path, spec: str, test: str, cid: str):
    """(the project, its results document, criterion `cid`'s entry) after an acceptance run in which it FAILs."""
    project = Project(tmp_path)
    project.spec_path.write_text(spec)
    (tmp_path / "acceptance" / "test_r.py").write_text(test)
    project.run_acceptance()
    doc = json.loads(project.results.read_text())
    assert doc["criteria"][cid]["outcome"] == "FAIL"
    return project, doc, doc["criteria"][cid]


def recheck_passes_rerun_refuses(project, capsys, says: str) -> None:
    """A forged, self-consistent record passes --recheck alone (the documented hole) and --rerun refuses it, saying `says`."""
    assert project.gate("--recheck", "3") == EXIT_RELEASE
    capsys.readouterr()
    assert project.gate("--recheck", "3", "--rerun") == EXIT_HOLD
    assert says in capsys.readouterr().out


def test_sampled_criterion_without_a_rechecker_is_rerun(tmp_path, capsys):
    """A criterion with a samples rule but no `recheck` kind has nothing to re-execute its samples:
    a per-sample file forged consistently (outcomes flipped, its SHA-256, the figure and leg edited)
    re-derives. --rerun re-runs it, instead of leaving it to a --recheck that cannot reach it."""
    from shiptwo.fileio import sha256_file

    project, doc, entry = failing_entry(tmp_path, SAMPLED_SPEC, SAMPLED_TEST, "AC-R2-003")
    samples = Path(entry["samples"]["path"])
    samples.write_text(samples.read_text().replace('"fail"', '"pass"'))
    entry["samples"].update(sha256=sha256_file(samples), value=100.0)
    entry.update(outcome="PASS", measured=100.0)
    entry["legs"][0].update(measured=100.0, judged=100.0, met=True)
    project.results.write_text(json.dumps(doc))
    recheck_passes_rerun_refuses(project, capsys, "AC-R2-003 REFUSED: re-run gives FAIL (fresh measured 25, recorded 100)")


def test_rerun_refuses_git_ignored_code_in_acceptance(tmp_path, capsys):
    """A test and conftest.py under acceptance/build/ (git-ignored, so no uncommitted change) would be
    bound by the static scan, named in the forged entry and run by --rerun, patching the measurement."""
    project = Project(tmp_path)
    (tmp_path / ".gitignore").write_text("build/\nreports/*\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=tmp_path, check=True)
    project.run_acceptance()
    project.forge()
    evil = tmp_path / "acceptance" / "build"
    evil.mkdir()
    (evil / "conftest.py").write_text(EVIL_CONFTEST)
    (evil / "test_more.py").write_text('import pytest\n\n@pytest.mark.ac("AC-R2-001")\ndef test_more(criterion):\n    criterion.check(1.0)\n')
    doc = json.loads(project.results.read_text())
    entry = doc["criteria"]["AC-R2-001"]
    entry["nodeids"] = sorted([*entry["nodeids"], "acceptance/build/test_more.py::test_more"])
    entry["per_test"] = [{"nodeid": n, "outcome": "PASS", "measured": 5.0, "legs": entry["legs"]} for n in entry["nodeids"]]
    project.results.write_text(json.dumps(doc))
    assert project.gate("--rerun") == 2
    err = capsys.readouterr().err
    assert "--rerun runs this checkout's code, but acceptance/build/conftest.py is git-ignored code" in err, err


def test_rerun_compiles_afresh_not_bytecode_planted_in_pycache(tmp_path, capsys):
    """A .pyc in the (git-ignored) __pycache__ of a module the test imports, whose header matches the
    committed source (same mtime and size) but whose code gives a passing figure: Python loads it
    instead of the source. The re-run compiles into a fresh cache and measures the source's figure."""
    import importlib.util
    import os
    import py_compile

    project = Project(tmp_path)
    figures = tmp_path / "acceptance" / "figures.py"
    figures.write_text("LATENCY = 25.0\n")
    (tmp_path / "acceptance" / "test_r.py").write_text(
        TEST.replace("criterion.check(25.0,", "criterion.check(__import__('figures').LATENCY,"))
    project.run_acceptance()
    assert load_results(project.results).criteria["AC-R2-001"]["outcome"] == "FAIL"
    project.forge()
    stat = figures.stat()
    figures.write_text("LATENCY = 05.0\n")  # same size: the planted bytecode's header matches the source
    os.utime(figures, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    py_compile.compile(str(figures), cfile=importlib.util.cache_from_source(str(figures)), doraise=True)
    figures.write_text("LATENCY = 25.0\n")
    os.utime(figures, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    probe = subprocess.run([sys.executable, "-c", "import figures; print(figures.LATENCY)"], cwd=figures.parent,
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "5.0", "the planted bytecode is what a plain import loads"
    assert project.gate("--rerun") == EXIT_HOLD
    assert "AC-R2-001 REFUSED: re-run gives FAIL (fresh measured 25, recorded 5)" in capsys.readouterr().out


def _committed_project(tmp_path: Path, gitignore: str = "build/\nreports/*\n*.pyc\n") -> Project:
    project = Project(tmp_path)
    (tmp_path / ".gitignore").write_text(gitignore)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=tmp_path, check=True)
    return project


@pytest.mark.parametrize("where", [".", "acceptance", "colorsys-package"])
def test_rerun_refuses_a_git_ignored_module_that_would_shadow_an_import(tmp_path, where, capsys):
    """`python -m pytest` puts the project root first on sys.path, and pytest puts acceptance/ there too:
    a sourceless `colorsys.pyc` in either (git-ignored as *.pyc, so no status shows it) is what the test's
    `import colorsys` loads, before the standard library's (so would `llama_cpp.pyc` be before the real
    runtime). Planted after the honest run, it made the forged PASS re-run as a PASS."""
    import py_compile

    project = _committed_project(tmp_path)
    (tmp_path / "acceptance" / "test_r.py").write_text(
        TEST.replace("criterion.check(25.0,", "criterion.check(__import__('colorsys').ONE_THIRD * 75,"))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "colorsys"], cwd=tmp_path, check=True)
    project.run_acceptance()
    assert load_results(project.results).criteria["AC-R2-001"]["outcome"] == "FAIL"
    project.forge()
    fake = tmp_path / "fake_colorsys.py"
    fake.write_text("ONE_THIRD = 1.0 / 15\n")
    if where == "colorsys-package":  # a package at the root, its __init__ an extension's tagged name, ignored
        (tmp_path / ".git" / "info" / "exclude").write_text("colorsys/\n")
        (tmp_path / "colorsys").mkdir()
        planted = tmp_path / "colorsys" / "__init__.cpython-311-x86_64-linux-gnu.so"
        planted.write_bytes(b"\x7fELF")
    else:
        py_compile.compile(str(fake), cfile=str(tmp_path / where / "colorsys.pyc"), doraise=True)
    fake.unlink()
    code = project.gate("--rerun")
    captured = capsys.readouterr()
    assert code == 2, captured.out
    shown = {".": "colorsys.pyc", "acceptance": "acceptance/colorsys.pyc", "colorsys-package": "colorsys/"}[where]
    assert f"--rerun runs this checkout's code, but {shown} is git-ignored code" in captured.err, captured.err


def test_rerun_refuses_a_pytest_config_hidden_by_git_info_exclude(tmp_path, capsys):
    """A root pytest.ini (read before pyproject.toml) whose addopts load a plugin from the ignored build/,
    hidden from every status by a line in .git/info/exclude: the re-run loaded it and re-ran the forged PASS."""
    project = _committed_project(tmp_path)
    project.run_acceptance()
    project.forge()
    (tmp_path / ".git" / "info").mkdir(exist_ok=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("pytest.ini\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p build.shiptwo_forger\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "shiptwo_forger.py").write_text(EVIL_CONFTEST)
    code = project.gate("--rerun")
    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert "--rerun runs this checkout's code, but pytest.ini is git-ignored code" in captured.err, captured.err


KERNEL_TEST = """\
import ctypes
from pathlib import Path

import pytest

from shiptwo.model import kernels

@pytest.mark.ac("AC-R2-001")
def test_latency(criterion):
    lib = kernels.compiled(Path(__file__).with_name("latency.c"), "latency")  # the project's compiled-kernel loader
    lib.latency.restype = ctypes.c_double
    criterion.check(lib.latency())

@pytest.mark.ac("AC-R2-002")
def test_defects(criterion):
    criterion.check(0)
"""


def test_rerun_compiles_kernels_afresh_not_a_library_planted_in_the_cache(tmp_path, monkeypatch, capsys):
    """Compiled kernels are cached by the hash of their source, compiler, flags and CPU under
    $XDG_CACHE_HOME (~/.cache), outside the checkout, and a library found there is loaded without a
    rebuild: one compiled from other code under the honest source's name (a restored CI cache can
    carry it) was what the re-run measured with, and the forged PASS re-ran as PASS. The re-run keeps
    its compiled-code caches in its own temporary directory."""
    from shiptwo.model import kernels

    cache = tmp_path / "home-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    root = tmp_path / "project"
    root.mkdir()
    project = Project(root)
    (root / "acceptance" / "test_r.py").write_text(KERNEL_TEST)
    source = root / "acceptance" / "latency.c"
    source.write_text("double latency(void) { return 25.0; }\n")
    project.run_acceptance()
    assert load_results(project.results).criteria["AC-R2-001"]["outcome"] == "FAIL"
    project.forge()
    cc = kernels.shutil.which("cc") or kernels.shutil.which("gcc")
    cached = kernels._build(cc, source)  # the name the honest source is cached under
    assert cached.is_relative_to(cache)
    forged = tmp_path / "forged.c"
    forged.write_text("double latency(void) { return 5.0; }\n")
    subprocess.run([cc, *kernels.CFLAGS, str(forged), "-o", str(cached)], check=True)
    assert project.gate("--rerun") == EXIT_HOLD
    assert "AC-R2-001 REFUSED: re-run gives FAIL (fresh measured 25, recorded 5)" in capsys.readouterr().out


RECHECKED_SPEC = """\
models:
  model2: {name: MODEL-2, release_profiles: [default], required: all}
criteria:
  - {id: AC-R2-004, model: model2, title: pass rate in time, metric: pass_pct, comparison: ">=", threshold: 50, unit: "%",
     class: optimization, samples: {statistic: pass_pct, recheck: samples-as-recorded},
     legs: [{metric: seconds, comparison: "<=", threshold: 10, unit: s}]}
"""

RECHECKED_TEST = """\
import json
import pytest

@pytest.mark.ac("AC-R2-004")
def test_rate(criterion):
    path = criterion.evidence_dir / "samples.jsonl"
    rows = [{"id": str(i), "prompt_sha256": "0" * 64, "output": "x", "outcome": "pass"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\\n" for r in rows))
    criterion.check(100.0, samples=path, legs={"seconds": 25.0})  # honest samples; the time misses (<= 10)
"""


def test_a_rechecked_criterion_with_a_leg_its_samples_do_not_give_is_rerun(tmp_path, monkeypatch, capsys):
    """--rerun left every criterion --recheck re-executed to the recheck; but the recheck re-executes
    samples only, and a leg not derived from them (its time) was re-derived by nothing: its three fields
    edited, the PASS released under --recheck --rerun. Only a criterion whose every leg follows from its
    samples is left to --recheck."""
    from shiptwo.harness import verifiers

    monkeypatch.setitem(verifiers._RECHECK, "samples-as-recorded", lambda request: [])  # the samples are honest
    project, doc, entry = failing_entry(tmp_path, RECHECKED_SPEC, RECHECKED_TEST, "AC-R2-004")
    entry["outcome"] = "PASS"
    entry["legs"][1].update(measured=5.0, judged=5.0, met=True)
    project.results.write_text(json.dumps(doc))
    recheck_passes_rerun_refuses(project, capsys, "AC-R2-004 REFUSED: re-run gives FAIL")


def test_rerun_loads_no_plugin_from_a_distribution_planted_in_the_checkout(tmp_path, capsys):
    """`python -m pytest` in the project root puts the root on sys.path, so importlib.metadata finds
    distributions there: a `forger.egg-info/` (git-ignored as *.egg-info/, as an editable install's own
    is) whose entry_points.txt names a pytest11 plugin in the ignored build/ was loaded by the re-run's
    pytest, which patched the measurement: the forged PASS re-ran as a PASS. The re-run loads no plugin
    by entry point, only the harness's own."""
    project = _committed_project(tmp_path, gitignore="build/\nreports/*\n*.egg-info/\n")
    project.run_acceptance()
    project.forge()
    info = tmp_path / "forger.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: forger\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\nforger = build.shiptwo_forger\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "shiptwo_forger.py").write_text(EVIL_CONFTEST)
    assert project.gate("--rerun") == EXIT_HOLD
    assert "AC-R2-001 REFUSED: re-run gives FAIL (fresh measured 25, recorded 5)" in capsys.readouterr().out


PARAM_SPEC = """\
models:
  model1: {name: MODEL-1, release_profiles: [default], required: all}
  model2: {name: MODEL-2, release_profiles: [default], required: all}
criteria:
  - {id: AC-R1-009, model: model1, title: provenance, metric: provenance_defects, comparison: "==", threshold: 0, unit: defects, class: packaging}
  - {id: AC-R2-012, model: model2, title: provenance, metric: provenance_defects, comparison: "==", threshold: 0, unit: defects, class: packaging}
"""

PARAM_TEST = """\
import pytest

@pytest.mark.parametrize("model", [
    pytest.param("model2", marks=pytest.mark.ac("AC-R2-012")),
    pytest.param("model1", marks=pytest.mark.ac("AC-R1-009")),
])
def test_provenance(criterion, model):
    criterion.check(0 if model == "model2" else 3)  # MODEL-1's formats miss three fields
"""


def test_an_entry_recorded_for_another_criterion_of_the_same_test_refuses(tmp_path, capsys):
    """Two criteria bound to the parameters of one test (as AC-SHIP2-012 and AC-SHIP1-009 are) with the
    same metric and threshold: MODEL-2's PASS entry copied, unedited, into MODEL-1's failing slot ran a
    test bound to the function, so every re-derivation held and MODEL-1 released. The entry names the
    criterion it was recorded for."""
    project = Project(tmp_path)
    project.spec_path.write_text(PARAM_SPEC)
    (tmp_path / "acceptance" / "test_r.py").write_text(PARAM_TEST)
    project.run_acceptance()
    doc = json.loads(project.results.read_text())
    assert doc["criteria"]["AC-R1-009"]["outcome"] == "FAIL" and doc["criteria"]["AC-R2-012"]["outcome"] == "PASS"
    doc["criteria"]["AC-R1-009"] = doc["criteria"]["AC-R2-012"]
    project.results.write_text(json.dumps(doc))
    assert project.gate("--model", "model1") == EXIT_HOLD
    assert "AC-R1-009 REFUSED: the entry was recorded for 'AC-R2-012', not AC-R1-009" in capsys.readouterr().out
