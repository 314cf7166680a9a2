"""Publish and verify a release: provenance in every format, a manifest of SHA-256s that re-hashes.

`publish` copies the artifacts into a release directory and writes manifest.json (each file's
size and SHA-256, the spec's SHA-256, the git commit, the provenance, and the manifest's own
hash over its content). `verify` re-hashes everything and names each missing, extra or
tampered file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath

from shiptwo.model.checkpoint import safetensors_metadata
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import (atomic_output_dir, atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file,
                            tree_digests, tree_problems)
from shiptwo.formats.gguf_load import provenance_of, read_gguf
from shiptwo.checkout import run_info

from shiptwo.formats.hf import HF_CONFIG_FILE, HF_WEIGHTS_FILE
from shiptwo.model.checkpoint import PROVENANCE_KEYS
from shiptwo.model.checkpoint import missing_provenance as checkpoint_missing_provenance
from shiptwo.paths import SPEC_PATH

RELEASE_MANIFEST = "manifest.json"
RELEASE_MANIFEST_SCHEMA = 1


_SELF_HASH = "manifest_sha256"
# When, and from which checkout and spec, a release was published (and the self-hash over them): two
# publications of the same files differ only in these.
CIRCUMSTANCE_FIELDS = frozenset({"created", "git_commit", "git_dirty", "spec_sha256", _SELF_HASH})

# --- provenance in every format -----------------------------------------------------------


def provenance_by_part(path: str | Path) -> dict[str, dict[str, str]]:
    """Provenance as recorded in each part of an artifact (an HF export has two: config, weights)."""
    path = Path(path)
    if path.is_dir():
        cfg_path = path / HF_CONFIG_FILE
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShiptwoError(f"{cfg_path}: cannot read config ({str(exc).splitlines()[0]})") from None
        meta = safetensors_metadata(path / HF_WEIGHTS_FILE)
        return {str(cfg_path): _pick(cfg), str(path / HF_WEIGHTS_FILE): _pick(meta)}
    if path.suffix == ".gguf":
        return {str(path): provenance_of(read_gguf(path))}
    return {str(path): _pick(safetensors_metadata(path))}


def _pick(d: dict) -> dict[str, str]:
    return {k: d[k] for k in PROVENANCE_KEYS if isinstance(d.get(k), str) and d[k]}


def missing_provenance(paths) -> dict[str, list[str]]:
    """{part: [missing fields]} over all artifacts; empty when every format records all three."""
    out = {}
    for path in paths:
        for part, prov in provenance_by_part(path).items():
            missing = checkpoint_missing_provenance(prov)
            if missing:
                out[part] = missing
    return out


def common_provenance(paths) -> dict[str, str]:
    """The one provenance all artifacts agree on; a missing field or a disagreement is an error."""
    missing = missing_provenance(paths)
    if missing:
        raise ShiptwoError("; ".join(f"{p}: provenance field(s) {', '.join(m)} missing" for p, m in missing.items()))
    seen: dict[str, str] = {}
    for path in paths:
        for part, prov in provenance_by_part(path).items():
            for k, v in prov.items():
                if seen.setdefault(k, v) != v:
                    raise ShiptwoError(f"{part}: provenance {k}={v!r} disagrees with {seen[k]!r}")
    return seen


# --- manifest -----------------------------------------------------------------------------


def _manifest_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != _SELF_HASH}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def publish(artifacts, out_dir: str | Path, spec_path: str | Path = SPEC_PATH, repo_root: str | Path = ".") -> Path:
    """Copy `artifacts` (files or HF directories) into `out_dir` with a manifest; returns the manifest path."""
    artifacts = [Path(a) for a in artifacts]
    if not artifacts:
        raise ShiptwoError("publish: no artifacts given")
    for a in artifacts:
        if not a.exists():
            raise ShiptwoError(f"{a}: no such artifact")
    names = [a.name for a in artifacts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ShiptwoError(f"publish: artifact name(s) {', '.join(dupes)} given twice")
    spec_path = Path(spec_path)
    if not spec_path.is_file():
        raise ShiptwoError(f"{spec_path}: spec not found (the manifest records its SHA-256)")
    provenance = common_provenance(artifacts)
    info = run_info(repo_root, sha256_file(spec_path), profile="release")
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, RELEASE_MANIFEST) as tmp:
        for a in artifacts:
            if a.is_dir():
                shutil.copytree(a, tmp / a.name)
            else:
                shutil.copy2(a, tmp / a.name)
        files = [{"path": rel, "size": (tmp / rel).stat().st_size, "sha256": digest}
                 for rel, digest in tree_digests(tmp, exclude=(RELEASE_MANIFEST,)).items()]
        manifest = {
            "schema": RELEASE_MANIFEST_SCHEMA,
            "files": files,
            "spec_sha256": info["spec_sha256"],
            "git_commit": info["commit"],
            "git_dirty": info["dirty"],
            "provenance": provenance,
            "created": info["time"],
        }
        manifest[_SELF_HASH] = _manifest_hash(manifest)
        atomic_write_json(tmp / RELEASE_MANIFEST, manifest)
    return out_dir / RELEASE_MANIFEST


def verify(release_dir: str | Path) -> list[str]:
    """Every problem with the release, one line each naming the file; empty when all verify."""
    root = Path(release_dir)
    mpath = root / RELEASE_MANIFEST
    if not mpath.is_file():
        return [f"{mpath}: manifest missing"]
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        listed = _release_entries(manifest["files"])
        if not isinstance(manifest[_SELF_HASH], str):
            raise TypeError(_SELF_HASH)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return [f"{mpath}: corrupt manifest ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"]
    problems = []
    if manifest[_SELF_HASH] != _manifest_hash(manifest):
        problems.append(f"{mpath}: tampered manifest (its content does not match {_SELF_HASH})")
    missing_prov = checkpoint_missing_provenance(manifest.get("provenance"))
    if missing_prov:
        problems.append(f"{mpath}: provenance field(s) {', '.join(missing_prov)} missing")
    problems += _linked(root, listed) + tree_problems(root, listed, exclude=(RELEASE_MANIFEST,))
    return problems


def _linked(root: Path, listed: dict[str, str]) -> list[str]:
    """One line per symbolic link on a listed path: its file lies wherever the link points, so
    hashing through it verified a file outside the release (and a copy ships a dangling link)."""
    links = set()
    for rel in listed:
        at = root
        for part in PurePosixPath(rel).parts:
            at = at / part
            if at.is_symlink():
                links.add(at)
                break
    return [f"{link}: a symbolic link, not a file of the release" for link in sorted(links)]


def _release_entries(files) -> dict[str, str]:
    """{path: SHA-256} of a release manifest's `files` ([{path, sha256, ...}]); TypeError or ValueError
    naming the entry unless each path is a relative path inside the release, listed once, and each
    SHA-256 a string: a number or a list as a path raised a traceback below, and '../x' or '/x'
    verified a file outside the release in place of the one it ships (as a symbolic link did: `_linked`)."""
    if not isinstance(files, list):
        raise TypeError("files is not a list")
    out = {}
    for i, f in enumerate(files):
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)):
            raise TypeError(f"files[{i}] is not {{path: string, sha256: string}}")
        rel = PurePosixPath(f["path"])
        if not f["path"] or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"files[{i}].path {f['path']!r} is not a relative path inside the release")
        if f["path"] in out:
            raise ValueError(f"files[{i}].path {f['path']!r} is listed twice")
        out[f["path"]] = f["sha256"]
    return out


# --- verification on load: an artifact a manifest lists must still be what it recorded -------

MANIFEST_SEARCH_DEPTH = 3  # directories above an artifact searched for the manifest that lists it


def _listed_digests(manifest_path: Path, release_only: bool = False) -> dict[str, str] | None:
    """{relative path: SHA-256} from a release manifest (files: [{path, sha256}]) or, unless
    `release_only`, an artifact-store manifest (files: {path: sha256}); None when it is neither."""
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8")).get("files")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if isinstance(files, dict) and all(isinstance(v, str) for v in files.values()):
        return None if release_only else dict(files)
    if isinstance(files, list) and any(isinstance(f, dict) and "sha256" in f for f in files):
        try:  # a release manifest: a malformed entry is an error, never a reason to skip verification
            return _release_entries(files)
        except (TypeError, ValueError) as exc:
            raise ShiptwoError(f"{manifest_path}: corrupt manifest ({exc})") from None
    return None


def release_listing(manifest: str | Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file a release manifest lists; ShiptwoError if it is none."""
    listed = _listed_digests(Path(manifest), release_only=True)
    if listed is None:
        raise ShiptwoError(f"{manifest}: missing or not a release manifest (files: [{{path, sha256}}])")
    return listed


