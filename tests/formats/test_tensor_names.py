"""The one name mapping: HF class -> llama.cpp architecture, tensor names both ways, Q/K layout."""

import gguf
import numpy as np
import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.formats.names import gguf_to_hf, hf_class_for, hf_to_gguf, llamacpp_architecture, permute_qk, unpermute_qk


def test_hf_class_maps_to_llamacpp_architecture():
    assert llamacpp_architecture("LlamaForCausalLM") == "llama"
    assert hf_class_for("llama") == "LlamaForCausalLM"


@pytest.mark.parametrize("bad", ["LlamaForCausalLM", "mistral", ""])
def test_unknown_architecture_is_refused(bad):
    with pytest.raises(ShiptwoError, match="unknown model architecture"):
        hf_class_for(bad)


def test_unsupported_hf_class_is_refused():
    with pytest.raises(ShiptwoError, match="MistralForCausalLM"):
        llamacpp_architecture("MistralForCausalLM")


def test_every_tensor_of_the_config_maps_and_round_trips(tiny_config):
    names = list(tiny_config.tensor_shapes())
    mapped = [hf_to_gguf(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert [gguf_to_hf(m) for m in mapped] == names
    assert hf_to_gguf("model.layers.1.self_attn.q_proj.weight") == "blk.1.attn_q.weight"
    assert hf_to_gguf("model.embed_tokens.weight") == "token_embd.weight"
    assert hf_to_gguf("lm_head.weight") == "output.weight"
    assert hf_to_gguf("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight"
    # every GGUF name is one llama.cpp's own table declares for the llama architecture
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]}
    for m in mapped:
        base = m.removesuffix(".weight")
        assert base.replace(".1.", ".{bid}.").replace(".0.", ".{bid}.") in allowed, m


@pytest.mark.parametrize("name", ["model.layers.0.self_attn.rotary.weight", "lm_head.bias", "blk.0.attn_qkv.weight"])
def test_unknown_tensor_names_are_refused(name):
    with pytest.raises(ShiptwoError, match="tensor"):
        hf_to_gguf(name) if not name.startswith("blk") else gguf_to_hf(name)


def test_qk_permutation_matches_llamacpp_layout_and_inverts():
    heads, head_dim, cols = 2, 8, 3
    w = np.arange(heads * head_dim * cols, dtype=np.float32).reshape(heads * head_dim, cols)
    p = permute_qk(w, heads)
    # llama.cpp pairs rotate-half partners (i, i + head_dim/2) as adjacent rows
    half = head_dim // 2
    for h in range(heads):
        for i in range(half):
            assert np.array_equal(p[h * head_dim + 2 * i], w[h * head_dim + i])
            assert np.array_equal(p[h * head_dim + 2 * i + 1], w[h * head_dim + half + i])
    assert np.array_equal(unpermute_qk(p, heads), w)
    assert not np.array_equal(p, w)
