"""The spec: models and acceptance criteria loaded from YAML, validated with line numbers.

The spec holds criteria, never status (status comes only from executed tests). A criterion is
judged on one or more legs (metric, comparison, threshold), all of which must hold; it may hand
named parameters to the measuring code and declare how its figure follows from a per-sample
file. The schema rules live in `spec_schema`; this module builds the data classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_bytes
from shiptwo.harness.bindings import AC_MARKER, Binding, scan_bindings  # noqa: F401 (AC_MARKER: plugin's name for the mark)
from shiptwo.harness.spec_schema import (  # noqa: F401 (the spec vocabulary, re-exported for its users)
    COMPARISONS, DEFAULT_RELEASE_PROFILES, JUDGED_ON, MODELS, REQUIRED_ALL, ROOT_CAUSE_CLASSES, SAMPLE_STATISTICS,
    Defect, SchemaValidator, is_profile_mapping, line_of, parse_yaml,
)
from shiptwo.paths import ACCEPTANCE_DIR, spec_path

DEFAULT_WEIGHT = 1.0
POINT = "point"


# --- data classes ---------------------------------------------------------------------------


def _per_profile(value, profile: str, cid: str, what: str):
    if isinstance(value, dict):
        if profile not in value:
            raise ShiptwoError(f"{cid}: no {what} for profile {profile!r}")
        return value[profile]
    return value


@dataclass(frozen=True)
class Leg:
    """One measurement a criterion is judged on: metric, comparison and (per-profile) threshold."""

    metric: str
    comparison: str
    threshold: float | dict[str, float]
    unit: str
    judged_on: str = POINT  # point | lower_95 | upper_95 (a bound of the figure's 95% interval)

    def threshold_for(self, profile: str, cid: str = "") -> float:
        return float(_per_profile(self.threshold, profile, cid or self.metric, "threshold"))

    def judged_value(self, measured: float | None, interval: tuple[float, float] | None) -> float | None:
        """The value compared with the threshold: the point figure or the named interval bound."""
        if self.judged_on == POINT:
            return measured
        if interval is None:
            return None
        return float(interval[0] if self.judged_on == "lower_95" else interval[1])

    def holds(self, value: float | None, profile: str) -> bool:
        """True when `value` satisfies the comparison; None and NaN never do."""
        if value is None or math.isnan(value):
            return False
        limit = self.threshold_for(profile)
        if self.comparison == "<=":
            return value <= limit
        if self.comparison == ">=":
            return value >= limit
        return value == limit


@dataclass(frozen=True)
class Change:
    """Issue 13: how far the figure may regress against a baseline (absolute or relative)."""

    max_regression: float
    relative: bool = False
    blocking: bool = False


@dataclass(frozen=True)
class SamplesRule:
    """How the judged figure follows from the per-sample evidence file, and who can re-execute a sample."""

    statistic: str  # pass_pct | pass_fraction | mean | sum
    metric: str = ""  # the leg it yields ("" = the primary)
    recheck: str = ""  # a kind registered in harness.verifiers for `shiptwo gate --recheck`


@dataclass(frozen=True)
class Model:
    """A model to release and its release rule: the profiles that may release it and the criteria
    that must PASS (`required_all`: every one)."""

    key: str
    name: str
    description: str = ""
    recipe: str = ""
    min_ship_pct: float = 100.0
    required: tuple[str, ...] = ()
    release_profiles: tuple[str, ...] = DEFAULT_RELEASE_PROFILES
    required_all: bool = False


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion: a primary leg (metric/comparison/threshold/unit) plus extra legs."""

    id: str
    model: str
    title: str
    metric: str
    comparison: str
    threshold: float | dict[str, float]
    unit: str
    root_cause: str
    weight: float = DEFAULT_WEIGHT
    depends_on: tuple[str, ...] = ()
    original: str = ""
    rationale: str = ""
    line: int = 0
    judged_on: str = POINT
    extra_legs: tuple[Leg, ...] = ()
    parameters: dict = field(default_factory=dict)
    effort: float | None = None
    sample_count: int | dict[str, int] | None = None  # issue 13: samples per run (a number or per profile)
    change: Change | None = None
    samples: SamplesRule | None = None

    @property
    def primary(self) -> Leg:
        return Leg(self.metric, self.comparison, self.threshold, self.unit, self.judged_on)

    @property
    def legs(self) -> tuple[Leg, ...]:
        """Every leg, the primary first; all must hold for PASS."""
        return (self.primary, *self.extra_legs)

    def leg(self, metric: str) -> Leg:
        for leg in self.legs:
            if leg.metric == metric:
                return leg
        raise ShiptwoError(f"{self.id}: no leg with metric {metric!r} (legs: {', '.join(g.metric for g in self.legs)})")

    def threshold_for(self, profile: str) -> float:
        """The primary leg's threshold under `profile`."""
        return self.primary.threshold_for(profile, self.id)

    def is_met(self, measured: float, profile: str) -> bool:
        """True when `measured` satisfies the primary leg's comparison; NaN never does."""
        return self.primary.holds(measured, profile)

    def param(self, name: str, profile: str):
        """The value of parameter `name` under `profile`."""
        if name not in self.parameters:
            known = ", ".join(self.parameters) or "none"
            raise ShiptwoError(f"{self.id}: no parameter {name!r} in the spec (parameters: {known})")
        return _per_profile(self.parameters[name], profile, self.id, f"value of parameter {name!r}")


