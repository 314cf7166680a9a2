"""Atomic writes and hashing: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from shiptwo.errors import ShiptwoError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same directory, fsync, then rename."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file in `path`'s directory (created if needed); an unwritable place, or a directory
    at `path` (the final rename would fail only after the whole file was written), is a ShiptwoError."""
    if path.is_dir():
        raise ShiptwoError(f"{path}: cannot write a file there: a directory of that name exists")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike):
    """Yield a temp path beside `path` for a writer that needs a file name (gguf); on success it
    is renamed over `path`, on failure removed, so `path` is never half-written or clobbered."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, marker: str):
    """Yield a temp directory beside `path`; on success it replaces `path` (an old directory is
    removed only after the new one is complete), on failure it is removed and `path` untouched.

    Only an empty directory or an earlier output of the same kind (one holding the file `marker`,
    e.g. a release's manifest) is replaced: `-o` naming the working directory or a folder of inputs
    is refused rather than deleted wholesale."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ShiptwoError(f"{path}: cannot write a directory there: a file of that name exists")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ShiptwoError(f"{path}: directory exists and is not an earlier output (no {marker}); refusing to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "dir")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _given_paths(inputs: dict[str, object]):
    """(label, path) for every path in `inputs` (label -> path or list of paths, None skipped)."""
    for label, given in inputs.items():
        for p in given if isinstance(given, (list, tuple)) else [given]:
            if p is not None:
                yield label, p


def refuse_overwriting_inputs(output: str | os.PathLike, inputs: dict[str, object]) -> None:
    """A ShiptwoError when `output` is one of `inputs` (label -> path or list of paths, None
    skipped), lies inside an input directory, or is a directory holding an input: writing it
    would replace or delete what the command reads (`export ck -o ck`, `publish d -o d`)."""
    out = Path(output).resolve()
    for label, p in _given_paths(inputs):
        src = Path(p).resolve()
        if out == src or src in out.parents or out in src.parents or (
                out.exists() and src.exists() and os.path.samefile(out, src)):
            raise ShiptwoError(f"{output}: output would overwrite the input {label} {p}; write it elsewhere")


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def refuse_special_inputs(inputs: dict[str, object]) -> None:
    """A ShiptwoError naming the first of `inputs` (label -> path or list of paths, None skipped)
    that exists but is neither a regular file nor a directory: opening a named pipe with no writer
    blocks forever, and a device or pipe has no end to read to, so a command given one would hang
    rather than fail. Checked with stat (which never blocks) through symbolic links, so `/dev/stdin`
    redirected from a file passes and a pipe does not. A missing path is the command's to name."""
    for label, p in _given_paths(inputs):
        try:
            mode = os.stat(p).st_mode
        except (OSError, ValueError):
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "not a regular file")
            raise ShiptwoError(f"{p}: input {label} is {kind}, not a regular file or directory; give a file")


# --- manifests: one scheme for the artifact store, releases and verdict bundles --------------


def tree_digests(root: str | os.PathLike, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file under `root` by POSIX relative path, sorted; `exclude` names relative
    paths left out (the manifest itself)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {rel: sha256_file(p) for p in files if (rel := p.relative_to(root).as_posix()) not in exclude}


def tree_problems(root: str | os.PathLike, digests: dict[str, str], exclude: tuple[str, ...] = (),
                  allow_extra: bool = False) -> list[str]:
    """One line per file that is missing, differs from its recorded SHA-256, or (unless
    `allow_extra`) is present but not listed; empty when the tree matches `digests`."""
    root = Path(root)
    problems = []
    for rel, digest in sorted(digests.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: SHA-256 differs from the manifest (tampered or corrupt)")
    if not allow_extra:
        present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        problems += [f"{root / rel}: extra file not in the manifest" for rel in sorted(present - set(digests) - set(exclude))]
    return problems
