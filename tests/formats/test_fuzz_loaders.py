"""Fuzz the loaders: mutated bytes of a small GGUF or safetensors file either load or raise
ShiptwoError — never another exception, never a crash."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf
from shiptwo.formats.gguf_load import load_gguf

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def small_files(tmp_path_factory, tiny_checkpoint):
    d = tmp_path_factory.mktemp("fuzz")
    gguf_path = export_gguf(load_checkpoint(tiny_checkpoint), d / "small.gguf", "q8_0")
    return {"gguf": gguf_path.read_bytes(), "safetensors": tiny_checkpoint.read_bytes(), "dir": d}


def _mutations(max_header: int):
    """Byte edits biased toward the header/metadata, where parsing happens, plus truncation."""
    edit = st.tuples(st.integers(0, max_header), st.integers(0, 255))
    return st.tuples(st.lists(edit, min_size=1, max_size=8), st.one_of(st.none(), st.integers(0, max_header)))


def _mutate(data: bytes, edits, cut) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut]) if cut is not None else bytes(out)


def _load_or_shiptwo_error(loader, path):
    try:
        loader(path)
    except ShiptwoError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@FUZZ
@given(m=_mutations(40_000))
def test_gguf_loader_only_raises_shiptwo_error(small_files, m):
    path = small_files["dir"] / "mutant.gguf"
    path.write_bytes(_mutate(small_files["gguf"], *m))
    _load_or_shiptwo_error(load_gguf, path)


@FUZZ
@given(m=_mutations(30_000))
def test_safetensors_loader_only_raises_shiptwo_error(small_files, m):
    path = small_files["dir"] / "mutant.safetensors"
    path.write_bytes(_mutate(small_files["safetensors"], *m))
    _load_or_shiptwo_error(load_checkpoint, path)
