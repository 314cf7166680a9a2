"""The state of the checkout a run executes in: commit, dirty flag, spec SHA-256, profile, time.

Both wings record it (results, release manifests), so it lives below both.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from pathlib import Path

UNKNOWN_COMMIT = "unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_info(root: str | Path, spec_sha256: str, profile: str) -> dict:
    """Commit, dirty flag, spec SHA-256, profile and UTC time of the current run."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD") or UNKNOWN_COMMIT
    status = _git(root, "status", "--porcelain") if commit != UNKNOWN_COMMIT else None
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "spec_sha256": spec_sha256,
        "profile": profile,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
