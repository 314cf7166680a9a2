"""Change against a baseline: a real regression is flagged and blocks, a noise-sized one does not,
Holm corrects across criteria, and different environments or prompt sets are not comparable."""

from __future__ import annotations

import copy
import math
import json
from pathlib import Path

import pytest

from shiptwo.fileio import sha256_bytes
from shiptwo.harness.compare import (BETTER, MANN_WHITNEY, MCNEMAR, NO_CHANGE, NOT_COMPARABLE, UNTESTED, WILCOXON,
                                     WORSE, blocking_regressions, change_text, compare)
from shiptwo.harness.results import Results
from shiptwo.harness.spec import load_spec

SPEC_TEXT = """
models:
  model2: {name: MODEL-2, required: all}
criteria:
  - {id: AC-T2-001, model: model2, title: pass rate, metric: humaneval_pass_at_1, comparison: ">=", threshold: 30,
     unit: "%", class: data, samples: {statistic: pass_pct}, change: {max_regression: 2.0, blocking: true}}
  - {id: AC-T2-002, model: model2, title: decode, metric: decode_tokens_per_second, comparison: ">=", threshold: 10,
     unit: tok/s, class: infrastructure, change: {max_regression: {relative: 0.1}, blocking: true}}
  - {id: AC-T2-003, model: model2, title: loss, metric: val_loss, comparison: "<=", threshold: 3,
     unit: nats, class: optimization, samples: {statistic: mean}}
  - {id: AC-T2-004, model: model2, title: defects, metric: defects, comparison: "==", threshold: 0,
     unit: defects, class: packaging}
"""
ENV = {"shiptwo_commit": "a" * 40, "versions": {"torch": "2.13.0"}, "python": "3.11.7", "cpu_model": "Xeon",
       "cpu_count": 2, "torch_threads": 2, "accelerator": "none"}


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_TEXT)
    return load_spec(path)


def _samples(path: Path, outcomes: list[bool] | None = None, values: list[float] | None = None, prompt: str = "p") -> dict:
    rows = [{"id": f"T/{i}", "prompt_sha256": sha256_bytes(f"{prompt}{i}".encode()), "output": "x",
             **({"outcome": "pass" if o else "fail"} if values is None else {"value": o})}
            for i, o in enumerate(outcomes if values is None else values)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"kind": "file", "path": str(path), "sha256": "", "n": len(rows)}


def _entry(measured, **extra) -> dict:
    return {"outcome": "PASS", "profile": "default", "commit": "c", "time": "t", "measured": measured, **extra}


def _results(criteria: dict, env: dict | None = ENV) -> Results:
    run = {"commit": "c", "spec_sha256": "s", "profile": "default", "time": "t"}
    if env is not None:
        run["environment"] = env
    return Results(run, criteria)


def _pass_runs(tmp_path, lost: int, gained: int, n: int = 164, base_pass: int = 82):
    """Baseline with `base_pass` of n passing; the current run loses `lost` of them and gains `gained`."""
    base = [i < base_pass for i in range(n)]
    cur = list(base)
    for i in range(lost):
        cur[i] = False
    for i in range(gained):
        cur[base_pass + i] = True
    b = _entry(100 * sum(base) / n, samples=_samples(tmp_path / "base.jsonl", base))
    c = _entry(100 * sum(cur) / n, samples=_samples(tmp_path / "cur.jsonl", cur))
    return b, c


def _by_id(changes):
    return {ch.cid: ch for ch in changes}


def test_real_regression_is_flagged_and_blocks(tmp_path, spec):
    b, c = _pass_runs(tmp_path, lost=20, gained=2)
    ch = _by_id(compare(spec, _results({"AC-T2-001": c}), _results({"AC-T2-001": b})))["AC-T2-001"]
    assert ch.test == MCNEMAR and ch.verdict == WORSE and ch.n == 164
    assert ch.p == pytest.approx(2 * sum(math.comb(22, k) for k in range(3)) / 2 ** 22)
    assert ch.effect == pytest.approx(-100 * 18 / 164) and ch.interval[1] < 0
    assert ch.regression == pytest.approx(100 * 18 / 164) and ch.allowed == 2.0
    assert ch.blocks and blocking_regressions([ch]) == [ch]
    assert "worse" in change_text(ch) and "McNemar" in change_text(ch) and "[blocking]" in change_text(ch)


