"""Hugging Face export/import: transformers loads our export with equal logits and token ids;
we import a directory written by transformers itself; what we cannot represent is refused."""

import json
import shutil

import pytest
import torch

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.formats.hf import export_hf, import_hf, read_hf
from shiptwo.runtimes.transformers import compare_with_transformers

from shiptwo.formats.hf import HF_CONFIG_FILE, HF_GENERATION_CONFIG_FILE, HF_MODEL_CARD_FILE, HF_SHARD_INDEX_FILE, HF_TOKENIZER_CLASS, HF_TOKENIZER_CONFIG_FILE, HF_TOKENIZER_FILE, HF_WEIGHTS_FILE
from shiptwo.model.checkpoint import PROVENANCE_KEYS
from shiptwo.model.tokenizer import EOT_TOKEN


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, ckpt):
    return export_hf(ckpt, tmp_path_factory.mktemp("hf") / "export")


def test_export_files_and_config(hf_dir, ckpt):
    for name in (HF_CONFIG_FILE, HF_WEIGHTS_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_CONFIG_FILE,
                 HF_GENERATION_CONFIG_FILE, HF_MODEL_CARD_FILE):
        assert (hf_dir / name).is_file(), name
    cfg = json.loads((hf_dir / HF_CONFIG_FILE).read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    for key, value in ckpt.config.to_dict().items():
        assert cfg[key] == value, key
    assert cfg["head_dim"] == ckpt.config.head_dim and cfg["tie_word_embeddings"] is True
    for key in PROVENANCE_KEYS:
        assert cfg[key] == ckpt.provenance[key]
    tok_cfg = json.loads((hf_dir / HF_TOKENIZER_CONFIG_FILE).read_text())
    assert tok_cfg["tokenizer_class"] == HF_TOKENIZER_CLASS and tok_cfg["eos_token"] == EOT_TOKEN
    from shiptwo.formats.release import missing_provenance

    assert missing_provenance([hf_dir]) == {}


def test_transformers_loads_export_with_equal_logits_and_ids(hf_dir, ckpt):
    result = compare_with_transformers(ckpt, hf_dir)
    assert result.token_id_mismatches == []
    assert result.max_logit_diff <= 1e-4
    assert result.accelerator  # says what ran, or that no accelerator exists


def test_parity_check_fails_on_a_wrong_weight(tmp_path, hf_dir, ckpt):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    tensors = load_file(bad / HF_WEIGHTS_FILE)
    tensors["model.layers.0.mlp.down_proj.weight"] *= 3
    save_file(tensors, bad / HF_WEIGHTS_FILE, metadata={"format": "pt"})
    r = compare_with_transformers(ckpt, bad)
    assert r.max_logit_diff > 1e-3
    assert all(p["max_logit_diff"] > 1e-3 for p in r.per_prompt) and len(r.per_prompt) == 4  # every canary text shows it


def test_export_round_trips_through_import(tmp_path, hf_dir, ckpt):
    out = import_hf(hf_dir, tmp_path / "back.safetensors")
    back = load_checkpoint(out)
    assert back.config == ckpt.config and back.provenance == ckpt.provenance
    assert all(torch.equal(back.tensors[k], ckpt.tensors[k]) for k in ckpt.tensors)


def test_import_of_transformers_written_dir_matches_transformers(tmp_path, transformers_dir, tiny_tokenizer):
    prov = {"license": "MIT", "data_source": "none", "data_license": "MIT"}
    out = import_hf(transformers_dir, tmp_path / "imported.safetensors", prov)
    ckpt = load_checkpoint(out)
    assert ckpt.config.tie_word_embeddings is False and "lm_head.weight" in ckpt.tensors
    assert ckpt.chat_template and ckpt.provenance == prov
    assert ckpt.tokenizer().encode("def f(x):\n") == tiny_tokenizer.encode("def f(x):\n")
    assert compare_with_transformers(ckpt, transformers_dir).max_logit_diff <= 1e-4


def test_import_without_provenance_names_the_field(tmp_path, transformers_dir):
    with pytest.raises(ShiptwoError, match="provenance field license missing"):
        read_hf(transformers_dir)
    with pytest.raises(ShiptwoError, match="data_license"):
        read_hf(transformers_dir, {"license": "MIT", "data_source": "x"})


def _edited_copy(tmp_path, src, **changes):
    d = tmp_path / "edited"
    shutil.copytree(src, d)
    cfg = json.loads((d / HF_CONFIG_FILE).read_text())
    cfg.update(changes)
    (d / HF_CONFIG_FILE).write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("changes, field", [
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}}, "rope_parameters"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 32}, "head_dim"),
    ({"architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
    ({"model_type": "mistral"}, "model_type"),
])
def test_unrepresentable_config_is_refused_by_name(tmp_path, hf_dir, changes, field):
    with pytest.raises(ShiptwoError, match=field):
        read_hf(_edited_copy(tmp_path, hf_dir, **changes))


