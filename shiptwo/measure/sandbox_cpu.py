"""A sandbox run's time limit, judged on the CPU time its processes used, not on a busy machine's clock.

On a loaded host (other scoring workers, a build) an honest program may take several times its CPU
time in wall time, so a wall-clock limit fails it falsely. A run is therefore stopped when its
processes together have used the CPU limit ("cpu time limit"), read from the run's own cgroup where
it has one (v1 cpuacct.usage, v2 cpu.stat usage_usec: every process in it, forked children and
orphans included), else from /proc/<pid>/stat of the program's process: its own time and that of the
children it has waited for. In that fallback a child still running, or never reaped, is NOT counted;
each such process stays held to RLIMIT_CPU (the limit, one process at a time) and to the wall cap.
A generous wall cap, a multiple of the CPU limit, ends a program that sleeps or blocks ("wall limit").
The policy is recorded with the run's isolation (`TimePolicy`).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

CLOCK_CGROUP_V1 = "cgroup-v1 cpuacct.usage"
CLOCK_CGROUP_V2 = "cgroup-v2 cpu.stat usage_usec"
CLOCK_PROCESS = "process rusage"
STOP_CPU = "cpu time limit"
STOP_WALL = "wall limit"
WALL_CAP_FACTOR = 4.0  # the wall cap, x the CPU limit: a run with a quarter of a core still finishes
POLL_S = 0.05  # how often the CPU clock is read: a spinning run overshoots its limit by about this x cores

_COUNTS = {
    CLOCK_CGROUP_V1: "every process of the run (its cgroup)",
    CLOCK_CGROUP_V2: "every process of the run (its cgroup)",
    CLOCK_PROCESS: "the program's process and the children it reaped; children still running or never reaped are "
                   "not counted (each held to RLIMIT_CPU and the wall cap)",
}


@dataclass(frozen=True)
class TimePolicy:
    """How a run's time was limited, for the results (the clock this machine gave, not what was asked)."""

    clock: str  # CLOCK_CGROUP_V1, CLOCK_CGROUP_V2 or CLOCK_PROCESS
    cpu_limit_s: float  # stopped at this much CPU time ("cpu time limit")
    wall_cap_s: float  # or at this much wall time ("wall limit"), whichever comes first
    counts: str  # whose CPU time the clock counts

    def to_dict(self) -> dict:
        return asdict(self)


def time_policy(clock: str, cpu_limit_s: float, wall_cap_s: float, run_can_leave: bool = False) -> TimePolicy:
    """`run_can_leave`: the run shares the caller's uid, so may move its processes out of its cgroup."""
    counts = _COUNTS[clock] + (_LEFT if run_can_leave and clock != CLOCK_PROCESS else "")
    return TimePolicy(clock, cpu_limit_s, wall_cap_s, counts)


_LEFT = ("; the run shares the caller's uid and can leave it, its time then uncounted (each process held to "
         "RLIMIT_CPU and the wall cap)")


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time of process `pid` and of the children it has reaped (utime + stime + cutime + cstime),
    None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) * _TICK_S
    except (OSError, IndexError, ValueError):
        return None


def watch(proc: subprocess.Popen, stdin: bytes, cpu_seconds: Callable[[], float | None], cpu_limit_s: float,
          wall_cap_s: float) -> tuple[str | None, float | None]:
    """Feed `proc` its stdin and wait for it: (None, or STOP_CPU / STOP_WALL when a limit was reached
    first and the caller must kill it; the CPU time last read, None if never readable).

    The stdin is written by a thread of its own, all of it, whenever the program reads it: a retried
    `communicate()` without input never writes the rest (CPython registers stdin only when given input),
    so a program that began reading after the first poll waited for it until the wall cap."""
    threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    start, used = time.monotonic(), None
    while True:
        left = wall_cap_s - (time.monotonic() - start)
        if left <= 0:
            return STOP_WALL, used
        try:
            proc.wait(timeout=min(POLL_S, left))
            final = cpu_seconds()  # the whole run's, where the clock outlives the process (its cgroup)
            return None, final if final is not None else used
        except subprocess.TimeoutExpired:
            pass
        now = cpu_seconds()
        used = now if now is not None else used
        if used is not None and used >= cpu_limit_s:
            return STOP_CPU, used


def _feed(pipe, data: bytes) -> None:
    """Write `data` to the program's stdin and close it; a program that exits (or is killed) first ends it."""
    try:
        pipe.write(data)
    except OSError:  # BrokenPipeError: the program is gone, or closed its stdin
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass
