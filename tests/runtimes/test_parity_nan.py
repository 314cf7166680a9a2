"""A parity figure is a maximum over prompts: a NaN logit in either runtime must make it NaN (or
larger), never vanish in `max` (Python's max keeps its first argument against NaN), so a corrupt
export cannot read as perfect parity (AC-SHIP2-013, AC-SHIP1-001, AC-SHIP2-009)."""

import math

import pytest

from shiptwo.formats.hf import HF_WEIGHTS_FILE, export_hf
from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.runtimes.transformers import compare_with_transformers


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def test_transformers_parity_is_not_perfect_when_the_export_yields_nan(tmp_path, ckpt):
    from safetensors.torch import load_file, save_file

    bad = export_hf(ckpt, tmp_path / "hf")
    tensors = load_file(bad / HF_WEIGHTS_FILE)
    tensors["model.norm.weight"][0] = float("nan")  # one NaN weight: NaN logits in transformers
    save_file(tensors, bad / HF_WEIGHTS_FILE, metadata={"format": "pt"})
    r = compare_with_transformers(ckpt, bad)
    assert not r.max_logit_diff <= 1e-4, r.max_logit_diff
    assert all(not p["max_logit_diff"] <= 1e-4 for p in r.per_prompt)


def test_llamacpp_parity_is_not_perfect_when_the_gguf_yields_nan(tmp_path, ckpt):
    from shiptwo.formats.gguf_export import write_gguf
    from shiptwo.runtimes.llamacpp import compare_with_llamacpp

    bad = load_checkpoint(ckpt.path)
    bad.tensors["model.norm.weight"] = bad.tensors["model.norm.weight"].clone()
    bad.tensors["model.norm.weight"][0] = float("nan")  # NaN logits in llama.cpp, ours stay finite
    r = compare_with_llamacpp(ckpt, write_gguf(bad, tmp_path / "nan.gguf"), greedy_steps=4)
    assert not r.max_logit_diff <= 1e-3 and not r.ok(1e-3), r.max_logit_diff
    assert not r.min_logit_cosine >= 0.0  # NaN, not the starting 1.0


def test_extreme_keeps_a_nan_wherever_it_stands():
    from shiptwo import stats
    from shiptwo.errors import ShiptwoError

    assert max([0.0, float("nan")]) == 0.0  # why: Python's max drops a NaN that is not first
    assert math.isnan(stats.extreme([0.0, float("nan"), 1.0]))
    assert math.isnan(stats.extreme([1.0, float("nan")], "min"))
    assert stats.extreme([0.5, 2.0]) == 2.0 and stats.extreme([0.5, 2.0], "min") == 0.5
    with pytest.raises(ShiptwoError, match="no value"):
        stats.extreme([])