def test_noise_sized_change_is_not_flagged(tmp_path, spec):
    # 5 lost, 3 gained: a 1.2-point drop, the size of AC-SHIP1-005's band, is noise on 164 problems
    b, c = _pass_runs(tmp_path, lost=5, gained=3)
    ch = _by_id(compare(spec, _results({"AC-T2-001": c}), _results({"AC-T2-001": b})))["AC-T2-001"]
    assert ch.verdict == NO_CHANGE and ch.p > 0.5 and not ch.blocks
    assert ch.regression == pytest.approx(100 * 2 / 164)


def test_improvement_is_better(tmp_path, spec):
    b, c = _pass_runs(tmp_path, lost=1, gained=25)
    assert _by_id(compare(spec, _results({"AC-T2-001": c}), _results({"AC-T2-001": b})))["AC-T2-001"].verdict == BETTER


def test_changed_prompt_set_is_not_comparable(tmp_path, spec):
    b, _ = _pass_runs(tmp_path, lost=0, gained=0)
    c = _entry(50.0, samples=_samples(tmp_path / "other.jsonl", [i < 82 for i in range(164)], prompt="q"))
    ch = _by_id(compare(spec, _results({"AC-T2-001": c}), _results({"AC-T2-001": b})))["AC-T2-001"]
    assert ch.verdict == NOT_COMPARABLE and "prompt sets differ" in ch.reason and "164 prompts changed" in ch.reason
    assert not ch.blocks


TIMES_BASE = [100.0, 101.0, 99.0, 100.5, 102.0]
TIMES_SLOW = [80.0, 81.0, 79.0, 82.0, 80.5]


def test_slower_throughput_on_the_same_machine_is_a_regression(spec):
    b = _entry(100.5, evidence={"repeats": TIMES_BASE})
    c = _entry(80.5, evidence={"repeats": TIMES_SLOW})
    ch = _by_id(compare(spec, _results({"AC-T2-002": c}), _results({"AC-T2-002": b})))["AC-T2-002"]
    assert ch.test == MANN_WHITNEY and ch.p == pytest.approx(2 / 252) and ch.verdict == WORSE
    assert ch.allowed == pytest.approx(10.05) and ch.regression == pytest.approx(20.0) and ch.blocks


def test_throughput_on_another_machine_is_not_comparable(spec):
    b = _entry(100.5, evidence={"repeats": TIMES_BASE})
    c = _entry(80.5, evidence={"repeats": TIMES_SLOW})
    other = {**ENV, "cpu_model": "EPYC", "shiptwo_commit": "b" * 40}
    ch = _by_id(compare(spec, _results({"AC-T2-002": c}, other), _results({"AC-T2-002": b})))["AC-T2-002"]
    assert ch.verdict == NOT_COMPARABLE and "cpu_model: Xeon vs EPYC" in ch.reason and not ch.blocks
    assert "not comparable" in change_text(ch)
    # a commit change alone is what a baseline comparison is for: still comparable
    same_box = {**ENV, "shiptwo_commit": "b" * 40}
    assert _by_id(compare(spec, _results({"AC-T2-002": c}, same_box), _results({"AC-T2-002": b})))["AC-T2-002"].verdict == WORSE
    missing = _by_id(compare(spec, _results({"AC-T2-002": c}, None), _results({"AC-T2-002": b})))["AC-T2-002"]
    assert missing.verdict == NOT_COMPARABLE and "no environment fingerprint" in missing.reason


def test_machine_independent_criterion_ignores_the_fingerprint(tmp_path, spec):
    b, c = _pass_runs(tmp_path, lost=20, gained=2)
    other = {**ENV, "cpu_model": "EPYC"}
    assert _by_id(compare(spec, _results({"AC-T2-001": c}, other), _results({"AC-T2-001": b})))["AC-T2-001"].verdict == WORSE


