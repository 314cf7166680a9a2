"""The spec: models and acceptance criteria loaded from YAML, validated with line numbers.

The spec holds criteria, never status (status comes only from executed tests). Every defect
found by `validate_file` is one `Defect` naming the file, the line and the criterion id.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shiptwo.errors import ShiptwoError
from shiptwo.fileio import sha256_bytes

from shiptwo.paths import ACCEPTANCE_DIR, PROFILES, spec_path

MODELS = ("model1", "model2")
ROOT_CAUSE_CLASSES = ("data", "optimization", "infrastructure", "packaging")
COMPARISONS = ("<=", ">=", "==")
SPEC_TOP_KEYS = ("version", "models", "criteria")
SPEC_MODEL_KEYS = ("name", "description", "recipe", "min_ship_pct", "required")
SPEC_CRITERION_KEYS = (
    "id", "model", "title", "metric", "comparison", "threshold", "unit", "weight",
    "class", "depends_on", "original", "rationale",
)
SPEC_REQUIRED_CRITERION_KEYS = ("id", "model", "title", "metric", "comparison", "threshold", "unit", "class")
SPEC_FORBIDDEN_KEY = "status"  # status comes only from executed tests, never from the spec
CRITERION_ID_PATTERN = r"^AC-[A-Z0-9]+-\d{3}$"
DEFAULT_WEIGHT = 1.0
AC_MARKER = "ac"


# --- data classes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A model to release and its release rule (minimum ship-% plus ids that must pass)."""

    key: str
    name: str
    description: str = ""
    recipe: str = ""
    min_ship_pct: float = 100.0
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion: a metric compared against a (per-profile) threshold."""

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

    def threshold_for(self, profile: str) -> float:
        """The threshold that applies under `profile`."""
        if isinstance(self.threshold, dict):
            if profile not in self.threshold:
                raise ShiptwoError(f"{self.id}: no threshold for profile {profile!r}")
            return float(self.threshold[profile])
        return float(self.threshold)

    def is_met(self, measured: float, profile: str) -> bool:
        """True when `measured` satisfies the comparison; NaN never does."""
        if math.isnan(measured):
            return False
        limit = self.threshold_for(profile)
        if self.comparison == "<=":
            return measured <= limit
        if self.comparison == ">=":
            return measured >= limit
        return measured == limit


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

    def dependents(self, cid: str) -> list[str]:
        """Ids that list `cid` directly in their depends_on."""
        return [c.id for c in self.criteria.values() if cid in c.depends_on]


@dataclass(frozen=True)
class Defect:
    """One spec defect, printed as one line: `file:line: id: message`."""

    path: str
    line: int
    cid: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.cid}: {self.message}"


# --- YAML loading with line numbers ---------------------------------------------------------


class _LineDict(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are `_LineDict`s."""


def _construct_line_mapping(loader: _LineLoader, node: yaml.MappingNode):
    data = _LineDict()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, _ in node.value:
        data.key_lines[loader.construct_object(key_node, deep=True)] = key_node.start_mark.line + 1
    data.update(loader.construct_mapping(node, deep=True))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_line_mapping)


def _line_of(mapping, key: str | None = None) -> int:
    if isinstance(mapping, _LineDict):
        if key is not None and key in mapping.key_lines:
            return mapping.key_lines[key]
        return mapping.line
    return 0


def _parse_yaml(path: Path, text: str) -> tuple[object, list[Defect]]:
    try:
        return yaml.load(text, Loader=_LineLoader), []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [Defect(str(path), line, "-", f"malformed YAML: {problem}")]


