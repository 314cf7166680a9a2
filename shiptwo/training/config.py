"""The trainer's configuration: optimization and run-control hyper-parameters of one recipe profile."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

from shiptwo.errors import ShiptwoError

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Optimization and run-control hyper-parameters (one profile of a recipe)."""

    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_size: int = 8  # sequences per micro-step, global (split across DDP ranks)
    grad_accum: int = 1
    seq_len: int = 64
    max_steps: int | None = 20  # exactly one of max_steps / token_budget
    token_budget: int | None = None
    eval_interval: int = 10
    eval_windows: int = 16  # validation windows per periodic eval (the final eval uses the whole split)
    min_steps: int = 10  # early stopping never fires before this step
    patience: int = 3  # evals without improvement before an early stop
    min_delta: float = 0.0
    seed: int = 0
    force_under_provisioned: bool = False
    device: str = "auto"
    threads: int | None = None
    max_wall_seconds: float | None = None
    checkpoint_interval: int | None = None  # steps between resumable state saves (None: only at the end)
    compile: bool = False  # torch.compile the training forward (pays on runs of minutes; a failure is logged, eager runs)

    def __post_init__(self):
        if (self.max_steps is None) == (self.token_budget is None):
            raise ShiptwoError("train: set exactly one of max_steps and token_budget")
        if self.device not in DEVICES:
            raise ShiptwoError(f"train: device {self.device!r} is not one of {', '.join(DEVICES)}")
        for name in ("max_steps", "token_budget"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ShiptwoError(f"train: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_size", "grad_accum", "seq_len", "eval_interval", "eval_windows", "patience"):
            if int(getattr(self, name)) < 1:
                raise ShiptwoError(f"train: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def total_steps(self) -> int:
        if self.max_steps is not None:
            return int(self.max_steps)
        return max(1, int(self.token_budget) // self.tokens_per_step)

    @classmethod
    def from_dict(cls, d: dict, source: str = "train") -> "TrainConfig":
        if not isinstance(d, dict):
            raise ShiptwoError(f"{source}: not a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ShiptwoError(f"{source}: unknown train field(s) {', '.join(unknown)}")
        check_field_types(cls, d, source)
        try:
            return cls(**d)
        except ShiptwoError as exc:
            raise ShiptwoError(f"{source}: {exc}") from None


def check_field_types(cls, d: dict, source: str) -> None:
    """A ShiptwoError naming the first field of `d` whose YAML value is not of the type `cls`
    declares for it (`batch_size: eight`, `lr: fast`, `max_files: [40]`), before any of them is
    used: a wrong type otherwise surfaced as a TypeError/ValueError traceback deep in the trainer."""
    allowed = {bool: (bool,), int: (int,), float: (int, float), str: (str,), type(None): (type(None),)}
    for name, kind in typing.get_type_hints(cls).items():
        if name not in d:
            continue
        value = d[name]
        kinds = typing.get_args(kind) or (kind,)
        ok = any(isinstance(value, allowed.get(k, (object,))) for k in kinds)
        if not ok or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise ShiptwoError(f"{source}.{name}: {value!r} is not {names}")


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at `total` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
