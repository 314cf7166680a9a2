"""Shipping this package's stdlib-only modules into a sandbox, which cannot read the repository: a
program that installs them from their source under their own names, then runs the caller's main."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_INSTALL = r'''
import sys, types
def _install(name, src):
    parts = name.split(".")
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg not in sys.modules:
            sys.modules[pkg] = types.ModuleType(pkg)
            sys.modules[pkg].__path__ = []
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[pkg])
    mod = sys.modules[name] = types.ModuleType(name)
    exec(compile(src, name.replace(".", "/") + ".py", "exec"), mod.__dict__)
    setattr(sys.modules[".".join(parts[:-1])], parts[-1], mod)
'''


def shipped_program(modules: Sequence, main: str) -> str:
    """A program that installs `modules` (stdlib-only modules of this package, shipped as their
    source, since the sandbox cannot read the repository) under their own names, then runs `main`."""
    lines = [_INSTALL, *(f"_install({mod.__name__!r}, {Path(mod.__file__).read_text(encoding='utf-8')!r})" for mod in modules),
             "del _install", main]
    return "\n".join(lines) + "\n"
