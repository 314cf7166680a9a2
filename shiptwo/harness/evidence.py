"""Evidence that survives its run: reports/evidence/<run-id>/<criterion-id>/, hashed and re-checkable.

A test hands `criterion.check` its evidence; a small file is copied into the criterion's directory
of this run, a large artifact (a checkpoint, an export) is referenced where it lies; either way the
results record its path and SHA-256, so the gate can see that it still exists unaltered. A
per-sample file (one JSON object per sample) lets the gate recompute the judged figure itself.
Old runs are pruned by `prune_runs`, never one the results file still points at.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import secrets
import shutil
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_bytes, sha256_file

SMALL_EVIDENCE_BYTES = 8 << 20  # a file up to this size is copied into the run's evidence directory
SAMPLE_OUTCOMES = ("pass", "fail")
SAMPLE_KEYS = ("id", "prompt_sha256", "output")
RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"


def new_run_id() -> str:
    """A sortable, unique id for one pytest session: UTC time plus 6 random hex digits."""
    return f"{_dt.datetime.now(_dt.timezone.utc).strftime(RUN_ID_FORMAT)}-{secrets.token_hex(3)}"


def criterion_dir(root: str | Path, run_id: str, cid: str) -> Path:
    """The directory of one criterion's evidence in one run (not created)."""
    return Path(root) / run_id / cid


# --- describing (and keeping) evidence ------------------------------------------------------


