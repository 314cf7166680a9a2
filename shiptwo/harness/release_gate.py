"""The release gate: does each selected model meet its release rule on the recorded results?

A model passes when its ship-% reaches `min_ship_pct` and every `required` criterion PASSes.
Results from another commit or profile than the latest run count as not passed (a release is
decided on one run's evidence) unless `allow_stale` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shiptwo.errors import ShiptwoError
from shiptwo.harness.results import Results
from shiptwo.harness.scoring import CriterionStatus, score
from shiptwo.harness.spec import Spec

from shiptwo.harness.results import BLOCKED, NOT_RUN, NO_TEST, PASS, SKIPPED


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
    ship_pct: float | None
    min_ship_pct: float
    released: bool
    holdbacks: list[Holdback] = field(default_factory=list)


def _why(st: CriterionStatus) -> str:
    entry = st.entry or {}
    if st.status == BLOCKED:
        return f"blocked by {', '.join(st.blocked_by)} (own outcome {st.own})"
    if st.stale:
        return f"stale result: {st.stale}"
    if st.status == SKIPPED:
        return f"skipped: {entry.get('reason', '')}"
    if st.status in (NOT_RUN, NO_TEST):
        return "no result in the results file"
    return entry.get("message") or st.status


def decide(spec: Spec, results: Results, models: list[str] | None = None, allow_stale: bool = False,
           checkout: dict | None = None) -> list[ModelDecision]:
    """One decision per selected model (all models of the spec by default); with `checkout`
    ({"commit": ...}), results from other code count as stale."""
    selected = models or list(spec.models)
    for key in selected:
        if key not in spec.models:
            raise ShiptwoError(f"{spec.path}: unknown model {key!r} (spec has {', '.join(spec.models)})")
    card = score(spec, results, reject_stale=not allow_stale, checkout=checkout)
    decisions = []
    for key in selected:
        model, ms = spec.models[key], card.models[key]
        mine = [card.statuses[c.id] for c in spec.for_model(key)]
        open_ = [st for st in mine if st.status != PASS]
        pct_ok = ms.ship_pct is not None and ms.ship_pct >= model.min_ship_pct
        missing_required = [st for st in open_ if st.criterion.id in model.required]
        holding = open_ if not pct_ok else missing_required
        holdbacks = [Holdback(st.criterion.id, st.status, _why(st)) for st in holding]
        decisions.append(ModelDecision(key, model.name, ms.ship_pct, model.min_ship_pct, pct_ok and not missing_required, holdbacks))
    return decisions


def format_decisions(decisions: list[ModelDecision], spec: Spec) -> str:
    """Human-readable gate output: one verdict line per model, one line per holdback."""
    lines = []
    for d in decisions:
        pct = "not run" if d.ship_pct is None else f"{d.ship_pct:.1f}%"
        verdict = "RELEASE" if d.released else "HOLD"
        lines.append(f"{d.key} ({d.name}): {verdict} — ship-% {pct}, needs ≥ {d.min_ship_pct:.1f}%")
        for h in d.holdbacks:
            required = " [required]" if h.cid in spec.models[d.key].required else ""
            lines.append(f"  {h.cid} {h.status}{required}: {h.why}")
    return "\n".join(lines)
