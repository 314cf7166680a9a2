"""Batched decoding: many sequences decoded together get exactly what each gets alone (greedy and
sampled, mixed prompt lengths, per-sequence EOS and stops, slots reused), on the compiled kernel
and on the torch path; the kernel agrees with the model's forward and ignores the thread count;
a missing kernel is logged, never silent."""

from __future__ import annotations

import logging

import pytest
import torch

from shiptwo.errors import ShiptwoError
from shiptwo.measure.bench import torch_threads
from shiptwo.model import kernels
from shiptwo.model.decode import Decoder
from shiptwo.model.generate import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, SamplingConfig, generate_batch
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel


@pytest.fixture(scope="module")
def odd(tiny_tokenizer):
    """A tiny model whose sizes are not multiples of the kernel's 16 lanes (hidden 48, MLP 100,
    head_dim 12), so every tail path runs; random weights give many near-ties, which any
    batch-dependent rounding would turn into different tokens."""
    cfg = ModelConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      eos_token_id=tiny_tokenizer.eot_id, bos_token_id=tiny_tokenizer.eot_id)
    model = LlamaModel(cfg)
    model.init_weights(seed=3)
    return model.eval(), tiny_tokenizer


@pytest.fixture(params=["kernel", "torch"])
def engine(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setitem(kernels._state, kernels.SOURCE, None)
    elif kernels.load() is None:
        pytest.skip("decode kernels unavailable here (the warning says why); the torch path is tested")
    return request.param


def _prompts(tok, texts, n=20):
    ids = tok.encode("".join(texts))
    return [ids[i * 37 : i * 37 + 1 + (i * 7) % 50] for i in range(n)]  # 1 to 50 tokens


def _same(a, b):
    return [(c.token_ids, c.text, c.finish_reason) for c in a] == [(c.token_ids, c.text, c.finish_reason) for c in b]


def test_batched_equals_single_with_mixed_lengths_eos_and_stops(odd, tiny_texts, engine, monkeypatch):
    model, tok = odd
    prompts = _prompts(tok, tiny_texts)
    cfg = SamplingConfig(max_new_tokens=24)
    with torch_threads(1):  # the tiny model decodes on one thread anyway; teams are tested below
        free = [generate_batch(model, tok, [p], cfg, batch_size=1)[0] for p in prompts]
        # An EOS id and a stop string that end some completions early and not others.
        counts = {}
        for c in free:
            for t in set(c.token_ids[2:]):
                counts[t] = counts.get(t, 0) + 1
        eos = min(counts, key=lambda t: abs(counts[t] - len(prompts) // 3))
        stop = next(c.text[6:8] for c in free if eos not in c.token_ids and len(c.text) > 8)
        monkeypatch.setattr(model.config, "eos_token_id", eos)
        cfg = SamplingConfig(max_new_tokens=24, stop=(stop,))
        single = [generate_batch(model, tok, [p], cfg, batch_size=1)[0] for p in prompts]
        for slots in (3, 16):  # a team shares each op (3) / threads split the sequences (16); slots are reused
            assert _same(generate_batch(model, tok, prompts, cfg, batch_size=slots), single)
    assert {FINISH_EOS, FINISH_STOP, FINISH_LENGTH} <= {c.finish_reason for c in single}


def test_sampled_batch_equals_single(odd, tiny_texts, engine):
    model, tok = odd
    prompts = _prompts(tok, tiny_texts, 9)
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0, top_k=40, top_p=0.9, seed=5)
    single = [generate_batch(model, tok, [p], cfg, batch_size=1)[0] for p in prompts]
    assert _same(generate_batch(model, tok, prompts, cfg, batch_size=8), single)


@torch.inference_mode()
def test_kernel_step_matches_the_forward(odd, tiny_texts):
    model, tok = odd
    if kernels.load() is None:
        pytest.skip("decode kernels unavailable here")
    prompts = _prompts(tok, tiny_texts, 5)
    dec = Decoder(model, 5, 80)
    assert dec.path == "kernel"
    for s, p in enumerate(prompts):
        dec.prefill(s, p)
    seqs = [list(p) for p in prompts]
    for _ in range(12):
        nxt = [(7 * len(q)) % model.config.vocab_size for q in seqs]
        got = dec.step(list(range(5)), nxt).clone()
        for s, q in enumerate(seqs):
            q.append(nxt[s])
            want = model(torch.tensor([q]))[0, -1]
            assert torch.allclose(got[s], want, atol=1e-4, rtol=1e-4)


@pytest.fixture(params=[0, 1], ids=["shared-ops", "one-thread-or-split"])
def teams(request, monkeypatch):
    """Every plan a step can run on, forced, even on the tiny model (normally one thread)."""
    if kernels.load() is None:
        pytest.skip("decode kernels unavailable here")
    monkeypatch.setattr(kernels.DecodeKernel, "TEAM_MIN_LAYER_BYTES", 0)
    monkeypatch.setattr(kernels._Pacer, "choose", lambda self, n, plans: plans[request.param])


def test_batched_equals_single_on_thread_teams(odd, tiny_texts, teams):
    model, tok = odd
    prompts = _prompts(tok, tiny_texts, 12)
    cfg = SamplingConfig(max_new_tokens=8)
    with torch_threads(2):
        single = [generate_batch(model, tok, [p], cfg, batch_size=1)[0] for p in prompts]
        for slots in (3, 12):  # threads share each op / split the sequences
            assert _same(generate_batch(model, tok, prompts, cfg, batch_size=slots), single)


@torch.inference_mode()
def test_kernel_ignores_thread_count_and_batch(odd, tiny_texts, teams):
    model, tok = odd
    prompts = _prompts(tok, tiny_texts, 16)
    runs = {}
    for threads, n in ((1, 1), (2, 1), (2, 3), (1, 16), (2, 16)):
        dec = Decoder(model, 16, 80)
        # The prompts are cached on one thread every time: the prefill is torch's, whose matmul
        # rounds differently by thread count on some CPUs (seen on AMD EPYC); the step is the kernel's.
        with torch_threads(1):
            for s, p in enumerate(prompts[:n]):
                dec.prefill(s, p)
        with torch_threads(threads):
            runs[threads, n] = dec.step(list(range(n)), [5] * n).clone()
    for (threads, n), logits in runs.items():
        assert torch.equal(logits[0], runs[1, 1][0]), (threads, n)
    assert torch.equal(runs[1, 16], runs[2, 16]) and torch.equal(runs[2, 3], runs[1, 16][:3])


def test_a_full_slot_is_an_error(odd):
    model, _ = odd
    dec = Decoder(model, 1, 4)
    dec.prefill(0, [1, 2, 3, 4])
    with pytest.raises(ShiptwoError, match="slot 0 is full"):
        dec.step([0], [5])


def test_unavailable_kernels_are_logged_not_silent(odd, tmp_path, monkeypatch, caplog):
    model, tok = odd
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: the build must run, and fails
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(kernels, "_state", {})
    with caplog.at_level(logging.WARNING, logger="shiptwo.model.kernels"):
        dec = Decoder(model, 1, 8)
    assert dec.path == "torch" and "build of kernels.c failed" in caplog.text
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shiptwo.model.kernels"):
        assert Decoder(model, 1, 8).path == "torch"
    assert "decode kernels off" in caplog.text


def test_the_pacer_takes_the_faster_plan_and_retries_the_other():
    pacer, team, one = kernels._Pacer(), (2, False), (1, False)
    assert pacer.choose(1, [team, one]) == team  # each plan is measured first
    pacer.record(1, team, 0.050)
    assert pacer.choose(1, [team, one]) == one
    pacer.record(1, one, 0.020)  # one thread is faster (a busy machine)
    picks = [pacer.choose(1, [team, one]) for _ in range(2 * kernels._Pacer.RETRY_EVERY)]
    assert picks.count(team) == 2 and picks.count(one) == len(picks) - 2  # the team is re-measured now and then
    for _ in range(10):
        pacer.record(1, team, 0.010)  # the machine got quiet: the team wins again
    assert pacer.choose(1, [team, one]) == team or pacer.steps % kernels._Pacer.RETRY_EVERY == 0
