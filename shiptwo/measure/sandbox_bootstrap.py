"""The sandbox's bootstrap: the first code a sandboxed child runs, as the caller's user. It builds the
private root (or falls back), sets the resource limits, drops privileges, then reads the program from
stdin and runs it. It holds no secret; `sandbox._run` passes it its configuration as JSON in argv."""

# -S: no site (no site-packages), -s: no user site, -P: no script directory on sys.path. Not -I,
# which would ignore the fixed PYTHONHASHSEED the sandbox sets; the environment is ours, so -E adds nothing.
# The bootstrap runs the program in its own interpreter once isolated (it holds nothing secret).
PY_FLAGS = ("-s", "-S", "-P")

# The bootstrap runs first in the child, as the caller's user: it builds the private root (or
# falls back), sets the limits, drops privileges, then runs the program. It holds no secret.
BOOTSTRAP = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
libc = ctypes.CDLL(None, use_errno=True)
def _ok(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, what + ": " + os.strerror(err))
def _mount(src, dst, fstype, flags, data):
    enc = lambda s: None if s is None else s.encode()
    _ok(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)
uid = cfg["uid"]
if cfg["private_root"]:
    _ok(libc.unshare(0x20000 | 0x8000000 | (0x40000000 if cfg["netns"] else 0)), "unshare")  # mount, IPC[, net]
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    root = cfg["root"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    for src, kind in cfg["binds"]:
        dst = root + src
        if kind == "dir":
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "a").close()
        _mount(src, dst, None, MS_BIND | MS_REC, None)
        _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (0 if kind == "dev" else MS_NODEV), None)
    for hidden in cfg["hide"]:
        _mount("tmpfs", root + hidden, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=4,mode=555")
    for d, mode in (("/tmp", "1777"), ("/work", "700")):
        os.makedirs(root + d, exist_ok=True)
        owner = "" if uid is None else ",uid=%d,gid=%d" % (uid, uid)
        _mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, "size=%d,nr_inodes=4096,mode=%s%s" % (cfg["tmp_bytes"], mode, owner))
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    os.chroot(root)
    cfg["cwd"] = "/work"
elif cfg["netns"]:
    _ok(libc.unshare(0x40000000), "unshare")
for name, value in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if uid is not None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
if not cfg["netns"]:
    def _guard(event, args):
        if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.sendto"):
            raise PermissionError("network access is blocked in the sandbox")
    sys.addaudithook(_guard)
os.chdir(cfg["cwd"])
del cfg, libc, _ok, _mount
sys.argv = ["program.py"]
_src = sys.stdin.buffer.read(int(sys.stdin.buffer.readline())).decode("utf-8")  # the rest of stdin is the program's
exec(compile(_src, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""
