"""The terms a baseline entry was judged under: the thresholds its run recorded, and today's beside them.

A baseline is shown as its run judged it, never re-judged on today's spec: a threshold loosened
since would otherwise read as a model that improved (FAIL -> PASS on the same figure), one
tightened as a forged PASS. Where the terms differ the report says so, and what the baseline's own
figures give under today's terms, so a change of threshold is never taken for a change of the model.
"""

from __future__ import annotations

from dataclasses import replace

from shiptwo.errors import ShiptwoError
from shiptwo.harness.rederive import outcome_disagreements
from shiptwo.harness.results import FAIL, PASS, as_number, format_number
from shiptwo.harness.spec import POINT, Criterion, Leg

Terms = tuple[tuple[str, str, float, str], ...]  # per leg, primary first: (metric, comparison, threshold, judged_on)


def recorded_terms(criterion: Criterion, entry: dict) -> Terms | None:
    """The legs' terms as the entry recorded them (a record without legs: its top-level comparison and
    threshold), else None."""
    terms = []
    for leg in entry.get("legs") or []:
        threshold = as_number(leg.get("threshold")) if isinstance(leg, dict) else None
        if threshold is None or leg.get("comparison") not in ("<=", ">=", "=="):
            return None
        terms.append((str(leg.get("metric")), leg["comparison"], threshold, str(leg.get("judged_on") or POINT)))
    threshold = as_number(entry.get("threshold"))
    if not terms and threshold is not None and entry.get("comparison") in ("<=", ">=", "=="):
        terms.append((criterion.metric, entry["comparison"], threshold, criterion.judged_on))
    return tuple(terms) or None


def today_terms(criterion: Criterion, profile: str) -> Terms | None:
    """The current spec's terms for `profile` (None when it has no threshold for that profile)."""
    try:
        return tuple((g.metric, g.comparison, g.threshold_for(profile, criterion.id), g.judged_on) for g in criterion.legs)
    except ShiptwoError:
        return None


def changed_terms(criterion: Criterion, entry: dict, profile: str) -> tuple[Terms, Terms | None] | None:
    """(recorded, today's) where the entry recorded terms that differ from today's, else None. An entry
    without legs (a test that stopped before measuring) recorded only the primary leg's, so only that is compared."""
    was, now = recorded_terms(criterion, entry), today_terms(criterion, profile)
    if now is not None and not entry.get("legs"):
        now = now[:1]
    return None if was is None or was == now else (was, now)


def terms_text(terms: Terms | None) -> str:
    """`>= 20`, `>= 20; latency <= 3`, `lower_95 >= 80`: the primary leg bare, extra legs by metric."""
    if not terms:
        return "none recorded"
    parts = []
    for i, (metric, comparison, threshold, judged_on) in enumerate(terms):
        on = "" if judged_on == POINT else f"{judged_on} "
        parts.append(f"{metric + ' ' if i else ''}{on}{comparison} {format_number(threshold)}")
    return "; ".join(parts)


def as_recorded(criterion: Criterion, terms: Terms) -> Criterion:
    """`criterion` with the recorded terms in place of today's: what re-derives a baseline's PASS."""
    (metric, comparison, threshold, judged_on), *extra = terms
    return replace(criterion, metric=metric, comparison=comparison, threshold=threshold, judged_on=judged_on,
                   extra_legs=tuple(Leg(m, c, t, criterion.unit, j) for m, c, t, j in extra))


def under_today(criterion: Criterion, entry: dict, profile: str) -> str | None:
    """PASS or FAIL: the entry's recorded figures under today's terms; None when they cannot say (not a
    PASS or FAIL, no leg records, or a FAIL no recorded leg explains)."""
    outcome, legs = entry.get("outcome"), entry.get("legs") or []
    if outcome not in (PASS, FAIL) or not legs or not all(isinstance(g, dict) for g in legs):
        return None
    if outcome == FAIL and all(g.get("met", True) for g in legs):  # it failed on something besides its legs
        return None
    try:
        problems = outcome_disagreements(criterion, entry, profile)
    except ShiptwoError:
        return None
    return FAIL if problems else PASS
