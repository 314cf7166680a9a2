"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shiptwo.model import KVCache, LlamaModel


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


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
def generate_ids(model: LlamaModel, prompt_ids: list[int], cfg: SamplingConfig, eos_id: int | None = None) -> list[int]:
    """Generate up to cfg.max_new_tokens new ids after `prompt_ids`; stops after `eos_id`."""
    device = next(model.parameters()).device
    total = min(len(prompt_ids) + cfg.max_new_tokens, model.config.max_position_embeddings)
    cache = KVCache(model.config, 1, total, device, next(model.parameters()).dtype)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    idx = torch.tensor([prompt_ids], device=device)
    out: list[int] = []
    while len(prompt_ids) + len(out) < total:
        logits = model(idx, cache)[:, -1, :]
        nxt = _pick(logits.cpu(), cfg, gen)
        token = int(nxt[0])
        out.append(token)
        if eos_id is not None and token == eos_id:
            break
        idx = nxt.view(1, 1).to(device)
    return out
