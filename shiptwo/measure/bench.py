"""`shiptwo bench`: decode and prefill throughput, time to first token and peak memory of our
runtime, optionally beside transformers (`generate` on the HF export) and llama.cpp (the GGUF)
measured in the same run with the same prompt, token count and thread count.

Each runtime gets warm-up runs and then N timed runs; figures are median, min and max. Decode
tok/s counts the tokens after the first over the time after the first (prefill excluded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.model.generate import SamplingConfig, generate_ids

BENCH_PROMPT = "def fibonacci(n):\n"
BENCH_REPORT_FILE = "bench.json"
BENCH_PEERS = ("transformers", "llama.cpp")


RUNTIME_OURS = "shiptwo"
DEFAULT_NEW_TOKENS = 128


@dataclass
class BenchConfig:
    prompt: str = BENCH_PROMPT
    new_tokens: int | None = None  # None: DEFAULT_NEW_TOKENS, or fewer when the context is shorter
    warmup: int = 1
    iterations: int = 5
    # One thread by default: a few-M-parameter decode gains little from more, and on a shared
    # machine a second OpenMP thread stalls at every op's barrier behind other jobs (10-50x
    # slower, measured). Peers get the same number; every result records it.
    threads: int = 1

    def __post_init__(self):
        if self.new_tokens is not None and self.new_tokens < 2:
            raise ShiptwoError(f"bench: new_tokens must be >= 2 (decode rate needs tokens after the first), got {self.new_tokens}")
        if self.threads < 1:
            raise ShiptwoError(f"bench: threads must be >= 1, got {self.threads}")
        if self.iterations < 1 or self.warmup < 0:
            raise ShiptwoError(f"bench: iterations must be >= 1 and warmup >= 0, got {self.iterations}, {self.warmup}")


@dataclass
class Stat:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class BenchResult:
    runtime: str
    decode_tok_s: Stat
    prefill_tok_s: Stat
    ttft_s: Stat
    peak_rss_delta_bytes: int
    prompt_tokens: int
    new_tokens: int
    threads: int
    iterations: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BenchReport:
    artifact: str
    results: list[BenchResult] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        """Our decode tok/s over each peer's, measured in this same run."""
        ours = next(r for r in self.results if r.runtime == RUNTIME_OURS)
        return {f"decode_vs_{r.runtime}": ours.decode_tok_s.median / r.decode_tok_s.median
                for r in self.results if r.runtime != RUNTIME_OURS}

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "results": [r.to_dict() for r in self.results], "ratios": self.ratios()}

    def to_text(self) -> str:
        lines = [f"bench {self.artifact}"]
        for r in self.results:
            lines.append(
                f"  {r.runtime:<13} decode {r.decode_tok_s.median:9.1f} tok/s (min {r.decode_tok_s.min:.1f}, max {r.decode_tok_s.max:.1f})"
                f"  prefill {r.prefill_tok_s.median:9.1f} tok/s  ttft {r.ttft_s.median * 1e3:7.2f} ms"
                f"  peak rss +{r.peak_rss_delta_bytes / 2**20:.1f} MiB  ({r.prompt_tokens}+{r.new_tokens} tokens, {r.threads} threads)"
            )
        for k, v in self.ratios().items():
            lines.append(f"  {k}: {v:.2f}x")
        return "\n".join(lines)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples resident memory in a thread while the block runs; `delta` is the peak above the start."""

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.delta = self.peak - self.start


def _measure(runtime: str, run_once: Callable[[], tuple[float, list[float]]], prompt_tokens: int, cfg: BenchConfig, threads: int) -> BenchResult:
    """`run_once` returns (start time, per-token timestamps) for one generation of cfg.new_tokens."""
    with _PeakRSS() as mem:
        for _ in range(cfg.warmup):
            run_once()
        decode, prefill, ttft = [], [], []
        for _ in range(cfg.iterations):
            t0, stamps = run_once()
            if len(stamps) != cfg.new_tokens:
                raise ShiptwoError(f"bench: {runtime} produced {len(stamps)} tokens, expected {cfg.new_tokens}")
            first = stamps[0] - t0
            ttft.append(first)
            prefill.append(prompt_tokens / first)
            decode.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return BenchResult(runtime, Stat.of(decode), Stat.of(prefill), Stat.of(ttft), mem.delta,
                       prompt_tokens, cfg.new_tokens, threads, cfg.iterations)


def resolve_tokens(cfg: BenchConfig, prompt_tokens: int, context: int) -> BenchConfig:
    """Fix the token count: as asked (an error when it does not fit), or the default capped by the
    context; the count used is recorded in every result."""
    room = context - prompt_tokens
    if cfg.new_tokens is None:
        n = min(DEFAULT_NEW_TOKENS, room)
        if n < 2:
            raise ShiptwoError(f"bench: a {prompt_tokens}-token prompt leaves no room to decode in a context of {context}")
        return dataclasses.replace(cfg, new_tokens=n)
    if cfg.new_tokens > room:
        raise ShiptwoError(f"bench: {prompt_tokens} prompt + {cfg.new_tokens} new tokens exceed the context {context}")
    return cfg


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to `n` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def bench_ours(ckpt: Checkpoint, cfg: BenchConfig | None = None) -> BenchResult:
    """Our runtime: greedy `generate_ids` with the KV cache, EOS ignored so every run is full length."""
    cfg = cfg or BenchConfig()
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    ids = tok.encode(cfg.prompt)
    cfg = resolve_tokens(cfg, len(ids), ckpt.config.max_position_embeddings)
    scfg = SamplingConfig(max_new_tokens=cfg.new_tokens)

    def once():
        clock: list[float] = []
        t0 = time.perf_counter()
        generate_ids(model, ids, scfg, eos_id=None, clock=clock)
        return t0, clock

    with _torch_threads(cfg.threads):
        return _measure(RUNTIME_OURS, once, len(ids), cfg, cfg.threads)


def bench_transformers(hf_dir: str | Path, prompt_ids: list[int], cfg: BenchConfig) -> BenchResult:
    """transformers' `generate` (greedy, same token count) on the Hugging Face export."""
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    if cfg.new_tokens is None:
        cfg = dataclasses.replace(cfg, new_tokens=DEFAULT_NEW_TOKENS)
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
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=cfg.new_tokens, min_new_tokens=cfg.new_tokens,
                           do_sample=False, logits_processor=LogitsProcessorList([clock]), pad_token_id=0)
        return t0, clock.stamps

    with _torch_threads(cfg.threads):
        return _measure("transformers", once, len(prompt_ids), cfg, cfg.threads)


