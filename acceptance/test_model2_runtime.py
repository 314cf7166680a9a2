"""MODEL-2 runtime criteria: qa gates, Python validity, HumanEval, decode throughput."""

from __future__ import annotations

import pytest

from shiptwo import constants as C


@pytest.fixture(scope="module")
def ckpt2(model2_artifacts):
    from shiptwo.checkpoint import load_checkpoint

    return load_checkpoint(model2_artifacts.checkpoint)


@pytest.fixture(scope="module")
def evidence_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("model2-runtime")  # the artifact store is hashed: evidence goes beside it


@pytest.mark.ac("AC-SHIP2-006")
def test_qa_passes_all_gates(criterion, model2_artifacts, evidence_dir):
    from shiptwo.fileio import atomic_write_json
    from shiptwo.qa import QAConfig, run_qa

    report = run_qa(model2_artifacts.checkpoint, criterion.profile,
                    QAConfig(profile=criterion.profile, throughput_criterion=C.QA_THROUGHPUT_CRITERION))
    path = atomic_write_json(evidence_dir / C.QA_REPORT_FILE, report.to_dict())
    failed = [g.name for g in report.gates if not g.passed]
    criterion.check(report.failed, evidence={"qa_report": path, "failed_gates": failed})


@pytest.mark.ac("AC-SHIP2-007")
def test_generations_parse(criterion, ckpt2, evidence_dir):
    from shiptwo.evals.loss import split_texts
    from shiptwo.evals.python_validity import evaluate_python_validity
    from shiptwo.fileio import atomic_write_json

    res = evaluate_python_validity(ckpt2, split_texts(criterion.profile, "test", "model2"), n=C.VALIDITY_PROMPTS)
    path = atomic_write_json(evidence_dir / C.VALIDITY_RESULTS_FILE, res.to_dict())
    criterion.check(res.valid_pct, evidence={"results": path, "prompts": res.n_prompts, "requested": res.requested, "valid": res.n_valid,
                                             "empty_bodies": res.n_empty})


@pytest.mark.ac("AC-SHIP2-008")
def test_humaneval_pass_at_1(criterion, ckpt2, model2_artifacts, evidence_dir):
    from shiptwo.evals.humaneval import evaluate_humaneval, write_results

    res = evaluate_humaneval(ckpt2)
    results, samples = write_results(res, evidence_dir, {"artifact": str(model2_artifacts.checkpoint)})
    criterion.check(res.pass_at_1, evidence={"results": results, "samples": samples, "problems": res.n_problems,
                                             "prompts_truncated": res.prompts_truncated, "sandbox_network": res.sandbox_network})


@pytest.mark.ac("AC-SHIP2-010")
def test_decode_throughput(criterion, ckpt2, model2_artifacts, evidence_dir):
    from shiptwo.bench import BenchConfig, bench_ours
    from shiptwo.fileio import atomic_write_json

    res = bench_ours(ckpt2, BenchConfig())
    path = atomic_write_json(evidence_dir / C.BENCH_REPORT_FILE, res.to_dict())
    criterion.check(res.decode_tok_s.median, evidence={"bench": path, "threads": res.threads,
                                                       "new_tokens": res.new_tokens, "min": res.decode_tok_s.min})
