"""The sandbox bounds a run's memory as a whole, not only each process: children that each stay
under RLIMIT_AS but together exceed the run's bound are killed inside the run (a memory cgroup of its
own), the run says so, and its cgroup goes with it, also when the scorer is interrupted or killed;
where no cgroup exists (forced here by config) the fallback admits runs by their worst case against
the memory available, logged and recorded; honest HumanEval solutions pass either way."""

from __future__ import annotations

import _thread
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from shiptwo.errors import ShiptwoError
from shiptwo.measure.evals.humaneval import load_problems, score_samples
from shiptwo.measure.sandbox import SandboxConfig, planned_memory_bound, run_isolated, run_many
from shiptwo.measure.sandbox_memory import (
    CGROUP_PREFIX, MEM_ADMISSION, MEM_CGROUP_V1, MEM_CGROUP_V2, CgroupPlan, cgroup_plan, plan_bound,
)

PLAN = cgroup_plan()
NO_CGROUP = f"no writable memory cgroup here ({PLAN}): runs fall back to admission" if isinstance(PLAN, str) else ""
BOUND = 256 << 20
# four children of 100 MiB each: every one far under RLIMIT_AS (1 GiB), together over BOUND
FORKS = """import os
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        b = bytearray(100 << 20)
        for j in range(0, len(b), 4096):
            b[j] = 1
        os._exit(0)
    kids.append(pid)
print([os.waitpid(k, 0)[1] for k in kids])
"""
HANDFUL = ("HumanEval/0", "HumanEval/2", "HumanEval/33", "HumanEval/38", "HumanEval/148")


def _ours() -> list[Path]:
    """This process's run cgroups still on the host."""
    if isinstance(PLAN, str):
        return []
    mine = f"{CGROUP_PREFIX}{os.stat('/proc/self/ns/pid').st_ino}-{os.getpid()}-"
    return [d for _, parent in PLAN.parents for d in Path(parent).glob(mine + "*")]


def test_sample_bound_is_validated():
    with pytest.raises(ShiptwoError, match="sample_memory_bytes must be >= "):
        SandboxConfig(sample_memory_bytes=1 << 20)


@pytest.mark.skipif(bool(NO_CGROUP), reason=NO_CGROUP)
def test_children_together_over_the_sample_bound_are_stopped():
    cfg = SandboxConfig(timeout_s=10.0, sample_memory_bytes=BOUND)
    res = run_isolated(FORKS, b"", cfg)
    assert res.isolation.memory in (MEM_CGROUP_V1, MEM_CGROUP_V2)
    assert res.memory_exceeded and res.failure().startswith("out of memory: its processes together"), (res.stdout, res.failure())
    assert _ours() == []  # removed with the run
    # the same program under a bound that holds it runs clean: the bound stopped it, not RLIMIT_AS
    ok = run_isolated(FORKS, b"", replace(cfg, sample_memory_bytes=1 << 30))
    assert ok.failure() is None and ok.stdout == b"[0, 0, 0, 0]\n" and not ok.memory_exceeded


@pytest.mark.skipif(bool(NO_CGROUP), reason=NO_CGROUP)
def test_an_interrupted_run_leaves_no_cgroup_and_no_process():
    seen: list[int] = []

    def interrupt():
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            seen.extend(int(p) for d in _ours() for p in (d / "cgroup.procs").read_text().split())
            time.sleep(0.05)
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt)
    # interrupt_main does nothing where SIGINT is ignored, as in a shell's background job (`make test &`):
    # the run slept its 60 s out and returned
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watcher.start()
        with pytest.raises(KeyboardInterrupt):
            run_isolated("import time\ntime.sleep(60)\n", b"", SandboxConfig(timeout_s=60.0))
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen and _ours() == []
    assert [p for p in seen if _alive(p)] == []


@pytest.mark.skipif(bool(NO_CGROUP), reason=NO_CGROUP)
def test_cgroups_of_a_killed_scorer_are_swept_with_their_processes():
    """A scorer killed before its cleanup leaves its run's cgroup and the processes in it; the next
    probe removes both (the creator, identified by pid and start time, is gone)."""
    leave = ("import os, subprocess, sys\nfrom shiptwo.measure import sandbox_memory as m\n"
             "cg = m.RunCgroup(m.cgroup_plan(), 64 << 20, 4)\n"
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
             "cg.attach(p.pid)\nprint(cg.dirs[0], p.pid, flush=True)\nos._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", leave], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, check=True).stdout
    left, pid = out.split()
    assert Path(left).is_dir()
    cgroup_plan.cache_clear()  # the next probe, as a new scorer's
    try:
        assert isinstance(cgroup_plan(), CgroupPlan)
    finally:
        cgroup_plan.cache_clear()
    assert not Path(left).exists()
    deadline = time.monotonic() + 5
    while _alive(int(pid)):
        assert time.monotonic() < deadline, f"process {pid} of the stale cgroup survived the sweep"
        time.sleep(0.05)