def recorded_digests(path: str | Path) -> tuple[Path, dict[str, str]] | None:
    """The manifest (release or artifact store) in a directory above `path` that lists it, with
    the SHA-256 it records for each of its files (one for a file, every file under a directory);
    None when no manifest within MANIFEST_SEARCH_DEPTH levels lists it."""
    path = Path(path).absolute()
    for base in list(path.parents)[:MANIFEST_SEARCH_DEPTH]:
        listed = _listed_digests(base / RELEASE_MANIFEST)
        if listed is None:
            continue
        rel = path.relative_to(base).as_posix()
        mine = {r: d for r, d in listed.items() if r == rel or r.startswith(rel + "/")}
        if mine:
            return base / RELEASE_MANIFEST, mine
    return None


def verify_recorded(path: str | Path) -> Path | None:
    """Check `path` against the manifest that lists it (see recorded_digests): a missing file or a
    SHA-256 that differs is a ShiptwoError naming the file. Returns the manifest, None if unlisted."""
    found = recorded_digests(path)
    if found is None:
        return None
    manifest, digests = found
    base = manifest.parent
    for rel, digest in sorted(digests.items()):
        f = base / rel
        if not f.is_file():
            raise ShiptwoError(f"{f}: missing, but listed in {manifest}")
        if sha256_file(f) != digest:
            raise ShiptwoError(f"{f}: SHA-256 differs from the one {manifest} records (tampered or corrupt)")
    return manifest


