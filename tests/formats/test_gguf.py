"""GGUF export: every key and tensor reads back, defects the validator must refuse, Q8_0 round trip."""

import gguf
import numpy as np
import pytest
import torch

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf, write_gguf
from shiptwo.formats.gguf_import import load_gguf
from shiptwo.formats.gguf_load import quantization_cosines, read_gguf, validate_gguf
from shiptwo.formats.release import missing_provenance

from shiptwo.formats.gguf_export import GGUF_DTYPES
from shiptwo.model.canaries import CANARY_STRINGS
from shiptwo.model.tokenizer import EOT_TOKEN

K = gguf.Keys


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def files(tmp_path_factory, ckpt):
    d = tmp_path_factory.mktemp("gguf")
    return {dt: export_gguf(ckpt, d / f"tiny-{dt}.gguf", dt) for dt in GGUF_DTYPES}


def test_keys_read_back(files, ckpt):
    cfg = ckpt.config
    g = read_gguf(files["f32"])
    f = g.fields
    assert f[K.General.ARCHITECTURE] == "llama"
    expected = {
        K.LLM.CONTEXT_LENGTH: cfg.max_position_embeddings, K.LLM.EMBEDDING_LENGTH: cfg.hidden_size,
        K.LLM.BLOCK_COUNT: cfg.num_hidden_layers, K.LLM.FEED_FORWARD_LENGTH: cfg.intermediate_size,
        K.Attention.HEAD_COUNT: cfg.num_attention_heads, K.Attention.HEAD_COUNT_KV: cfg.num_key_value_heads,
        K.Rope.DIMENSION_COUNT: cfg.head_dim, K.LLM.VOCAB_SIZE: cfg.vocab_size,
    }
    for key, value in expected.items():
        assert f[key.format(arch="llama")] == value, key
    assert f[K.Attention.LAYERNORM_RMS_EPS.format(arch="llama")] == pytest.approx(cfg.rms_norm_eps, rel=1e-6)
    assert f[K.Rope.FREQ_BASE.format(arch="llama")] == pytest.approx(cfg.rope_theta, rel=1e-6)
    assert f[K.General.FILE_TYPE] == gguf.LlamaFileType.ALL_F32 and f[K.General.NAME]
    assert f[K.Tokenizer.MODEL] == "gpt2" and f[K.Tokenizer.PRE] == "gpt-2"
    assert len(f[K.Tokenizer.LIST]) == len(f[K.Tokenizer.TOKEN_TYPE]) == cfg.vocab_size
    assert len(f[K.Tokenizer.MERGES]) > 0
    eot = f[K.Tokenizer.LIST].index(EOT_TOKEN)
    assert f[K.Tokenizer.TOKEN_TYPE][eot] == gguf.TokenType.CONTROL
    assert f[K.Tokenizer.BOS_ID] == f[K.Tokenizer.EOS_ID] == cfg.eos_token_id
    assert f[K.General.LICENSE] == ckpt.provenance["license"]
    assert missing_provenance([files["f32"], files["q8_0"]]) == {}


def test_tensors_read_back_with_types(files, ckpt):
    for dtype, path in files.items():
        tensors = {t.name: t for t in read_gguf(path).reader.tensors}
        assert "output.weight" not in tensors  # tied embeddings
        assert len(tensors) == len(ckpt.config.tensor_shapes())
        for name, t in tensors.items():
            if len(t.shape) == 1:
                assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
            else:
                assert t.tensor_type.name.lower() == dtype, name
        assert tuple(int(d) for d in tensors["blk.0.ffn_down.weight"].shape) == (160, 64)  # ggml order


def test_loader_round_trip(files, ckpt):
    back = load_gguf(files["f32"])
    assert back.config == ckpt.config and back.provenance == ckpt.provenance
    assert all(torch.equal(back.tensors[k], ckpt.tensors[k]) for k in ckpt.tensors)  # Q/K un-permuted
    for text in CANARY_STRINGS:
        assert back.tokenizer().encode(text) == ckpt.tokenizer().encode(text)


def test_q8_0_cosine_from_file(files, ckpt):
    cos = quantization_cosines(ckpt, files["q8_0"])
    assert len(cos) == len(ckpt.tensors) and min(cos.values()) >= 0.999
    assert min(quantization_cosines(ckpt, files["f16"]).values()) >= 0.99999


