"""The native checkpoint: one safetensors file (no pickle) whose metadata carries everything a
downstream tool needs — architecture, every config field, the tokenizer, provenance and the
training summary — so that no consumer can refuse it for a missing piece (background, lesson 2).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save

from shiptwo import __version__
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_bytes
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel
from shiptwo.model.tokenizer import BPETokenizer

FORMAT_NAME = "shiptwo-checkpoint"
FORMAT_VERSION = "1"
ARCHITECTURE = "llama"  # the llama.cpp / transformers model_type name, never a class name
META_FORMAT = "format"
META_FORMAT_VERSION = "format_version"
META_ARCHITECTURE = "architecture"
META_CONFIG = "config"  # JSON of ModelConfig, every field
META_TOKENIZER = "tokenizer_json"  # the embedded tokenizer.json text
META_CHAT_TEMPLATE = "chat_template"  # Jinja text, only for chat models
META_LICENSE = "license"
META_DATA_SOURCE = "data_source"
META_DATA_LICENSE = "data_license"
META_TRAINING = "training_summary"  # JSON: steps, tokens, D/N, losses, seed, device, stop reason
META_CODE_VERSION = "code_version"
PROVENANCE_KEYS = (META_LICENSE, META_DATA_SOURCE, META_DATA_LICENSE)
REQUIRED_META_KEYS = (
    META_FORMAT,
    META_FORMAT_VERSION,
    META_ARCHITECTURE,
    META_CONFIG,
    META_TOKENIZER,
    *PROVENANCE_KEYS,
)
HEADER_ALIGN = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes


@dataclass
class Checkpoint:
    """A loaded (or to-be-saved) checkpoint: config, HF-named tensors and metadata."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    tokenizer_json: str
    provenance: dict[str, str]
    training: dict = field(default_factory=dict)
    chat_template: str | None = None
    path: Path | None = None

    def tokenizer(self) -> BPETokenizer:
        return BPETokenizer.from_json(self.tokenizer_json, source=f"{self.path}: embedded tokenizer")

    def build_model(self) -> LlamaModel:
        """A model in eval mode holding exactly these tensors (strict contract check). It shares
        them, no copy: a loaded checkpoint's tensors are memory-mapped from its file."""
        with torch.device("meta"):
            model = LlamaModel(self.config)
        model.load_tensors(self.tensors, source=str(self.path or "checkpoint"), assign=True)
        return model.eval()

    def metadata(self) -> dict[str, str]:
        meta = {
            META_FORMAT: FORMAT_NAME,
            META_FORMAT_VERSION: FORMAT_VERSION,
            META_ARCHITECTURE: ARCHITECTURE,
            META_CONFIG: self.config.to_json(),
            META_TOKENIZER: self.tokenizer_json,
            META_TRAINING: json.dumps(self.training, sort_keys=True),
            META_CODE_VERSION: __version__,
        }
        meta.update({k: self.provenance[k] for k in PROVENANCE_KEYS if k in self.provenance})
        if self.chat_template is not None:
            meta[META_CHAT_TEMPLATE] = self.chat_template
        return meta


def missing_provenance(provenance: dict | None) -> list[str]:
    """Provenance keys (license, data source, data license) absent or empty in `provenance`."""
    return [k for k in PROVENANCE_KEYS if not (provenance or {}).get(k)]


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Validate, serialize and write atomically: a crash mid-save leaves the old file intact."""
    missing = missing_provenance(ckpt.provenance)
    if missing:
        raise ShiptwoError(f"{path}: provenance field(s) {', '.join(missing)} missing")
    ckpt.config.check_tensors(ckpt.tensors, source=str(path))  # contract check
    tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.tensors.items()}
    out = atomic_write_bytes(path, safetensors_bytes(tensors, ckpt.metadata()))
    ckpt.path = out
    return out


def checkpoint_from_model(model: LlamaModel, tokenizer_json: str, provenance: dict, **kwargs) -> Checkpoint:
    return Checkpoint(model.config, model.state_dict_for_save(), tokenizer_json, dict(provenance), **kwargs)


def load_checkpoint(path: str | Path, check_finite: bool = True) -> Checkpoint:
    """Read and validate a native checkpoint; any defect is one ShiptwoError naming the file."""
    path = Path(path)
    meta, tensors = read_safetensors(path)
    if meta.get(META_FORMAT) != FORMAT_NAME:
        raise ShiptwoError(f"{path}: not a shiptwo checkpoint (metadata '{META_FORMAT}' is {meta.get(META_FORMAT)!r})")
    missing = [k for k in REQUIRED_META_KEYS if not meta.get(k)]
    if missing:
        raise ShiptwoError(f"{path}: metadata field(s) {', '.join(missing)} missing")
    if meta[META_ARCHITECTURE] != ARCHITECTURE:
        raise ShiptwoError(f"{path}: unsupported architecture {meta[META_ARCHITECTURE]!r} (expected {ARCHITECTURE!r})")
    config = ModelConfig.from_dict(_json_field(meta, META_CONFIG, path), source=f"{path}: config")
    config.check_tensors(tensors, source=str(path))
    bad = finite_defects(tensors) if check_finite else []
    if bad:
        raise ShiptwoError(f"{path}: tensor {bad[0]} contains NaN or Inf")
    ckpt = Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer_json=meta[META_TOKENIZER],
        provenance={k: meta[k] for k in PROVENANCE_KEYS},
        training=_json_field(meta, META_TRAINING, path) if meta.get(META_TRAINING) else {},
        chat_template=meta.get(META_CHAT_TEMPLATE),
        path=path,
    )
    ckpt.tokenizer()  # the embedded tokenizer must parse
    return ckpt


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors' own serialization with its JSON header's keys sorted: equal tensors and metadata
    give equal bytes (the library orders the metadata by a hash seeded per process), so a rebuild
    can be compared with what it rebuilds byte for byte. Only the header moves; the data section and
    every tensor's offsets within it are the library's."""
    raw = st_save(tensors, metadata=metadata)
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    header += b" " * (-len(header) % HEADER_ALIGN)
    return struct.pack("<Q", len(header)) + header + raw[8 + size :]


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (header only, via safetensors' own reader); a missing,
    truncated or foreign file is one ShiptwoError naming it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except FileNotFoundError:
        raise ShiptwoError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ShiptwoError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def read_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a safetensors file, with one-line errors for a corrupt or foreign file."""
    path = Path(path)
    meta = safetensors_metadata(path)
    try:
        tensors = st_load_file(str(path))
    except (SafetensorError, RuntimeError, ValueError, OSError) as exc:
        raise ShiptwoError(f"{path}: corrupt tensor data ({str(exc).splitlines()[0]})") from None
    return meta, tensors


def finite_defects(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of tensors holding NaN or Inf."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _json_field(meta: dict, key: str, path: Path):
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise ShiptwoError(f"{path}: metadata field {key} is not valid JSON") from None
