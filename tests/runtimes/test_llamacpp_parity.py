"""Parity with the real llama.cpp (llama-cpp-python): ids, logits within 1e-3, 32 greedy tokens;
and the defective GGUFs llama.cpp refuses or that the logits comparison catches."""

import pytest

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf, write_gguf
from shiptwo.runtimes.llamacpp import compare_with_llamacpp, llamacpp_generate

from shiptwo.formats.names import HF_ARCHITECTURE_CLASS
from shiptwo.model.canaries import CANARY_PROMPTS
TOL = 1e-3  # AC-SHIP2-009's threshold
STEPS = 32  # AC-SHIP2-009's greedy_steps


@pytest.fixture(scope="module")
def sharp(sharp_checkpoint):
    return load_checkpoint(sharp_checkpoint)


def test_f32_gguf_matches_our_runtime(tmp_path, sharp, sharp_gguf_f32):
    r = compare_with_llamacpp(sharp, sharp_gguf_f32, greedy_steps=STEPS)
    assert r.ids_mismatch == [] and r.greedy_mismatch == []
    assert r.greedy_steps == STEPS
    assert r.max_logit_diff <= TOL and r.ok(TOL)
    # one record per canary text, the per-sample evidence AC-SHIP2-009 keeps
    assert len(r.per_prompt) == r.prompts and max(p["max_logit_diff"] for p in r.per_prompt) == r.max_logit_diff
    assert all(p["ids_match"] and p["greedy_match"] for p in r.per_prompt)
    from shiptwo.checks.samples import parity_samples, write_samples
    from shiptwo.harness.evidence import read_samples

    back = read_samples(write_samples(parity_samples(r.per_prompt), tmp_path / "parity.jsonl"))
    assert [s["value"] for s in back] == [p["max_logit_diff"] for p in r.per_prompt] and back[0]["output"]


def test_without_qk_permutation_loads_but_logits_check_fails(tmp_path, sharp):
    path = write_gguf(sharp, tmp_path / "noperm.gguf", permute=False)
    r = compare_with_llamacpp(sharp, path, greedy_steps=STEPS)  # llama.cpp loads it without complaint
    assert r.max_logit_diff > 100 * TOL and not r.ok(TOL)


def test_parity_fails_when_the_runtime_weights_differ(sharp, sharp_gguf_f32):
    other = load_checkpoint(sharp.path)
    other.tensors["model.layers.1.mlp.down_proj.weight"] = other.tensors["model.layers.1.mlp.down_proj.weight"] * 4
    assert not compare_with_llamacpp(other, sharp_gguf_f32, greedy_steps=STEPS).ok(TOL)


@pytest.mark.parametrize("knobs, name", [
    ({"architecture": HF_ARCHITECTURE_CLASS}, "arch"),
    ({"with_merges": False}, "nomerges"),
    ({"with_tokenizer": False}, "notok"),
])
def test_llamacpp_refuses_defective_files(tmp_path, sharp, knobs, name):
    path = write_gguf(sharp, tmp_path / f"{name}.gguf", **knobs)
    with pytest.raises(ShiptwoError, match="llama.cpp refused"):
        compare_with_llamacpp(sharp, path, greedy_steps=STEPS)


def test_q8_0_loads_and_generates(tmp_path, tiny_checkpoint):
    path = export_gguf(load_checkpoint(tiny_checkpoint), tmp_path / "q8.gguf", "q8_0")
    ids, text = llamacpp_generate(path, CANARY_PROMPTS[0], steps=8)
    assert len(ids) == 8 and isinstance(text, str)


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(ShiptwoError, match="no such GGUF"):
        llamacpp_generate(tmp_path / "absent.gguf", "x", 1)


def test_q8_0_distribution_check_passes_its_model_and_fails_another(tmp_path, sharp, tiny_checkpoint):
    """AC-SHIP1-004's quantized leg: KL and top-1 agreement within the spec's bounds for the model the
    Q8_0 file was made from, not for another model of the same shape."""
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.harness.spec import load_spec
    from shiptwo.runtimes.llamacpp import compare_distributions

    crit = load_spec().criterion("AC-SHIP1-004")
    max_kl, min_top1 = crit.param("q8_0_max_kl", "default"), crit.param("q8_0_min_top1", "default")  # the spec's bounds
    q8 = export_gguf(sharp, tmp_path / "sharp-q8_0.gguf", "q8_0")
    own = compare_distributions(sharp, q8)
    assert own.token_id_mismatches == [] and own.kl_mean <= max_kl and own.top1_agreement >= min_top1
    # each figure with its interval over texts, around it, and as a criterion leg
    assert own.texts > 1 and own.kl_interval[0] <= own.kl_mean <= own.kl_interval[1]
    assert own.top1_interval[0] <= own.top1_agreement <= own.top1_interval[1]
    assert own.leg("kl_mean") == {"value": own.kl_mean, "n": own.positions, "interval": own.kl_interval}
    other = compare_distributions(load_checkpoint(tiny_checkpoint), q8)  # same shapes, unsharpened weights
    assert other.kl_mean > max_kl  # (its top-1 agrees: both heads echo the input token of this sharp model)