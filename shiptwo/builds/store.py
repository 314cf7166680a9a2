"""The artifact store: build a model's artifacts once per (recipe, corpus, code) and reuse them.

Layout: <root>/<model>/<profile>/<key>/ with a manifest.json (SHA-256 of every file) written
last. Builders write into a temp directory that is renamed into place, under a file lock, so
nobody sees a half-written artifact. A reused artifact whose files no longer match the
manifest is REFUSED with an error naming the file; `rebuild=True` (`--rebuild`) replaces it.
A build killed mid-way leaves its work directory (`.tmp-<key>-*`, with the owner's pid in
`.owner.json`): the next build removes it under the lock unless its owner is still alive, or,
for a resumable builder of the same key, continues from the last training state saved in it.

A Builder is a plain value (builds/registry.py lists them). Its key covers everything the build
depends on: the builder's fingerprint (recipe, corpus files' SHA-256, base model), the source of
every shiptwo module in the import closure of the builder's module (computed, not hand-listed),
the Python version (the stdlib corpus depends on it) and the versions of torch, tokenizers and
gguf. The store is in every builder's import closure, so editing it changes every key too. A set
is reused only where its manifest records the model, profile and key it is stored under and the
full SHA-256 of the fingerprint (the key is its first 16 hex digits: a colliding key is refused),
the set holds exactly the regular files the manifest lists (a manifest edited to list fewer files,
a file replaced by a symbolic link or a directory are refused), every role names a listed file and
the manifest records every role the builder declares for the build (a set shrunk consistently, a file
dropped with its entry and role, is refused; a build whose run returns other roles is an error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ast
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json, sha256_bytes, sha256_file
from shiptwo.builds.store_manifest import ARTIFACT_MANIFEST, set_files, verify  # noqa: F401 (verify: the store's API)

from shiptwo.paths import PROFILES, artifact_root

ARTIFACT_LOCK = ".lock"
# The manifest's records of one build rather than of what it built: its clock, whether it resumed,
# and the SHA-256s of its files (which a comparison with another build re-derives from the files).
BUILD_FIELDS = frozenset({"build_seconds", "build_resumed", "files"})
OWNER_FILE = ".owner.json"  # in a build's work directory: pid, host and start time of the process building it
KEY_DIGITS = 16  # hex digits of the fingerprint's SHA-256 that name a set's directory


log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # shiptwo/
PACKAGE = "shiptwo"


@dataclass
class Artifacts:
    """Paths of one built artifact set (None where a model has no such file) plus its records."""

    model: str
    profile: str
    key: str
    root: Path
    manifest: Path
    recipe: dict
    summary: dict
    files: dict[str, Path] = field(default_factory=dict)  # role -> path, every role the builder declared
    reused: bool = False
    build_seconds: float | None = None  # the store's own clock around the whole build (None: not recorded)
    build_resumed: bool = False  # the build continued an interrupted one: build_seconds covers only its last leg
    tokenizer: Path | None = None
    checkpoint: Path | None = None  # the best checkpoint: the one every later stage consumes
    final_checkpoint: Path | None = None
    corpus_manifest: Path | None = None
    train_log: Path | None = None
    loss_curve: Path | None = None


class RoleFiles(dict):
    """role -> path of a stored set; a role the set lacks (one its builder does not declare for this
    recipe: MODEL-1 imported untuned has no train_state) is one line naming its manifest, not a bare KeyError."""

    def __init__(self, files: dict[str, Path], manifest: Path):
        super().__init__(files)
        self.manifest = manifest

    def __missing__(self, role: str):
        raise ShiptwoError(f"{self.manifest}: the artifact set records no {role} role (roles: {', '.join(sorted(self)) or 'none'})")


@dataclass
class Fingerprint:
    """What a builder's key is made of, plus whatever it loaded to compute it (passed on to run)."""

    parts: dict
    context: object = None


@dataclass
class Builder:
    """fingerprint(profile, options) -> Fingerprint; run(profile, fingerprint, workdir) -> (roles, recipe, summary);
    roles(profile, fingerprint) -> the roles a complete set of that build holds, exactly those run returns."""

    name: str
    fingerprint: Callable[[str, dict], Fingerprint]
    run: Callable[[str, Fingerprint, Path], tuple[dict[str, str], dict, dict]]
    entry: str  # the module whose import closure (within shiptwo) is hashed into the key
    roles: Callable[[str, Fingerprint], frozenset[str]]
    resumable: bool = False  # run() continues from what an interrupted run of the same key left in workdir


KEY_PACKAGES = ("torch", "tokenizers", "gguf", "safetensors")  # third-party code that shapes an artifact


