"""qa: each of the eight gates passes on a sound artifact and fails on an artifact with its defect;
a gate that cannot run says NOT RUN and does not pass."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save as st_save

from shiptwo.model.checkpoint import load_checkpoint, read_safetensors
from shiptwo.cli import main
from shiptwo.fileio import atomic_write_bytes
from shiptwo.measure.qa import (
    GATES, QAConfig, gate_format_parity, gate_golden_output, gate_metadata, gate_no_degeneration,
    gate_tensor_contract, gate_tensor_statistics, gate_throughput, gate_tokenizer_round_trip,
    read_subject, repetition_fraction, run_qa, tensor_defects,
)

from shiptwo.formats.names import HF_ARCHITECTURE_CLASS
from shiptwo.model.checkpoint import META_ARCHITECTURE, META_LICENSE, META_TOKENIZER

FAST = QAConfig(min_decode_tok_s=1.0, parity_tol=1e-3, parity_greedy_steps=8, golden_min_pass=1.0, quant_max_kl=0.01, quant_min_top1=0.95,
                quant_min_golden_unchanged=0.75, quant_golden_tokens=8, max_abs_weight=1e4, max_repetition=0.5, throughput_tokens=8)


@pytest.fixture(scope="module")
def sound(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint made to look trained: norms moved off their constant init."""
    from shiptwo.model.checkpoint import save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    gen = torch.Generator().manual_seed(1)
    for name, t in ckpt.tensors.items():
        if t.dim() == 1:
            ckpt.tensors[name] = t + 0.01 * torch.randn(t.shape, generator=gen)
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("qa") / "sound.safetensors")


def _rewrite(src, dst, meta=None, tensors=None):
    """Copy a checkpoint with its metadata and/or tensors edited (the defective artifacts)."""
    m, t = read_safetensors(src)
    if meta:
        meta(m)
    if tensors:
        tensors(t)
    atomic_write_bytes(dst, st_save(t, metadata=m))
    return dst


def _gate(report, name):
    return next(g for g in report.gates if g.name == name)


