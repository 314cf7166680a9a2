"""`shiptwo gate --rerun`: re-execute the bound acceptance tests of a recorded PASS and compare outcomes.

Re-deriving a PASS from results.json catches edits that leave the record inconsistent; it cannot
catch an outcome edited together with its figures (for a criterion whose samples no rechecker re-executes), or old
results replayed under rewritten commit fields. Re-running the criterion's tests on this checkout
can: a recorded PASS whose fresh outcome is not PASS is refused.

The run is `python -m pytest <nodeids> --profile <recorded profile> --spec <spec> --results <tmp>
--evidence-root <tmp>` in the project root: it writes only under a temporary directory, never into
the checkout's reports/, and takes no option or plugin from pytest's environment variables (PYTEST_ADDOPTS,
PYTEST_PLUGINS: a plugin named there could patch the measurement) nor by entry point (a planted
`*.egg-info/` in the project root names one): only the harness's own plugin is loaded. Nor does it take
variables that steer what code runs (PYTHONPATH, LD_PRELOAD, CC: `steering_variables`), left out and said
so, nor the user's site directory (`python -s`); release_gate refuses a startup file no package records. Python's bytecode and compiled kernels
are compiled afresh there too: a cached library planted under the honest source's name is never loaded. Timing figures vary between runs, so outcomes are compared, and the fresh
figure is shown beside the recorded one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.harness.results import PASS, format_number, load_results
from shiptwo.paths import PROFILE_ENV

# What pytest reads from the environment besides its arguments: extra options (a `-p` plugin, `-k`) and
# plugins to load. The re-run takes its options from the gate and the committed config only.
PYTEST_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")
# Nor a plugin by entry point: `python -m pytest` puts the project root on sys.path, where importlib.metadata
# finds any `*.egg-info/` (git-ignored, as an editable install's own is) and its `pytest11` plugins. The
# re-run loads the harness's plugin by name, and no other.
HARNESS_PLUGIN = "shiptwo.harness.plugin"
# Where compiled code is cached outside the checkout and loaded without a rebuild when its name matches
# (the C kernels under $XDG_CACHE_HOME, by the hash of their source, compiler, flags and CPU; inductor's
# and Triton's compiled graphs): the re-run gets empty ones in its temporary directory and compiles afresh.
COMPILED_CACHE_ENV = ("XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
BYTECODE_CACHE_ENV = "PYTHONPYCACHEPREFIX"
# What else, set where the gate runs, makes the re-run (and the rebuild) load or compute with code from outside the checkout:
# the interpreter's variables (PYTHONPATH: a sitecustomize.py, or a module shadowing one the tests import;
# PYTHONHOME, PYTHONOPTIMIZE stripping asserts, PYTHONHASHSEED), the dynamic linker's (LD_PRELOAD: a library
# whose exp() replaces libm's; LD_LIBRARY_PATH, LD_AUDIT) and glibc's tunables, the C compiler and where it
# looks (CC: a wrapper that compiles other source into the kernels), torch's and Triton's switches (TF32, other
# kernels, another ptxas) and the kernels' off switch. Thread counts and BLAS settings (OMP_*, MKL_*) are
# the machine's configuration, like its hardware, and stay; so do PATH, HOME, the locale and SHIPTWO_ARTIFACTS.
STEERING_PREFIXES = ("PYTHON", "LD_", "TORCH", "TRITON_")
STEERING_ENV = ("CC", "CXX", "CPP", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "CPATH", "C_INCLUDE_PATH",
                "CPLUS_INCLUDE_PATH", "LIBRARY_PATH", "COMPILER_PATH", "GCC_EXEC_PREFIX", "GLIBC_TUNABLES",
                "NVIDIA_TF32_OVERRIDE", "SHIPTWO_KERNELS")
HARMLESS_PYTHON_ENV = ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")  # whether bytecode is written, output buffered


def steering_variables(environ: dict[str, str]) -> list[str]:
    """The names in `environ` the re-run leaves out, besides the profile it passes itself: pytest's
    (PYTEST_ENV) and those that steer what code runs or what it computes (STEERING_PREFIXES, STEERING_ENV)."""
    replaced = (*COMPILED_CACHE_ENV, BYTECODE_CACHE_ENV)  # fresh_compiled_caches gives them values of its own
    return sorted(k for k in environ if k in PYTEST_ENV or k in STEERING_ENV
                  or (k.startswith(STEERING_PREFIXES) and k not in (*HARMLESS_PYTHON_ENV, *replaced)))


def fresh_compiled_caches(tmp: Path) -> dict[str, str]:
    """Environment entries giving a subprocess empty caches under `tmp` for everything it would otherwise
    load compiled from outside the checkout without recompiling: Python's bytecode (a .pyc planted in the
    checkout's git-ignored __pycache__ whose header matches the committed source) and COMPILED_CACHE_ENV
    (a kernel library planted under the honest source's name). `--rerun` and `--rebuild` both run with them."""
    return {BYTECODE_CACHE_ENV: str(tmp / "pyc"), **{name: str(tmp / "compiled" / name.lower()) for name in COMPILED_CACHE_ENV}}


def scrubbed_environment(tmp: Path) -> tuple[dict[str, str], list[str]]:
    """(environment, names left out) for a subprocess that runs this checkout's code for the gate
    (`--rerun`, `--rebuild`): this process's environment without the profile variable and
    `steering_variables`, with fresh_compiled_caches under `tmp`."""
    dropped = steering_variables(dict(os.environ))
    env = {k: v for k, v in os.environ.items() if k != PROFILE_ENV and k not in dropped}
    return {**env, **fresh_compiled_caches(tmp)}, dropped


@dataclass
class RerunOutcome:
    """What one re-run produced: the fresh entry per criterion id (missing: none was recorded),
    the seconds it took, and a one-line error when the run itself went wrong."""

    entries: dict[str, dict]
    seconds: float = 0.0
    error: str = ""


@dataclass
class Rerun:
    """Runs the acceptance tests in a subprocess (callable as decide's `rerun`) and logs what it ran."""

    root: Path
    spec_path: Path
    timeout: float | None = None
    log: list[tuple[str, list[str], float]] = field(default_factory=list)  # (profile, ids, seconds)
    dropped: list[str] = field(default_factory=list)  # the environment's variables left out (steering_variables)

    def __call__(self, profile: str, tests: dict[str, list[str]]) -> RerunOutcome:
        nodeids = sorted({n for ids in tests.values() for n in ids})
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="shiptwo-rerun-") as tmp:
            results = Path(tmp) / "results.json"
            # -s: no user site directory (its .pth files and usercustomize run at start)
            cmd = [sys.executable, "-s", "-m", "pytest", *nodeids, "-q", "-p", "no:cacheprovider", "-p", HARNESS_PLUGIN,
                   "--rootdir", str(self.root),
                   "--profile", profile, "--spec", str(self.spec_path), "--results", str(results),
                   "--evidence-root", str(Path(tmp) / "evidence")]
            env, self.dropped = scrubbed_environment(Path(tmp))
            env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
            error = ""
            try:
                proc = subprocess.run(cmd, check=False, cwd=self.root, env=env, capture_output=True, text=True, timeout=self.timeout)
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
                if proc.returncode not in (0, 1):  # 1: some test failed, which the outcomes say
                    error = f"pytest exited {proc.returncode}: {tail[0]}"
            except subprocess.TimeoutExpired:
                error, tail = f"timed out after {self.timeout:g} s", [""]
            entries = {}
            if results.is_file():
                try:
                    entries = load_results(results).criteria
                except ShiptwoError as exc:
                    error = error or f"unreadable fresh results: {exc}"
            elif not error:
                error = f"no results written ({tail[0]})"
        seconds = time.monotonic() - start
        self.log.append((profile, sorted(tests), seconds))
        return RerunOutcome({cid: e for cid, e in entries.items() if cid in tests}, seconds, error)

    def summary(self) -> str:
        if not self.log:
            return "re-run (--rerun): no criterion to re-run"
        parts = [f"{', '.join(ids)} (profile {profile}, {seconds:.1f} s)" for profile, ids, seconds in self.log]
        ignored = f"; ignored from the environment: {', '.join(self.dropped)}" if self.dropped else ""
        return f"re-run (--rerun): {sum(len(ids) for _, ids, _ in self.log)} criteria: {'; '.join(parts)}{ignored}"


def _figure(entry: dict) -> str:
    value = entry.get("measured")
    return "none" if value is None else format_number(value) if isinstance(value, (int, float)) else repr(value)


def compare_rerun(cid: str, recorded: dict, fresh: dict | None, error: str = "") -> tuple[list[str], str]:
    """(disagreements, note) between a recorded PASS and its fresh re-run entry."""
    if fresh is None:
        why = f": {error}" if error else ""
        return [f"re-run recorded no result for {cid}{why}"], ""
    if error:  # a run that went wrong (pytest exit 2-5, a timeout) re-derives nothing, whatever it wrote
        return [f"re-run of {cid} errored: {error}"], ""
    figures = f"fresh measured {_figure(fresh)}, recorded {_figure(recorded)}"
    if fresh.get("outcome") != PASS:
        message = fresh.get("message") or fresh.get("reason") or ""
        return [f"re-run gives {fresh.get('outcome')} ({figures}){': ' + message if message else ''}"], ""
    return [], f"re-run PASS ({figures})"
