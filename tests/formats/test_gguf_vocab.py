"""Hostile GGUF vocabularies, written with gguf-py from our own export and read by the real llama.cpp:
an empty token (llama.cpp names it [EMPTY_<id>]; so do we), and every token or merge that llama.cpp
and our tokenizer would read differently (refused in one line naming the field and the index)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import gguf
import pytest

from shiptwo.cli import main
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf, write_gguf
from shiptwo.formats.gguf_import import load_gguf
from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.runtimes.llamacpp import llamacpp_tokenize, load_llama

from tests.formats.test_gguf_hostile import rewrite

K, TT = gguf.Keys, gguf.TokenType
V = 300  # a token the tiny tokenizer's merges make ('Ġl')
TEXTS = ("def f(x):\n    return x + 1  # héllo wörld 12345\n", "class Lexer:\n\tpass", "while l: l = l[1:]")


@pytest.fixture(scope="module")
def honest(tmp_path_factory, tiny_checkpoint):
    return export_gguf(load_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("vocab") / "honest.gguf", "f32")


@pytest.fixture(scope="module")
def vocab(honest):
    r = gguf.GGUFReader(honest)
    return r.fields[K.Tokenizer.LIST].contents(), r.fields[K.Tokenizer.MERGES].contents()


def edit(key, change):
    """A `rewrite` edit applying `change` to the list held by `key`."""
    def apply(fields):
        for f in fields:
            if f[0] == key:
                f[1] = change(list(f[1]))
        return fields
    return apply


def at(i, value):
    def change(items):
        items[i] = value
        return items
    return change


def without_merges_of(text):
    """Drop every merge that makes `text` or names it as a part (so the token is no merge's)."""
    return edit(K.Tokenizer.MERGES, lambda ms: [m for m in ms if text not in (m.replace(" ", "", 1), *m.split(" ", 1))])


def both(*edits):
    def apply(fields):
        for e in edits:
            fields = e(fields)
        return fields
    return apply


def llamacpp_pieces(llm) -> list[bytes]:
    return [llm.detokenize([i], special=True) for i in range(llm.n_vocab())]


def test_an_empty_token_is_named_as_llamacpp_names_it(honest, vocab, tmp_path, caplog):
    """llama.cpp reads an empty token string as [EMPTY_<id>]; our import failed on it (its rebuilt
    BPE vocabulary lost the token). Now both tokenize and detokenize the file alike."""
    path = rewrite(honest, tmp_path / "empty.gguf", both(edit(K.Tokenizer.LIST, at(V, "")), without_merges_of(vocab[0][V])))
    with caplog.at_level(logging.WARNING, logger="shiptwo.formats.gguf_import"):
        ckpt = load_gguf(path)
    assert f"first: token {V} as [EMPTY_{V}]" in caplog.text and ckpt.training["gguf_empty_tokens"] == [V]
    ours, llm = ckpt.tokenizer(), load_llama(path, 64)
    assert [llamacpp_tokenize(llm, t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
    pieces = llamacpp_pieces(llm)
    assert pieces[V] == f"[EMPTY_{V}]".encode() == ours.decode([V]).encode()
    assert all(ours.decode([i]) == p.decode("utf-8", "replace") for i, p in enumerate(pieces))


def test_a_repeated_token_string_is_refused_where_llamacpp_aborts(honest, vocab, tmp_path):
    """llama.cpp aborts the process (GGML_ASSERT) on a repeated token string; our import kept the
    last id for it and failed with a message naming neither."""
    path = rewrite(honest, tmp_path / "repeat.gguf", both(edit(K.Tokenizer.LIST, at(V, vocab[0][V + 1])),
                                                         without_merges_of(vocab[0][V])))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value) == (f"{path}: invalid GGUF: {K.Tokenizer.LIST}: token {V + 1} {vocab[0][V + 1]!r} repeats "
                              f"token {V} (llama.cpp aborts on a repeated token string)")
    code = f"from shiptwo.runtimes.llamacpp import load_llama; load_llama({str(path)!r}, 64)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode < 0  # killed by SIGABRT


def test_a_token_of_invalid_utf8_is_named_by_its_id(honest, tmp_path):
    """gguf-py cannot decode it (the error named neither field nor token); llama.cpp loads the bytes."""
    path = rewrite(honest, tmp_path / "utf8.gguf", edit(K.Tokenizer.LIST, at(V, b"\xff\xfe")))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value) == f"{path}: invalid GGUF: {K.Tokenizer.LIST}: token {V} b'\\xff\\xfe' is not valid UTF-8"
    load_llama(path, 64)


@pytest.mark.parametrize("kind, llamacpp_piece", [(99, b""), (0, b""), (2, "Ġl".encode()), (TT.USER_DEFINED, "Ġl".encode())])
def test_a_token_type_llamacpp_detokenizes_otherwise_is_refused(honest, tmp_path, kind, llamacpp_piece):
    """A type out of range (or UNDEFINED, UNKNOWN) llama.cpp's BPE detokenizes as nothing or as
    written, and a USER_DEFINED token as written; our import loaded each, decoding it as ' l'."""
    path = rewrite(honest, tmp_path / "type.gguf", edit(K.Tokenizer.TOKEN_TYPE, at(V, int(kind))))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: invalid GGUF: ")
    if kind == TT.USER_DEFINED:
        assert f"{K.Tokenizer.LIST}: USER_DEFINED token {V} 'Ġl' is detokenized as written by llama.cpp, as ' l' " in message
    else:
        assert f"{K.Tokenizer.TOKEN_TYPE}: token {V} has type {kind}, which llama.cpp and ours read differently" in message
    assert llamacpp_pieces(load_llama(path, 64))[V] == llamacpp_piece


def test_a_normal_token_outside_the_byte_alphabet_is_refused(honest, vocab, tmp_path):
    """llama.cpp writes a NORMAL token's character outside the byte-level map as [UNK_BYTE_...];
    Hugging Face's decoder copies it: a generated id would read differently."""
    path = rewrite(honest, tmp_path / "space.gguf", both(edit(K.Tokenizer.LIST, at(V, "a b")), without_merges_of(vocab[0][V])))
    with pytest.raises(ShiptwoError, match=rf"^{path}: invalid GGUF: {K.Tokenizer.LIST}: NORMAL token {V} 'a b' holds ' ', "
                                           r"outside the byte-level alphabet"):
        load_gguf(path)
    assert llamacpp_pieces(load_llama(path, 64))[V].startswith(b"a[UNK_BYTE_0x20")


@pytest.mark.parametrize("extra, says", [
    ("zz qq", "entry {n} 'zz qq' names 'zz', no token"),
    ("e x", "entry {n} 'e x' makes 'ex', no token"),
    ("abc", "entry {n} 'abc' is not two tokens separated by a space"),
    (" a b", "entry {n} ' a b' names ' a', no token"),  # llama.cpp splits after the first character
    ("Ġ Ġ", "entry {n} 'Ġ Ġ' repeats entry 0 (llama.cpp ranks it by the first, ours by the last)"),
])
def test_a_merge_llamacpp_reads_otherwise_is_named_by_its_index(honest, vocab, tmp_path, extra, says):
    """Hugging Face refuses a merge naming an unknown token (the error named no entry) and ranks a
    repeated merge by its last occurrence; llama.cpp loads all of these."""
    path = rewrite(honest, tmp_path / "merge.gguf", edit(K.Tokenizer.MERGES, lambda ms: ms + [extra]))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert str(exc.value).startswith(f"{path}: invalid GGUF: {K.Tokenizer.MERGES}: {says.format(n=len(vocab[1]))}")
    load_llama(path, 64)


def test_many_divergences_of_one_kind_are_counted_on_one_line(honest, tmp_path):
    path = rewrite(honest, tmp_path / "types.gguf", edit(K.Tokenizer.TOKEN_TYPE, lambda ts: ts[:V] + [99] * (len(ts) - V)))
    with pytest.raises(ShiptwoError) as exc:
        load_gguf(path)
    assert "\n" not in str(exc.value) and str(exc.value).endswith(f"(and {len(gguf.GGUFReader(honest).fields[K.Tokenizer.LIST].data) - V - 1} more like it)")


def checkpoint_with(tiny_tokenizer, path, added, bos=None, edit=None):
    """A saved tiny checkpoint whose tokenizer adds `added` ((text, special) pairs) after the
    trained vocabulary and then applies `edit` to its tokenizer.json; BOS is `bos` (an id) or
    the end-of-text token."""
    from tokenizers import AddedToken, Tokenizer

    from shiptwo.model.checkpoint import checkpoint_from_model, save_checkpoint
    from shiptwo.model.config import ModelConfig
    from shiptwo.model.llama import LlamaModel
    from shiptwo.model.tokenizer import BPETokenizer
    from tests.conftest import TINY_PROVENANCE

    tok = Tokenizer.from_str(tiny_tokenizer.to_json())
    for text, special in added:
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(text, special=special, normalized=False)])
    spec = json.loads(tok.to_str())
    if edit:
        edit(spec)
    tok = BPETokenizer(Tokenizer.from_str(json.dumps(spec)))
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.eot_id if bos is None else bos, eos_token_id=tok.eot_id)
    model = LlamaModel(cfg)
    model.init_weights(seed=0)
    return load_checkpoint(save_checkpoint(checkpoint_from_model(model, tok.to_json(), TINY_PROVENANCE, training={}), path))


