"""The spec's schema: YAML read with line numbers and every rule a spec must follow.

`SchemaValidator` collects every defect of a parsed document as one `Defect` naming the file,
the line and the criterion (or model) id; `spec.py` builds its data classes only from a clean
document. The vocabulary (comparisons, profiles, leg fields, sample statistics) lives here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import yaml

from shiptwo.paths import PROFILES

MODELS = ("model1", "model2")
ROOT_CAUSE_CLASSES = ("data", "optimization", "infrastructure", "packaging")
COMPARISONS = ("<=", ">=", "==")
JUDGED_ON = ("point", "lower_95", "upper_95")  # issue 13: judge a figure or a bound of its 95% interval
SAMPLE_STATISTICS = ("pass_pct", "pass_fraction", "mean", "sum")  # how `measured` follows from a per-sample file
REQUIRED_ALL = "all"
DEFAULT_RELEASE_PROFILES = ("full",)
SPEC_TOP_KEYS = ("version", "models", "criteria")
SPEC_MODEL_KEYS = ("name", "description", "recipe", "min_ship_pct", "required", "release_profiles")
SPEC_CRITERION_KEYS = (
    "id", "model", "title", "metric", "comparison", "threshold", "unit", "weight", "judged_on",
    "class", "depends_on", "original", "rationale", "legs", "parameters", "effort", "change", "samples",
    "sample_count",
)
SPEC_REQUIRED_CRITERION_KEYS = ("id", "model", "title", "metric", "comparison", "threshold", "unit", "class")
LEG_KEYS = ("metric", "comparison", "threshold", "unit", "judged_on")
LEG_REQUIRED_KEYS = ("metric", "comparison", "threshold", "unit")
CHANGE_KEYS = ("max_regression", "blocking")
SAMPLES_KEYS = ("statistic", "metric", "recheck")
SPEC_FORBIDDEN_KEY = "status"  # status comes only from executed tests, never from the spec
CRITERION_ID_PATTERN = r"^AC-[A-Z0-9]+-\d{3}$"  # matched whole and ASCII only: no look-alike digit, no line break
PARAMETER_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


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


class LineDict(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are `LineDict`s."""


def _construct_line_mapping(loader: _LineLoader, node: yaml.MappingNode):
    data = LineDict()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, _ in node.value:
        data.key_lines[loader.construct_object(key_node, deep=True)] = key_node.start_mark.line + 1
    data.update(loader.construct_mapping(node, deep=True))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_line_mapping)


def line_of(mapping, key: str | None = None) -> int:
    """The line of `key` in `mapping` (or of the mapping itself); 0 when unknown."""
    if isinstance(mapping, LineDict):
        if key is not None and key in mapping.key_lines:
            return mapping.key_lines[key]
        return mapping.line
    return 0


def parse_yaml(path: Path, text: str) -> tuple[object, list[Defect]]:
    """The document (mappings carry lines), or one defect naming the line of the YAML error."""
    try:
        return yaml.load(text, Loader=_LineLoader), []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [Defect(str(path), line, "-", f"malformed YAML: {problem}")]


# --- validation -----------------------------------------------------------------------------


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_profile_mapping(value) -> bool:
    """A mapping keyed by profile names: a per-profile threshold or parameter."""
    return isinstance(value, dict) and bool(value) and all(k in PROFILES for k in value)


def _looks_numeric(text: str) -> bool:
    """A string YAML read although a number was meant: `1.0e4` (YAML 1.1 needs a sign in the exponent)."""
    try:
        float(text)
    except ValueError:
        return False
    return "e" in text.lower() and "inf" not in text.lower()


def _is_scalar(value) -> bool:
    return isinstance(value, (str, bool)) or is_number(value)


