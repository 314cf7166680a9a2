"""MODEL-1's instruction data: docstring → function pairs mined from the training split, rendered
with the chat template and packed into one token stream with a loss mask on the assistant's turn.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass

import torch

from shiptwo.data.chat import END_OF_TURN_TOKEN, render_chat
from shiptwo.errors import ShiptwoError
from shiptwo.model.tokenizer import BPETokenizer


@dataclass(frozen=True)
class InstructionPair:
    instruction: str
    answer: str
    source: str  # document path and function name, for the manifest


def _function_without_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str:
    """The function's source, dedented, with its docstring statement removed."""
    doc = node.body[0]
    start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
    kept = lines[start : doc.lineno - 1] + lines[doc.end_lineno : node.end_lineno]
    return textwrap.dedent("\n".join(kept)).rstrip() + "\n"


def mine_pairs(documents: list[tuple[str, str]], max_pairs: int, max_answer_chars: int = 600) -> list[InstructionPair]:
    """Functions with a docstring: the docstring's first paragraph is the instruction, the body the answer.

    `documents` are (path, text); files that do not parse are skipped (the corpus is real code,
    some of it for other Python versions). The order is deterministic: document order, then line.
    """
    pairs: list[InstructionPair] = []
    for path, text in documents:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=True)
            if not doc or len(node.body) < 2:
                continue
            instruction = doc.split("\n\n")[0].strip()
            answer = _function_without_docstring(node, lines)
            if len(instruction) < 8 or len(answer) > max_answer_chars:
                continue
            pairs.append(InstructionPair(instruction, answer, f"{path}:{node.name}"))
            if len(pairs) >= max_pairs:
                return pairs
    return pairs


def prompt_for(instruction: str) -> str:
    """The rendered chat prompt for one user instruction, ready for the assistant's answer."""
    return render_chat([{"role": "user", "content": instruction}], add_generation_prompt=True)


def pack_pairs(tok: BPETokenizer, pairs: list[InstructionPair]) -> tuple[torch.Tensor, torch.Tensor]:
    """One stream of rendered conversations and a mask that is 1 where the *target* token is the
    assistant's (its answer and its end-of-turn token), 0 for the prompt and the separators.
    """
    end_id = tok.token_to_id(END_OF_TURN_TOKEN)
    if end_id is None:
        raise ShiptwoError(f"tokenizer: chat token {END_OF_TURN_TOKEN} is missing (add the chat special tokens first)")
    ids: list[int] = []
    mask: list[int] = []
    for pair in pairs:
        prompt = tok.encode(prompt_for(pair.instruction))
        answer = tok.encode(pair.answer) + [end_id]
        tail = tok.encode("\n")  # the template's newline after <|end|>
        ids += prompt + answer + tail
        mask += [0] * len(prompt) + [1] * len(answer) + [0] * len(tail)
    if not ids:
        raise ShiptwoError("instruct: no instruction pairs to pack")
    # The model predicts ids[t+1] from ids[:t+1]; the mask is on targets, so it stays aligned with ids.
    return torch.tensor(ids, dtype=torch.int32), torch.tensor(mask, dtype=torch.uint8)