def test_sound_artifact_passes_its_gates_and_cli_exits_1_on_a_failed_gate(sound, capsys):
    # the floor is impossible, so the throughput gate fails and the exit status is 1
    assert main(["qa", str(sound), "--min-tok-s", "1e12", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    gates = {g["name"]: g for g in report["gates"]}
    assert list(gates) == list(GATES) and report["not_run"] == []
    for name, g in gates.items():
        if name not in ("golden_output", "no_degeneration", "throughput"):  # an untrained model's outputs may loop
            assert g["passed"], (name, g["detail"])
    assert not gates["throughput"]["passed"] and isinstance(gates["no_degeneration"]["figure"], float)
    assert gates["format_parity"]["figure"] <= 1e-3 and gates["format_parity"]["detail"].startswith("F32")
    assert "32 greedy tokens compared" in gates["format_parity"]["detail"]  # AC-SHIP2-009's greedy_steps, from the spec
    # an untrained model writes no working function: the golden gate (floor from the spec) fails
    assert not gates["golden_output"]["passed"] and gates["golden_output"]["figure"] == "0/8"
    # each golden prompt's record, for per-sample evidence (paired across runs by prompt hash)
    assert [r["id"] for r in report["golden"]][:2] == ["add", "subtract"] and not any(r["passed"] for r in report["golden"])
    from shiptwo.checks.samples import golden_samples

    samples = golden_samples(report["golden"])
    assert len(samples) == 8 and {s["outcome"] for s in samples} == {"fail"} and len(samples[0]["prompt_sha256"]) == 64


def test_metadata_gate_fails_without_tokenizer(sound, tmp_path):
    bad = _rewrite(sound, tmp_path / "notok.safetensors", meta=lambda m: m.pop(META_TOKENIZER))
    sub = read_subject(bad)
    gate = gate_metadata(sub)
    assert not gate.passed and META_TOKENIZER in gate.detail
    assert not gate_tokenizer_round_trip(sub).passed


def test_metadata_gate_fails_without_provenance_or_with_class_name(sound, tmp_path):
    bad = _rewrite(sound, tmp_path / "nolic.safetensors", meta=lambda m: m.pop(META_LICENSE))
    assert not gate_metadata(read_subject(bad)).passed
    bad = _rewrite(sound, tmp_path / "cls.safetensors", meta=lambda m: m.update({META_ARCHITECTURE: HF_ARCHITECTURE_CLASS}))
    gate = gate_metadata(read_subject(bad))
    assert not gate.passed and HF_ARCHITECTURE_CLASS in gate.detail


def test_tensor_contract_gate_fails_on_extra_and_misshapen_tensor(sound, tmp_path):
    bad = _rewrite(sound, tmp_path / "extra.safetensors", tensors=lambda t: t.update({"model.extra.weight": torch.ones(3)}))
    sub = read_subject(bad)
    gate = gate_tensor_contract(sub)
    assert not gate.passed and "extra model.extra.weight" in gate.detail
    assert sub.ckpt is None  # later gates then fail instead of crashing
    bad = _rewrite(sound, tmp_path / "shape.safetensors",
                   tensors=lambda t: t.update({"model.norm.weight": torch.ones(3)}))
    assert not gate_tensor_contract(read_subject(bad)).passed


def test_full_run_on_broken_contract_fails_without_crashing(sound, tmp_path):
    bad = _rewrite(sound, tmp_path / "missing.safetensors", tensors=lambda t: t.pop("model.norm.weight"))
    report = run_qa(bad, cfg=FAST)
    assert len(report.gates) == 8 and not report.passed
    assert not _gate(report, "tensor_contract").passed and not _gate(report, "throughput").passed


def test_statistics_gate_fails_on_nan_and_constant_tensors(sound, tmp_path):
    def nan(t):
        t["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")

    gate = gate_tensor_statistics(read_subject(_rewrite(sound, tmp_path / "nan.safetensors", tensors=nan)), FAST)
    assert not gate.passed and "NaN" in gate.detail
    const = {"w": torch.full((4, 4), 0.5), "z": torch.zeros(3), "big": torch.tensor([1.0, 1e6]), "ok": torch.randn(5)}
    found = tensor_defects(const, max_abs=1e4)
    assert found == ["big max |x| 1e+06 > 10000", "w is constant (0.5)", "z is all zero"]


def test_statistics_gate_fails_on_untrained_constant_norms(tiny_checkpoint):
    gate = gate_tensor_statistics(read_subject(tiny_checkpoint), FAST)  # norms still at their init of ones
    assert not gate.passed and "constant" in gate.detail


def test_tokenizer_gate_fails_on_lossy_tokenizer(sound, tmp_path):
    def strip(m):
        tok = json.loads(m[META_TOKENIZER])
        tok["normalizer"] = {"type": "Strip", "strip_left": True, "strip_right": True}
        m[META_TOKENIZER] = json.dumps(tok)

    gate = gate_tokenizer_round_trip(read_subject(_rewrite(sound, tmp_path / "lower.safetensors", meta=strip)))
    assert not gate.passed and "leading and trailing" in gate.detail


def test_golden_programs_are_judged_by_their_checks_not_by_a_recording():
    from shiptwo.measure.golden import GoldenResult, judge_programs, load_golden

    golden = load_golden()
    right = {"add": " a + b", "subtract": " a - b", "square": " x * x", "is_even": " n % 2 == 0", "first": " items[0]",
             "last": " items[-1]", "length": " len(items)", "maximum": "    return b"}
    assert sorted(right) == sorted(p.id for p in golden.prompts)

    def result(completions):
        return GoldenResult(judge_programs(golden, [p.prompt + completions[p.id] for p in golden.prompts]))

    good = result(right)
    assert good.share == 1.0 and gate_golden_output(good, FAST).passed
    # plausible code with wrong answers, and a completion that exits before its check can run
    wrong = result({**right, "add": " a - b", "square": " x + x", "first": " items[0]\nraise SystemExit(0)"})
    gate = gate_golden_output(wrong, FAST)
    assert not gate.passed and gate.figure == "5/8" and "failed: add, square, first" in gate.detail
    assert [r["result"] for r in wrong.records if r["id"] == "first"] == ["exited before its check ran"]
    assert gate_golden_output(wrong, dataclasses.replace(FAST, golden_min_pass=0.625)).passed
    gate = gate_golden_output(None, FAST)
    assert not gate.passed and not gate.ran and gate.detail.startswith("not run")


def test_chat_answers_are_judged_on_their_code_block():
    from shiptwo.measure.golden import GoldenPrompt, program_from_answer

    p = GoldenPrompt("add", "def add(a, b):\n    return", "assert add(2, 3) == 5")
    whole = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert program_from_answer(p, whole) == "def add(a, b):\n    return a + b\n"
    assert program_from_answer(p, "```\n a + b\n```") == "def add(a, b):\n    return a + b\n"  # the body only
    assert program_from_answer(p, " a + b") == "def add(a, b):\n    return a + b"  # no fence at all


def test_canaries_reach_a_chat_model_through_its_template(tiny_checkpoint):
    from shiptwo.data.chat import CHAT_TEMPLATE, render_chat
    from shiptwo.measure.golden import load_golden, served_prompts

    golden, base = load_golden(), load_checkpoint(tiny_checkpoint)
    assert served_prompts(base, golden, ["for i in range(3):\n"]) == ["for i in range(3):\n"]  # a base model: as is
    chat = dataclasses.replace(base, chat_template=CHAT_TEMPLATE)
    [asked] = served_prompts(chat, golden, ["for i in range(3):\n"])
    question = f"{golden.instruction}\n```python\nfor i in range(3):\n\n```"
    assert asked == render_chat([{"role": "user", "content": question}], True, CHAT_TEMPLATE)


def test_degeneration_gate_fails_on_the_original_models_output():
    assert repetition_fraction(" č č č č") == 1.0
    assert not gate_no_degeneration([" č č č č"], FAST).passed
    assert not gate_no_degeneration(["    return x\n" + "\n" * 40], FAST).passed
    code = "    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    assert repetition_fraction(code) < 0.2
    assert gate_no_degeneration([code, "x = [1, 2, 3]\n"], FAST).passed
    assert not gate_no_degeneration([], FAST).passed


def test_throughput_gate_fails_on_impossible_floor(sound):
    ckpt = load_checkpoint(sound)
    assert gate_throughput(ckpt, FAST).passed
    gate = gate_throughput(ckpt, dataclasses.replace(FAST, min_decode_tok_s=1e12))
    assert not gate.passed and "floor 1e+12" in gate.detail


def test_cli_qa_works_from_any_directory_with_the_specs_thresholds(sound, tmp_path, monkeypatch, capsys):
    """`cd /tmp && shiptwo qa CKPT`: the spec is found from the checkout; the floor is the profile's."""
    from shiptwo.harness.spec import load_spec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHIPTWO_PROFILE", "smoke")
    main(["qa", str(sound), "--json"])
    out = json.loads(capsys.readouterr().out)
    floor = load_spec().criterion("AC-SHIP2-010").threshold_for("smoke")
    gate = next(g for g in out["gates"] if g["name"] == "throughput")
    assert out["profile"] == "smoke" and f"floor {floor:g} (smoke)" in gate["detail"]


def test_parity_gate_fails_on_gguf_without_qk_permutation(sound):
    from shiptwo.formats.gguf_export import write_gguf

    ckpt = load_checkpoint(sound)
    gate = gate_format_parity(ckpt, sound, "native", FAST,
                              export=lambda c, out, dtype: write_gguf(c, out, dtype, permute=False))
    assert not gate.passed and gate.figure > 1e-3


def test_cli_exit_2_on_unreadable_artifact(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff" * 64)
    assert main(["qa", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.bin" in err[0]


@pytest.fixture(scope="module")
def q8_release(tmp_path_factory, sound):
    """A release of the sound checkpoint and its Q8_0 GGUF (what MODEL-1 ships), and a loose copy of the GGUF."""
    import shutil

    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.formats.release import publish
    from shiptwo.paths import project_root, spec_path

    d = tmp_path_factory.mktemp("q8")
    gguf = export_gguf(load_checkpoint(sound), d / "sound-q8_0.gguf", "q8_0")
    release = publish([sound, gguf], d / "release", spec_path=spec_path(), repo_root=project_root()).parent
    loose = d / "loose" / gguf.name
    loose.parent.mkdir()
    shutil.copy(gguf, loose)
    return release / gguf.name, loose


def test_a_quantized_gguf_is_held_to_its_f32_reference_not_to_the_f32_tolerance(q8_release, sharp_checkpoint):
    from shiptwo.formats.artifact import KIND_GGUF, load_artifact

    shipped, loose = q8_release
    gate = gate_format_parity(load_artifact(shipped), shipped, KIND_GGUF, FAST)  # reference: the release's checkpoint
    assert gate.passed and gate.ran, gate.detail
    assert "sound.safetensors: mean KL" in gate.detail and "tol" not in gate.detail and gate.figure <= FAST.quant_max_kl
    assert f"over {FAST.quant_golden_tokens} greedy tokens" in gate.detail  # the bound the caller gave, not one in code
    # no reference beside it and none given: the gate says so and does not pass
    gate = gate_format_parity(load_artifact(loose), loose, KIND_GGUF, FAST)
    assert not gate.passed and not gate.ran and "no F32 reference" in gate.detail
    # the defect: the GGUF is not what the reference says (here: the reference's Q/K and embeddings
    # scaled up). The argmax survives such a change (top-1 still agrees), the distributions do not.
    wrong = dataclasses.replace(FAST, reference=sharp_checkpoint)
    gate = gate_format_parity(load_artifact(loose), loose, KIND_GGUF, wrong)
    assert not gate.passed and gate.ran and gate.detail.endswith("outside: KL") and gate.figure > 1


def test_a_gate_missing_from_the_report_counts_as_failed():
    """The criteria sum report.failed: a report that skipped a gate must not read as all passed."""
    from shiptwo.measure.qa import Gate, QAReport

    all_passed = QAReport("a.safetensors", "native", "smoke", gates=[Gate(name, True, 0) for name in GATES])
    assert all_passed.failed == 0 and all_passed.passed and all_passed.missing == []
    # the defect: the format parity gate never ran and left no result; the rest passed
    skipped = QAReport("a.safetensors", "native", "smoke", gates=[Gate(name, True, 0) for name in GATES[:-1]])
    assert skipped.missing == ["format_parity"] and skipped.failed == 1 and not skipped.passed
    assert skipped.to_dict()["failed_gates"] == 1 and "missing: format_parity" in skipped.to_text()
    assert QAReport("a.safetensors", "native", "smoke").failed == len(GATES)  # no gates at all: every one failed
    # what the count is over (the qa criteria's n): every gate, held or missing
    assert all_passed.judged == skipped.judged == QAReport("a.safetensors", "native", "smoke").judged == len(GATES)
    assert skipped.to_dict()["judged_gates"] == len(GATES) and f"{len(GATES) - 1}/{len(GATES)} gates passed" in skipped.to_text()
