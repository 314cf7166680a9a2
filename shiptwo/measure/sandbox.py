"""Run untrusted Python programs one process each, isolated; hand back what they wrote, judge nothing.

The caller gets the exit status and the (capped) stdout and decides what they mean; for untrusted
code they are an adversary's data (HumanEval scoring takes only plain data from it). Each program runs in a fresh interpreter in its own
session, with a scrubbed environment, resource limits (address space, CPU, processes, file size,
open files, no core dumps) and a time limit after which every process it started is killed: the CPU
time its processes used, with a generous wall-clock cap for one that sleeps (`sandbox_cpu`).
As root (the strongest isolation, recorded as such in `SandboxRun.isolation`):
- its own mount namespace whose root is an empty read-only tmpfs holding only the interpreter, the
  shared libraries it loads and its standard library (site-packages hidden), read-only; a few /dev
  nodes; a private /tmp and /work (size-capped tmpfs, gone with the process). The problem set, the
  checks, the virtual environment and the repository are not in it, and there is no /proc;
- its own empty network namespace, and (with the private root) its own IPC namespace: no shared memory outlives it;
- a uid of its own, so the process limit binds and every process it spawned is found and killed;
- (wherever a memory cgroup is writable, root or not) a cgroup of its own bounding all its processes'
  memory together, `sample_memory_bytes`; else admission against the memory available (`sandbox_memory`).
Each is probed once; where one is refused (not root, or the kernel says no) the run falls back —
a temporary directory of the host, sockets blocked by an audit hook — logs why, and the isolation
record says filesystem and /tmp "none" (network "audit-hook") rather than pretending (HumanEval
scoring refuses such runs unless explicitly allowed). The program itself comes on stdin, ahead of its
input, never from a file a leftover process of another run could rewrite.

Its parts: `sandbox_bootstrap` (what the child runs before the program), `sandbox_host` (the
interpreter and the private root's contents), `sandbox_uids` (a uid a run, and the sweep that kills
everything it started), `sandbox_memory` (the bound on a run's memory as a whole, its cgroup),
`sandbox_cpu` (the time limit, judged on CPU time), `sandbox_shipped`
(this package's modules shipped in as source).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from shiptwo.errors import ShiptwoError
from shiptwo.measure.sandbox_bootstrap import BOOTSTRAP, PY_FLAGS
from shiptwo.measure.sandbox_cpu import (
    CLOCK_CGROUP_V1, CLOCK_CGROUP_V2, CLOCK_PROCESS, WALL_CAP_FACTOR, TimePolicy, process_cpu_seconds, time_policy, watch,
)
from shiptwo.measure.sandbox_host import root_plan, sandbox_python
from shiptwo.measure.sandbox_memory import (
    MEM_ADMISSION, MEM_CGROUP_V1, MEM_CGROUP_V2, MIN_SAMPLE_BYTES, MemoryBound, RunCgroup, bounded, cgroup_plan,
    plan_bound,
)
from shiptwo.measure.sandbox_uids import kill_uid, next_uid

log = logging.getLogger(__name__)

NET_NAMESPACE = "namespace"
NET_AUDIT_HOOK = "audit-hook"
FS_PRIVATE_ROOT = "private-root"
TMP_PRIVATE = "private"
NONE = "none"
OWN_UID = "own-uid"


@dataclass
class SandboxConfig:
    timeout_s: float = 5.0  # CPU time of all the run's processes together (`sandbox_cpu`: the clock, what it counts)
    wall_cap_factor: float = WALL_CAP_FACTOR  # the wall-clock cap is timeout_s x this: ends a run that sleeps or blocks
    memory_bytes: int = 1 << 30  # RLIMIT_AS, each process
    sample_memory_bytes: int = 1 << 30  # all of a run's processes together (and the tmpfs they write): its memory cgroup
    memory_cgroup: bool = True  # False: the admission fallback even where a cgroup is possible (sandbox_memory)
    max_processes: int = 16  # RLIMIT_NPROC, per sandbox uid
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE (stdout/stderr files included)
    max_open_files: int = 64
    tmp_bytes: int = 32 << 20  # size of the private /tmp and of /work, each
    drop_privileges: bool = True  # only possible as root
    isolate_network: bool = True  # namespace as root, audit hook otherwise
    private_root: bool = True  # mount namespace with a minimal root, only possible as root
    workers: int = 2

    def __post_init__(self):
        if self.workers < 1:  # never clamped to 1 where used: a bad --workers is an error
            raise ShiptwoError(f"sandbox: --workers must be >= 1, got {self.workers}")
        if not (self.timeout_s > 0 and self.wall_cap_factor >= 1):  # nan fails too
            raise ShiptwoError(f"sandbox: timeout_s must be > 0 and wall_cap_factor >= 1, got {self.timeout_s} and "
                               f"{self.wall_cap_factor}")
        if self.sample_memory_bytes < MIN_SAMPLE_BYTES:
            raise ShiptwoError(f"sandbox: sample_memory_bytes must be >= {MIN_SAMPLE_BYTES} (an interpreter needs ~10 MiB), "
                               f"got {self.sample_memory_bytes}")

    @property
    def worst_case_bytes(self) -> int:
        """What a run may hold without a memory cgroup: every process its full address space, and both tmpfs full."""
        return self.max_processes * self.memory_bytes + 2 * self.tmp_bytes

    @property
    def wall_cap_s(self) -> float:
        return self.timeout_s * self.wall_cap_factor


@dataclass(frozen=True)
class Isolation:
    """What isolation a run actually got, for the results (never what was merely asked for)."""

    network: str  # NET_NAMESPACE or NET_AUDIT_HOOK
    filesystem: str  # FS_PRIVATE_ROOT or "none"
    tmp: str  # TMP_PRIVATE or "none"
    user: str  # "own-uid" or "caller"
    memory: str  # sandbox_memory's MEM_CGROUP_V2 / MEM_CGROUP_V1 (all processes together) or MEM_ADMISSION
    cpu_clock: str = CLOCK_PROCESS  # sandbox_cpu's clock the time limit was judged on

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SandboxRun:
    stdout: bytes  # untrusted
    returncode: int
    timed_out: bool
    elapsed_s: float
    isolation: Isolation
    uid: int
    stderr_tail: str = ""  # for diagnosis only
    memory_exceeded: bool = False  # the kernel killed a process of the run: together they reached the run's bound
    stopped_by: str | None = None  # with timed_out: sandbox_cpu's STOP_CPU ("cpu time limit") or STOP_WALL ("wall limit")
    cpu_s: float | None = None  # CPU time the clock counted (the cgroup's after the run; else its last reading)

    def failure(self) -> str | None:
        """Why the process did not finish normally (None when it exited with status 0)."""
        if self.memory_exceeded:
            return f"out of memory: its processes together reached the sandbox's bound ({self.isolation.memory}), killed"
        if self.timed_out:
            return f"timed out ({self.stopped_by})" if self.stopped_by else "timed out"
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        if self.returncode != 0:
            return f"exited with status {self.returncode}"
        return None



_PROBE = "import sys\nsys.stdout.write('ok')\n"


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether a sandbox can have its own network namespace here (root, and the kernel allows it);
    otherwise sockets are blocked by an audit hook, logged and recorded as such."""
    if os.geteuid() != 0:
        return False
    refused = _probe_refusal(None, netns=True)
    if refused is not None:
        log.warning("sandbox: the kernel refused a network namespace (%s): sockets are blocked by an audit hook only", refused)
        return False
    return True


