"""What a measurement can resolve: a pass-rate band narrower than its noise decides by chance.

A pass rate p on n samples has standard error 100*sqrt(p(1-p)/n) points (3.9 points at p = 0.5,
n = 164). A band (an absolute-difference threshold in points, or a change rule's max_regression)
below about two standard errors cannot tell a real change from sampling noise; `spec check` warns,
naming the id, and suggests the minimum band and the sample count the band would need.
"""

from __future__ import annotations

import math

from shiptwo import stats
from shiptwo.harness.results import format_number
from shiptwo.harness.spec import Criterion, Spec
from shiptwo.paths import PROFILES

PERCENT_UNITS = ("%", "points", "pts", "percentage points")  # figures on the 0..100 pass-rate scale
RESOLVING_STDERRS = 2.0  # a band must span this many standard errors to be resolvable
WORST_CASE_P = 0.5  # the pass rate with the largest standard error


def min_band(n: int, p: float = WORST_CASE_P) -> float:
    """The narrowest pass-rate band (points) that n samples resolve: two standard errors at p."""
    return RESOLVING_STDERRS * 100.0 * stats.proportion_stderr(p, n)


def samples_needed(band: float, p: float = WORST_CASE_P) -> int:
    """The sample count at which `band` points spans two standard errors at p."""
    return math.ceil((RESOLVING_STDERRS * 100.0 / band) ** 2 * p * (1 - p))


def _counts(criterion: Criterion) -> dict[str, int]:
    """profile -> sample count the criterion declares (empty without `sample_count`)."""
    count = getattr(criterion, "sample_count", None)
    if count is None:
        return {}
    return {p: int(count[p]) for p in PROFILES if p in count} if isinstance(count, dict) else {p: int(count) for p in PROFILES}


def _bands(criterion: Criterion, profile: str) -> list[tuple[str, float]]:
    """(what, width in points) of each band the criterion declares on the pass-rate scale under `profile`."""
    if criterion.unit not in PERCENT_UNITS:
        return []
    bands = []
    level = criterion.threshold_for(profile)
    if criterion.comparison == "<=" and criterion.unit != "%":  # a "<=" on a difference in points: a band
        bands.append(("threshold", level))
    change = getattr(criterion, "change", None)
    if change is not None and getattr(change, "relative", False):
        bands.append((f"change.max_regression (relative, {format_number(change.max_regression)} of {format_number(level)})",
                      float(change.max_regression) * abs(level)))
    elif change is not None:
        bands.append(("change.max_regression", float(change.max_regression)))
    return bands


def resolution_warnings(spec: Spec) -> list[str]:
    """One line per band tighter than its criterion's sample count resolves: `file:line: id: warning: ...`."""
    found: dict[tuple[str, str, float, int], list[str]] = {}
    for c in spec.criteria.values():
        for profile, n in _counts(c).items():
            for what, band in _bands(c, profile):
                if band < min_band(n):
                    found.setdefault((c.id, what, band, n), []).append(profile)
    warnings = []
    for (cid, what, band, n), profiles in found.items():
        floor = min_band(n)
        more = f" or at least {samples_needed(band)} samples" if band > 0 else ""
        warnings.append(
            f"{spec.path}:{spec.criteria[cid].line}: {cid}: warning: {what} {format_number(band)} points is tighter than "
            f"{n} samples resolve (profile {', '.join(profiles)}: 2 standard errors = {floor:.1f} points at p = 0.5); "
            f"use a band of at least {floor:.1f} points{more}, or judge with a paired test")
    return warnings
