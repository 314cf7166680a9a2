"""Fuzz the loaders: mutated bytes of a small GGUF or safetensors file either load or raise
ShiptwoError — never another exception, never a crash; and inside a release, every mutation is
DETECTED (the recorded SHA-256 no longer matches), whether or not the bytes would still parse."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import export_gguf
from shiptwo.formats.gguf_import import load_gguf

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


@pytest.fixture(scope="module")
def release(small_files, tiny_checkpoint):
    """A published release holding the small GGUF and the tiny checkpoint."""
    from shiptwo.formats.release import publish
    from shiptwo.paths import project_root, spec_path

    src = small_files["dir"] / "src"
    src.mkdir()
    (src / "small.gguf").write_bytes(small_files["gguf"])
    (src / "model.safetensors").write_bytes(small_files["safetensors"])
    manifest = publish([src / "small.gguf", src / "model.safetensors"], small_files["dir"] / "release",
                       spec_path=spec_path(), repo_root=project_root())
    return manifest.parent


def _detected(path, original: bytes, mutated: bytes):
    from shiptwo.formats.artifact import load_artifact

    path.write_bytes(mutated)
    try:
        if mutated == original:
            load_artifact(path)  # no change, nothing to detect: it loads
        else:
            with pytest.raises(ShiptwoError, match="SHA-256 differs") as exc:
                load_artifact(path)
            assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    finally:
        path.write_bytes(original)


@FUZZ
@given(m=_mutations(40_000))
def test_a_mutated_gguf_in_a_release_is_detected(release, small_files, m):
    _detected(release / "small.gguf", small_files["gguf"], _mutate(small_files["gguf"], *m))


@FUZZ
@given(m=_mutations(30_000))
def test_a_mutated_checkpoint_in_a_release_is_detected(release, small_files, m):
    _detected(release / "model.safetensors", small_files["safetensors"], _mutate(small_files["safetensors"], *m))


def test_a_mutation_that_still_loads_is_the_case_verification_exists_for(release, small_files):
    """One flipped bit in a weight: the file still parses and loads without its manifest, but not from the release."""
    data = bytearray(small_files["safetensors"])
    data[-5] ^= 0x01  # inside the last tensor's data
    loose = small_files["dir"] / "loose.safetensors"
    loose.write_bytes(bytes(data))
    load_checkpoint(loose)  # a valid checkpoint on its own
    _detected(release / "model.safetensors", small_files["safetensors"], bytes(data))
