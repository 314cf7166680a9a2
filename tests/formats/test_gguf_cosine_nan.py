"""AC-SHIP1-003's figure is the worst tensor cosine of a quantized file: a tensor that reads back
non-finite has a NaN cosine, which `min(key=)` and `c < threshold` both pass over; it must be the
worst and below the threshold instead."""

import math

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.formats.gguf_export import write_gguf
from shiptwo.formats.gguf_load import quantization_cosines, worst_cosine
from shiptwo.model.checkpoint import load_checkpoint


def test_a_non_finite_tensor_is_the_worst_and_below_the_threshold(tmp_path, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    bad = load_checkpoint(tiny_checkpoint)
    name = "model.norm.weight"
    bad.tensors[name] = bad.tensors[name].clone()
    bad.tensors[name][0] = float("inf")
    cos = quantization_cosines(ckpt, write_gguf(bad, tmp_path / "inf.gguf"))
    assert math.isnan(cos[name]) and min(cos, key=cos.get) != name  # what the old figure did: skipped it
    worst, value, below = worst_cosine(cos, 0.999)
    assert worst == name and math.isnan(value) and name in below


def test_finite_cosines_give_the_minimum_and_nothing_is_an_error():
    assert worst_cosine({"a": 0.9995, "b": 0.998, "c": 1.0}, 0.999) == ("b", 0.998, ["b"])
    with pytest.raises(ShiptwoError, match="no tensor"):
        worst_cosine({}, 0.999)
