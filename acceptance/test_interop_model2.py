"""MODEL-2 release formats: llama.cpp parity of the GGUF, transformers parity of the HF export,
provenance in every format and a release manifest that verifies (and catches tampering)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest



@pytest.mark.ac("AC-SHIP2-009")
def test_gguf_parity_with_llamacpp(criterion, model2_checkpoint, model2_gguf_f32):
    from shiptwo.runtimes.llamacpp import compare_with_llamacpp

    from shiptwo.checks.samples import parity_samples, write_samples

    r = compare_with_llamacpp(model2_checkpoint, model2_gguf_f32, greedy_steps=criterion.param("greedy_steps"))
    samples = write_samples(parity_samples(r.per_prompt), criterion.evidence_dir / "parity-samples.jsonl")
    # Different token ids or greedy tokens fail the criterion whatever the logits say.
    measured = r.max_logit_diff if not (r.ids_mismatch or r.greedy_mismatch) else math.inf
    criterion.check(measured, samples=samples, n=r.prompts, evidence={"gguf": model2_gguf_f32, **r.evidence()})


@pytest.mark.ac("AC-SHIP2-012")
def test_release_manifest_verifies(criterion, spec_path, tmp_path, model2_artifacts, model2_hf_dir, model2_gguf_q8_0):
    from shiptwo.formats.release import audit_release

    from shiptwo.formats.release import publish

    from shiptwo.checks.gate_verifiers import EVIDENCE_RELEASE

    # published into the run's evidence (it survives: the gate verifies the release again)
    manifest = publish([model2_artifacts.checkpoint, model2_hf_dir, model2_gguf_q8_0], criterion.evidence_dir / "release",
                       spec_path)
    audit = audit_release(manifest.parent, tmp_path)  # tmp_path: the tampered scratch copy
    scratch = {"tampered_file": Path(audit["tampered_file"]).name}  # named, not hashed: the scratch copy is temporary
    criterion.check(audit["defects"], n=sum(audit["checked"].values()),  # n: manifest checks, files, tamper trial
                    evidence={**audit, **scratch, EVIDENCE_RELEASE: manifest.parent})


@pytest.mark.ac("AC-SHIP2-013")
def test_backend_parity_with_transformers(criterion, model2_checkpoint, model2_hf_dir):
    from shiptwo.runtimes.transformers import compare_with_transformers

    from shiptwo.checks.samples import parity_samples, write_samples

    r = compare_with_transformers(model2_checkpoint, model2_hf_dir)
    samples = write_samples(parity_samples(r.per_prompt), criterion.evidence_dir / "parity-samples.jsonl")
    diffs = [r.max_logit_diff] + ([r.max_accelerator_diff] if r.max_accelerator_diff is not None else [])
    measured = max(diffs) if not r.token_id_mismatches else math.inf
    criterion.check(measured, samples=samples, n=len(r.per_prompt), evidence={"hf_dir": model2_hf_dir, **r.evidence()})
