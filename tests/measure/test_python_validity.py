"""python-validity: prompts are held-out function heads, completions stop at the body's end, and the
metric is the parse rate (empty bodies and broken code fail); held-out loss reuses the trainer's."""

from __future__ import annotations

import ast
import math

import pytest

from shiptwo.model.checkpoint import load_checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.measure.evals.python_validity import (
    body_end, evaluate_python_validity, function_prompts, has_body, score_completions,
)

SOURCE = '''import os


def first(a, b):
    """Add two numbers."""
    return a + b


@decorator
def second(x):
    """Doc
    on two lines.
    """
    y = x * 2
    return y


def no_doc(x):
    return x


class K:
    def method(self):
        """Methods are dedented to stand alone."""
        return 1
'''


def test_prompts_are_function_heads_with_docstrings():
    prompts = function_prompts([SOURCE, "def broken(:\n"], 10)
    assert sorted(prompts) == sorted([
        'def first(a, b):\n    """Add two numbers."""',
        '@decorator\ndef second(x):\n    """Doc\n    on two lines.\n    """',
        'def method(self):\n    """Methods are dedented to stand alone."""',
    ])
    for p in prompts:
        ast.parse(p)  # a head with its docstring parses alone: hence the non-empty-body rule
    assert function_prompts([SOURCE], 1) == function_prompts([SOURCE], 1)  # deterministic


def test_body_end_stops_at_a_column_zero_line():
    assert body_end("\n    return x\n\n# note\n    \ndef g():\n") == len("\n    return x\n\n# note\n    \n")
    assert body_end("\n    return x\n    y = 1") is None
    assert body_end("\nclass X:") == 1
    assert body_end("class X:") is None  # still on the docstring's closing line


def test_score_counts_valid_invalid_and_empty():
    p = 'def f(x):\n    """Doc."""'
    res = score_completions([p, p, p, p], ["\n    return x + 1\n", "\n    return (x +\n", "\n# nothing\n", " č č č č"])
    assert (res.n_valid, res.n_empty, res.n_prompts) == (1, 1, 4)
    assert res.valid_pct == 25.0
    assert not has_body("  \n# c\n") and has_body("    pass\n")
    with pytest.raises(ShiptwoError, match="no prompts"):
        score_completions([], [])


def test_evaluate_on_a_model(tiny_checkpoint, tiny_texts):
    ckpt = load_checkpoint(tiny_checkpoint)
    res = evaluate_python_validity(ckpt, tiny_texts, n=4, max_new_tokens=16)
    assert res.n_prompts == 4 and 0.0 <= res.valid_pct <= 100.0
    assert res.valid_pct == 100.0 * sum(s["valid"] for s in res.samples) / 4
    for s in res.samples:  # every completion was cut before any column-0 line
        assert body_end(s["completion"]) is None
    every = evaluate_python_validity(ckpt, tiny_texts, n=10_000, max_new_tokens=16)
    assert every.requested == 10_000 and 4 < every.n_prompts < 10_000  # all the split has, said so
    with pytest.raises(ShiptwoError, match="no held-out function"):
        evaluate_python_validity(ckpt, ["x = 1\n"], n=5, max_new_tokens=16)


def test_held_out_loss_uses_the_trainers_evaluation(tiny_checkpoint, tiny_texts):
    from shiptwo.measure.evals.loss import evaluate_split_loss, split_texts

    ckpt = load_checkpoint(tiny_checkpoint)
    res = evaluate_split_loss(ckpt, tiny_texts[:2], "test", seq_len=64, max_windows=4)
    assert res.windows == 4 and math.isclose(res.perplexity, math.exp(res.cross_entropy))
    assert 0.5 * math.log(ckpt.config.vocab_size) < res.cross_entropy < 2 * math.log(ckpt.config.vocab_size)  # untrained
    with pytest.raises(ShiptwoError, match="no documents"):
        evaluate_split_loss(ckpt, [], "test")
    with pytest.raises(ShiptwoError, match="unknown split"):
        split_texts("smoke", "bogus")


def test_run_output_check_for_model1():
    from shiptwo.measure.evals.python_validity import run_output_parses
    from shiptwo.harness.spec import load_spec

    crit = load_spec().criterion("AC-SHIP1-002")
    good = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)"
    assert crit.is_met(run_output_parses(good), "default")
    for bad in ("def fib(n):", "def fib(n):\n č č č č", "def fib(n):\n    return (n +"):
        assert not crit.is_met(run_output_parses(bad), "default")


def test_validity_threshold_rejects_degenerate_model_output():
    from shiptwo.harness.spec import load_spec

    crit = load_spec().criterion("AC-SHIP2-007")
    p = 'def f(x):\n    """Doc."""'
    res = score_completions([p] * 3, [" č č č č", "\n", "    return (x\n"])
    assert not crit.is_met(res.valid_pct, "smoke")
