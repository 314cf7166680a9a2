"""`shiptwo import MODEL.gguf`: GGUF files of several tensor types, written by gguf-py directly and by
llama.cpp's own quantizer, import as checkpoints whose tokenizer and next-token distributions agree
with llama.cpp running the original file; unsupported features are refused by name."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_import import gguf_pre_name, import_gguf, load_gguf
from shiptwo.model.checkpoint import Checkpoint, load_checkpoint
from shiptwo.model.config import ModelConfig
from shiptwo.model.llama import LlamaModel
from shiptwo.runtimes.llamacpp import compare_distributions, llamacpp_quantize

K = gguf.Keys
Q = gguf.GGMLQuantizationType
PROVENANCE = {"license": "Apache-2.0", "data_source": "random init", "data_license": "none"}
GGUF_PY_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
LLAMACPP_TYPES = ("q2_k", "q4_k_m", "q6_k")
MAX_KL, MIN_TOP1 = 0.05, 0.9  # a faithful import; the damaged file below lands far outside both


@pytest.fixture(scope="module")
def k_quant_checkpoint(tiny_tokenizer) -> Checkpoint:
    """A tiny LLaMA whose rows are multiples of 256 (K-quants need them), with sharp attention and
    peaked (not one-hot) logits, so that a layout defect moves the next-token distributions far."""
    cfg = ModelConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rope_theta=100000.0,
                      tie_word_embeddings=False, bos_token_id=tiny_tokenizer.eot_id, eos_token_id=tiny_tokenizer.eot_id)
    model = LlamaModel(cfg)
    model.init_weights(seed=3)
    tensors = model.state_dict_for_save()
    for name in tensors:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            tensors[name] = tensors[name] * 8.0
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 10.0
    return Checkpoint(cfg, tensors, tiny_tokenizer.to_json(), dict(PROVENANCE))


def _hf_to_llamacpp_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf's Q/K permutation, written out here independently of shiptwo's."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_with_gguf_py(ckpt: Checkpoint, path, dtype: str, *, permute=True, extra: dict | None = None, arch="llama"):
    """A llama GGUF written with gguf-py's writer alone (as a converter would), not shiptwo's exporter."""
    cfg, spec = ckpt.config, json.loads(ckpt.tokenizer_json)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_license(ckpt.provenance["license"])
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    vocab = {i: t for t, i in spec["model"]["vocab"].items()}
    special = {t["id"] for t in spec["added_tokens"] if t["special"]}
    vocab.update({t["id"]: t["content"] for t in spec["added_tokens"]})
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(gguf_pre_name(ckpt.tokenizer_json))
    w.add_token_list([vocab[i] for i in range(cfg.vocab_size)])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(cfg.vocab_size)])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    for key, value in (extra or {}).items():
        (w.add_bool if isinstance(value, bool) else w.add_string if isinstance(value, str) else w.add_uint32)(key, value)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "input_layernorm": "attn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in ckpt.tensors.items():
        arr = t.float().numpy()
        stem = name.removesuffix(".weight")
        if stem.startswith("model.layers."):
            _, _, block, rest = stem.split(".", 3)
            gname = f"blk.{block}.{names[rest]}.weight"
            heads = {"self_attn.q_proj": cfg.num_attention_heads, "self_attn.k_proj": cfg.num_key_value_heads}.get(rest)
            if permute and heads:
                arr = _hf_to_llamacpp_rows(arr, heads)
        else:
            gname = "output.weight" if stem == "lm_head" else f"{names[stem]}.weight"
        qtype = Q.F32 if arr.ndim == 1 else Q[dtype.upper()]
        data = gguf.quants.quantize(np.ascontiguousarray(arr), qtype)
        w.add_tensor(gname, data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory, k_quant_checkpoint):
    d = tmp_path_factory.mktemp("import")
    files = {t: write_with_gguf_py(k_quant_checkpoint, d / f"tiny-{t}.gguf", t) for t in GGUF_PY_TYPES}
    files.update({t: llamacpp_quantize(files["f32"], d / f"tiny-{t}.gguf", t) for t in LLAMACPP_TYPES})
    return files


@pytest.mark.parametrize("dtype", GGUF_PY_TYPES + LLAMACPP_TYPES)
def test_import_round_trip_agrees_with_llamacpp(tmp_path, gguf_files, k_quant_checkpoint, dtype):
    path = gguf_files[dtype]
    written = {t.tensor_type for t in gguf.GGUFReader(path).tensors if len(t.shape) > 1}
    if dtype in LLAMACPP_TYPES:
        assert written - {Q.F32, Q.F16, Q.Q8_0} & {Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K}, written  # K-quants written
    out = tmp_path / "imported.safetensors"
    assert main(["import", str(path), "-o", str(out), "--data-source", "random init", "--data-license", "none"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.config == k_quant_checkpoint.config  # from the llama.* keys
    assert ckpt.training["imported_sha256"] and ckpt.provenance["license"] == "Apache-2.0"
    parity = compare_distributions(ckpt, path)  # our runtime on the import vs llama.cpp on the file
    assert parity.token_id_mismatches == []
    print(dtype, parity.evidence())
    assert parity.kl_mean <= MAX_KL and parity.top1_agreement >= MIN_TOP1, parity.evidence()
    if dtype in ("f32", "f16", "bf16"):  # exact formats: the weights themselves
        ref = k_quant_checkpoint.tensors["model.layers.1.self_attn.q_proj.weight"]
        assert torch.allclose(ckpt.tensors["model.layers.1.self_attn.q_proj.weight"], ref, rtol=1e-2, atol=1e-2)


def test_an_import_with_the_wrong_qk_layout_is_caught(tmp_path, gguf_files, k_quant_checkpoint):
    """Rows left in Hugging Face order (no permutation) import and tokenize fine, and compute another
    model than llama.cpp running the correct file: the comparison catches it."""
    path = write_with_gguf_py(k_quant_checkpoint, tmp_path / "unpermuted.gguf", "f32", permute=False)
    parity = compare_distributions(load_gguf(path, PROVENANCE), gguf_files["f32"])
    assert parity.token_id_mismatches == []
    print("damaged", parity.evidence())
    assert parity.kl_mean > MAX_KL and parity.top1_agreement < MIN_TOP1, parity.evidence()


def test_digit_splitting_pre_tokenizer_round_trips(tmp_path, k_quant_checkpoint):
    from shiptwo.formats.gguf_import import hf_pre_tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(k_quant_checkpoint.tokenizer_json)
    tok.pre_tokenizer = hf_pre_tokenizer("smollm")
    ckpt = Checkpoint(k_quant_checkpoint.config, k_quant_checkpoint.tensors, tok.to_str(), dict(PROVENANCE))
    path = write_with_gguf_py(ckpt, tmp_path / "digits.gguf", "q8_0")
    assert gguf.GGUFReader(path).fields[K.Tokenizer.PRE].contents() == "smollm"
    back = load_gguf(path)
    assert back.tokenizer().encode("x = 12345") == ckpt.tokenizer().encode("x = 12345")
    assert len(back.tokenizer().encode("12345")) == 5  # one digit a token, as llama.cpp splits them
    assert compare_distributions(back, path, texts=("x = 12345\n", "def f(n): return n * 1000\n")).token_id_mismatches == []


@pytest.mark.parametrize("extra,named", [
    ({"llama.rope.scaling.type": "linear"}, "llama.rope.scaling.type"),
    ({"llama.expert_count": 8}, "llama.expert_count"),
    ({"llama.attention.sliding_window": 64}, "llama.attention.sliding_window"),
    ({K.Tokenizer.ADD_BOS: True}, K.Tokenizer.ADD_BOS),
])
def test_unsupported_features_are_refused_by_name(tmp_path, k_quant_checkpoint, extra, named):
    path = write_with_gguf_py(k_quant_checkpoint, tmp_path / "feature.gguf", "f32", extra=extra)
    with pytest.raises(ShiptwoError, match=named.replace(".", r"\.")) as err:
        import_gguf(path, tmp_path / "out.safetensors", PROVENANCE)
    assert str(path) in str(err.value) and not (tmp_path / "out.safetensors").exists()


def test_unknown_architecture_and_pre_tokenizer_are_refused(tmp_path, k_quant_checkpoint):
    with pytest.raises(ShiptwoError, match="unknown model architecture 'qwen2'"):
        load_gguf(write_with_gguf_py(k_quant_checkpoint, tmp_path / "qwen.gguf", "f32", arch="qwen2"))
    path = write_with_gguf_py(k_quant_checkpoint, tmp_path / "pre.gguf", "f32")
    data = path.read_bytes().replace(b"gpt-2", b"gpt-4")  # the pre-tokenizer's name, same length
    path.write_bytes(data)
    with pytest.raises(ShiptwoError, match="tokenizer.ggml.pre is 'gpt-4'"):
        load_gguf(path)


def test_missing_provenance_names_the_flags(tmp_path, gguf_files, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["import", str(gguf_files["q8_0"]), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--data-source --data-license" in err and err.count("\n") == 1 and not out.exists()


def test_tied_embeddings_when_output_weight_is_absent(tmp_path, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)  # tied: no lm_head tensor, so no output.weight in the file
    back = load_gguf(write_with_gguf_py(ckpt, tmp_path / "tied.gguf", "f32"))
    assert back.config.tie_word_embeddings and "lm_head.weight" not in back.tensors
    assert all(torch.equal(back.tensors[k], ckpt.tensors[k]) for k in ckpt.tensors)  # Q/K un-permuted exactly
