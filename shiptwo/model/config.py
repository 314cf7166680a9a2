"""The architecture as a config: its fields (Hugging Face's names, so config.json is a straight
dump), their kinds and ranges, and the tensor contract they imply (names, shapes, parameter count).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shiptwo.errors import ShiptwoError

if TYPE_CHECKING:
    import torch

# the sizes and counts a config holds: positive integers
_SIZE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings")
# The model builds its RoPE tables (cos and signed sin, max_position_embeddings x head_dim floats
# each) at its first forward: a file claiming 2^28 positions asked for 16 GiB a table at head_dim 16,
# a traceback or the OOM killer, not an error. 2^20 is the longest context a released plain-RoPE
# LLaMA declares (1,048,576, e.g. Gradient's Llama-3 1048k) and keeps both tables at 1 GiB or under
# up to head_dim 128.
MAX_POSITION_EMBEDDINGS = 2**20


@dataclass
class ModelConfig:
    """The architecture, with Hugging Face field names so config.json is a straight dump."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 172
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    bos_token_id: int = 0
    eos_token_id: int = 0

    def __post_init__(self):
        for name in _SIZE_FIELDS:  # 0 heads divided by zero below; a negative size failed deep in torch's ops
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShiptwoError(f"config: field {name} is {value!r}, not a positive integer")
        if self.max_position_embeddings > MAX_POSITION_EMBEDDINGS:
            raise ShiptwoError(f"config: field max_position_embeddings is {self.max_position_embeddings}, above the "
                               f"supported {MAX_POSITION_EMBEDDINGS} (its RoPE tables would not fit in memory)")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ShiptwoError(f"config: field {name} is {value!r}, not a positive finite number")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ShiptwoError(f"config: field {name} is {value!r}, not a token id below vocab_size {self.vocab_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ShiptwoError(
                f"config: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ShiptwoError(
                f"config: num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ShiptwoError(f"config: head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ModelConfig":
        """Build from a mapping; unknown or missing fields are an error naming the field."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ShiptwoError(f"{source}: unknown model config field(s) {', '.join(unknown)}")
        missing = sorted(n for n, f in names.items() if n not in d and f.default is dataclasses.MISSING)
        if missing:
            raise ShiptwoError(f"{source}: missing model config field(s) {', '.join(missing)}")
        kwargs = {}
        for name, value in d.items():
            ftype = type(names[name].default)
            # exact kinds, checked in __post_init__: int(64.9) would truncate, int(True) read a flag as a size
            if ftype is bool:
                try:
                    value = _as_bool(value)
                except ValueError:
                    raise ShiptwoError(f"{source}: field {name} has invalid value {value!r}") from None
            elif not isinstance(value, bool) and isinstance(value, numbers.Integral if ftype is int else numbers.Real):
                value = ftype(value)  # numpy's scalars (a GGUF's values) as Python's
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ShiptwoError as exc:
            raise ShiptwoError(f"{source}: {str(exc).removeprefix('config: ')}") from None

    def num_parameters(self) -> int:
        """Exact trainable parameter count implied by the config (tied weights counted once)."""
        h, i, v, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        kv = self.num_key_value_heads * hd
        per_layer = h * h + 2 * h * kv + h * h + 3 * h * i + 2 * h  # q, k+v, o, mlp, 2 norms
        total = v * h + self.num_hidden_layers * per_layer + h
        if not self.tie_word_embeddings:
            total += v * h
        return total

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """The tensors of one decoder layer, their names after `model.layers.N.`."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.num_key_value_heads * self.head_dim
        return {"input_layernorm.weight": (h,), "self_attn.q_proj.weight": (h, h), "self_attn.k_proj.weight": (kv, h),
                "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, h),
                "post_attention_layernorm.weight": (h,), "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h),
                "mlp.down_proj.weight": (h, i)}

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the config implies, Hugging Face names, torch shapes (the tensor contract)."""
        h, v = self.hidden_size, self.vocab_size
        shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
        layer = self.layer_shapes()
        for n in range(self.num_hidden_layers):
            shapes.update({f"model.layers.{n}.{name}": shape for name, shape in layer.items()})
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (v, h)
        return shapes

    def check_tensors(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """The tensor contract, strictly: a missing, extra or misshapen tensor is an error naming it."""
        per_layer = len(self.layer_shapes())
        count = 2 + per_layer * self.num_hidden_layers + (0 if self.tie_word_embeddings else 1)
        if len(tensors) != count:  # before listing them: a layer count of 2^40 would list forever
            raise ShiptwoError(f"{source}: {len(tensors)} tensors, the config implies {count} "
                               f"({self.num_hidden_layers} layers of {per_layer})")
        expected = self.tensor_shapes()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing:
            raise ShiptwoError(f"{source}: missing tensor(s) {', '.join(missing[:5])}")
        if extra:
            raise ShiptwoError(f"{source}: unexpected tensor(s) {', '.join(extra[:5])}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ShiptwoError(
                    f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                    f"config implies {shape}"
                )


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "True", 1, "1"):
        return True
    if value in ("false", "False", 0, "0"):
        return False
    raise ValueError(value)
