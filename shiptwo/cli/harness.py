"""`shiptwo spec check`, `report`, `gate`: the harness commands."""

from __future__ import annotations

import sys
from pathlib import Path

from shiptwo import paths
from shiptwo.errors import ShiptwoError

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
    from shiptwo.harness.resolution import resolution_warnings
    from shiptwo.harness.spec import load_spec

    for warning in resolution_warnings(load_spec(args.path)):  # issue 13: bands finer than the noise
        print(warning, file=sys.stderr)
    return 0


def _add_report(sub) -> None:

    p = sub.add_parser("report", help="render the ship report from results.json")
    p.add_argument("--results", default=None, help="results file (default: the project's reports/results.json)")
    p.add_argument("--spec", default=None, help="spec file (default: the project's spec/ship-two.yaml)")
    p.add_argument("--baseline", default=None,
                   help="an older results.json: each criterion's change with a paired test, p-value and effect size")
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

    p = sub.add_parser("gate", help="re-derive every verdict; exit 0 only on RELEASE (1 hold/refused, 3 clean rehearsal)")
    p.add_argument("--model", action="append", default=None, help="model key (repeatable; default: all)")
    p.add_argument("--results", default=None, help="results file (default: the project's reports/results.json)")
    p.add_argument("--spec", default=None, help="spec file (default: the project's spec/ship-two.yaml)")
    p.add_argument("--acceptance", default=None, help="acceptance tests whose bindings must all have run (default: acceptance/ beside spec/)")
    p.add_argument("--allow-stale", action="store_true",
                   help="accept results from another commit, profile or spec version, or from an uncommitted tree "
                        "(never an uncommitted spec: in a checkout that is an error, exit 2)")
    p.add_argument("--recheck", type=int, default=0, metavar="K",
                   help="re-execute K randomly chosen samples of each sampled criterion and refuse on any disagreement")
    p.add_argument("--seed", type=int, default=None, help="seed for choosing the --recheck samples (default: random)")
    p.add_argument("--rerun", action="store_true",
                   help="re-execute the bound acceptance tests of every PASS whose samples --recheck did not re-execute (recorded profile, "
                        "results in a temp dir) and refuse any whose fresh outcome is not PASS; costs a full re-run of "
                        "those tests against the artifacts in the store")
    p.add_argument("--rerun-timeout", type=float, default=None, metavar="S", help="give up a --rerun after S seconds (refused)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild every artifact set the run judged from this checkout in a temporary store and refuse "
                        "each model whose stored artifacts differ from the rebuild (beyond wall-clock readings); build-time "
                        "criteria are judged on the rebuild's own time too; costs a full build of each")
    p.add_argument("--rebuild-timeout", type=float, default=None, metavar="S", help="give up a rebuild after S seconds (refused)")
    p.add_argument("--baseline", default=None, help="an older results.json: hold on a significant regression of a blocking change rule")
    p.add_argument("--bundle", default=None, metavar="DIR", help="also write a verdict bundle (spec, results, evidence, hashes) to DIR")
    p.add_argument("--from-bundle", default=None, metavar="DIR", help="recompute the verdict offline from a bundle alone")
    p.set_defaults(func=_cmd_gate)


