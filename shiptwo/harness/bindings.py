"""Which acceptance tests name which criterion, found by a static scan (no imports).

A binding is `@pytest.mark.ac("ID")` on a test function or inside a `pytest.param(...)` of its
parametrize decorator. The plugin and the gate use the same scan to know every test a criterion
has, so a run that executed only some of them (`pytest -k`) cannot stand for the criterion.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.paths import ACCEPTANCE_DIR

AC_MARKER = "ac"
_PARAMS = re.compile(r"\[.*\]$")  # a parametrized test's id suffix


@dataclass(frozen=True)
class Binding:
    """One `@pytest.mark.ac("ID")` found in a test file, with the test function it binds."""

    cid: str
    path: str
    line: int
    function: str = ""


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
        seen: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for deco in fn.decorator_list:
                    for node in ast.walk(deco):
                        cid = _ac_mark_id(node)
                        if cid is not None:
                            seen.add(id(node))
                            bindings.append(Binding(cid, str(path), node.lineno, fn.name))
        for node in ast.walk(tree):  # marks outside a decorator (pytestmark = ...): bound, function unknown
            cid = _ac_mark_id(node)
            if cid is not None and id(node) not in seen:
                bindings.append(Binding(cid, str(path), node.lineno))
    return sorted(bindings, key=lambda b: (b.path, b.line))


def function_key(path: str | Path, function: str, root: str | Path) -> str:
    """`relative/path.py::function`: one test function, however it is parametrized or selected."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        rel = Path(path)
    return f"{rel.as_posix()}::{function}"


def key_of_nodeid(nodeid: str) -> str:
    """The test-function key of a pytest node id (`a.py::Class::test_x[p]` -> `a.py::test_x`)."""
    parts = nodeid.split("::")
    return f"{parts[0]}::{_PARAMS.sub('', parts[-1])}"


def bound_tests(bindings: list[Binding], root: str | Path) -> dict[str, set[str]]:
    """Per criterion id: the keys of every test function bound to it."""
    out: dict[str, set[str]] = {}
    for b in bindings:
        if b.function:
            out.setdefault(b.cid, set()).add(function_key(b.path, b.function, root))
    return out
