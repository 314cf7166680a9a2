"""Syntactic validity of completions (AC-SHIP2-007, AC-SHIP1-002): prompts are held-out functions
cut after their signature and docstring; the model completes the body until a line starts at
column 0 (or EOS, or the token limit) and `ast.parse` judges prompt + completion.

A prompt ends at the docstring's closing quotes, without the newline: byte-level BPE merges a
newline with the next line's indentation, so a prompt ending in a bare newline token is one the
model has rarely seen, and it answers with a column-0 line (the token-boundary effect).

An empty body (nothing but blank lines or comments) counts as invalid: a prompt ending in a
docstring already parses alone, so a model that stops at once must not score.
"""

from __future__ import annotations

import ast
import hashlib
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.model.generate import SamplingConfig, generate_batch

VALIDITY_PROMPTS = 100
VALIDITY_MAX_NEW_TOKENS = 128
VALIDITY_RESULTS_FILE = "python-validity.json"



@dataclass
class ValidityResult:
    valid_pct: float  # the metric: share of prompt+completion that parse, in percent
    n_prompts: int
    n_valid: int
    n_empty: int  # completions with no body line (counted invalid)
    skipped_too_long: int = 0  # prompts passed over because they leave no room for the completion
    requested: int = 0  # prompts asked for; n_prompts is less when the split has no more
    samples: list[dict] = field(default_factory=list)  # prompt, completion, has_body, valid

    def to_dict(self) -> dict:
        return asdict(self)


def _functions(tree: ast.Module):
    """Top-level functions and the methods of top-level classes (one level down)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def function_prompts(texts: Sequence[str], n: int) -> list[str]:
    """Up to `n` prompts: functions and methods with a docstring and a body after it, cut right
    after the docstring's closing quotes; methods are dedented to stand alone. Chosen by a hash
    of their text (deterministic, spread over all sources)."""
    found: dict[str, str] = {}
    for text in texts:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue  # a source that does not parse cannot give a well-formed prompt
        lines = text.splitlines(keepends=True)
        for node in _functions(tree):
            if ast.get_docstring(node) is None or len(node.body) < 2 or node.body[0].end_lineno is None:
                continue  # no docstring, or nothing after it to complete
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            prompt = textwrap.dedent("".join(lines[first - 1 : node.body[0].end_lineno])).rstrip()
            if not is_valid_python(prompt + "\n    pass\n"):
                continue  # e.g. a docstring line indented less than its method: not a clean cut
            found.setdefault(hashlib.sha256(prompt.encode()).hexdigest(), prompt)
    return [found[k] for k in sorted(found)][:n]


def body_end(text: str) -> int | None:
    """Stop rule: the completion first finishes the docstring's line; cut where a later line starts
    at column 0 with something other than blank or comment."""
    first = text.find("\n")
    if first < 0:
        return None
    offset = first + 1
    for line in text[offset:].splitlines(keepends=True):
        if line[:1] not in ("", " ", "\t", "\r", "\n", "#"):
            return offset
        offset += len(line)
    return None


def has_body(completion: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in completion.splitlines())


def is_valid_python(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


def run_output_parses(text: str) -> int:
    """AC-SHIP1-002: 1 when the printed program (prompt + completion) parses and has a body, else 0."""
    head, _, body = text.partition("\n")
    return int(has_body(body) and is_valid_python(text))


def score_completions(prompts: Sequence[str], completions: Sequence[str]) -> ValidityResult:
    """The metric from prompts and their completions (no model needed)."""
    if not prompts:
        raise ShiptwoError("python-validity: no prompts to score")
    samples = []
    for p, c in zip(prompts, completions, strict=True):
        body = has_body(c)
        samples.append({"prompt": p, "completion": c, "has_body": body, "valid": body and is_valid_python(p + c)})
    n_valid = sum(s["valid"] for s in samples)
    return ValidityResult(valid_pct=100.0 * n_valid / len(samples), n_prompts=len(samples), n_valid=n_valid,
                          n_empty=sum(not s["has_body"] for s in samples), samples=samples)


def evaluate_python_validity(ckpt: Checkpoint, texts: Sequence[str], n: int = VALIDITY_PROMPTS,
                             max_new_tokens: int = VALIDITY_MAX_NEW_TOKENS) -> ValidityResult:
    """Complete the first `n` held-out function prompts (hash order) that fit the context beside the
    completion budget, greedily, and score them. A split with fewer such functions (a smoke corpus)
    is scored on all it has; the result's n_prompts and requested say so. None at all is an error."""
    if n < 1:  # -4 scored every prompt and recorded requested: -4; 0 blamed the context
        raise ShiptwoError(f"python-validity: --n must be >= 1, got {n}")
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    ctx = ckpt.config.max_position_embeddings
    max_new = min(max_new_tokens, ctx // 2)
    rows, kept, too_long = [], [], 0
    for p in function_prompts(texts, len(texts) * 1000):
        if len(kept) == n:
            break
        ids = tok.encode(p)
        if len(ids) + max_new > ctx:
            too_long += 1  # a prompt is never cut: a cut docstring cannot parse
            continue
        rows.append(ids)
        kept.append(p)
    if not kept:
        raise ShiptwoError(
            f"python-validity: no held-out function with a docstring fits {ctx - max_new} prompt tokens "
            f"({too_long} longer ones skipped)"
        )
    outs = generate_batch(model, tok, rows, SamplingConfig(max_new_tokens=max_new), stop=body_end)
    res = score_completions(kept, [o.text for o in outs])
    res.requested, res.skipped_too_long = n, too_long
    return res
