"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seeded),
stopping at EOS, at text-level stop sequences or at a caller's stop rule, one prompt or many
decoded together (a finished sequence hands its slot to the next prompt at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.model.decode import Decoder
from shiptwo.model.llama import LlamaModel
from shiptwo.model.tokenizer import BPETokenizer

# A stop rule sees the decoded completion so far and returns where to cut it, or None to go on.
StopRule = Callable[[str], "int | None"]

FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CONTEXT = "context"  # the model's context ended the completion before max_new_tokens


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()  # text-level stop sequences, trimmed from the completion

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ShiptwoError(f"sampling: max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0 or math.isinf(self.temperature):  # NaN too
            raise ShiptwoError(f"sampling: temperature must be a finite number >= 0, got {self.temperature}")
        if 0 < self.temperature < torch.finfo(torch.float32).tiny:  # 0 in float32: 0/0 made the probabilities NaN
            raise ShiptwoError(f"sampling: temperature must be 0 (greedy) or >= {torch.finfo(torch.float32).tiny:.3g} "
                               f"(float32's smallest normal), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ShiptwoError(f"sampling: top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ShiptwoError(f"sampling: top_k must be >= 0, got {self.top_k}")
        if not -(2**63) <= self.seed < 2**63:  # what torch.Generator.manual_seed accepts
            raise ShiptwoError(f"sampling: seed must fit in 64 bits, got {self.seed}")
        self.stop = tuple(self.stop)


@dataclass
class Completion:
    """One generated continuation: the trimmed text, the ids generated and why it ended."""

    text: str
    token_ids: list[int] = field(default_factory=list)  # EOS excluded
    finish_reason: str = FINISH_LENGTH
    prompt_tokens: int = 0


def stop_at_strings(stops: Sequence[str]) -> StopRule | None:
    """A stop rule cutting the completion at the earliest occurrence of any of `stops`."""
    stops = [s for s in stops if s]
    if not stops:
        return None

    def rule(text: str) -> int | None:
        cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
        return min(cuts) if cuts else None

    return rule


def _either(a: StopRule | None, b: StopRule | None) -> StopRule | None:
    if a is None or b is None:
        return a or b

    def rule(text: str) -> int | None:
        cuts = [c for c in (a(text), b(text)) if c is not None]
        return min(cuts) if cuts else None

    return rule


def _pick(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    # shifted so the top logit is 0: a tiny temperature then sends the rest to -inf, never to NaN
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop tokens once the mass before them already reaches top_p (always keep the first).
        drop = probs.cumsum(-1) - probs >= cfg.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _budgets(model: LlamaModel, rows: list[list[int]], cfg: SamplingConfig) -> list[int]:
    """New tokens each prompt may get: cfg.max_new_tokens, fewer where the context ends first."""
    if not rows or any(not r for r in rows):
        raise ShiptwoError("generate: every prompt must have at least one token")
    limit = model.config.max_position_embeddings
    longest = max(len(r) for r in rows)
    if longest >= limit:
        raise ShiptwoError(f"generate: prompt of {longest} tokens leaves no room below max_position_embeddings {limit}")
    return [min(cfg.max_new_tokens, limit - len(r)) for r in rows]


def _decode(
    model: LlamaModel,
    rows: list[list[int]],
    cfg: SamplingConfig,
    eos_id: int | None,
    tokenizer: BPETokenizer | None = None,
    stop: StopRule | None = None,
    clock: list[float] | None = None,
    slots: int = 1,
) -> list[Completion]:
    """The one decode loop, continuous batching: up to `slots` sequences decode together; a
    finished one frees its slot for the next prompt at once. Every sequence gets exactly the
    tokens it would get alone (greedy, or sampled from its own generator seeded cfg.seed).
    `clock`, when given, receives perf_counter() after each prefill's token and each step's tokens are
    picked (the benchmarks' timestamps)."""
    if stop is not None and tokenizer is None:
        raise ShiptwoError("generate: stop rules need the tokenizer")
    budgets = _budgets(model, rows, cfg)
    # A slot caches its prompt and every generated token but the last.
    capacity = max(len(r) + b - 1 for r, b in zip(rows, budgets))
    decoder = Decoder(model, max(1, min(slots, len(rows))), capacity)
    gens = [torch.Generator().manual_seed(cfg.seed) for _ in rows] if cfg.temperature > 0 else None
    results = [Completion(text="", prompt_tokens=len(r)) for r in rows]

    def pick(logits: torch.Tensor, who: list[int]) -> list[int]:
        if gens is None:
            picked = logits.argmax(dim=-1).tolist()
        else:
            picked = [int(_pick(logits[j : j + 1].cpu(), cfg, gens[i])[0]) for j, i in enumerate(who)]
        if clock is not None:
            clock.append(time.perf_counter())
        return picked

    def goes_on(i: int, token: int) -> bool:
        res = results[i]
        if eos_id is not None and token == eos_id:
            res.finish_reason = FINISH_EOS
            return False
        res.token_ids.append(token)
        if stop is not None:
            text = tokenizer.decode(res.token_ids)
            cut = stop(text)
            if cut is not None:
                res.finish_reason, res.text = FINISH_STOP, text[:cut]
                return False
        return len(res.token_ids) < budgets[i]

    queue = list(range(len(rows)))[::-1]  # popped from the end: input order
    free = list(range(len(decoder.lengths)))[::-1]
    live: dict[int, tuple[int, int]] = {}  # slot -> (row, token to feed next)
    while queue or live:
        while queue and free:
            i, slot = queue.pop(), free.pop()
            token = pick(decoder.prefill(slot, rows[i])[None], [i])[0]
            if goes_on(i, token):
                live[slot] = (i, token)
            else:
                free.append(slot)
        if not live:
            continue
        order = sorted(live)
        logits = decoder.step(order, [live[s][1] for s in order])
        for s, token in zip(order, pick(logits, [live[s][0] for s in order])):
            i = live.pop(s)[0]
            if goes_on(i, token):
                live[s] = (i, token)
            else:
                free.append(s)
    for res in results:
        if res.finish_reason == FINISH_LENGTH and len(res.token_ids) < cfg.max_new_tokens:
            res.finish_reason = FINISH_CONTEXT  # said, not silent: fewer tokens than asked for
    if tokenizer is not None:
        for res in results:
            if res.finish_reason != FINISH_STOP:
                res.text = tokenizer.decode(res.token_ids)
    return results


def generate_ids(
    model: LlamaModel, prompt_ids: list[int], cfg: SamplingConfig, eos_id: int | None = None, clock: list[float] | None = None,
) -> list[int]:
    """Generate up to cfg.max_new_tokens new ids after `prompt_ids`; the EOS id, when hit, ends the list."""
    res = _decode(model, [list(prompt_ids)], cfg, eos_id, clock=clock)[0]
    return res.token_ids + ([eos_id] if res.finish_reason == FINISH_EOS else [])


def generate(model: LlamaModel, tokenizer: BPETokenizer, prompt: str, cfg: SamplingConfig, stop: StopRule | None = None) -> Completion:
    """Complete one prompt; stops at EOS, at cfg.stop sequences or at `stop` (text trimmed)."""
    return generate_batch(model, tokenizer, [prompt], cfg, stop=stop, batch_size=1)[0]


def generate_batch(
    model: LlamaModel,
    tokenizer: BPETokenizer,
    prompts: Sequence[str | list[int]],
    cfg: SamplingConfig,
    stop: StopRule | None = None,
    batch_size: int = 16,
    ignore_eos: bool = False,
    clock: list[float] | None = None,
) -> list[Completion]:
    """Complete many prompts (text or ids), up to `batch_size` decoding at once; results in input
    order, each identical to completing that prompt alone. For benchmarks: `ignore_eos` decodes
    past EOS; `clock` receives perf_counter() after each prefill's and each step's tokens."""
    rows = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    rule = _either(stop_at_strings(cfg.stop), stop)
    # The config's EOS: end-of-text for a base model, end-of-turn for a chat model.
    eos = None if ignore_eos else model.config.eos_token_id
    return _decode(model, rows, cfg, eos, tokenizer, rule, clock, slots=batch_size)
