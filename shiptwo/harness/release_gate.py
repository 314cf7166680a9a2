"""The release gate: does each selected model meet its release rule on re-derived results?

The gate trusts no recorded verdict it can re-check. A PASS counts only when `rederive` agrees
with it (every leg holds on the recorded figures against the current spec's thresholds for the
recorded profile, every bound test ran, every evidence file is unaltered, the sample file yields
the figure, registered verifiers agree); any disagreement is a refusal, never a release.
Results from another commit or profile than the latest run, judged on another spec (or
recording no spec_sha256 or commit), or from a run whose spec_sha256 is not this spec's, count
as not passed unless `allow_stale` is set. `shiptwo gate` in a git checkout refuses (exit 2) a
spec directory or recipe with uncommitted changes: it judges only the spec committed at HEAD. A run whose profile is not among the model's `release_profiles` is a
REHEARSAL: judged the same way, but it never releases.
With `rerun` (`shiptwo gate --rerun`), each counted PASS whose samples `--recheck` did not re-execute is
also re-executed (its bound tests, the recorded profile, results in a temp dir): a fresh outcome other than PASS, or
none, is a refusal. That is the only check here that a consistently edited figure cannot pass, besides
`rebuild` (`--rebuild`) for a build-time criterion: it is judged again on the rebuild's own clock.

Verdicts and exit codes: RELEASE 0; HOLD (some criterion does not pass) 1; REFUSED (a recorded
verdict disagrees with what the gate re-derives) 1; REHEARSAL 3 when everything would pass,
else 1. Several models: the worst code wins (1 over 3 over 0).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from shiptwo.checkout import UNKNOWN_COMMIT, ignored_files, ignored_python, uncommitted, untracked
from shiptwo.errors import ShiptwoError
from shiptwo.harness.bindings import key_of_nodeid
from shiptwo.harness.compare import blocking_regressions, change_text, compare
from shiptwo.harness.markdown_text import visible
from shiptwo.harness.rebuild_clock import RebuildOutcome, build_clock_disagreements
from shiptwo.harness.rederive import recheck, rederive
from shiptwo.harness.rerun import RerunOutcome, compare_rerun
from shiptwo.harness.results import Results
from shiptwo.harness.startup_files import unrecorded_startup_files
from shiptwo.harness.scoring import CriterionStatus, score, ship_percentage
from shiptwo.harness.spec import Spec
from shiptwo.harness.verifiers import build_clock_criteria
from shiptwo.paths import ACCEPTANCE_DIR

from shiptwo.harness.results import BLOCKED, NOT_RUN, NO_TEST, PASS, SKIPPED

RELEASE = "RELEASE"
HOLD = "HOLD"
REFUSED = "REFUSED"
REHEARSAL = "REHEARSAL"
REGRESSED = "REGRESSED"  # a significant regression against the baseline beyond a blocking change rule
EXIT_RELEASE, EXIT_HOLD, EXIT_REHEARSAL = 0, 1, 3
UNTIED_NOTE = ("no git commit here (not a git checkout, or git failed): the results are not tied to this code, "
               "nor is the spec checked against HEAD; staleness compares the results' own recorded fields")
MODULE_SUFFIXES = (".pyc", ".so", ".pyd")  # what Python imports besides a .py source
PYTEST_CONFIG = ("pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "conftest.py")


@dataclass(frozen=True)
class Holdback:
    """One criterion holding a model's release back, and why."""

    cid: str
    status: str
    why: str


@dataclass(frozen=True)
class ModelDecision:
    """The gate's verdict for one model."""

    key: str
    name: str
    profile: str
    ship_pct: float | None
    min_ship_pct: float
    verdict: str
    holdbacks: list[Holdback] = field(default_factory=list)
    refusals: list[Holdback] = field(default_factory=list)  # recorded PASS the gate could not re-derive
    release_profiles: tuple[str, ...] = ()
    required_all: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def released(self) -> bool:
        return self.verdict == RELEASE

    @property
    def would_release(self) -> bool:
        """Every rule holds (a clean rehearsal, or a release)."""
        return not self.holdbacks and not self.refusals

    @property
    def exit_code(self) -> int:
        if self.verdict == RELEASE:
            return EXIT_RELEASE
        return EXIT_REHEARSAL if self.verdict == REHEARSAL and self.would_release else EXIT_HOLD


