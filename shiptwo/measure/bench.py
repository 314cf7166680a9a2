"""`shiptwo bench`: decode and prefill throughput, time to first token and memory of our runtime,
optionally beside transformers (`generate` on the HF export) and llama.cpp (the GGUF), with the
hardware's limits measured in the same run: same prompt, token count and thread count for all.

Every runtime generates the same number of greedy tokens after the same prompt ids, EOS an
ordinary token (bench_runtimes); a runtime's tokens must be the same every run, and each peer's
are compared with ours token for token (`same_tokens_as_ours`). Runs go in rounds (each runtime
once per round, then one sample of each limit), so a load change on a shared machine hits every
figure of a round alike; figures are median, min and max over the rounds, and ratios between
runtimes are taken per round (paired). Decode tok/s counts the tokens after the first over the
time after the first (prefill excluded). Memory is the peak growth of anonymous (not file-backed)
RSS while a runtime loads and runs: a memory-mapped file costs none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.measure import limits as hw
from shiptwo.measure.bench_runtimes import RUNTIME_OURS, Runtime, llamacpp_runtime, loaded, ours, transformers_runtime
from shiptwo.model.checkpoint import Checkpoint
from shiptwo.stats import Stat

BENCH_PROMPT = "def fibonacci(n):\n"
BENCH_REPORT_FILE = "bench.json"
BENCH_PEERS = ("transformers", "llama.cpp")
DEFAULT_NEW_TOKENS = 128


def available_cores() -> int:
    """The cores this process may run on: bench's default thread count for every runtime."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class BenchConfig:
    prompt: str = BENCH_PROMPT
    new_tokens: int | None = None  # None: DEFAULT_NEW_TOKENS, or fewer when the context is shorter
    warmup: int = 1
    iterations: int = 5  # rounds
    threads: int = field(default_factory=available_cores)  # every runtime gets the same; every result records it
    limits: bool = True  # measure the hardware limits (run_bench); bench_ours alone never does

    def __post_init__(self):
        if self.new_tokens is not None and self.new_tokens < 2:
            raise ShiptwoError(f"bench: new_tokens must be >= 2 (decode rate needs tokens after the first), got {self.new_tokens}")
        if not 1 <= self.threads <= available_cores():  # 100000 threads: "can't start new thread", then a segfault
            raise ShiptwoError(f"bench: threads must be in 1..{available_cores()} (the cores this process may run on), "
                               f"got {self.threads}")
        if self.iterations < 1 or self.warmup < 0:
            raise ShiptwoError(f"bench: iterations must be >= 1 and warmup >= 0, got {self.iterations}, {self.warmup}")


@dataclass
class BenchResult:
    runtime: str
    decode_tok_s: Stat
    prefill_tok_s: Stat
    ttft_s: Stat
    peak_anon_rss_delta_bytes: int  # load and runs, anonymous memory only
    prompt_tokens: int
    new_tokens: int
    threads: int
    iterations: int
    engine: str = ""  # how the runtime decoded (ours: the compiled kernel or torch ops)
    tokens: list[int] = field(default_factory=list)  # the greedy ids it generated (every run the same)
    same_tokens_as_ours: int | None = None  # a peer's leading tokens identical to ours (run_bench)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Limits:
    """The hardware's limits for this artifact, one sample per round."""

    threads: int
    weight_bytes: int  # the matrices a batch-1 decode step streams
    matmul_params: int
    head_params: int
    read_bandwidth: Stat  # bytes/s, an array of weight_bytes read once (limits.read_bandwidth)
    torch_stored: Stat  # tok/s: every matrix through F.linear as stored (out, in)
    torch_transposed: Stat  # tok/s: x @ W^T as a contiguous (in, out) copy
    matmul_peak: Stat  # FLOP/s, fp32 n x n matmul

    @property
    def roofline_tok_s(self) -> float:
        # Each bandwidth sample is at least that round's weight stream times weight_bytes, so this
        # bounds the ceiling already; max() keeps the division's last-bit rounding from undercutting it.
        return max(self.read_bandwidth.median / self.weight_bytes, self.torch_ceiling_tok_s)

    @property
    def torch_ceiling_tok_s(self) -> float:
        return max(self.torch_stored.median, self.torch_transposed.median)

    def prefill_flops(self, prompt_tokens: int) -> float:
        """The matmul work of a prefill: every layer for every token, the head for the last one."""
        return 2.0 * ((self.matmul_params - self.head_params) * prompt_tokens + self.head_params)

    def shares(self, r: BenchResult) -> dict[str, float]:
        return {"decode_vs_roofline": r.decode_tok_s.median / self.roofline_tok_s,
                "decode_vs_torch_ceiling": r.decode_tok_s.median / self.torch_ceiling_tok_s,
                "prefill_vs_matmul_peak": r.prefill_tok_s.median / r.prompt_tokens * self.prefill_flops(r.prompt_tokens)
                / self.matmul_peak.median}

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "roofline_tok_s": self.roofline_tok_s, "torch_ceiling_tok_s": self.torch_ceiling_tok_s}


