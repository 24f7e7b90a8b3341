"""The sandbox's first process: isolate, limit, then run the untrusted program.

Run by `distill.filters.sandbox` as `python -I -S -B sandbox_boot.py CONFIG_JSON`, never
imported: standard library only. It reports to the parent through the inherited status
file descriptor, one JSON object per line: `{"isolation": ...}` once set up, `{"error": ...}`
if setting up failed (then exit 125), `{"wait_status": N}` when the program ended.

Namespace mode (Linux user namespaces, or root):
    boot ── unshare(user, mount, net, pid) ── mounts ── fork ─► init (pid 1 of a new pid
    namespace: mounts a fresh /proc, reaps) ── fork ─► program (rlimits, exec python)
When boot dies (the parent kills its process group at the wall-clock limit), init gets
SIGKILL from PR_SET_PDEATHSIG, and the kernel kills every process left in the namespace,
including ones that left the process group with setsid().

Fallback mode (no namespaces): rlimits, then exec python with an audit hook that refuses
sockets, ctypes and spawning programs. A Python audit hook is not a security boundary.
"""

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
CLONE_NEWNET, CLONE_NEWPID = 0x40000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 16384, 1 << 18
AT_FDCWD, AT_RECURSIVE, AT_EMPTY_PATH = -100, 0x8000, 0x1000
OPEN_TREE_CLONE, O_CLOEXEC = 1, 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
# The new mount API's syscall numbers are shared by all architectures (since Linux 5.2).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
SETUP_FAILED = 125

# Fallback only: runs the program under an audit hook (see the module docstring).
PRELUDE = """\
import sys, runpy
BLOCKED_MODULES = {"_ctypes", "ctypes", "_posixsubprocess"}
BLOCKED_EVENTS = ("socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn",
                  "os.system", "subprocess.", "os.fork", "os.forkpty", "os.kill",
                  "os.killpg", "signal.pthread_kill")
def _hook(event, args):
    if event == "import" and args[0].split(".")[0] in BLOCKED_MODULES:
        raise ImportError(f"sandbox: importing {args[0]} is blocked")
    if event.startswith(BLOCKED_EVENTS):
        raise PermissionError(f"sandbox: {event} is blocked")
path = sys.argv[1]
sys.argv = [path]
sys.addaudithook(_hook)
runpy.run_path(path, run_name="__main__")
"""

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    """`struct mount_attr` of mount_setattr(2)."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def check(result, what):
    """Raise OSError with errno for a failed libc call."""
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def mount(source, target, fstype, flags, data=None):
    """Mount with the libc call, raising OSError on failure."""
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]),
          f"mount {target}")


def set_readonly(path, readonly, recursive):
    """Set or clear the read-only flag of the mount at path (and those below it)."""
    attr = MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY)
    check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(),
                       AT_RECURSIVE if recursive else 0, ctypes.byref(attr),
                       ctypes.sizeof(attr)), f"mount_setattr {path}")


def write_file(path, text):
    """Write a /proc control file."""
    with open(path, "w") as handle:
        handle.write(text)


def under(path, root):
    """Whether path is root or inside it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def setup_mounts(cfg, uid, gid):
    """Private read-only view of the filesystem: hidden paths empty, a tmpfs workdir."""
    work = cfg["workdir"]
    files = {}
    for name in os.listdir(work):
        with open(os.path.join(work, name), "rb") as handle:
            files[name] = handle.read()
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # A size-capped tmpfs: the program cannot fill the disk, and nothing it writes outlives it.
    mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['disk_mb']}m,mode=700,uid={cfg['run_uid']},gid={cfg['run_gid']}")
    for name, data in files.items():
        target = os.path.join(work, name)
        with open(target, "wb") as handle:
            handle.write(data)
        os.chown(target, cfg["run_uid"], cfg["run_gid"])
    hide = []
    for path in sorted(cfg["hide_paths"], key=len):
        if path != "/" and os.path.isdir(path) and not any(under(path, h) for h in hide):
            hide.append(path)
    keep = [k for k in cfg["keep_paths"] + [work] if any(under(k, h) for h in hide)]
    # Clone the trees to keep before covering their parents, then put them back on top.
    clones = [(k, check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, k.encode(),
                                     OPEN_TREE_CLONE | AT_RECURSIVE | O_CLOEXEC),
                        f"open_tree {k}")) for k in keep]
    for path in hide:
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.umask(0o022)
    for path, fd in clones:
        os.makedirs(path, exist_ok=True)
        check(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path.encode(),
                           MOVE_MOUNT_F_EMPTY_PATH), f"move_mount {path}")
        os.close(fd)
    set_readonly("/", True, recursive=True)
    set_readonly(work, False, recursive=False)