def test_missing_or_sharded_weights_and_missing_tokenizer_are_named(tmp_path, hf_dir):
    d = _edited_copy(tmp_path, hf_dir)
    (d / HF_TOKENIZER_FILE).unlink()
    with pytest.raises(ShiptwoError, match="tokenizer.json"):
        read_hf(d)
    (d / HF_WEIGHTS_FILE).rename(d / "model-00001-of-00002.safetensors")
    (d / HF_SHARD_INDEX_FILE).write_text("{}")
    with pytest.raises(ShiptwoError, match="sharded"):
        read_hf(d)
    (d / HF_SHARD_INDEX_FILE).unlink()
    with pytest.raises(ShiptwoError, match="model.safetensors"):
        read_hf(d)


def test_a_layer_count_beyond_the_weights_is_refused_before_a_model_is_built(tmp_path, hf_dir):
    """num_hidden_layers of 2^40 over two layers' weights once built 2^40 layers (minutes, all memory)."""
    from tests.formats.bounded import load_bounded

    d = _edited_copy(tmp_path, hf_dir, num_hidden_layers=1 << 40)
    assert load_bounded(d, "shiptwo.formats.hf:read_hf") == (f"{d / HF_CONFIG_FILE}: num_hidden_layers is {1 << 40} "
                                                            f"but {d / HF_WEIGHTS_FILE} holds tensors of 2 layer(s)")


@pytest.mark.parametrize("field, value", [("num_attention_heads", 0), ("num_key_value_heads", 0),
                                          ("intermediate_size", -1), ("hidden_size", 64.0), ("num_hidden_layers", "2")])
def test_a_size_that_is_not_a_positive_integer_is_named(tmp_path, hf_dir, field, value):
    """0 heads raised a ZeroDivisionError, a negative size a RuntimeError (tracebacks); 64.0 and "2"
    were read as 64 and 2 (int() of whatever the file held)."""
    d = _edited_copy(tmp_path, hf_dir, **{field: value})
    with pytest.raises(ShiptwoError, match=rf"^{d / HF_CONFIG_FILE}: field {field} is {value!r}, not a positive integer$"):
        read_hf(d)


def test_a_context_beyond_the_cap_is_named(tmp_path, hf_dir):
    """2^28 positions were read, then the first forward allocated RoPE tables of 16 GiB each."""
    d = _edited_copy(tmp_path, hf_dir, max_position_embeddings=2**28)
    with pytest.raises(ShiptwoError, match=rf"^{d / HF_CONFIG_FILE}: field max_position_embeddings is {2**28}, "
                                           rf"above the supported {2**20} "):
        read_hf(d)


def test_shape_contradicting_config_is_refused(tmp_path, hf_dir):
    d = _edited_copy(tmp_path, hf_dir, intermediate_size=128)
    with pytest.raises(ShiptwoError, match="mlp"):
        read_hf(d)


def test_cli_export_import_and_clean_failure(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "hf"
    assert main(["export", str(tiny_checkpoint), "--format", "hf", "-o", str(out)]) == 0
    good = (out / HF_CONFIG_FILE).read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["export", str(bad), "--format", "hf", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shiptwo: error:") and str(bad) in err and "\n" not in err
    assert (out / HF_CONFIG_FILE).read_bytes() == good  # the good export is untouched
    assert main(["import", str(out), "-o", str(tmp_path / "ck.safetensors")]) == 0
    assert main(["import", str(tmp_path / "nodir"), "-o", str(tmp_path / "x.safetensors")]) == 2


def test_nan_weights_are_refused_by_name(tmp_path, hf_dir):
    from safetensors.torch import load_file, save_file

    d = _edited_copy(tmp_path, hf_dir)
    tensors = load_file(d / HF_WEIGHTS_FILE)
    tensors["model.norm.weight"][3] = float("inf")
    save_file(tensors, d / HF_WEIGHTS_FILE, metadata={"format": "pt"})
    with pytest.raises(ShiptwoError, match="model.norm.weight contains NaN or Inf"):
        read_hf(d)