@dataclass
class BenchReport:
    artifact: str
    results: list[BenchResult] = field(default_factory=list)
    limits: Limits | None = None
    # Per-round ratios: ours / each peer ("decode_vs_<peer>"), each runtime / torch's ceiling and / the roofline.
    paired: dict[str, Stat] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        """Our decode tok/s over each peer's (median of the per-round ratios)."""
        return {k: v.median for k, v in self.paired.items() if k.startswith("decode_vs_")}

    def shares(self) -> dict[str, dict[str, float]]:
        return {r.runtime: self.limits.shares(r) for r in self.results} if self.limits else {}

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "results": [r.to_dict() for r in self.results], "ratios": self.ratios(),
                "paired_ratios": {k: dataclasses.asdict(v) for k, v in self.paired.items()},
                "limits": self.limits.to_dict() if self.limits else None, "shares": self.shares()}

    def to_text(self) -> str:
        r0 = self.results[0]
        lines = [f"bench {self.artifact}: {r0.threads} threads, {r0.prompt_tokens}+{r0.new_tokens} tokens, "
                 f"{r0.iterations} rounds; median [min-max]"]
        lim = self.limits
        if lim:
            mb = lim.weight_bytes / 1e6
            lines.append(f"  limits: read bandwidth {lim.read_bandwidth.text(1e-9)} GB/s -> roofline {lim.roofline_tok_s:.1f} tok/s "
                         f"({mb:.0f} MB of weights a token); torch weight streaming {lim.torch_stored.text()} tok/s as stored, "
                         f"{lim.torch_transposed.text()} transposed; matmul peak {lim.matmul_peak.text(1e-9)} GFLOP/s")
        for r in self.results:
            lines.append(
                f"  {r.runtime + (f' ({r.engine})' if r.engine else ''):<20} decode {r.decode_tok_s.text()} tok/s  "
                f"prefill {r.prefill_tok_s.text()} tok/s  ttft {r.ttft_s.median * 1e3:.2f} ms  "
                f"anon RSS +{r.peak_anon_rss_delta_bytes / 2**20:.1f} MiB")
            if lim:
                s = lim.shares(r)
                over = " (above 1: weights in cache, or the bandwidth under-read)" if s["decode_vs_roofline"] > 1 else ""
                lines.append(f"  {'':<20} = {s['decode_vs_torch_ceiling']:.2f}x torch ceiling, {s['decode_vs_roofline']:.2f}x "
                             f"roofline{over}; prefill {s['prefill_vs_matmul_peak']:.1%} of matmul peak")
            if r.same_tokens_as_ours is not None:
                k, n = r.same_tokens_as_ours, r.new_tokens
                lines.append(f"  {'':<20} tokens identical to {RUNTIME_OURS}'s: " + (f"all {n}" if k == n else f"the first {k} of {n}"))
        for k, v in self.paired.items():
            lines.append(f"  {k}: {v.text(fmt='.2f')}x (paired per round)")
        return "\n".join(lines)


def _result(rt: Runtime, prompt_tokens: int, cfg: BenchConfig) -> BenchResult:
    decode = [(len(s) - 1) / (s[-1] - s[0]) for _, s in rt.runs]
    ttft = [s[0] - t0 for t0, s in rt.runs]
    return BenchResult(rt.name, Stat.of(decode), Stat.of([prompt_tokens / t for t in ttft]), Stat.of(ttft),
                       max(rt.load_peak, rt.load_kept + rt.run_peak), prompt_tokens, cfg.new_tokens,
                       cfg.threads, cfg.iterations, rt.engine(), rt.tokens)


