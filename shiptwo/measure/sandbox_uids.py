"""The sandbox's uids: each run as root gets a uid of its own, so the process limit binds per run and
"kill everything this uid runs" finds exactly what a run started, however it hid.

The sweep's helper acts as the run's uid only in its effective uid: its real and saved uids are a
reaper uid no run has, so nothing the run left can signal it (a helper that fully became the uid
was stopped by a leftover looping `kill(-1, SIGSTOP)`, which hung the sweep and raised out of the
scorer), while its `kill(-1, SIGKILL)` still reaches every process of the run's uid at once."""

from __future__ import annotations

import fcntl
import functools
import itertools
import logging
import os
import stat
import subprocess
import threading
import time

from shiptwo.errors import ShiptwoError

log = logging.getLogger(__name__)

# Sandbox uids: a block per process so parallel sandboxes (and parallel pytest workers) never share
# a uid, and "kill everything this uid runs" is exact. Each process claims its block with a lock file.
UID_BASE = 200_000
UID_BLOCK = 64
UID_BLOCKS = 100_000
# A run uid's reaper uid is the uid plus this: above every run uid, one per run uid, so no process
# runs as it and two sweeps going at once cannot signal each other.
REAPER_OFFSET = UID_BLOCKS * UID_BLOCK
# One fixed folder for the whole host: under the temporary directory, two scorers with different
# TMPDIR values each saw only their own claims and took the same block.
BLOCK_LOCKS = "/run/lock/shiptwo-uid-blocks"
SWEEP_TRIES = 10
HELPER_TIMEOUT_S = 10

# argv[1]: the run's uid, argv[2]: its reaper uid. Real and saved ids the reaper's, effective the run's:
# the kernel lets a process signal another when its real or effective uid is the target's real or saved
# one, so this reaches the run's processes and nothing else, and they cannot reach it. Where the reaper
# uid is refused (outside a user namespace's map) it becomes the run's uid, as before, and exits 3.
_HELPER = """import os, sys
uid, reaper = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
try:
    os.setresgid(reaper, reaper, reaper)
    os.setresuid(reaper, uid, reaper)
    status = 0
except OSError:
    os.setgid(uid)
    os.setuid(uid)
    status = 3
os.kill(-1, 9)
sys.exit(status)
"""
REACHABLE = 3  # the helper's exit status when it ran as the run's uid, reachable by its processes

_uid_lock = threading.Lock()
_uid_counter = itertools.count()
_claimed: dict[int, tuple[int, object]] = {}  # pid -> (block, its open lock file): a forked child claims anew


def claim_block(start: int, folder: str = BLOCK_LOCKS) -> tuple[int, object]:
    """(the first uid block from `start` that no live process holds, its lock file, held open: the
    lock goes with the process). The block was pid % UID_BLOCKS alone: two scorers whose pids agree
    modulo it (any host whose pid_max is above it, 4,194,304 on many) shared uids, and each one's
    sweep killed the other's runs."""
    _lock_folder(folder)
    for i in range(UID_BLOCKS):
        block = (start + i) % UID_BLOCKS
        fh = open(os.path.join(folder, str(block)), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        if block != start % UID_BLOCKS:
            log.info("sandbox: uid block %d is held by another process; this one takes block %d", start % UID_BLOCKS, block)
        return block, fh
    raise RuntimeError(f"sandbox: every one of the {UID_BLOCKS} uid blocks is held ({folder})")


def _lock_folder(folder: str) -> None:
    """Create the lock folder if need be, and refuse (one line) one this process cannot use or does not
    own: a folder elsewhere would hold claims other scorers never see, and one another user made
    (the parent is world-writable) could be a link to anywhere or hold every lock."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError as exc:
        raise ShiptwoError(f"{folder}: cannot create the sandbox's uid-block lock folder ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise ShiptwoError(f"{folder}: the sandbox's uid-block lock folder is not a directory this user "
                           f"(uid {os.geteuid()}) owns; remove it")


def next_uid() -> int:
    with _uid_lock:
        pid = os.getpid()
        if pid not in _claimed:
            _claimed.clear()  # a forked child's inherited claim is its parent's, not its own
            _claimed[pid] = claim_block(pid)
        block = _claimed[pid][0]
        slot = next(_uid_counter) % UID_BLOCK
    return UID_BASE + block * UID_BLOCK + slot


def pids_of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is `uid`: a dead process (zombie) is left out, but not one whose
    main thread exited while another runs on (its entry then reads "Z" too)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(fields["Uid"].split()[0]) != uid:
                continue
            if fields["State"].split()[0] not in ("Z", "X") or len(os.listdir(f"/proc/{entry.name}/task")) > 1:
                pids.append(int(entry.name))
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return pids


@functools.cache
def _warn_reachable(reaper: int) -> None:
    log.warning("sandbox: the sweep's helper could not take a reaper uid (%d refused): it acts as the run's uid, "
                "so what a run leaves can stop it", reaper)


def kill_uid(uid: int, python: str) -> None:
    """Kill every process running as `uid`: a helper acting as `uid` (and unreachable by it) sends
    SIGKILL to -1, which reaches exactly that uid's processes at once (a fork bomb cannot outrun it).
    Processes that outlive every try are logged, never passed over in silence."""
    for _ in range(SWEEP_TRIES):
        if not pids_of_uid(uid):
            return
        try:
            done = subprocess.run([python, "-I", "-S", "-c", _HELPER, str(uid), str(uid + REAPER_OFFSET)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                                  timeout=HELPER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("sandbox: the sweep's helper for uid %d did not finish in %d s", uid, HELPER_TIMEOUT_S)
            continue
        if done.returncode == REACHABLE:
            _warn_reachable(uid + REAPER_OFFSET)
        time.sleep(0.02)
    left = pids_of_uid(uid)
    if left:
        log.warning("sandbox: processes of uid %d survived %d sweeps: %s", uid, SWEEP_TRIES, left[:10])
