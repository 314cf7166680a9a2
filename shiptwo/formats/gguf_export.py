"""GGUF writer for llama.cpp: hyper-parameters, the byte-level BPE tokenizer, provenance and the
tensors (Q/K permuted to llama.cpp's rotary layout; F32, F16 or Q8_0, 1-D tensors always F32).

`export_gguf` refuses, before writing anything, a tokenizer feature the file cannot carry (a
normalizer, say: llama.cpp and our import would split text into other ids) and a vocabulary
that llama.cpp and our reader would read differently (the reader's own check,
`gguf_vocab.vocabulary_problems`), then writes to a temp file, reads it back, validates it as
the reader does (the gguf writer silently drops empty arrays) and only then renames it over the
target: it never leaves a file our reader refuses.
As llama.cpp's converter does, a Q8_0 export stores a matrix whose rows are not a multiple of 32
as F16; unlike it, the fallback is logged and written into general.description.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gguf
import numpy as np
import torch

from shiptwo import __version__
from shiptwo.model.checkpoint import Checkpoint, missing_provenance
from shiptwo.model.tokenizer import byte_level_bpe
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_output_file
from shiptwo.formats.gguf_import import gguf_pre_name
from shiptwo.formats.gguf_load import gguf_problems, read_gguf
from shiptwo.formats.gguf_vocab import vocabulary_problems
from shiptwo.formats.names import hf_to_gguf, llamacpp_architecture, permute_qk, qk_heads

from shiptwo.formats.names import GGUF_DATASET_ID, GGUF_DATASET_LICENSE, GGUF_TOKENIZER_MODEL, HF_ARCHITECTURE_CLASS
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE

GGUF_DTYPES = ("f32", "f16", "q8_0")
GGUF_QUANT_BLOCK = 32  # Q8_0 block length: row length must be a multiple


# BPE options that change how text splits into ids; our import rebuilds the tokenizer without them.
_BPE_OPTIONS = ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges")
_QTYPE = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
log = logging.getLogger(__name__)
_FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


def tensor_qtype(shape: tuple[int, ...], dtype: str) -> gguf.GGMLQuantizationType:
    """The stored type of a tensor: 1-D always F32; Q8_0 rows must be whole blocks, else F16."""
    if len(shape) == 1:
        return gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and shape[-1] % GGUF_QUANT_BLOCK:
        return gguf.GGMLQuantizationType.F16
    return _QTYPE[dtype]


def f16_fallbacks(ckpt: Checkpoint, dtype: str) -> list[str]:
    return [n for n, s in ckpt.config.tensor_shapes().items()
            if len(s) > 1 and tensor_qtype(s, dtype) != _QTYPE[dtype]]


def _add_metadata(w: gguf.GGUFWriter, ckpt: Checkpoint, dtype: str) -> None:
    cfg = ckpt.config
    w.add_name(f"shiptwo-llama-{cfg.num_parameters()}")
    fallbacks = f16_fallbacks(ckpt, dtype)
    note = f"; F16 instead of Q8_0 (rows not a multiple of {GGUF_QUANT_BLOCK}): {', '.join(fallbacks)}" if fallbacks else ""
    if fallbacks:
        log.warning("%s: %d tensor(s) stored as F16, not Q8_0: %s", ckpt.path, len(fallbacks), ", ".join(fallbacks))
    w.add_description(f"exported by shiptwo {__version__} as {dtype}{note}")
    w.add_file_type(_FILE_TYPE[dtype])
    if dtype == "q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_license(ckpt.provenance[META_LICENSE])
    w.add_dataset_count(1)
    w.add_dataset_name(GGUF_DATASET_ID, ckpt.provenance[META_DATA_SOURCE])
    w.add_string(GGUF_DATASET_LICENSE.format(id=GGUF_DATASET_ID), ckpt.provenance[META_DATA_LICENSE])
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)


def uncarried_tokenizer_features(tokenizer_json: str) -> list[str]:
    """What a GGUF cannot carry from this tokenizer.json: llama.cpp and our import (which rebuilds
    `byte_level_bpe`) would drop it silently and encode or decode text otherwise."""
    spec, ours = json.loads(tokenizer_json), json.loads(byte_level_bpe().to_str())
    model, out = spec.get("model") or {}, []
    if model.get("type") != "BPE":
        return [f"model type {model.get('type')!r} (GGUF's 'gpt2' tokenizer is byte-level BPE)"]
    if spec.get("normalizer"):
        out.append(f"normalizer {spec['normalizer'].get('type')!r} (llama.cpp and our import apply none)")
    decoder = (spec.get("decoder") or {}).get("type")
    if decoder != ours["decoder"]["type"]:
        out.append(f"decoder {decoder!r} (llama.cpp and our import decode byte-level)")
    for key in _BPE_OPTIONS:
        if (model.get(key) or None) != (ours["model"][key] or None):
            out.append(f"model.{key}={model[key]!r} (llama.cpp and our import use {ours['model'][key]!r})")
    for t in spec.get("added_tokens", []):
        flags = [f for f in ("lstrip", "rstrip", "single_word") if t.get(f)]
        if flags:
            out.append(f"added token {t['id']} {t['content']!r} has {'/'.join(flags)} "
                       "(llama.cpp and our import match it as written)")
    return out


def tokenizer_arrays(ckpt: Checkpoint) -> tuple[list[str], list[int], list[str]]:
    """tokens, token types and merges ("a b") from the embedded tokenizer.json, padded to vocab_size."""
    spec = json.loads(ckpt.tokenizer_json)
    vocab: dict[str, int] = spec["model"]["vocab"]
    special = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    added = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
    by_id = {i: t for t, i in vocab.items()} | added
    n = ckpt.config.vocab_size
    if max(by_id) >= n:
        raise ShiptwoError(f"{ckpt.path}: tokenizer id {max(by_id)} exceeds vocab_size {n}")
    tokens, types = [], []
    for i in range(n):
        tok = by_id.get(i)
        if tok is None:  # padding rows of the embedding, as convert_hf_to_gguf writes them
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(tok)  # an added token that is not special is matched whole, as llama.cpp matches USER_DEFINED
            types.append(gguf.TokenType.CONTROL if tok in special else gguf.TokenType.USER_DEFINED if i in added
                         else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    return tokens, types, merges


def _add_tokenizer(w: gguf.GGUFWriter, ckpt: Checkpoint, with_merges: bool) -> None:
    tokens, types, merges = tokenizer_arrays(ckpt)
    w.add_tokenizer_model(GGUF_TOKENIZER_MODEL)
    w.add_tokenizer_pre(gguf_pre_name(ckpt.tokenizer_json))  # the split llama.cpp must reproduce
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges if with_merges else [])  # [] is dropped by the writer: the trap
    w.add_bos_token_id(ckpt.config.bos_token_id)
    w.add_eos_token_id(ckpt.config.eos_token_id)
    w.add_pad_token_id(ckpt.config.eos_token_id)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    if ckpt.chat_template is not None:
        w.add_chat_template(ckpt.chat_template)


def _add_tensors(w: gguf.GGUFWriter, ckpt: Checkpoint, dtype: str, permute: bool) -> None:
    cfg = ckpt.config
    for name in cfg.tensor_shapes():
        arr = ckpt.tensors[name].detach().to(torch.float32).cpu().numpy()
        heads = qk_heads(name, cfg)
        if permute and heads:
            arr = permute_qk(arr, heads)
        qtype = tensor_qtype(arr.shape, dtype)
        data = gguf.quants.quantize(np.ascontiguousarray(arr), qtype)
        w.add_tensor(hf_to_gguf(name), data, raw_dtype=qtype if qtype == gguf.GGMLQuantizationType.Q8_0 else None)


def write_gguf(
    ckpt: Checkpoint,
    path: str | Path,
    dtype: str = "f32",
    *,
    architecture: str | None = None,
    with_tokenizer: bool = True,
    with_merges: bool = True,
    permute: bool = True,
) -> Path:
    """Write the GGUF without validating it. The keyword knobs exist only so tests can build the
    defective files a release must refuse (HF class as architecture, no tokenizer, no permutation)."""
    if dtype not in _QTYPE:
        raise ShiptwoError(f"gguf export: unknown dtype {dtype!r} (choose from {', '.join(GGUF_DTYPES)})")
    missing = missing_provenance(ckpt.provenance)
    if missing:
        raise ShiptwoError(f"{ckpt.path}: provenance field(s) {', '.join(missing)} missing; refusing to export")
    ckpt.build_model()  # tensor contract before writing
    arch = architecture or llamacpp_architecture(HF_ARCHITECTURE_CLASS)
    w = gguf.GGUFWriter(str(path), arch)
    try:
        _add_metadata(w, ckpt, dtype)
        if with_tokenizer:
            _add_tokenizer(w, ckpt, with_merges)
        _add_tensors(w, ckpt, dtype, permute)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return Path(path)


def export_gguf(ckpt: Checkpoint, path: str | Path, dtype: str = "f32") -> Path:
    """Write, read back and validate, then atomically move into place; returns the path."""
    path = Path(path)
    _refuse_if(uncarried_tokenizer_features(ckpt.tokenizer_json), path,
               f"GGUF cannot carry what the tokenizer of {ckpt.path or 'the checkpoint'} holds")
    _refuse_if(vocabulary_problems(*tokenizer_arrays(ckpt)), path,
               f"llama.cpp and shiptwo would read the tokenizer of {ckpt.path or 'the checkpoint'} differently")
    try:
        with atomic_output_file(path) as tmp:
            write_gguf(ckpt, tmp, dtype)
            g = read_gguf(tmp)
            _refuse_if(gguf_problems(g), path, "shiptwo's GGUF reader refuses it")
            _check_readback(g, ckpt, dtype, path)
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot write GGUF ({exc})") from None
    return path


def _refuse_if(problems: list[str], path: Path, why: str) -> None:
    """One error naming the target (not the temp file the reader saw) and every problem."""
    if problems:
        raise ShiptwoError(f"{path}: not written: {why}: {'; '.join(problems)}")


def _check_readback(g, ckpt: Checkpoint, dtype: str, path: Path) -> None:
    """The file holds exactly the tensors we meant to write, in the types we meant."""
    expected = {hf_to_gguf(n): s for n, s in ckpt.config.tensor_shapes().items()}
    got = {t.name: t for t in g.reader.tensors}
    if set(got) != set(expected):
        raise ShiptwoError(f"{path}: tensors read back differ from those written: {sorted(set(got) ^ set(expected))[:5]}")
    for name, shape in expected.items():
        t = got[name]
        if tuple(int(d) for d in reversed(t.shape)) != shape:
            raise ShiptwoError(f"{path}: tensor {name} reads back as {tuple(t.shape)} (ggml order), expected {shape}")
        want = tensor_qtype(shape, dtype)
        if t.tensor_type != want:
            raise ShiptwoError(f"{path}: tensor {name} reads back as {t.tensor_type.name}, expected {want.name}")