def _cmd_gate(args) -> int:
    from shiptwo.checkout import run_info
    from shiptwo.checks import gate_verifiers  # noqa: F401 (registers the model wing's verifiers)
    from shiptwo.harness.bindings import bound_tests, scan_bindings
    from shiptwo.harness.release_gate import (decide, exit_code, format_decisions, refuse_uncommitted_code,
                                              refuse_uncommitted_spec)
    from shiptwo.harness.results import load_results
    from shiptwo.harness.spec import load_spec
    from shiptwo.harness.verifiers import registered

    if args.recheck < 0:
        raise ShiptwoError(f"gate: --recheck must be >= 0, not {args.recheck}")
    for option, seconds in (("--rerun-timeout", args.rerun_timeout), ("--rebuild-timeout", args.rebuild_timeout)):
        if seconds is not None and not 0 < seconds < float("inf"):  # -1 or nan "timed out" at once, refusing every PASS
            raise ShiptwoError(f"gate: {option} must be a finite number of seconds > 0, not {seconds}")
    if args.from_bundle:  # each was silently not done (--bundle not written, --recheck not run, --baseline not read)
        for asked, which in ((args.rerun, "--rerun re-runs tests in the checkout"),
                             (args.rebuild, "--rebuild compares the store in the checkout"),
                             (args.recheck, "--recheck regenerates samples with the artifacts in the store"),
                             (args.baseline, "--baseline: the bundle carries the baseline it was judged against"),
                             (args.bundle, "--bundle bundles a verdict reached in the checkout")):
            if asked:
                raise ShiptwoError(f"gate: {which}; it does not combine with --from-bundle")
    if args.from_bundle:
        from shiptwo.harness.bundle import gate_from_bundle

        commit = None
        if Path(args.spec).is_file():  # in a checkout: its spec must be the committed one, as below
            spec = load_spec(args.spec)
            root = paths.root_of_spec(args.spec)
            checkout = run_info(root, spec.sha256, "")
            refuse_uncommitted_spec(root, spec, checkout)
            commit = checkout["commit"]
        decisions, lines = gate_from_bundle(args.from_bundle, args.spec, args.model, args.allow_stale, args.acceptance, commit)
        print("\n".join(lines))
        return exit_code(decisions)
    spec = load_spec(args.spec)
    results = load_results(args.results)
    root = paths.root_of_spec(args.spec)
    bound = bound_tests(scan_bindings(args.acceptance), root) if Path(args.acceptance).is_dir() else None
    checkout = run_info(root, spec.sha256, "")  # the code being gated: this checkout's HEAD
    refuse_uncommitted_spec(root, spec, checkout)
    baseline = load_results(args.baseline) if args.baseline else None
    for option, asked in (("--rerun", args.rerun), ("--rebuild", args.rebuild)):
        if asked:
            refuse_uncommitted_code(root, checkout, option)
    rerun = None
    if args.rerun:
        from shiptwo.harness.rerun import Rerun

        rerun = Rerun(root, Path(spec.path).resolve(), args.rerun_timeout)
    rebuild = None
    if args.rebuild:
        from shiptwo.checks.rebuild import Rebuild

        rebuild = Rebuild(root, paths.artifact_root(), args.rebuild_timeout)
    decisions = decide(spec, results, args.model, args.allow_stale, checkout, bound, args.recheck, args.seed, baseline, rerun,
                       rebuild.problems if rebuild else None)
    print(format_decisions(decisions, spec, results))
    for extra in (rerun, rebuild):
        if extra is not None:
            print(extra.summary())
    if args.bundle:
        from shiptwo.checkout import environment
        from shiptwo.harness.bundle import bundle_gate_run

        gate = {"models": args.model, "allow_stale": args.allow_stale, "bound": bound}
        print(f"bundle written to {bundle_gate_run(args.bundle, spec, results, decisions, gate, environment(), baseline)}")
    checks = registered()
    print(f"re-derived: outcomes, bound tests, evidence hashes, sample figures; verifiers: "
          f"{', '.join(checks['evidence']) or 'none'}; rechecks: {', '.join(checks['recheck']) or 'none'}"
          f"{f' (K={args.recheck})' if args.recheck else ' (not requested)'}; "
          f"re-run of the tests: {'done' if args.rerun else 'not requested (--rerun)'}; "
          f"rebuild of the artifacts: {'done' if args.rebuild else 'not requested (--rebuild)'}"
          f"{' (build time judged on it: ' + (', '.join(checks['build_clock']) or 'none') + ')' if args.rebuild else ''}")
    return exit_code(decisions)


def _add_evidence(sub) -> None:
    p = sub.add_parser("evidence", help="manage the evidence directories of past runs")
    ev = p.add_subparsers(dest="evidence_command", required=True)
    prune = ev.add_parser("prune", help="remove all but the newest runs' evidence (never the runs results.json uses)")
    prune.add_argument("--keep", type=int, default=3, help="newest runs to keep (default 3)")
    prune.add_argument("--results", default=None, help="results file whose runs are kept (default: the project's)")
    prune.add_argument("--root", default=None, help="evidence root (default: the project's reports/evidence)")
    prune.set_defaults(func=_cmd_evidence_prune)


def _cmd_evidence_prune(args) -> int:
    from shiptwo.harness.evidence import prune_runs
    from shiptwo.harness.results import load_results

    in_use = set()
    if Path(args.results).exists():
        results = load_results(args.results)
        in_use = {e.get("run_id") for e in results.criteria.values()} | {results.run.get("run_id")}
    removed = prune_runs(paths.evidence_root(args.root), args.keep, {r for r in in_use if r})
    print(f"shiptwo: removed {len(removed)} run(s) of evidence" + "".join(f"\n  {p}" for p in removed))
    return 0


COMMANDS = [_add_spec, _add_report, _add_gate, _add_evidence]


