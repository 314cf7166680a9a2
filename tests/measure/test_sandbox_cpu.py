"""The sandbox's time limit is judged on CPU time: a spinning program is stopped by it, a sleeping
one by the wall cap, a forking one cannot hide its children's time (where the run has a cgroup), and
an honest program on a loaded machine passes where a wall-clock limit of the same size fails it."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.sandbox import (
    SandboxConfig,
    planned_isolation,
    planned_memory_bound,
    planned_time_policy,
    run_isolated,
)
from shiptwo.measure.sandbox_cpu import (
    CLOCK_CGROUP_V1,
    CLOCK_CGROUP_V2,
    CLOCK_PROCESS,
    STOP_CPU,
    STOP_WALL,
)
from shiptwo.measure.sandbox_memory import MEM_CGROUP_V1, MEM_CGROUP_V2, cgroup_plan

SLACK_S = 5.0  # process start, the kill sweep, other work on a 2-core machine
CGROUP_CLOCKS = (CLOCK_CGROUP_V1, CLOCK_CGROUP_V2)
SPIN = "while True:\n    pass\n"
# An honest program that needs 0.5 s of CPU, however long the machine takes to give it
HONEST = "import time\nwhile time.process_time() < 0.5:\n    pass\nprint('done')\n"


def _timed(src: str, cfg: SandboxConfig, stdin: bytes = b""):
    planned_isolation(cfg)  # the machine's probes, once a process: untimed (14 s beside the spinners below)
    t0 = time.monotonic()
    res = run_isolated(src, stdin, cfg)
    assert time.monotonic() - t0 < cfg.wall_cap_s + SLACK_S  # no clock lets a run stall the scorer past the cap
    return res


@pytest.mark.parametrize("memory_cgroup", [True, False], ids=["run-cgroup", "no-cgroup"])
def test_a_spinning_program_is_stopped_by_the_cpu_limit(memory_cgroup):
    cfg = SandboxConfig(timeout_s=1.0, wall_cap_factor=10.0, memory_cgroup=memory_cgroup)
    res = _timed(SPIN, cfg)
    assert res.stopped_by == STOP_CPU and res.failure() == "timed out (cpu time limit)"
    assert 1.0 <= res.cpu_s < 2.0 and res.elapsed_s < cfg.wall_cap_s
    assert res.isolation.cpu_clock == planned_time_policy(cfg).clock
    if not memory_cgroup:
        assert res.isolation.cpu_clock == CLOCK_PROCESS


def test_a_sleeping_program_is_stopped_by_the_wall_cap():
    cfg = SandboxConfig(timeout_s=0.5, wall_cap_factor=4.0)
    res = _timed("import time\ntime.sleep(60)\n", cfg)
    assert res.stopped_by == STOP_WALL and res.failure() == "timed out (wall limit)"
    assert res.elapsed_s >= cfg.wall_cap_s == 2.0 and res.cpu_s < 0.5


def test_forked_children_count_against_the_limit():
    """Children that spin while the parent waits: their time is the run's. The cgroup counts them as
    they run; the process fallback only once reaped (documented), so it is checked where a cgroup counts."""
    cfg = SandboxConfig(timeout_s=1.5, wall_cap_factor=10.0)
    if planned_time_policy(cfg).clock not in CGROUP_CLOCKS:
        pytest.skip("no cgroup here counts a run's CPU time: the fallback counts reaped children only")
    forker = "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        while True:\n            pass\nos.wait()\n"
    res = _timed(forker, cfg)
    assert res.stopped_by == STOP_CPU and res.cpu_s >= 1.5
    # the parent used almost nothing: only the children's time reached the limit, and it stopped the run
    assert res.elapsed_s < 1.5 + SLACK_S


def _cores() -> int:
    """The cores this process may run on, fewer where its cgroup's CPU quota allows fewer: a container
    limited to 2 CPUs on a 64-core host (a CI runner) sees 64 in its affinity, and 192 spinners there
    left the honest program a hundredth of a core, stopped by the 10 s wall cap."""
    cores = len(os.sched_getaffinity(0))
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "max 100000" or "200000 100000"
            limit = Path("/sys/fs/cgroup", path.lstrip("/"), "cpu.max")
            quota, period = limit.read_text().split() if limit.is_file() else ("max", "1")
        elif "cpu" in controllers.split(","):  # v1: quota -1 when unlimited
            base = Path("/sys/fs/cgroup", controllers, path.lstrip("/"))
            files = (base / "cpu.cfs_quota_us", base / "cpu.cfs_period_us")
            quota, period = (f.read_text().strip() for f in files) if files[0].is_file() else ("-1", "1")
        else:
            continue
        if quota not in ("max", "-1"):
            cores = min(cores, math.ceil(int(quota) / int(period)))
    return cores


@contextlib.contextmanager
def _loaded_machine():
    """Spinning processes outside the sandbox, three per core this process may run on, each in a session
    of its own as other scorers' sandboxes are (the scheduler's autogroups share CPU between sessions)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN], start_new_session=True) for _ in range(3 * _cores())]
    try:
        time.sleep(0.3)
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_an_honest_program_on_a_loaded_machine_passes():
    """With three spinners a core the program gets under a third of one: its 0.5 s of CPU take well
    over 1 s of wall time. A 1 s wall-clock limit (the old policy: wall cap = the limit) fails it;
    the same 1 s judged on CPU time passes it, and says how little CPU it used."""
    cpu_judged = SandboxConfig(timeout_s=1.0, wall_cap_factor=10.0)
    wall_only = SandboxConfig(timeout_s=1.0, wall_cap_factor=1.0)
    with _loaded_machine():
        old = _timed(HONEST, wall_only)
        new = _timed(HONEST, cpu_judged)
    assert old.stopped_by == STOP_WALL and old.stdout == b""
    assert new.failure() is None and new.stdout == b"done\n"
    # its own 0.5 s of process time, less the start-up before it joined its cgroup (measured 0.498)
    assert 0.4 <= new.cpu_s < 1.0 < new.elapsed_s


