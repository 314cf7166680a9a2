"""The `shiptwo` command: argument parsing only; every command calls a library function.

Each command has an `_add_<name>(sub)` that declares its arguments and a `_cmd_<name>(args)`
that calls the library and returns the exit code. A ShiptwoError becomes one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from shiptwo import paths
from shiptwo.cli import builds as cli_builds
from shiptwo.cli import formats as cli_formats
from shiptwo.cli import harness as cli_harness
from shiptwo.cli import measure as cli_measure
from shiptwo.errors import ShiptwoError
from shiptwo.fileio import refuse_overwriting_inputs

from shiptwo.paths import ACCEPTANCE_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiptwo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (*cli_harness.COMMANDS, *cli_builds.COMMANDS, *cli_formats.COMMANDS, *cli_measure.COMMANDS):
        add(sub)
    return parser


# command -> (the option naming what it writes, the options naming what it reads): an output that
# is, holds or lies inside an input is refused before anything runs (`export ck -o ck` clobbered ck)
WRITES = {
    "export": ("output", ("checkpoint",)),
    "import": ("output", ("source",)),
    "publish": ("output", ("artifacts", "spec")),
    "report": ("output", ("results", "spec", "baseline", "template")),
    "gate": ("bundle", ("results", "spec", "baseline", "from_bundle")),
    "python-validity": ("out", ("artifact",)),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_locations(args)
        output, inputs = WRITES.get(getattr(args, "eval_name", None) or args.command, (None, ()))
        if output and getattr(args, output) not in (None, "-"):
            refuse_overwriting_inputs(getattr(args, output), {n.replace("_", "-"): getattr(args, n) for n in inputs})
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