# --- validation -----------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Validator:
    """Collects every defect of one parsed spec document, then builds the Spec if clean."""

    def __init__(self, path: Path, doc):
        self.path = str(path)
        self.doc = doc
        self.defects: list[Defect] = []

    def defect(self, line: int, cid: str, message: str) -> None:
        self.defects.append(Defect(self.path, line, cid, message))

    def run(self) -> None:
        if not isinstance(self.doc, dict):
            self.defect(_line_of(self.doc), "-", "spec must be a mapping with 'models' and 'criteria'")
            return
        self._forbid_status(self.doc, "-")
        for key in self.doc:
            if key not in SPEC_TOP_KEYS:
                self.defect(_line_of(self.doc, key), "-", f"unknown top-level key {key!r}")
        models = self.doc.get("models")
        criteria = self.doc.get("criteria")
        if not isinstance(models, dict) or not models:
            self.defect(_line_of(self.doc, "models"), "-", "'models' must be a non-empty mapping")
            models = {}
        if not isinstance(criteria, list) or not criteria:
            self.defect(_line_of(self.doc, "criteria"), "-", "'criteria' must be a non-empty list")
            criteria = []
        for key, model in models.items():
            self._check_model(key, model)
        ids = self._check_criteria(criteria, models)
        self._check_dependencies(criteria, ids)
        self._check_required(models, criteria, ids)

    def _forbid_status(self, node, cid: str) -> None:
        """Status lives only in results: a `status` key anywhere is a defect."""
        if isinstance(node, dict):
            cid = node.get("id", cid) if isinstance(node.get("id", cid), str) else cid
            for key, value in node.items():
                if key == SPEC_FORBIDDEN_KEY:
                    self.defect(_line_of(node, key), cid, "'status' field is forbidden: status comes only from executed tests")
                self._forbid_status(value, str(key) if node is self.doc.get("models") else cid)
        elif isinstance(node, list):
            for item in node:
                self._forbid_status(item, cid)

    def _check_model(self, key, model) -> None:
        if not isinstance(model, dict):
            self.defect(_line_of(self.doc["models"], key), str(key), "model must be a mapping")
            return
        for k in model:
            if k not in SPEC_MODEL_KEYS and k != SPEC_FORBIDDEN_KEY:
                self.defect(_line_of(model, k), str(key), f"unknown model key {k!r}")
        if not isinstance(model.get("name"), str):
            self.defect(_line_of(model), str(key), "model needs a 'name'")
        pct = model.get("min_ship_pct")
        if not _is_number(pct) or not 0 <= pct <= 100:
            self.defect(_line_of(model, "min_ship_pct"), str(key), "'min_ship_pct' must be a number in 0..100")

    def _check_criteria(self, criteria: list, models: dict) -> dict[str, dict]:
        ids: dict[str, dict] = {}
        for entry in criteria:
            if not isinstance(entry, dict):
                self.defect(_line_of(entry), "-", "criterion must be a mapping")
                continue
            cid = entry.get("id")
            if not isinstance(cid, str) or not re.match(CRITERION_ID_PATTERN, cid):
                self.defect(_line_of(entry, "id"), str(cid), f"id must match {CRITERION_ID_PATTERN}")
                cid = str(cid)
            if cid in ids:
                self.defect(_line_of(entry, "id"), cid, f"duplicate id (first at line {_line_of(ids[cid])})")
            else:
                ids[cid] = entry
            self._check_criterion(cid, entry, models)
        return ids

    def _check_criterion(self, cid: str, entry: dict, models: dict) -> None:
        for key in entry:
            if key not in SPEC_CRITERION_KEYS and key != SPEC_FORBIDDEN_KEY:
                self.defect(_line_of(entry, key), cid, f"unknown key {key!r}")
        for key in SPEC_REQUIRED_CRITERION_KEYS:
            if key not in entry:
                self.defect(_line_of(entry), cid, f"missing {key!r}")
        for key in ("title", "metric", "unit"):
            if key in entry and not isinstance(entry[key], str):
                self.defect(_line_of(entry, key), cid, f"{key!r} must be a string")
        if "model" in entry and entry["model"] not in models:
            self.defect(_line_of(entry, "model"), cid, f"unknown model {entry['model']!r}")
        if "class" in entry and entry["class"] not in ROOT_CAUSE_CLASSES:
            self.defect(_line_of(entry, "class"), cid, f"unknown class {entry['class']!r} (expected one of {', '.join(ROOT_CAUSE_CLASSES)})")
        if "comparison" in entry and entry["comparison"] not in COMPARISONS:
            self.defect(_line_of(entry, "comparison"), cid, f"bad comparison {entry['comparison']!r} (expected one of {', '.join(COMPARISONS)})")
        if "weight" in entry and (not _is_number(entry["weight"]) or entry["weight"] <= 0):
            self.defect(_line_of(entry, "weight"), cid, "'weight' must be a positive number")
        if "threshold" in entry:
            self._check_threshold(cid, entry)

    def _check_threshold(self, cid: str, entry: dict) -> None:
        threshold = entry["threshold"]
        line = _line_of(entry, "threshold")
        if isinstance(threshold, dict):
            for profile in PROFILES:
                if profile not in threshold:
                    self.defect(line, cid, f"threshold missing for profile {profile!r}")
                elif not _is_number(threshold[profile]):
                    self.defect(_line_of(threshold, profile), cid, f"non-numeric threshold for profile {profile!r}: {threshold[profile]!r}")
            for profile in threshold:
                if profile not in PROFILES:
                    self.defect(_line_of(threshold, profile), cid, f"unknown profile {profile!r} in threshold")
            if not isinstance(entry.get("rationale"), str) or not entry["rationale"].strip():
                self.defect(line, cid, "per-profile threshold needs a 'rationale'")
        elif not _is_number(threshold):
            self.defect(line, cid, f"non-numeric threshold: {threshold!r}")

    def _check_dependencies(self, criteria: list, ids: dict[str, dict]) -> None:
        graph: dict[str, list[str]] = {}
        for entry in criteria:
            if not isinstance(entry, dict):
                continue
            cid = str(entry.get("id"))
            deps = entry.get("depends_on", [])
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                self.defect(_line_of(entry, "depends_on"), cid, "'depends_on' must be a list of ids")
                continue
            for dep in deps:
                if dep not in ids:
                    self.defect(_line_of(entry, "depends_on"), cid, f"depends on unknown id {dep!r}")
            graph[cid] = [d for d in deps if d in ids]
        for cycle in _find_cycles(graph):
            self.defect(_line_of(ids[cycle[0]], "depends_on"), cycle[0], f"dependency cycle: {' -> '.join(cycle + [cycle[0]])}")

    def _check_required(self, models: dict, criteria: list, ids: dict[str, dict]) -> None:
        for key, model in models.items():
            if not isinstance(model, dict):
                continue
            required = model.get("required", [])
            if not isinstance(required, list):
                self.defect(_line_of(model, "required"), str(key), "'required' must be a list of ids")
                continue
            for rid in required:
                if rid not in ids or ids[rid].get("model") != key:
                    self.defect(_line_of(model, "required"), str(key), f"required id {rid!r} is not a criterion of this model")

    def build(self, sha: str) -> Spec:
        models = {k: _build_model(k, m) for k, m in self.doc["models"].items()}
        criteria = {e["id"]: _build_criterion(e) for e in self.doc["criteria"]}
        return Spec(self.path, sha, models, criteria)


