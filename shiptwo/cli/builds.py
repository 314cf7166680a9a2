"""`shiptwo build`, `train`, `store`: the trainer and the artifact store."""

from __future__ import annotations


from shiptwo.errors import ShiptwoError

from shiptwo.builds.model2 import CORPUS_MANIFEST, TOKENIZER_FILE, TOKENS_FILE
from shiptwo.paths import PROFILES
from shiptwo.training.loop import TRAIN_STATE


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
                   help="model1 only: start from this Hugging Face directory, native checkpoint or GGUF file")
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
        passes = f" over {s['passes_over_data']:.2f} passes" if "passes_over_data" in s else ""
        print(f"shiptwo: steps {s['steps']}, best val CE {s['best_val_loss']:.4f}, D/N {s['tokens_per_param']:.2f} (unique tokens{passes}), "
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


def _add_store(sub) -> None:
    p = sub.add_parser("store", help="manage the artifact store")
    store_sub = p.add_subparsers(dest="store_command", required=True)
    prune = store_sub.add_parser("prune", help="remove artifacts whose key the current code, recipes and environment no longer give")
    prune.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    prune.set_defaults(func=_cmd_store_prune)


def _cmd_store_prune(args) -> int:
    from shiptwo.builds import store
    from shiptwo.builds.registry import current_keys
    from shiptwo.paths import artifact_root

    _log_to_stderr()
    present = tuple(p for p in PROFILES if any((artifact_root() / m / p).is_dir() for m in ("model1", "model2")))
    removed = store.prune(current_keys(present), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for d in removed:
        print(f"shiptwo: {verb} {d}")
    print(f"shiptwo: {verb} {len(removed)} superseded artifact set(s) under {artifact_root()}")
    return 0


COMMANDS = [_add_build, _add_train, _add_store]


