"""AC-SHIP1-005's verdict: a faithful export reproduces the upstream file's per-problem log-likelihoods
and outcomes; a deliberately damaged export (Q/K permutation swapped in one layer, or one tensor
requantized to 2 bits) and a candidate that loses problems make it FAIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiptwo.checks.reproduction import loglik_equivalence, outcome_comparison, reproduction_verdict
from shiptwo.formats.gguf_export import export_gguf
from shiptwo.formats.names import permute_qk
from shiptwo.measure.evals.humaneval import load_problems
from shiptwo.measure.evals.humaneval_chat import canonical_logliks, gguf_canonical_logliks
from shiptwo.model.checkpoint import Checkpoint
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel

MARGIN = 0.02
N_PROBLEMS = 6


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, tiny_tokenizer):
    """A small model with sharp attention, its F32 GGUF (the 'upstream file') and the reference
    figures llama.cpp gives on it."""
    cfg = ModelConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=tiny_tokenizer.eot_id, eos_token_id=tiny_tokenizer.eot_id)
    model = LlamaModel(cfg)
    model.init_weights(seed=7)
    tensors = model.state_dict_for_save()
    for name in tensors:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            tensors[name] = tensors[name] * 8.0
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 10.0
    ckpt = Checkpoint(cfg, tensors, tiny_tokenizer.to_json(),
                      {"license": "Apache-2.0", "data_source": "random", "data_license": "none"})
    problems = load_problems(N_PROBLEMS)
    path = export_gguf(ckpt, tmp_path_factory.mktemp("upstream") / "upstream-f32.gguf", "f32")
    ref = {"problems": [{"task_id": t, "passed": i % 2 == 0, "loglik_mean": v}
                        for i, (t, v) in enumerate(zip(problems, gguf_canonical_logliks(path, problems)))]}
    return ckpt, problems, ref


def damaged(ckpt: Checkpoint, how: str) -> Checkpoint:
    """`ckpt` with one defect an export can have: layer 1's Q/K rows left in llama.cpp's interleaved
    order ("qk-swapped"), or the output head requantized to 2 bits ("2-bit")."""
    tensors = dict(ckpt.tensors)
    cfg = ckpt.config
    if how == "qk-swapped":
        for name, heads in (("q_proj", cfg.num_attention_heads), ("k_proj", cfg.num_key_value_heads)):
            key = f"model.layers.1.self_attn.{name}.weight"
            tensors[key] = torch.from_numpy(permute_qk(tensors[key].numpy(), heads).copy())
    else:  # one tensor requantized to 2 bits: 4 levels per block of 16
        key = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
        w = tensors[key].numpy().reshape(-1, 16)
        lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
        step = (hi - lo) / 3 + 1e-12
        tensors[key] = torch.from_numpy((np.round((w - lo) / step) * step + lo).reshape(tensors[key].shape).astype(np.float32))
    return Checkpoint(ckpt.config, tensors, ckpt.tokenizer_json, ckpt.provenance)


def _verdict(ref, problems, candidate: Checkpoint, outcomes=None) -> dict:
    outcomes = outcomes or {p["task_id"]: p["passed"] for p in ref["problems"]}
    logliks = {"f32": dict(zip(problems, canonical_logliks(candidate, problems)))}
    return reproduction_verdict(ref, outcomes, logliks, MARGIN)


def test_a_faithful_export_reproduces(upstream):
    ckpt, problems, ref = upstream
    verdict = _verdict(ref, problems, ckpt)
    assert verdict["loglik_equivalence_violations"] == 0 and verdict["mcnemar_p_loss"] == 1.0
    assert verdict["loglik"]["f32"]["max_abs_diff"] < 1e-3  # our runtime vs llama.cpp on the same F32 weights
    assert verdict["reference"]["pass@1"] == verdict["candidate"]["pass@1"] == 50.0


@pytest.mark.parametrize("how", ["qk-swapped", "2-bit"])
def test_a_damaged_export_fails(upstream, how):
    ckpt, problems, ref = upstream
    verdict = _verdict(ref, problems, damaged(ckpt, how))
    assert verdict["loglik_equivalence_violations"] == 1, verdict["loglik"]
    assert abs(verdict["loglik"]["f32"]["mean_diff"]) > MARGIN


def test_losing_problems_is_a_significant_loss():
    ref = {f"t{i}": i < 10 for i in range(40)}  # the reference solves 10 of 40
    assert outcome_comparison(ref, dict(ref))["mcnemar_p_loss"] == 1.0
    lost = {t: (ok and int(t[1:]) >= 8) for t, ok in ref.items()}  # 8 of them lost, none gained
    res = outcome_comparison(ref, lost)
    assert res["lost"] and not res["gained"] and res["mcnemar_p_loss"] < 0.05
    assert res["reference"]["wilson_95"][0] < 25.0 < res["reference"]["wilson_95"][1]
    swapped = {t: (ok and int(t[1:]) >= 2) or t == "t20" for t, ok in ref.items()}  # 2 lost, 1 gained: noise
    assert outcome_comparison(ref, swapped)["mcnemar_p_loss"] > 0.05


def test_equivalence_needs_the_interval_inside_the_margin():
    ref = {f"t{i}": -1.0 + 0.01 * i for i in range(50)}
    near = {t: v + 0.001 * (i % 3 - 1) for i, (t, v) in enumerate(ref.items())}
    far = {t: v - 0.1 for t, v in ref.items()}
    assert loglik_equivalence(ref, near, MARGIN)["equivalent"]
    assert not loglik_equivalence(ref, far, MARGIN)["equivalent"]


def test_the_committed_reference_is_tied_to_the_base_the_recipe_ships_and_another_models_is_refused(tmp_path):
    """AC-SHIP1-005 never compared the reference's upstream.sha256 with the recipe's base: a
    reference recorded on another model held the release to that model's figures."""
    from shiptwo.checks.reproduction import read_upstream_reference, reference_base_tie
    from shiptwo.errors import ShiptwoError
    from shiptwo.training.recipes import load_model1_recipe

    recipe = load_model1_recipe("default")
    ref = read_upstream_reference(recipe.humaneval_reference)
    assert reference_base_tie(ref, recipe.humaneval_reference, recipe.base, False, "base") == \
        f"tied: upstream.sha256 is the base's ({recipe.base.sha256})"
    other = {**ref, "upstream": {**ref["upstream"], "sha256": "0" * 64}}
    with pytest.raises(ShiptwoError, match=r"upstream\.sha256 0{64} is not the SHA-256 of the base \(base: [0-9a-f]{64}\): a reference recorded on another model"):
        reference_base_tie(other, "ref.json", recipe.base, False, "base")
    weights = tmp_path / "base.gguf"
    weights.write_bytes(b"other weights")
    with pytest.raises(ShiptwoError, match="a reference recorded on another model"):
        reference_base_tie(ref, "ref.json", weights, False, "base")  # a file base is hashed
    assert reference_base_tie(other, "ref.json", recipe.base, True, "base").startswith("not tied: the recipe instruction-tunes")
    assert reference_base_tie(ref, "ref.json", tmp_path, False, "base").startswith("not tied: the base")
