"""Per-sample evidence of the sampled evaluations, and re-executing samples for `shiptwo gate --recheck`.

Each sample is one JSON object (the harness's format): `id`, `prompt_sha256` (of the exact prompt),
`output` (the completion) and `outcome` ("pass"/"fail"). The gate recomputes the criterion's figure
from the file (HumanEval pass@1, python validity: the pass share); `recheck_humaneval` regenerates
chosen samples greedily with the recorded artifact and re-scores them in the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

from shiptwo.fileio import atomic_write_text, sha256_bytes

PASS, FAIL = "pass", "fail"


def _outcome(ok: bool) -> str:
    return PASS if ok else FAIL


def humaneval_samples(records: list[dict], problems: dict[str, dict]) -> list[dict]:
    """HumanEval records (task_id, completion, passed) as samples; ids are task ids (`#j` for the j-th
    of several samples of a task)."""
    seen: dict[str, int] = {}
    out = []
    for r in records:
        j = seen.get(r["task_id"], 0)
        seen[r["task_id"]] = j + 1
        out.append({"id": r["task_id"] if j == 0 else f"{r['task_id']}#{j}",
                    "prompt_sha256": sha256_bytes(problems[r["task_id"]]["prompt"].encode()),
                    "output": r["completion"], "outcome": _outcome(bool(r["passed"]))})
    return out


def validity_samples(records: list[dict]) -> list[dict]:
    """python-validity records (prompt, completion, valid) as samples; the id is the prompt's hash prefix."""
    return [{"id": f"{i:04d}-{sha256_bytes(r['prompt'].encode())[:12]}", "prompt_sha256": sha256_bytes(r["prompt"].encode()),
             "output": r["completion"], "outcome": _outcome(bool(r["valid"]))} for i, r in enumerate(records)]


def golden_samples(records: list[dict]) -> list[dict]:
    """qa's golden records (id, prompt, completion, passed) as samples, so two runs pair prompt by prompt."""
    return [{"id": r["id"], "prompt_sha256": sha256_bytes(r["prompt"].encode()), "output": r["completion"],
             "outcome": _outcome(bool(r["passed"]))} for r in records]


def parity_samples(per_prompt: list[dict]) -> list[dict]:
    """A parity comparison's per-prompt records as valued samples (the prompt's max |logit diff|), so
    two runs pair text by text; `output` is our greedy continuation where the comparison made one."""
    return [{"id": f"{i:02d}-{sha256_bytes(r['prompt'].encode())[:12]}", "prompt_sha256": sha256_bytes(r["prompt"].encode()),
             "output": r.get("greedy_text", ""), "value": r["max_logit_diff"]} for i, r in enumerate(per_prompt)]


def write_samples(samples: list[dict], path: str | Path) -> Path:
    """The samples as JSONL, atomically."""
    return atomic_write_text(path, "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples))


def recheck_humaneval(artifact: Path, samples: list[dict]) -> list[str]:
    """Regenerate each sample's completion with `artifact` (greedy, as recorded) and re-score it in
    the sandbox; one line per sample whose prompt, completion or outcome disagrees with the record."""
    from shiptwo.formats.artifact import load_artifact
    from shiptwo.measure.evals.humaneval import generate_samples, load_problems, score_samples

    problems = load_problems()
    problems_by_id = {s["id"]: problems.get(s["id"].split("#")[0]) for s in samples}
    problems_sha = {tid: sha256_bytes(p["prompt"].encode()) for tid, p in problems.items()}
    problems_here = {}
    disagreements = []
    for s in samples:
        prob = problems_by_id[s["id"]]
        if prob is None:
            disagreements.append(f"{s['id']}: no such HumanEval problem")
        elif problems_sha[prob["task_id"]] != s["prompt_sha256"]:
            disagreements.append(f"{s['id']}: the recorded prompt hash is not this problem's prompt")
        else:
            problems_here[prob["task_id"]] = prob
    if disagreements:
        return disagreements
    ckpt = load_artifact(artifact)
    regenerated, _ = generate_samples(ckpt, problems_here)
    fresh = {r["task_id"]: r["completion"] for r in regenerated}
    # the recorded completions and the regenerated ones, both judged again in the sandbox
    judged = score_samples([{"task_id": s["id"].split("#")[0], "completion": s["output"]} for s in samples] +
                           [{"task_id": t, "completion": c} for t, c in fresh.items()],
                           problems_here, ks=(1,), require_all=False).records
    recorded_judged, fresh_judged = judged[:len(samples)], {r["task_id"]: r for r in judged[len(samples):]}
    for s, again in zip(samples, recorded_judged):
        tid = s["id"].split("#")[0]
        if _outcome(again["passed"]) != s["outcome"]:
            disagreements.append(f"{s['id']}: recorded {s['outcome']}, the recorded completion scores {_outcome(again['passed'])} again")
        if "#" not in s["id"] and fresh[tid] != s["output"]:
            disagreements.append(f"{s['id']}: the artifact now generates a different completion "
                                f"({len(fresh[tid])} chars, scores {_outcome(fresh_judged[tid]['passed'])})")
    return disagreements