# CPython 3.11's parser keeps its recursion depth in interpreter-wide state: two threads parsing at
# once can raise "SystemError: AST constructor recursion depth mismatch". Builders racing for the
# same key (each computing its key) parse one at a time.
_PARSE_LOCK = threading.Lock()


def import_closure(entry: str) -> list[str]:
    """Every shiptwo module `entry` imports, directly or not, at module level or inside functions."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            todo.append(".".join(parts[:i]))
        with _PARSE_LOCK:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE:
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
    return sorted(seen)


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel / "__init__.py", (PACKAGE_DIR / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def companion_sources(module: str) -> list[Path]:
    """The C sources a module compiles and loads (a string constant naming a `.c` file beside it):
    code that shapes an artifact as much as the module's own (the training kernels do)."""
    path = _module_file(module)
    with _PARSE_LOCK:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith(".c")}
    return sorted(path.with_name(n) for n in names if (path.parent / n).is_file())


def code_version(entry: str) -> str:
    """SHA-256 over the sources of `entry`'s import closure and the C sources its modules compile:
    an edit to any of them changes the key."""
    h = hashlib.sha256()
    for m in import_closure(entry):
        h.update(m.encode() + b"\0" + _module_file(m).read_bytes())
        for c in companion_sources(m):
            h.update(c.name.encode() + b"\0" + c.read_bytes())
    return h.hexdigest()


def environment_fingerprint() -> dict:
    """The interpreter and third-party versions an artifact depends on."""
    versions = {}
    for pkg in KEY_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": sys.version, **versions}


def store_digest(builder: Builder, fp: Fingerprint) -> tuple[str, str]:
    """(SHA-256, code version) of a build: the digest hashes the fingerprint, the code and the environment."""
    code = code_version(builder.entry)
    blob = {"parts": fp.parts, "code": code, "environment": environment_fingerprint()}
    return sha256_bytes(json.dumps(blob, sort_keys=True, default=str).encode()), code


def store_key(builder: Builder, fp: Fingerprint) -> tuple[str, str]:
    """(key, code version) of a build: the key is the first KEY_DIGITS of its store_digest."""
    digest, code = store_digest(builder, fp)
    return digest[:KEY_DIGITS], code


