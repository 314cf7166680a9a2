"""The types of a results.json entry's fields, checked where results are read.

A hand-edited field of the wrong type (`legs: 5`, `nodeids: [1, 2]`, an evidence path that is a
number) must be a one-line error naming the field, not a traceback deep in the gate.
"""

from __future__ import annotations

import numbers


def _is_num(value) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _strings(value) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _legs_problem(legs, where: str) -> str:
    if legs is None:
        return ""
    if not isinstance(legs, list) or not all(isinstance(g, dict) for g in legs):
        return f"{where}legs must be a list of mappings"
    for i, g in enumerate(legs):
        if not isinstance(g.get("metric"), str):
            return f"{where}legs[{i}].metric must be a string"
        if not _is_num(g.get("measured")):
            return f"{where}legs[{i}].measured must be a number or null"
    return ""


def _file_record_problem(name: str, rec) -> str:
    if isinstance(rec, dict) and "path" in rec:
        if not isinstance(rec["path"], str):
            return f"{name}.path must be a string"
        if not (rec.get("sha256") is None or isinstance(rec["sha256"], str)):
            return f"{name}.sha256 must be a string or null"
    return ""


def too_large(value, where: str = "") -> str:
    """The first number under `value` too large for a float ("... is a number too large for a float"),
    else "": JSON allows any integer, and every figure is compared and shown as a float."""
    stack = [(where, value)]
    while stack:
        at, v = stack.pop()
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                float(v)
            except OverflowError:
                return f"{at} is a number too large for a float"
        elif isinstance(v, dict):
            stack += reversed([(f"{at}.{k}" if at else str(k), x) for k, x in v.items()])
        elif isinstance(v, list):
            stack += reversed([(f"{at}[{i}]", x) for i, x in enumerate(v)])
    return ""


def entry_type_problem(entry: dict) -> str:
    """The first field of a results entry whose type the gate cannot read (a hand edit), else ""."""
    huge = too_large(entry)
    if huge:
        return huge
    for key in ("profile", "commit"):
        if not (entry[key] is None or isinstance(entry[key], str)):
            return f"{key} must be a string"
    for key in ("nodeids", "expected", "missing_tests"):
        if not _strings(entry.get(key)):
            return f"{key} must be a list of strings"
    if not _is_num(entry.get("measured")):
        return "measured must be a number or null"
    problem = _legs_problem(entry.get("legs"), "")
    evidence = entry.get("evidence")
    if not problem and evidence is not None and not isinstance(evidence, dict):
        return "evidence must be a mapping"
    for name, rec in sorted((evidence or {}).items()):
        problem = problem or _file_record_problem(f"evidence.{name}", rec)
    samples = entry.get("samples")
    if not problem and samples is not None and not (isinstance(samples, dict) and isinstance(samples.get("path"), str)):
        problem = "samples must be a mapping with a string path"
    problem = problem or _file_record_problem("samples", samples)
    per_test = entry.get("per_test")
    if not problem and per_test is not None:
        if not isinstance(per_test, list) or not all(isinstance(r, dict) for r in per_test):
            return "per_test must be a list of mappings"
        for i, rec in enumerate(per_test):
            if not isinstance(rec.get("nodeid"), str):
                return f"per_test[{i}].nodeid must be a string"
            problem = problem or _legs_problem(rec.get("legs"), f"per_test[{i}].")
    return problem
