"""Boundary cases for every comparison of the spec's judge (issue 10's mutation check): a figure
exactly at its threshold meets `<=`, `>=` and `==`; the next float beyond it on the wrong side does
not; NaN and a missing figure never do. Checked where a verdict is made (Leg.holds), where the
`criterion` fixture records one (CriterionCheck.evaluate), where the gate re-derives one
(rederive.outcome_disagreements), on interval bounds, and for every leg of the real spec at every
profile. Turning `<=` into `<` (or `>=` into `>`, `==` into a tolerance) fails these tests.
"""

from __future__ import annotations

import math

import pytest

from shiptwo.harness.rederive import outcome_disagreements
from shiptwo.harness.results import CriterionCheck
from shiptwo.harness.spec import Criterion, Leg, load_spec
from shiptwo.paths import PROFILES

COMPARISONS = ("<=", ">=", "==")
THRESHOLDS = (0.0, 30.0, 0.05, -1.5, 1e-12, 1e6)


def _above(x: float) -> float:
    return math.nextafter(x, math.inf)


def _below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def _expected(comparison: str, side: str) -> bool:
    """Whether a value at / just above / just below the threshold meets the comparison."""
    return {"at": True, "above": comparison == ">=", "below": comparison == "<="}[side]


def _value(threshold: float, side: str) -> float:
    return {"at": threshold, "above": _above(threshold), "below": _below(threshold)}[side]


@pytest.mark.parametrize("comparison", COMPARISONS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("side", ("at", "above", "below"))
def test_leg_holds_at_and_around_the_threshold(comparison, threshold, side):
    leg = Leg("m", comparison, threshold, "u")
    assert leg.holds(_value(threshold, side), "default") is _expected(comparison, side)
    if side == "at" and threshold.is_integer():
        assert leg.holds(int(threshold), "default")  # an integer count at a float threshold


@pytest.mark.parametrize("comparison", COMPARISONS)
def test_nan_and_missing_never_hold(comparison):
    leg = Leg("m", comparison, 0.0, "u")
    assert not leg.holds(float("nan"), "default") and not leg.holds(None, "default")


@pytest.mark.parametrize("comparison", COMPARISONS)
def test_per_profile_thresholds_are_judged_at_their_own_boundary(comparison):
    leg = Leg("m", comparison, {"smoke": 1.0, "default": 10.0, "full": 30.0}, "u")
    for profile, limit in (("smoke", 1.0), ("default", 10.0), ("full", 30.0)):
        assert leg.holds(limit, profile)
        assert leg.holds(_above(limit), profile) is (comparison == ">=")
        assert leg.holds(_below(limit), profile) is (comparison == "<=")


@pytest.mark.parametrize("comparison", COMPARISONS)
@pytest.mark.parametrize("judged_on", ("lower_95", "upper_95"))
def test_interval_bounds_are_judged_at_the_threshold(comparison, judged_on):
    leg = Leg("m", comparison, 30.0, "u", judged_on)
    for side in ("at", "above", "below"):
        bound = _value(30.0, side)
        interval = (bound, 99.0) if judged_on == "lower_95" else (-99.0, bound)
        value = leg.judged_value(50.0, interval)
        assert value == bound and leg.holds(value, "default") is _expected(comparison, side)
    assert leg.judged_value(30.0, None) is None and not leg.holds(leg.judged_value(30.0, None), "default")


def _criterion(comparison: str, threshold: float, extra: Leg | None = None) -> Criterion:
    return Criterion(id="AC-T-001", model="model2", title="boundary", metric="m", comparison=comparison,
                     threshold=threshold, unit="u", root_cause="packaging", extra_legs=(extra,) if extra else ())


@pytest.mark.parametrize("comparison", COMPARISONS)
@pytest.mark.parametrize("side", ("at", "above", "below"))
def test_the_criterion_fixture_records_the_boundary_verdict(comparison, side):
    value = _value(30.0, side)
    check = CriterionCheck(_criterion(comparison, 30.0), "default")
    assert check.evaluate(value) is _expected(comparison, side)
    assert check.legs[0]["met"] is _expected(comparison, side)
    # an extra leg at its own boundary, beside a primary leg that holds
    extra = CriterionCheck(_criterion("==", 0.0, Leg("k", comparison, 0.05, "nats")), "default")
    assert extra.evaluate(0.0, legs={"k": _value(0.05, side)}) is _expected(comparison, side)


@pytest.mark.parametrize("comparison", COMPARISONS)
@pytest.mark.parametrize("side", ("at", "above", "below"))
def test_the_gate_rederives_the_boundary_verdict(comparison, side):
    crit = _criterion(comparison, 30.0, Leg("k", comparison, 0.05, "nats", "lower_95"))
    value, bound = _value(30.0, side), _value(0.05, side)
    entry = {"measured": value, "legs": [{"metric": "m", "measured": value},
                                         {"metric": "k", "measured": 0.5, "interval": [bound, 0.9]}]}
    problems = outcome_disagreements(crit, entry, "default")
    assert (problems == []) is _expected(comparison, side), problems
    if not _expected(comparison, side):
        assert len(problems) == 2 and all("does not meet threshold" in p for p in problems)


def _spec_legs():
    spec = load_spec()
    for crit in spec.criteria.values():
        for leg in crit.legs:
            for profile in PROFILES:
                if isinstance(leg.threshold, dict) and profile not in leg.threshold:
                    continue
                yield pytest.param(leg, profile, id=f"{crit.id}-{leg.metric}-{profile}")


@pytest.mark.parametrize(("leg", "profile"), list(_spec_legs()))
def test_every_leg_of_the_spec_at_its_threshold(leg, profile):
    limit = leg.threshold_for(profile)
    assert leg.comparison in COMPARISONS
    assert leg.holds(limit, profile)
    assert leg.holds(_above(limit), profile) is (leg.comparison == ">=")
    assert leg.holds(_below(limit), profile) is (leg.comparison == "<=")
    assert not leg.holds(float("nan"), profile)
