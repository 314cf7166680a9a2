"""Bounds of a GGUF header, walked before gguf-py's reader parses it.

gguf-py's reader trusts the file's counts: an array whose declared length runs past the end of
the file makes it loop for ever, keeping an empty view per missing element (a uint8 array of
length 2^62 in a 60-byte file eats all memory), and each element it does read is a Python object
of ~100 bytes. This walk reads the same header with every count checked against the bytes left
and against MAX_HEADER_ITEMS, and the tensor data laid out as llama.cpp requires (in order, each
where the previous one ends padded to the alignment, inside the file: it refuses anything else,
so two tensors sharing bytes or a gap are files the two readers would not both load). A
big-endian file is refused for the same reason. Any breach is one ShiptwoError naming the file
and the field, before the reader allocates anything.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import gguf

from shiptwo.errors import ShiptwoError

T = gguf.GGUFValueType
# Key/value pairs, array elements and tensor infos together. A real vocabulary of 262k tokens
# holds ~800k (tokens, types, merges); gguf-py spends ~100 bytes of Python objects on each.
MAX_HEADER_ITEMS = 1 << 22
GGML_MAX_DIMS = 4  # llama.cpp refuses a tensor of more dimensions
_SCALAR_FORMATS = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
                   T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}
_ALIGNMENT_KEY = "general.alignment"
MAX_NAME_SHOWN = 100  # characters of a key or tensor name a message quotes


class _Walk:
    """A cursor over the file's bytes that never reads past the end and counts what it visits."""

    def __init__(self, path: Path, data) -> None:
        self.path, self.data, self.pos, self.items = path, data, 0, 0
        version = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else 1
        # gguf-py's test for a big-endian file: it reads such a header, but not the tensor data
        # byte-swapped, and llama.cpp on a little-endian host refuses it, so `_walk` does too
        self.big_endian = version & 0xFFFF == 0
        self.order = ">" if self.big_endian else "<"

    def fail(self, what: str, why: str) -> ShiptwoError:
        return ShiptwoError(f"{self.path}: corrupt GGUF file ({what}: {why})")

    def take(self, n: int, what: str) -> int:
        """Advance over `n` bytes; the offset they start at."""
        if n > len(self.data) - self.pos:
            raise self.fail(what, f"{n} bytes at offset {self.pos} run past the end of the file ({len(self.data)} bytes)")
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, fmt: str, what: str):
        return struct.unpack_from(self.order + fmt, self.data, self.take(struct.calcsize(fmt), what))[0]

    def count(self, n: int, what: str) -> None:
        self.items += n
        if self.items > MAX_HEADER_ITEMS:
            raise self.fail(what, f"the header declares more than {MAX_HEADER_ITEMS} keys, array elements and tensors")

    def string(self, what: str) -> bytes:
        n = self.scalar("Q", what)
        return bytes(self.data[self.take(n, what):self.pos])

    def name(self, what: str) -> str:
        """A key or tensor name to put in a message: as written when printable, else quoted (a
        corrupt length makes the name run on through binary data and line breaks). One that is not
        UTF-8 is refused here: gguf-py's reader fails on it naming neither the key nor the tensor."""
        raw = self.string(what)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(what, f"name {ascii(raw[:MAX_NAME_SHOWN])} is not valid UTF-8") from None
        return text if text.isprintable() and len(text) <= MAX_NAME_SHOWN else ascii(text[:MAX_NAME_SHOWN])

    def value(self, vtype: int, what: str, depth: int = 0):
        """Skip one value of `vtype` (its scalar value returned, for general.alignment)."""
        if vtype in _SCALAR_FORMATS:
            return self.scalar(_SCALAR_FORMATS[vtype], what)
        if vtype == T.STRING:
            return self.string(what)
        if vtype != T.ARRAY:
            raise self.fail(what, f"unknown value type {vtype}")
        if depth:
            raise self.fail(what, "an array of arrays")
        itype, n = self.scalar("I", what), self.scalar("Q", what)
        if itype in _SCALAR_FORMATS:  # fixed size: its bytes checked and skipped in one step
            self.take(n * struct.calcsize(_SCALAR_FORMATS[itype]), what)
            self.count(n, what)
        else:
            self.count(n, what)
            for _ in range(n):
                self.value(itype, what, depth + 1)
        return None


def check_gguf_header(path: str | Path) -> None:
    """Every count in the GGUF header at `path` within the file and MAX_HEADER_ITEMS, every tensor
    of at most GGML_MAX_DIMS dimensions and a known type, its data where llama.cpp expects it;
    else one ShiptwoError naming the file and the field."""
    path = Path(path)
    with path.open("rb") as fh:
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _walk(_Walk(path, data))


def _walk(w: _Walk) -> None:
    w.take(8, "magic and version")
    if w.big_endian:
        raise w.fail("byte order", "big-endian, which llama.cpp does not read on a little-endian host, "
                                   "nor gguf-py's tensor data as written")
    n_tensors, n_kv = w.scalar("Q", "tensor count"), w.scalar("Q", "key/value count")
    w.count(n_kv, "key/value count")
    w.count(n_tensors, "tensor count")
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for i in range(n_kv):
        key = w.name(f"key #{i}")
        vtype = w.scalar("I", key)
        value = w.value(vtype, key)
        if key == _ALIGNMENT_KEY and vtype == T.UINT32 and value and not value & (value - 1):
            alignment = value  # gguf-py refuses any other (a wrong type, zero, not a power of two)
    infos = []
    for i in range(n_tensors):
        name = w.name(f"tensor #{i} name")
        n_dims = w.scalar("I", f"tensor {name}")
        if n_dims > GGML_MAX_DIMS:
            raise w.fail(f"tensor {name}", f"{n_dims} dimensions (llama.cpp allows at most {GGML_MAX_DIMS})")
        dims = [w.scalar("Q", f"tensor {name}") for _ in range(n_dims)]
        ttype, offset = w.scalar("I", f"tensor {name}"), w.scalar("Q", f"tensor {name}")
        infos.append((name, dims, ttype, offset))
    start = w.pos + (-w.pos % alignment)
    expected = 0
    for name, dims, ttype, offset in infos:
        size = _tensor_bytes(w, name, dims, ttype)
        if offset != expected:
            raise w.fail(f"tensor {name}", f"data at offset {offset}, where llama.cpp expects {expected} "
                                           f"(each tensor where the previous one ends, padded to {alignment})")
        if start + offset + size > len(w.data):
            raise w.fail(f"tensor {name}", f"{size} bytes of data at offset {offset} run past the end of the file")
        expected = offset + size + (-size % alignment)


def _tensor_bytes(w: _Walk, name: str, dims: list[int], ttype: int) -> int:
    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        raise w.fail(f"tensor {name}", f"unknown tensor type {ttype}") from None
    if dims and dims[0] % block:
        raise w.fail(f"tensor {name}", f"rows of {dims[0]} are not a multiple of its type's block of {block}")
    elements = 1
    for d in dims:
        elements *= d
    return elements // block * type_size
