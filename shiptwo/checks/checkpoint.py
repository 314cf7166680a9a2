"""Acceptance metrics on a checkpoint: the architecture contract and the bit-exact reload."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file as st_load_file

from shiptwo.model.checkpoint import META_TRAINING
from shiptwo.model.llama import LlamaModel, ModelConfig


def architecture_mismatches(declared: dict, declared_parameters: int, tolerance: float,
                            model: torch.nn.Module | None = None) -> tuple[int, list[str]]:
    """AC-SHIP2-001: count declared fields that differ from the built module's config, plus an out-of-band count.

    `model` defaults to a LlamaModel built from `declared` on the meta device (no memory, same code path).
    """
    problems = []
    if model is None:
        with torch.device("meta"):
            model = LlamaModel(ModelConfig.from_dict(declared, source="recipe.model"))
    built = model.config.to_dict()
    for name, value in built.items():
        if name not in declared:
            problems.append(f"{name}: not declared (built {value!r})")
        elif declared[name] != value or isinstance(declared[name], bool) != isinstance(value, bool):
            problems.append(f"{name}: declared {declared[name]!r}, built {value!r}")
    live = sum(p.numel() for p in model.parameters())
    if abs(live - declared_parameters) > tolerance * declared_parameters:
        problems.append(f"parameters: live module has {live}, declared {declared_parameters} ±{tolerance:.1%}")
    return len(problems), problems


def checkpoint_reload_defects(checkpoint: str | Path, state: str | Path, tokenizer: str | Path,
                              prefix: str = "best/") -> tuple[int, list[str]]:
    """AC-SHIP2-005: tensors of a saved checkpoint that differ (bitwise) from the trained tensors kept in
    the training state, plus metadata defects (format, embedded tokenizer, re-save round trip)."""
    import tempfile

    from shiptwo.model.checkpoint import load_checkpoint, read_safetensors_metadata, save_checkpoint

    checkpoint, problems = Path(checkpoint), []
    ckpt = load_checkpoint(checkpoint)
    trained = {k[len(prefix):]: v for k, v in st_load_file(str(state)).items() if k.startswith(prefix)}
    if not trained:
        problems.append(f"{state}: no '{prefix}' tensors to compare with")
    for name in sorted(set(trained) | set(ckpt.tensors)):
        a, b = ckpt.tensors.get(name), trained.get(name)
        if a is None or b is None or a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            problems.append(f"tensor {name} differs from the trained tensor")
    if ckpt.tokenizer_json != Path(tokenizer).read_text(encoding="utf-8"):
        problems.append(f"embedded tokenizer differs from {tokenizer}")
    if not ckpt.training:
        problems.append(f"metadata {META_TRAINING} missing")
    with tempfile.TemporaryDirectory() as tmp:
        again = load_checkpoint(save_checkpoint(ckpt, Path(tmp) / "resaved.safetensors"))
        meta_a = read_safetensors_metadata(checkpoint.read_bytes(), checkpoint)
        meta_b = read_safetensors_metadata(again.path.read_bytes(), again.path)
        problems += [f"metadata {k} changes on re-save" for k in sorted(set(meta_a) | set(meta_b)) if meta_a.get(k) != meta_b.get(k)]
        problems += [f"tensor {k} changes on re-save" for k in ckpt.tensors if not torch.equal(ckpt.tensors[k], again.tensors[k])]
    return len(problems), problems
