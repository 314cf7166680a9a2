"""GGUF -> Checkpoint: import any LLaMA-architecture GGUF whose tensor types gguf-py can dequantize.

The config comes from the `llama.*` keys, the weights are dequantized to F32 with the Q/K
permutation undone (embeddings tied when `output.weight` is absent), and the tokenizer is
rebuilt as a Hugging Face tokenizer.json from `tokenizer.ggml.*`: tokens (an empty one named
`[EMPTY_<id>]` as llama.cpp names it; gguf_vocab refuses the rest of what llama.cpp reads
differently), merges, token types
(CONTROL -> special added tokens, USER_DEFINED -> added tokens), the pre-tokenizer named by
`tokenizer.ggml.pre`, and the chat template. Whatever our runtime would silently run
differently (another architecture, rope scaling, experts, a BOS the tokenizer must add, ...)
is refused by name instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gguf
import numpy as np
from tokenizers import AddedToken, pre_tokenizers

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_file
from shiptwo.formats.gguf_load import GGUFFile, provenance_of, read_tensors, validate_gguf
from shiptwo.formats.gguf_vocab import LLAMA_EMPTY_TOKEN, llama_token_texts, split_merge
from shiptwo.model.checkpoint import Checkpoint, finite_defects, missing_provenance, save_checkpoint
from shiptwo.model.config import ModelConfig
from shiptwo.model.tokenizer import byte_level_bpe

from shiptwo.formats.gguf_load import GGUF_PRE_DIGITS, GGUF_PRE_SUPPORTED
from shiptwo.formats.names import GGUF_TOKENIZER_PRE
from shiptwo.model.checkpoint import PROVENANCE_KEYS

K = gguf.Keys
log = logging.getLogger(__name__)

# llama.* keys our LLaMA implements, and the value each must hold when present (None: any value).
_UNDERSTOOD = {
    K.LLM.CONTEXT_LENGTH: None, K.LLM.EMBEDDING_LENGTH: None, K.LLM.BLOCK_COUNT: None,
    K.LLM.FEED_FORWARD_LENGTH: None, K.LLM.VOCAB_SIZE: None, K.Attention.HEAD_COUNT: None,
    K.Attention.HEAD_COUNT_KV: None, K.Attention.LAYERNORM_RMS_EPS: None, K.Rope.FREQ_BASE: None,
    K.Rope.DIMENSION_COUNT: None, K.Attention.KEY_LENGTH: "head_dim", K.Attention.VALUE_LENGTH: "head_dim",
    K.Rope.SCALING_TYPE: "none", K.LLM.EXPERT_COUNT: 0, K.LLM.EXPERT_USED_COUNT: 0,
}
# tokenizer.ggml flags whose `true` our tokenizer would not honour.
_REFUSED_TRUE = (K.Tokenizer.ADD_BOS, K.Tokenizer.ADD_EOS, K.Tokenizer.ADD_PREFIX)


def unsupported_features(g: GGUFFile) -> list[str]:
    """Every feature of the file our runtime would not reproduce, named by its key."""
    head_dim = g.fields[g.key(K.LLM.EMBEDDING_LENGTH)] // g.fields[g.key(K.Attention.HEAD_COUNT)]
    out = []
    for key, value in g.fields.items():
        if not key.startswith(f"{g.arch}."):
            continue
        template = next((t for t in _UNDERSTOOD if g.key(t) == key), None)
        if template is None:
            out.append(f"unsupported feature {key}={value!r}")
            continue
        want = _UNDERSTOOD[template]
        want = head_dim if want == "head_dim" else want
        if want is not None and value != want:
            out.append(f"unsupported {key}={value!r} (only {want!r})")
    if g.fields.get(K.Tokenizer.MODEL) != "gpt2":
        out.append(f"unsupported tokenizer {K.Tokenizer.MODEL}={g.fields.get(K.Tokenizer.MODEL)!r} (only byte-level BPE 'gpt2')")
    out += [f"unsupported {key}=true (shiptwo's tokenizer adds no BOS/EOS/prefix)" for key in _REFUSED_TRUE if g.fields.get(key)]
    return out


def config_of(g: GGUFFile) -> ModelConfig:
    f, k = g.fields, g.key
    names = {t.name for t in g.reader.tensors}
    return ModelConfig.from_dict({
        "vocab_size": f.get(k(K.LLM.VOCAB_SIZE), len(f[K.Tokenizer.LIST])),
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


def hf_pre_tokenizer(pre: str):
    """The Hugging Face pre-tokenizer that splits text as llama.cpp's `tokenizer.ggml.pre` does."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == GGUF_TOKENIZER_PRE:
        return byte_level
    if pre in GGUF_PRE_DIGITS:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    raise ShiptwoError(f"tokenizer: unsupported pre-tokenizer {pre!r} (supported: {', '.join(GGUF_PRE_SUPPORTED)})")


