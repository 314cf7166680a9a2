"""Our GGUF reader: validate a llama GGUF the way llama.cpp would, and load it as a Checkpoint.

Validation checks what llama.cpp refuses (architecture name, hyper-parameters, rope dims, the
tokenizer with its merges) plus our provenance keys. Loading dequantizes with `gguf.quants`
and undoes the Q/K permutation, so the runtime can run a GGUF and the quantization round-trip
can be measured from the file itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.model.llama import ModelConfig
from shiptwo.formats.names import gguf_to_hf, hf_class_for, is_key, is_query, unpermute_qk

from shiptwo.formats.names import GGUF_DATASET_ID, GGUF_DATASET_LICENSE, GGUF_MAGIC, GGUF_TOKENIZER_MODEL, GGUF_TOKENIZER_PRE
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE, PROVENANCE_KEYS

K = gguf.Keys


@dataclass
class GGUFFile:
    """A parsed GGUF: plain-Python key values and the reader (tensors stay memory-mapped)."""

    path: Path
    fields: dict
    reader: gguf.GGUFReader

    @property
    def arch(self) -> str:
        return self.fields.get(K.General.ARCHITECTURE, "")

    def key(self, template: str) -> str:
        return template.format(arch=self.arch)


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse the file; any malformation is one ShiptwoError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ShiptwoError(f"{path}: no such GGUF file")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise ShiptwoError(f"{path}: not a GGUF file (magic {magic!r})")
        reader = gguf.GGUFReader(path, "r")
        fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    except ShiptwoError:
        raise
    except Exception as exc:  # the reader raises whatever numpy/struct raise on corrupt bytes
        raise ShiptwoError(f"{path}: corrupt GGUF file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return GGUFFile(path, fields, reader)


def provenance_of(g: GGUFFile) -> dict[str, str]:
    """license / data_source / data_license from the general.* keys (absent ones omitted)."""
    ds = GGUF_DATASET_ID
    raw = {
        META_LICENSE: g.fields.get(K.General.LICENSE),
        META_DATA_SOURCE: g.fields.get(K.General.DATASET_NAME.format(id=ds)),
        META_DATA_LICENSE: g.fields.get(GGUF_DATASET_LICENSE.format(id=ds)),
    }
    return {k: v for k, v in raw.items() if isinstance(v, str) and v}


def _hparam_keys() -> tuple[str, ...]:
    return (
        K.LLM.CONTEXT_LENGTH, K.LLM.EMBEDDING_LENGTH, K.LLM.BLOCK_COUNT, K.LLM.FEED_FORWARD_LENGTH,
        K.LLM.VOCAB_SIZE, K.Attention.HEAD_COUNT, K.Attention.HEAD_COUNT_KV,
        K.Attention.LAYERNORM_RMS_EPS, K.Rope.FREQ_BASE, K.Rope.DIMENSION_COUNT,
    )


def gguf_problems(g: GGUFFile) -> list[str]:
    """Everything llama.cpp (or our provenance rule) would refuse in this file; empty when fine."""
    problems = []
    try:
        hf_class_for(g.arch)
    except ShiptwoError:
        return [f"unknown model architecture {g.arch!r} in {K.General.ARCHITECTURE} (llama.cpp expects 'llama')"]
    for key in (K.General.FILE_TYPE, K.General.NAME):
        if key not in g.fields:
            problems.append(f"missing key {key}")
    missing = [g.key(k) for k in _hparam_keys() if g.key(k) not in g.fields]
    problems += [f"missing key {k}" for k in missing]
    if not missing:
        n_embd, n_head = g.fields[g.key(K.LLM.EMBEDDING_LENGTH)], g.fields[g.key(K.Attention.HEAD_COUNT)]
        rope = g.fields[g.key(K.Rope.DIMENSION_COUNT)]
        if not n_head or n_embd % n_head or rope != n_embd // n_head:
            problems.append(f"{g.key(K.Rope.DIMENSION_COUNT)}={rope} is not head_dim ({n_embd}/{n_head})")
    tokens = g.fields.get(K.Tokenizer.LIST) or []
    types = g.fields.get(K.Tokenizer.TOKEN_TYPE) or []
    if g.fields.get(K.Tokenizer.MODEL) != GGUF_TOKENIZER_MODEL:
        problems.append(f"{K.Tokenizer.MODEL} is {g.fields.get(K.Tokenizer.MODEL)!r}, expected {GGUF_TOKENIZER_MODEL!r}")
    if g.fields.get(K.Tokenizer.PRE) != GGUF_TOKENIZER_PRE:
        problems.append(f"{K.Tokenizer.PRE} is {g.fields.get(K.Tokenizer.PRE)!r}, expected {GGUF_TOKENIZER_PRE!r}")
    if not tokens:
        problems.append(f"missing tokenizer ({K.Tokenizer.LIST})")
    if len(types) != len(tokens):
        problems.append(f"{K.Tokenizer.TOKEN_TYPE} has {len(types)} entries for {len(tokens)} tokens")
    if not g.fields.get(K.Tokenizer.MERGES):
        problems.append(f"missing or empty {K.Tokenizer.MERGES} (llama.cpp cannot build a BPE tokenizer)")
    for key in (K.Tokenizer.BOS_ID, K.Tokenizer.EOS_ID):
        tid = g.fields.get(key)
        if not isinstance(tid, int) or not 0 <= tid < len(tokens):
            problems.append(f"{key}={tid!r} is not a token id")
        elif len(types) == len(tokens) and types[tid] != gguf.TokenType.CONTROL:
            problems.append(f"{key}={tid} is not a CONTROL token")
    vocab = g.fields.get(g.key(K.LLM.VOCAB_SIZE))
    if tokens and vocab is not None and vocab != len(tokens):
        problems.append(f"{g.key(K.LLM.VOCAB_SIZE)}={vocab} but the tokenizer has {len(tokens)} tokens")
    prov = provenance_of(g)
    problems += [f"provenance field {k} missing" for k in PROVENANCE_KEYS if k not in prov]
    return problems


def validate_gguf(path: str | Path) -> GGUFFile:
    """Read and validate; raises one ShiptwoError listing every problem."""
    g = read_gguf(path)
    problems = gguf_problems(g)
    if problems:
        raise ShiptwoError(f"{g.path}: invalid GGUF: {'; '.join(problems)}")
    return g


def config_of(g: GGUFFile) -> ModelConfig:
    f, k = g.fields, g.key
    names = {t.name for t in g.reader.tensors}
    return ModelConfig.from_dict({
        "vocab_size": f[k(K.LLM.VOCAB_SIZE)],
        "hidden_size": f[k(K.LLM.EMBEDDING_LENGTH)],
        "intermediate_size": f[k(K.LLM.FEED_FORWARD_LENGTH)],
        "num_hidden_layers": f[k(K.LLM.BLOCK_COUNT)],
        "num_attention_heads": f[k(K.Attention.HEAD_COUNT)],
        "num_key_value_heads": f[k(K.Attention.HEAD_COUNT_KV)],
        "max_position_embeddings": f[k(K.LLM.CONTEXT_LENGTH)],
        # float32 in the file: round to float32's 7 significant digits to get the written value back
        "rope_theta": float(np.format_float_positional(np.float32(f[k(K.Rope.FREQ_BASE)]), unique=True)),
        "rms_norm_eps": float(np.format_float_scientific(np.float32(f[k(K.Attention.LAYERNORM_RMS_EPS)]), unique=True)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": f[K.Tokenizer.BOS_ID],
        "eos_token_id": f[K.Tokenizer.EOS_ID],
    }, source=f"{g.path}: hyper-parameters")


def tokenizer_json_of(g: GGUFFile) -> str:
    """Rebuild a byte-level BPE tokenizer.json from tokens, merges and token types."""
    tokens, types = g.fields[K.Tokenizer.LIST], g.fields[K.Tokenizer.TOKEN_TYPE]
    merges = [tuple(m.split(" ", 1)) for m in g.fields[K.Tokenizer.MERGES]]
    if any(len(m) != 2 for m in merges):
        raise ShiptwoError(f"{g.path}: malformed {K.Tokenizer.MERGES} entry")
    vocab = {t: i for i, t in enumerate(tokens) if types[i] != gguf.TokenType.UNUSED}
    try:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ShiptwoError(f"{g.path}: tokenizer cannot be rebuilt ({str(exc).splitlines()[0]})") from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for i, t in enumerate(tokens) if types[i] == gguf.TokenType.CONTROL])
    return tok.to_str()


def read_tensors(g: GGUFFile, config: ModelConfig) -> dict[str, torch.Tensor]:
    """All tensors as F32 torch tensors under our (Hugging Face) names, Q/K un-permuted."""
    out = {}
    for t in g.reader.tensors:
        try:
            name = gguf_to_hf(t.name)
        except ShiptwoError as exc:
            raise ShiptwoError(f"{g.path}: {exc}") from None
        try:
            qtype = gguf.GGMLQuantizationType(t.tensor_type)
            arr = gguf.quants.dequantize(np.asarray(t.data), qtype).astype(np.float32, copy=False)
            arr = arr.reshape(tuple(int(d) for d in reversed(t.shape)))
        except Exception as exc:
            raise ShiptwoError(f"{g.path}: tensor {t.name} cannot be decoded ({type(exc).__name__}: {exc})") from None
        if is_query(name):
            arr = unpermute_qk(arr, config.num_attention_heads)
        elif is_key(name):
            arr = unpermute_qk(arr, config.num_key_value_heads)
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    return out


def load_gguf(path: str | Path, check_finite: bool = True) -> Checkpoint:
    """A validated llama GGUF as a Checkpoint (F32 tensors), ready for `build_model()`."""
    g = validate_gguf(path)
    try:
        config = config_of(g)
    except (KeyError, TypeError) as exc:
        raise ShiptwoError(f"{g.path}: bad hyper-parameter ({exc})") from None
    if config.head_dim % 2 or config.num_attention_heads % config.num_key_value_heads:
        raise ShiptwoError(f"{g.path}: inconsistent head counts")
    tensors = read_tensors(g, config)
    ckpt = Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer_json=tokenizer_json_of(g),
        provenance=provenance_of(g),
        chat_template=g.fields.get(K.Tokenizer.CHAT_TEMPLATE),
        path=g.path,
    )
    ckpt.build_model()  # strict tensor contract, names the file
    if check_finite:
        for name, t in tensors.items():
            if not torch.isfinite(t).all():
                raise ShiptwoError(f"{g.path}: tensor {name} contains NaN or Inf")
    ckpt.tokenizer()
    return ckpt


def quantization_cosines(original: Checkpoint, path: str | Path) -> dict[str, float]:
    """Per-tensor cosine between `original` and the weights read back from the GGUF file."""
    g = validate_gguf(path)
    back = read_tensors(g, original.config)
    missing = sorted(set(original.tensors) - set(back))
    if missing:
        raise ShiptwoError(f"{g.path}: tensor(s) {', '.join(missing[:5])} missing")
    out = {}
    for name, ref in original.tensors.items():
        a, b = ref.double().flatten(), back[name].double().flatten()
        if a.shape != b.shape:
            raise ShiptwoError(f"{g.path}: tensor {name} has {b.numel()} elements, original {a.numel()}")
        out[name] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return out
