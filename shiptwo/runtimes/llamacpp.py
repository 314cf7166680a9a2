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

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.model.generate import SamplingConfig, generate_ids

from shiptwo.model.canaries import CANARY_PROMPTS

LLAMACPP_GREEDY_STEPS = 32  # AC-SHIP2-009: greedy tokens that must agree with our runtime
# llama.cpp on a Q8_0 GGUF vs our F32 logits, per position; measured >= 0.9995 on MODEL-1 default,
# the same bar as AC-SHIP1-003's weight cosine; another model's weights fall below it.
Q8_0_MIN_LOGIT_COSINE = 0.999


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
    ckpt: Checkpoint, gguf_path: str | Path, prompts=CANARY_PROMPTS, greedy_steps: int = LLAMACPP_GREEDY_STEPS,
) -> ParityResult:
    """Run our runtime on `ckpt` and llama.cpp on `gguf_path` over `prompts` and compare."""
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
            result.max_logit_diff = max(result.max_logit_diff, float(np.abs(ours - theirs).max()))
            cos = (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
            result.min_logit_cosine = min(result.min_logit_cosine, float(cos.min()))
            ours_gen = generate_ids(model, ids, SamplingConfig(max_new_tokens=greedy_steps))
            theirs_gen = llamacpp_greedy(llm, ids, len(ours_gen))
            if ours_gen != theirs_gen:
                first = next(i for i, (a, b) in enumerate(zip(ours_gen, theirs_gen)) if a != b)
                result.greedy_mismatch.append(f"{prompt!r}: first differs at step {first}")
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