def bench_llamacpp(gguf_path: str | Path, prompt_ids: list[int], cfg: BenchConfig, runtime: str = "llama.cpp") -> BenchResult:
    """llama.cpp (llama-cpp-python) on the GGUF: prefill the prompt, then one greedy token per eval."""
    import numpy as np

    from shiptwo.runtimes.llamacpp import load_llama

    if cfg.new_tokens is None:
        cfg = dataclasses.replace(cfg, new_tokens=DEFAULT_NEW_TOKENS)  # llama.cpp's context is sized to fit
    threads = cfg.threads
    n_ctx = len(prompt_ids) + cfg.new_tokens + 1
    # The project's one loader: it switches off llama.cpp's extra (AMX/repacked) weight buffers,
    # which crash Q8_0 matmuls on some Xeons; a benchmark runs with the default F16 KV cache.
    llm = load_llama(gguf_path, n_ctx, logits_all=False, n_threads=threads, f32_kv_cache=False)

    def once():
        stamps: list[float] = []
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt_ids)
        for i in range(cfg.new_tokens):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            stamps.append(time.perf_counter())
            if i < cfg.new_tokens - 1:
                llm.eval([nxt])
        return t0, stamps

    try:
        return _measure(runtime, once, len(prompt_ids), cfg, threads)
    finally:
        llm.close()


def run_bench(path: str | Path, cfg: BenchConfig | None = None, compare: tuple[str, ...] = ()) -> BenchReport:
    """Bench the artifact in our runtime and in each peer of `compare` (exports made to a temp dir)."""
    from shiptwo.formats.artifact import KIND_GGUF, artifact_kind, load_artifact

    cfg = cfg or BenchConfig()
    unknown = [c for c in compare if c not in BENCH_PEERS]
    if unknown:
        raise ShiptwoError(f"bench: unknown --compare runtime(s) {', '.join(unknown)} (choose from {', '.join(BENCH_PEERS)})")
    ckpt = load_artifact(path)
    ids = ckpt.tokenizer().encode(cfg.prompt)
    cfg = resolve_tokens(cfg, len(ids), ckpt.config.max_position_embeddings)
    report = BenchReport(artifact=str(path))
    report.results.append(bench_ours(ckpt, cfg))
    with tempfile.TemporaryDirectory(prefix="shiptwo-bench-") as tmp:
        if "transformers" in compare:
            from shiptwo.formats.hf import export_hf

            report.results.append(bench_transformers(export_hf(ckpt, Path(tmp) / "hf"), ids, cfg))
        if "llama.cpp" in compare:
            if artifact_kind(path) == KIND_GGUF:
                gguf_path = Path(path)
            else:
                from shiptwo.formats.gguf_export import export_gguf

                gguf_path = export_gguf(ckpt, Path(tmp) / "bench-f32.gguf", "f32")
            report.results.append(bench_llamacpp(gguf_path, ids, cfg))
    return report
