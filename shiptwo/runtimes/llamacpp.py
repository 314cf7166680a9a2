"""Parity with llama.cpp (through llama-cpp-python): same token ids, logits, greedy tokens.

The GGUF is loaded with an F32 KV cache (`type_k=type_v=0`): the default F16 cache alone adds
about 1e-2 of logit error on small models and would hide a real layout defect in the noise.
llama.cpp's extra weight buffer types (AMX / repacked layouts) are turned off: on the AMX Xeon
this project runs on they segfault in the first Q8_0 matmul; the plain CPU kernels are the
reference llama.cpp implementation anyway. `LLAMACPP_SETTINGS` records both choices as evidence.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from shiptwo import stats
from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.model.generate import SamplingConfig, generate_ids

from shiptwo.model.canaries import CANARY_PROMPTS, CANARY_STRINGS



GGML_TYPE_F32 = 0  # ggml_type enum value for the KV cache
LLAMACPP_SETTINGS = {"kv_cache": "f32", "use_extra_bufts": False, "n_threads": 2}


@contextlib.contextmanager
def no_extra_buffer_types():
    """llama_cpp.Llama builds its model params from `llama_model_default_params()` with no way to
    pass `use_extra_bufts`; wrap that one call for the duration of the load."""
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    original = lib.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = LLAMACPP_SETTINGS["use_extra_bufts"]
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints load errors from C on fd 2; keep them out of our one-line errors."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_llama(path: str | Path, n_ctx: int, *, logits_all: bool = True, n_threads: int | None = None,
               f32_kv_cache: bool = True):
    """A llama_cpp.Llama over the GGUF: all-position logits and an F32 KV cache for parity checks
    (benchmarks pass logits_all=False, f32_kv_cache=False); extra buffer types always off."""
    import llama_cpp

    path = Path(path)
    if not path.is_file():
        raise ShiptwoError(f"{path}: no such GGUF file")
    threads = n_threads or LLAMACPP_SETTINGS["n_threads"]
    cache = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_kv_cache else {}
    try:
        with _quiet_stderr(), no_extra_buffer_types():
            return llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, logits_all=logits_all, verbose=False, seed=0,
                n_threads=threads, n_threads_batch=threads, n_batch=n_ctx, n_ubatch=n_ctx, **cache,
            )
    except (ValueError, RuntimeError) as exc:
        raise ShiptwoError(f"{path}: llama.cpp refused the file ({str(exc).splitlines()[0]})") from None


def llamacpp_tokenize(llm, text: str) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def llamacpp_logits(llm, ids: list[int]) -> np.ndarray:
    """Logits at every position of `ids` (T, vocab), from a fresh context."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llamacpp_greedy(llm, ids: list[int], steps: int) -> list[int]:
    """`steps` greedy tokens after `ids`, by argmax over llama.cpp's own logits."""
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(steps):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


@dataclass
class ParityResult:
    """What the comparison measured; `ok(tol)` is the AC-SHIP2-009 verdict."""

    max_logit_diff: float
    prompts: int
    ids_mismatch: list[str] = field(default_factory=list)
    greedy_mismatch: list[str] = field(default_factory=list)
    greedy_steps: int = 0
    min_logit_cosine: float = 1.0  # per position: scale-free, the quantized-format yardstick
    per_prompt: list[dict] = field(default_factory=list)  # prompt, max_logit_diff, ids_match, greedy_match, greedy_text

    def ok(self, tol: float) -> bool:
        return not self.ids_mismatch and not self.greedy_mismatch and self.max_logit_diff <= tol

    def evidence(self) -> dict:
        return {
            "max_abs_logit_diff": self.max_logit_diff,
            "min_logit_cosine": self.min_logit_cosine,
            "prompts": self.prompts,
            "token_id_mismatches": self.ids_mismatch,
            "greedy_mismatches": self.greedy_mismatch,
            "greedy_steps": self.greedy_steps,
            "llamacpp_settings": LLAMACPP_SETTINGS,
        }


