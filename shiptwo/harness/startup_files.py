"""The files that run code at every start of an interpreter, checked against what installed packages
record: the gate's re-run and rebuild start Python processes, and a `.pth` file, a
sitecustomize/usercustomize module or a module a `.pth` line imports, planted in a site directory
outside the checkout, would run in them and could patch what they measure or build."""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import importlib.metadata
import site
from pathlib import Path

STARTUP_NAMES = ("sitecustomize", "usercustomize")  # imported, from anywhere on sys.path, when Python starts


def _imported_modules(line: str) -> set[str]:
    """The top-level modules a `.pth` import line names: every `import a, b`, `from c import d`, and
    `__import__('e')` / `importlib.import_module('f')` with a literal name, in any of its statements."""
    try:
        tree = ast.parse(line)
    except SyntaxError:  # site.py fails on it too, and runs nothing of it
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("__import__", "import_module")):
            names.add(node.args[0].value.split(".")[0])
    return names


def unrecorded_startup_files(site_dirs: list[str | Path] | None = None) -> list[tuple[str, str]]:
    """(path, why) for each file in the site directories (default: this interpreter's, where the re-run's
    and rebuild's Python process `.pth` files) that runs code at every interpreter start — a `.pth` file,
    a sitecustomize/usercustomize module, a module a `.pth` line imports — and that no installed
    distribution's RECORD there lists with its hash. Only those files are hashed, not every installed one."""
    if site_dirs is None:
        site_dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    dirs = [Path(d) for d in dict.fromkeys(map(str, site_dirs)) if Path(d).is_dir()]
    wanted: dict[Path, str] = {}  # the files that run at start -> their path relative to their site directory
    for d in dirs:
        pth = sorted(p for p in d.glob("*.pth") if p.is_file())  # site.py skips a directory or dangling link
        names = set(STARTUP_NAMES)
        for f in pth:
            try:
                text = f.read_text(errors="replace")
            except OSError:  # unreadable, so site.py skips it too; still named below unless recorded
                continue
            for line in text.splitlines():
                if line.startswith(("import ", "import\t")):  # site.py executes such a line
                    names |= _imported_modules(line)
        found = [*pth, *(p for n in names for p in (*d.glob(f"{n}.*"), d / n / "__init__.py") if p.is_file())]
        wanted.update({p: p.relative_to(d).as_posix() for p in found})
    problems = {p: "no installed distribution's RECORD lists it" for p in wanted}
    for dist in importlib.metadata.distributions(path=[str(d) for d in dirs]):
        for row in csv.reader((dist.read_text("RECORD") or "").splitlines()):
            path = Path(dist.locate_file(row[0])) if row and len(row) > 1 and row[0] in wanted.values() else None
            if path not in wanted:
                continue
            algorithm, _, recorded = row[1].partition("=")
            try:
                digest = base64.urlsafe_b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).rstrip(b"=").decode()
            except (ValueError, OSError):  # no hash, an unknown algorithm, or unreadable
                digest = None
            if digest == recorded:
                problems.pop(path, None)
            elif problems.get(path, "").startswith("no "):
                problems[path] = f"differs from the hash {dist.metadata['Name']}'s RECORD lists for it"
    return sorted((str(p), why) for p, why in problems.items())