def _why(st: CriterionStatus) -> str:
    entry = st.entry or {}
    if st.status == BLOCKED:
        return f"blocked by {', '.join(st.blocked_by)} (own outcome {st.own})"
    if st.stale and st.own == NOT_RUN:
        return f"stale result: {st.stale}"
    if st.status == SKIPPED:
        return f"skipped: {entry.get('reason', '')}"
    if st.status in (NOT_RUN, NO_TEST) and entry.get("missing_tests"):
        return entry.get("message", "not every bound test ran")
    if st.status in (NOT_RUN, NO_TEST):
        return "no result in the results file"
    return entry.get("message") or st.status


def exit_code(decisions: list[ModelDecision]) -> int:
    """The gate's exit status over several models: 1 over 3 over 0."""
    codes = {d.exit_code for d in decisions}
    return EXIT_HOLD if EXIT_HOLD in codes else EXIT_REHEARSAL if EXIT_REHEARSAL in codes else EXIT_RELEASE


def decide(spec: Spec, results: Results, models: list[str] | None = None, allow_stale: bool = False,
           checkout: dict | None = None, bound: dict[str, set[str]] | None = None,
           recheck_k: int = 0, seed: int | None = None, baseline: Results | None = None,
           rerun: Callable[[str, dict[str, list[str]]], RerunOutcome] | None = None,
           rebuild: Callable[[dict[str, list[dict]], str], RebuildOutcome] | None = None) -> list[ModelDecision]:
    """One decision per selected model (all models of the spec by default). `bound` maps each id
    to the tests bound to it (None: unknown, so no PASS can be re-derived); with `checkout`
    ({"commit": ...}) results from other code count as stale; `recheck_k` > 0 re-executes that many
    samples of each sampled criterion through the registered rechecker; `rerun` (profile, {id: tests})
    re-executes the bound tests of every PASS that stands re-derived and whose samples the recheck did
    not re-execute, refusing any whose fresh outcome is not PASS; `rebuild`
    ({model: its recorded entries}, the run's profile -> RebuildOutcome) checks that the artifacts
    they judged are what this checkout builds, refusing every counted PASS of a model with a problem,
    and times the rebuild: a registered build-time criterion's PASS is judged on that time too."""
    selected = models or list(spec.models)
    for key in selected:
        if key not in spec.models:
            raise ShiptwoError(f"{spec.path}: unknown model {key!r} (spec has {', '.join(spec.models)})")
    profile = results.run.get("profile", "")
    untied = checkout is not None and checkout.get("commit") in (None, UNKNOWN_COMMIT)
    checkout = {**(checkout or {}), "spec_sha256": spec.sha256}  # the run must have been judged on this spec
    card = score(spec, results, reject_stale=not allow_stale, checkout=checkout, count_stale=allow_stale)
    regressions = blocking_regressions(compare(spec, results, baseline)) if baseline is not None else []  # issue 13
    checked = {}  # cid -> (disagreements, notes) of each recorded PASS
    rechecked = set()  # cids whose samples a registered rechecker re-executed
    for key in selected:
        for st in (card.statuses[c.id] for c in spec.for_model(key)):
            if st.own != PASS or st.entry is None:
                continue
            entry_profile = st.entry.get("profile", profile)
            bound_here = None if bound is None else bound.get(st.criterion.id, set())
            problems, notes = rederive(st.criterion, st.entry, entry_profile, bound_here), []
            if not problems and recheck_k > 0:
                more, note = recheck(st.criterion, st.entry, entry_profile, recheck_k, seed)
                problems += more
                if note:
                    notes.append(f"{st.criterion.id}: {note}")
                    rechecked.add(st.criterion.id)
            checked[st.criterion.id] = (problems, notes)
    if rerun is not None:
        _rerun_passes(card, checked, bound, profile, rerun, rechecked)
    if rebuild is not None:
        found = rebuild({key: [st.entry for c in spec.for_model(key) if (st := card.statuses[c.id]).entry is not None]
                         for key in selected}, profile)
        timed = build_clock_criteria()
        for cid, (problems, notes) in checked.items():
            model_problems = found.problems.get(spec.criteria[cid].model, [])
            problems.extend(model_problems)
            if cid in timed and not model_problems:  # a rebuild that failed or differs is refused already, untimed
                entry = card.statuses[cid].entry
                entry_profile = entry.get("profile") or profile  # the profile the rebuild built it under
                more, note = build_clock_disagreements(spec.criteria[cid], entry, entry_profile,
                                                       found.build_seconds.get((spec.criteria[cid].model, entry_profile)))
                problems.extend(more)
                notes.extend([f"{cid}: {note}"] if note else [])
    decisions = []
    for key in selected:
        model, ms = spec.models[key], card.models[key]
        mine = [card.statuses[c.id] for c in spec.for_model(key)]
        refusals, notes = [], ([UNTIED_NOTE] if untied else [])
        for st in mine:
            problems, more_notes = checked.get(st.criterion.id, ([], []))
            notes += more_notes
            refusals += [Holdback(st.criterion.id, REFUSED, p) for p in problems]
        refused = {r.cid for r in refusals}
        open_ = [st for st in mine if st.status != PASS and st.criterion.id not in refused]
        if ms.ship_pct is not None and refused:  # a refused PASS is no progress either
            counted = [(st.criterion.weight, REFUSED if st.criterion.id in refused else st.status) for st in mine]
            ms = replace(ms, ship_pct=ship_percentage(counted))
        required = set(spec.required_ids(key))
        if model.required_all:
            holding = open_
        else:
            pct_ok = ms.ship_pct is not None and ms.ship_pct >= model.min_ship_pct
            holding = open_ if not pct_ok else [st for st in open_ if st.criterion.id in required]
        holdbacks = [Holdback(st.criterion.id, st.status, _why(st)) for st in holding]
        holdbacks += [Holdback(ch.cid, REGRESSED, change_text(ch)) for ch in regressions if spec.criteria[ch.cid].model == key]
        # with --allow-stale a counted PASS may come from another profile than the run's: a smoke
        # result under a run labelled `full` releases nothing
        foreign = [] if profile not in model.release_profiles else sorted(
            {str(st.entry.get("profile")) for st in mine if st.status == PASS and st.entry is not None
             and st.entry.get("profile") not in model.release_profiles})
        if foreign:
            notes.append(f"counted PASSes measured at profile {', '.join(foreign)}, not a release profile of {key}: "
                         "a rehearsal at most")
        if profile not in model.release_profiles or foreign:
            verdict = REHEARSAL
        else:
            verdict = REFUSED if refusals else HOLD if holdbacks else RELEASE
        shown = ", ".join(foreign) if foreign else profile
        decisions.append(ModelDecision(key, model.name, shown, ms.ship_pct, model.min_ship_pct, verdict, holdbacks,
                                       refusals, model.release_profiles, model.required_all, notes))
    return decisions


