"""Training throughput of the real trainer at the default profile (its recipe as declared: fused
AdamW, torch.compile; on a CPU the compiled attention and head kernels), as a share of this machine's fp32 matmul peak measured in
the same run with the same threads: model FLOP utilization (MFU), target >= 60 % (issue 14).

FLOPs per token follow PaLM's accounting (`shiptwo.measure.mfu`): 6·N (N = the matmuls' parameters,
the tied head counted once, its matmul included) plus 12·L·d·T for attention scores and values, the
full T x T of them: our causal kernel skips the masked half, so the MFU with only the half it does
credited is reported beside it (the target applies to PaLM's figure, the issue's convention). The
peak is the best torch.mm of 2048² fp32 matrices. The run goes in ROUNDS rounds, as `shiptwo bench`'s
do, so that a load change on this shared machine hits a round's training and its peak alike: each
round samples the peak, trains STEPS steps and samples it again; its MFU is the rate its steps after
WARMUP_STEPS sustained (tokens over their seconds, slow steps included) against the higher of its two
peaks (paired). The figure is the median over rounds, with its range and every round in extra_info;
the target applies to the median.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from shiptwo.measure.bench import torch_threads
from shiptwo.measure.limits import matmul_peak
from shiptwo.measure.mfu import sustained_tokens_per_s, train_flops_per_token
from shiptwo.stats import Stat
from shiptwo.model.tokenizer import train_tokenizer
from shiptwo.training.loop import train
from shiptwo.training.recipes import load_recipe

TARGET_MFU = 0.6
STEPS = 16
WARMUP_STEPS = 4  # one-off warm-up (and the compile) left out of each round's rate
ROUNDS = 5
MAX_LOSS_DRIFT = 1e-3  # nats: fp32 reassociation over 16 steps stays far below; a changed objective does not
PROV = {"license": "Apache-2.0", "data_source": "random tokens (benchmark)", "data_license": "none"}


@pytest.mark.parametrize("profile", ["default"])
def test_train_throughput_vs_matmul_peak(benchmark, tmp_path, record, bench_threads, profile):
    recipe = load_recipe("model2", profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = dataclasses.replace(recipe.train, max_steps=STEPS, token_budget=None, eval_interval=STEPS, eval_windows=1,
                              force_under_provisioned=True, checkpoint_interval=None, device=device, warmup_steps=2,
                              threads=bench_threads)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, recipe.model.vocab_size, (cfg.tokens_per_step * (STEPS + 1) + 1,), generator=gen)
    tok = train_tokenizer(["def f(x):\n    return x\n"] * 4, 300).to_json()
    threads, flops = cfg.threads, train_flops_per_token(recipe.model, cfg.seq_len)
    flops_causal = train_flops_per_token(recipe.model, cfg.seq_len, causal=True)
    rounds: list[dict] = []

    def run():
        with torch_threads(threads):
            before = matmul_peak(device=device, repeats=4)
        result = train(cfg, recipe.model, tokens, tokens[: cfg.seq_len * 4 + 1], tmp_path / f"round{len(rounds)}",
                       tok, PROV)
        with torch_threads(threads):
            peak = max(before, matmul_peak(device=device, repeats=4))
        rate = sustained_tokens_per_s([json.loads(line) for line in result.log_path.read_text().splitlines()],
                                      WARMUP_STEPS)
        rounds.append({"peak": peak, "tokens_per_s": rate, "mfu": rate * flops / peak,
                       "mfu_causal": rate * flops_causal / peak, "losses": result.losses,
                       "compile": result.summary["compile"]})

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    # The same steps eager: compiling changes speed, not what is trained (float reassociation only).
    eager = train(dataclasses.replace(cfg, compile=False), recipe.model, tokens, tokens[: cfg.seq_len * 4 + 1],
                  tmp_path / "eager", tok, PROV)
    drift = max(abs(a - b) for r in rounds for a, b in zip(r["losses"], eager.losses))
    mfu, mfu_causal, tok_s, peaks = (Stat.of([r[k] for r in rounds]) for k in ("mfu", "mfu_causal", "tokens_per_s", "peak"))
    compiled = {r["compile"] for r in rounds}
    benchmark.extra_info.update({
        "profile": profile, "device": device, "threads": threads, "compile": sorted(compiled),
        "parameters": recipe.model.num_parameters(), "tokens_per_step": cfg.tokens_per_step, "rounds": ROUNDS,
        "train_tokens_per_s": tok_s.values, "matmul_peak_flops": peaks.values, "mfu_per_round": mfu.values,
        "mfu": mfu.median, "mfu_min": mfu.min, "mfu_max": mfu.max, "target_mfu": TARGET_MFU,
        "flops_per_token": flops, "flops_per_token_causal": flops_causal, "mfu_causal_per_round": mfu_causal.values,
        "mfu_causal": mfu_causal.median,
        "max_loss_drift_vs_eager": drift,
    })
    record(f"train {profile}", f"{threads} threads, {device}, compile {'/'.join(sorted(compiled))}: MFU "
           f"{mfu.text(100)} % over {ROUNDS} rounds (PaLM's count; each round's sustained rate after step "
           f"{WARMUP_STEPS} against its own peak; rounds {', '.join(f'{v:.1%}' for v in mfu.values)}); "
           f"{mfu_causal.text(100)} % crediting only the causal half of attention the kernel computes; "
           f"of a {peaks.text(1e-9, '.0f')} GFLOP/s matmul peak "
           f"({tok_s.text(1, '.0f')} tok/s); losses within {drift:.1e} of the eager run's")
    assert drift < MAX_LOSS_DRIFT, f"compiled and eager training diverge: {drift}"
    assert compiled == {"inductor"}, f"the profile's compile fell back: {compiled}"
    assert mfu.median >= TARGET_MFU, f"MFU {mfu.median:.1%} (median of {ROUNDS} rounds) below target {TARGET_MFU:.0%}"
