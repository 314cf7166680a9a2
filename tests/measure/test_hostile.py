"""The hostile-input suite: a model answers each hostile input with output or a one-line error;
an exception, a hang or a dead worker is a failure the suite reports, not a crash of its own."""

from __future__ import annotations

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.hostile import CRASH, ERROR, EXCEPTION, HANG, OUTPUT, HostileCase, HostileResult, hostile_cases, run_hostile_suite


def test_the_runtime_survives_every_hostile_input(tiny_checkpoint):
    cases = hostile_cases(context_tokens=256)
    assert len(cases) >= 50 and len({c.id for c in cases}) == len(cases)
    results = run_hostile_suite(tiny_checkpoint, cases)
    assert [r.id for r in results if r.failed] == []
    by_id = {r.id: r for r in results}
    assert by_id["empty"].status == ERROR and by_id["longer-than-context"].status == ERROR
    assert by_id["invalid-utf8"].status == ERROR and "surrogate" in by_id["invalid-utf8"].detail
    assert by_id["special-chat"].status == OUTPUT and by_id["special-chat"].finite_logits
    assert by_id["temperature-tiny"].status == OUTPUT and by_id["seed-huge"].status == ERROR


def test_an_exception_and_a_hang_are_failures(tiny_checkpoint):
    bad = HostileCase("unknown-setting", "def f():", {"max_new_tokens": 4, "beam_width": 3})  # TypeError, not ShiptwoError
    slow = HostileCase("slow", "def f():", {"max_new_tokens": 64})
    fine = HostileCase("fine", "def f():", {"max_new_tokens": 2})
    results = run_hostile_suite(tiny_checkpoint, [bad, fine])
    assert results[0].status == EXCEPTION and results[0].failed and not results[1].failed
    hung = run_hostile_suite(tiny_checkpoint, [slow], timeout_s=1e-4)
    assert hung[0].status == HANG and hung[0].failed
    assert HostileResult("x", ERROR, "two\nlines").failed and not HostileResult("x", ERROR, "one line").failed
    assert HostileResult("x", CRASH, "worker exited with status -11").failed
    assert HostileResult("x", OUTPUT, "length: 'nan'", finite_logits=False).failed


def test_a_model_that_cannot_load_is_an_error(tmp_path):
    with pytest.raises(ShiptwoError, match="did not load"):
        run_hostile_suite(tmp_path / "missing.safetensors", hostile_cases(256)[:1])