def _samples_give_every_leg(criterion) -> bool:
    """Whether re-executing the criterion's samples re-derives its whole verdict: one leg, the one its
    samples rule derives. A leg beside it (a time, a size) is re-derived by nothing but a re-run."""
    rule = criterion.samples
    return rule is not None and not criterion.extra_legs and (rule.metric or criterion.metric) == criterion.metric


def _rerun_passes(card, checked: dict, bound: dict[str, set[str]] | None, profile: str, rerun,
                  rechecked: set[str] = frozenset()) -> None:
    """Re-run the bound tests of each counted PASS that stands re-derived, unless --recheck re-executed
    samples that give its every leg (a samples rule without a rechecker, or no --recheck, leaves only a
    per-sample file its forger could rewrite consistently; a leg beside the samples, only its record),
    one run per recorded profile; add each disagreement and note to `checked`."""
    by_profile: dict[str, dict[str, list[str]]] = {}
    for cid, (problems, notes) in checked.items():
        st = card.statuses[cid]
        if problems or st.status != PASS:
            continue
        if cid in rechecked and _samples_give_every_leg(st.criterion):
            notes.append(f"{cid}: not re-run (--rerun): its samples were re-executed (--recheck)")
            continue
        ran = set(st.entry.get("nodeids") or [])
        keys = set(st.entry.get("expected") or []) | set((bound or {}).get(cid, set()))
        tests = ran | {k for k in keys - ran if k not in {key_of_nodeid(n) for n in ran}}  # a key covers its params
        by_profile.setdefault(st.entry.get("profile", profile), {})[cid] = sorted(tests)
    for entry_profile, tests in sorted(by_profile.items()):
        outcome = rerun(entry_profile, tests)
        for cid in sorted(tests):
            problems, note = compare_rerun(cid, card.statuses[cid].entry, outcome.entries.get(cid), outcome.error)
            checked[cid][0].extend(problems)
            if note:
                checked[cid][1].append(f"{cid}: {note}")