def test_the_policy_is_recorded_and_bad_limits_refused():
    policy = planned_time_policy(SandboxConfig(timeout_s=5.0)).to_dict()
    assert policy["cpu_limit_s"] == 5.0 and policy["wall_cap_s"] == 20.0 and policy["counts"]
    assert policy["clock"] in (*CGROUP_CLOCKS, CLOCK_PROCESS)
    cgroup = planned_memory_bound(SandboxConfig()).kind in (MEM_CGROUP_V1, MEM_CGROUP_V2)
    assert (policy["clock"] in CGROUP_CLOCKS) == (cgroup and cgroup_plan().cpu)  # a run's cgroup counts where it can
    for bad in ({"timeout_s": 0}, {"timeout_s": float("nan")}, {"wall_cap_factor": 0.5}):
        with pytest.raises(ShiptwoError, match="timeout_s must be > 0 and wall_cap_factor >= 1"):
            SandboxConfig(**bad)


def test_input_larger_than_a_pipe_reaches_a_program_that_starts_reading_late():
    """A run's stdin (a replay batch's job: every sample's program, check and answers) can be far larger
    than a pipe holds. The watcher fed only what fit during its first 50 ms poll: a program that began
    reading later (a slow start on a loaded machine) waited for the rest until the wall cap, and a
    replay batch's wall cap is minutes."""
    size = 1 << 20
    late_reader = "import sys, time\ntime.sleep(0.3)\nsys.stdout.write(str(len(sys.stdin.buffer.read())))\n"
    res = _timed(late_reader, SandboxConfig(timeout_s=2.0), b"x" * size)
    assert res.failure() is None and res.stdout == str(size).encode(), res.failure()
    assert res.elapsed_s < 2.0 + SLACK_S  # not held to the wall cap (8 s) waiting for the rest of its input
