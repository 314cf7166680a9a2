"""What the host offers a sandbox: an interpreter an unprivileged uid can run, and the contents of the
minimal private root (the base interpreter, the libraries it loads, its standard library, a few
device nodes). Whether the kernel lets a sandbox use them is probed in `sandbox`."""

from __future__ import annotations

import glob
import os
import stat
import subprocess
import sys
from pathlib import Path

from shiptwo.errors import ShiptwoError

DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


def _world_accessible(path: Path) -> bool:
    """True when any user can reach and execute `path` (every directory above it o+x)."""
    path = path.resolve()
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def sandbox_python(unprivileged: bool) -> str:
    """The interpreter for sandboxed programs on the host file system: ours, or a system one an
    unprivileged uid can run."""
    if not unprivileged or _world_accessible(Path(sys.executable)):
        return sys.executable
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(cand).exists() and _world_accessible(Path(cand)):
            return cand
    raise ShiptwoError(f"sandbox: no Python interpreter runnable by an unprivileged user ({sys.executable} is not)")



def root_plan() -> tuple[str, tuple, tuple] | None:
    """(interpreter, binds, hidden) for the minimal root: the base interpreter (not the virtual
    environment's), the libraries `ldd` says it and its extension modules load, its standard
    library with site-packages hidden, and the device nodes. None when `ldd` is missing."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    stdlib = os.path.dirname(os.__file__)
    extensions = sorted(glob.glob(os.path.join(stdlib, "lib-dynload", "*.so")))
    try:
        out = subprocess.run(["ldd", exe, *extensions], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    libs = sorted({tok for line in out.splitlines() for tok in line.split() if tok.startswith("/") and not tok.endswith(":")})
    binds = [(exe, "file"), (stdlib, "dir")] + [(lib, "file") for lib in libs if os.path.isfile(lib)]
    binds += [(p, "file") for p in ("/etc/ld.so.cache",) if os.path.isfile(p)]
    binds += [(d, "dev") for d in DEVICES if os.path.exists(d)]
    hidden = tuple(os.path.join(stdlib, d) for d in ("site-packages", "dist-packages") if os.path.isdir(os.path.join(stdlib, d)))
    return exe, tuple(binds), hidden

