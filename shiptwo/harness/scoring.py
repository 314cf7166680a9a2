"""Ship-% math: statuses from results and the spec's prerequisite DAG, weighted pass share.

A criterion passes or fails; there is no partial credit. A criterion whose prerequisite did not
PASS is BLOCKED (its own outcome is still kept). ship-% of a model = 100 * (weight of current
PASS) / (weight of all its criteria): a stale PASS (another commit, profile or spec) is shown
apart and never counted; a model without any result is "not run" (None), not 0%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from shiptwo.harness.results import Results
from shiptwo.harness.spec import Criterion, Model, Spec

from shiptwo.checkout import UNKNOWN_COMMIT
from shiptwo.harness.results import BLOCKED, ERROR, FAIL, NOT_RUN, NO_TEST, PASS, SKIPPED, STATUSES

_EXECUTED = (PASS, FAIL, ERROR, SKIPPED)


@dataclass(frozen=True)
class CriterionStatus:
    """The final status of one criterion, its own outcome, and what blocks it."""

    criterion: Criterion
    status: str
    own: str  # the outcome of its own tests (or NOT RUN / NO TEST)
    entry: dict | None = None
    blocked_by: tuple[str, ...] = ()  # direct prerequisites that did not PASS
    root_blockers: tuple[str, ...] = ()  # the non-blocked failures at the root of the chain
    stale: str = ""  # why the entry is from another commit/profile, else ""


@dataclass(frozen=True)
class ModelScore:
    """Ship-% and status counts of one model."""

    model: Model
    ship_pct: float | None  # None: no result at all ("not run"); counts current results only
    passed_weight: float
    total_weight: float
    counts: dict[str, int] = field(default_factory=dict)
    stale_passed_weight: float = 0.0  # weight of PASS results that are stale (shown apart, not counted)


@dataclass(frozen=True)
class Scorecard:
    """Every criterion's status and every model's score for one results file."""

    spec: Spec
    statuses: dict[str, CriterionStatus]
    models: dict[str, ModelScore]


@dataclass(frozen=True)
class Opportunity:
    """An open criterion and the ship-% its model would gain if it passed."""

    cid: str
    model: str
    gain_pct: float
    unblocks: tuple[str, ...]
    still_blocked_by: tuple[str, ...]


def ship_percentage(items: Iterable[tuple[float, str]]) -> float:
    """100 * weight of PASS / total weight, over (weight, status) pairs (0 when empty)."""
    items = list(items)
    total = sum(w for w, _ in items)
    if total <= 0:
        return 0.0
    return 100.0 * (sum(w for w, s in items if s == PASS) / total)  # ratio first: all-PASS is exactly 100


def stale_reason(entry: dict, run: dict | None, spec_sha256: str | None = None,
                 checkout: dict | None = None) -> str:
    """Why `entry` is not evidence about what is being judged, else "": it comes from another
    commit or profile than the latest run, was judged against another spec (thresholds may have
    changed; with a `checkout`, a missing spec_sha256 or commit counts as another), ran on an uncommitted tree, on another
    commit than the `checkout` being gated, or its run's spec is not the `checkout`'s spec_sha256."""
    reasons = []
    if run and entry.get("commit") != run.get("commit"):
        reasons.append(f"commit {str(entry.get('commit'))[:12]} (latest {str(run.get('commit'))[:12]})")
    if run and entry.get("profile") != run.get("profile"):
        reasons.append(f"profile {entry.get('profile')} (latest {run.get('profile')})")
    if checkout is not None and not entry.get("commit"):  # judging a checkout: no commit is no proof
        reasons.append("no commit recorded")
    if spec_sha256 and entry.get("spec_sha256") and entry["spec_sha256"] != spec_sha256:
        reasons.append("judged against another version of the spec")
    elif spec_sha256 and checkout is not None and not entry.get("spec_sha256"):  # nor is a missing hash
        reasons.append("no spec_sha256 recorded")
    if checkout and checkout.get("spec_sha256") and run and run.get("spec_sha256") != checkout["spec_sha256"]:
        reasons.append("the latest run was judged against another version of the spec")
    if entry.get("dirty"):
        reasons.append("ran on an uncommitted working tree")
    if checkout and checkout.get("commit") not in (None, UNKNOWN_COMMIT) and entry.get("commit") != checkout["commit"]:
        reasons.append(f"commit {str(entry.get('commit'))[:12]} is not the checkout {checkout['commit'][:12]}")
    return ", ".join(dict.fromkeys(reasons))


def own_outcomes(spec: Spec, results: Results | None, bound_ids: set[str] | None = None,
                 reject_stale: bool = False, checkout: dict | None = None,
                 spec_sha256: str | None = None) -> dict[str, tuple[str, dict | None, str]]:
    """Per criterion: (own outcome, entry, stale reason). A stale entry is NOT RUN if rejected. An entry
    judged against another spec than `spec_sha256` (default the spec's own) is stale."""
    entries = results.criteria if results else {}
    run = results.run if results else None
    out = {}
    for cid in spec.criteria:
        entry = entries.get(cid)
        if entry is None:
            missing = NO_TEST if bound_ids is not None and cid not in bound_ids else NOT_RUN
            out[cid] = (missing, None, "")
            continue
        stale = stale_reason(entry, run, spec_sha256 or spec.sha256, checkout)
        own = NOT_RUN if stale and reject_stale else entry["outcome"]
        out[cid] = (own, entry, stale)
    return out


def resolve_statuses(spec: Spec, own: dict[str, tuple[str, dict | None, str]]) -> dict[str, CriterionStatus]:
    """Apply the prerequisite DAG: a criterion whose prerequisite did not PASS is BLOCKED."""
    resolved: dict[str, CriterionStatus] = {}

    def resolve(cid: str) -> CriterionStatus:
        if cid in resolved:
            return resolved[cid]
        criterion = spec.criteria[cid]
        outcome, entry, stale = own[cid]
        prereqs = [resolve(dep) for dep in criterion.depends_on]
        blocked_by = tuple(p.criterion.id for p in prereqs if p.status != PASS)
        roots: list[str] = []
        for p in prereqs:
            if p.status == BLOCKED:
                roots += [r for r in p.root_blockers if r not in roots]
            elif p.status != PASS and p.criterion.id not in roots:
                roots.append(p.criterion.id)
        status = BLOCKED if blocked_by else outcome
        resolved[cid] = CriterionStatus(criterion, status, outcome, entry, blocked_by, tuple(roots), stale)
        return resolved[cid]

    for cid in spec.criteria:
        resolve(cid)
    return {cid: resolved[cid] for cid in spec.criteria}


def score_models(spec: Spec, statuses: dict[str, CriterionStatus], count_stale: bool = False) -> dict[str, ModelScore]:
    """Ship-% and status counts per model; None ship-% for a model with no executed result. A
    stale PASS counts only with `count_stale` (the gate's --allow-stale)."""
    scores = {}
    for key, model in spec.models.items():
        mine = [statuses[c.id] for c in spec.for_model(key)]
        counts = {s: sum(1 for st in mine if st.status == s) for s in STATUSES}
        ran = any(st.own in _EXECUTED for st in mine)
        total = sum(st.criterion.weight for st in mine)
        stale_of = (lambda st: False) if count_stale else (lambda st: bool(st.stale))
        passed = sum(st.criterion.weight for st in mine if st.status == PASS and not stale_of(st))
        stale = sum(st.criterion.weight for st in mine if st.status == PASS and stale_of(st))
        pct = ship_percentage((st.criterion.weight, NOT_RUN if stale_of(st) else st.status) for st in mine) if ran else None
        scores[key] = ModelScore(model, pct, passed, total, counts, stale)
    return scores


def score(spec: Spec, results: Results | None, bound_ids: set[str] | None = None,
          reject_stale: bool = False, checkout: dict | None = None, count_stale: bool = False) -> Scorecard:
    """The scorecard of `results` against `spec` (bound_ids tells NOT RUN from NO TEST); `checkout`
    ({"commit": ...}) is the code being judged, so results from other code are marked stale."""
    statuses = resolve_statuses(spec, own_outcomes(spec, results, bound_ids, reject_stale, checkout))
    return Scorecard(spec, statuses, score_models(spec, statuses, count_stale))


def _model_pct(spec: Spec, statuses: dict[str, CriterionStatus], model: str) -> float:
    """Ship-% of `model` counting current PASS results only."""
    return ship_percentage((statuses[c.id].criterion.weight, NOT_RUN if statuses[c.id].stale else statuses[c.id].status)
                           for c in spec.for_model(model))


def _pct_if_passed(card: Scorecard, cid: str) -> tuple[float, dict[str, CriterionStatus]]:
    """The model's ship-% (and new statuses) if `cid`'s own outcome became PASS."""
    own = {k: (s.own, s.entry, s.stale) for k, s in card.statuses.items()}
    own[cid] = (PASS, own[cid][1], "")
    statuses = resolve_statuses(card.spec, own)
    return _model_pct(card.spec, statuses, card.spec.criteria[cid].model), statuses


def opportunities(card: Scorecard) -> list[Opportunity]:
    """Open criteria ranked by the ship-% their model gains if they pass (unblocking counted)."""
    ranked = []
    for cid, st in card.statuses.items():
        if st.own == PASS and not st.stale:
            continue
        model = st.criterion.model
        before = _model_pct(card.spec, card.statuses, model)
        after, statuses = _pct_if_passed(card, cid)
        unblocks = tuple(k for k, s in statuses.items() if s.status == PASS and card.statuses[k].status == BLOCKED)
        ranked.append(Opportunity(cid, model, after - before, unblocks, st.blocked_by))
    return sorted(ranked, key=lambda o: (-o.gain_pct, o.cid))

