"""Is a stored artifact set what this code builds? Rebuild it in a temporary store and compare.

Builds are deterministic on one machine (seeded training, deterministic algorithms, kernels with a
fixed summation order, safetensors headers written sorted), so two builds of one key agree byte for byte except in the records VARIABLE_RECORDS
names, which carry wall-clock readings or the circumstances of the build; those compare by content
without those fields (the store's own manifest without its build time and file hashes, which are
re-derived from the files). `shiptwo gate --rebuild` (checks/rebuild.py) runs this on every
set a run judged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from shiptwo.builds.store import ARTIFACT_MANIFEST, BUILD_FIELDS
from shiptwo.errors import ShiptwoError
from shiptwo.formats.release import CIRCUMSTANCE_FIELDS, RELEASE_MANIFEST
from shiptwo.model.checkpoint import read_safetensors
from shiptwo.paths import ARTIFACT_ROOT_ENV
from shiptwo.training.loop import CLOCK_FIELDS, TRAIN_LOG, TRAIN_STATE

# Relative path in an artifact set -> the fields two builds of one key may differ in; every other
# file must agree byte for byte.
VARIABLE_RECORDS = {
    TRAIN_LOG: CLOCK_FIELDS,  # a JSON line per step, with its tokens/s
    TRAIN_STATE: CLOCK_FIELDS,  # the resumable state: its tensors exact, its JSON metadata holds the log
    f"release/{RELEASE_MANIFEST}": CIRCUMSTANCE_FIELDS,  # when and from which checkout it was published
    ARTIFACT_MANIFEST: BUILD_FIELDS | CLOCK_FIELDS,  # the store's: recipe, roles and the run's summary compared
}


@dataclass(frozen=True)
class ArtifactSet:
    """One stored build: <store>/<model>/<profile>/<key>."""

    model: str
    profile: str
    key: str

    def __str__(self) -> str:
        return f"{self.model}/{self.profile}/{self.key}"


def rebuild_set(which: ArtifactSet, root: Path, into: Path, timeout: float | None = None) -> Path:
    """Build `which.model` under `which.profile` from the checkout at `root` into the empty store
    `into` (a subprocess, as a user's `shiptwo build`); the built set's directory."""
    cmd = [sys.executable, "-m", "shiptwo", "build", which.model, "--profile", which.profile]
    env = {**os.environ, ARTIFACT_ROOT_ENV: str(into)}
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
    variable fields), else what differs, naming `rel`."""
    if judged.read_bytes() == rebuilt.read_bytes():
        return ""
    fields = VARIABLE_RECORDS.get(rel)
    if fields is None:
        return f"{rel} differs from the rebuild"
    try:
        if rel.endswith(".safetensors"):
            (meta_a, ta), (meta_b, tb) = read_safetensors(judged), read_safetensors(rebuilt)
            for name in sorted(set(ta) | set(tb)):
                if name not in ta or name not in tb or not _same_tensor(ta[name], tb[name]):
                    return f"{rel}: tensor {name} differs from the rebuild"
            a, b = ({k: _parsed(v) for k, v in m.items()} for m in (meta_a, meta_b))
        elif rel.endswith(".jsonl"):
            a, b = ([json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
                    for p in (judged, rebuilt))
        else:
            a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (judged, rebuilt))
    except (ShiptwoError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{rel} differs from the rebuild and cannot be read as its record ({str(exc).splitlines()[0][:200]})"
    a, b = _without(a, fields), _without(b, fields)
    if a != b:
        return f"{rel}: {_first_difference(a, b)} differs from the rebuild (beyond {', '.join(sorted(fields))})"
    return ""


def set_differences(stored: Path, rebuilt: Path) -> list[str]:
    """Every file of the stored set against the rebuild's: missing, extra or differing."""
    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    mine, theirs = files(stored), files(rebuilt)
    problems = [f"{rel}: in the stored set, not in the rebuild" for rel in sorted(mine - theirs)]
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
    if isinstance(value, dict):
        return {k: _without(v, fields) for k, v in value.items() if k not in fields}
    if isinstance(value, list):
        return [_without(v, fields) for v in value]
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
