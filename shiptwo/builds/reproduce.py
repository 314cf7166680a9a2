"""Is a stored artifact set what this code builds? Rebuild it in a temporary store and compare.

Builds are deterministic on one machine (seeded training, deterministic algorithms, kernels with a
fixed summation order, safetensors headers written sorted), so two builds of one key agree byte for
byte except in the records VARIABLE_RECORDS names, which carry wall-clock readings or the
circumstances of the build; those compare by content without those fields (the store's own
manifest without its build time and file hashes, which are re-derived from the files).
`shiptwo gate --rebuild` (checks/rebuild.py) runs this on what a run judged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from shiptwo.builds.registry import BUILDERS
from shiptwo.builds.store import ARTIFACT_MANIFEST, BUILD_FIELDS
from shiptwo.errors import ShiptwoError
from shiptwo.formats.release import CIRCUMSTANCE_FIELDS, RELEASE_MANIFEST
from shiptwo.model.checkpoint import read_safetensors
from shiptwo.paths import ARTIFACT_ROOT_ENV, PROFILES
from shiptwo.training.loop import RESUME_EVENT, TRAIN_LOG, TRAIN_STATE, VARYING_FIELDS

# Relative path in an artifact set -> the fields two builds of one key may differ in; every other
# file must agree byte for byte.
VARIABLE_RECORDS = {
    TRAIN_LOG: VARYING_FIELDS,  # a JSON line per step, with its tokens/s (and a line per resumption)
    TRAIN_STATE: VARYING_FIELDS,  # the resumable state: its tensors exact, its JSON metadata holds the log
    f"release/{RELEASE_MANIFEST}": CIRCUMSTANCE_FIELDS,  # when and from which checkout it was published
    ARTIFACT_MANIFEST: BUILD_FIELDS | VARYING_FIELDS,  # the store's: recipe, roles and the run's summary compared
}
DROPPED_EVENTS = (RESUME_EVENT,)  # log entries (in the log and the run state) of a resumption, not of training


@dataclass(frozen=True)
class ArtifactSet:
    """One stored build: <store>/<model>/<profile>/<key>."""

    model: str
    profile: str
    key: str

    def __str__(self) -> str:
        return f"{self.model}/{self.profile}/{self.key}"


def rebuild_set(which: ArtifactSet, root: Path, into: Path, timeout: float | None = None, *, env: Mapping[str, str]) -> Path:
    """Build `which.model` under `which.profile` from the checkout at `root` into the empty store
    `into` (a subprocess, as a user's `shiptwo build`, with no user site directory); the built set's
    directory. `env` is its environment (`harness.rerun.scrubbed_environment`, which this layer cannot
    import): empty bytecode and compiled-code caches and no variable steering what code runs (PYTHONPATH,
    LD_PRELOAD, CC), so that what builds is the committed source, not a .pyc planted in the checkout's
    __pycache__, a kernel library or inductor graph planted in the user's caches, or a compiler wrapper,
    which would shape the stored build and its rebuild alike."""
    if which.model not in BUILDERS or which.profile not in PROFILES:
        raise ShiptwoError(f"{which.model}/{which.profile}: not a model and profile this checkout builds "
                           f"(models {', '.join(sorted(BUILDERS))}; profiles {', '.join(PROFILES)})")
    cmd = [sys.executable, "-s", "-m", "shiptwo", "build", which.model, "--profile", which.profile]
    env = {**env, ARTIFACT_ROOT_ENV: str(into)}
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ShiptwoError(f"rebuild of {which.model}/{which.profile} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise ShiptwoError(f"rebuild of {which.model}/{which.profile} failed: {tail[0]}")
    built = [p for p in (into / which.model / which.profile).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(built) != 1:
        raise ShiptwoError(f"rebuild of {which.model}/{which.profile}: expected one artifact set in {into}, found {len(built)}")
    return built[0]


def file_difference(judged: Path, rebuilt: Path, rel: str) -> str:
    """'' when `judged` agrees with `rebuilt` (bytes, or the content of a variable record without its
    variable fields), else what differs, naming `rel` (and, where the format tells, where first)."""
    if judged.read_bytes() == rebuilt.read_bytes():
        return ""
    fields = VARIABLE_RECORDS.get(rel)
    try:
        if rel.endswith(".safetensors"):
            where = _safetensors_difference(judged, rebuilt, fields or frozenset())
        elif fields is None:
            where = ""
        else:
            a, b = (_records(p) for p in (judged, rebuilt))
            a, b = _without(a, fields), _without(b, fields)
            where = "" if a == b else _first_difference(a, b)
    except (ShiptwoError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{rel} differs from the rebuild and cannot be read as its format ({str(exc).splitlines()[0][:200]})"
    if fields is None:  # must agree byte for byte
        return f"{rel} differs from the rebuild{f' (first in {where})' if where else ''}"
    return f"{rel}: {where} differs from the rebuild (beyond {', '.join(sorted(fields))})" if where else ""


def _safetensors_difference(a: Path, b: Path, fields: frozenset) -> str:
    """Where two safetensors files first differ, tensors (bit for bit) before metadata (JSON values
    parsed, `fields` left out); '' when they agree."""
    (meta_a, ta), (meta_b, tb) = read_safetensors(a), read_safetensors(b)
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb or not _same_tensor(ta[name], tb[name]):
            return f"tensor {name}"
    ma, mb = ({k: _parsed(v) for k, v in m.items()} for m in (meta_a, meta_b))
    ma, mb = _without(ma, fields), _without(mb, fields)
    return "" if ma == mb else f"metadata.{_first_difference(ma, mb)}"


def _records(path: Path):
    """A JSON file's value, or a JSONL file's list of values."""
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else json.loads(text)


def set_differences(stored: Path, rebuilt: Path) -> list[str]:
    """Every file of the stored set against the rebuild's: missing, extra or differing; a symbolic
    link in the stored set is a difference too (a build writes files, and a linked directory would
    hide what it holds from the listing)."""
    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}

    links = sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_symlink())
    mine, theirs = files(stored), files(rebuilt)
    problems = [f"{rel}: a symbolic link in the stored set" for rel in links]
    problems += [f"{rel}: in the stored set, not in the rebuild" for rel in sorted(mine - theirs)]
    problems += [f"{rel}: in the rebuild, missing from the stored set" for rel in sorted(theirs - mine)]
    problems += [d for rel in sorted(mine & theirs) if (d := file_difference(stored / rel, rebuilt / rel, rel))]
    return problems


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (NaN == NaN, -0.0 != 0.0), which torch.equal is not."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and bytes(a.reshape(-1).view(torch.uint8).numpy()) == bytes(b.reshape(-1).view(torch.uint8).numpy()))


def _parsed(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _without(value, fields: frozenset | tuple):
    """`value` without the `fields` at any depth, and without the log entries of DROPPED_EVENTS."""
    if isinstance(value, dict):
        return {k: _without(v, fields) for k, v in value.items() if k not in fields}
    if isinstance(value, list):
        return [_without(v, fields) for v in value if not (isinstance(v, dict) and v.get("type") in DROPPED_EVENTS)]
    return value


def _first_difference(a, b, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return where or "its content"
