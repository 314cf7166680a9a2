"""The sandbox's uids: each run as root gets a uid of its own, so the process limit binds per run and
"kill everything this uid runs" finds exactly what a run started, however it hid."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time

# Sandbox uids: a block per test process so parallel sandboxes (and parallel pytest workers)
# never share a uid, and "kill everything this uid runs" is exact.
UID_BASE = 200_000
UID_BLOCK = 64

_uid_lock = threading.Lock()
_uid_counter = itertools.count()


def next_uid() -> int:
    with _uid_lock:
        slot = next(_uid_counter) % UID_BLOCK
    return UID_BASE + (os.getpid() % 100_000) * UID_BLOCK + slot



def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as fh:
                zombie = False
                for line in fh:
                    if line.startswith("State:"):
                        zombie = line.split()[1] in ("Z", "X")
                    elif line.startswith("Uid:"):
                        if int(line.split()[1]) == uid and not zombie:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def kill_uid(uid: int, python: str) -> None:
    """Kill every process running as `uid`: a helper that becomes `uid` sends SIGKILL to -1,
    which reaches exactly that uid's processes at once (a fork bomb cannot outrun it)."""
    for _ in range(10):
        if not pids_of_uid(uid):
            return
        subprocess.run(
            [python, "-I", "-S", "-c", f"import os; os.setgid({uid}); os.setuid({uid}); os.kill(-1, 9)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, timeout=10,
        )
        time.sleep(0.02)

