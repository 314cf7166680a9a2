"""Plain data across a trust boundary: a tagged-JSON encoding of the builtin values a test compares
(None, bool, int, float incl. nan/inf, complex, str, bytes, list, tuple, set, frozenset, dict, range,
dict views, materialized iterators) and a safe loader that can only ever build those types.

The encoder may run in an untrusted process (its output is then just bytes the completion could
have forged anyway); the loader runs in the trusted one, with caps on size, nesting depth, node
count and members sharing a hash, so nothing that comes back can override `==`, run code or exhaust
memory or time. Stdlib only, no
package imports: the sandbox runs this file as shipped source.
"""

import json

MAX_BYTES = 8 << 20  # one encoded value (a call's arguments or a completion's output)
MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_ITER_ITEMS = 100_000  # an iterator or generator is materialized up to this many items
MAX_SHARED_HASH = 8  # set members or dict keys with one hash (crafted ints make building them quadratic)

_SCALARS = (type(None), bool, int, float, str)
_TAGS = {"t", "s", "fs", "d", "b", "ba", "c", "r", "it", "dk", "dv", "di"}
_DICT_KEYS, _DICT_VALUES, _DICT_ITEMS = type({}.keys()), type({}.values()), type({}.items())


class PlainDataError(ValueError):
    """A value that cannot cross (encoding) or bytes that are not well-formed plain data (loading)."""


def encode(obj, depth: int = 0):
    """`obj` as JSON-able tagged data; subclasses of builtins become their base value (their
    overridden methods are never called); other types raise PlainDataError."""
    if depth > MAX_DEPTH:
        raise PlainDataError(f"nested deeper than {MAX_DEPTH}")
    t = type(obj)
    if t in _SCALARS:
        return obj
    d = depth + 1
    if t is list:
        return [encode(x, d) for x in obj]
    if t is tuple:
        return {"t": [encode(x, d) for x in obj]}
    if t is set or t is frozenset:
        items = sorted((encode(x, d) for x in obj), key=_canonical)
        return {"s" if t is set else "fs": items}
    if t is dict:
        return {"d": [[encode(k, d), encode(v, d)] for k, v in obj.items()]}
    if t is bytes:
        return {"b": obj.hex()}
    if t is bytearray:
        return {"ba": obj.hex()}
    if t is complex:
        return {"c": [obj.real, obj.imag]}
    if t is range:
        return {"r": [obj.start, obj.stop, obj.step]}
    if t is _DICT_KEYS:
        return {"dk": [encode(x, d) for x in obj]}
    if t is _DICT_VALUES:
        return {"dv": [encode(x, d) for x in obj]}
    if t is _DICT_ITEMS:
        return {"di": [[encode(k, d), encode(v, d)] for k, v in obj]}
    return _encode_subclass_or_iterator(obj, d)


def _encode_subclass_or_iterator(obj, d: int):
    """A subclass of a builtin as its base value, read through the base type's own methods."""
    if isinstance(obj, int):  # bool cannot be subclassed, so a subclass of int is never a bool
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, bytes):
        return {"b": bytes.hex(obj)}
    if isinstance(obj, complex):
        return {"c": [complex.__complex__(obj).real, complex.__complex__(obj).imag]}
    if isinstance(obj, tuple):
        return {"t": [encode(x, d) for x in tuple.__iter__(obj)]}
    if isinstance(obj, list):
        return [encode(x, d) for x in list.__iter__(obj)]
    if isinstance(obj, dict):
        return {"d": [[encode(k, d), encode(dict.__getitem__(obj, k), d)] for k in dict.__iter__(obj)]}
    if isinstance(obj, (set, frozenset)):
        base = set if isinstance(obj, set) else frozenset
        items = sorted((encode(x, d) for x in base.__iter__(obj)), key=_canonical)
        return {"s" if base is set else "fs": items}
    if hasattr(type(obj), "__next__") and hasattr(type(obj), "__iter__"):
        items = []
        for x in obj:
            if len(items) >= MAX_ITER_ITEMS:
                raise PlainDataError(f"iterator longer than {MAX_ITER_ITEMS} items")
            items.append(encode(x, d))
        return {"it": items}
    raise PlainDataError(f"a {type(obj).__name__} is not plain data")