def enter_user_namespace(flags):
    """unshare(CLONE_NEWUSER | flags), mapping our own uid and gid to themselves."""
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWUSER | flags), "unshare")
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"{uid} {uid} 1")
    write_file("/proc/self/gid_map", f"{gid} {gid} 1")


def set_limits(cfg, supervisors=0):
    """The program's resource limits, soft = hard so it cannot raise them.

    `supervisors` counts processes of the same user namespace that RLIMIT_NPROC also sees
    (boot and init when not root), so that `nproc` counts the program's own processes.
    """
    mib = 1024 * 1024
    for limit, value in ((resource.RLIMIT_CPU, cfg["cpu_s"]),
                         (resource.RLIMIT_AS, cfg["memory_mb"] * mib),
                         (resource.RLIMIT_FSIZE, cfg["fsize_mb"] * mib),
                         (resource.RLIMIT_NOFILE, cfg["nofile"]),
                         (resource.RLIMIT_NPROC, cfg["nproc"] + supervisors),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))


def drop_root():
    """Become nobody: limits then apply (root ignores RLIMIT_NPROC) and root's files close."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def exec_program(cfg, fallback):
    """Replace this process with the program's interpreter."""
    os.chdir(cfg["workdir"])
    argv = [cfg["python"], "-I", "-S", "-B"]
    argv += ["-c", PRELUDE, cfg["program"]] if fallback else [cfg["program"]]
    os.execve(cfg["python"], argv, cfg["env"])


def run_program(cfg, report, as_root):
    """In the forked program process: limits, privileges, exec. Never returns."""
    try:
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        if as_root:
            drop_root()
            # A user namespace of its own makes RLIMIT_NPROC count only this sandbox's
            # processes, not every process nobody runs (e.g. other sandboxes).
            with contextlib.suppress(OSError):
                enter_user_namespace(0)
        set_limits(cfg, supervisors=0 if as_root else 2)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
        exec_program(cfg, fallback=False)
    except BaseException as error:  # noqa: BLE001 - report any failure, then die
        report({"error": f"cannot start the program: {error}"})
    os._exit(SETUP_FAILED)


def init_process(cfg, report, as_root):
    """Pid 1 of the new pid namespace: fresh /proc, start the program, reap, report."""
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        # Some containers mask parts of /proc, which forbids a new proc mount: hide it all.
        mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")
    program = os.fork()
    if program == 0:
        run_program(cfg, report, as_root)
    while True:  # reap orphans until the program itself ends; the kernel kills the rest
        pid, status = os.wait()
        if pid == program:
            report({"wait_status": status})
            os._exit(0)


def namespaces(cfg, report):
    """Isolate in namespaces; returns False (changing nothing) when they are unavailable."""
    as_root = os.geteuid() == 0
    try:
        if as_root:
            check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
        else:
            enter_user_namespace(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
    except OSError:
        return False
    setup_mounts(cfg, os.getuid(), os.getgid())
    report({"isolation": "namespaces"})
    init = os.fork()
    if init == 0:
        try:
            init_process(cfg, report, as_root)
        except BaseException as error:  # noqa: BLE001
            report({"error": f"init: {error}"})
        os._exit(SETUP_FAILED)
    _, status = os.waitpid(init, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else SETUP_FAILED)


def main():
    """Read the config, isolate, run."""
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)  # the program never gets it

    def report(message):
        os.write(status_fd, (json.dumps(message) + "\n").encode())

    try:
        if cfg["isolation"] in ("auto", "namespaces"):
            namespaces(cfg, report)  # returns only when namespaces are unavailable
            if cfg["isolation"] == "namespaces":
                raise OSError("namespaces are not available here (unshare failed)")
        report({"isolation": "rlimits"})
        if os.geteuid() == 0:
            drop_root()
        set_limits(cfg)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
        exec_program(cfg, fallback=True)
    except PermissionError as error:
        report({"error": f"{error} (as root, programs run as nobody, uid {NOBODY}: use an "
                         "interpreter nobody can read, or namespace isolation)"})
        os._exit(SETUP_FAILED)
    except BaseException as error:  # noqa: BLE001
        report({"error": str(error)})
        os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main()
