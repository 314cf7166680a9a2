"""Change against a baseline run, per criterion, with a test that says whether it is real.

Pass/fail samples that pair on (id, prompt hash) get an exact McNemar test, valued samples a
Wilcoxon signed-rank test with a paired bootstrap interval, repeated timings a Mann-Whitney test;
Holm corrects across the criteria tested. A criterion is "not comparable" when the profiles, the
prompt sets or (for environment-dependent criteria) the environment fingerprints differ. Change
rules (`change.max_regression`, `blocking`) come from the spec; the gate holds on a blocking one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shiptwo import stats
from shiptwo.errors import ShiptwoError
from shiptwo.harness.evidence import read_samples, sample_value
from shiptwo.harness.results import Results, as_number, format_number
from shiptwo.harness.spec import Criterion, Spec

BETTER = "better"
WORSE = "worse"
NO_CHANGE = "no significant change"
UNTESTED = "changed, untested"  # one measurement on each side: nothing to test the change against
NOT_COMPARABLE = "not comparable"
VERDICTS = (BETTER, WORSE, NO_CHANGE, UNTESTED, NOT_COMPARABLE)
ALPHA = 0.05
ENVIRONMENT_UNITS = ("tok/s", "seconds", "s", "ms")  # figures that depend on the machine and libraries
REPEATS_KEY = "repeats"  # evidence key: the list of repeated measurements behind a timing's median
FINGERPRINT_IGNORED = ("shiptwo_commit",)  # the code under comparison differs by design
MCNEMAR, WILCOXON, MANN_WHITNEY = "McNemar exact", "Wilcoxon signed-rank", "Mann-Whitney U"


@dataclass
class Change:
    """One criterion's change from the baseline to the current run."""

    cid: str
    verdict: str
    unit: str = ""
    test: str = ""
    p: float | None = None
    p_holm: float | None = None
    effect: float | None = None  # current - baseline, in `effect_unit`
    effect_unit: str = ""
    interval: tuple[float, float] | None = None  # 95% interval of the effect where one is computed
    n: int | None = None  # pairs (paired tests) or measurements (current + baseline)
    before: float | None = None
    after: float | None = None
    regression: float | None = None  # how much worse `measured` got, in the unit (negative: improved)
    allowed: float | None = None  # change.max_regression resolved to the unit
    blocking: bool = False
    reason: str = ""
    _direction: int = field(default=0, repr=False)  # +1 current better, -1 worse, 0 none (before Holm)

    @property
    def rule_violated(self) -> bool:
        """A significant regression larger than the change rule allows."""
        return self.verdict == WORSE and self.allowed is not None and self.regression is not None and self.regression > self.allowed

    @property
    def blocks(self) -> bool:
        return self.blocking and self.rule_violated

    def to_json(self) -> dict:
        return {"id": self.cid, "verdict": self.verdict, "unit": self.unit, "test": self.test, "p": self.p,
                "p_holm": self.p_holm, "effect": self.effect, "effect_unit": self.effect_unit,
                "interval": list(self.interval) if self.interval else None, "n": self.n, "before": self.before,
                "after": self.after, "regression": self.regression, "allowed": self.allowed,
                "blocking": self.blocking, "rule_violated": self.rule_violated, "blocks": self.blocks,
                "reason": self.reason, "text": change_text(self)}


# --- reading entries defensively ---------------------------------------------------------------


def change_rule(criterion: Criterion) -> tuple[float | dict | None, bool]:
    """(max_regression, blocking) of the criterion's change rule, max_regression as a number in the
    unit or {"relative": fraction}; (None, False) without a rule."""
    rule = getattr(criterion, "change", None)
    if rule is None:
        return None, False
    reg = rule.max_regression
    return ({"relative": reg} if rule.relative else reg), rule.blocking


def samples_path(entry: dict) -> str | None:
    """The per-sample evidence file an entry names (`samples`: a path or {path, sha256})."""
    value = entry.get("samples")
    if isinstance(value, dict):
        value = value.get("path")
    return value if isinstance(value, str) and value else None


def repeats(entry: dict) -> list[float] | None:
    """The repeated measurements an entry carries (evidence `repeats`), when there are at least two."""
    value = entry.get(REPEATS_KEY, (entry.get("evidence") or {}).get(REPEATS_KEY))
    if not isinstance(value, list):
        return None
    numbers = [as_number(v) for v in value]
    return numbers if len(numbers) >= 2 and all(v is not None for v in numbers) else None


