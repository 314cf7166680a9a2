"""Open any model artifact the project produces — native checkpoint, Hugging Face directory or
GGUF file — as a `Checkpoint`, so run/qa/bench/eval accept all three the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from shiptwo.checkpoint import Checkpoint, load_checkpoint
from shiptwo.errors import ShiptwoError

KIND_NATIVE = "native"
KIND_HF = "hf"
KIND_GGUF = "gguf"
GGUF_MAGIC = b"GGUF"
HF_CONFIG_FILE = "config.json"

# (module, function) that turns each foreign kind into a Checkpoint; owned by the exports code.
_IMPORTERS = {
    KIND_HF: ("shiptwo.hf_io", "read_hf"),
    KIND_GGUF: ("shiptwo.gguf_load", "load_gguf"),
}


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
    """Load `path` as a Checkpoint whatever its kind; every defect is one ShiptwoError naming the file."""
    kind = artifact_kind(path)
    if kind == KIND_NATIVE:
        return load_checkpoint(path)
    module, func = _IMPORTERS[kind]
    try:
        loader = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise ShiptwoError(f"{path}: {kind} artifacts need {module}.{func}, which is not available") from None
    ckpt = loader(path)
    if ckpt.path is None:
        ckpt.path = Path(path)
    return ckpt
