"""A stored artifact set's manifest: its shape, and whether the set on disk is exactly what it lists.

The store (store.py) writes the manifest last, listing the SHA-256 of every file the build wrote
and the role of each file a consumer looks up. A set is reusable only when the manifest is of that
shape and the directory holds those regular files and no other: a manifest edited to list fewer
files (or none), a listed file replaced by a symbolic link or a directory, a path outside the set,
a role naming an unlisted file, or a set lacking a role its builder declares (a file dropped with
its entry and role) is one problem naming the file or field.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from shiptwo.fileio import sha256_file

ARTIFACT_MANIFEST = "manifest.json"  # SHA-256 of every artifact file; written last
# The manifest's fields and their JSON kinds: anything else is a manifest of the wrong shape.
MANIFEST_SHAPE = {"model": str, "profile": str, "key": str, "fingerprint": str, "code_version": str,
                  "roles": dict, "files": dict, "recipe": dict, "summary": dict}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def verify(root: Path, roles: Collection[str] = ()) -> str | None:
    """None if the set at `root` holds exactly the regular files its manifest lists, each with its
    SHA-256, every role names one of them and it records each of `roles` (those its builder declares
    a complete set holds); else a one-line problem. The builder's whole output
    is listed (build() hashes everything it wrote), so a file the manifest leaves out was dropped
    from it; a symbolic link (to a copy elsewhere that hashes the same) is not what was built."""
    mpath = root / ARTIFACT_MANIFEST
    if root.is_symlink():
        return f"{root}: a symbolic link, not the set the store built"
    try:
        if mpath.is_symlink() or not mpath.is_file():
            raise OSError
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{mpath}: artifact manifest missing or unreadable"
    problem = _shape_problem(manifest)
    if problem is not None:
        return f"{mpath}: artifact manifest of the wrong shape ({problem})"
    held, problems = set_files(root)
    files = manifest["files"]
    problems += [f"{root / rel}: {'a directory where the manifest lists a file' if (root / rel).is_dir() else 'missing'}"
                 for rel in sorted(set(files) - held)]
    problems += [f"{root / rel}: not in the manifest (it lists fewer files than the set holds)" for rel in sorted(held - set(files))]
    problems += [f"{mpath}: role {role} names {rel}, which the manifest does not list"
                 for role, rel in sorted(manifest["roles"].items()) if rel not in files]
    if not manifest["roles"]:
        problems.append(f"{mpath}: records no role (a build always has some)")
    problems += [f"{mpath}: records no {role} role, which its builder declares for this build (a set shrunk after it)"
                 for role in sorted(set(roles) - set(manifest["roles"]))]
    if problems:  # named before any file is hashed (a model's set holds gigabytes)
        return problems[0]
    return next((f"{root / rel}: SHA-256 differs from the manifest (tampered or corrupt)"
                 for rel in sorted(files) if sha256_file(root / rel) != files[rel]), None)


def _shape_problem(manifest) -> str | None:
    """What makes `manifest` other than a store manifest (by field), or None."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    for name, kind in MANIFEST_SHAPE.items():
        if not isinstance(manifest.get(name), kind):
            return f"field {name} is not a JSON {'string' if kind is str else 'object'}"
    bad = next((rel for rel, digest in manifest["files"].items()
                if not _inside(rel) or not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest)), None)
    if bad is not None:
        return f"files entry {bad!r} is not a relative path inside the set with a SHA-256"
    bad = next((role for role, rel in manifest["roles"].items() if not isinstance(rel, str) or not _inside(rel)), None)
    if bad is not None:
        return f"role {bad!r} does not name a relative path inside the set"
    if type(manifest.get("build_seconds", 0.0)) not in (int, float) or type(manifest.get("build_resumed", False)) is not bool:
        return "field build_seconds is not a number or build_resumed not a boolean"
    return None


def _inside(rel: str) -> bool:
    """`rel` a normalized relative POSIX path that stays inside the set (no '..', '.', or absolute)."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and PurePosixPath(*parts).as_posix() == rel and not rel.startswith("/") \
        and all(p not in ("..", ".") for p in parts) and rel != ARTIFACT_MANIFEST


def set_files(root: Path) -> tuple[set[str], list[str]]:
    """(the regular files under `root` by relative POSIX path, the manifest excepted; one problem per
    entry that is neither a regular file nor a directory: a symbolic link, a pipe, a device)."""
    held, problems = set(), []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{path}: a symbolic link, not a file the build wrote")
            elif stat.S_ISREG(mode):
                held.add(path.relative_to(root).as_posix())
            elif not stat.S_ISDIR(mode):
                problems.append(f"{path}: not a regular file")
    held.discard(ARTIFACT_MANIFEST)
    return held, problems
