"""Our GGUF reader: parse and validate a llama GGUF the way llama.cpp would, and read its tensors.

Validation checks what llama.cpp refuses (architecture name, hyper-parameters, rope dims, the
tokenizer with its merges and a pre-tokenizer we can reproduce) plus, for our own exports, the
provenance keys. Tensors are dequantized with `gguf.quants` and the Q/K permutation undone, so
the quantization round-trip can be measured from the file itself; `gguf_import` turns a file
into a Checkpoint.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.model.config import ModelConfig
from shiptwo.formats.gguf_header import check_gguf_header
from shiptwo.formats.gguf_vocab import vocabulary_problems
from shiptwo.formats.names import gguf_to_hf, hf_class_for, qk_heads, unpermute_qk

from shiptwo.formats.names import GGUF_DATASET_ID, GGUF_DATASET_LICENSE, GGUF_MAGIC, GGUF_TOKENIZER_MODEL, GGUF_TOKENIZER_PRE
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE, PROVENANCE_KEYS

K = gguf.Keys
# tokenizer.ggml.pre names whose split a Hugging Face pre-tokenizer reproduces: GPT-2's regex
# alone, or (llama.cpp's smollm/starcoder family) every digit split off first, then GPT-2's regex.
GGUF_PRE_DIGITS = ("smollm", "starcoder", "refact", "codeshell")
GGUF_PRE_SUPPORTED = (GGUF_TOKENIZER_PRE, *GGUF_PRE_DIGITS)
_BLOCK = re.compile(r"blk\.(\d+)\.")  # a GGUF tensor name's block number


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
        check_gguf_header(path)  # gguf-py trusts the file's counts: a hostile one would exhaust memory
        reader = gguf.GGUFReader(path, "r")
        fields = {name: _contents(path, name, f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    except ShiptwoError:
        raise
    except Exception as exc:  # the reader raises whatever numpy/struct raise on corrupt bytes
        raise ShiptwoError(f"{path}: corrupt GGUF file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return GGUFFile(path, fields, reader)


def _contents(path: Path, name: str, field) -> object:
    """A field's value as plain Python; a string in it that is not UTF-8 (gguf-py cannot decode it,
    llama.cpp keeps the bytes) is named by the field and its index."""
    try:
        return field.contents()
    except UnicodeDecodeError:
        for n, idx in enumerate(field.data):
            raw = field.parts[idx].tobytes()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                where = "" if field.types[0] != gguf.GGUFValueType.ARRAY else \
                    f" token {n}" if name == K.Tokenizer.LIST else f" entry {n}"
                raise ShiptwoError(f"{path}: invalid GGUF: {name}:{where} {raw[:40]!r} is not valid UTF-8") from None
        raise


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
        K.Attention.HEAD_COUNT, K.Attention.HEAD_COUNT_KV,
        K.Attention.LAYERNORM_RMS_EPS, K.Rope.FREQ_BASE, K.Rope.DIMENSION_COUNT,
    )


def _hparam_type_problems(g: GGUFFile) -> list[str]:
    """Each hyper-parameter present of the kind llama.cpp reads it as (a positive integer; a positive,
    finite float), the vocabulary size too; the chat template a string; the tokens and merges lists of
    strings, the token types of integers. A string, an array (llama.cpp's per-layer form, which our
    runtime does not have) or a zero head count is named here, not left to raise downstream."""
    floats = {g.key(K.Attention.LAYERNORM_RMS_EPS), g.key(K.Rope.FREQ_BASE)}
    out = []
    for key in [g.key(k) for k in _hparam_keys()] + [g.key(K.LLM.VOCAB_SIZE)]:
        if key not in g.fields:
            continue
        v = g.fields[key]
        if key in floats and not (type(v) is float and math.isfinite(v) and v > 0):
            out.append(f"{key}={v!r} is not a positive float")
        elif key not in floats and not (type(v) is int and v > 0):
            out.append(f"{key}={v!r} is not a positive integer")
    template = g.fields.get(K.Tokenizer.CHAT_TEMPLATE)
    if template is not None and not isinstance(template, str):
        out.append(f"{K.Tokenizer.CHAT_TEMPLATE}={template!r} is not a string")
    return out + _mistyped_tokenizer_lists(g)


def _mistyped_tokenizer_lists(g: GGUFFile) -> list[str]:
    """The tokens and merges lists of strings, the token types of integers, where present."""
    out = []
    for key, kind in ((K.Tokenizer.LIST, str), (K.Tokenizer.MERGES, str), (K.Tokenizer.TOKEN_TYPE, int)):
        v = g.fields.get(key)  # merges of integers raised an AttributeError when the tokenizer was rebuilt
        if v is not None and not (isinstance(v, list) and all(type(x) is kind for x in v)):
            out.append(f"{key} is not a list of {'strings' if kind is str else 'integers'}")
    return out


def _block_count_problems(g: GGUFFile) -> list[str]:
    """The block count must be the blocks the tensors hold (llama.cpp refuses a missing or extra
    tensor): a count of 2^40 would otherwise build a model of 2^40 layers before any tensor is read."""
    blocks = {int(m.group(1)) for t in g.reader.tensors if (m := _BLOCK.match(t.name))}
    n = g.fields[g.key(K.LLM.BLOCK_COUNT)]
    if len(blocks) != n or blocks != set(range(n)):  # the set is built only for a count the file holds
        return [f"{g.key(K.LLM.BLOCK_COUNT)}={n} but the file holds tensors of {len(blocks)} block(s)"
                + (f" numbered up to {max(blocks)}" if blocks else "")]
    return []


def gguf_problems(g: GGUFFile, require_provenance: bool = True) -> list[str]:
    """Everything llama.cpp (or, with `require_provenance`, our provenance rule) would refuse in
    this file, and a pre-tokenizer we cannot reproduce; empty when fine."""
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
    mistyped = _hparam_type_problems(g)
    problems += mistyped
    if not missing and not mistyped:
        n_embd, n_head = g.fields[g.key(K.LLM.EMBEDDING_LENGTH)], g.fields[g.key(K.Attention.HEAD_COUNT)]
        rope = g.fields[g.key(K.Rope.DIMENSION_COUNT)]
        if n_embd % n_head or rope != n_embd // n_head:
            problems.append(f"{g.key(K.Rope.DIMENSION_COUNT)}={rope} is not head_dim ({n_embd}/{n_head})")
        problems += _block_count_problems(g)
    tokens = g.fields.get(K.Tokenizer.LIST) or []
    types = g.fields.get(K.Tokenizer.TOKEN_TYPE) or []
    if g.fields.get(K.Tokenizer.MODEL) != GGUF_TOKENIZER_MODEL:
        problems.append(f"{K.Tokenizer.MODEL} is {g.fields.get(K.Tokenizer.MODEL)!r}, expected {GGUF_TOKENIZER_MODEL!r}")
    if g.fields.get(K.Tokenizer.PRE) not in GGUF_PRE_SUPPORTED:
        problems.append(f"{K.Tokenizer.PRE} is {g.fields.get(K.Tokenizer.PRE)!r}, supported: {', '.join(GGUF_PRE_SUPPORTED)}")
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
    if len(types) == len(tokens) and not _mistyped_tokenizer_lists(g):
        problems += vocabulary_problems(tokens, types, g.fields.get(K.Tokenizer.MERGES) or [])
    vocab = g.fields.get(g.key(K.LLM.VOCAB_SIZE))
    if tokens and type(vocab) is int and vocab != len(tokens):  # a mistyped one is named above
        problems.append(f"{g.key(K.LLM.VOCAB_SIZE)}={vocab} but the tokenizer has {len(tokens)} tokens")
    if require_provenance:
        prov = provenance_of(g)
        problems += [f"provenance field {k} missing" for k in PROVENANCE_KEYS if k not in prov]
    return problems


def validate_gguf(path: str | Path, require_provenance: bool = True) -> GGUFFile:
    """Read and validate; raises one ShiptwoError listing every problem."""
    g = read_gguf(path)
    problems = gguf_problems(g, require_provenance)
    if problems:
        raise ShiptwoError(f"{g.path}: invalid GGUF: {'; '.join(problems)}")
    return g


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
        heads = qk_heads(name, config)
        if heads:
            arr = unpermute_qk(arr, heads)
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    return out


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


def tensor_types(path: str | Path) -> dict[str, str]:
    """The stored type of every tensor in the file, by GGUF name (what a quantizer actually wrote)."""
    return {t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in read_gguf(path).reader.tensors}


def worst_cosine(cosines: dict[str, float], threshold: float) -> tuple[str, float, list[str]]:
    """(worst tensor, its cosine, tensors not at or above `threshold`) of quantization_cosines'
    result: a NaN cosine (a tensor that reads back non-finite) is the worst and below any
    threshold, never skipped as `min(key=)` and `c < threshold` would. ShiptwoError when empty."""
    if not cosines:
        raise ShiptwoError("no tensor cosine to judge")
    nan = sorted(t for t, c in cosines.items() if math.isnan(c))
    worst = nan[0] if nan else min(cosines, key=cosines.get)
    return worst, cosines[worst], sorted(t for t, c in cosines.items() if not c >= threshold)
