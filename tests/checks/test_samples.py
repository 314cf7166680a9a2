"""Per-sample evidence of HumanEval and `shiptwo gate --recheck`: regenerate with the recorded artifact,
re-score in the real sandbox, refuse on any disagreement (a tiny real checkpoint, three problems)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shiptwo.checkout import run_info
from shiptwo.checks.samples import humaneval_samples, recheck_humaneval, validity_samples, write_samples
from shiptwo.cli import main
from shiptwo.harness.evidence import describe_path, read_samples, sample_statistic
from shiptwo.harness.results import CriterionCheck, TestOutcome, combine_records, make_record, write_results
from shiptwo.harness.spec import load_spec

TASKS = 3


@pytest.fixture(scope="module")
def recorded(tiny_checkpoint):
    """The tiny model's greedy HumanEval samples on the first problems, scored in the sandbox."""
    from shiptwo.measure.evals.humaneval import generate_samples, load_problems, score_samples
    from shiptwo.model.checkpoint import load_checkpoint

    problems = load_problems(TASKS)
    samples, _ = generate_samples(load_checkpoint(tiny_checkpoint), problems)
    # make one completion correct, so both outcomes are present and a flip in either direction shows
    samples[0]["completion"] = problems[samples[0]["task_id"]]["canonical_solution"]
    result = score_samples(samples, problems)
    return humaneval_samples(result.records, problems), result


def test_samples_carry_the_figure(recorded, tmp_path):
    samples, result = recorded
    path = write_samples(samples, tmp_path / "s.jsonl")
    back = read_samples(path)
    assert [s["outcome"] for s in back][0] == "pass" and len(back) == TASKS
    assert sample_statistic(back, "pass_pct") == pytest.approx(result.pass_at_1)


def test_validity_samples_carry_the_figure():
    from shiptwo.measure.evals.python_validity import score_completions

    res = score_completions(["def f():\n    '''x'''", "def g():\n    '''y'''"], ["\n    return 1\n", "\n    return (\n"])
    samples = validity_samples(res.samples)
    assert [s["outcome"] for s in samples] == ["pass", "fail"]
    assert sample_statistic(samples, "pass_pct") == pytest.approx(res.valid_pct)


def test_recheck_agrees_with_an_honest_record(recorded, tiny_checkpoint):
    samples, _ = recorded
    # sample 0's completion was replaced by the canonical solution: the model would not regenerate it
    assert recheck_humaneval(tiny_checkpoint, samples[1:]) == []


@pytest.mark.parametrize("edit, says", [
    (lambda s: s.update(outcome="pass" if s["outcome"] == "fail" else "fail"), "the recorded completion scores"),
    (lambda s: s.update(output=s["output"] + "\n    return 0\n"), "the artifact now generates a different completion"),
    (lambda s: s.update(prompt_sha256="0" * 64), "the recorded prompt hash is not this problem's prompt"),
])
def test_recheck_finds_an_edited_sample(recorded, tiny_checkpoint, edit, says):
    samples = [dict(s) for s in recorded[0][1:]]
    edit(samples[0])
    problems = recheck_humaneval(tiny_checkpoint, samples)
    assert any(p.startswith(f"{samples[0]['id']}: ") and says in p for p in problems), problems


SPEC = """\
models:
  model2: {name: MODEL-2, release_profiles: [default], required: all}
criteria:
  - id: AC-S2-001
    model: model2
    title: HumanEval pass@1
    metric: humaneval_pass_at_1
    comparison: ">="
    threshold: 0
    unit: "%"
    class: optimization
    samples: {statistic: pass_pct, recheck: humaneval}
"""


