"""The native checkpoint reloads bit-exact and refuses defective files with one clear error."""

from __future__ import annotations

import json

import pytest
import torch

from shiptwo.model.checkpoint import load_checkpoint, save_checkpoint
from shiptwo.errors import ShiptwoError

from shiptwo.formats.names import HF_ARCHITECTURE_CLASS
from shiptwo.model.checkpoint import META_ARCHITECTURE, META_CONFIG, META_TOKENIZER


def test_reload_is_bit_exact(tiny_checkpoint, tmp_path):
    a = load_checkpoint(tiny_checkpoint)
    out = save_checkpoint(a, tmp_path / "again.safetensors")
    b = load_checkpoint(out)
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name
    assert a.config == b.config and a.provenance == b.provenance


def test_truncated_file_is_refused(tiny_checkpoint, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:-100])
    with pytest.raises(ShiptwoError, match="cut.safetensors"):
        load_checkpoint(bad)


def test_wrong_magic_is_refused(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ShiptwoError, match="junk.safetensors"):
        load_checkpoint(bad)


def _rewrite(src, dst, edit_meta=None, edit_tensors=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_missing_embedded_tokenizer_is_refused(tiny_checkpoint, tmp_path):
    bad = _rewrite(tiny_checkpoint, tmp_path / "b.safetensors", edit_meta=lambda m: m.pop(META_TOKENIZER))
    with pytest.raises(ShiptwoError, match="tokenizer_json"):
        load_checkpoint(bad)


def test_class_name_as_architecture_is_refused(tiny_checkpoint, tmp_path):
    def edit(m):
        m[META_ARCHITECTURE] = HF_ARCHITECTURE_CLASS

    bad = _rewrite(tiny_checkpoint, tmp_path / "b.safetensors", edit_meta=edit)
    with pytest.raises(ShiptwoError, match="unsupported architecture"):
        load_checkpoint(bad)


def test_shape_contradicting_config_is_refused(tiny_checkpoint, tmp_path):
    def edit(m):
        cfg = json.loads(m[META_CONFIG])
        cfg["intermediate_size"] += 8
        m[META_CONFIG] = json.dumps(cfg)

    bad = _rewrite(tiny_checkpoint, tmp_path / "b.safetensors", edit_meta=edit)
    with pytest.raises(ShiptwoError, match="shape"):
        load_checkpoint(bad)


def test_nan_tensor_is_refused(tiny_checkpoint, tmp_path):
    def edit(t):
        t["model.norm.weight"][0] = float("nan")

    bad = _rewrite(tiny_checkpoint, tmp_path / "b.safetensors", edit_tensors=edit)
    with pytest.raises(ShiptwoError, match="NaN"):
        load_checkpoint(bad)


def test_failed_save_keeps_previous_file(tiny_checkpoint, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint)
    target = tmp_path / "keep.safetensors"
    save_checkpoint(ckpt, target)
    good = target.read_bytes()
    ckpt.provenance = {}
    with pytest.raises(ShiptwoError, match="provenance"):
        save_checkpoint(ckpt, target)
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def _with_config(src, dst, **fields):
    def edit(m):
        m[META_CONFIG] = json.dumps({**json.loads(m[META_CONFIG]), **fields})

    return _rewrite(src, dst, edit_meta=edit)


@pytest.mark.parametrize("field, value, message", [
    ("num_attention_heads", 0, "is 0, not a positive integer"),  # was a ZeroDivisionError
    ("num_key_value_heads", -2, "is -2, not a positive integer"),
    ("intermediate_size", 64.9, "is 64.9, not a positive integer"),  # was read as 64
    ("num_hidden_layers", True, "is True, not a positive integer"),  # was read as 1
    ("hidden_size", "64", "is '64', not a positive integer"),
    ("rms_norm_eps", float("nan"), "is nan, not a positive finite number"),
    ("rope_theta", -1.0, "is -1.0, not a positive finite number"),
    ("eos_token_id", 10**6, "is 1000000, not a token id below vocab_size"),
    # loaded, then its RoPE tables (16 GiB each) were allocated at the first forward: the OOM killer
    ("max_position_embeddings", 2**28, "is 268435456, above the supported 1048576"),
])
def test_a_config_field_of_the_wrong_kind_or_range_is_named(tiny_checkpoint, tmp_path, field, value, message):
    bad = _with_config(tiny_checkpoint, tmp_path / "b.safetensors", **{field: value})
    with pytest.raises(ShiptwoError, match=rf"^{bad}: config: field {field} {message}"):
        load_checkpoint(bad)


def test_a_layer_count_beyond_the_tensors_is_refused_before_listing_them(tiny_checkpoint, tmp_path):
    """2^40 layers listed the tensor contract layer by layer until memory ran out."""
    from tests.formats.bounded import load_bounded

    bad = _with_config(tiny_checkpoint, tmp_path / "b.safetensors", num_hidden_layers=1 << 40)
    assert load_bounded(bad, "shiptwo.model.checkpoint:load_checkpoint").startswith(
        f"{bad}: {len(load_checkpoint(tiny_checkpoint).tensors)} tensors, the config implies ")
