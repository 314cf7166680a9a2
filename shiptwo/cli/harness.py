"""`shiptwo spec check`, `report`, `gate`: the harness commands."""

from __future__ import annotations

import sys

from shiptwo import paths

from shiptwo.harness.report import REPORT_FORMATS
from shiptwo.paths import ACCEPTANCE_DIR


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


COMMANDS = [_add_spec, _add_report, _add_gate]


