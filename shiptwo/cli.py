"""The `shiptwo` command: argument parsing only; every command calls a library function.

Each command has an `_add_<name>(sub)` that declares its arguments and a `_cmd_<name>(args)`
that calls the library and returns the exit code. A ShiptwoError becomes one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from shiptwo.errors import ShiptwoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiptwo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ShiptwoError as exc:
        print(f"shiptwo: error: {exc}", file=sys.stderr)
        return exc.exit_code


# --- commands: one section per library module -------------------------------------------

_COMMANDS: list = []  # each section below appends its `_add_<name>` after defining it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
