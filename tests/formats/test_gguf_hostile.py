"""Hostile GGUF files, written with gguf-py from our own export: a count field that would exhaust
memory, tensor data that overlaps or leaves a gap (llama.cpp refuses both), hyper-parameters of the
wrong kind. Each is one ShiptwoError naming the file and the field, in bounded time and memory."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf
from shiptwo.formats.gguf_import import load_gguf
from shiptwo.model.checkpoint import load_checkpoint

from tests.formats import bounded

K, T = gguf.Keys, gguf.GGUFValueType


@pytest.fixture(scope="module")
def honest(tmp_path_factory, tiny_checkpoint):
    return export_gguf(load_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("hostile") / "honest.gguf", "f32")


def rewrite(src, dst, edit=None, endianess=gguf.GGUFEndian.LITTLE):
    """`src` written again by gguf-py's writer, its key/value fields passed through `edit` first
    (a list of [name, value, type, array sub-type])."""
    r = gguf.GGUFReader(src)
    fields = [[f.name, f.contents(), f.types[0], f.types[-1] if f.types[0] == T.ARRAY else None]
              for f in r.fields.values() if not f.name.startswith("GGUF.")]
    fields = edit(fields) if edit else fields
    w = gguf.GGUFWriter(str(dst), next(v for n, v, *_ in fields if n == K.General.ARCHITECTURE), endianess=endianess)
    for name, value, vtype, sub in fields:
        if name != K.General.ARCHITECTURE:
            w.add_key_value(name, value, vtype, sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def setting(key, value, vtype, sub=None):
    return lambda fields: [f for f in fields if f[0] != key] + [[key, value, vtype, sub]]


def load_bounded(path) -> str:
    return bounded.load_bounded(path, "shiptwo.formats.gguf_import:load_gguf")


def test_an_array_longer_than_the_file_is_refused_in_bounded_memory(honest, tmp_path):
    """gguf-py's reader loops for ever on an array whose length runs past the end of the file,
    keeping an empty view per missing element: a declared length of 2^62 exhausted any memory."""
    path = rewrite(honest, tmp_path / "long-array.gguf")
    r = gguf.GGUFReader(path, "r+")
    r.fields[K.Tokenizer.TOKEN_TYPE].parts[4][0] = 1 << 62  # the array's length (its parts: key len, key, type, item type, length, ...)
    r.data.flush()
    del r
    message = load_bounded(path)
    assert message.startswith(f"{path}: corrupt GGUF file ({K.Tokenizer.TOKEN_TYPE}:") and "past the end of the file" in message


def test_a_block_count_beyond_the_tensors_is_refused_before_a_model_is_built(honest, tmp_path):
    """llama.block_count of 2^40 in a file of two blocks once built 2^40 layers (minutes, all memory)."""
    path = rewrite(honest, tmp_path / "blocks.gguf", setting(K.LLM.BLOCK_COUNT.format(arch="llama"), 1 << 40, T.UINT64))
    assert load_bounded(path) == (f"{path}: invalid GGUF: llama.block_count={1 << 40} but the file holds "
                                  "tensors of 2 block(s) numbered up to 1")


@pytest.mark.parametrize("how", ["overlap", "gap"])
def test_tensor_data_where_llamacpp_refuses_it_is_refused(honest, tmp_path, how):
    """Two tensors sharing bytes, or a gap between them: llama.cpp refuses the file, so our reader
    (which read the second tensor from the first one's bytes) must too, naming the tensor."""
    from shiptwo.runtimes.llamacpp import load_llama

    path = rewrite(honest, tmp_path / f"{how}.gguf")
    r = gguf.GGUFReader(path, "r+")
    first, second = r.tensors[0], r.tensors[1]
    offset = second.field.parts[5]  # the tensor info's data offset
    offset[0] = first.field.parts[5][0] if how == "overlap" else offset[0] + r.alignment
    r.data.flush()
    del r
    with pytest.raises(ShiptwoError, match=rf"^{path}: corrupt GGUF file \(tensor {second.name}: data at offset"):
        load_gguf(path)
    with pytest.raises(ShiptwoError, match="llama.cpp refused the file"):
        load_llama(path, 32)


@pytest.mark.parametrize("key, value, vtype, sub, says", [
    ("llama.embedding_length", "64", T.STRING, None, "is not a positive integer"),  # was a TypeError from '%'
    ("llama.attention.head_count", [4], T.ARRAY, T.UINT32, "is not a positive integer"),  # llama.cpp's per-layer form
    ("llama.attention.head_count_kv", 0, T.UINT32, None, "is not a positive integer"),  # was a ZeroDivisionError
    ("llama.attention.layer_norm_rms_epsilon", "x", T.STRING, None, "is not a positive float"),  # was a ValueError
    ("llama.rope.freq_base", "1e4", T.STRING, None, "is not a positive float"),  # was read as 10000.0; llama.cpp refuses
    ("llama.context_length", -5, T.INT32, None, "is not a positive integer"),  # was loaded
    ("tokenizer.chat_template", 3, T.UINT32, None, "is not a string"),  # was loaded, to fail when saved
])
def test_a_hyper_parameter_of_the_wrong_kind_is_named(honest, tmp_path, key, value, vtype, sub, says):
    path = rewrite(honest, tmp_path / "mistyped.gguf", setting(key, value, vtype, sub))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value).startswith(f"{path}: invalid GGUF: ") and f"{key}={value!r} {says}" in str(exc.value)


