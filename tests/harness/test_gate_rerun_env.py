"""`shiptwo gate --rerun` and the environment it runs in: a variable set where the gate runs (a CI
variable, a shell profile) that makes the re-run's Python, dynamic linker or C compiler load other code
than the checkout's turned the forged PASS of test_gate_rerun.py back into a PASS. Each test plants
one such input after the honest (failing) run and the forgery, and sees the gate refuse the PASS and
say which variable it left out."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shiptwo.harness.release_gate import EXIT_HOLD
from shiptwo.harness.startup_files import unrecorded_startup_files
from shiptwo.harness.results import load_results
from tests.harness.test_gate_rerun import EVIL_CONFTEST, KERNEL_TEST, TEST, Project

REFUSED_LINE = "AC-R2-001 REFUSED: re-run gives FAIL (fresh measured 25, recorded 5)"


def _forged(tmp_path: Path, test: str | None = None) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    project = Project(root)
    if test is not None:
        (root / "acceptance" / "test_r.py").write_text(test)
    return project


def _record_and_forge(project: Project) -> None:
    project.run_acceptance()
    assert load_results(project.results).criteria["AC-R2-001"]["outcome"] == "FAIL"
    project.forge()


def _gate_refuses(project: Project, variable: str, capsys) -> None:
    code = project.gate("--rerun")
    out = capsys.readouterr().out
    assert code == EXIT_HOLD, out
    assert REFUSED_LINE in out, out
    ignored = out.split("ignored from the environment: ", 1)[-1].splitlines()[0]
    assert variable in ignored.split(", "), out  # said, not silent


@pytest.mark.parametrize("planted", ["sitecustomize.py", "colorsys.py"])
def test_rerun_ignores_pythonpath(tmp_path, monkeypatch, planted, capsys):
    """PYTHONPATH names a directory outside the checkout: a `sitecustomize.py` there runs at every
    interpreter start, and a module there shadows the standard library's the test imports."""
    project = _forged(tmp_path, TEST.replace("criterion.check(25.0,", "criterion.check(__import__('colorsys').ONE_THIRD * 75,"))
    _record_and_forge(project)
    forger = tmp_path / "forger"
    forger.mkdir()
    (forger / planted).write_text(EVIL_CONFTEST if planted == "sitecustomize.py" else "ONE_THIRD = 1.0 / 15\n")
    monkeypatch.setenv("PYTHONPATH", str(forger))
    _gate_refuses(project, "PYTHONPATH", capsys)


LIBM_KERNEL = "#include <math.h>\ndouble latency(void) { volatile double x = 3.2188758248682006; return exp(x); }\n"


def _kernel_project(tmp_path: Path, monkeypatch) -> Project:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    project = _forged(tmp_path, KERNEL_TEST)
    (project.root / "acceptance" / "latency.c").write_text(LIBM_KERNEL)  # exp(ln 25): 25
    _record_and_forge(project)
    return project


def _cc() -> str:
    from shiptwo.model import kernels

    return kernels.shutil.which("cc") or kernels.shutil.which("gcc")


def test_rerun_ignores_ld_preload(tmp_path, monkeypatch, capsys):
    """LD_PRELOAD names a shared library whose `exp` replaces libm's in every process of the re-run:
    the compiled kernel's figure became the forger's."""
    project = _kernel_project(tmp_path, monkeypatch)
    fake = tmp_path / "fake_exp.c"
    fake.write_text("double exp(double x) { (void)x; return 5.0; }\n")
    subprocess.run([_cc(), "-shared", "-fPIC", str(fake), "-o", str(tmp_path / "libfake.so")], check=True)
    monkeypatch.setenv("LD_PRELOAD", str(tmp_path / "libfake.so"))
    _gate_refuses(project, "LD_PRELOAD", capsys)


def test_rerun_ignores_cc(tmp_path, monkeypatch, capsys):
    """The kernels are built with $CC when set: a wrapper that compiles other source than it is given
    built the re-run's kernel (its cache is fresh, so it is compiled again, by the wrapper)."""
    project = _kernel_project(tmp_path, monkeypatch)
    forged = tmp_path / "forged.c"
    forged.write_text("double latency(void) { return 5.0; }\n")
    wrapper = tmp_path / "cc"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        args=(); for a in "$@"; do [[ $a == *.c ]] && a={forged}; args+=("$a"); done
        exec {_cc()} "${{args[@]}}"
        """))
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    _gate_refuses(project, "CC", capsys)


def _dist(site: Path, name: str, files: dict[str, str], recorded: dict[str, str] | None = None) -> None:
    """An installed distribution in `site`: its files, and a RECORD listing each with the SHA-256 of
    `recorded`'s text for it (default: its own)."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = []
    for rel, text in files.items():
        (site / rel).write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256((recorded or {}).get(rel, text).encode()).digest()).rstrip(b"=")
        rows.append(f"{rel},sha256={digest.decode()},{len(text)}")
    (info / "RECORD").write_text("\n".join([*rows, f"{info.name}/RECORD,,"]) + "\n")


