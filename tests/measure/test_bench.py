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