def test_an_added_token_that_is_not_special_is_exported_as_llamacpp_matches_it(tiny_tokenizer, tmp_path):
    """Our export wrote it NORMAL: llama.cpp then split '<tool>' into five byte-level tokens where
    our tokenizer (which matches an added token whole) gave one id."""
    ckpt = checkpoint_with(tiny_tokenizer, tmp_path / "added.safetensors", [("<tool>", False)])
    tok = ckpt.tokenizer()
    path = export_gguf(ckpt, tmp_path / "added.gguf", "f32")
    assert gguf.GGUFReader(path).fields[K.Tokenizer.TOKEN_TYPE].contents()[tok.token_to_id("<tool>")] == TT.USER_DEFINED
    llm, back = load_llama(path, 64), load_gguf(path).tokenizer()
    text = "x = <tool> y"
    assert llamacpp_tokenize(llm, text) == tok.encode(text) == back.encode(text) and len(tok.encode("<tool>")) == 1
    assert llm.detokenize(tok.encode(text), special=True).decode() == back.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text, special, kind", [("héllo", False, "USER_DEFINED"), ("<|é|>", True, "CONTROL")])
def test_an_added_token_our_reader_refuses_is_not_exported(tiny_tokenizer, tmp_path, capsys, text, special, kind):
    """An added token whose text our byte-level decoder changes ('é' is one byte in its alphabet):
    the export wrote the whole file and then failed naming its temp file, which no longer existed.
    Now it refuses before writing, naming the target, the checkpoint and the token as the reader does."""
    ckpt = checkpoint_with(tiny_tokenizer, tmp_path / "ckpt.safetensors", [(text, special)])
    tid, out = ckpt.tokenizer().token_to_id(text), tmp_path / "out.gguf"
    ours = ckpt.tokenizer().decode([tid])
    problem = (f"{K.Tokenizer.LIST}: {kind} token {tid} {text!r} is detokenized as written by llama.cpp, "
               f"as {ours!r} by our byte-level decoder")
    with pytest.raises(ShiptwoError) as exc:
        export_gguf(ckpt, out, "f32")
    assert str(exc.value) == (f"{out}: not written: llama.cpp and shiptwo would read the tokenizer of {ckpt.path} "
                              f"differently: {problem}")
    assert main(["export", str(ckpt.path), "--format", "gguf", "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"shiptwo: error: {exc.value}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no output, no temp file
    raw = write_gguf(ckpt, tmp_path / "raw.gguf")  # the unchecked writer: the file the export declined
    with pytest.raises(ShiptwoError, match="^" + re.escape(f"{raw}: invalid GGUF: {problem}") + "$"):
        load_gguf(raw)


def test_an_export_our_reader_refuses_names_the_target_not_its_temp_file(tiny_tokenizer, tmp_path):
    """BOS on a token that is not special: llama.cpp's reader check fails after writing; the error
    named the temp file (`.out.gguf.<random>.tmp`) instead of the file asked for."""
    ckpt = checkpoint_with(tiny_tokenizer, tmp_path / "ckpt.safetensors", [("<s>", False)], bos=tiny_tokenizer.vocab_size)
    out = tmp_path / "out.gguf"
    with pytest.raises(ShiptwoError) as exc:
        export_gguf(ckpt, out, "f32")
    assert str(exc.value) == (f"{out}: not written: shiptwo's GGUF reader refuses it: "
                              f"{K.Tokenizer.BOS_ID}={tiny_tokenizer.vocab_size} is not a CONTROL token")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def lstrip(spec):
    spec["added_tokens"][-1]["lstrip"] = True


@pytest.mark.parametrize("edit, says", [
    (lambda spec: spec.update(normalizer={"type": "Lowercase"}), "normalizer 'Lowercase' (llama.cpp and our import apply none)"),
    (lambda spec: spec.update(decoder=None), "decoder None (llama.cpp and our import decode byte-level)"),
    (lambda spec: spec["model"].update(end_of_word_suffix="</w>"),
     "model.end_of_word_suffix='</w>' (llama.cpp and our import use None)"),
    (lstrip, "added token 384 '<tool>' has lstrip (llama.cpp and our import match it as written)"),
])
def test_a_tokenizer_feature_gguf_cannot_carry_is_not_exported(tiny_tokenizer, tmp_path, edit, says):
    """The export wrote these and our import (and llama.cpp) silently rebuilt another tokenizer:
    the file encoded or decoded text otherwise than the checkpoint it came from."""
    ckpt = checkpoint_with(tiny_tokenizer, tmp_path / "ckpt.safetensors", [("<tool>", False)], edit=edit)
    out = tmp_path / "out.gguf"
    with pytest.raises(ShiptwoError) as exc:
        export_gguf(ckpt, out, "f32")
    assert str(exc.value) == f"{out}: not written: GGUF cannot carry what the tokenizer of {ckpt.path} holds: {says}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    ours, back = ckpt.tokenizer(), load_gguf(write_gguf(ckpt, tmp_path / "raw.gguf")).tokenizer()
    text = "Def f(x):  <tool> return x"
    assert (back.encode(text), back.decode(ours.encode(text))) != (ours.encode(text), ours.decode(ours.encode(text)))


@pytest.mark.parametrize("name, what", [(K.General.NAME, "key #"), ("output_norm.weight", "tensor #")])
def test_a_key_or_tensor_name_of_invalid_utf8_is_named_by_its_index(honest, tmp_path, name, what):
    """gguf-py's reader raised a UnicodeDecodeError naming neither the key nor the tensor."""
    data = bytearray(honest.read_bytes())
    at = data.index(name.encode())
    data[at] = 0xFF
    path = tmp_path / "name.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ShiptwoError, match=rf"^{path}: corrupt GGUF file \({what}\d+( name)?: name b'\\xff.* is not valid UTF-8\)$"):
        load_gguf(path)
