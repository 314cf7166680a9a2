"""Golden prompts: known-good behaviour that no model recorded (spec/golden-prompts.yaml).

Each prompt's greedy continuation is judged by an independent rule: the program it completes,
followed by the prompt's `check`, must run cleanly in the sandbox. A chat model is asked through
its own chat template and judged on the first code block of its answer.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shiptwo.data.chat import render_chat
from shiptwo.errors import ShiptwoError
from shiptwo.measure.sandbox import SandboxConfig, run_many
from shiptwo.model.checkpoint import Checkpoint
from shiptwo.model.generate import SamplingConfig, generate_batch
from shiptwo.paths import project_root

GOLDEN_PROMPTS = "spec/golden-prompts.yaml"
_FIELDS = ("version", "max_new_tokens", "chat_max_new_tokens", "stop", "instruction", "prompts", "reference_text")
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


@dataclass
class GoldenPrompt:
    id: str
    prompt: str
    check: str

    @property
    def function(self) -> str:
        """The name of the function the prompt starts."""
        found = re.match(r"\s*def\s+(\w+)", self.prompt)
        return found.group(1) if found else ""


@dataclass
class GoldenSet:
    path: Path
    prompts: list[GoldenPrompt]
    max_new_tokens: int
    chat_max_new_tokens: int
    stop: tuple[str, ...]
    instruction: str
    reference_text: str


def load_golden(path: str | Path | None = None) -> GoldenSet:
    """Read and validate the golden prompt set; every defect is one ShiptwoError naming file and field."""
    path = Path(path) if path else project_root() / GOLDEN_PROMPTS
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ShiptwoError(f"{path}: cannot read golden prompts ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or sorted(doc) != sorted(_FIELDS):
        raise ShiptwoError(f"{path}: needs exactly the fields {', '.join(_FIELDS)}")
    prompts = []
    for i, p in enumerate(doc["prompts"] or []):
        if not isinstance(p, dict) or sorted(p) != ["check", "id", "prompt"] or not all(isinstance(v, str) and v for v in p.values()):
            raise ShiptwoError(f"{path}: prompts[{i}] needs non-empty strings id, prompt, check")
        prompts.append(GoldenPrompt(p["id"], p["prompt"], p["check"]))
    if not prompts or len({p.id for p in prompts}) != len(prompts):
        raise ShiptwoError(f"{path}: prompts must be a non-empty list with unique ids")
    try:
        return GoldenSet(path, prompts, int(doc["max_new_tokens"]), int(doc["chat_max_new_tokens"]),
                         tuple(str(s) for s in doc["stop"]), str(doc["instruction"]), str(doc["reference_text"]))
    except (TypeError, ValueError):
        raise ShiptwoError(f"{path}: max_new_tokens, chat_max_new_tokens must be integers and stop a list") from None


@dataclass
class GoldenResult:
    """What each golden prompt produced and whether its check passed."""

    records: list[dict] = field(default_factory=list)  # id, program, completion, passed, result
    chat: bool = False

    @property
    def passed(self) -> int:
        return sum(r["passed"] for r in self.records)

    @property
    def share(self) -> float:
        return self.passed / len(self.records) if self.records else 0.0


def chat_question(golden: GoldenSet, code: str) -> str:
    """The user turn that asks a chat model to complete `code`."""
    return f"{golden.instruction}\n```python\n{code}\n```"


def served_prompts(ckpt: Checkpoint, golden: GoldenSet, codes: list[str]) -> list[str]:
    """`codes` as the model is served: as they are, or each asked through its chat template."""
    if not ckpt.chat_template:
        return list(codes)
    return [render_chat([{"role": "user", "content": chat_question(golden, c)}], True, ckpt.chat_template) for c in codes]


def program_from_answer(prompt: GoldenPrompt, answer: str) -> str:
    """The code a chat answer gives: its first code block (else the whole answer), after the
    prompt's head when it does not define the function itself."""
    found = _CODE_BLOCK.search(answer)
    code = found.group(1) if found else answer
    if re.search(rf"^\s*def\s+{re.escape(prompt.function)}\b", code, re.M):
        return code
    return prompt.prompt + code


def golden_completions(ckpt: Checkpoint, golden: GoldenSet) -> tuple[list[str], list[str]]:
    """(completions, programs): greedy, through the chat template when the checkpoint has one."""
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    texts = served_prompts(ckpt, golden, [p.prompt for p in golden.prompts])
    if ckpt.chat_template:
        cfg = SamplingConfig(max_new_tokens=golden.chat_max_new_tokens)
    else:
        cfg = SamplingConfig(max_new_tokens=golden.max_new_tokens, stop=golden.stop)
    room = ckpt.config.max_position_embeddings - max(len(tok.encode(t)) for t in texts)
    if room < 1:
        raise ShiptwoError(f"{golden.path}: a golden prompt does not fit the model's context "
                           f"({ckpt.config.max_position_embeddings} tokens)")
    cfg.max_new_tokens = min(cfg.max_new_tokens, room)
    outs = [o.text for o in generate_batch(model, tok, texts, cfg)]
    if ckpt.chat_template:
        return outs, [program_from_answer(p, o) for p, o in zip(golden.prompts, outs)]
    return outs, [p.prompt + o for p, o in zip(golden.prompts, outs)]


def judge_programs(golden: GoldenSet, programs: list[str], sandbox: SandboxConfig | None = None) -> list[dict]:
    """Each program followed by its prompt's check, run in the sandbox: passed when the check ran to
    its end (a marker printed after it) and the process exited cleanly."""
    marker = secrets.token_hex(8)
    runs = run_many([(f"{prog}\n\n{p.check}\nprint({marker!r})\n", b"") for prog, p in zip(programs, golden.prompts)],
                    sandbox)
    out = []
    for p, prog, run in zip(golden.prompts, programs, runs):
        failure = run.failure() or (None if marker.encode() in run.stdout else "exited before its check ran")
        out.append({"id": p.id, "program": prog, "passed": failure is None, "result": failure or "passed"})
    return out


def judge_golden(ckpt: Checkpoint, golden: GoldenSet, sandbox: SandboxConfig | None = None) -> GoldenResult:
    """Generate every golden prompt's program with `ckpt` and judge it by its check."""
    completions, programs = golden_completions(ckpt, golden)
    records = judge_programs(golden, programs, sandbox)
    return GoldenResult([{**r, "completion": c} for r, c in zip(records, completions)], chat=bool(ckpt.chat_template))