def test_paired_values_use_wilcoxon_and_lower_loss_is_better(tmp_path, spec):
    base = [2.0 + 0.01 * i for i in range(30)]
    worse = [v + 0.1 + 0.001 * i for i, v in enumerate(base)]
    b = _entry(sum(base) / 30, samples=_samples(tmp_path / "b.jsonl", values=base))
    c = _entry(sum(worse) / 30, samples=_samples(tmp_path / "c.jsonl", values=worse))
    ch = _by_id(compare(spec, _results({"AC-T2-003": c}), _results({"AC-T2-003": b})))["AC-T2-003"]
    assert ch.test == WILCOXON and ch.verdict == WORSE and ch.effect > 0 and ch.interval[0] > 0
    ch = _by_id(compare(spec, _results({"AC-T2-003": b}), _results({"AC-T2-003": c})))["AC-T2-003"]
    assert ch.verdict == BETTER and not ch.blocks  # no change rule: never blocks


def test_holm_corrects_across_the_criteria_compared(tmp_path, spec):
    # McNemar 7 lost / 0 gained: p = 2/128 = 0.0156 alone; with a Mann-Whitney p of 2/252 beside it,
    # Holm gives min(2*0.0079, ...) and 1*0.0156: both still significant; with a p = 1 third criterion,
    # the McNemar p is multiplied by 2 (second smallest of three) -> 0.031, still < 0.05
    b, c = _pass_runs(tmp_path, lost=7, gained=0)
    tb, tc = _entry(100.5, evidence={"repeats": TIMES_BASE}), _entry(80.5, evidence={"repeats": TIMES_SLOW})
    flat = [2.0, 2.1, 2.2]
    lb = _entry(2.1, samples=_samples(tmp_path / "lb.jsonl", values=flat))
    lc = _entry(2.1, samples=_samples(tmp_path / "lc.jsonl", values=flat))
    changes = _by_id(compare(spec, _results({"AC-T2-001": c, "AC-T2-002": tc, "AC-T2-003": lc}),
                             _results({"AC-T2-001": b, "AC-T2-002": tb, "AC-T2-003": lb})))
    assert changes["AC-T2-001"].p == pytest.approx(2 / 128)
    assert changes["AC-T2-001"].p_holm == pytest.approx(2 * 2 / 128)
    assert changes["AC-T2-002"].p_holm == pytest.approx(3 * 2 / 252)
    assert changes["AC-T2-003"].p_holm == 1.0 and changes["AC-T2-003"].verdict == NO_CHANGE
    # 4 lost alone: p = 0.125, not significant before or after correction
    b4, c4 = _pass_runs(tmp_path, lost=4, gained=0)
    assert _by_id(compare(spec, _results({"AC-T2-001": c4}), _results({"AC-T2-001": b4})))["AC-T2-001"].verdict == NO_CHANGE


def test_single_measurements_are_reported_untested(spec):
    ch = _by_id(compare(spec, _results({"AC-T2-004": _entry(2)}), _results({"AC-T2-004": _entry(0)})))["AC-T2-004"]
    assert ch.verdict == UNTESTED and ch.effect == 2 and ch.regression == 2 and ch.p is None and not ch.blocks
    same = _by_id(compare(spec, _results({"AC-T2-004": _entry(0)}), _results({"AC-T2-004": _entry(0)})))["AC-T2-004"]
    assert same.verdict == NO_CHANGE


def test_profile_or_missing_entry_is_not_comparable(tmp_path, spec):
    b, c = _pass_runs(tmp_path, lost=20, gained=2)
    full = copy.deepcopy(c)
    full["profile"] = "full"
    changes = _by_id(compare(spec, _results({"AC-T2-001": full}), _results({"AC-T2-001": b})))
    assert changes["AC-T2-001"].verdict == NOT_COMPARABLE and "profile default vs full" in changes["AC-T2-001"].reason
    assert changes["AC-T2-004"].verdict == NOT_COMPARABLE and "no result" in changes["AC-T2-004"].reason


def test_missing_samples_file_is_not_comparable(tmp_path, spec):
    b, c = _pass_runs(tmp_path, lost=20, gained=2)
    Path(b["samples"]["path"]).unlink()
    ch = _by_id(compare(spec, _results({"AC-T2-001": c}), _results({"AC-T2-001": b})))["AC-T2-001"]
    assert ch.verdict == NOT_COMPARABLE and "samples unreadable" in ch.reason
