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
from shiptwo.fileio import refuse_overwriting_inputs, refuse_special_inputs

from shiptwo.paths import ACCEPTANCE_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiptwo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (*cli_harness.COMMANDS, *cli_builds.COMMANDS, *cli_formats.COMMANDS, *cli_measure.COMMANDS):
        add(sub)
    return parser


# command -> the options naming what it reads (files, or directories): a named pipe, socket or device
# there is refused before anything runs (a FIFO with no writer hung `report --results FIFO` forever)
READS = {
    "build": ("base",),
    "train": ("recipe", "data"),
    "export": ("checkpoint",),
    "import": ("source",),
    "publish": ("artifacts", "spec"),
    "verify": ("release_dir",),
    "spec": ("path", "acceptance"),
    "report": ("results", "spec", "baseline", "template", "acceptance"),
    "gate": ("results", "spec", "baseline", "from_bundle", "acceptance"),
    "evidence": ("results", "root"),
    "run": ("artifact",),
    "qa": ("artifact", "spec", "reference"),
    "bench": ("artifact",),
    "python-validity": ("artifact",),
    "humaneval": ("artifact", "samples"),
    "loss": ("artifact",),
}
# command -> the option naming what it writes: an output that is, holds or lies inside one of its
# READS is refused before anything runs (`export ck -o ck` clobbered ck); the acceptance directory
# is only scanned for tests, so an output there clobbers nothing read
WRITES = {"export": "output", "import": "output", "publish": "output", "report": "output", "gate": "bundle",
          "python-validity": "out"}
SCANNED_ONLY = ("acceptance",)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_locations(args)
        command = getattr(args, "eval_name", None) or args.command
        inputs = {n.replace("_", "-"): getattr(args, n) for n in READS.get(command, ())}
        refuse_special_inputs(inputs)
        output = WRITES.get(command)
        if output and getattr(args, output) not in (None, "-"):
            refuse_overwriting_inputs(getattr(args, output),
                                      {k: v for k, v in inputs.items() if k not in SCANNED_ONLY})
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