def _probe_refusal(plan, netns: bool):
    """None when a probe program runs in a sandbox built so (`plan`, `netns`), else why it did not."""
    probe = _run(_PROBE, b"", SandboxConfig(timeout_s=30), plan, netns=netns, memory=NONE)
    return None if probe.stdout == b"ok" else (probe.stderr_tail.strip().splitlines()[-1:] or probe.failure())


@functools.lru_cache(maxsize=1)
def private_root_plan() -> tuple[str, tuple, tuple] | None:
    """The minimal root's plan when this machine can build one (a probe program ran in it), else
    None with the reason logged: the caller then records filesystem and /tmp isolation "none"."""
    if os.geteuid() != 0:
        log.warning("sandbox: not root, so no private root: the file system and /tmp are not isolated")
        return None
    plan = root_plan()
    if plan is None:
        log.warning("sandbox: `ldd` unavailable, so no private root: the file system and /tmp are not isolated")
        return None
    refused = _probe_refusal(plan, netns=False)
    if refused is not None:
        log.warning("sandbox: the kernel refused a private root (%s): the file system and /tmp are not isolated", refused)
        return None
    return plan



def _limits(cfg: SandboxConfig) -> dict[str, int]:
    return {
        "RLIMIT_AS": cfg.memory_bytes,
        "RLIMIT_CPU": int(cfg.timeout_s) + 1,
        "RLIMIT_NPROC": cfg.max_processes,
        "RLIMIT_FSIZE": cfg.max_file_bytes,
        "RLIMIT_NOFILE": cfg.max_open_files,
        "RLIMIT_CORE": 0,
    }