def test_cosine_check_fails_on_a_damaged_tensor(tmp_path, ckpt):
    damaged = load_checkpoint(ckpt.path)
    name = "model.layers.1.mlp.up_proj.weight"
    damaged.tensors[name] = damaged.tensors[name] + torch.randn_like(damaged.tensors[name]) * 0.02
    path = export_gguf(damaged, tmp_path / "damaged.gguf", "q8_0")
    cos = quantization_cosines(ckpt, path)
    assert cos[name] < 0.999 and min(cos.values()) < 0.999


def test_hf_class_as_architecture_is_refused(tmp_path, ckpt):
    path = write_gguf(ckpt, tmp_path / "arch.gguf", architecture="LlamaForCausalLM")
    with pytest.raises(ShiptwoError, match="unknown model architecture 'LlamaForCausalLM'"):
        validate_gguf(path)


def test_empty_merges_trap_is_caught(tmp_path, ckpt):
    path = write_gguf(ckpt, tmp_path / "nomerges.gguf", with_merges=False)
    assert K.Tokenizer.MERGES not in read_gguf(path).fields  # the writer dropped the empty array
    with pytest.raises(ShiptwoError, match="merges"):
        validate_gguf(path)


def test_missing_tokenizer_is_refused(tmp_path, ckpt):
    path = write_gguf(ckpt, tmp_path / "notok.gguf", with_tokenizer=False)
    with pytest.raises(ShiptwoError, match="missing tokenizer"):
        load_gguf(path)


def test_missing_provenance_is_refused(ckpt, tmp_path):
    stripped = load_checkpoint(ckpt.path)
    stripped.provenance.pop("data_license")
    with pytest.raises(ShiptwoError, match="data_license"):
        export_gguf(stripped, tmp_path / "noprov.gguf")
    assert not (tmp_path / "noprov.gguf").exists()


def test_q8_0_falls_back_to_f16_for_odd_rows_and_says_so(tmp_path, ckpt, caplog):
    from shiptwo.model.checkpoint import Checkpoint
    from shiptwo.model.config import ModelConfig
    from shiptwo.model.llama import LlamaModel

    cfg = ModelConfig(**{**ckpt.config.to_dict(), "intermediate_size": 40})
    model = LlamaModel(cfg)
    model.init_weights(0)
    odd = Checkpoint(cfg, model.state_dict_for_save(), ckpt.tokenizer_json, ckpt.provenance)
    path = export_gguf(odd, tmp_path / "odd.gguf", "q8_0")
    g = read_gguf(path)
    types = {t.name: t.tensor_type for t in g.reader.tensors}
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.F16  # rows of 40
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0  # rows of 64
    assert "mlp.down_proj" in g.fields[K.General.DESCRIPTION] and "F16" in caplog.text
    assert min(quantization_cosines(odd, path).values()) >= 0.999


def test_cli_export_gguf_and_no_clobber(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "m.gguf"
    assert main(["export", str(tiny_checkpoint), "--format", "gguf", "--dtype", "q8_0", "-o", str(out)]) == 0
    good = out.read_bytes()
    nan = load_checkpoint(tiny_checkpoint, check_finite=False)
    nan.tensors["model.norm.weight"][0] = float("nan")
    from safetensors.torch import save as st_save

    bad = tmp_path / "nan.safetensors"
    bad.write_bytes(st_save(nan.tensors, metadata=nan.metadata()))
    capsys.readouterr()
    assert main(["export", str(bad), "--format", "gguf", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and str(bad) in err and err.count("\n") == 1
    assert out.read_bytes() == good


@pytest.mark.parametrize("defect", ["magic", "truncated", "nan", "shape"])
def test_loader_defects_are_one_line_errors(tmp_path, files, defect):
    data = bytearray(files["f32"].read_bytes())
    path = tmp_path / f"{defect}.gguf"
    if defect == "magic":
        data[:4] = b"GGML"
    elif defect == "truncated":
        data = data[: len(data) // 3]
    elif defect == "nan":
        t = next(t for t in read_gguf(files["f32"]).reader.tensors if t.name == "output_norm.weight")
        data[t.data_offset : t.data_offset + 4] = np.float32("nan").tobytes()
    elif defect == "shape":  # feed_forward_length rewritten: the config now contradicts the tensors
        key = K.LLM.FEED_FORWARD_LENGTH.format(arch="llama")
        field = read_gguf(files["f32"]).reader.fields[key]
        value_at = field.offset + 8 + len(key) + 4  # key length, key bytes, value type, then the value
        data[value_at : value_at + 4] = np.uint32(128).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ShiptwoError) as err:
        load_gguf(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    if defect == "shape":
        assert "shape" in str(err.value)