def _spans(runs) -> list[tuple[float, ...]]:
    """Each run's (start, end) on the shared monotonic clock, as it printed them, in start order."""
    return sorted(tuple(map(float, r.stdout.split())) for r in runs)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_fallback_forced_by_config_is_logged_recorded_and_admits_by_worst_case(caplog):
    probe = SandboxConfig(memory_cgroup=False)
    plan_bound.cache_clear()  # logged once per shape and process: see it here
    with caplog.at_level(logging.WARNING, logger="shiptwo.measure.sandbox_memory"):
        capacity = planned_memory_bound(probe).capacity_bytes
    assert "no memory cgroup (not asked for (SandboxConfig.memory_cgroup=False))" in caplog.text
    # four processes of a sixth of the capacity each: one run's worst case is over half of it, so one at a time
    serial = SandboxConfig(timeout_s=10.0, memory_cgroup=False, max_processes=4, memory_bytes=capacity // 6, workers=3)
    bound = planned_memory_bound(serial)
    assert bound.to_dict() == {"kind": MEM_ADMISSION, "sample_bytes": serial.worst_case_bytes, "swap_bounded": False,
                               "concurrent_runs": 1, "capacity_bytes": capacity,
                               "why_no_cgroup": "not asked for (SandboxConfig.memory_cgroup=False)"}
    clock = "import time\nt = time.monotonic()\ntime.sleep(0.6)\nprint(t, time.monotonic())\n"
    runs = run_many([(clock, b"")] * 3, serial)
    assert all(r.failure() is None and r.isolation.memory == MEM_ADMISSION for r in runs)
    s = _spans(runs)
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(s)), s  # never two at once
    small = replace(serial, memory_bytes=128 << 20)  # worst cases that fit together: they do run at once
    assert planned_memory_bound(small).concurrent_runs >= 3
    s = _spans(run_many([(clock, b"")] * 3, small))
    assert any(later[0] < earlier[1] for earlier, later in pairwise(s)), s


@pytest.mark.parametrize("use_cgroup", [True, False], ids=["cgroup-where-possible", "forced-fallback"])
def test_honest_solutions_pass_and_a_memory_hog_fails_alone(use_cgroup):
    """Canonical solutions pass under the bound; a completion whose children together exceed it fails
    with the reason, and the run goes on. The bound is in the scoring run's isolation record."""
    problems = {t: p for t, p in load_problems().items() if t in HANDFUL}
    cfg = SandboxConfig(timeout_s=10.0, sample_memory_bytes=BOUND, memory_cgroup=use_cgroup)
    hog = "".join(f"    {line}\n" for line in FORKS.replace("print(", "(").splitlines())  # at every call, children reaped
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    samples.insert(1, {"task_id": "HumanEval/0", "completion": hog + problems["HumanEval/0"]["canonical_solution"]})
    res = score_samples(samples, problems, sandbox=cfg, require_all=False, allow_weak_isolation=True)
    results = [r["result"] for r in res.records]
    kind = res.isolation["memory_bound"]["kind"]
    assert res.isolation["memory"] == kind == planned_memory_bound(cfg).kind
    assert results[:1] + results[2:] == ["passed"] * len(problems)
    if kind == MEM_ADMISSION:
        assert res.isolation["memory_bound"]["why_no_cgroup"] and results[1] == "passed"  # only per process: it fits
    else:
        assert use_cgroup and results[1].startswith("failed: out of memory: its processes together"), results[1]


# A run under the caller's uid (weak isolation: not root, or drop_privileges off) raising its own
# cgroup's limit, then leaving its cgroups for the hierarchies' roots (v1 here; v2 alike).
LIFT = r'''
import os
own = {l.split(":")[1]: l.split(":", 2)[2] for l in open("/proc/self/cgroup").read().splitlines()}
d = "/sys/fs/cgroup/memory" + own.get("memory", "")
for f in ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes", "memory.max"):
    if os.path.exists(d + "/" + f):
        open(d + "/" + f, "w").write(str(8 << 30))
b = bytearray(200 << 20)
for j in range(0, len(b), 4096):
    b[j] = 1
for h in ("cpuacct", "memory", "pids", "unified"):
    if os.path.exists("/sys/fs/cgroup/%s/cgroup.procs" % h):
        open("/sys/fs/cgroup/%s/cgroup.procs" % h, "w").write(str(os.getpid()))
print("lifted")
'''


@pytest.mark.skipif(bool(NO_CGROUP), reason=NO_CGROUP)
def test_a_run_under_the_callers_uid_is_not_recorded_as_held_by_its_cgroup():
    """Sharing the caller's uid, a run may write its cgroup's files: it lifted its memory bound (200 MiB
    under 128 MiB, not killed) and left its cgroups (CPU time no longer counted, `remove` no longer
    kills it), while the record said its processes were bounded and counted as a whole."""
    from shiptwo.measure.sandbox import planned_time_policy

    weak = SandboxConfig(sample_memory_bytes=128 << 20, drop_privileges=False, private_root=False)
    run = run_isolated(LIFT, b"", weak)
    if run.stdout.strip() != b"lifted":  # this kernel or mount refused the writes: nothing to record
        pytest.skip(f"the run could not lift its cgroup here ({run.failure()}: {run.stderr_tail.strip()[-200:]})")
    assert planned_memory_bound(weak).to_dict()["run_can_lift"] is True
    assert "can leave it" in planned_time_policy(weak).counts
    if os.geteuid() == 0:  # its own uid: the cgroup's files are root's, and it has no /sys
        assert "run_can_lift" not in planned_memory_bound(SandboxConfig()).to_dict()
        assert "can leave it" not in planned_time_policy(SandboxConfig()).counts
