"""MODEL-1 release path: HF weights load in our runtime and transformers and are the upstream
model's, the round trip of every quantized format, GGUF loads and generates in llama.cpp,
provenance in every format, a verified release.

`model1_artifacts` comes from MODEL-1's builder; until it exists these tests ERROR (honestly)."""

from __future__ import annotations

from pathlib import Path


import pytest
import torch

from shiptwo.errors import ShiptwoError

from shiptwo.model.canaries import CANARY_PROMPTS


@pytest.mark.ac("AC-SHIP1-001")
@torch.inference_mode()
def test_hf_weights_load_in_both_runtimes(criterion, request, model1_checkpoint, model1_hf_dir):
    """The HF directory loads in our runtime and in transformers; and its weights are the upstream
    model's: our runtime on them against llama.cpp on the upstream file (same token ids, KL, top-1)."""
    from shiptwo.builds.model1 import upstream_gguf
    from shiptwo.formats.hf import read_hf
    from shiptwo.runtimes.llamacpp import compare_distributions
    from shiptwo.runtimes.transformers import compare_with_transformers
    from shiptwo.training.recipes import load_model1_recipe

    tol = criterion.param("load_parity_tol")
    failures, evidence, runtimes = 0, {"hf_dir": model1_hf_dir, "tolerance": tol}, []
    hf = model1_checkpoint
    runtimes.append("shiptwo")
    try:  # our runtime, from the directory alone
        hf = read_hf(model1_hf_dir)
        ours = hf.build_model()
        ids = torch.tensor([model1_checkpoint.tokenizer().encode(CANARY_PROMPTS[0])])
        diff = float((ours(ids) - model1_checkpoint.build_model()(ids)).abs().max())
        evidence["ours_max_abs_logit_diff"] = diff
        failures += not diff <= tol  # a NaN difference is a failure
    except ShiptwoError as exc:
        evidence["ours_error"] = str(exc)
        failures += 1
    runtimes.append("transformers")
    try:
        r = compare_with_transformers(model1_checkpoint, model1_hf_dir)
        evidence.update(r.evidence())
        failures += bool(r.token_id_mismatches) or not r.max_logit_diff <= tol
    except ShiptwoError as exc:
        evidence["transformers_error"] = str(exc)
        failures += 1
    upstream = upstream_gguf(load_model1_recipe(criterion.profile))
    evidence["upstream"] = upstream or "no upstream GGUF (base is not one): the release's own F32 GGUF"
    parity = compare_distributions(hf, upstream or request.getfixturevalue("model1_gguf_f32"))
    evidence["import_parity"] = parity.evidence()
    evidence["runtimes"] = runtimes
    criterion.check(failures, n=len(runtimes), evidence=evidence, legs={  # n: the runtimes the HF directory was loaded in
        "import_token_id_mismatches": {"value": len(parity.token_id_mismatches), "n": parity.texts},
        "import_kl_mean": parity.leg("kl_mean"),
        "import_top1_agreement": parity.leg("top1_agreement")})


@pytest.mark.ac("AC-SHIP1-003")
def test_quantized_round_trip_cosine(criterion, model1_checkpoint, model1_artifacts):
    """Per-tensor cosine of every quantized GGUF the release ships (read back from the file) against
    the F32 checkpoint; the report names the tensor types each file actually holds. A format the
    criterion names that the artifact lacks is an ERROR: the figure is a minimum over measured
    tensors, never a starting value."""
    from collections import Counter

    from shiptwo import stats
    from shiptwo.checks.release import shipped_ggufs
    from shiptwo.formats.gguf_load import quantization_cosines, tensor_types, worst_cosine

    ggufs = shipped_ggufs(model1_artifacts.files, criterion.param("quantized_formats"), f"{criterion.id} quantized_formats")
    per_format = {}
    for dtype, path in ggufs.items():
        cos = quantization_cosines(model1_checkpoint, path)
        if not cos:
            raise ShiptwoError(f"{path}: no tensor to compare with the checkpoint")
        worst, value, below = worst_cosine(cos, criterion.threshold)  # a NaN cosine is the worst, never skipped
        per_format[dtype] = {"gguf": str(path), "min_cosine": value, "worst_tensor": worst, "tensors": len(cos),
                             "below_threshold": below, "tensor_types": dict(Counter(tensor_types(path).values()))}
    summary = "; ".join(f"{d}: min {f['min_cosine']:.5f} ({f['worst_tensor']}), {len(f['below_threshold'])} of {f['tensors']} "
                        f"tensors below {criterion.threshold}, types " + ", ".join(f"{t}x{k}" for t, k in f["tensor_types"].items())
                        for d, f in per_format.items())
    criterion.check(stats.extreme([f["min_cosine"] for f in per_format.values()], "min"), n=sum(f["tensors"] for f in per_format.values()),
                    evidence={"summary": summary, "formats": per_format})


