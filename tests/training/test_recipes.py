"""Recipes: every profile loads and honours its architecture contract; defects are caught."""

from __future__ import annotations

import pytest
import torch
import yaml

from shiptwo.errors import ShiptwoError
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel
from shiptwo.checks.checkpoint import architecture_mismatches
from shiptwo.paths import recipe_path
from shiptwo.training.recipes import load_recipe
from shiptwo.harness.spec import load_spec

from shiptwo.paths import PROFILES


def _tolerance(profile: str) -> float:
    """AC-SHIP2-001's parameter-count band: the spec's, not the recipe's."""
    return load_spec().criterion("AC-SHIP2-001").param("parameter_tolerance", profile)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_meets_its_contract(profile):
    r = load_recipe("model2", profile)
    n, problems = architecture_mismatches(r.model_declared, r.declared_parameters, _tolerance(profile))
    assert (n, problems) == (0, [])
    assert r.vocab_size == r.model.vocab_size and r.train.seq_len <= r.model.max_position_embeddings


def test_contract_counts_a_module_built_differently_from_the_declaration():
    r = load_recipe("model2", "smoke")
    with torch.device("meta"):
        other = LlamaModel(ModelConfig(**{**r.model.to_dict(), "intermediate_size": 96, "rope_theta": 500000.0}))
    n, problems = architecture_mismatches(r.model_declared, r.declared_parameters, _tolerance("smoke"), model=other)
    assert n == 3  # two fields plus the parameter count outside ±1%
    assert any(p.startswith("intermediate_size") for p in problems) and any(p.startswith("parameters") for p in problems)


def test_contract_counts_undeclared_fields_and_an_out_of_band_count():
    r = load_recipe("model2", "smoke")
    declared = {k: v for k, v in r.model_declared.items() if k != "rms_norm_eps"}
    assert architecture_mismatches(declared, r.declared_parameters, 0.01)[0] == 1
    assert architecture_mismatches(r.model_declared, int(r.declared_parameters * 1.02), 0.01)[0] == 1
    assert architecture_mismatches({**r.model_declared, "tie_word_embeddings": 1}, r.declared_parameters, 0.01)[0] == 1


def _write(tmp_path, mutate) -> str:
    doc = yaml.safe_load(recipe_path("model2").read_text())
    mutate(doc["profiles"]["smoke"])
    p = tmp_path / "model2.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b.pop("train"), "missing field"),
    (lambda b: b.update(extra=1), "unknown field"),
    (lambda b: b.update(parameter_tolerance=0.01), "unknown field"),  # the band is the spec's (AC-SHIP2-001)
    (lambda b: b["model"].update(hidden=3), "unknown model config field"),
    (lambda b: b["train"].update(lr_max=1), "unknown train field"),
    (lambda b: b["tokenizer"].update(vocab_size=999), "differs from model.vocab_size"),
    (lambda b: b["train"].update(max_steps=None), "exactly one of max_steps"),
    (lambda b: b["train"].update(device="tpu"), "device"),
    # wrong YAML types were TypeError/ValueError tracebacks from the trainer or the loader
    (lambda b: b["train"].update(batch_size="eight"), r"train\.batch_size: 'eight' is not int"),
    (lambda b: b["train"].update(lr="fast"), r"train\.lr: 'fast' is not float"),
    (lambda b: b["train"].update(seed=None), r"train\.seed: None is not int"),
    (lambda b: b["train"].update(max_steps=80.5), r"train\.max_steps: 80\.5 is not int or null"),
    (lambda b: b.update(train=5), r"smoke\.train: not a mapping"),
    (lambda b: b["corpus"].update(max_files=[40]), r"corpus\.max_files: \[40\] is not int or null"),
    (lambda b: b.update(declared_parameters="lots"), r"declared_parameters: 'lots' is not int"),
    (lambda b: b["tokenizer"].update(vocab_size="x"), r"tokenizer\.vocab_size: 'x' is not int"),
    (lambda b: b["train"].update(max_steps=0), "max_steps must be >= 1, got 0"),  # trained 0 steps, exit 0
])
def test_recipe_defects_are_one_line_errors_naming_the_file(tmp_path, mutate, match):
    path = _write(tmp_path, mutate)
    with pytest.raises(ShiptwoError, match=match) as exc:
        load_recipe("model2", "smoke", path)
    assert "\n" not in str(exc.value) and "model2.yaml" in str(exc.value)