def fingerprint(results: Results, entry: dict) -> dict | None:
    """The environment an entry was measured in (its own, else its run's), minus the commit."""
    env = entry.get("environment") or results.run.get("environment")
    if not isinstance(env, dict):
        return None
    return {k: v for k, v in env.items() if k not in FINGERPRINT_IGNORED}


def fingerprint_differences(a: dict, b: dict) -> list[str]:
    """'key: baseline vs current' for every fingerprint field that differs (nested one level)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{key}.{k}: {va.get(k)} vs {vb.get(k)}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif va != vb:
            out.append(f"{key}: {va} vs {vb}")
    return out


# --- direction -----------------------------------------------------------------------------


def _badness(values: np.ndarray, comparison: str, threshold: float | None) -> np.ndarray:
    """Values turned into 'larger is worse': a '>=' figure negated, an '==' figure as distance to its target."""
    if comparison == ">=":
        return -values
    if comparison == "==" and threshold is not None:
        return np.abs(values - threshold)
    return values


def _regression(criterion: Criterion, before: float, after: float, threshold: float | None) -> float:
    b, a = _badness(np.array([before, after]), criterion.comparison, threshold)
    return float(a - b)


def _allowed(max_regression, before: float | None) -> float | None:
    if max_regression is None:
        return None
    if isinstance(max_regression, dict):
        return None if before is None else float(max_regression["relative"]) * abs(before)
    return float(max_regression)


# --- the tests -------------------------------------------------------------------------------


def _keyed(samples: list[dict]) -> dict[tuple[str, str], dict]:
    """Samples by their pairing key (id, prompt SHA-256)."""
    return {(s["id"], s["prompt_sha256"]): s for s in samples}


def _paired(change: Change, criterion: Criterion, base: list[dict], cur: list[dict], threshold: float | None) -> None:
    """Samples paired on (id, prompt hash): exact McNemar on pass/fail, Wilcoxon on values."""
    kb, kc = _keyed(base), _keyed(cur)
    if set(kb) != set(kc):
        ids_b, ids_c = {k[0] for k in kb}, {k[0] for k in kc}
        changed = len({k[0] for k in set(kb) ^ set(kc)} & ids_b & ids_c)
        change.verdict = NOT_COMPARABLE
        change.reason = (f"prompt sets differ: {len(ids_b ^ ids_c)} sample ids in only one run, "
                         f"{changed} prompts changed (of {len(kb)} baseline, {len(kc)} current)")
        return
    keys = sorted(kb)
    change.n = len(keys)
    binary = {"outcome" in s for s in (*base, *cur)}
    if len(binary) > 1:
        change.verdict, change.reason = NOT_COMPARABLE, "pass/fail samples on one side, values on the other"
        return
    if binary == {True}:
        a = np.array([sample_value(kb[k]) == 1.0 for k in keys])  # pass -> 1, fail -> 0
        c = np.array([sample_value(kc[k]) == 1.0 for k in keys])
        lost, gained = int(np.sum(a & ~c)), int(np.sum(~a & c))
        change.test, change.p = MCNEMAR, stats.mcnemar_exact(lost, gained)
        change.effect, change.effect_unit = 100.0 * (c.mean() - a.mean()), "pass-rate points"
        change.reason = f"{lost} samples lost, {gained} gained"
        change._direction = int(np.sign(gained - lost))
        if len(keys) >= 2 and lost + gained:
            lo, hi = stats.paired_bootstrap_ci(c.astype(float), a.astype(float))
            change.interval = (100.0 * lo, 100.0 * hi)
        return
    a = np.array([float(kb[k]["value"]) for k in keys])
    c = np.array([float(kc[k]["value"]) for k in keys])
    change.test, change.p = WILCOXON, stats.wilcoxon_signed_rank(c, a)
    change.effect, change.effect_unit = float(np.mean(c - a)), f"{criterion.unit} (mean per sample)"
    if len(keys) >= 2:
        change.interval = stats.paired_bootstrap_ci(c, a)
    worse = float(np.mean(_badness(c, criterion.comparison, threshold) - _badness(a, criterion.comparison, threshold)))
    change._direction = -int(np.sign(worse))


def _unpaired(change: Change, criterion: Criterion, base: list[float], cur: list[float], threshold: float | None) -> None:
    """Repeated measurements of two runs (timings): Mann-Whitney U, effect on the medians."""
    change.test, change.p = MANN_WHITNEY, stats.mann_whitney_u(cur, base)
    change.n = len(base) + len(cur)
    change.effect, change.effect_unit = float(np.median(cur) - np.median(base)), f"{criterion.unit} (median)"
    worse = float(np.median(_badness(np.array(cur), criterion.comparison, threshold))
                  - np.median(_badness(np.array(base), criterion.comparison, threshold)))
    change._direction = -int(np.sign(worse))
    change.reason = f"{len(base)} vs {len(cur)} repeated measurements"


def compare_criterion(criterion: Criterion, current: Results, baseline: Results) -> Change:
    """The change of one criterion, before Holm (its verdict then rests on the unadjusted test)."""
    max_regression, blocking = change_rule(criterion)
    change = Change(criterion.id, NO_CHANGE, unit=criterion.unit, blocking=blocking)
    old, new = baseline.criteria.get(criterion.id), current.criteria.get(criterion.id)
    if old is None or new is None:
        change.verdict, change.reason = NOT_COMPARABLE, "no result in the " + ("baseline" if old is None else "current run")
        return change
    change.before, change.after = as_number(old.get("measured")), as_number(new.get("measured"))
    if old.get("profile") != new.get("profile"):
        change.verdict, change.reason = NOT_COMPARABLE, f"profile {old.get('profile')} vs {new.get('profile')}"
        return change
    if criterion.unit in ENVIRONMENT_UNITS:
        fb, fc = fingerprint(baseline, old), fingerprint(current, new)
        if fb is None or fc is None:
            change.verdict = NOT_COMPARABLE
            change.reason = f"no environment fingerprint in the {'baseline' if fb is None else 'current run'}"
            return change
        diff = fingerprint_differences(fb, fc)
        if diff:
            change.verdict, change.reason = NOT_COMPARABLE, "environment differs: " + "; ".join(diff[:3])
            return change
    threshold = as_number(new.get("threshold"))
    if change.before is not None and change.after is not None:
        change.regression = _regression(criterion, change.before, change.after, threshold)
        change.allowed = _allowed(max_regression, change.before)
    sb, sc = samples_path(old), samples_path(new)
    rb, rc = repeats(old), repeats(new)
    try:
        if sb and sc:
            _paired(change, criterion, read_samples(sb), read_samples(sc), threshold)
            return change
    except ShiptwoError as exc:
        change.verdict, change.reason = NOT_COMPARABLE, f"samples unreadable: {exc}"
        return change
    if rb and rc:
        _unpaired(change, criterion, rb, rc, threshold)
        return change
    if change.before is None or change.after is None:
        change.verdict, change.reason = NOT_COMPARABLE, "no measured value on one side"
    elif change.before != change.after:
        change.verdict, change.effect, change.effect_unit = UNTESTED, change.after - change.before, criterion.unit
        change.reason = "one measurement on each side, no samples or repeats to test the change"
    return change


def compare(spec: Spec, current: Results, baseline: Results, alpha: float = ALPHA) -> list[Change]:
    """Every criterion's change, Holm-adjusted across the criteria that were tested."""
    changes = [compare_criterion(c, current, baseline) for c in spec.criteria.values()]
    tested = [ch for ch in changes if ch.p is not None and ch.verdict != NOT_COMPARABLE]
    for ch, adjusted in zip(tested, stats.holm([ch.p for ch in tested])):
        ch.p_holm = adjusted
        if adjusted < alpha and ch._direction:
            ch.verdict = BETTER if ch._direction > 0 else WORSE
        else:
            ch.verdict = NO_CHANGE
    return changes


def blocking_regressions(changes: list[Change]) -> list[Change]:
    """Significant regressions beyond a blocking change rule: the gate holds on each."""
    return [ch for ch in changes if ch.blocks]


def change_text(ch: Change) -> str:
    """One cell: verdict, effect with its interval, p (Holm), or the reason it is not comparable."""
    if ch.verdict == NOT_COMPARABLE:
        return f"not comparable ({ch.reason})"
    parts = [ch.verdict]
    if ch.effect is not None:
        effect = f"{ch.effect:+.3g} {ch.effect_unit}"
        if ch.interval:
            effect += f" [{ch.interval[0]:+.3g}, {ch.interval[1]:+.3g}]"
        parts.append(effect)
    if ch.p is not None:
        holm = f" (Holm {ch.p_holm:.3g})" if ch.p_holm is not None else ""
        parts.append(f"p={ch.p:.3g}{holm}, {ch.test}, n={ch.n}")
    if ch.rule_violated:
        parts.append(f"regression {format_number(ch.regression)} > allowed {format_number(ch.allowed)}"
                     + (" [blocking]" if ch.blocking else ""))
    return "; ".join(parts)