@pytest.mark.ac("AC-SHIP1-004")
def test_gguf_loads_and_generates_in_llamacpp(criterion, threshold, parameter, model1_checkpoint, model1_gguf_f32, model1_artifacts):
    """Every GGUF (an F32 export and each quantized file the release ships; one the criterion names
    that the artifact lacks is an ERROR, so zero failures means files that ran) loads and generates
    in llama.cpp, with our token ids; and what it computes is this model: F32 within the spec's logits
    tolerance with the same greedy tokens, Q8_0 within the KL / top-1 bounds (llama.cpp quantizes
    activations too, so no absolute logit bound fits); coarser formats are AC-SHIP1-003/005's."""
    from shiptwo.checks.release import shipped_ggufs
    from shiptwo.runtimes.llamacpp import compare_distributions, compare_with_llamacpp, llamacpp_generate

    tol, steps = threshold("AC-SHIP2-009"), parameter("AC-SHIP2-009", "greedy_steps")  # the F32 GGUF's bounds
    max_kl, min_top1 = criterion.param("q8_0_max_kl"), criterion.param("q8_0_min_top1")
    ggufs = shipped_ggufs(model1_artifacts.files, criterion.param("quantized_formats"), f"{criterion.id} quantized_formats")
    failures, evidence = 0, {"f32_tolerance": tol, "q8_0_max_kl": max_kl, "q8_0_min_top1": min_top1}
    runs = (("f32", model1_gguf_f32), *ggufs.items())
    for label, path in runs:
        try:
            _, evidence[f"{label}_generated"] = llamacpp_generate(path, CANARY_PROMPTS[0], steps)
            if label == "f32":
                r = compare_with_llamacpp(model1_checkpoint, path, greedy_steps=steps)
                failures += not r.ok(tol)
            else:
                r = compare_distributions(model1_checkpoint, path)
                failures += bool(r.token_id_mismatches) or (label == "q8_0" and not (r.kl_mean <= max_kl and r.top1_agreement >= min_top1))
            evidence[f"{label}_parity"] = r.evidence()
        except ShiptwoError as exc:
            evidence[f"{label}_error"] = str(exc)
            failures += 1
    criterion.check(failures, n=len(runs), evidence=evidence)  # n: the GGUF files run in llama.cpp


@pytest.mark.ac("AC-SHIP1-010")
def test_published_release_verifies(criterion, tmp_path, model1_artifacts):
    """The release MODEL-1's build published verifies, a tampered copy does not, and it holds every
    shipped file (checkpoint, HF directory, each GGUF) as the build wrote it: each one its manifest
    lacks, or lists with another SHA-256, is a defect."""
    from shiptwo.checks.gate_verifiers import EVIDENCE_RELEASE
    from shiptwo.checks.release import release_omissions, shipped_artifacts
    from shiptwo.formats.release import audit_release

    manifest = model1_artifacts.files["release_manifest"]  # in the artifact store: it survives the run
    shipped = shipped_artifacts(model1_artifacts.files, criterion.param("quantized_formats"), f"{criterion.id} quantized_formats")
    omissions, shipped_files = release_omissions(manifest, shipped)
    audit = audit_release(manifest.parent, tmp_path)  # tmp_path: the tampered scratch copy
    scratch = {"tampered_file": Path(audit["tampered_file"]).name}  # named, not hashed: the scratch copy is temporary
    checked = {**audit["checked"], "shipped_files_in_manifest": shipped_files}  # n: the audit's items and each shipped file
    criterion.check(audit["defects"] + len(omissions), n=sum(checked.values()), evidence={
        **audit, **scratch, "checked": checked, EVIDENCE_RELEASE: manifest.parent, "not_in_release": omissions,
        "shipped": {role: str(path) for role, path in shipped.items()}})