def _run(rt: Runtime, cfg: BenchConfig) -> tuple[float, list[float]]:
    with hw.AnonPeak() as mem:
        t0, stamps, tokens = rt.once()
    rt.run_peak = max(rt.run_peak, mem.delta)
    if len(stamps) != cfg.new_tokens or len(tokens) != cfg.new_tokens:
        raise ShiptwoError(f"bench: {rt.name} produced {len(tokens)} tokens ({len(stamps)} stamps), expected {cfg.new_tokens}")
    if rt.tokens and tokens != rt.tokens:  # greedy on the same prompt: the same tokens every run, or a defect
        raise ShiptwoError(f"bench: {rt.name}'s greedy tokens changed between runs (first at token "
                           f"{same_prefix(tokens, rt.tokens)}): its figures would time different work")
    rt.tokens = tokens
    return t0, stamps


def same_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two generations share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _rounds(runtimes: list[Runtime], cfg: BenchConfig, probe: Callable[[], None] | None = None) -> None:
    for rt in runtimes:
        for _ in range(cfg.warmup):
            _run(rt, cfg)
    for _ in range(cfg.iterations):
        for rt in runtimes:
            rt.runs.append(_run(rt, cfg))
        if probe is not None:
            probe()


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
def torch_threads(n: int):
    """torch's intra-op thread count set to `n` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def bench_ours(ckpt: Checkpoint, cfg: BenchConfig | None = None) -> BenchResult:
    """Our runtime alone on a loaded checkpoint (its memory figure counts building the model, not reading the file)."""
    cfg = cfg or BenchConfig()
    cfg = resolve_tokens(cfg, len(ckpt.tokenizer().encode(cfg.prompt)), ckpt.config.max_position_embeddings)
    with torch_threads(cfg.threads):
        rt = loaded(lambda: ours(lambda: ckpt, cfg.prompt, cfg.new_tokens))
        _rounds([rt], cfg)
    return _result(rt, len(ckpt.tokenizer().encode(cfg.prompt)), cfg)


def bench_transformers(hf_dir: str | Path, prompt_ids: list[int], cfg: BenchConfig) -> BenchResult:
    cfg = cfg if cfg.new_tokens is not None else dataclasses.replace(cfg, new_tokens=DEFAULT_NEW_TOKENS)
    with torch_threads(cfg.threads):
        rt = loaded(lambda: transformers_runtime(hf_dir, prompt_ids, cfg.new_tokens))
        _rounds([rt], cfg)
    return _result(rt, len(prompt_ids), cfg)


def bench_llamacpp(gguf_path: str | Path, prompt_ids: list[int], cfg: BenchConfig, runtime: str = "llama.cpp") -> BenchResult:
    cfg = cfg if cfg.new_tokens is not None else dataclasses.replace(cfg, new_tokens=DEFAULT_NEW_TOKENS)
    rt = loaded(lambda: llamacpp_runtime(gguf_path, prompt_ids, cfg.new_tokens, cfg.threads, runtime))
    try:
        _rounds([rt], cfg)
    finally:
        rt.close()
    return _result(rt, len(prompt_ids), cfg)


class _LimitProbe:
    """One sample of each hardware limit per call, for this model's decode matrices."""

    def __init__(self, model: torch.nn.Module, threads: int):
        self.threads = threads
        mats = hw.decode_matrices(model)
        self.stream = hw.WeightStream(mats)
        self.head_params = model.lm_head.weight.numel()
        self.array = torch.ones(max(self.stream.bytes // 4, 1 << 20))
        self.samples: dict[str, list[float]] = {"bw": [], "stored": [], "transposed": [], "peak": []}
        self.stream.stored(), self.stream.transposed_layout()  # warm-up

    def __call__(self) -> None:
        s = self.samples
        s["stored"].append(max(self.stream.stored() for _ in range(2)))
        s["transposed"].append(max(self.stream.transposed_layout() for _ in range(2)))
        # The weight streams read the weights' bytes too: a bandwidth below theirs is the array
        # probe under-reading (a roofline below torch's ceiling), never the machine's limit.
        streamed = max(s["stored"][-1], s["transposed"][-1]) * self.stream.bytes
        s["bw"].append(max(streamed, *(hw.read_bandwidth(self.array) for _ in range(3))))
        s["peak"].append(hw.matmul_peak())

    def limits(self) -> Limits:
        s = self.samples
        return Limits(self.threads, self.stream.bytes, sum(w.numel() for w in self.stream.mats), self.head_params,
                      Stat.of(s["bw"]), Stat.of(s["stored"]), Stat.of(s["transposed"]), Stat.of(s["peak"]))


def run_bench(path: str | Path, cfg: BenchConfig | None = None, compare: tuple[str, ...] = ()) -> BenchReport:
    """Bench the artifact in our runtime and each peer of `compare` (exports made to a temp dir),
    in rounds, with the hardware limits (cfg.limits) sampled once per round."""
    from shiptwo.formats.artifact import KIND_GGUF, artifact_kind, load_artifact

    cfg = cfg or BenchConfig()
    unknown = [c for c in compare if c not in BENCH_PEERS]
    if unknown:
        raise ShiptwoError(f"bench: unknown --compare runtime(s) {', '.join(unknown)} (choose from {', '.join(BENCH_PEERS)})")
    ckpt = load_artifact(path)
    ids = ckpt.tokenizer().encode(cfg.prompt)
    cfg = resolve_tokens(cfg, len(ids), ckpt.config.max_position_embeddings)
    report = BenchReport(artifact=str(path))
    with tempfile.TemporaryDirectory(prefix="shiptwo-bench-") as tmp, torch_threads(cfg.threads):
        exports = {}
        if "transformers" in compare:
            from shiptwo.formats.hf import export_hf

            exports["transformers"] = export_hf(ckpt, Path(tmp) / "hf")
        if "llama.cpp" in compare:
            if artifact_kind(path) == KIND_GGUF:
                exports["llama.cpp"] = Path(path)
            else:
                from shiptwo.formats.gguf_export import export_gguf

                exports["llama.cpp"] = export_gguf(ckpt, Path(tmp) / "bench-f32.gguf", "f32")
        del ckpt
        gc.collect()
        runtimes = [loaded(lambda: ours(lambda: load_artifact(path), cfg.prompt, cfg.new_tokens))]
        if "transformers" in exports:
            runtimes.append(loaded(lambda: transformers_runtime(exports["transformers"], ids, cfg.new_tokens)))
        if "llama.cpp" in exports:
            runtimes.append(loaded(lambda: llamacpp_runtime(exports["llama.cpp"], ids, cfg.new_tokens, cfg.threads,
                                                            "llama.cpp")))
        probe = _LimitProbe(runtimes[0].model, cfg.threads) if cfg.limits else None
        try:
            _rounds(runtimes, cfg, probe)
        finally:
            for rt in runtimes:
                rt.close()
    report.results = [_result(rt, len(ids), cfg) for rt in runtimes]
    for r in report.results[1:]:
        r.same_tokens_as_ours = same_prefix(r.tokens, runtimes[0].tokens)
    report.limits = probe.limits() if probe else None
    rates = {rt.name: [(len(s) - 1) / (s[-1] - s[0]) for _, s in rt.runs] for rt in runtimes}
    for name, theirs in list(rates.items())[1:]:
        report.paired[f"decode_vs_{name}"] = Stat.of([a / b for a, b in zip(rates[RUNTIME_OURS], theirs)])
    if probe:
        ceiling = [max(a, b) for a, b in zip(probe.samples["stored"], probe.samples["transposed"])]
        roofline = [max(bw / probe.stream.bytes, c) for bw, c in zip(probe.samples["bw"], ceiling)]  # as Limits
        for name, r in rates.items():
            report.paired[f"{name}_vs_torch_ceiling"] = Stat.of([a / b for a, b in zip(r, ceiling)])
            report.paired[f"{name}_vs_roofline"] = Stat.of([a / b for a, b in zip(r, roofline)])
    return report
