"""Load a hostile file in a subprocess capped in memory and time: a loader that would exhaust the
machine's memory fails the test there instead of taking the test run (and its neighbours) down."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

MEMORY_CAP = 2 << 30  # address space the load may add to what the imports mapped; the old loaders ran past it
SECONDS_CAP = 60


def load_bounded(path, loader: str) -> str:
    """`loader` ("module:function") called on `path` in a capped subprocess: "loaded", or the
    ShiptwoError's message; any other ending (a traceback, MemoryError, the time cap) fails the test."""
    module, function = loader.split(":")
    code = textwrap.dedent(f"""
        import resource, sys
        from shiptwo.errors import ShiptwoError
        from {module} import {function} as load
        # capped above what the imports mapped (a CUDA build of torch maps gigabytes of libraries)
        mapped = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize:")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mapped + {MEMORY_CAP}, mapped + {MEMORY_CAP}))
        try:
            load(sys.argv[1])
            print("loaded")
        except ShiptwoError as exc:
            print(exc)
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=SECONDS_CAP)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path}: still loading after {SECONDS_CAP} s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()