def test_unknown_profile_is_refused():
    with pytest.raises(ShiptwoError, match="no profile 'huge'"):
        load_recipe("model2", "huge")


@pytest.fixture
def smoke_checkpoint(tmp_path, tiny_tokenizer):
    """A checkpoint of the smoke recipe's declared architecture, as the trainer would save it."""
    from shiptwo.model.checkpoint import checkpoint_from_model, save_checkpoint

    r = load_recipe("model2", "smoke")
    model = LlamaModel(r.model)
    model.init_weights(0)
    prov = {"license": "Apache-2.0", "data_source": "test", "data_license": "PSF-2.0"}
    return r, save_checkpoint(checkpoint_from_model(model, tiny_tokenizer.to_json(), prov), tmp_path / "ok.safetensors")


def _rewritten(src, dst, tensors=None, meta=None):
    from safetensors.torch import load_file, save_file

    from shiptwo.model.checkpoint import safetensors_metadata

    t, m = load_file(str(src)), safetensors_metadata(src)
    (tensors or (lambda x: None))(t)
    (meta or (lambda x: None))(m)
    save_file(t, str(dst), metadata=m)
    return dst


def test_checkpoint_contract_reads_the_tensors_in_the_file(smoke_checkpoint, tmp_path):
    import json

    from shiptwo.checks.checkpoint import checkpoint_contract_violations
    from shiptwo.model.checkpoint import safetensors_metadata

    r, path = smoke_checkpoint
    args = (r.model_declared, r.declared_parameters, _tolerance("smoke"))
    n, ev = checkpoint_contract_violations(path, *args)
    assert n == 0 and ev["parameters_in_file"] == r.declared_parameters and ev["tensors"] == ev["expected_tensors"]
    fields = len(set(r.model_declared) | set(json.loads(safetensors_metadata(path)["config"])))
    assert ev["checked"] == {"tensors": ev["tensors"], "parameter_count": 1, "config_fields": fields}  # what n counts

    def narrow(t):  # the defect: one tensor of the wrong shape (the loader would refuse the file outright)
        t["model.layers.1.mlp.up_proj.weight"] = t["model.layers.1.mlp.up_proj.weight"][:80].clone()

    n, ev = checkpoint_contract_violations(_rewritten(path, tmp_path / "narrow.safetensors", narrow), *args)
    assert n == 1 and "model.layers.1.mlp.up_proj.weight has shape (80, 32)" in ev["problems"][0]

    def untie(t):  # an extra output head: also far outside the declared parameter band
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()

    n, ev = checkpoint_contract_violations(_rewritten(path, tmp_path / "untied.safetensors", untie), *args)
    assert n == 2 and any("lm_head.weight not implied" in p for p in ev["problems"])
    assert ev["checked"]["tensors"] == ev["expected_tensors"] + 1  # the extra tensor was checked too

    def theta(m):  # the recorded config differs from the declaration in a field no shape shows
        cfg = json.loads(m["config"])
        m["config"] = json.dumps({**cfg, "rope_theta": 500000.0})

    n, ev = checkpoint_contract_violations(_rewritten(path, tmp_path / "theta.safetensors", meta=theta), *args)
    assert n == 1 and ev["problems"] == ["config rope_theta: declared 10000.0, recorded 500000.0"]


@pytest.mark.parametrize("profile, mutate, match", [
    ("default", lambda b: b["base"].pop("sha256"), r"profiles\.default\.base: needs exactly the fields"),
    ("default", lambda b: b["base"].update(license=""), r"base: every field must be a non-empty string"),
    ("default", lambda b: b["humaneval"].update(limit=0), r"humaneval\.limit: must be a positive integer"),
    ("default", lambda b: b["release"].update(quantized="q8_0"), r"release\.quantized: must be a list"),
    ("smoke", lambda b: b["sft"].pop("train"), r"profiles\.smoke\.sft: needs exactly the fields"),
    ("smoke", lambda b: b["sft"]["train"].update(lr_max=1), "unknown train field"),
])
def test_model1_recipe_defects_name_the_field(tmp_path, profile, mutate, match):
    from shiptwo.training.recipes import load_model1_recipe

    doc = yaml.safe_load(recipe_path("model1").read_text())
    mutate(doc["profiles"][profile])
    path = tmp_path / "model1.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ShiptwoError, match=match) as exc:
        load_model1_recipe(profile, path)
    assert "\n" not in str(exc.value) and "model1.yaml" in str(exc.value)
