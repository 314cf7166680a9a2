"""Acceptance metrics on a checkpoint: the architecture contract (recipe and artifact) and the bit-exact reload."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file as st_load_file

from shiptwo.model.checkpoint import META_TRAINING
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel


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


def checkpoint_contract_violations(checkpoint: str | Path, declared: dict, declared_parameters: int,
                                   tolerance: float) -> tuple[int, dict]:
    """AC-SHIP2-001 on the artifact: the tensors in the checkpoint file against the shapes the
    recipe's declared config implies, the parameter count of those tensors against the declared
    count (± tolerance), and each config field the file records against the declaration.

    Shapes and count come from the file's safetensors header, never from a module built from it,
    so a tensor of the wrong shape is seen even where the loader would refuse it. The evidence's
    `checked` says what the count was taken over (tensors, the parameter count, config fields).
    """
    from safetensors import safe_open

    from shiptwo.model.checkpoint import META_CONFIG

    path = Path(checkpoint)
    expected = ModelConfig.from_dict(declared, source="recipe.model").tensor_shapes()
    with safe_open(str(path), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        meta = fh.metadata() or {}
    problems = [f"tensor {n} missing" for n in sorted(set(expected) - set(shapes))]
    problems += [f"tensor {n} not implied by the declared config" for n in sorted(set(shapes) - set(expected))]
    problems += [f"tensor {n} has shape {shapes[n]}, declared config implies {s}" for n, s in sorted(expected.items())
                 if n in shapes and shapes[n] != s]
    count = sum(math.prod(s) for s in shapes.values())
    if abs(count - declared_parameters) > tolerance * declared_parameters:
        problems.append(f"parameters: the file holds {count}, declared {declared_parameters} ±{tolerance:.1%}")
    try:
        recorded = json.loads(meta[META_CONFIG])
    except (KeyError, json.JSONDecodeError):
        recorded = None
        problems.append(f"metadata {META_CONFIG} missing or unreadable")
    fields = sorted(set(declared) | set(recorded)) if isinstance(recorded, dict) else []
    for name in fields:
        a, b = declared.get(name), recorded.get(name)
        if a != b or isinstance(a, bool) != isinstance(b, bool):
            problems.append(f"config {name}: declared {a!r}, recorded {b!r}")
    checked = {"tensors": len(set(expected) | set(shapes)), "parameter_count": 1,
               "config_fields": len(fields) if isinstance(recorded, dict) else 1}  # unreadable: the record itself
    return len(problems), {"checkpoint": str(path), "tensors": len(shapes), "expected_tensors": len(expected),
                           "parameters_in_file": count, "declared_parameters": declared_parameters,
                           "checked": checked, "problems": problems[:20]}


def checkpoint_reload_defects(checkpoint: str | Path, state: str | Path, tokenizer: str | Path,
                              prefix: str = "best/") -> tuple[int, list[str], dict[str, int]]:
    """AC-SHIP2-005: tensors of a saved checkpoint that differ (bitwise) from the trained tensors kept in
    the training state, plus metadata defects (format, embedded tokenizer, re-save round trip).
    Returns (count, problems, checked): `checked` counts the items of each kind the count was taken over."""
    import tempfile

    from shiptwo.model.checkpoint import load_checkpoint, safetensors_metadata, save_checkpoint

    checkpoint, problems = Path(checkpoint), []
    ckpt = load_checkpoint(checkpoint)
    trained = {k[len(prefix):]: v for k, v in st_load_file(str(state)).items() if k.startswith(prefix)}
    if not trained:
        problems.append(f"{state}: no '{prefix}' tensors to compare with")
    names = sorted(set(trained) | set(ckpt.tensors))
    for name in names:
        a, b = ckpt.tensors.get(name), trained.get(name)
        if a is None or b is None or a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            problems.append(f"tensor {name} differs from the trained tensor")
    if ckpt.tokenizer_json != Path(tokenizer).read_text(encoding="utf-8"):
        problems.append(f"embedded tokenizer differs from {tokenizer}")
    if not ckpt.training:
        problems.append(f"metadata {META_TRAINING} missing")
    with tempfile.TemporaryDirectory() as tmp:
        again = load_checkpoint(save_checkpoint(ckpt, Path(tmp) / "resaved.safetensors"))
        meta_a = safetensors_metadata(checkpoint)
        meta_b = safetensors_metadata(again.path)
        keys = sorted(set(meta_a) | set(meta_b))
        problems += [f"metadata {k} changes on re-save" for k in keys if meta_a.get(k) != meta_b.get(k)]
        problems += [f"tensor {k} changes on re-save" for k in ckpt.tensors if not torch.equal(ckpt.tensors[k], again.tensors[k])]
    checked = {"tensors_vs_trained": len(names), "embedded_tokenizer": 1, "training_metadata": 1,
               "metadata_on_resave": len(keys), "tensors_on_resave": len(ckpt.tensors)}
    return len(problems), problems, checked
