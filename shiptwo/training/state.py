"""The trainer's run state and its resumable file: safetensors tensors plus JSON metadata, no pickle."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file as st_load_file

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_bytes
from shiptwo.model.checkpoint import safetensors_bytes, safetensors_metadata
from shiptwo.model.llama import LlamaModel
from shiptwo.training.sampler import WindowSampler


@dataclass
class TrainState:
    """Where a run is: counters, the validation record, the step log and the best weights so far."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_val: float = math.inf
    best_step: int = 0
    val_history: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    best_tensors: dict[str, torch.Tensor] | None = None


_META_FIELDS = ("step", "tokens", "elapsed", "best_val", "best_step", "val_history", "log")


def unique_named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return sorted(model.named_parameters(), key=lambda kv: kv[0])  # named_parameters() already dedupes tied


def save_state(path: Path, raw: LlamaModel, opt, sampler: WindowSampler, st: TrainState) -> None:
    """Write model, best and optimizer tensors plus counters, log and sampler position to `path`, atomically."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in raw.state_dict_for_save().items()}
    if st.best_tensors is not None:
        tensors.update({f"best/{k}": v.contiguous() for k, v in st.best_tensors.items()})
    for name, p in unique_named_parameters(raw):
        for key, t in opt.state.get(p, {}).items():
            tensors[f"opt/{name}/{key}"] = torch.as_tensor(t).detach().cpu().contiguous()
    meta = {k: getattr(st, k) for k in _META_FIELDS}
    meta["best_val"] = None if math.isinf(meta["best_val"]) else meta["best_val"]
    meta["sampler"] = sampler.state()
    atomic_write_bytes(path, safetensors_bytes(tensors, {"train_state": json.dumps(meta)}))


def load_state(path: Path, raw: LlamaModel, opt, sampler: WindowSampler, st: TrainState) -> None:
    """Restore what save_state wrote into `raw`, `opt`, `sampler` and `st`."""
    if not path.exists():
        raise ShiptwoError(f"{path}: no training state to resume from")
    meta = json.loads(safetensors_metadata(path)["train_state"])
    tensors = st_load_file(str(path))
    device = next(raw.parameters()).device
    raw.load_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, source=str(path))
    raw.to(device)
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    st.best_tensors = best or None
    for name, p in unique_named_parameters(raw):
        keys = {k.rsplit("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt/{name}/")}
        if keys:
            opt.state[p] = {k: (v if k == "step" else v.to(device)) for k, v in keys.items()}
    for k in _META_FIELDS:
        setattr(st, k, meta[k])
    st.best_val = math.inf if meta["best_val"] is None else meta["best_val"]
    sampler.restore(meta["sampler"])


def optimizer_state_sha256(model: torch.nn.Module, opt: torch.optim.Optimizer) -> str:
    """SHA-256 of every optimizer state tensor, walked in sorted parameter-name order."""
    h = hashlib.sha256()
    for name, p in unique_named_parameters(model):
        for key, t in sorted(opt.state.get(p, {}).items()):
            t = torch.as_tensor(t).detach().cpu().contiguous()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()