def test_a_context_length_beyond_the_cap_is_named(honest, tmp_path):
    """llama.context_length 2^28 was loaded; the first forward then allocated RoPE tables of 16 GiB each."""
    path = rewrite(honest, tmp_path / "long.gguf", setting("llama.context_length", 2**28, T.UINT32, None))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value).startswith(f"{path}: ") and f"max_position_embeddings is {2**28}, above the supported {2**20}" \
        in str(exc.value)


@pytest.mark.parametrize("key, value, sub, says", [
    ("tokenizer.ggml.merges", [1, 2], T.UINT32, "is not a list of strings"),  # was an AttributeError from split
    ("tokenizer.ggml.token_type", ["1"], T.STRING, "is not a list of integers"),  # was 'bos is not a CONTROL token'
])
def test_a_tokenizer_list_of_the_wrong_kind_is_named(honest, tmp_path, key, value, sub, says):
    path = rewrite(honest, tmp_path / "mistyped.gguf", setting(key, value, T.ARRAY, sub))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value).startswith(f"{path}: invalid GGUF: ") and f"{key} {says}" in str(exc.value)


def test_a_big_endian_file_llamacpp_refuses_is_refused(honest, tmp_path):
    """gguf-py reads a byte-swapped (big-endian) file, so our reader loaded it, while llama.cpp on a
    little-endian host refuses it: a release that passed our checks would not load where it ships."""
    from shiptwo.runtimes.llamacpp import load_llama

    path = rewrite(honest, tmp_path / "big-endian.gguf", endianess=gguf.GGUFEndian.BIG)
    with pytest.raises(ShiptwoError, match=rf"^{path}: corrupt GGUF file \(byte order: big-endian"):
        load_gguf(path)
    with pytest.raises(ShiptwoError, match="llama.cpp refused the file"):
        load_llama(path, 32)


def test_the_honest_file_still_loads(honest, tmp_path):
    load_gguf(rewrite(honest, tmp_path / "copy.gguf"))


def test_more_header_items_than_the_cap_are_refused(honest, monkeypatch):
    """Elements the file does hold still cost gguf-py a Python object each: their number is capped."""
    from shiptwo.formats import gguf_header

    monkeypatch.setattr(gguf_header, "MAX_HEADER_ITEMS", 300)  # the tiny vocabulary's 384 tokens exceed it
    with pytest.raises(ShiptwoError, match=rf"^{honest}: corrupt GGUF file \({K.Tokenizer.LIST}: the header declares more than 300 "):
        load_gguf(honest)


def test_a_name_running_through_binary_is_quoted_on_one_line(honest, tmp_path):
    """A key holding a line break (or a corrupt length running through binary data) was put in the
    message as it was: the error ran over several lines (found by fuzzing the header)."""
    key = "bad\nkey\x00"
    path = rewrite(honest, tmp_path / "name.gguf", setting(key, 1, T.UINT32))
    data = bytearray(path.read_bytes())
    at = data.index(key.encode()) + len(key)
    data[at:at + 4] = (99).to_bytes(4, "little")  # its value type: none GGUF has
    path.write_bytes(bytes(data))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value) == f"{path}: corrupt GGUF file ({ascii(key)}: unknown value type 99)"
