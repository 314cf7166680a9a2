"""What MODEL-1's release must hold, judged from outside the build: every quantized GGUF a
criterion names is among the artifact's files (AC-SHIP1-003/004/005/006/007), and the release manifest
lists every shipped file with the SHA-256 of the file the build wrote (AC-SHIP1-010)."""

from __future__ import annotations

from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_file, tree_digests
from shiptwo.formats.release import release_listing

GGUF_ROLE = "gguf_{dtype}"  # the artifact role of each quantized GGUF (builds.model1.package_release)
CHECKPOINT_ROLE, HF_CONFIG_ROLE = "checkpoint", "hf_config"


def named_ggufs(files: dict[str, Path], formats, where: str) -> dict[str, Path]:
    """{type: path} of the GGUF of every quantized type in `formats` (a criterion's spec parameter);
    a ShiptwoError naming `where` when the list is empty or the artifact lacks one: a criterion with
    nothing to measure must not pass."""
    if not formats:
        raise ShiptwoError(f"{where}: names no quantized format to measure")
    missing = [q for q in formats if GGUF_ROLE.format(dtype=q) not in files]
    if missing:
        shipped = sorted(r for r in files if r.startswith(GGUF_ROLE.format(dtype="")))
        raise ShiptwoError(f"{where}: the artifact has no GGUF of type {', '.join(missing)} "
                           f"(its GGUF roles: {', '.join(shipped) or 'none'})")
    return {q: Path(files[GGUF_ROLE.format(dtype=q)]) for q in formats}


def shipped_ggufs(files: dict[str, Path], formats, where: str) -> dict[str, Path]:
    """{type: path} of every quantized GGUF the artifact ships, each type in `formats` required
    (see named_ggufs): a criterion over "every shipped GGUF" measures those beyond the list too."""
    prefix = GGUF_ROLE.format(dtype="")
    return {**named_ggufs(files, formats, where),
            **{r.removeprefix(prefix): Path(p) for r, p in files.items() if r.startswith(prefix)}}


def released_ggufs(files: dict[str, Path], formats, release_dir: str | Path, where: str) -> dict[str, Path]:
    """{type: published copy} of every quantized GGUF the artifact ships, each type in `formats`
    required (see shipped_ggufs) and each in the published release (see release_copies): what a
    criterion over the shipped GGUFs measures, rather than whichever roles the artifact declares
    (a Q4_K_M role dropped from the store manifest left AC-SHIP1-005 scoring the others only)."""
    return release_copies(shipped_ggufs(files, formats, where), release_dir, where)


def shipped_artifacts(files: dict[str, Path], formats, where: str) -> dict[str, Path]:
    """What a MODEL-1 release ships, by role: the native checkpoint, the HF directory and every
    quantized GGUF, those `formats` names required (see named_ggufs); ShiptwoError when one is absent."""
    missing = [r for r in (CHECKPOINT_ROLE, HF_CONFIG_ROLE) if r not in files]
    if missing:
        raise ShiptwoError(f"{where}: the artifact has no {', '.join(missing)} file")
    ggufs = {GGUF_ROLE.format(dtype=q): p for q, p in shipped_ggufs(files, formats, where).items()}
    return {CHECKPOINT_ROLE: Path(files[CHECKPOINT_ROLE]), "hf_dir": Path(files[HF_CONFIG_ROLE]).parent, **ggufs}


def release_omissions(manifest: str | Path, shipped: dict[str, Path]) -> tuple[list[str], int]:
    """One line per shipped file (each file of a directory) that the release manifest does not list,
    or lists with another SHA-256 than the file shipped (empty when the release holds them all), and
    the number of shipped files checked: what a count of those lines is over."""
    listed = release_listing(manifest)
    out, checked = [], 0
    for role, path in shipped.items():
        path = Path(path)
        want = ({f"{path.name}/{rel}": d for rel, d in tree_digests(path).items()} if path.is_dir()
                else {path.name: sha256_file(path)})
        checked += len(want)
        for rel, digest in want.items():
            if rel not in listed:
                out.append(f"{role}: {rel} is not in {manifest}")
            elif listed[rel] != digest:
                out.append(f"{role}: {rel} is listed in {manifest} with another SHA-256 than {path}")
    return out, checked


def release_copies(paths: dict[str, Path], release_dir: str | Path, where: str) -> dict[str, Path]:
    """The published copy (same name, in `release_dir`) of each file in `paths`; a ShiptwoError
    naming every one the release lacks, so a check never quietly judges fewer files."""
    copies = {k: Path(release_dir) / Path(p).name for k, p in paths.items()}
    missing = [str(c) for c in copies.values() if not c.is_file()]
    if missing:
        raise ShiptwoError(f"{where}: {', '.join(missing)}: not in the published release")
    return copies
