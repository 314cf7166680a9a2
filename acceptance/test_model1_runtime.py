"""MODEL-1 runtime criteria: `shiptwo run` emits valid Python, HumanEval reproduces the reference
recorded with MODEL-1's artifacts, qa gates, decode throughput of the Q8_0 GGUF in llama.cpp.

`model1_artifacts` comes from MODEL-1's builder; until it exists these tests ERROR (honestly)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shiptwo.errors import ShiptwoError

from shiptwo.measure.bench import BENCH_REPORT_FILE
from shiptwo.measure.evals.humaneval import HUMANEVAL_STOP
from shiptwo.measure.qa import QA_REPORT_FILE


@pytest.fixture(scope="module")
def evidence_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("model1-runtime")


@pytest.mark.ac("AC-SHIP1-002")
def test_run_emits_valid_python(criterion, model1_hf_dir, evidence_dir):
    from shiptwo.measure.evals.python_validity import run_output_parses
    from shiptwo.fileio import atomic_write_text

    cmd = [sys.executable, "-m", "shiptwo.cli", "run", str(model1_hf_dir), "--prompt", "def fib(n):", "--max-tokens", "128"]
    for stop in HUMANEVAL_STOP:
        cmd += ["--stop", stop]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = atomic_write_text(evidence_dir / "run-fib.txt", proc.stdout + proc.stderr)
    measured = run_output_parses(proc.stdout.rstrip("\n")) if proc.returncode == 0 else 0
    criterion.check(measured, evidence={"command": " ".join(cmd[2:]), "output": out, "exit_status": proc.returncode})


@pytest.mark.ac("AC-SHIP1-005")
def test_humaneval_reproduces_reference(criterion, model1_checkpoint, model1_artifacts, evidence_dir):
    from shiptwo.measure.evals.humaneval import evaluate_humaneval, read_reference, reference_gap, write_results
    from shiptwo.training.recipes import load_sft_recipe

    recipe = load_sft_recipe(criterion.profile)
    if recipe.humaneval_reference is None:
        raise ShiptwoError(f"{recipe.path}: profiles.{recipe.profile}.sft.humaneval_reference: no reference recorded")
    ref = read_reference(recipe.humaneval_reference)  # committed, recorded from an earlier build
    res = evaluate_humaneval(model1_checkpoint, limit=ref["n_problems"])
    results, samples = write_results(res, evidence_dir, {"artifact": str(model1_artifacts.checkpoint)})
    criterion.check(reference_gap(res, ref, str(recipe.humaneval_reference)), evidence={
        "pass@1": res.pass_at_1, "reference_pass@1": ref["pass@1"], "reference": recipe.humaneval_reference,
        "results": results, "samples": samples, "problems": res.n_problems})


@pytest.mark.ac("AC-SHIP1-006")
def test_qa_passes_all_gates(criterion, threshold, model1_artifacts, evidence_dir):
    from shiptwo.fileio import atomic_write_json
    from shiptwo.measure.qa import QAConfig, run_qa

    cfg = QAConfig(min_decode_tok_s=threshold("AC-SHIP1-007"), parity_tol=threshold("AC-SHIP2-009"), profile=criterion.profile)
    report = run_qa(model1_artifacts.checkpoint, cfg)
    path = atomic_write_json(evidence_dir / QA_REPORT_FILE, report.to_dict())
    criterion.check(report.failed, evidence={"qa_report": path, "failed_gates": [g.name for g in report.gates if not g.passed]})


@pytest.mark.ac("AC-SHIP1-007")
def test_quantized_decode_throughput(criterion, model1_checkpoint, model1_gguf_q8_0, evidence_dir):
    from shiptwo.measure.bench import BenchConfig, bench_llamacpp
    from shiptwo.fileio import atomic_write_json

    cfg = BenchConfig()
    res = bench_llamacpp(model1_gguf_q8_0, model1_checkpoint.tokenizer().encode(cfg.prompt), cfg, runtime="llama.cpp q8_0")
    path = atomic_write_json(evidence_dir / BENCH_REPORT_FILE, res.to_dict())
    criterion.check(res.decode_tok_s.median, evidence={"bench": path, "gguf": model1_gguf_q8_0, "threads": res.threads})