def test_startup_files_a_distribution_records_pass_and_others_are_named(tmp_path):
    """A `.pth` or sitecustomize in a site directory runs at every interpreter start, the re-run's
    too. One an installed distribution's RECORD lists with its hash passes; one no RECORD lists, or
    whose bytes differ from its RECORD's hash, is named."""
    site = tmp_path / "site-packages"
    _dist(site, "honest", {"honest.pth": "import honest_finder\n", "honest_finder.py": "pass\n"})
    assert unrecorded_startup_files([site]) == []
    _dist(site, "edited", {"edited.pth": "import os; os.environ['X'] = '1'\n"}, recorded={"edited.pth": "/some/path\n"})
    (site / "forger.pth").write_text("import shiptwo_forger\n")
    (site / "sitecustomize.py").write_text(EVIL_CONFTEST)
    (site / "honest_finder.py").write_text("import shiptwo_forger\n")  # what honest.pth imports, rewritten
    found = unrecorded_startup_files([site])
    assert [Path(p).name for p, _ in found] == ["edited.pth", "forger.pth", "honest_finder.py", "sitecustomize.py"], found
    assert dict((Path(p).name, why) for p, why in found)["forger.pth"] == "no installed distribution's RECORD lists it"
    assert "differs from" in dict((Path(p).name, why) for p, why in found)["edited.pth"]


def test_every_module_a_recorded_pth_imports_is_checked(tmp_path):
    """A recorded `.pth` line may import several modules (`import a, b`, `from c import d`, `;`-joined
    statements): only the first name of the line was checked, so a rewritten `b` or `c` ran at every
    start of the re-run unnoticed."""
    site = tmp_path / "site-packages"
    files = {"multi.pth": "import os, multi_b; from multi_c import install; install()\n",
             "multi_b.py": "pass\n", "multi_c.py": "def install(): pass\n"}
    _dist(site, "multi", files)
    assert unrecorded_startup_files([site]) == []
    (site / "multi_b.py").write_text("import shiptwo_forger\n")
    (site / "multi_c.py").write_text("import shiptwo_forger\ndef install(): pass\n")
    assert sorted(Path(p).name for p, _ in unrecorded_startup_files([site])) == ["multi_b.py", "multi_c.py"]


def test_this_interpreters_site_directories_hold_no_unrecorded_startup_file():
    """The check on the interpreter the tests run with (the project's venv): every `.pth` is a
    distribution's (setuptools' distutils-precedence.pth, the editable install's)."""
    assert unrecorded_startup_files() == []


def test_gate_refuses_rerun_with_an_unrecorded_startup_file(tmp_path, capsys):
    """End to end with a real interpreter: a venv whose site-packages hold the project venv's
    packages by a recorded `.pth`, plus a forger's `.pth` importing a module that patches the
    measurement: its gate refuses --rerun (exit 2), naming the file."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    checkout = Path(__file__).resolve().parents[2]
    _dist(site, "bridge", {"bridge.pth": f"{checkout}\n{ours}\n"})
    project = _forged(tmp_path)
    _record_and_forge(project)
    subprocess.run(["git", "init", "-q"], cwd=project.root, check=True)
    (project.root / ".gitignore").write_text("reports/\n")
    subprocess.run(["git", "add", "."], cwd=project.root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "commit", "-qm", "p"],
                   cwd=project.root, check=True)
    (site / "zz_forger.py").write_text(EVIL_CONFTEST)
    (site / "zz_forger.pth").write_text("import zz_forger\n")
    gate = [str(python), "-m", "shiptwo", "gate", "--spec", str(project.spec_path), "--results", str(project.results),
            "--allow-stale", "--rerun"]
    proc = subprocess.run(gate, cwd=project.root, capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{site / 'zz_forger.pth'}: no installed distribution's RECORD lists it" in proc.stderr, proc.stderr


def test_a_pth_python_cannot_open_is_not_a_crash(tmp_path):
    """A directory or dangling link named `*.pth` is skipped by site.py (it cannot open it), so it runs
    nothing: the check passes over it instead of stopping the gate with a traceback."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "folder.pth").mkdir()
    (site / "dangling.pth").symlink_to(tmp_path / "absent")
    (site / "planted.pth").write_text("import os\n")
    assert [Path(p).name for p, _ in unrecorded_startup_files([site])] == ["planted.pth"]