def refuse_uncommitted_spec(root: Path, spec: Spec, checkout: dict) -> None:
    """In a git checkout, the spec the gate judges against (its directory, the recipes it names) must
    be the one committed at HEAD: an uncommitted edit could loosen any threshold or release rule, and
    so could a copy in a git-ignored directory, which no status shows."""
    if checkout.get("commit") in (None, UNKNOWN_COMMIT):
        return
    spec_file = Path(spec.path).resolve()
    recipes = [root / m.recipe for m in spec.models.values() if m.recipe and (root / m.recipe).exists()]
    try:
        changed = uncommitted(root, [spec_file.parent, *recipes])
    except ValueError:  # the spec lies outside the checkout it names as its root
        changed = [str(spec_file)]
    if changed:
        raise ShiptwoError(f"gate: {changed[0]}: uncommitted change to the spec or a recipe it names "
                           f"(the gate judges only the spec committed at HEAD; commit it or revert it)")
    hidden = ignored_files(spec_file.parent, "--", str(spec_file), *map(str, recipes))  # no status shows these
    if hidden:
        raise ShiptwoError(f"gate: {(spec_file.parent / hidden[0]).resolve()}: git-ignored, so not part of the spec committed "
                           f"at HEAD (the spec and the recipes it names must be the checkout's committed files)")
    foreign = untracked(root, [spec_file, *recipes])  # a nested repository's files: neither of the above
    if foreign:
        raise ShiptwoError(f"gate: {(root / foreign[0]).resolve()}: not a file the checkout tracks, so not part of the spec committed at HEAD "
                           f"(the spec and the recipes it names must be the checkout's committed files)")


def refuse_uncommitted_code(root: Path, checkout: dict, option: str) -> None:
    """`--rerun` and `--rebuild` run this checkout's code: in a git checkout it must be the code
    committed at HEAD, or an uncommitted edit (a trainer seeded otherwise, a loosened check) would be
    what they re-measure and rebuild with, under HEAD's name; so would git-ignored code, which no status
    shows: `.py` files under acceptance/ or shiptwo/ (a conftest.py in acceptance/build/), and what
    `ignored_loadable` finds. Checkout or not, a startup file in the interpreter's site directories
    that no installed package records (`unrecorded_startup_files`) would run in them too."""
    startup = unrecorded_startup_files()
    if startup:
        path, why = startup[0]
        raise ShiptwoError(f"gate: {option} runs this checkout's code, but {path}: {why}; Python runs it at every start, "
                           f"the re-run's and rebuild's too (remove it, or reinstall the package it belongs to)")
    if checkout.get("commit") in (None, UNKNOWN_COMMIT):
        return
    changed = uncommitted(root, [root])
    if changed:
        raise ShiptwoError(f"gate: {option} runs this checkout's code, but {changed[0]} has uncommitted changes "
                           f"(commit or stash them: the gate re-measures and rebuilds only what HEAD holds)")
    hidden = ignored_python(root, [ACCEPTANCE_DIR, "shiptwo"]) or ignored_loadable(root)
    if hidden:
        raise ShiptwoError(f"gate: {option} runs this checkout's code, but {hidden[0]} is git-ignored code that "
                           f"pytest or Python would load (remove it: the gate re-measures and rebuilds only what HEAD holds)")