def build(builder: Builder, profile: str, rebuild: bool = False, **options) -> Artifacts:
    """The artifacts of `builder` under `profile`: reused when present and intact, else built."""
    if profile not in PROFILES:
        raise ShiptwoError(f"build: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    model_name = builder.name
    fp = builder.fingerprint(profile, options)
    declared = frozenset(builder.roles(profile, fp))
    digest, code = store_digest(builder, fp)
    key = digest[:KEY_DIGITS]
    base = artifact_root() / model_name / profile
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    with FileLock(str(base / ARTIFACT_LOCK)):
        adopted = _sweep_work_dirs(base, key if builder.resumable else None)
        if final.exists():
            problem = verify(final, declared) or misfiled(final, model_name, profile, key, digest)
            if problem is None:
                if adopted is not None:  # an interrupted build of what is already built: nothing to resume
                    shutil.rmtree(adopted, ignore_errors=True)
                log.info("reusing %s artifacts %s", model_name, final)
                return _load(final, model_name, profile, key, reused=True)
            if not rebuild:
                raise ShiptwoError(f"{problem}; refusing to use it (rerun with --rebuild to replace it)")
            log.warning("%s; rebuilding", problem)
            if final.is_symlink() or not final.is_dir():  # rmtree refuses a link (and a file)
                final.unlink()
            else:
                shutil.rmtree(final)
        tmp = adopted or Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{key}-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; a built artifact is readable like any other file
        atomic_write_json(tmp / OWNER_FILE, _this_process())
        try:
            t0 = time.perf_counter()
            roles, recipe, summary = builder.run(profile, dataclasses.replace(fp, parts={**fp.parts, "code": code}), tmp)
            if set(roles) != declared:  # a builder bug: its sets would all be refused, or a shrunk one reused
                short, extra = sorted(declared - set(roles)), sorted(set(roles) - declared)
                raise ShiptwoError(f"build {model_name}/{profile}: builder returned " + (
                    f"no {', '.join(short)} role, which it declares" if short else f"the {', '.join(extra)} role, which it does not declare"))
            (tmp / OWNER_FILE).unlink()
            held, odd = set_files(tmp)
            if odd:  # what verify() would refuse on every reuse
                raise ShiptwoError(f"build {model_name}/{profile}: builder wrote {odd[0]}")
            files = {rel: sha256_file(tmp / rel) for rel in sorted(held)}
            missing = sorted(r for r in roles.values() if r not in files)
            if missing:
                raise ShiptwoError(f"build {model_name}/{profile}: builder did not write {', '.join(missing)}")
            atomic_write_json(tmp / ARTIFACT_MANIFEST, {
                "model": model_name, "profile": profile, "key": key, "fingerprint": digest, "code_version": code,
                "build_seconds": time.perf_counter() - t0, "build_resumed": adopted is not None,
                "roles": roles, "files": files,
                "recipe": recipe, "summary": summary,
            })
            os.rename(tmp, final)
        except KeyboardInterrupt:
            if builder.resumable:  # its work directory stays, ownerless, for the next build to continue
                (tmp / OWNER_FILE).unlink(missing_ok=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _load(final, model_name, profile, key, reused=False)


# --- work directories of interrupted builds ------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22, counted after the command name


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def owner_alive(work_dir: Path) -> bool:
    """Whether the build that owns `work_dir` (per its owner record) is still running. No record
    (killed before writing it, or finished) means no live owner; another host's build is assumed alive."""
    try:
        owner = json.loads((work_dir / OWNER_FILE).read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return True  # its liveness cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = _process_start(pid)
    return start is None or owner.get("start") in (None, start)


def _sweep_work_dirs(base: Path, resumable_key: str | None) -> Path | None:
    """Under the store's lock: leave work directories whose owner is alive, adopt one of a dead
    build of `resumable_key` (its stray half-written temp files removed) and remove the rest."""
    adopted = None
    for work in sorted(base.glob(".tmp-*")):
        if owner_alive(work):
            log.warning("leaving %s: the build that owns it is still running", work)
        elif adopted is None and resumable_key is not None and work.name.startswith(f".tmp-{resumable_key}-"):
            for stray in work.rglob(".*.tmp"):  # an atomic write cut short by the kill
                stray.unlink()
            log.warning("resuming the interrupted build in %s", work)
            adopted = work
        else:
            log.warning("removing %s left by an interrupted build", work)
            shutil.rmtree(work, ignore_errors=True)
    return adopted


def misfiled(root: Path, model_name: str, profile: str, key: str, digest: str) -> str | None:
    """None if the manifest records the model, profile, key and fingerprint `root` is stored under;
    else a one-line problem. The key addresses what a set was built from, and its files match their
    manifest wherever the set lies: a set copied or renamed under another key (an older build,
    another profile's) was reused as if this code had built it, and so would a set whose inputs
    differ but whose 16-digit key collides with this build's."""
    mpath = root / ARTIFACT_MANIFEST
    manifest = json.loads(mpath.read_text(encoding="utf-8"))  # verify() has read it and checked its shape
    recorded = tuple(manifest[k] for k in ("model", "profile", "key"))
    if recorded != (model_name, profile, key):
        return (f"{mpath}: records the set {'/'.join(map(str, recorded))}, but it is stored as "
                f"{model_name}/{profile}/{key} (copied or renamed from another build)")
    if manifest["fingerprint"] != digest:
        return (f"{mpath}: records the fingerprint {manifest['fingerprint']}, but this build's is {digest} "
                f"(another build whose key collides with {key})")
    return None


def _load(root: Path, model_name: str, profile: str, key: str, reused: bool) -> Artifacts:
    manifest = json.loads((root / ARTIFACT_MANIFEST).read_text(encoding="utf-8"))
    files = RoleFiles({role: root / rel for role, rel in manifest["roles"].items()}, root / ARTIFACT_MANIFEST)
    known = {f.name for f in dataclasses.fields(Artifacts)}
    return Artifacts(
        model=model_name, profile=profile, key=key, root=root, manifest=root / ARTIFACT_MANIFEST,
        recipe=manifest["recipe"], summary=manifest["summary"], files=files, reused=reused,
        build_seconds=manifest.get("build_seconds"), build_resumed=bool(manifest.get("build_resumed", False)),
        **{role: p for role, p in files.items() if role in known},
    )


def prune(current: dict[tuple[str, str], str], dry_run: bool = False) -> list[Path]:
    """Remove every artifact directory whose key is not `current[(model, profile)]`, under each
    model/profile's lock; model/profile pairs absent from `current` are left alone. Returns what went.
    A symbolic link in a set's place is removed as a link: what it points to is not the store's."""
    removed = []
    for (model_name, profile), keep in sorted(current.items()):
        base = artifact_root() / model_name / profile
        if not base.is_dir():
            continue
        with FileLock(str(base / ARTIFACT_LOCK)):
            for d in sorted(base.iterdir()):
                if d.is_dir() and not d.name.startswith(".") and d.name != keep:
                    removed.append(d)
                    link = d.is_symlink()
                    if link:
                        log.warning("%s: a symbolic link in a stored set's place; removing the link only", d)
                    if not dry_run:
                        if link:
                            d.unlink()
                        else:
                            shutil.rmtree(d)
    return removed