def _gate_args(tmp_path, samples, artifact: dict) -> tuple[list[str], Path]:
    """A checkout with one sampled HumanEval criterion and a results file recording `samples`
    measured on the evidence `artifact` (a kept file record); the gate's arguments with --recheck 2."""
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "ship-two.yaml").write_text(SPEC)
    (tmp_path / "acceptance").mkdir()
    (tmp_path / "acceptance" / "test_s.py").write_text("import pytest\n\n@pytest.mark.ac('AC-S2-001')\ndef test_he(criterion): ...\n")
    spec = load_spec(tmp_path / "spec" / "ship-two.yaml")
    check = CriterionCheck(spec.criterion("AC-S2-001"), "default", tmp_path / "reports" / "evidence" / "run" / "AC-S2-001")
    path = write_samples(samples, check.evidence_dir / "samples.jsonl")
    check.evaluate(sample_statistic(samples, "pass_pct"), samples=path)
    check.evidence = {"artifact": artifact}
    node = "acceptance/test_s.py::test_he"
    entry = combine_records([make_record(node, spec.criterion("AC-S2-001"), "default", TestOutcome("call", "passed", 1.0), check, [node])])
    head = run_info(Path(__file__).parent, "", "")["commit"]
    results = tmp_path / "reports" / "results.json"
    write_results(results, {"AC-S2-001": entry}, {"commit": head, "dirty": False, "spec_sha256": spec.sha256,
                                                  "profile": "default", "time": "t", "run_id": "run"})
    return ["gate", "--spec", str(tmp_path / "spec" / "ship-two.yaml"), "--results", str(results), "--recheck", "2", "--seed", "1"], results


def _store(tmp_path, monkeypatch, checkpoint: Path) -> Path:
    """The artifact store ($SHIPTWO_ARTIFACTS) holding `checkpoint` as MODEL-2's default build."""
    store = tmp_path / "store"
    stored = store / "model2" / "default" / "0123456789abcdef" / "best.safetensors"
    stored.parent.mkdir(parents=True)
    shutil.copyfile(checkpoint, stored)
    monkeypatch.setenv("SHIPTWO_ARTIFACTS", str(store))
    return stored


def test_gate_recheck_end_to_end(recorded, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """`shiptwo gate --recheck K` releases an honest record and refuses one whose samples were forged
    consistently (file, hash and figure all edited): only re-execution can see that."""
    from shiptwo.fileio import sha256_file

    stored = _store(tmp_path, monkeypatch, tiny_checkpoint)
    samples = recorded[0][1:]  # the model's own completions
    args, results = _gate_args(tmp_path, samples, describe_path(stored))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): RELEASE" in out and "note: AC-S2-001: rechecked 2 of 2 samples (humaneval)" in out

    forged = [dict(s, outcome="pass") for s in samples]  # every failure turned into a pass, consistently
    doc = json.loads(results.read_text())
    e = doc["criteria"]["AC-S2-001"]
    kept = Path(e["samples"]["path"])
    write_samples(forged, kept)
    e["samples"]["sha256"] = sha256_file(kept)
    e["samples"]["value"] = e["measured"] = e["legs"][0]["measured"] = e["legs"][0]["judged"] = 100.0
    results.write_text(json.dumps(doc))
    assert main(args[:-4]) == 0, "without --recheck a consistent forgery of the samples is not visible"
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "model2 (MODEL-2): REFUSED" in out
    assert "AC-S2-001 REFUSED: recheck: " in out and "recorded pass, the recorded completion scores fail again" in out


def test_gate_recheck_regenerates_only_with_the_models_stored_artifact(recorded, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """The samples are honest for the artifact the record names, but that is not MODEL-2's build in the
    store (a stronger model kept elsewhere, or a copy whose bytes are not the stored file's): --recheck
    would regenerate them with it and agree, and --rebuild compares only the store. Refused by name."""
    stored = _store(tmp_path, monkeypatch, tiny_checkpoint)
    elsewhere = tmp_path / "elsewhere" / "stronger.safetensors"  # stands for a better model that made the samples
    elsewhere.parent.mkdir()
    shutil.copyfile(tiny_checkpoint, elsewhere)
    stored.write_bytes(b"the weak model the store holds")
    copy = tmp_path / "copy" / "best.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(tiny_checkpoint, copy)
    for artifact, says in [(describe_path(elsewhere), f"{elsewhere} is not a model2 artifact of profile default in the store"),
                           ({**describe_path(copy), "copied_from": str(stored)}, f"{copy} is not a copy of {stored}")]:
        root = tmp_path / str(len(says))
        root.mkdir()
        args, _ = _gate_args(root, recorded[0][1:], artifact)
        assert main(args) == 1
        out = capsys.readouterr().out
        assert f"AC-S2-001 REFUSED: recheck: artifact: {says}" in out, out
