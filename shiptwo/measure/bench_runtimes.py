"""The runtimes `shiptwo bench` times: ours (`generate_ids`), transformers' `generate` on the
Hugging Face export and llama.cpp on the GGUF, each generating `new_tokens` greedy tokens after
the same prompt ids, stamping perf_counter() as each token is picked.

One stop rule for all: EOS is an ordinary token (taken when it is the argmax, and decoding goes
on), so every run is full length and the runtimes pick the same tokens wherever their logits
agree; bench compares them token for token. (transformers' `min_new_tokens` forbids EOS instead:
another sequence wherever EOS is the argmax, so it is not used.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shiptwo.measure import limits as hw
from shiptwo.model.checkpoint import Checkpoint

RUNTIME_OURS = "shiptwo"


@dataclass
class Runtime:
    """One runtime under test: `once()` generates new_tokens and returns (start, per-token stamps, token ids)."""

    name: str
    once: Callable[[], tuple[float, list[float], list[int]]]
    engine: Callable[[], str] = lambda: ""  # asked after the runs: ours reports the thread counts it stepped on
    close: Callable[[], None] = lambda: None
    load_peak: int = 0
    load_kept: int = 0
    run_peak: int = 0
    runs: list[tuple[float, list[float]]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # the ids its runs generated (the same every run, checked)
    model: torch.nn.Module | None = None  # ours: the limits stream this model's matrices


def loaded(factory: Callable[[], Runtime]) -> Runtime:
    """The runtime `factory` builds, with the anonymous memory its loading took."""
    with hw.AnonPeak() as mem:
        rt = factory()
    rt.load_peak, rt.load_kept = mem.delta, mem.end - mem.start
    return rt


def ours(load: Callable[[], Checkpoint], prompt: str, new_tokens: int) -> Runtime:
    """Our runtime: greedy `generate_ids` with the KV cache."""
    from shiptwo.model.decode import engine
    from shiptwo.model.generate import SamplingConfig, generate_ids

    ckpt = load()
    model, ids = ckpt.build_model(), ckpt.tokenizer().encode(prompt)
    scfg = SamplingConfig(max_new_tokens=new_tokens)

    def once():
        clock: list[float] = []
        t0 = time.perf_counter()
        out = generate_ids(model, ids, scfg, eos_id=None, clock=clock)
        return t0, clock, out

    return Runtime(RUNTIME_OURS, once, lambda: engine(model), model=model)


def transformers_runtime(hf_dir: str | Path, prompt_ids: list[int], new_tokens: int) -> Runtime:
    """transformers' `generate` (greedy, its default SDPA attention and dynamic KV cache, F32) on
    the Hugging Face export; torch's threads are the caller's."""
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()

    class _Clock(LogitsProcessor):
        def __init__(self):
            self.stamps: list[float] = []

        def __call__(self, input_ids, scores):
            self.stamps.append(time.perf_counter())
            return scores

    x = torch.tensor([prompt_ids])

    def once():
        clock = _Clock()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, do_sample=False,
                                 eos_token_id=None, logits_processor=LogitsProcessorList([clock]), pad_token_id=0)
        return t0, clock.stamps, out[0, len(prompt_ids):].tolist()

    return Runtime("transformers", once)


def llamacpp_runtime(gguf_path: str | Path, prompt_ids: list[int], new_tokens: int, threads: int, runtime: str) -> Runtime:
    """llama.cpp (llama-cpp-python) on the GGUF: prefill the prompt, then one greedy token per eval,
    the argmax of the last position's logits as llama.cpp's context holds them. (`Llama.scores` is
    only filled with logits_all, which computes the head at every prompt position: without it the
    benchmark took the argmax of a never-written buffer, token 0 at every step.)"""
    import llama_cpp
    import numpy as np

    from shiptwo.runtimes.llamacpp import load_llama

    # The project's one loader: it switches off llama.cpp's extra (AMX/repacked) weight buffers,
    # which crash Q8_0 matmuls on some Xeons; a benchmark runs with the default F16 KV cache.
    llm = load_llama(gguf_path, len(prompt_ids) + new_tokens + 1, logits_all=False, n_threads=threads, f32_kv_cache=False)
    vocab = llm.n_vocab()

    def once():
        stamps: list[float] = []
        out: list[int] = []
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt_ids)
        for i in range(new_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
            out.append(int(np.argmax(logits)))
            stamps.append(time.perf_counter())
            if i < new_tokens - 1:
                llm.eval([out[-1]])
        return t0, stamps, out

    return Runtime(runtime, once, close=llm.close)