class SchemaValidator:
    """Collects every defect of one parsed spec document."""

    def __init__(self, path: Path, doc):
        self.path = str(path)
        self.doc = doc
        self.defects: list[Defect] = []

    def defect(self, line: int, cid: str, message: str) -> None:
        self.defects.append(Defect(self.path, line, cid, message))

    def run(self) -> list[Defect]:
        if not isinstance(self.doc, dict):
            self.defect(line_of(self.doc), "-", "spec must be a mapping with 'models' and 'criteria'")
            return self.defects
        self._forbid_status(self.doc, "-")
        for key in self.doc:
            if key not in SPEC_TOP_KEYS:
                self.defect(line_of(self.doc, key), "-", f"unknown top-level key {key!r}")
        models = self.doc.get("models")
        criteria = self.doc.get("criteria")
        if not isinstance(models, dict) or not models:
            self.defect(line_of(self.doc, "models"), "-", "'models' must be a non-empty mapping")
            models = {}
        if not isinstance(criteria, list) or not criteria:
            self.defect(line_of(self.doc, "criteria"), "-", "'criteria' must be a non-empty list")
            criteria = []
        for key, model in models.items():
            self._check_model(key, model)
        ids = self._check_criteria(criteria, models)
        self._check_dependencies(criteria, ids)
        self._check_required(models, ids)
        return self.defects

    def _forbid_status(self, node, cid: str) -> None:
        """Status lives only in results: a `status` key anywhere is a defect."""
        if isinstance(node, dict):
            cid = node.get("id", cid) if isinstance(node.get("id", cid), str) else cid
            for key, value in node.items():
                if key == SPEC_FORBIDDEN_KEY:
                    self.defect(line_of(node, key), cid, "'status' field is forbidden: status comes only from executed tests")
                self._forbid_status(value, str(key) if node is self.doc.get("models") else cid)
        elif isinstance(node, list):
            for item in node:
                self._forbid_status(item, cid)

    def _unknown_keys(self, mapping: dict, allowed: tuple[str, ...], cid: str, what: str) -> None:
        for key in mapping:
            if key not in allowed and key != SPEC_FORBIDDEN_KEY:
                self.defect(line_of(mapping, key), cid, f"unknown {what}key {key!r}")

    def _check_model(self, key, model) -> None:
        key = str(key)
        if not isinstance(model, dict):
            self.defect(line_of(self.doc["models"], key), key, "model must be a mapping")
            return
        self._unknown_keys(model, SPEC_MODEL_KEYS, key, "model ")
        if not isinstance(model.get("name"), str):
            self.defect(line_of(model), key, "model needs a 'name'")
        if "min_ship_pct" in model and (not is_number(model["min_ship_pct"]) or not 0 <= model["min_ship_pct"] <= 100):
            self.defect(line_of(model, "min_ship_pct"), key, "'min_ship_pct' must be a number in 0..100")
        profiles = model.get("release_profiles", list(DEFAULT_RELEASE_PROFILES))
        if not isinstance(profiles, list) or not profiles or any(p not in PROFILES for p in profiles):
            self.defect(line_of(model, "release_profiles"), key,
                        f"'release_profiles' must be a non-empty list of profiles ({', '.join(PROFILES)})")

    def _check_criteria(self, criteria: list, models: dict) -> dict[str, dict]:
        ids: dict[str, dict] = {}
        for entry in criteria:
            if not isinstance(entry, dict):
                self.defect(line_of(entry), "-", "criterion must be a mapping")
                continue
            cid = entry.get("id")
            if not isinstance(cid, str) or not re.fullmatch(CRITERION_ID_PATTERN, cid, re.ASCII):
                self.defect(line_of(entry, "id"), str(cid), f"id must match {CRITERION_ID_PATTERN}")
                cid = str(cid)
            if cid in ids:
                self.defect(line_of(entry, "id"), cid, f"duplicate id (first at line {line_of(ids[cid])})")
            else:
                ids[cid] = entry
            self._check_criterion(cid, entry, models)
        return ids

    def _check_criterion(self, cid: str, entry: dict, models: dict) -> None:
        self._unknown_keys(entry, SPEC_CRITERION_KEYS, cid, "")
        for key in SPEC_REQUIRED_CRITERION_KEYS:
            if key not in entry:
                self.defect(line_of(entry), cid, f"missing {key!r}")
        if "title" in entry and not isinstance(entry["title"], str):
            self.defect(line_of(entry, "title"), cid, "'title' must be a string")
        if "model" in entry and entry["model"] not in models:
            self.defect(line_of(entry, "model"), cid, f"unknown model {entry['model']!r}")
        if "class" in entry and entry["class"] not in ROOT_CAUSE_CLASSES:
            self.defect(line_of(entry, "class"), cid, f"unknown class {entry['class']!r} (expected one of {', '.join(ROOT_CAUSE_CLASSES)})")
        if "weight" in entry and (not is_number(entry["weight"]) or entry["weight"] <= 0):
            self.defect(line_of(entry, "weight"), cid, "'weight' must be a positive number")
        if "effort" in entry and (not is_number(entry["effort"]) or entry["effort"] <= 0):
            self.defect(line_of(entry, "effort"), cid, "'effort' must be a positive number (person-days)")
        if "sample_count" in entry:  # issue 13: samples the figure is measured on (spec check's resolution warning)
            counts = entry["sample_count"].values() if is_profile_mapping(entry["sample_count"]) else [entry["sample_count"]]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
                self.defect(line_of(entry, "sample_count"), cid, "'sample_count' must be a positive integer or a per-profile mapping of them")
        has_rationale = isinstance(entry.get("rationale"), str) and bool(entry["rationale"].strip())
        self._check_leg(cid, entry, has_rationale, "")
        metrics = [entry.get("metric")]
        legs = entry.get("legs", [])
        if not isinstance(legs, list):
            self.defect(line_of(entry, "legs"), cid, "'legs' must be a list of mappings")
            legs = []
        for i, leg in enumerate(legs):
            if not isinstance(leg, dict):
                self.defect(line_of(entry, "legs"), cid, f"legs[{i}] must be a mapping")
                continue
            self._unknown_keys(leg, LEG_KEYS, cid, f"legs[{i}] ")
            for key in LEG_REQUIRED_KEYS:
                if key not in leg:
                    self.defect(line_of(leg), cid, f"legs[{i}]: missing {key!r}")
            self._check_leg(cid, leg, has_rationale, f"legs[{i}]: ")
            if leg.get("metric") in metrics:
                self.defect(line_of(leg, "metric"), cid, f"legs[{i}]: metric {leg.get('metric')!r} already names a leg")
            metrics.append(leg.get("metric"))
        if "parameters" in entry:
            self._check_parameters(cid, entry["parameters"], line_of(entry, "parameters"))
        if "change" in entry:
            self._check_change(cid, entry["change"], line_of(entry, "change"))
        if "samples" in entry:
            self._check_samples(cid, entry["samples"], line_of(entry, "samples"), metrics)

    def _check_leg(self, cid: str, leg: dict, has_rationale: bool, where: str) -> None:
        """metric, comparison, threshold, unit, judged_on of the primary leg (the criterion) or an extra one."""
        for key in ("metric", "unit"):
            if key in leg and not isinstance(leg[key], str):
                self.defect(line_of(leg, key), cid, f"{where}{key!r} must be a string")
        if "comparison" in leg and leg["comparison"] not in COMPARISONS:
            self.defect(line_of(leg, "comparison"), cid,
                        f"{where}bad comparison {leg['comparison']!r} (expected one of {', '.join(COMPARISONS)})")
        if "judged_on" in leg and leg["judged_on"] not in JUDGED_ON:
            self.defect(line_of(leg, "judged_on"), cid,
                        f"{where}bad judged_on {leg['judged_on']!r} (expected one of {', '.join(JUDGED_ON)})")
        if "threshold" in leg:
            self._check_threshold(cid, leg, has_rationale, where)

    def _check_threshold(self, cid: str, leg: dict, has_rationale: bool, where: str) -> None:
        threshold = leg["threshold"]
        line = line_of(leg, "threshold")
        if isinstance(threshold, dict):
            for profile in PROFILES:
                if profile not in threshold:
                    self.defect(line, cid, f"{where}threshold missing for profile {profile!r}")
                elif not is_number(threshold[profile]):
                    self.defect(line_of(threshold, profile), cid, f"{where}non-numeric threshold for profile {profile!r}: {threshold[profile]!r}")
            for profile in threshold:
                if profile not in PROFILES:
                    self.defect(line_of(threshold, profile), cid, f"{where}unknown profile {profile!r} in threshold")
            if not has_rationale:
                self.defect(line, cid, f"{where}per-profile threshold needs a 'rationale'")
        elif not is_number(threshold):
            self.defect(line, cid, f"{where}non-numeric threshold: {threshold!r}")

    def _check_parameters(self, cid: str, params, line: int) -> None:
        if not isinstance(params, dict) or not params:
            self.defect(line, cid, "'parameters' must be a non-empty mapping of name -> value")
            return
        for name, value in params.items():
            pline = line_of(params, name)
            if not isinstance(name, str) or not re.fullmatch(PARAMETER_NAME_PATTERN, name, re.ASCII):
                self.defect(pline, cid, f"parameter name {name!r} must match {PARAMETER_NAME_PATTERN}")
            if isinstance(value, dict):
                missing = [p for p in PROFILES if p not in value]
                extra = [str(p) for p in value if p not in PROFILES]
                if missing or extra:
                    self.defect(pline, cid, f"parameter {name!r}: a mapping must give exactly the profiles "
                                            f"{', '.join(PROFILES)} (missing {missing or 'none'}, unknown {extra or 'none'})")
                values = list(value.values())
            else:
                values = [value]
            for v in values:
                if not (_is_scalar(v) or (isinstance(v, list) and all(_is_scalar(x) for x in v))):
                    self.defect(pline, cid, f"parameter {name!r}: value {v!r} must be a number, string, boolean or list of them")
                elif isinstance(v, str) and _looks_numeric(v):
                    self.defect(pline, cid, f"parameter {name!r}: {v!r} is read as a string, not a number "
                                            f"(YAML needs a signed exponent: write {float(v):.1e})")

    def _check_change(self, cid: str, change, line: int) -> None:
        if not isinstance(change, dict):
            self.defect(line, cid, "'change' must be a mapping with 'max_regression' (and optional 'blocking')")
            return
        self._unknown_keys(change, CHANGE_KEYS, cid, "change ")
        reg = change.get("max_regression")
        relative = isinstance(reg, dict) and set(reg) == {"relative"} and is_number(reg["relative"]) and reg["relative"] > 0
        if not ((is_number(reg) and reg >= 0) or relative):
            self.defect(line_of(change, "max_regression"), cid,
                        "change.max_regression must be a number >= 0 (in the unit) or {relative: fraction > 0}")
        if "blocking" in change and not isinstance(change["blocking"], bool):
            self.defect(line_of(change, "blocking"), cid, "change.blocking must be true or false")

    def _check_samples(self, cid: str, samples, line: int, metrics: list) -> None:
        if not isinstance(samples, dict):
            self.defect(line, cid, f"'samples' must be a mapping with 'statistic' ({', '.join(SAMPLE_STATISTICS)})")
            return
        self._unknown_keys(samples, SAMPLES_KEYS, cid, "samples ")
        if samples.get("statistic") not in SAMPLE_STATISTICS:
            self.defect(line_of(samples, "statistic"), cid,
                        f"samples.statistic must be one of {', '.join(SAMPLE_STATISTICS)}, not {samples.get('statistic')!r}")
        if "metric" in samples and samples["metric"] not in metrics:
            self.defect(line_of(samples, "metric"), cid, f"samples.metric {samples['metric']!r} names no leg of this criterion")
        if "recheck" in samples and not isinstance(samples["recheck"], str):
            self.defect(line_of(samples, "recheck"), cid, "samples.recheck must name a recheck kind (a string)")

    def _check_dependencies(self, criteria: list, ids: dict[str, dict]) -> None:
        graph: dict[str, list[str]] = {}
        for entry in criteria:
            if not isinstance(entry, dict):
                continue
            cid = str(entry.get("id"))
            deps = entry.get("depends_on", [])
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                self.defect(line_of(entry, "depends_on"), cid, "'depends_on' must be a list of ids")
                continue
            for dep in deps:
                if dep not in ids:
                    self.defect(line_of(entry, "depends_on"), cid, f"depends on unknown id {dep!r}")
            graph[cid] = [d for d in deps if d in ids]
        for cycle in find_cycles(graph):
            self.defect(line_of(ids[cycle[0]], "depends_on"), cycle[0], f"dependency cycle: {' -> '.join(cycle + [cycle[0]])}")

    def _check_required(self, models: dict, ids: dict[str, dict]) -> None:
        for key, model in models.items():
            if not isinstance(model, dict):
                continue
            required = model.get("required", [])
            if required == REQUIRED_ALL:
                continue
            if not isinstance(required, list):
                self.defect(line_of(model, "required"), str(key), f"'required' must be {REQUIRED_ALL!r} or a list of ids")
                continue
            for rid in required:
                if rid not in ids or ids[rid].get("model") != key:
                    self.defect(line_of(model, "required"), str(key), f"required id {rid!r} is not a criterion of this model")


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every dependency cycle, each once, found with graphlib: remove a reported cycle's closing
    edge and sort again until the graph is acyclic."""
    graph = {node: list(deps) for node, deps in graph.items()}
    cycles: list[list[str]] = []
    while True:
        try:
            TopologicalSorter(graph).prepare()
            return cycles
        except CycleError as exc:
            # graphlib reports [n0, n1, ..., n0] where each node is a prerequisite of the next
            path = exc.args[1]
            cycle = list(reversed(path[:-1]))  # prerequisite order: n0 -> ... as written in depends_on
            start = min(range(len(cycle)), key=lambda i: cycle[i])  # report from the smallest id: stable
            cycles.append(cycle[start:] + cycle[:start])
            graph[path[1]].remove(path[0])
