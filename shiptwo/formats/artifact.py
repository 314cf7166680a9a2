"""Open any model artifact the project produces — native checkpoint, Hugging Face directory or
GGUF file — as a `Checkpoint`, so run/qa/bench/eval accept all three the same way.
"""

from __future__ import annotations

from pathlib import Path

from shiptwo.model.checkpoint import Checkpoint, load_checkpoint
from shiptwo.errors import ShiptwoError

from shiptwo.formats.hf import HF_CONFIG_FILE
from shiptwo.formats.names import GGUF_MAGIC
from shiptwo.formats.release import verify_recorded

KIND_NATIVE = "native"
KIND_HF = "hf"
KIND_GGUF = "gguf"


def artifact_kind(path: str | Path) -> str:
    """Which kind of artifact `path` is, by content rather than by name; unknown kinds are an error."""
    path = Path(path)
    if path.is_dir():
        if (path / HF_CONFIG_FILE).is_file():
            return KIND_HF
        raise ShiptwoError(f"{path}: directory is not a Hugging Face model (no {HF_CONFIG_FILE})")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot read artifact ({exc.strerror})") from None
    if head[:4] == GGUF_MAGIC:
        return KIND_GGUF
    if len(head) == 8 and 0 < int.from_bytes(head, "little") < (1 << 30):
        return KIND_NATIVE  # a safetensors header length; load_checkpoint validates the rest
    raise ShiptwoError(f"{path}: unknown artifact kind (not a shiptwo checkpoint, GGUF file or Hugging Face directory)")


def load_artifact(path: str | Path) -> Checkpoint:
    """Load `path` as a Checkpoint whatever its kind; every defect is one ShiptwoError naming the file.

    An artifact that a release or artifact-store manifest lists is first checked against the
    SHA-256 recorded there: a file changed since it was built or published is refused, not loaded.
    """
    verify_recorded(path)
    kind = artifact_kind(path)
    if kind == KIND_NATIVE:
        return load_checkpoint(path)
    if kind == KIND_HF:
        from shiptwo.formats.hf import read_hf as loader
    else:
        from shiptwo.formats.gguf_import import load_gguf as loader
    ckpt = loader(path)
    if ckpt.path is None:
        ckpt.path = Path(path)
    return ckpt
