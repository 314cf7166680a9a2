"""The memory of a whole sandbox run, bounded: all its processes together, not only each one.

RLIMIT_AS bounds each process and RLIMIT_NPROC their number, so without more one run may hold
processes x address space (16 x 1 GiB by default), and two scoring runs side by side more than a
24 GB host has. Where a memory cgroup is writable (v2: memory.max, memory.swap.max 0, pids.max; v1:
memory.limit_in_bytes, memory.memsw.limit_in_bytes where swap is accounted, pids.max where that
hierarchy is mounted) each run gets cgroups of its own under the caller's, so its processes together,
and the tmpfs pages they write, stay under the bound, the kernel OOM-kills inside the run only, and
the run can see it happened. The same cgroups count the run's CPU time (v2 cpu.stat, v1 a cpuacct
hierarchy where one is writable): `sandbox_cpu` judges the run's time limit on it. They are removed after the run, also when it is interrupted; ones a
killed scorer left are swept (their processes killed) when the next scorer here probes.
Where none is (not root, no delegation, a container) the fallback is admission: this process starts
a run only while the worst cases of its runs going (processes x address space + the private tmpfs)
fit in the memory available when first measured, one at least; it cannot count other processes'
runs. Either way the bound is recorded (`MemoryBound`) and the fallback logged with its reason.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from shiptwo.errors import ShiptwoError

log = logging.getLogger(__name__)

MEM_CGROUP_V2 = "cgroup-v2"
MEM_CGROUP_V1 = "cgroup-v1"
MEM_ADMISSION = "admission"
MIN_SAMPLE_BYTES = 64 << 20  # an interpreter with the bootstrap needs ~10 MiB; below this nothing honest runs
CGROUP_PREFIX = "shiptwo-sandbox-"  # + creator pid, its start time, a counter: a dead creator's are stale
_RMDIR_TRIES = 100  # x 20 ms: killed processes leave their cgroup as they finish exiting


@dataclass(frozen=True)
class MemoryBound:
    """How a run's memory was bounded, for the results (what this machine gave, not what was asked)."""

    kind: str  # MEM_CGROUP_V2, MEM_CGROUP_V1 or MEM_ADMISSION
    sample_bytes: int  # a run's processes together: the cgroup's limit, or (admission) their worst case
    swap_bounded: bool  # cgroup: swap counted in the bound too; admission: False
    pids_max: int | None = None  # cgroup: pids.max, where the pids controller is there
    concurrent_runs: int | None = None  # admission: runs whose worst cases fit in the capacity together
    capacity_bytes: int | None = None  # admission: MemAvailable when first measured
    why_no_cgroup: str = ""  # admission: why
    # cgroup: True where the run shares the caller's uid, so may write its cgroup's files (lift the
    # bound, leave the cgroup): the bound then holds an unaware program, not a hostile one
    run_can_lift: bool | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}


@dataclass(frozen=True)
class CgroupPlan:
    version: int  # 2 or 1
    parents: tuple[tuple[str, str], ...]  # (controller, directory runs' cgroups go under): v2 one, v1 memory [+ pids]
    swap: bool  # swap is accounted (v2 memory.swap.max, v1 memory.memsw.limit_in_bytes), so bounded too
    pids: bool  # a pids.max of its own as well
    cpu: bool = False  # the run's cgroup counts its CPU time: v2 cpu.stat (always there), v1 a cpuacct hierarchy


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)  # mountinfo writes ' ' as \040