def _find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each elementary cycle reachable by DFS, reported once (by its set of ids)."""
    cycles, seen_sets = [], set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                if frozenset(cycle) not in seen_sets:
                    seen_sets.add(frozenset(cycle))
                    cycles.append(list(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def _build_model(key: str, raw: dict) -> Model:
    return Model(
        key=key,
        name=raw["name"],
        description=raw.get("description", ""),
        recipe=raw.get("recipe", ""),
        min_ship_pct=float(raw["min_ship_pct"]),
        required=tuple(raw.get("required", [])),
    )


def _build_criterion(raw: dict) -> Criterion:
    threshold = raw["threshold"]
    threshold = {p: float(v) for p, v in threshold.items()} if isinstance(threshold, dict) else float(threshold)
    return Criterion(
        id=raw["id"],
        model=raw["model"],
        title=raw["title"],
        metric=raw["metric"],
        comparison=raw["comparison"],
        threshold=threshold,
        unit=raw["unit"],
        root_cause=raw["class"],
        weight=float(raw.get("weight", DEFAULT_WEIGHT)),
        depends_on=tuple(raw.get("depends_on", [])),
        original=str(raw.get("original", "")),
        rationale=str(raw.get("rationale", "")),
        line=_line_of(raw),
    )


# --- public API -----------------------------------------------------------------------------


def validate_file(path: str | Path) -> tuple[Spec | None, list[Defect]]:
    """Parse and validate the spec at `path`: the Spec (None if defective) and every defect."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Defect(str(path), 0, "-", f"cannot read spec: {exc.strerror or exc}")]
    doc, defects = _parse_yaml(path, raw.decode("utf-8", errors="replace"))
    if defects:
        return None, defects
    validator = _Validator(path, doc)
    validator.run()
    if validator.defects:
        return None, validator.defects
    return validator.build(sha256_bytes(raw)), []


def load_spec(path: str | Path | None = None) -> Spec:
    """Load a valid spec (default: the project's) or raise ShiptwoError naming the first defect (and how many more)."""
    spec, defects = validate_file(spec_path(path))
    if defects:
        more = f" (and {len(defects) - 1} more defects; run `shiptwo spec check`)" if len(defects) > 1 else ""
        raise ShiptwoError(f"{defects[0]}{more}")
    return spec


# --- bindings: which acceptance tests name which criterion ----------------------------------


@dataclass(frozen=True)
class Binding:
    """One `@pytest.mark.ac("ID")` found in a test file."""

    cid: str
    path: str
    line: int


def _ac_mark_id(node: ast.AST) -> str | None:
    """The id of a `pytest.mark.ac("ID")` / `mark.ac("ID")` call node, else None."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return None
    func = node.func
    if func.attr != AC_MARKER:
        return None
    owner = func.value
    named_mark = (isinstance(owner, ast.Attribute) and owner.attr == "mark") or (isinstance(owner, ast.Name) and owner.id == "mark")
    if not named_mark or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    return node.args[0].value if isinstance(node.args[0].value, str) else None


def scan_bindings(directory: str | Path = ACCEPTANCE_DIR) -> list[Binding]:
    """Every ac binding in the test files under `directory`, by static AST scan (no imports)."""
    bindings = []
    for path in sorted(Path(directory).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as exc:
            raise ShiptwoError(f"{path}: cannot parse for ac bindings: {exc}") from exc
        for node in ast.walk(tree):
            cid = _ac_mark_id(node)
            if cid is not None:
                bindings.append(Binding(cid, str(path), node.lineno))
    return bindings


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


def check_spec(path: str | Path, strict: bool = False, acceptance_dir: str | Path = ACCEPTANCE_DIR) -> CheckOutcome:
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
