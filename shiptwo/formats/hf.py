"""Hugging Face format: export a native checkpoint as a `LlamaForCausalLM` directory, and import one.

Our tensor names already are Hugging Face names, so the work is the config (field by field,
refusing what our model cannot represent), the tokenizer files and provenance. A directory is
written atomically: a failed export leaves no half directory and never clobbers a good one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from shiptwo import __version__
from shiptwo.model.checkpoint import (Checkpoint, finite_defects, missing_provenance, read_safetensors, safetensors_bytes,
                                     save_checkpoint)
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_output_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from shiptwo.model.config import ModelConfig
from shiptwo.formats.names import llamacpp_architecture
from shiptwo.model.tokenizer import BPETokenizer

from shiptwo.formats.names import HF_ARCHITECTURE_CLASS
from shiptwo.model.checkpoint import ARCHITECTURE, META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE, PROVENANCE_KEYS

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_SHARD_INDEX_FILE = "model.safetensors.index.json"
HF_PICKLE_WEIGHTS_FILE = "pytorch_model.bin"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
HF_CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves the template
HF_GENERATION_CONFIG_FILE = "generation_config.json"
HF_MODEL_CARD_FILE = "README.md"
HF_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
HF_HIDDEN_ACT = "silu"
HF_ROPE_TYPE = "default"
HF_DTYPE = "float32"


# HF config fields that must hold exactly these values for our model to represent the checkpoint.
_REQUIRED_HF_VALUES = {"hidden_act": HF_HIDDEN_ACT, "attention_bias": False, "mlp_bias": False, "rope_scaling": None}
_IGNORED_TENSORS = ("model.rotary_emb.inv_freq",)  # a buffer old transformers versions saved
_LAYER = re.compile(r"model\.layers\.(\d+)\.")  # a tensor name's layer number


# --- export -------------------------------------------------------------------------------


def hf_config(ckpt: Checkpoint) -> dict:
    """config.json: every ModelConfig field plus what transformers needs, plus provenance."""
    cfg = ckpt.config
    out = {
        "architectures": [HF_ARCHITECTURE_CLASS],
        "model_type": llamacpp_architecture(HF_ARCHITECTURE_CLASS),
        **cfg.to_dict(),
        "head_dim": cfg.head_dim,
        "hidden_act": HF_HIDDEN_ACT,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": HF_ROPE_TYPE, "rope_theta": cfg.rope_theta},
        "pad_token_id": cfg.eos_token_id,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": HF_DTYPE,
        "dtype": HF_DTYPE,
        "shiptwo_version": __version__,
    }
    out.update({k: ckpt.provenance[k] for k in PROVENANCE_KEYS})
    return out


def hf_tokenizer_config(ckpt: Checkpoint, tok: BPETokenizer) -> dict:
    cfg = ckpt.config
    out = {
        "tokenizer_class": HF_TOKENIZER_CLASS,
        "bos_token": tok.tok.id_to_token(cfg.bos_token_id),
        "eos_token": tok.tok.id_to_token(cfg.eos_token_id),
        "pad_token": tok.tok.id_to_token(cfg.eos_token_id),
        "model_max_length": cfg.max_position_embeddings,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    if ckpt.chat_template is not None:
        out["chat_template"] = ckpt.chat_template
    return out


def _model_card(ckpt: Checkpoint) -> str:
    p = ckpt.provenance
    cfg = ckpt.config
    return (
        f"---\nlicense: {p[META_LICENSE]}\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n\n"
        f"# shiptwo LLaMA model\n\n"
        f"A {cfg.num_parameters():,}-parameter `LlamaForCausalLM` exported by shiptwo {__version__}.\n\n"
        f"- License: {p[META_LICENSE]}\n- Training data: {p[META_DATA_SOURCE]}\n"
        f"- Training data license: {p[META_DATA_LICENSE]}\n"
    )


def export_hf(ckpt: Checkpoint, out_dir: str | Path) -> Path:
    """Write `ckpt` as a Hugging Face directory (F32 weights) and return its path."""
    out_dir = Path(out_dir)
    missing = missing_provenance(ckpt.provenance)
    if missing:
        raise ShiptwoError(f"{ckpt.path}: provenance field(s) {', '.join(missing)} missing; refusing to export")
    tok = ckpt.tokenizer()
    ckpt.build_model()  # the tensor contract holds before anything is written
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in ckpt.tensors.items()}
    weights = safetensors_bytes(tensors, {"format": "pt", **{k: ckpt.provenance[k] for k in PROVENANCE_KEYS}})
    try:
        with atomic_output_dir(out_dir, HF_CONFIG_FILE) as tmp:
            atomic_write_json(tmp / HF_CONFIG_FILE, hf_config(ckpt))
            atomic_write_bytes(tmp / HF_WEIGHTS_FILE, weights)
            atomic_write_text(tmp / HF_TOKENIZER_FILE, ckpt.tokenizer_json)
            atomic_write_json(tmp / HF_TOKENIZER_CONFIG_FILE, hf_tokenizer_config(ckpt, tok))
            atomic_write_json(tmp / HF_GENERATION_CONFIG_FILE, {
                "bos_token_id": ckpt.config.bos_token_id,
                "eos_token_id": ckpt.config.eos_token_id,
                "pad_token_id": ckpt.config.eos_token_id,
                "do_sample": False,
            })
            atomic_write_text(tmp / HF_MODEL_CARD_FILE, _model_card(ckpt))
    except OSError as exc:
        raise ShiptwoError(f"{out_dir}: cannot write Hugging Face export ({exc})") from None
    return out_dir


# --- import -------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ShiptwoError(f"{path}: missing file {path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShiptwoError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ShiptwoError(f"{path}: expected a JSON object")
    return data


def _single_id(hf: dict, key: str, source: str) -> int:
    value = hf.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ShiptwoError(f"{source}: field {key} must be one token id, got {value!r}")
    return value


def config_from_hf(hf: dict, source: str) -> ModelConfig:
    """ModelConfig from a Hugging Face LLaMA config; anything we cannot represent is refused by name."""
    classes = hf.get("architectures")
    if not isinstance(classes, list) or len(classes) != 1 or not isinstance(classes[0], str):
        raise ShiptwoError(f"{source}: field architectures must name one class, got {classes!r}")
    try:
        llamacpp_architecture(classes[0])
    except ShiptwoError as exc:
        raise ShiptwoError(f"{source}: {exc}") from None
    if hf.get("model_type") != ARCHITECTURE:
        raise ShiptwoError(f"{source}: unsupported model_type {hf.get('model_type')!r} (only {ARCHITECTURE!r})")
    for key, want in _REQUIRED_HF_VALUES.items():
        if key in hf and hf[key] != want:
            raise ShiptwoError(f"{source}: unsupported {key}={hf[key]!r} (only {want!r})")
    rope_theta = hf.get("rope_theta")
    rope = hf.get("rope_parameters")
    if rope is not None:
        if not isinstance(rope, dict) or rope.get("rope_type", HF_ROPE_TYPE) != HF_ROPE_TYPE:
            raise ShiptwoError(f"{source}: unsupported rope_parameters {rope!r} (only rope_type {HF_ROPE_TYPE!r})")
        extra = sorted(set(rope) - {"rope_type", "rope_theta"})
        if extra:
            raise ShiptwoError(f"{source}: unsupported rope_parameters field(s) {', '.join(extra)}")
        rope_theta = rope.get("rope_theta", rope_theta)
    fields = {
        "vocab_size": hf.get("vocab_size"),
        "hidden_size": hf.get("hidden_size"),
        "intermediate_size": hf.get("intermediate_size"),
        "num_hidden_layers": hf.get("num_hidden_layers"),
        "num_attention_heads": hf.get("num_attention_heads"),
        "num_key_value_heads": hf.get("num_key_value_heads", hf.get("num_attention_heads")),
        "max_position_embeddings": hf.get("max_position_embeddings"),
        "rope_theta": rope_theta,
        "rms_norm_eps": hf.get("rms_norm_eps"),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False),  # LlamaConfig's default
    }
    absent = [k for k, v in fields.items() if v is None]
    if absent:
        raise ShiptwoError(f"{source}: missing field(s) {', '.join(absent)}")
    fields["bos_token_id"] = _single_id(hf, "bos_token_id", source)
    fields["eos_token_id"] = _single_id(hf, "eos_token_id", source)
    config = ModelConfig.from_dict(fields, source=source)
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != config.head_dim:
        raise ShiptwoError(
            f"{source}: unsupported head_dim {head_dim} (our model has hidden_size/num_attention_heads = {config.head_dim})"
        )
    return config


def _chat_template(src: Path, tok_config: dict) -> str | None:
    template = tok_config.get("chat_template")
    jinja = src / HF_CHAT_TEMPLATE_FILE
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if template is not None and not isinstance(template, str):
        raise ShiptwoError(f"{src / HF_TOKENIZER_CONFIG_FILE}: only a single string chat_template is supported")
    return template


def read_hf(src: str | Path, provenance: dict | None = None) -> Checkpoint:
    """Read a LLaMA Hugging Face directory into a Checkpoint (F32); `provenance` overrides config.json."""
    src = Path(src)
    if not src.is_dir():
        raise ShiptwoError(f"{src}: not a directory")
    hf = _read_json(src / HF_CONFIG_FILE)
    config = config_from_hf(hf, str(src / HF_CONFIG_FILE))
    prov = {k: hf[k] for k in PROVENANCE_KEYS if isinstance(hf.get(k), str) and hf[k]}
    prov.update({k: v for k, v in (provenance or {}).items() if v})
    for key in PROVENANCE_KEYS:
        if not prov.get(key):
            raise ShiptwoError(
                f"{src / HF_CONFIG_FILE}: provenance field {key} missing "
                f"(record it in config.json or pass --{key.replace('_', '-')})"
            )
    weights = src / HF_WEIGHTS_FILE
    if not weights.is_file():
        if (src / HF_SHARD_INDEX_FILE).is_file():
            raise ShiptwoError(f"{src}: sharded weights ({HF_SHARD_INDEX_FILE}) are not supported; save with one {HF_WEIGHTS_FILE}")
        if (src / HF_PICKLE_WEIGHTS_FILE).is_file():
            raise ShiptwoError(f"{src}: pickle weights ({HF_PICKLE_WEIGHTS_FILE}) are refused; save as {HF_WEIGHTS_FILE}")
        raise ShiptwoError(f"{weights}: missing file {HF_WEIGHTS_FILE}")
    tensors = _load_weights(weights)
    for name in _IGNORED_TENSORS:
        tensors.pop(name, None)
    if config.tie_word_embeddings and "lm_head.weight" in tensors:
        if not torch.equal(tensors["lm_head.weight"], tensors.get("model.embed_tokens.weight", torch.empty(0))):
            raise ShiptwoError(f"{weights}: tie_word_embeddings is true but lm_head.weight differs from the embeddings")
        del tensors["lm_head.weight"]
    tok_path = src / HF_TOKENIZER_FILE
    if not tok_path.is_file():
        raise ShiptwoError(f"{tok_path}: missing file {HF_TOKENIZER_FILE}")
    tok = BPETokenizer.from_file(tok_path)
    if tok.vocab_size > config.vocab_size:
        raise ShiptwoError(f"{tok_path}: tokenizer has {tok.vocab_size} tokens, config vocab_size is {config.vocab_size}")
    tok_config = _read_json(src / HF_TOKENIZER_CONFIG_FILE) if (src / HF_TOKENIZER_CONFIG_FILE).is_file() else {}
    ckpt = Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer_json=tok.to_json(),
        provenance={k: prov[k] for k in PROVENANCE_KEYS},
        training={"imported_from": str(src)},
        chat_template=_chat_template(src, tok_config),
        path=src,
    )
    layers = {int(m.group(1)) for name in tensors if (m := _LAYER.match(name))}
    if len(layers) != config.num_hidden_layers or layers != set(range(config.num_hidden_layers)):
        # before build_model, which builds every layer the config names: 2^40 of them took all memory
        raise ShiptwoError(f"{src / HF_CONFIG_FILE}: num_hidden_layers is {config.num_hidden_layers} but {weights} "
                           f"holds tensors of {len(layers)} layer(s)")
    ckpt.build_model()  # strict tensor contract: missing, extra or misshapen tensors are named
    bad = finite_defects(tensors)
    if bad:
        raise ShiptwoError(f"{weights}: tensor {bad[0]} contains NaN or Inf")
    return ckpt


def import_hf(src: str | Path, out: str | Path, provenance: dict | None = None) -> Path:
    """Hugging Face directory -> native checkpoint file (written atomically)."""
    return save_checkpoint(read_hf(src, provenance), out)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    _, tensors = read_safetensors(path)
    return {k: v.to(torch.float32) for k, v in tensors.items()}
