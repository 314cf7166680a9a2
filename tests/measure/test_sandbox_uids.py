"""The sweep that ends a run: everything its uid runs is killed however it hid, and nothing the run
left can stop or kill the sweep's helper (its processes share the uid the helper acts as).

Needs root (a run has a uid of its own only then); elsewhere these skip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.sandbox import SandboxConfig, planned_isolation, run_isolated
from shiptwo.measure.sandbox_uids import HELPER_TIMEOUT_S, claim_block, pids_of_uid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a uid of its own a run needs root")

# Waits for the run's program to exit, then sends SIGSTOP to every process of its uid, over and over:
# the sweep's helper became that uid to kill it, and one stopped in between hung the sweep 10 s and
# raised subprocess.TimeoutExpired out of the scorer (about 3 runs in 10).
STOP_THE_SWEEP = r'''
import os, signal, sys
me = os.getpid()
if os.fork() == 0:
    os.setsid()
    while os.getppid() == me:
        pass
    while True:
        try:
            os.kill(-1, signal.SIGSTOP)
        except OSError:
            pass
sys.stdout.write("done")
'''

# A child whose main thread exits (the raw exit syscall, this thread only) while another thread runs:
# its /proc entry then reads "Z (zombie)", and the sweep took it for a dead process and left it running.
LEADER_EXITS = r'''
import ctypes, os, sys, threading, time
if os.fork() == 0:
    os.setsid()
    def linger():
        end = time.monotonic() + 30
        while time.monotonic() < end:
            time.sleep(0.01)
    threading.Thread(target=linger).start()
    time.sleep(0.1)
    ctypes.CDLL(None).syscall(60, 0)  # SYS_exit on x86-64: the calling thread only
time.sleep(0.3)
sys.stdout.write("done")
'''


def _live_tasks(uid: int) -> list[int]:
    """Every thread on the machine running as `uid` that is not dead, read from /proc directly."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as fh:
                    fields = dict(line.split(":", 1) for line in fh if ":" in line)
            except OSError:
                continue
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in ("Z", "X"):
                found.append(int(tid))
    return found


def _kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_processes_a_run_leaves_cannot_stop_the_sweep():
    """A stopped helper costs the sweep HELPER_TIMEOUT_S each time: a run under that was not stopped.
    The machine's probes (private root, network namespace) run first, untimed: on a loaded 2-core
    machine they took a first run to 5.9 s."""
    cfg = SandboxConfig(timeout_s=5.0)
    planned_isolation(cfg)
    for _ in range(20):  # the race was lost about 3 times in 10
        t0 = time.monotonic()
        res = run_isolated(STOP_THE_SWEEP, b"", cfg)
        left = _live_tasks(res.uid)
        _kill_all(left)
        assert res.stdout == b"done" and left == [] and time.monotonic() - t0 < HELPER_TIMEOUT_S


@pytest.mark.parametrize("use_cgroup", [True, False], ids=["cgroup", "no-cgroup"])
def test_a_process_whose_main_thread_exited_is_still_killed(use_cgroup):
    """Without a cgroup (SandboxConfig.memory_cgroup=False, or none writable) the sweep is all there is."""
    res = run_isolated(LEADER_EXITS, b"", SandboxConfig(timeout_s=5.0, memory_cgroup=use_cgroup))
    left = _live_tasks(res.uid)
    _kill_all(left)
    assert res.stdout == b"done" and left == [], f"threads of uid {res.uid} outlived the run"
    assert pids_of_uid(res.uid) == []


def test_scorers_with_different_tmpdirs_take_different_uid_blocks(tmp_path, monkeypatch):
    """The lock files lived under the temporary directory: a scorer with another TMPDIR saw none of
    this one's claims and took the same block (its runs could then signal and inspect these)."""
    start = os.getpid() + 12_345
    for name in ("mine", "theirs"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "mine"))
    monkeypatch.setattr("tempfile.tempdir", None)
    mine, held = claim_block(start)
    code = f"from shiptwo.measure.sandbox_uids import claim_block; print(claim_block({start})[0])"
    theirs = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={**os.environ, "TMPDIR": str(tmp_path / "theirs")}).stdout)
    held.close()
    assert mine != theirs


def test_a_lock_folder_that_is_a_link_is_refused(tmp_path):
    """Its parent is world-writable: a folder someone else put there (a link to anywhere) is never used."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "locks").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ShiptwoError, match="not a directory this user"):
        claim_block(0, str(tmp_path / "locks"))
    assert list((tmp_path / "elsewhere").iterdir()) == []