def _own_dirs() -> dict[str, Path]:
    """This process's cgroup directory per controller ("" for the v2 hierarchy), where mounted here."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for ctrl in ctrls.split(",") if ctrls else [""]:
            own[ctrl] = path
    dirs = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _src, opts) = left.split(), right.split()[:3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        for ctrl in ([""] if fstype == "cgroup2" else [o for o in opts.split(",") if o in ("memory", "pids", "cpuacct")]):
            path = own.get(ctrl)
            if path is not None and ctrl not in dirs and (path + "/").startswith(root.rstrip("/") + "/"):
                dirs[ctrl] = Path(point, os.path.relpath(path, root))
    return dirs


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


@functools.lru_cache(maxsize=1)
def cgroup_plan() -> CgroupPlan | str:
    """Where this machine lets a run have a memory cgroup (probed once: created, limited, a process
    attached, removed), or why not. Stale cgroups of dead scorers are swept on the way."""
    try:
        dirs = _own_dirs()
    except (OSError, ValueError) as exc:
        return f"cannot read this process's cgroups ({exc})"
    v2 = dirs.get("")
    if v2 is not None and "memory" in _read(v2 / "cgroup.controllers").split():
        ctrls = ["memory"] + (["pids"] if "pids" in _read(v2 / "cgroup.controllers").split() else [])
        if not set(ctrls) <= set(_read(v2 / "cgroup.subtree_control").split()):
            try:
                _write(v2 / "cgroup.subtree_control", " ".join("+" + c for c in ctrls))
            except OSError as exc:
                return f"cgroup v2: cannot enable {'+'.join(ctrls)} for children of {v2} ({exc.strerror})"
        plan = CgroupPlan(2, (("memory", str(v2)),), swap=(v2 / "memory.swap.max").exists(), pids="pids" in ctrls,
                          cpu=(v2 / "cpu.stat").exists())
    elif "memory" in dirs:
        # cpuacct only where writable: a read-only one must not cost the run its memory cgroup
        cpu = "cpuacct" in dirs and os.access(dirs["cpuacct"], os.W_OK)
        parents = (("memory", str(dirs["memory"])),) + ((("pids", str(dirs["pids"])),) if "pids" in dirs else ()) \
            + ((("cpuacct", str(dirs["cpuacct"])),) if cpu else ())
        plan = CgroupPlan(1, parents, swap=(dirs["memory"] / "memory.memsw.limit_in_bytes").exists(), pids="pids" in dirs,
                          cpu=cpu)
    else:
        return "no memory controller mounted (neither cgroup v2 with memory nor a v1 memory hierarchy)"
    _sweep_stale(plan)
    try:
        probe = RunCgroup(plan, MIN_SAMPLE_BYTES, 4)
    except OSError as exc:
        return f"cgroup v{plan.version}: cannot create a limited cgroup under {plan.parents[0][1]} ({exc.strerror})"
    helper = subprocess.Popen([sys.executable, "-S", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        probe.attach(helper.pid)
    except OSError as exc:
        return f"cgroup v{plan.version}: cannot move a process into {probe.dirs[0]} ({exc.strerror})"
    finally:
        helper.communicate(b"")
        probe.remove()
    return plan


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


_counter_lock = threading.Lock()
_counter = itertools.count()


class RunCgroup:
    """One run's cgroups (one per hierarchy), limited on creation; `remove` kills what is left in them."""

    def __init__(self, plan: CgroupPlan, sample_bytes: int, max_processes: int):
        self.version = plan.version
        self._cpu_file: Path | None = None  # what counts the run's CPU time, where its cgroups do
        with _counter_lock:
            n = next(_counter)
        name = f"{CGROUP_PREFIX}{_pid_namespace()}-{os.getpid()}-{_start_time(os.getpid())}-{n}"
        self.dirs: list[Path] = []
        try:
            for ctrl, parent in plan.parents:
                d = Path(parent, name)
                d.mkdir()
                self.dirs.append(d)
                if self.version == 2:
                    _write(d / "memory.max", str(sample_bytes))
                    if plan.swap:  # none at all: memory.max is then the bound on memory + swap
                        _write(d / "memory.swap.max", "0")
                    if plan.pids:
                        _write(d / "pids.max", str(max_processes))
                elif ctrl == "memory":
                    _write(d / "memory.limit_in_bytes", str(sample_bytes))
                    if plan.swap:  # memory + swap, so swap is no way around the bound
                        _write(d / "memory.memsw.limit_in_bytes", str(sample_bytes))
                elif ctrl == "pids":
                    _write(d / "pids.max", str(max_processes))
                if plan.cpu and ctrl == ("memory" if self.version == 2 else "cpuacct"):
                    self._cpu_file = d / ("cpu.stat" if self.version == 2 else "cpuacct.usage")
        except OSError:
            self.remove()
            raise

    def attach(self, pid: int) -> None:
        """Move process `pid` into every one of the run's cgroups (before it runs anything untrusted)."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def cpu_seconds(self) -> float | None:
        """CPU time every process of the run has used so far, children and orphans included (None where
        the cgroups do not count it, or the count cannot be read)."""
        if self._cpu_file is None:
            return None
        text = _read(self._cpu_file)
        try:
            if self.version == 1:
                return int(text) / 1e9
            return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("usage_usec ")) / 1e6
        except (ValueError, IndexError, StopIteration):
            return None

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for exceeding the bound."""
        text = _read(self.dirs[0] / ("memory.events" if self.version == 2 else "memory.oom_control"))
        counts = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
        return int(counts.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        """Kill every process left in the run's cgroups and remove them; one that will not go is logged
        (the next probe of a later scorer sweeps it once this process is gone)."""
        for d in reversed(self.dirs):
            _remove(d)
        self.dirs = [d for d in self.dirs if d.exists()]


def _remove(d: Path) -> None:
    for _ in range(_RMDIR_TRIES):
        for pid in _read(d / "cgroup.procs").split():
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:  # not ours to remove (another user's): waiting will not help
                log.warning("sandbox: could not remove the cgroup %s (%s)", d, exc.strerror)
                return
            time.sleep(0.02)
    log.warning("sandbox: could not remove the run's cgroup %s (processes still in it)", d)


def _sweep_stale(plan: CgroupPlan) -> None:
    """Remove run cgroups whose creator is gone (a scorer killed before its cleanup ran), killing what they hold."""
    pidns = _pid_namespace()
    for _, parent in plan.parents:
        for d in Path(parent).glob(CGROUP_PREFIX + "*"):
            ns, pid, start = (d.name[len(CGROUP_PREFIX):].split("-") + ["", "", ""])[:3]
            if ns == pidns and pid.isdigit() and _start_time(int(pid)) != start:  # another namespace's pids mean nothing here
                log.warning("sandbox: removing %s, left by a scorer that is gone", d)
                _remove(d)


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes; without it no honest fallback bound exists."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    raise ShiptwoError("sandbox: no memory cgroup and no MemAvailable in /proc/meminfo: cannot bound the runs' memory")


class _Admission:
    """This process's runs under the fallback: a run starts only while the worst cases of those going,
    its own included, fit in the capacity (one always may start)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._held = 0
        self._capacity: int | None = None

    def capacity(self) -> int:
        with self._cond:
            if self._capacity is None:
                self._capacity = mem_available()
            return self._capacity

    @contextlib.contextmanager
    def admit(self, worst_case: int):
        capacity = self.capacity()
        with self._cond:
            while self._held and self._held + worst_case > capacity:
                self._cond.wait()
            self._held += worst_case
        try:
            yield
        finally:
            with self._cond:
                self._held -= worst_case
                self._cond.notify_all()


_ADMISSION = _Admission()


@functools.cache
def plan_bound(use_cgroup: bool, sample_bytes: int, max_processes: int, worst_case: int) -> MemoryBound:
    """The bound runs of this shape get here (the fallback logged once per shape, with why)."""
    cg = cgroup_plan() if use_cgroup else "not asked for (SandboxConfig.memory_cgroup=False)"
    if isinstance(cg, CgroupPlan):
        return MemoryBound(MEM_CGROUP_V2 if cg.version == 2 else MEM_CGROUP_V1, sample_bytes, swap_bounded=cg.swap,
                           pids_max=max_processes if cg.pids else None)
    capacity = _ADMISSION.capacity()
    bound = MemoryBound(MEM_ADMISSION, worst_case, swap_bounded=False, concurrent_runs=max(1, capacity // worst_case),
                        capacity_bytes=capacity, why_no_cgroup=cg)
    log.warning("sandbox: no memory cgroup (%s): a run's processes are bounded one by one, together up to %d MiB; "
                "this process runs %d at a time against %d MiB available%s", cg, worst_case >> 20,
                bound.concurrent_runs, capacity >> 20, "" if worst_case <= capacity else
                ": one run alone may exceed what is available, the host is NOT protected")
    return bound


@contextlib.contextmanager
def bounded(bound: MemoryBound, max_processes: int):
    """Around one run: its cgroup (yielded, removed after the run however it ends) or, in the
    fallback, its admission (None yielded)."""
    if bound.kind == MEM_ADMISSION:
        with _ADMISSION.admit(bound.sample_bytes):
            yield None
        return
    plan = cgroup_plan()
    try:
        cg = RunCgroup(plan, bound.sample_bytes, max_processes)
    except OSError as exc:
        raise ShiptwoError(f"sandbox: cannot create the run's memory cgroup under {plan.parents[0][1]} ({exc.strerror})") from None
    try:
        yield cg
    finally:
        cg.remove()
