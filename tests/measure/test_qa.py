"""qa: each of the eight gates passes on a sound artifact and fails on an artifact with its defect."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from shiptwo.model.checkpoint import load_checkpoint, read_safetensors_metadata
from shiptwo.cli import main
from shiptwo.fileio import atomic_write_bytes
from shiptwo.measure.qa import (
    GATES, QAConfig, gate_format_parity, gate_golden_output, gate_metadata, gate_no_degeneration,
    gate_tensor_contract, gate_tensor_statistics, gate_throughput, gate_tokenizer_round_trip, golden_runs,
    read_subject, repetition_fraction, run_qa, tensor_defects,
)

from shiptwo.formats.names import HF_ARCHITECTURE_CLASS
from shiptwo.model.checkpoint import META_ARCHITECTURE, META_GOLDEN, META_LICENSE, META_TOKENIZER

FAST = QAConfig(min_decode_tok_s=1.0, parity_tol=1e-3, throughput_tokens=8)


@pytest.fixture(scope="module")
def sound(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint made to look trained: norms moved off their constant init, golden recorded."""
    from shiptwo.model.checkpoint import save_checkpoint
    from shiptwo.training.loop import golden_outputs

    ckpt = load_checkpoint(tiny_checkpoint)
    gen = torch.Generator().manual_seed(1)
    for name, t in ckpt.tensors.items():
        if t.dim() == 1:
            ckpt.tensors[name] = t + 0.01 * torch.randn(t.shape, generator=gen)
    ckpt.golden = golden_outputs(ckpt.build_model(), ckpt.tokenizer())
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("qa") / "sound.safetensors")


def _rewrite(src, dst, meta=None, tensors=None):
    """Copy a checkpoint with its metadata and/or tensors edited (the defective artifacts)."""
    data = src.read_bytes()
    m = read_safetensors_metadata(data, src)
    t = st_load(data)
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
    assert list(gates) == list(GATES)
    for name, g in gates.items():
        if name not in ("no_degeneration", "throughput"):  # an untrained model's outputs may loop
            assert g["passed"], (name, g["detail"])
    assert not gates["throughput"]["passed"] and isinstance(gates["no_degeneration"]["figure"], float)
    assert gates["format_parity"]["figure"] <= 1e-3


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


def test_golden_gate_fails_on_wrong_or_missing_golden(sound, tmp_path):
    def wrong(m):
        g = json.loads(m[META_GOLDEN])
        g["output_ids"][0][0] = (g["output_ids"][0][0] + 1) % 300
        m[META_GOLDEN] = json.dumps(g)

    sub = read_subject(_rewrite(sound, tmp_path / "wrong.safetensors", meta=wrong))
    gate = gate_golden_output(sub, golden_runs(sub.ckpt, sub.golden))
    assert not gate.passed and "differ from the recorded golden" in gate.detail
    sub = read_subject(_rewrite(sound, tmp_path / "nogold.safetensors", meta=lambda m: m.pop(META_GOLDEN)))
    gate = gate_golden_output(sub, None)
    assert not gate.passed and "golden outputs recorded" in gate.detail
    sub = read_subject(_rewrite(sound, tmp_path / "badgold.safetensors", meta=lambda m: m.update({META_GOLDEN: "{"})))
    assert sub.golden is None and not gate_metadata(sub).passed


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
    gate = gate_throughput(ckpt, QAConfig(min_decode_tok_s=1e12, parity_tol=1e-3, throughput_tokens=8))
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
