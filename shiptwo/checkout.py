"""The state of the checkout a run executes in: commit, dirty flag, spec SHA-256, profile, time,
and the environment fingerprint (library versions, CPU, threads, accelerator).

Both wings record it (results, release manifests), so it lives below both. Import-light: versions
come from package metadata; torch is imported only when `environment()` is asked to.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

UNKNOWN_COMMIT = "unknown"
NOT_INSTALLED = "not installed"
FINGERPRINT_PACKAGES = ("torch", "transformers", "llama-cpp-python", "gguf", "numpy")
CPUINFO = Path("/proc/cpuinfo")
TORCH_NOT_LOADED = "torch not loaded by the recording process"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_info(root: str | Path, spec_sha256: str, profile: str, with_environment: bool = False) -> dict:
    """Commit, dirty flag, spec SHA-256, profile and UTC time of the current run; with
    `with_environment`, also the environment fingerprint (a recording run: results, bundles)."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD") or UNKNOWN_COMMIT
    status = _git(root, "status", "--porcelain") if commit != UNKNOWN_COMMIT else None
    info = {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "spec_sha256": spec_sha256,
        "profile": profile,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if with_environment:
        info["environment"] = environment(import_torch=False)  # a run that measured with torch has loaded it
    return info


def uncommitted(root: str | Path, paths: list[str | Path]) -> list[str]:
    """The files under `paths` (relative to the checkout `root`, or absolute) that differ from HEAD or
    are untracked; [] outside a git checkout. The gate refuses to judge against such a spec."""
    root = Path(root)
    rel = [str(Path(p).resolve().relative_to(root.resolve())) if Path(p).is_absolute() else str(p) for p in paths]
    changed = _git(root, "diff", "--name-only", "HEAD", "--", *rel) or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *rel) or ""
    return [line for line in (changed + "\n" + untracked).splitlines() if line.strip()]


def untracked(root: str | Path, files: list[str | Path]) -> list[str]:
    """The `files` (absolute, inside the checkout `root`) that the checkout's git does not track: not
    committed, git-ignored, or inside a repository of their own nested in the checkout (which neither
    status nor the ignore rules list file by file); [] where git fails."""
    root = Path(root).resolve()
    rel = [str(Path(f).resolve().relative_to(root)) for f in files]
    # -z: paths as they are (a non-ASCII one is otherwise quoted); literal: `[x].yaml` is no glob
    listed = _git(root, "--literal-pathspecs", "ls-files", "-z", "--", *rel)  # relative to root, as rel is
    if listed is None:
        return []
    return [r for r in rel if r not in set(listed.split("\0"))]


def ignored_files(root: str | Path, *args: str) -> list[str]:
    """`git ls-files --others --ignored --exclude-standard ARGS` in the checkout `root` (the standard
    excludes include .git/info/exclude, which anyone who can write the tree can extend); [] where git fails."""
    return (_git(Path(root), "ls-files", "--others", "--ignored", "--exclude-standard", *args) or "").splitlines()


def ignored_python(root: str | Path, paths: list[str]) -> list[str]:
    """The git-ignored `.py` files under `paths` (relative to the checkout `root`): code that no
    status shows (a conftest.py or test under acceptance/build/) yet pytest and Python would run."""
    return [line for line in ignored_files(root, "--", *paths) if line.endswith(".py")]


def package_version(name: str) -> str:
    """The installed version of distribution `name`, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from /proc/cpuinfo (else platform.processor(), else "unknown")."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _accelerator(torch) -> str:
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "none"


def environment(import_torch: bool = True) -> dict:
    """The environment fingerprint a measurement depends on: shiptwo's commit, library versions,
    Python, CPU model, thread counts and accelerator. Two runs whose fingerprints differ are not
    comparable on environment-dependent criteria (throughput, timings). With `import_torch` False,
    torch's figures are read only if the process has already loaded it (else recorded as such)."""
    env = copy.deepcopy(_static_environment())
    torch = sys.modules.get("torch")
    if torch is None and import_torch:
        import torch
    if torch is None:
        env.update(torch_threads=TORCH_NOT_LOADED, accelerator=TORCH_NOT_LOADED)
    else:
        env.update(torch_threads=torch.get_num_threads(), accelerator=_accelerator(torch))
    return env


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict:
    return {
        "shiptwo_commit": _git(Path(__file__).resolve().parent.parent, "rev-parse", "HEAD") or UNKNOWN_COMMIT,
        "versions": {name: package_version(name) for name in FINGERPRINT_PACKAGES},
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