@dataclass(frozen=True)
class Spec:
    """A validated spec: models and criteria in file order, plus the file's SHA-256."""

    path: str
    sha256: str
    models: dict[str, Model]
    criteria: dict[str, Criterion]

    def criterion(self, cid: str) -> Criterion:
        if cid not in self.criteria:
            raise ShiptwoError(f"{self.path}: unknown criterion id {cid!r}")
        return self.criteria[cid]

    def for_model(self, model: str) -> list[Criterion]:
        return [c for c in self.criteria.values() if c.model == model]

    def required_ids(self, model: str) -> tuple[str, ...]:
        """The ids that must PASS for `model` to release (every one under `required: all`)."""
        m = self.models[model]
        return tuple(c.id for c in self.for_model(model)) if m.required_all else m.required

    def dependents(self, cid: str) -> list[str]:
        """Ids that list `cid` directly in their depends_on."""
        return [c.id for c in self.criteria.values() if cid in c.depends_on]


# --- building from a validated document -----------------------------------------------------


def _threshold(raw):
    return {p: float(v) for p, v in raw.items()} if isinstance(raw, dict) else float(raw)


def _build_model(key: str, raw: dict) -> Model:
    required = raw.get("required", [])
    return Model(
        key=key,
        name=raw["name"],
        description=raw.get("description", ""),
        recipe=raw.get("recipe", ""),
        min_ship_pct=float(raw.get("min_ship_pct", 100.0)),
        required=() if required == REQUIRED_ALL else tuple(required),
        release_profiles=tuple(raw.get("release_profiles", DEFAULT_RELEASE_PROFILES)),
        required_all=required == REQUIRED_ALL,
    )


def _build_change(raw: dict | None) -> Change | None:
    if raw is None:
        return None
    reg = raw["max_regression"]
    relative = isinstance(reg, dict)
    return Change(float(reg["relative"] if relative else reg), relative, bool(raw.get("blocking", False)))


def _build_criterion(raw: dict) -> Criterion:
    samples = raw.get("samples")
    return Criterion(
        id=raw["id"],
        model=raw["model"],
        title=raw["title"],
        metric=raw["metric"],
        comparison=raw["comparison"],
        threshold=_threshold(raw["threshold"]),
        unit=raw["unit"],
        root_cause=raw["class"],
        weight=float(raw.get("weight", DEFAULT_WEIGHT)),
        depends_on=tuple(raw.get("depends_on", [])),
        original=str(raw.get("original", "")),
        rationale=str(raw.get("rationale", "")),
        line=line_of(raw),
        judged_on=raw.get("judged_on", POINT),
        extra_legs=tuple(Leg(g["metric"], g["comparison"], _threshold(g["threshold"]), g["unit"], g.get("judged_on", POINT))
                         for g in raw.get("legs", [])),
        parameters={k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw.get("parameters") or {}).items()},
        effort=float(raw["effort"]) if "effort" in raw else None,
        sample_count=(dict(raw["sample_count"]) if isinstance(raw.get("sample_count"), dict) else raw.get("sample_count")),
        change=_build_change(raw.get("change")),
        samples=SamplesRule(samples["statistic"], samples.get("metric", ""), samples.get("recheck", "")) if samples else None,
    )


# --- public API -----------------------------------------------------------------------------


def validate_file(path) -> tuple[Spec | None, list[Defect]]:
    """Parse and validate the spec at `path`: the Spec (None if defective) and every defect."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Defect(str(path), 0, "-", f"cannot read spec: {exc.strerror or exc}")]
    doc, defects = parse_yaml(path, raw.decode("utf-8", errors="replace"))
    if defects:
        return None, defects
    defects = SchemaValidator(path, doc).run()
    if defects:
        return None, defects
    models = {k: _build_model(k, m) for k, m in doc["models"].items()}
    criteria = {e["id"]: _build_criterion(e) for e in doc["criteria"]}
    return Spec(str(path), sha256_bytes(raw), models, criteria), []


def load_spec(path=None) -> Spec:
    """Load a valid spec (default: the project's) or raise ShiptwoError naming the first defect (and how many more)."""
    spec, defects = validate_file(spec_path(path))
    if defects:
        more = f" (and {len(defects) - 1} more defects; run `shiptwo spec check`)" if len(defects) > 1 else ""
        raise ShiptwoError(f"{defects[0]}{more}")
    return spec


def strict_defects(spec: Spec, bindings: list[Binding]) -> list[Defect]:
    """Criteria without a bound test, and bound tests naming an id the spec lacks."""
    bound = {b.cid for b in bindings}
    defects = [
        Defect(spec.path, c.line, c.id, f"no bound test in {ACCEPTANCE_DIR}/")
        for c in spec.criteria.values()
        if c.id not in bound
    ]
    defects += [
        Defect(b.path, b.line, b.cid, "test is bound to an id the spec lacks")
        for b in bindings
        if b.cid not in spec.criteria
    ]
    return defects


@dataclass
class CheckOutcome:
    """Result of `spec check`: the defects and a one-line summary when clean."""

    defects: list[Defect] = field(default_factory=list)
    summary: str = ""


def check_spec(path, strict: bool = False, acceptance_dir=ACCEPTANCE_DIR) -> CheckOutcome:
    """Validate a spec (and with `strict`, its bindings to acceptance tests)."""
    spec, defects = validate_file(path)
    if spec is None:
        return CheckOutcome(defects)
    if strict:
        defects = strict_defects(spec, scan_bindings(acceptance_dir))
        if defects:
            return CheckOutcome(defects)
    per_model = ", ".join(f"{m}: {len(spec.for_model(m))}" for m in spec.models)
    mode = " (strict: every criterion bound)" if strict else ""
    return CheckOutcome([], f"{path}: OK, {len(spec.criteria)} criteria ({per_model}){mode}")
