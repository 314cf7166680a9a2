"""Plain data across the trust boundary: the types HumanEval's checks compare survive a round trip
exactly; nothing else can come back (no custom class, no override of `==`), and oversized or
over-deep input is refused."""

from __future__ import annotations

import json
import math

import pytest

from shiptwo.measure.plain_data import MAX_DEPTH, MAX_ITER_ITEMS, MAX_SHARED_HASH, PlainDataError, dumps, loads


def test_round_trip_keeps_the_types_checks_compare():
    values = [None, True, False, 0, 1, -7, 2**80, 1.5, -0.0, float("inf"), float("-inf"), 1j, "", "x\udc80é",
              b"\x00\xff", bytearray(b"ab"), [1, [2]], (1, (2,)), (), {3, 1}, frozenset("ab"), {1: "a", (1, 2): [3]},
              range(1, 9, 2)]
    for v in values:
        back = loads(dumps(v))
        assert type(back) is type(v) and back == v, v
    assert math.isnan(loads(dumps(float("nan"))))
    assert type(loads(dumps(True))) is bool and type(loads(dumps(1))) is int  # bool and int stay apart
    assert loads(dumps([(1, 2)])) != [[1, 2]]  # tuples stay tuples


def test_iterators_and_views_are_materialized():
    back = loads(dumps(x * x for x in range(4)))
    assert iter(back) is back and tuple(back) == (0, 1, 4, 9)  # still an iterator, as checks like /33 expect
    assert loads(dumps(iter([1, 2]))) != [1, 2]
    d = {"a": 1, "b": 2}
    assert loads(dumps(d.keys())) == d.keys() and list(loads(dumps(d.items()))) == list(d.items())
    with pytest.raises(PlainDataError, match="iterator longer"):
        dumps(iter(range(MAX_ITER_ITEMS + 1)))


def test_subclasses_cross_as_their_base_value_without_their_overrides():
    class AlwaysInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class AlwaysStr(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    class AlwaysList(list):
        def __eq__(self, other):
            return True

    for v, base in [(AlwaysInt(3), 3), (AlwaysStr("s"), "s"), (AlwaysList([1]), [1])]:
        back = loads(dumps(v))
        assert type(back) is type(base) and back == base and back != "something else"


def test_other_objects_cannot_cross():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    for v in (AlwaysEqual(), object(), print, [AlwaysEqual()], {1: AlwaysEqual()}, (x for x in [AlwaysEqual()])):
        with pytest.raises(PlainDataError):
            dumps(v)


@pytest.mark.parametrize("text", [
    '{"__class__": "AlwaysEqual"}', '{"t": [1], "s": [2]}', '{"zz": []}', '{"t": "notalist"}', '{"s": [[1]]}',
    '{"d": [[[1], 2]]}', '{"d": [[1]]}', '{"b": "zz"}', '{"c": [1]}', '{"r": [1, 2, 0]}', "[1, 2", "\x00", "",
    '{"py/object": "os.system"}', "1" * 5000,
])
def test_loader_refuses_anything_but_plain_data(text):
    with pytest.raises(PlainDataError):
        loads(text)


def test_loader_caps_size_depth_and_node_count():
    with pytest.raises(PlainDataError, match="deeper"):
        loads("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2))
    with pytest.raises(PlainDataError):
        loads("[" * 200_000 + "]" * 200_000)  # deeper than the JSON parser's own recursion limit
    with pytest.raises(PlainDataError, match="cap"):
        loads("[" + "0," * 100 + "0]", max_bytes=100)
    with pytest.raises(PlainDataError, match="more than"):
        loads("[" + "0," * 100 + "0]", max_nodes=50)
    with pytest.raises(PlainDataError, match="deeper"):
        dumps(_nested(MAX_DEPTH + 5))


def test_loader_refuses_a_hash_flood():
    """Ints i * (2**61 - 1) all hash to 0, so a set or dict of them is quadratic to build (5,000 take
    0.1 s, the byte cap's worth hours): more than MAX_SHARED_HASH members with one hash are refused."""
    flood = [i * (2**61 - 1) for i in range(1, 5_001)]
    for text in ({"s": flood}, {"fs": flood}, {"dk": flood}, {"d": [[k, 0] for k in flood]}, {"di": [[k, 0] for k in flood]},
                 [{"s": [1, {"fs": flood}]}]):
        with pytest.raises(PlainDataError, match="share a hash"):
            loads(json.dumps(text))
    few = {-1, -2, 0, 2**61 - 1, *(k * (2**61 - 1) for k in range(2, MAX_SHARED_HASH))}  # -1 and -2 share one too
    assert loads(dumps(few)) == few and loads(dumps(dict.fromkeys(few))) == dict.fromkeys(few)


def _nested(depth: int):
    x: list = []
    for _ in range(depth):
        x = [x]
    return x
