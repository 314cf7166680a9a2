"""Training throughput of the real trainer at the default profile's size, as a share of this
machine's fp32 matmul peak measured in the same run (model FLOP utilization, MFU).

FLOPs per token follow PaLM's accounting: 6·N (N = trainable parameters, the tied head counted
once, its matmul included) plus 12·L·d·T for attention scores and values. The peak is torch.mm
on large square fp32 matrices with the same thread count. Figures go to extra_info.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from shiptwo.training.recipes import load_recipe
from shiptwo.training.loop import train

TARGET_MFU = 0.5  # issue 3: the default profile should reach half the measured matmul peak
STEPS = 12
PROV = {"license": "Apache-2.0", "data_source": "random tokens (benchmark)", "data_license": "none"}


def matmul_peak_flops(n: int = 2048, repeats: int = 6, device: str = "cpu") -> float:
    """Best-of fp32 FLOP/s of an n×n matmul: the peer the trainer is compared with."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def flops_per_token(cfg, seq_len: int) -> float:
    return 6 * cfg.num_parameters() + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


@pytest.mark.parametrize("profile", ["default"])
def test_train_throughput_vs_matmul_peak(benchmark, tmp_path, profile):
    recipe = load_recipe("model2", profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = dataclasses.replace(recipe.train, max_steps=STEPS, token_budget=None, eval_interval=STEPS, eval_windows=1,
                              force_under_provisioned=True, checkpoint_interval=None, device=device, warmup_steps=2)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, recipe.model.vocab_size, (cfg.tokens_per_step * (STEPS + 1) + 1,), generator=gen)
    from shiptwo.model.tokenizer import train_tokenizer

    tok = train_tokenizer(["def f(x):\n    return x\n"] * 4, 300).to_json()
    peak = matmul_peak_flops(device=device)

    def run():
        return train(cfg, recipe.model, tokens, tokens[: cfg.seq_len * 4 + 1], tmp_path, tok, PROV)

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    # the first steps include one-off warm-up; use the steady-state median of the step log
    rates = sorted(e["tokens_per_s"] for e in (json_lines(result.log_path)) if e["type"] == "train")[2:]
    tok_s = rates[len(rates) // 2]
    achieved = tok_s * flops_per_token(recipe.model, cfg.seq_len)
    mfu = achieved / peak
    benchmark.extra_info.update({
        "profile": profile, "device": device, "threads": torch.get_num_threads(),
        "parameters": recipe.model.num_parameters(), "tokens_per_step": cfg.tokens_per_step,
        "train_tokens_per_s": tok_s, "achieved_flops": achieved, "matmul_peak_flops": peak,
        "mfu": mfu, "target_mfu": TARGET_MFU,
    })
    print(f"\ntrain {tok_s:.0f} tok/s, {achieved / 1e9:.1f} GFLOP/s vs peak {peak / 1e9:.1f} GFLOP/s: MFU {mfu:.1%}")
    assert mfu >= TARGET_MFU, f"MFU {mfu:.1%} below target {TARGET_MFU:.0%}"


def json_lines(path):
    import json

    return [json.loads(x) for x in path.read_text().splitlines()]
