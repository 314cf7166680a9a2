"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seeded),
stopping at EOS, at text-level stop sequences or at a caller's stop rule, one prompt or a
left-padded batch (finished rows leave the batch so they cost nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from shiptwo.errors import ShiptwoError
from shiptwo.model.llama import KVCache, LlamaModel
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
        if self.temperature < 0:
            raise ShiptwoError(f"sampling: temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ShiptwoError(f"sampling: top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ShiptwoError(f"sampling: top_k must be >= 0, got {self.top_k}")
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
    logits = logits.float() / cfg.temperature
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


@torch.inference_mode()
def _decode(
    model: LlamaModel,
    rows: list[list[int]],
    cfg: SamplingConfig,
    eos_id: int | None,
    tokenizer: BPETokenizer | None = None,
    stop: StopRule | None = None,
    clock: list[float] | None = None,
) -> list[Completion]:
    """The one decode loop: left-pad `rows`, prefill, then one token a step for the live rows;
    `clock`, when given, receives perf_counter() after each step (the benchmark's timestamps)."""
    if not rows or any(not r for r in rows):
        raise ShiptwoError("generate: every prompt must have at least one token")
    if stop is not None and tokenizer is None:
        raise ShiptwoError("generate: stop rules need the tokenizer")
    limit = model.config.max_position_embeddings
    longest = max(len(r) for r in rows)
    if longest >= limit:
        raise ShiptwoError(f"generate: prompt of {longest} tokens leaves no room below max_position_embeddings {limit}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    total = min(longest + cfg.max_new_tokens, limit)
    pad = eos_id if eos_id is not None else 0
    idx = torch.tensor([[pad] * (longest - len(r)) + list(r) for r in rows], device=device)
    mask = None
    if any(len(r) != longest for r in rows):
        mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows], dtype=torch.bool, device=device)
    cache = KVCache(model.config, len(rows), total, device, dtype)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    results = [Completion(text="", prompt_tokens=len(r)) for r in rows]
    live = list(range(len(rows)))  # original row of each batch row still generating
    steps = total - longest
    for step in range(steps):
        logits = model(idx, cache, mask)[:, -1, :]
        picked = _pick(logits.cpu(), cfg, gen).tolist()
        if clock is not None:
            clock.append(time.perf_counter())
        keep = []
        for j, token in enumerate(picked):
            res = results[live[j]]
            if eos_id is not None and token == eos_id:
                res.finish_reason = FINISH_EOS
                continue
            res.token_ids.append(token)
            if stop is not None:
                cut = stop(tokenizer.decode(res.token_ids))
                if cut is not None:
                    res.finish_reason, res.text = FINISH_STOP, tokenizer.decode(res.token_ids)[:cut]
                    continue
            keep.append(j)
        if not keep or step == steps - 1:
            break
        if len(keep) < len(live):  # drop finished rows from the batch and the cache
            sel = torch.tensor(keep, device=device)
            cache.k = [t.index_select(0, sel) for t in cache.k]
            cache.v = [t.index_select(0, sel) for t in cache.v]
            mask = mask.index_select(0, sel) if mask is not None else None
            live = [live[j] for j in keep]
        idx = torch.tensor([[picked[j]] for j in keep], device=device)
        if mask is not None:
            mask = torch.cat([mask, torch.ones(len(keep), 1, dtype=torch.bool, device=device)], dim=1)
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
) -> list[Completion]:
    """Complete many prompts (text or ids) in left-padded batches of similar length; results in input order."""
    rows = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    rule = _either(stop_at_strings(cfg.stop), stop)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths pad least
    out: list[Completion | None] = [None] * len(rows)
    for start in range(0, len(order), max(1, batch_size)):
        chunk = order[start : start + batch_size]
        # The config's EOS: end-of-text for a base model, end-of-turn for a chat model.
        for i, res in zip(chunk, _decode(model, [rows[i] for i in chunk], cfg, model.config.eos_token_id, tokenizer, rule)):
            out[i] = res
    return out  # type: ignore[return-value]