def _isolation(private_root: bool, netns: bool, own_uid: bool, memory: str, cpu_clock: str) -> Isolation:
    return Isolation(network=NET_NAMESPACE if netns else NET_AUDIT_HOOK, filesystem=FS_PRIVATE_ROOT if private_root else NONE,
                     tmp=TMP_PRIVATE if private_root else NONE, user=OWN_UID if own_uid else "caller", memory=memory,
                     cpu_clock=cpu_clock)


def _cpu_clock(memory: str) -> str:
    """The clock a run's time limit is judged on: its cgroup's CPU count where it has a cgroup that counts."""
    if memory in (MEM_CGROUP_V1, MEM_CGROUP_V2) and cgroup_plan().cpu:
        return CLOCK_CGROUP_V2 if memory == MEM_CGROUP_V2 else CLOCK_CGROUP_V1
    return CLOCK_PROCESS


def planned_time_policy(cfg: SandboxConfig) -> TimePolicy:
    """How runs under `cfg` have their time limited on this machine: the clock, the CPU limit, the wall cap."""
    bound = planned_memory_bound(cfg)
    return time_policy(_cpu_clock(bound.kind), cfg.timeout_s, cfg.wall_cap_s, run_can_leave=bool(bound.run_can_lift))


def planned_memory_bound(cfg: SandboxConfig) -> MemoryBound:
    """How runs under `cfg` have their memory bounded on this machine (probed once; the fallback logged).
    A cgroup binds a run that shares the caller's uid only while the run leaves its files alone: recorded."""
    bound = plan_bound(cfg.memory_cgroup, cfg.sample_memory_bytes, cfg.max_processes, cfg.worst_case_bytes)
    if bound.kind == MEM_ADMISSION or _own_uid(cfg):
        return bound
    _warn_liftable()
    return replace(bound, run_can_lift=True)


def _own_uid(cfg: SandboxConfig) -> bool:
    return cfg.drop_privileges and os.geteuid() == 0


@functools.cache
def _warn_liftable() -> None:
    log.warning("sandbox: runs share this process's uid, so each may lift its cgroup's memory bound and leave the "
                "cgroup (its CPU time then uncounted, its processes no longer killed with it): recorded as run_can_lift")


def planned_isolation(cfg: SandboxConfig) -> Isolation:
    """The isolation `run_isolated` gives runs under `cfg` on this machine (probed once), before any run."""
    plan = private_root_plan() if cfg.private_root else None
    memory = planned_memory_bound(cfg).kind
    return _isolation(plan is not None, cfg.isolate_network and network_namespace_available(),
                      _own_uid(cfg), memory, _cpu_clock(memory))


def run_isolated(program: str, stdin: bytes = b"", cfg: SandboxConfig | None = None) -> SandboxRun:
    """Run one Python program (as `__main__`, `stdin` on its standard input) in its own sandbox, its
    processes' memory bounded together (a cgroup of its own, or admission); never raises for what the
    program does."""
    cfg = cfg or SandboxConfig()
    plan = private_root_plan() if cfg.private_root else None
    bound = planned_memory_bound(cfg)
    with bounded(bound, cfg.max_processes) as cgroup:
        return _run(program, stdin, cfg, plan, netns=cfg.isolate_network and network_namespace_available(),
                    memory=bound.kind, cgroup=cgroup)


