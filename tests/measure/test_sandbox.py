"""The sandbox: ordinary programs pass or fail on their merits; hostile ones neither harm the host
nor stall the run, and each is scored as failed (or timed out)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shiptwo.measure.sandbox import NET_AUDIT_HOOK, NET_NAMESPACE, PASSED, TIMED_OUT, SandboxConfig, run_program, run_programs

CFG = SandboxConfig(timeout_s=2.0)
SLACK_S = 3.0  # process start, the kill sweep and a loaded 2-core machine


def _run(src: str):
    t0 = time.monotonic()
    res = run_program(src, CFG)
    assert time.monotonic() - t0 < CFG.timeout_s + SLACK_S
    return res


def test_ordinary_programs():
    assert _run("assert sum(range(4)) == 6\n").result == PASSED
    res = _run("assert 1 == 2, 'nope'\n")
    assert res.result == "failed: AssertionError: nope"
    assert _run("def f(:\n").result.startswith("failed: SyntaxError")
    assert _run("import math, hashlib, collections\nprint('x' * 100000)\n").passed


def test_early_exit_is_not_a_pass():
    assert not _run("import os\nos._exit(0)\n").passed
    assert _run("import sys\nsys.exit(0)\n").result.startswith("failed: SystemExit")


def test_infinite_loop_times_out():
    assert _run("while True:\n    pass\n").result == TIMED_OUT


def test_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = _run(bomb)
    assert not res.passed
    if os.geteuid() == 0:  # its own uid: nothing of it may survive the sweep
        from shiptwo.measure.sandbox import _pids_of_uid

        assert _pids_of_uid(res.uid) == []


def test_escaped_child_is_killed():
    src = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
    res = _run(src)
    if os.geteuid() == 0:
        from shiptwo.measure.sandbox import _pids_of_uid

        assert _pids_of_uid(res.uid) == []


def test_memory_bomb_fails():
    assert _run("x = bytearray(8 << 30)\n").result == "failed: MemoryError"


def test_rm_rf_of_the_parent_leaves_the_host_intact(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("keep")
    src = (
        "import os, shutil\n"
        "shutil.rmtree(os.path.dirname(os.getcwd()), ignore_errors=True)\n"
        f"shutil.rmtree({str(tmp_path)!r})\n"
    )
    res = _run(src)
    assert not res.passed and sentinel.read_text() == "keep"


def test_writing_the_real_home_fails():
    home = Path(os.path.expanduser("~"))
    target = home / "shiptwo-sandbox-was-here"
    res = _run(f"open({str(target)!r}, 'w').write('x')\n")
    assert not res.passed and not target.exists()
    # the sandbox's own HOME is writable and is not the real one
    assert _run(f"import os\nassert os.environ['HOME'] != {str(home)!r}\nopen(os.path.expanduser('~/f'), 'w').write('x')\n").passed


def test_network_is_blocked():
    res = _run("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n")
    assert not res.passed and res.result.startswith("failed: ")
    assert res.network in (NET_NAMESPACE, NET_AUDIT_HOOK)
    if os.geteuid() == 0:
        assert res.network == NET_NAMESPACE


def test_killing_the_parent_fails_and_we_survive():
    res = _run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    assert not res.passed
    res = _run(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n")
    assert not res.passed  # we are still here to assert it


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SHIPTWO_SECRET_TOKEN", "s3cret")
    assert _run("import os\nassert 'SHIPTWO_SECRET_TOKEN' not in os.environ\n").passed


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_runs_unprivileged_with_a_process_limit():
    assert _run("import os\nassert os.getuid() != 0 and os.geteuid() != 0\n").passed
    src = "import os\nkids = 0\nfor _ in range(40):\n    pid = os.fork()\n    if pid == 0:\n        import time; time.sleep(5); os._exit(0)\n    kids += 1\n"
    assert not _run(src).passed  # RLIMIT_NPROC stops it before 40 children


def test_parallel_runs_keep_input_order():
    results = run_programs([f"assert {i} % 2 == 0\n" for i in range(6)], CFG)
    assert [r.passed for r in results] == [True, False, True, False, True, False]
