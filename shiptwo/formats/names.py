"""The one mapping between our (= Hugging Face) names and llama.cpp's: architecture and tensors.

Our parameter names are Hugging Face `LlamaForCausalLM` names; GGUF names come from gguf-py's
own tables (`gguf.TENSOR_NAMES`, `gguf.MODEL_ARCH_NAMES`), so a wrong name can only be wrong
here. The Q/K row permutation between the two layouts lives here too: it is part of what
"the same tensor" means across the two formats.
"""

from __future__ import annotations

import re

import gguf
import numpy as np

from shiptwo.errors import ShiptwoError

HF_ARCHITECTURE_CLASS = "LlamaForCausalLM"
GGUF_TOKENIZER_MODEL = "gpt2"  # byte-level BPE
GGUF_TOKENIZER_PRE = "gpt-2"  # GPT-2 split regex; an unknown name is llama.cpp's commonest refusal
# gguf.Keys has general.license and general.dataset.{id}.name but no dataset licence key;
# this one follows its general.dataset.{id}.* pattern.
GGUF_DATASET_LICENSE = "general.dataset.{id}.license"
GGUF_DATASET_ID = 0
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file


# --- architecture -------------------------------------------------------------------------

# Hugging Face class name -> llama.cpp architecture enum; a class name is never an architecture.
_HF_CLASS_TO_ARCH = {HF_ARCHITECTURE_CLASS: gguf.MODEL_ARCH.LLAMA}


def llamacpp_architecture(hf_class: str) -> str:
    """The llama.cpp `general.architecture` name for a Hugging Face class name ("llama")."""
    arch = _HF_CLASS_TO_ARCH.get(hf_class)
    if arch is None:
        raise ShiptwoError(
            f"architecture: unsupported Hugging Face class {hf_class!r} "
            f"(supported: {', '.join(sorted(_HF_CLASS_TO_ARCH))})"
        )
    return gguf.MODEL_ARCH_NAMES[arch]


def hf_class_for(architecture: str) -> str:
    """The Hugging Face class name for a llama.cpp architecture name (inverse of the above)."""
    for hf_class, arch in _HF_CLASS_TO_ARCH.items():
        if gguf.MODEL_ARCH_NAMES[arch] == architecture:
            return hf_class
    raise ShiptwoError(
        f"architecture: unknown model architecture {architecture!r} "
        f"(supported: {', '.join(gguf.MODEL_ARCH_NAMES[a] for a in _HF_CLASS_TO_ARCH.values())})"
    )


# --- tensors ------------------------------------------------------------------------------

_T = gguf.MODEL_TENSOR
# Hugging Face name (with {bid} for the block) -> gguf tensor kind; each entry is one `.weight`.
_HF_TO_KIND: dict[str, gguf.MODEL_TENSOR] = {
    "model.embed_tokens": _T.TOKEN_EMBD,
    "model.norm": _T.OUTPUT_NORM,
    "lm_head": _T.OUTPUT,
    "model.layers.{bid}.input_layernorm": _T.ATTN_NORM,
    "model.layers.{bid}.self_attn.q_proj": _T.ATTN_Q,
    "model.layers.{bid}.self_attn.k_proj": _T.ATTN_K,
    "model.layers.{bid}.self_attn.v_proj": _T.ATTN_V,
    "model.layers.{bid}.self_attn.o_proj": _T.ATTN_OUT,
    "model.layers.{bid}.post_attention_layernorm": _T.FFN_NORM,
    "model.layers.{bid}.mlp.gate_proj": _T.FFN_GATE,
    "model.layers.{bid}.mlp.up_proj": _T.FFN_UP,
    "model.layers.{bid}.mlp.down_proj": _T.FFN_DOWN,
}
_SUFFIX = ".weight"


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template + _SUFFIX).replace(re.escape("{bid}"), r"(\d+)") + "$")


_HF_PATTERNS = [(_pattern(hf), hf, kind) for hf, kind in _HF_TO_KIND.items()]
_GGUF_PATTERNS = [(_pattern(gguf.TENSOR_NAMES[kind]), hf, kind) for hf, kind in _HF_TO_KIND.items()]


def _translate(name: str, patterns, target) -> str:
    for pattern, hf_template, kind in patterns:
        m = pattern.match(name)
        if m:
            bid = m.group(1) if m.groups() else None
            return target(hf_template, kind).format(bid=bid) + _SUFFIX
    return ""


def hf_to_gguf(name: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`."""
    out = _translate(name, _HF_PATTERNS, lambda hf, kind: gguf.TENSOR_NAMES[kind])
    if not out:
        raise ShiptwoError(f"tensor names: no GGUF name for tensor {name!r}")
    return out


def gguf_to_hf(name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    out = _translate(name, _GGUF_PATTERNS, lambda hf, kind: hf)
    if not out:
        raise ShiptwoError(f"tensor names: unknown GGUF tensor {name!r}")
    return out


def is_query(hf_name: str) -> bool:
    return hf_name.endswith("self_attn.q_proj.weight")


def is_key(hf_name: str) -> bool:
    return hf_name.endswith("self_attn.k_proj.weight")


# --- Q/K layout ---------------------------------------------------------------------------


def qk_heads(hf_name: str, config) -> int | None:
    """The head count a tensor's Q/K permutation groups its rows by (q: heads, k: KV heads); None for others."""
    if is_query(hf_name):
        return config.num_attention_heads
    if is_key(hf_name):
        return config.num_key_value_heads
    return None


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rotate-half rows -> llama.cpp's interleaved-pair rows (convert_hf_to_gguf's
    `LlamaModel.permute`): q uses head_count, k uses head_count_kv."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_qk`: llama.cpp rows back to Hugging Face rows."""
    rows = weight.shape[0]
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