def _run(program: str, stdin: bytes, cfg: SandboxConfig, plan: tuple | None, netns: bool, memory: str,
         cgroup: RunCgroup | None = None) -> SandboxRun:
    unprivileged = _own_uid(cfg)
    uid = next_uid() if unprivileged else os.geteuid()
    python = plan[0] if plan else sandbox_python(unprivileged)
    base = Path(tempfile.mkdtemp(prefix="shiptwo-sandbox-"))
    start = time.monotonic()
    try:
        boot_cfg = {"netns": netns, "limits": _limits(cfg),
                    "uid": uid if unprivileged else None, "private_root": plan is not None}
        if plan:
            (base / "root").mkdir()
            boot_cfg.update(root=str(base / "root"), binds=plan[1], hide=plan[2], tmp_bytes=cfg.tmp_bytes)
            env = {"HOME": "/work", "TMPDIR": "/tmp"}
        else:
            work, home = base / "work", base / "work" / "home"
            home.mkdir(parents=True)
            if unprivileged:
                for p in (work, home):
                    os.chown(p, uid, uid)
            os.chmod(base, 0o755)
            boot_cfg["cwd"] = str(work)
            env = {"HOME": str(home), "TMPDIR": str(work)}
        env.update(PATH="/usr/bin:/bin", LANG="C.UTF-8", PYTHONHASHSEED="0")
        # The program comes on stdin, ahead of its input, and its output goes to unlinked files: nothing
        # a trusted run reads or writes has a path another sandbox's leftovers could find and rewrite.
        code = program.encode("utf-8")
        stdin = b"%d\n" % len(code) + code + stdin
        with tempfile.TemporaryFile(dir=base) as out, tempfile.TemporaryFile(dir=base) as err:
            proc = subprocess.Popen(
                [python, *PY_FLAGS, "-c", BOOTSTRAP, json.dumps(boot_cfg)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=base, env=env,
                close_fds=True, start_new_session=True,
            )
            counted = cgroup is not None and cgroup.cpu_seconds() is not None
            clock = cgroup.cpu_seconds if counted else functools.partial(process_cpu_seconds, proc.pid)
            try:  # reaped however this ends (a limit, an interrupt): nothing it started outlives the run
                if cgroup is not None:  # before it reads its program from stdin, so before anything untrusted runs
                    _attach(proc, cgroup)
                stopped_by, cpu_s = watch(proc, stdin, clock, cfg.timeout_s, cfg.wall_cap_s)
            finally:
                _reap(proc, uid if unprivileged else None, python)
            cpu_s = cgroup.cpu_seconds() if counted else cpu_s
            out.seek(0)
            stdout = out.read(cfg.max_file_bytes)
            err.seek(max(0, os.fstat(err.fileno()).st_size - 2000))
            stderr_tail = err.read().decode("utf-8", "replace")
        isolation = _isolation(plan is not None, boot_cfg["netns"], unprivileged, memory,
                               _cpu_clock(memory) if counted else CLOCK_PROCESS)
        return SandboxRun(stdout=stdout, returncode=proc.returncode, timed_out=stopped_by is not None,
                          elapsed_s=time.monotonic() - start, isolation=isolation, uid=uid, stderr_tail=stderr_tail,
                          memory_exceeded=cgroup is not None and cgroup.oom_killed(), stopped_by=stopped_by, cpu_s=cpu_s)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _attach(proc: subprocess.Popen, cgroup: RunCgroup) -> None:
    try:
        cgroup.attach(proc.pid)
    except OSError as exc:
        raise ShiptwoError(f"sandbox: cannot move the run into its memory cgroup {cgroup.dirs[0]} ({exc.strerror})") from None


def _reap(proc: subprocess.Popen, uid: int | None, python: str) -> None:
    """Kill the program's process group and, when it ran as its own uid, every process of that uid."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()
    proc.wait()
    if uid is not None:
        kill_uid(uid, python)


def run_many(jobs: Sequence[tuple[str, bytes]], cfg: SandboxConfig | None = None) -> list[SandboxRun]:
    """Run many (program, stdin) jobs, `cfg.workers` at a time (each in its own sandbox); order kept."""
    cfg = cfg or SandboxConfig()
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        return list(pool.map(lambda job: run_isolated(job[0], job[1], cfg), jobs))