def gguf_pre_name(tokenizer_json: str) -> str:
    """The `tokenizer.ggml.pre` name for a tokenizer.json's pre-tokenizer (the inverse of the above)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    for name in (GGUF_TOKENIZER_PRE, GGUF_PRE_DIGITS[0]):
        probe = byte_level_bpe()
        probe.pre_tokenizer = hf_pre_tokenizer(name)
        if _pre_json(probe) == _pre_json(tok):
            return name
    raise ShiptwoError(f"tokenizer: no llama.cpp pre-tokenizer splits text as {_pre_json(tok)} does")


def _pre_json(tok) -> str:
    import json

    pre = json.loads(tok.to_str()).get("pre_tokenizer")
    return json.dumps(pre, sort_keys=True)


def tokenizer_json_of(g: GGUFFile) -> str:
    """Rebuild a Hugging Face byte-level BPE tokenizer.json from `tokenizer.ggml.*`."""
    tokens, types = llama_token_texts(g.fields[K.Tokenizer.LIST]), g.fields[K.Tokenizer.TOKEN_TYPE]
    merges = [split_merge(m) for m in g.fields[K.Tokenizer.MERGES]]
    vocab = {t: i for i, t in enumerate(tokens) if types[i] != gguf.TokenType.UNUSED}
    try:
        tok = byte_level_bpe(vocab, merges)
        tok.pre_tokenizer = hf_pre_tokenizer(g.fields[K.Tokenizer.PRE])
    except ShiptwoError as exc:
        raise ShiptwoError(f"{g.path}: {exc}") from None
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ShiptwoError(f"{g.path}: tokenizer cannot be rebuilt ({str(exc).splitlines()[0]})") from None
    added = [AddedToken(t, special=types[i] == gguf.TokenType.CONTROL, normalized=False)
             for i, t in enumerate(tokens) if types[i] in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    return tok.to_str()


def load_gguf(path: str | Path, provenance: dict | None = None, check_finite: bool = True) -> Checkpoint:
    """Any supported llama GGUF as a Checkpoint (F32 tensors); `provenance` fills or overrides the
    file's license / data source / data license (a file may carry only some of them)."""
    g = validate_gguf(path, require_provenance=False)
    problems = unsupported_features(g)
    if problems:
        raise ShiptwoError(f"{g.path}: {'; '.join(problems)}")
    try:
        config = config_of(g)
    except (KeyError, TypeError) as exc:
        raise ShiptwoError(f"{g.path}: bad hyper-parameter ({exc})") from None
    empty = [i for i, t in enumerate(g.fields[K.Tokenizer.LIST]) if not t]
    if empty:  # validate_gguf refused every other way llama.cpp would read the vocabulary differently
        log.warning("%s: %d empty token(s) named as llama.cpp names them (first: token %d as %s)",
                    g.path, len(empty), empty[0], LLAMA_EMPTY_TOKEN.format(id=empty[0]))
    pad = g.fields.get(K.Tokenizer.PAD_ID)
    if pad is not None and pad != config.eos_token_id:
        log.warning("%s: padding token %s is not EOS %s; exports pad with EOS", g.path, pad, config.eos_token_id)
    ckpt = Checkpoint(
        config=config,
        tensors=read_tensors(g, config),
        tokenizer_json=tokenizer_json_of(g),
        provenance={**provenance_of(g), **{k: v for k, v in (provenance or {}).items() if v}},
        training={"imported_from": str(g.path), "gguf_name": g.fields.get(K.General.NAME, ""),
                  **({"gguf_empty_tokens": empty} if empty else {})},
        chat_template=g.fields.get(K.Tokenizer.CHAT_TEMPLATE),
        path=g.path,
    )
    ckpt.build_model()  # strict tensor contract, names the file
    bad = finite_defects(ckpt.tensors) if check_finite else []
    if bad:
        raise ShiptwoError(f"{g.path}: tensor {bad[0]} contains NaN or Inf")
    tok = ckpt.tokenizer()
    if tok.vocab_size > config.vocab_size:
        raise ShiptwoError(f"{g.path}: tokenizer has {tok.vocab_size} tokens, vocab_size is {config.vocab_size}")
    return ckpt


def import_gguf(src: str | Path, out: str | Path, provenance: dict | None = None) -> Path:
    """GGUF -> native checkpoint (atomically); provenance the file lacks must be given."""
    ckpt = load_gguf(src, provenance)
    missing = missing_provenance(ckpt.provenance)
    if missing:
        raise ShiptwoError(f"{src}: provenance field(s) {', '.join(missing)} missing "
                           f"(pass {' '.join('--' + k.replace('_', '-') for k in missing)})")
    ckpt.training = {**ckpt.training, "imported_sha256": sha256_file(src)}
    ckpt.provenance = {k: ckpt.provenance[k] for k in PROVENANCE_KEYS}
    return save_checkpoint(ckpt, out)