def release_reference(path: str | Path) -> Path | None:
    """The unquantized model shipped beside `path` in the same release (a native checkpoint or a
    Hugging Face directory the release manifest lists): the reference a quantized file is held to."""
    path = Path(path).absolute()
    listed = _listed_digests(path.parent / RELEASE_MANIFEST, release_only=True)
    for top in sorted({rel.split("/")[0] for rel in listed or {}} - {path.name}):
        candidate = path.parent / top
        if (candidate / HF_CONFIG_FILE).is_file() or (candidate.is_file() and candidate.suffix == ".safetensors"):
            return candidate
    return None


def audit_release(release_dir: str | Path, work_dir: str | Path) -> dict:
    """Verify a published release, then tamper one byte of a copy and verify again (the check must be
    able to fail). `defects` counts verify problems on the genuine release, plus one if tampering went unseen;
    `checked` what that count is over: the manifest's own hash and provenance, each file listed or present, the trial."""
    release_dir, work_dir = Path(release_dir), Path(work_dir)
    problems = verify(release_dir)
    present = {p.relative_to(release_dir).as_posix() for p in release_dir.rglob("*") if p.is_file()} - {RELEASE_MANIFEST}
    listed = _listed_digests(release_dir / RELEASE_MANIFEST, release_only=True) or {}
    checked = {"manifest_hash_and_provenance": 2, "files": len(present | set(listed)), "tamper_trial": 1}
    tampered = work_dir / "tampered"
    shutil.copytree(release_dir, tampered)
    victim = max((p for p in tampered.rglob("*") if p.is_file() and p.name != RELEASE_MANIFEST), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    atomic_write_bytes(victim, bytes(data))
    tamper_problems = verify(tampered)
    detected = any(str(victim) in p for p in tamper_problems)
    return {
        "manifest": str(release_dir / RELEASE_MANIFEST),
        "problems": problems,
        "tampered_file": str(victim),
        "tamper_detected": detected,
        "defects": len(problems) + (0 if detected else 1),
        "checked": checked,
    }
