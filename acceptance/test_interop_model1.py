"""MODEL-1 release path: HF weights load in our runtime and transformers, Q8_0 round trip,
GGUF loads and generates in llama.cpp, provenance in every format, a verified release.

`model1_artifacts` comes from MODEL-1's builder; until it exists these tests ERROR (honestly)."""

from __future__ import annotations


import pytest
import torch

from shiptwo.errors import ShiptwoError

from shiptwo.model.canaries import CANARY_PROMPTS
from shiptwo.runtimes.llamacpp import LLAMACPP_GREEDY_STEPS, Q8_0_MIN_LOGIT_COSINE
from shiptwo.runtimes.transformers import LOAD_PARITY_TOL


@pytest.mark.ac("AC-SHIP1-001")
@torch.inference_mode()
def test_hf_weights_load_in_both_runtimes(criterion, model1_checkpoint, model1_hf_dir):
    from shiptwo.formats.hf import read_hf
    from shiptwo.runtimes.transformers import compare_with_transformers

    failures, evidence = 0, {"hf_dir": model1_hf_dir, "tolerance": LOAD_PARITY_TOL}
    try:  # our runtime, from the directory alone
        ours = read_hf(model1_hf_dir).build_model()
        ids = torch.tensor([model1_checkpoint.tokenizer().encode(CANARY_PROMPTS[0])])
        diff = float((ours(ids) - model1_checkpoint.build_model()(ids)).abs().max())
        evidence["ours_max_abs_logit_diff"] = diff
        failures += diff > LOAD_PARITY_TOL
    except ShiptwoError as exc:
        evidence["ours_error"] = str(exc)
        failures += 1
    try:
        r = compare_with_transformers(model1_checkpoint, model1_hf_dir)
        evidence.update(r.evidence())
        failures += bool(r.token_id_mismatches) or r.max_logit_diff > LOAD_PARITY_TOL
    except ShiptwoError as exc:
        evidence["transformers_error"] = str(exc)
        failures += 1
    criterion.check(failures, evidence=evidence)


@pytest.mark.ac("AC-SHIP1-003")
def test_q8_0_round_trip_cosine(criterion, model1_checkpoint, model1_gguf_q8_0):
    from shiptwo.formats.gguf_load import quantization_cosines

    cos = quantization_cosines(model1_checkpoint, model1_gguf_q8_0)  # read back from the file
    worst = min(cos, key=cos.get)
    criterion.check(cos[worst], evidence={"gguf": model1_gguf_q8_0, "tensors": len(cos), "worst_tensor": worst})


@pytest.mark.ac("AC-SHIP1-004")
def test_gguf_loads_and_generates_in_llamacpp(criterion, threshold, model1_checkpoint, model1_gguf_f32, model1_gguf_q8_0):
    from shiptwo.runtimes.llamacpp import compare_with_llamacpp, llamacpp_generate

    tol = threshold("AC-SHIP2-009")  # the F32 GGUF logits tolerance
    failures, evidence = 0, {"f32_tolerance": tol, "q8_0_min_logit_cosine": Q8_0_MIN_LOGIT_COSINE}
    for label, path in (("f32", model1_gguf_f32), ("q8_0", model1_gguf_q8_0)):
        try:
            _, evidence[f"{label}_generated"] = llamacpp_generate(path, CANARY_PROMPTS[0], LLAMACPP_GREEDY_STEPS)
            # ... and what it computes is this model: F32 within the spec's tolerance with the same
            # greedy tokens; Q8_0 with the same token ids and logits of the same direction (quantized
            # weights and activations move each logit by ~1% of its range, so no absolute bound fits).
            r = compare_with_llamacpp(model1_checkpoint, path)
            evidence[f"{label}_parity"] = r.evidence()
            failures += not r.ok(tol) if label == "f32" else bool(r.ids_mismatch) or r.min_logit_cosine < Q8_0_MIN_LOGIT_COSINE
        except ShiptwoError as exc:
            evidence[f"{label}_error"] = str(exc)
            failures += 1
    criterion.check(failures, evidence=evidence)


@pytest.mark.ac("AC-SHIP1-010")
def test_published_release_verifies(criterion, tmp_path, model1_artifacts):
    from shiptwo.formats.release import audit_release

    # The release directory MODEL-1's build published (checkpoint, HF directory, Q8_0 GGUF).
    audit = audit_release(model1_artifacts.files["release_manifest"].parent, tmp_path)
    criterion.check(audit["defects"], evidence=audit)