def _canonical(encoded) -> str:
    return json.dumps(encoded, sort_keys=True, allow_nan=True)


def dumps(obj) -> str:
    """One line of JSON for `obj` (canonical: equal plain values give equal text, sets sorted)."""
    return _canonical(encode(obj))


def loads(text, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES):
    """The plain value `text` encodes; PlainDataError for anything oversized, too deep, or not
    built only of the tags above (unknown keys, unhashable set members or dict keys)."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > max_bytes:
            raise PlainDataError(f"{len(text)} bytes, over the {max_bytes}-byte cap")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise PlainDataError("not UTF-8") from None
    if not isinstance(text, str):
        raise PlainDataError("not text")
    if len(text) > max_bytes:
        raise PlainDataError(f"{len(text)} characters, over the {max_bytes} cap")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # malformed, too deep for the parser, or an int over the digit cap
        raise PlainDataError(f"not plain-data JSON ({type(exc).__name__})") from None
    return _Loader(max_depth, max_nodes).build(raw, 0)


class _Loader:
    def __init__(self, max_depth: int, max_nodes: int):
        self.max_depth, self.max_nodes, self.nodes = max_depth, max_nodes, 0

    def build(self, raw, depth: int):
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise PlainDataError(f"more than {self.max_nodes} values")
        if depth > self.max_depth:
            raise PlainDataError(f"nested deeper than {self.max_depth}")
        t = type(raw)
        if t in _SCALARS:
            return raw
        d = depth + 1
        if t is list:
            return [self.build(x, d) for x in raw]
        if t is not dict or len(raw) != 1:
            raise PlainDataError("an object that is not a single tag")
        (tag, body), = raw.items()
        if tag not in _TAGS:
            raise PlainDataError(f"unknown tag {tag[:20]!r}")
        if tag in ("b", "ba"):
            try:
                data = bytes.fromhex(self._typed(body, str, tag))
            except ValueError:
                raise PlainDataError(f"tag {tag!r}: not hex") from None
            return data if tag == "b" else bytearray(data)
        if tag == "c":
            parts = self._typed(body, list, tag)
            if len(parts) != 2 or not all(type(p) in (int, float) for p in parts):
                raise PlainDataError("tag 'c': needs [real, imag]")
            return complex(parts[0], parts[1])
        if tag == "r":
            parts = self._typed(body, list, tag)
            if len(parts) != 3 or not all(type(p) is int for p in parts) or parts[2] == 0:
                raise PlainDataError("tag 'r': needs [start, stop, step != 0]")
            return range(*parts)
        items = [self.build(x, d) for x in self._typed(body, list, tag)]
        try:
            if tag == "t":
                return tuple(items)
            if tag == "s":
                return set(self._spread(items, tag))
            if tag == "fs":
                return frozenset(self._spread(items, tag))
            if tag == "it":
                return iter(items)
            if tag == "dk":
                return dict.fromkeys(self._spread(items, tag)).keys()
            if tag == "dv":
                return dict(enumerate(items)).values()
            pairs = [self._pair(p, tag) for p in items]
            self._spread([k for k, _ in pairs], tag)
            return dict(pairs) if tag == "d" else dict(pairs).items()
        except TypeError:  # unhashable member or key
            raise PlainDataError(f"tag {tag!r}: unhashable member") from None

    @staticmethod
    def _typed(body, kind, tag):
        if type(body) is not kind:
            raise PlainDataError(f"tag {tag!r}: body is not a {kind.__name__}")
        return body

    @staticmethod
    def _spread(keys: list, tag: str) -> list:
        """`keys`, unless more than MAX_SHARED_HASH share a hash: ints i * (2**61 - 1) all hash to 0, and
        a set of 300,000 (under the byte cap) would take the trusted loader hours to build."""
        counts: dict[int, int] = {}
        for k in keys:
            h = hash(k)
            counts[h] = counts.get(h, 0) + 1
            if counts[h] > MAX_SHARED_HASH:
                raise PlainDataError(f"tag {tag!r}: more than {MAX_SHARED_HASH} members share a hash")
        return keys

    @staticmethod
    def _pair(p, tag):
        if type(p) is not list or len(p) != 2:
            raise PlainDataError(f"tag {tag!r}: needs [key, value] pairs")
        return p[0], p[1]

