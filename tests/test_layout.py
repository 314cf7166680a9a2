"""The package's architecture, checked: imports point one way, the harness never imports the model wing,
no import cycle, no module much over 400 lines (issue 9)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shiptwo"

# Low to high. A module may import its own layer and any lower one, never a higher one.
CORE = ("errors", "fileio", "paths", "checkout", "stats")
MODEL_WING = ("model", "data", "formats", "training", "runtimes", "measure", "builds", "checks")
LAYERS = {name: 0 for name in CORE}
LAYERS.update({name: 1 + i for i, name in enumerate(MODEL_WING)})
LAYERS["harness"] = 1  # its own wing, on the core only
LAYERS["cli"] = LAYERS["__main__"] = 99
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("shiptwo.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("shiptwo"):
            if node.module == "shiptwo":
                found |= {f"shiptwo.{a.name}" for a in node.names}
            else:
                found.add(node.module)
    return found


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "shiptwo"


def _violations() -> list[str]:
    bad = []
    for module, path in _modules().items():
        area = _area(module)
        if area not in LAYERS:
            if area != "shiptwo":
                bad.append(f"{module}: area {area!r} has no layer in tests/test_layout.py")
            continue
        for target in _imports(path):
            t_area = _area(target)
            if t_area not in LAYERS or t_area == area:
                continue
            if area == "harness" and t_area in MODEL_WING:
                bad.append(f"{module} imports {target}: the harness wing imports nothing of the model wing")
            elif t_area == "harness" and area not in ("cli", "checks"):
                bad.append(f"{module} imports {target}: only checks/ (verifiers) and the CLI reach the harness")
            elif LAYERS[t_area] > LAYERS[area]:
                bad.append(f"{module} imports {target}: a lower layer importing a higher one")
    return bad


def test_imports_point_one_way():
    assert _violations() == []


def test_no_import_cycle_between_modules():
    mods = _modules()
    graph = {m: {t for t in _imports(p) if t in mods and t != m} for m, p in mods.items()}
    # a package's __init__ is imported by its children implicitly; only explicit imports count here
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_is_oversized(module):
    lines = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (split it by concept)"


def test_the_checker_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """The checker itself can fail: a harness module importing the model wing is reported."""
    fake = tmp_path / "shiptwo"
    (fake / "harness").mkdir(parents=True)
    (fake / "harness" / "bad.py").write_text("from shiptwo.model.llama import LlamaModel\n")
    (fake / "model").mkdir()
    (fake / "model" / "worse.py").write_text("from shiptwo.builds.store import build\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    found = _violations()
    assert any("harness.bad" in v and "model wing" in v for v in found)
    assert any("model.worse" in v and "lower layer" in v for v in found)
