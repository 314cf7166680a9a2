"""bench: figures are measured per runtime from real runs (no timing assertions here: those live in
benchmarks/), peers run on the same weights, and bad requests are one clear error."""

from __future__ import annotations

import json

import pytest

from shiptwo.measure.bench import RUNTIME_OURS, BenchConfig, bench_ours, run_bench
from shiptwo.stats import Stat
from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError

from shiptwo.measure.bench import BENCH_PROMPT

QUICK = BenchConfig(new_tokens=8, iterations=2, warmup=1)


def test_ours_measures_every_figure(tiny_checkpoint):
    r = bench_ours(load_checkpoint(tiny_checkpoint), QUICK)
    assert r.runtime == RUNTIME_OURS and r.new_tokens == 8 and r.iterations == 2
    assert r.prompt_tokens == len(load_checkpoint(tiny_checkpoint).tokenizer().encode(BENCH_PROMPT))
    for s in (r.decode_tok_s, r.prefill_tok_s, r.ttft_s):
        assert 0 < s.min <= s.median <= s.max
    assert r.peak_anon_rss_delta_bytes >= 0


def test_peers_run_the_same_weights(tiny_checkpoint):
    report = run_bench(tiny_checkpoint, QUICK, compare=("transformers", "llama.cpp"))
    assert [r.runtime for r in report.results] == [RUNTIME_OURS, "transformers", "llama.cpp"]
    assert len({r.prompt_tokens for r in report.results}) == 1 and len({r.threads for r in report.results}) == 1
    ratios = report.ratios()
    assert set(ratios) == {"decode_vs_transformers", "decode_vs_llama.cpp"} and all(v > 0 for v in ratios.values())
    assert "decode_vs_llama.cpp" in report.to_text()
    # the same greedy tokens: llama.cpp's read from its logits (the benchmark once took the argmax
    # of llama-cpp-python's `scores`, never written without logits_all: token 0 every step)
    ours, hf, llama = report.results
    assert ours.tokens[0] != 0 and ours.same_tokens_as_ours is None
    assert hf.same_tokens_as_ours == llama.same_tokens_as_ours == 8 == len(ours.tokens)


def test_bad_requests_are_clear_errors(tiny_checkpoint):
    with pytest.raises(ShiptwoError, match="unknown --compare runtime"):
        run_bench(tiny_checkpoint, QUICK, compare=("vllm",))
    with pytest.raises(ShiptwoError, match="new_tokens must be >= 2"):
        BenchConfig(new_tokens=1)
    with pytest.raises(ShiptwoError, match="exceed the context"):
        bench_ours(load_checkpoint(tiny_checkpoint), BenchConfig(new_tokens=10_000))


def test_stat_of():
    assert Stat.of([3.0, 1.0, 2.0]) == Stat(2.0, 1.0, 3.0, [3.0, 1.0, 2.0])
    lo, hi = Stat.of([10.0, 12.0, 11.0, 30.0, 9.0]).interval()
    assert 9.0 <= lo <= 11.0 <= hi <= 30.0  # the median's interval, over the runs
    assert Stat.of([5.0]).interval() is None  # one run has no spread


def test_cli_json(tiny_checkpoint, capsys):
    assert main(["bench", str(tiny_checkpoint), "--json", "--tokens", "4", "--iterations", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["runtime"] == RUNTIME_OURS and out["ratios"] == {}


@pytest.fixture(scope="module")
def eos_first(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with its EOS token's (tied) embedding along the prompt's final hidden
    state: greedy decoding picks EOS first (the prompt holds no EOS, so that state is unchanged)."""
    import torch

    from shiptwo.model.checkpoint import save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        h = ckpt.build_model().hidden(torch.tensor([ckpt.tokenizer().encode(BENCH_PROMPT)]))[0, -1]
    emb = ckpt.tensors["model.embed_tokens.weight"].clone()
    emb[ckpt.config.eos_token_id] = 100 * h / h.norm()
    ckpt.tensors = {**ckpt.tensors, "model.embed_tokens.weight": emb}
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("eos-first") / "model.safetensors")


def test_peers_generate_the_same_tokens_under_one_stop_rule(eos_first):
    """transformers ran with min_new_tokens, which forbids EOS: where EOS was the argmax it decoded
    another sequence than ours and llama.cpp (both take EOS and go on), and nothing compared them."""
    report = run_bench(eos_first, QUICK, compare=("transformers", "llama.cpp"))
    ours, hf, llama = report.results
    first = load_checkpoint(eos_first).config.eos_token_id
    assert ours.tokens[0] == first and len(ours.tokens) == 8
    assert hf.tokens == ours.tokens and hf.same_tokens_as_ours == 8
    assert llama.tokens == ours.tokens
    assert "tokens identical to shiptwo's: all 8" in report.to_text()


def test_a_runtime_whose_greedy_tokens_change_between_runs_is_an_error():
    from shiptwo.measure.bench import _run
    from shiptwo.measure.bench_runtimes import Runtime

    outputs = iter([[1, 2, 3], [1, 2, 4]])
    rt = Runtime("flaky", lambda: (0.0, [1.0, 2.0, 3.0], next(outputs)))
    cfg = BenchConfig(new_tokens=3)
    _run(rt, cfg)
    with pytest.raises(ShiptwoError, match="flaky's greedy tokens changed between runs \\(first at token 2\\)"):
        _run(rt, cfg)



def test_the_roofline_is_never_below_torchs_weight_stream(tiny_checkpoint, monkeypatch):
    """The roofline came from the array probe alone (a sum and a gemv over a fresh array): one that
    under-read put torch's own stream of the weights above the roofline and a runtime's share
    could pass 1. Streaming the weights reads their bytes too, so its rate bounds the bandwidth."""
    from shiptwo.measure import limits

    monkeypatch.setattr(limits, "read_bandwidth", lambda data: 1.0)  # an array probe that under-reads
    lim = run_bench(tiny_checkpoint, QUICK).limits
    assert lim.roofline_tok_s >= lim.torch_ceiling_tok_s
    ceiling = [max(a, b) * lim.weight_bytes for a, b in zip(lim.torch_stored.values, lim.torch_transposed.values)]
    assert lim.read_bandwidth.values == ceiling
