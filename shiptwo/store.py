"""The artifact store: build a model's artifacts once per (recipe, corpus, code) and reuse them.

Layout: <root>/<model>/<profile>/<key>/ with a manifest.json (SHA-256 of every file) written
last. Builders write into a temp directory that is renamed into place, under a file lock, so
nobody sees a half-written artifact. A reused artifact whose files no longer match the
manifest is REFUSED with an error naming the file; `rebuild=True` (`--rebuild`) replaces it.

Builders live next to their pipeline and register on import: BUILDER_MODULES names the module
for each model (MODEL-1's fine-tune adds its own line; its builder calls build("model2", ...)).
The store itself is not hashed into keys: editing it never invalidates a trained artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from shiptwo import constants as C
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json, sha256_bytes, sha256_file

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parent


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
    tokenizer: Path | None = None
    checkpoint: Path | None = None  # the best checkpoint: the one every later stage consumes
    final_checkpoint: Path | None = None
    corpus_manifest: Path | None = None
    train_log: Path | None = None
    loss_curve: Path | None = None


@dataclass
class Fingerprint:
    """What a builder's key is made of, plus whatever it loaded to compute it (passed on to run)."""

    parts: dict
    context: object = None


@dataclass
class Builder:
    """fingerprint(profile, options) -> Fingerprint; run(profile, fingerprint, workdir) -> (roles, recipe, summary)."""

    fingerprint: Callable[[str, dict], Fingerprint]
    run: Callable[[str, Fingerprint, Path], tuple[dict[str, str], dict, dict]]
    modules: tuple[str, ...]  # shiptwo modules whose source is hashed into the key


BUILDERS: dict[str, Builder] = {}
BUILDER_MODULES: dict[str, str] = {  # model -> module whose import registers its builder
    "model2": "shiptwo.pretrain",
    "model1": "shiptwo.sft",
}


def register(model_name: str, builder: Builder) -> None:
    BUILDERS[model_name] = builder


def _builder(model_name: str) -> Builder:
    if model_name not in BUILDERS and model_name in BUILDER_MODULES:
        importlib.import_module(BUILDER_MODULES[model_name])
    if model_name not in BUILDERS:
        known = sorted(set(BUILDERS) | set(BUILDER_MODULES))
        raise ShiptwoError(f"build: unknown model {model_name!r} (known: {', '.join(known)})")
    return BUILDERS[model_name]


def artifact_root() -> Path:
    return Path(os.environ.get(C.ARTIFACT_ROOT_ENV) or C.ARTIFACT_ROOT)


def code_version(modules: tuple[str, ...]) -> str:
    """SHA-256 over the sources of `modules` (shiptwo/<m>.py): a code edit there changes every key."""
    h = hashlib.sha256()
    for m in sorted(modules):
        h.update(m.encode() + b"\0" + (PACKAGE_DIR / f"{m}.py").read_bytes())
    return h.hexdigest()


def build(model_name: str, profile: str, rebuild: bool = False, **options) -> Artifacts:
    """The artifacts of `model_name` under `profile`: reused when present and intact, else built."""
    if profile not in C.PROFILES:
        raise ShiptwoError(f"build: unknown profile {profile!r} (known: {', '.join(C.PROFILES)})")
    builder = _builder(model_name)
    fp = builder.fingerprint(profile, options)
    code = code_version(builder.modules)
    key = sha256_bytes(json.dumps({"parts": fp.parts, "code": code}, sort_keys=True).encode())[:16]
    base = artifact_root() / model_name / profile
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    with FileLock(str(base / C.ARTIFACT_LOCK)):
        for stale in base.glob(".tmp-*"):  # left by a builder that was killed (builders hold the lock)
            log.warning("removing %s left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            problem = verify(final)
            if problem is None:
                log.info("reusing %s artifacts %s", model_name, final)
                return _load(final, model_name, profile, key, reused=True)
            if not rebuild:
                raise ShiptwoError(f"{problem}; refusing to use it (rerun with --rebuild to replace it)")
            log.warning("%s; rebuilding", problem)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{key}-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; a built artifact is readable like any other file
        try:
            t0 = time.perf_counter()
            roles, recipe, summary = builder.run(profile, dataclasses.replace(fp, parts={**fp.parts, "code": code}), tmp)
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            missing = sorted(r for r in roles.values() if not (tmp / r).exists())
            if missing:
                raise ShiptwoError(f"build {model_name}/{profile}: builder did not write {', '.join(missing)}")
            atomic_write_json(tmp / C.ARTIFACT_MANIFEST, {
                "model": model_name, "profile": profile, "key": key, "code_version": code,
                "build_seconds": time.perf_counter() - t0, "roles": roles, "files": files,
                "recipe": recipe, "summary": summary,
            })
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _load(final, model_name, profile, key, reused=False)


def verify(root: Path) -> str | None:
    """None if every file the manifest lists exists with its SHA-256; else a one-line problem."""
    mpath = root / C.ARTIFACT_MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return f"{mpath}: artifact manifest missing or unreadable"
    for rel, digest in files.items():
        p = root / rel
        if not p.is_file():
            return f"{p}: artifact file missing"
        if sha256_file(p) != digest:
            return f"{p}: SHA-256 differs from {C.ARTIFACT_MANIFEST} (tampered or corrupt)"
    return None


def _load(root: Path, model_name: str, profile: str, key: str, reused: bool) -> Artifacts:
    manifest = json.loads((root / C.ARTIFACT_MANIFEST).read_text(encoding="utf-8"))
    files = {role: root / rel for role, rel in manifest["roles"].items()}
    known = {f.name for f in dataclasses.fields(Artifacts)}
    return Artifacts(
        model=model_name, profile=profile, key=key, root=root, manifest=root / C.ARTIFACT_MANIFEST,
        recipe=manifest["recipe"], summary=manifest["summary"], files=files, reused=reused,
        **{role: p for role, p in files.items() if role in known},
    )