@torch.inference_mode()
def compare_with_llamacpp(
    ckpt: Checkpoint, gguf_path: str | Path, prompts=CANARY_PROMPTS, *, greedy_steps: int,
) -> ParityResult:
    """Run our runtime on `ckpt` and llama.cpp on `gguf_path` over `prompts` and compare: logits, token
    ids, and `greedy_steps` greedy tokens (AC-SHIP2-009's parameter, passed by the caller)."""
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    n_ctx = min(ckpt.config.max_position_embeddings, max(len(tok.encode(p)) for p in prompts) + greedy_steps + 1)
    llm = load_llama(gguf_path, n_ctx)
    try:
        if llm.n_vocab() != ckpt.config.vocab_size:
            raise ShiptwoError(f"{gguf_path}: llama.cpp vocab {llm.n_vocab()} != checkpoint vocab {ckpt.config.vocab_size}")
        result = ParityResult(max_logit_diff=0.0, prompts=len(prompts), greedy_steps=greedy_steps)
        for prompt in prompts:
            ids = tok.encode(prompt)
            if not ids:
                raise ShiptwoError(f"parity: prompt {prompt!r} encodes to no tokens")
            theirs_ids = llamacpp_tokenize(llm, prompt)
            if theirs_ids != ids:
                result.ids_mismatch.append(f"{prompt!r}: ours {ids[:8]}... llama.cpp {theirs_ids[:8]}...")
            ours = model(torch.tensor([ids]))[0].float().numpy()
            theirs = llamacpp_logits(llm, ids)
            diff = float(np.abs(ours - theirs).max())
            result.max_logit_diff = stats.extreme([result.max_logit_diff, diff])  # a NaN stays NaN
            cos = (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
            result.min_logit_cosine = stats.extreme([result.min_logit_cosine, float(cos.min())], "min")
            ours_gen = generate_ids(model, ids, SamplingConfig(max_new_tokens=greedy_steps))
            theirs_gen = llamacpp_greedy(llm, ids, len(ours_gen))
            if ours_gen != theirs_gen:
                first = next(i for i, (a, b) in enumerate(zip(ours_gen, theirs_gen)) if a != b)
                result.greedy_mismatch.append(f"{prompt!r}: first differs at step {first}")
            result.per_prompt.append({"prompt": prompt, "max_logit_diff": diff, "ids_match": theirs_ids == ids,
                                      "greedy_match": ours_gen == theirs_gen, "greedy_text": tok.decode(ours_gen)})
        return result
    finally:
        llm.close()


def llamacpp_generate(gguf_path: str | Path, prompt: str, steps: int) -> tuple[list[int], str]:
    """Load a GGUF in llama.cpp and greedily generate `steps` tokens: (ids, text). AC-SHIP1-004."""
    llm = load_llama(gguf_path, n_ctx=512)
    try:
        ids = llamacpp_tokenize(llm, prompt)
        if not ids:
            raise ShiptwoError(f"{gguf_path}: llama.cpp tokenizes {prompt!r} to no tokens")
        out = llamacpp_greedy(llm, ids, steps)
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        return out, text
    finally:
        llm.close()


# --- MODEL-1's release path: llama.cpp's own chat engine, quantizer and log-likelihoods -------

# llama.cpp's file types (llama_ftype) for the formats its quantizer writes for a release.
LLAMACPP_FTYPES = {"q8_0": 7, "q2_k": 10, "q3_k_m": 12, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
_CHAT_BUFFER = 1 << 16


def llamacpp_chat_render(template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    """Render with llama.cpp's C template engine (`llama_chat_apply_template`): it recognises the
    template by its markers and formats turns itself, not through Jinja."""
    import ctypes

    import llama_cpp

    arr = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
    size = _CHAT_BUFFER + sum(len(m["content"].encode()) for m in messages) * 2
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template.encode(), arr, len(messages), add_generation_prompt, buf, size)
    if n < 0:
        raise ShiptwoError("llama.cpp: chat template not supported by llama_chat_apply_template")
    if n > size:
        raise ShiptwoError(f"llama.cpp: rendered conversation of {n} bytes exceeds the {size}-byte buffer")
    return buf.raw[:n].decode("utf-8")


def llamacpp_quantize(src: str | Path, dst: str | Path, ftype: str, threads: int | None = None) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (`llama_model_quantize`), atomically.
    K-quants need rows that are multiples of 256; llama.cpp picks its fallback types itself."""
    import ctypes

    import llama_cpp

    from shiptwo.fileio import atomic_output_file

    if ftype not in LLAMACPP_FTYPES:
        raise ShiptwoError(f"llama.cpp quantize: unknown type {ftype!r} (choose from {', '.join(LLAMACPP_FTYPES)})")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ShiptwoError(f"{src}: no such GGUF file")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMACPP_FTYPES[ftype]
    params.nthread = threads or LLAMACPP_SETTINGS["n_threads"]
    with atomic_output_file(dst) as tmp:
        with _quiet_stderr():
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ShiptwoError(f"{src}: llama.cpp could not quantize to {ftype} (status {rc})")
    return dst


def _log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def llamacpp_token_logprobs(llm, context_ids: list[int], continuation_ids: list[int]) -> list[float]:
    """log p(token) of each continuation token after the context, from llama.cpp's logits."""
    if not context_ids or not continuation_ids:
        raise ShiptwoError("llama.cpp log-likelihood: context and continuation must be non-empty")
    ids = list(context_ids) + list(continuation_ids)
    logits = llamacpp_logits(llm, ids)[len(context_ids) - 1 : len(ids) - 1]
    logp = _log_softmax_rows(logits)
    return [float(logp[i, t]) for i, t in enumerate(continuation_ids)]


def llamacpp_greedy_until(llm, ids: list[int], max_new_tokens: int, stop=None) -> tuple[str, list[int], str]:
    """Greedy decoding by llama.cpp: argmax of its logits until an end-of-generation token (llama.cpp's
    own set), `stop(text)` returns a cut, or max_new_tokens; returns (text, ids, finish reason)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for step in range(max_new_tokens):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if llama_cpp.llama_vocab_is_eog(vocab, nxt):
            return llm.detokenize(out).decode("utf-8", errors="replace"), out, "eos"
        out.append(nxt)
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        cut = stop(text) if stop is not None else None
        if cut is not None:
            return text[:cut], out, "stop"
        if step < max_new_tokens - 1:
            llm.eval([nxt])
    return llm.detokenize(out).decode("utf-8", errors="replace"), out, "length"


# Texts whose next-token distributions are compared: code, whitespace, unicode, digits, specials.
DISTRIBUTION_TEXTS = (*CANARY_PROMPTS, *(s for s in CANARY_STRINGS if s),
                      "total = 12345 + 678 * 9.01\nprint(f'{total:,.2f}')\n")


@dataclass
class DistributionParity:
    """Our runtime's next-token distributions vs llama.cpp's on the same ids, position by position."""

    positions: int
    kl_mean: float  # mean KL(llama.cpp || ours), nats
    kl_max: float
    top1_agreement: float  # share of positions whose argmax agrees
    token_id_mismatches: list[str] = field(default_factory=list)
    texts: int = 0
    # 95 % intervals resampling whole texts (a text's positions are correlated)
    kl_interval: tuple[float, float] | None = None
    top1_interval: tuple[float, float] | None = None

    def evidence(self) -> dict:
        return {"positions": self.positions, "texts": self.texts, "kl_mean": self.kl_mean, "kl_interval": self.kl_interval,
                "kl_max": self.kl_max, "top1_agreement": self.top1_agreement, "top1_interval": self.top1_interval,
                "intervals": "95 %, bootstrap over texts", "token_id_mismatches": self.token_id_mismatches,
                "llamacpp_settings": LLAMACPP_SETTINGS}

    def leg(self, figure: str) -> dict:
        """`kl_mean` or `top1_agreement` as a criterion leg: value, interval and the positions it averages."""
        return {"value": getattr(self, figure), "n": self.positions,
                "interval": self.kl_interval if figure == "kl_mean" else self.top1_interval}


@torch.inference_mode()
def compare_distributions(ckpt: Checkpoint, gguf_path: str | Path, texts=DISTRIBUTION_TEXTS) -> DistributionParity:
    """KL divergence and top-1 agreement of our runtime on `ckpt` against llama.cpp on `gguf_path`
    (for a quantized file, where llama.cpp also quantizes activations, exact logits are not expected),
    plus the texts whose token ids differ between the two tokenizers."""
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    rows = [(t, tok.encode(t)) for t in texts]
    llm = load_llama(gguf_path, n_ctx=max(len(ids) for _, ids in rows) + 1)
    kls, agree, mismatches, per_text = [], [], [], []  # per_text: (KL sum, agreements, positions)
    try:
        if llm.n_vocab() != ckpt.config.vocab_size:
            raise ShiptwoError(f"{gguf_path}: llama.cpp vocab {llm.n_vocab()} != checkpoint vocab {ckpt.config.vocab_size}")
        for text, ids in rows:
            theirs_ids = llamacpp_tokenize(llm, text)
            if theirs_ids != ids:
                mismatches.append(f"{text!r}: ours {ids[:8]}... llama.cpp {theirs_ids[:8]}...")
            theirs = _log_softmax_rows(llamacpp_logits(llm, ids))
            ours = _log_softmax_rows(model(torch.tensor([ids]))[0].double().numpy())
            kl = (np.exp(theirs) * (theirs - ours)).sum(-1)
            same = theirs.argmax(-1) == ours.argmax(-1)
            kls += kl.tolist()
            agree += same.tolist()
            per_text.append((float(kl.sum()), float(same.sum()), len(kl)))
    finally:
        llm.close()
    sums, hits, counts = zip(*per_text)
    return DistributionParity(positions=len(kls), kl_mean=float(np.mean(kls)), kl_max=float(np.max(kls)),
                              top1_agreement=float(np.mean(agree)), token_id_mismatches=mismatches, texts=len(per_text),
                              kl_interval=stats.cluster_ratio_ci(sums, counts) if len(per_text) > 1 else None,
                              top1_interval=stats.cluster_ratio_ci(hits, counts) if len(per_text) > 1 else None)