def ignored_loadable(root: str | Path) -> list[str]:
    """Git-ignored files other than `.py` sources that the re-run's Python or pytest would load: a module
    on its import path (the project root, which `python -m` puts first, and acceptance/, which pytest
    prepends: a sourceless `llama_cpp.pyc` there is imported before the real runtime), a package at the
    root, bytecode or an extension beside the sources, or a pytest configuration file (`addopts = -p ...`).
    Bytecode in `__pycache__` is left alone: the re-run compiles afresh (PYTHONPYCACHEPREFIX)."""
    root = Path(root)
    found = [f for f in ignored_files(root, "--", ACCEPTANCE_DIR, "shiptwo")
             if "__pycache__" not in Path(f).parts and (f.endswith(MODULE_SUFFIXES) or Path(f).name in PYTEST_CONFIG)]
    for entry in ignored_files(root, "--directory"):  # the root's own entries; an ignored directory as `name/`
        name = entry.rstrip("/")
        if "/" in name:
            continue
        if entry.endswith("/") and any(f.name.endswith((".py", *MODULE_SUFFIXES)) for f in (root / name).glob("__init__.*")):
            found.append(entry)
        elif name.endswith((".py", *MODULE_SUFFIXES)) or name in PYTEST_CONFIG:
            found.append(name)
    return sorted(found)


def one_line(text: str) -> str:
    """A line of gate output as written: messages, run fields and paths come from the editable results
    file, so a line break there would print a forged verdict line, an ANSI escape recolour or erase one,
    a bidirectional control reorder one. Control characters and line separators show as escapes."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in visible(text))


def _headline(d: ModelDecision) -> str:
    pct = "not run" if d.ship_pct is None else f"{d.ship_pct:.1f}%"
    rule = "every criterion must pass" if d.required_all else f"needs ≥ {d.min_ship_pct:.1f}%"
    if d.verdict == REHEARSAL:
        outcome = "would release" if d.would_release else "would not release"
        return (f"{d.key} ({d.name}): REHEARSAL — profile {d.profile} may not release it (release profiles: "
                f"{', '.join(d.release_profiles)}); {outcome} — ship-% {pct}, {rule}")
    return f"{d.key} ({d.name}): {d.verdict} — ship-% {pct}, {rule}"


def format_decisions(decisions: list[ModelDecision], spec: Spec, results: Results | None = None) -> str:
    """Human-readable gate output: the judged run and profile, one verdict line per model, one line
    per refusal and per holdback (each one line, whatever the results file holds)."""
    lines = []
    if results is not None:
        run = results.run
        lines.append(f"profile {run.get('profile')} (run {run.get('run_id', '—')}, commit {str(run.get('commit'))[:12]}, "
                     f"{run.get('time')})")
    for d in decisions:
        lines.append(_headline(d))
        required = set(spec.required_ids(d.key))
        for h in d.refusals:
            lines.append(f"  {h.cid} REFUSED: {h.why}")
        for h in d.holdbacks:
            tag = " [required]" if h.cid in required and not d.required_all else ""
            lines.append(f"  {h.cid} {h.status}{tag}: {h.why}")
        lines += [f"  note: {n}" for n in d.notes]
    return "\n".join(one_line(line) for line in lines)
