"""MODEL-2 runtime criteria: qa gates, Python validity, HumanEval, decode throughput."""

from __future__ import annotations

import pytest

from shiptwo.measure.bench import BENCH_REPORT_FILE
from shiptwo.measure.evals.python_validity import VALIDITY_PROMPTS, VALIDITY_RESULTS_FILE
from shiptwo.measure.qa import QA_REPORT_FILE




@pytest.mark.ac("AC-SHIP2-006")
def test_qa_passes_all_gates(criterion, threshold, parameter, model2_artifacts):
    from shiptwo.fileio import atomic_write_json
    from shiptwo.measure.qa import run_qa

    from shiptwo.checks.qa import qa_config

    # every bound from the spec: this criterion's parameters, and the floor/tolerance other criteria own
    cfg = qa_config(criterion.spec, criterion.profile, min_decode_tok_s=threshold("AC-SHIP2-010"), parity_tol=threshold("AC-SHIP2-009"),
                    parity_greedy_steps=parameter("AC-SHIP2-009", "greedy_steps"))
    report = run_qa(model2_artifacts.checkpoint, cfg)
    from shiptwo.checks.samples import golden_samples, write_samples

    path = atomic_write_json(criterion.evidence_dir / QA_REPORT_FILE, report.to_dict())
    golden = write_samples(golden_samples(report.golden), criterion.evidence_dir / "golden-samples.jsonl")
    failed = [g.name for g in report.gates if not g.passed] + report.missing
    criterion.check(report.failed, n=report.judged, evidence={"qa_report": path, "golden_samples": golden, "failed_gates": failed})


@pytest.mark.ac("AC-SHIP2-007")
def test_generations_parse(criterion, model2_checkpoint):
    from shiptwo.measure.evals.loss import split_texts
    from shiptwo.measure.evals.python_validity import evaluate_python_validity
    from shiptwo.fileio import atomic_write_json

    from shiptwo.checks.samples import validity_samples, write_samples

    res = evaluate_python_validity(model2_checkpoint, split_texts(criterion.profile, "test", "model2"), n=VALIDITY_PROMPTS)
    path = atomic_write_json(criterion.evidence_dir / VALIDITY_RESULTS_FILE, res.to_dict())
    samples = write_samples(validity_samples(res.samples), criterion.evidence_dir / "validity-samples.jsonl")
    criterion.check(res.valid_pct, samples=samples, n=res.n_prompts,
                    evidence={"results": path, "prompts": res.n_prompts, "requested": res.requested, "valid": res.n_valid,
                              "empty_bodies": res.n_empty})


@pytest.mark.ac("AC-SHIP2-008")
def test_humaneval_pass_at_1(criterion, profile, model2_checkpoint, model2_artifacts):
    """pass@1 over every problem; beside it, how much of each problem (prompt and canonical solution)
    occurs in the train split, so a pass earned by a copy in the training data shows."""
    from shiptwo.measure.evals.humaneval import evaluate_humaneval, write_results

    from shiptwo.checks.gate_verifiers import EVIDENCE_ARTIFACT
    from shiptwo.checks.leakage import texts_overlap
    from shiptwo.checks.samples import humaneval_samples, write_samples
    from shiptwo.data.corpus import load_corpus
    from shiptwo.fileio import atomic_write_json
    from shiptwo.measure.evals.humaneval import load_problems
    from shiptwo.training.recipes import load_recipe

    problems = load_problems()
    share, ngram = criterion.param("near_duplicate_share"), criterion.param("ngram_tokens")
    leak = texts_overlap(load_corpus(load_recipe("model2", profile).corpus),
                         [(tid, p["prompt"] + p["canonical_solution"]) for tid, p in problems.items()], share, ngram)
    overlap = atomic_write_json(criterion.evidence_dir / "train_overlap.json", leak)
    res = evaluate_humaneval(model2_checkpoint)
    results, records = write_results(res, criterion.evidence_dir, {"artifact": str(model2_artifacts.checkpoint)})
    samples = write_samples(humaneval_samples(res.records, problems), criterion.evidence_dir / "samples.jsonl")
    # the artifact is recorded with its SHA-256: `shiptwo gate --recheck K` regenerates samples with it
    criterion.check(res.pass_at_1, samples=samples, n=res.n_problems,
                    evidence={"results": results, "records": records, EVIDENCE_ARTIFACT: model2_artifacts.checkpoint,
                              "problems": res.n_problems, "prompts_truncated": res.prompts_truncated,
                              "sandbox_network": res.sandbox_network, "sandbox_memory": res.isolation.get("memory_bound"),
                              "sandbox_time_limit": res.isolation.get("time_limit"),
                              "train_overlap": overlap,
                              "summary": f"pass@1 over {res.n_problems} problems. Overlap of prompt + canonical solution "
                                         f"with the train split ({ngram}-token n-grams, every problem): "
                                         f"{leak['ngrams_in_reference']} of {leak['ngrams']} ({leak['ngram_share']:.2%}); "
                                         f"{leak['near_duplicates']} of {leak['documents_judged']} problems >= {share:.0%}"})


@pytest.mark.ac("AC-SHIP2-010")
def test_decode_throughput(criterion, model2_checkpoint, model2_artifacts):
    from shiptwo.measure.bench import BenchConfig, bench_ours
    from shiptwo.fileio import atomic_write_json

    res = bench_ours(model2_checkpoint, BenchConfig())
    path = atomic_write_json(criterion.evidence_dir / BENCH_REPORT_FILE, res.to_dict())
    runs = res.decode_tok_s
    criterion.check(runs.median, interval=runs.interval(), n=len(runs.values),
                    evidence={"bench": path, "threads": res.threads, "new_tokens": res.new_tokens, "repeats": runs.values,
                              "summary": f"median of {len(runs.values)} runs, {res.threads} thread(s), {res.engine}"})