def hash_directory(path: Path) -> tuple[str, int]:
    """A combined SHA-256 over (relative name, file SHA-256) of every file, sorted; and the file count."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    lines = [f"{p.relative_to(path).as_posix()}  {sha256_file(p)}" for p in files]
    return sha256_bytes("\n".join(lines).encode()), len(files)


def describe_path(path: Path) -> dict:
    """{kind, path, sha256, ...} of an existing file or directory as it is now."""
    if path.is_dir():
        digest, files = hash_directory(path)
        return {"kind": "dir", "path": str(path.absolute()), "sha256": digest, "files": files}
    return {"kind": "file", "path": str(path.absolute()), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def keep_file(path: Path, keep_dir: Path | None, key: str) -> dict:
    """Describe `path`; a small file outside this run's evidence (`keep_dir`'s parent) is first
    copied into `keep_dir` (the copy is recorded)."""
    if (keep_dir is None or path.is_dir() or _is_within(path, keep_dir.parent)
            or path.stat().st_size > SMALL_EVIDENCE_BYTES):
        return describe_path(path)
    keep_dir.mkdir(parents=True, exist_ok=True)
    target = keep_dir / path.name
    if target.exists():
        target = keep_dir / f"{key}-{path.name}"
    shutil.copy2(path, target)
    return {**describe_path(target), "copied_from": str(path.absolute())}


def _names_existing(value) -> bool:
    """True when `value` is the path of an existing file or directory; prose (too long for a file
    name, or holding a NUL) is not a path."""
    try:
        return Path(value).exists()
    except (OSError, ValueError):
        return False


def describe_evidence(evidence: dict | None, keep_dir: Path | None = None) -> dict:
    """JSON-safe evidence; a value naming an existing file or directory becomes its path and SHA-256
    (small files kept in `keep_dir`); a Path naming nothing is recorded as missing, never dropped."""
    described = {}
    for key, value in (evidence or {}).items():
        if isinstance(value, (str, os.PathLike)) and str(value) and _names_existing(value):
            described[key] = keep_file(Path(value), keep_dir, key)
        elif isinstance(value, os.PathLike):
            described[key] = {"path": str(Path(value).absolute()), "sha256": None, "missing": True}
        else:
            try:
                json.dumps(value, allow_nan=True)
                described[key] = value
            except (TypeError, ValueError):
                described[key] = repr(value)
    return described


def is_file_record(value) -> bool:
    """True for an evidence value that names a file or directory (it carries a path and a hash slot)."""
    return isinstance(value, dict) and "path" in value and "sha256" in value


def verify_file_record(name: str, value: dict) -> str:
    """'' when the recorded file or directory exists with its recorded SHA-256, else what disagrees."""
    if value.get("sha256") is None:
        return f"evidence {name!r}: {value.get('path')} did not exist when recorded"
    path = Path(value["path"])
    if not path.exists():
        return f"evidence {name!r}: {path} no longer exists"
    now = hash_directory(path)[0] if path.is_dir() else sha256_file(path)
    if now != value["sha256"]:
        return f"evidence {name!r}: {path} has SHA-256 {now[:12]}…, recorded {str(value['sha256'])[:12]}…"
    return ""


# --- per-sample files -----------------------------------------------------------------------


def read_samples(path: str | Path) -> list[dict]:
    """The samples of a JSONL file (id, prompt_sha256, output, and outcome pass/fail or a numeric
    value); ShiptwoError names the file and line of the first malformed one."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot read samples: {exc.strerror or exc}") from None
    samples, ids = [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ShiptwoError(f"{path}:{n}: malformed JSON: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit, nesting past its stack
            raise ShiptwoError(f"{path}:{n}: malformed JSON: {str(exc).split(':')[0]}") from None
        if not isinstance(obj, dict):
            raise ShiptwoError(f"{path}:{n}: a sample must be a JSON object")
        for key in SAMPLE_KEYS:
            if not isinstance(obj.get(key), str):
                raise ShiptwoError(f"{path}:{n}: sample needs a string {key!r}")
        if obj["id"] in ids:
            raise ShiptwoError(f"{path}:{n}: duplicate sample id {obj['id']!r}")
        ids.add(obj["id"])
        has_outcome, value = "outcome" in obj, obj.get("value")
        if has_outcome == ("value" in obj):
            raise ShiptwoError(f"{path}:{n}: sample {obj['id']!r} needs exactly one of 'outcome' and 'value'")
        if has_outcome and obj["outcome"] not in SAMPLE_OUTCOMES:
            raise ShiptwoError(f"{path}:{n}: sample {obj['id']!r}: outcome must be one of {', '.join(SAMPLE_OUTCOMES)}")
        if not has_outcome and (isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value)):
            raise ShiptwoError(f"{path}:{n}: sample {obj['id']!r}: value must be a finite number")
        samples.append(obj)
    if not samples:
        raise ShiptwoError(f"{path}: no samples")
    return samples


def _finite(value: int | float) -> bool:
    """True for a number a float holds and that is not inf or NaN (JSON allows integers of any size)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def sample_value(sample: dict) -> float:
    """A sample's number: its value, or 1 for a pass and 0 for a fail."""
    if "value" in sample:
        return float(sample["value"])
    return 1.0 if sample["outcome"] == "pass" else 0.0


def sample_statistic(samples: list[dict], statistic: str) -> float:
    """The figure a statistic (pass_pct, pass_fraction, mean, sum) gives over the samples."""
    values = [sample_value(s) for s in samples]
    if statistic == "sum":
        return float(sum(values))
    mean = sum(values) / len(values)
    if statistic == "pass_pct":
        return 100.0 * mean
    if statistic in ("pass_fraction", "mean"):
        return mean
    raise ShiptwoError(f"unknown sample statistic {statistic!r}")


def same_figure(a: float | None, b: float | None) -> bool:
    """Equal up to float round-off (a recomputed figure against a recorded one)."""
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# --- pruning --------------------------------------------------------------------------------


def run_dirs(root: str | Path) -> list[Path]:
    """The run directories under the evidence root, oldest first (run ids sort by time)."""
    root = Path(root)
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name) if root.is_dir() else []


def prune_runs(root: str | Path, keep: int, in_use: set[str]) -> list[Path]:
    """Remove all but the newest `keep` run directories, never one named in `in_use`; the removed ones."""
    if keep < 0:
        raise ShiptwoError(f"evidence prune: --keep must be >= 0, not {keep}")
    runs = run_dirs(root)
    newest = {p.name for p in runs[len(runs) - keep:]} if keep else set()
    removed = []
    for path in runs:
        if path.name in newest or path.name in in_use:
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed
