"""Run model-written Python in a jail and say what happened.

The boundary is the kernel (mode "bubblewrap", the default): every call runs under bubblewrap in
new user, mount, pid, ipc, uts and network namespaces, on a read-only root that holds only the
system libraries and the Python installation, with a size-limited tmpfs as its working directory
and only writable place, as an unprivileged uid without capabilities or further user namespaces,
with an empty environment. Inside, the bootstrap sets kernel limits (CPU seconds, address space,
file size, open files, processes) before the code runs; the parent enforces a wall-clock
timeout and an output cap and kills the whole jail at the end (`jail.py` builds it).

An audit hook still refuses process creation, sockets, native code loading and writes outside
the working directory, but only to label refusals for the trace: Python's audit hooks are not a
security boundary, and C modules bypass them. When the jail cannot be set up, tool calls refuse
to run (`IsolationUnavailable`) unless MIND_MATH__SANDBOX=unsafe-no-isolation says the
environment is trusted; that mode is today's plain child process (rlimits, a network namespace
when possible, the audit hook) and is recorded on every trace row.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mind_assets.math_traces.jail import (
    JAIL_GID,
    JAIL_UID,
    bwrap_argv,
    jail_layout,
    map_user_namespace,
)

log = logging.getLogger(__name__)

OUTCOMES = (
    "ok",  # ran to the end, exit status 0
    "error",  # the code raised (traceback in stderr)
    "refused",  # the code tried something the policy forbids
    "timeout",  # wall-clock limit reached; the process group was killed
    "cpu_limit",  # CPU-seconds limit reached (SIGXCPU/SIGKILL from the kernel)
    "memory_limit",  # address-space limit reached (MemoryError)
    "output_limit",  # printed more than the cap; killed
)

SandboxMode = Literal["bubblewrap", "unsafe-no-isolation"]
BUBBLEWRAP: SandboxMode = "bubblewrap"
UNSAFE: SandboxMode = "unsafe-no-isolation"
SANDBOX_MODES: tuple[SandboxMode, ...] = (BUBBLEWRAP, UNSAFE)
NO_TOOL_CALLS = "none-needed"  # the `isolation` of traces whose mode runs no code

MARKER = "__mind_sandbox__:"

INSTALL_HINT = (
    "Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; `make install` and "
    "`.ci/run` do this) on a kernel that allows user namespaces (in a container: one that "
    "permits unshare, e.g. Docker with `--security-opt seccomp=unconfined`), or, only where the "
    "model's code is trusted, set MIND_MATH__SANDBOX=unsafe-no-isolation (recorded on every "
    "trace row)."
)
UNSAFE_WARNING = (
    "MIND_MATH__SANDBOX=unsafe-no-isolation: tool calls run as a plain child process WITHOUT "
    "kernel isolation (rlimits and an audit hook only, which model-written code can escape); use "
    "only with trusted code. Every trace row records isolation=unsafe-no-isolation."
)


class IsolationUnavailable(RuntimeError):
    """The jail cannot be set up here, so model-written code must not run."""


class JailSetupError(RuntimeError):
    """bwrap failed before the jailed program started (not something the code did)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one tool call. The configurable ones have no default here: they come from the
    settings (`MIND_MATH__SANDBOX_*`, see `traces.sandbox_limits`), and this module stays
    stdlib-only so that the jail runs under any Python."""

    wall_seconds: float
    cpu_seconds: int
    memory_bytes: int  # address space per process; Python with numpy needs ~300 MB
    disk_bytes: int  # the jail's writable tmpfs, all files together
    output_bytes: int
    file_bytes: int = 16 << 20  # largest file one write may make
    open_files: int = 64
    # Processes and threads of the jailed uid. Ordinary code needs one (thread pools are pinned
    # to one thread); each may hold memory_bytes, so this also bounds a call's memory.
    processes: int = 8


# The start-up probe runs one trivial program; a minute covers a cold start on a loaded host.
_PROBE_LIMITS = SandboxLimits(
    wall_seconds=60, cpu_seconds=5, memory_bytes=1 << 30, disk_bytes=64 << 20, output_bytes=4096
)


@dataclass
class SandboxResult:
    outcome: str
    stdout: str
    stderr: str
    exit_code: int | None
    wall_seconds: float
    refused: list[str] = field(default_factory=list)
    isolation: str = BUBBLEWRAP  # the sandbox mode the call ran under

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def as_tool_output(self, max_chars: int = 2000) -> str:
        """What the model sees as the next turn."""
        if self.outcome == "ok":
            text = self.stdout
        elif self.outcome == "error":
            text = (self.stdout + "\n" + _last_lines(self.stderr, 6)).strip()
        else:
            text = f"[{self.outcome}: {', '.join(self.refused) or _describe(self.outcome)}]"
        return text[:max_chars]


def _describe(outcome: str) -> str:
    return {
        "timeout": "the code ran past its time limit and was stopped",
        "cpu_limit": "the code used too much CPU time and was stopped",
        "memory_limit": "the code used too much memory",
        "output_limit": "the code printed too much and was stopped",
    }.get(outcome, outcome)


def _last_lines(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


# The child's entry point, run with `python -I -c` (no user site, no PYTHON* variables); its
# settings arrive as one JSON argument. In the jail it leaves the caller's session keyring; on a
# root host it starts as root of the call's own user namespace: it forbids further user
# namespaces, hands the working directory to the jail user and becomes that user for good. It
# refuses to go on if any capability is left. Then it sets the kernel limits, makes the parent's
# site-packages importable, closes inherited descriptors and installs the audit hook that labels
# refusals. "ready" tells the parent the code is about to run.
_BOOTSTRAP = r"""
import json, os, resource, sys
CONFIG = json.loads(sys.argv[1])
MARK = CONFIG["marker"]

def say(message):
    os.write(2, (MARK + message + "\n").encode())

if CONFIG["jail"]:
    uid, gid = CONFIG["jail_user"]
    import ctypes
    keyctl = {"x86_64": 250, "aarch64": 219, "riscv64": 219}.get(os.uname().machine)
    # A fresh session keyring: the caller's would let the code read the keys it holds.
    if keyctl and ctypes.CDLL(None, use_errno=True).syscall(keyctl, 1, None) < 0:
        say("jail-broken session keyring")
        os._exit(70)
    if os.getuid() == 0:
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:
            limit.write("0")
        for path in (".", "main.py"):
            os.chown(path, uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    with open("/proc/self/status") as status:
        held = ("CapPrm", "CapEff", "CapAmb")
        caps = [int(line.split()[1], 16) for line in status if line.startswith(held)]
    if os.getuid() != uid or os.getgid() != gid or any(caps):
        say("jail-broken uid %d gid %d caps %s" % (os.getuid(), os.getgid(), caps))
        os._exit(70)
else:
    try:
        import ctypes
        netns = ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0  # CLONE_NEWNET
    except Exception:
        netns = False
    say("network-namespace " + ("yes" if netns else "no"))
for name, value in CONFIG["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if CONFIG["drop_to"]:
    uid, gid = CONFIG["drop_to"]
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
resource.setrlimit(resource.RLIMIT_NPROC, (CONFIG["processes"], CONFIG["processes"]))
if CONFIG["site_dirs"]:
    import site
    for directory in CONFIG["site_dirs"]:
        site.addsitedir(directory)
ROOT = os.path.realpath(os.getcwd())
SELF_PROC = ("/proc/self/", "/proc/thread-self/", "/proc/%d/" % os.getpid())
BLOCKED = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "ctypes.dlopen", "ctypes.dlsym", "os.chroot", "os.setuid", "sys.addaudithook",
}
PATH_EVENTS = {
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
    "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
}

def inside(path):
    real = os.path.realpath(os.path.join(ROOT, os.fsdecode(path)))
    return real == ROOT or real.startswith(ROOT + os.sep)

def refuse(event, detail=""):
    say("refused " + event + (" " + detail if detail else ""))
    raise PermissionError("sandbox: " + event + " is not allowed")

def hook(event, args):
    if event in BLOCKED:
        refuse(event)
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and not inside(path):
            refuse("open-for-write", os.fsdecode(path))
        real = os.path.realpath(os.fsdecode(path))
        if real.startswith("/proc/") and not real.startswith(SELF_PROC):
            refuse("open-other-process", real)  # another process's environ, memory, ...
    elif event in PATH_EVENTS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                refuse(event, os.fsdecode(arg))

import ctypes  # numpy imports it, and its import dlopens the interpreter: not the code's doing
if CONFIG["jail"]:
    # bwrap's setup pipes and the code's descriptor, whatever their numbers (a busy host hands
    # out numbers above RLIMIT_NOFILE, which closerange up to the limit would miss): the code
    # gets none.
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:
                os.close(int(name))
            except OSError:
                pass  # the listing's own descriptor, closed already
say("ready")
with open("main.py") as source:
    code = source.read()
sys.addaudithook(hook)
sys.argv = ["main.py"]
exec(compile(code, "main.py", "exec"), {"__name__": "__main__", "__file__": "main.py"})
"""

# The isolation check's program: it must run, and as the jail's user.
_PROBE_CODE = "import os\nprint(os.getuid(), os.getgid())"
_probe_lock = threading.Lock()


def isolation_problem() -> str | None:
    """Why the jail cannot be set up here, or None when it can. `bwrap` is looked up on PATH
    each time; whether it works is found out once per process (by jailing a trivial program)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (the `bwrap` program) is not installed or not on PATH"
    with _probe_lock:
        return _probe(bwrap)


@functools.cache
def _probe(bwrap: str) -> str | None:
    try:
        result = _run_jailed(bwrap, _PROBE_CODE, _PROBE_LIMITS)
    except (JailSetupError, OSError) as error:
        return f"{bwrap} is there but could not set up the jail: {error}"
    expected = f"{JAIL_UID} {JAIL_GID}"
    if result.outcome != "ok" or result.stdout.strip() != expected:
        detail = _last_lines(result.stderr, 3) or result.stdout.strip()
        return f"{bwrap} ran, but the jailed check failed ({result.outcome}: {detail})"
    return None


def require_isolation(mode: str, logger: logging.Logger | None = None) -> None:
    """Before any TIR generation: raise unless tool calls can run in `mode`; warn (every run)
    when the mode is the unsafe opt-out."""
    logger = logger or log
    if mode == UNSAFE:
        logger.warning(UNSAFE_WARNING)
        return
    if mode != BUBBLEWRAP:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected one of {list(SANDBOX_MODES)}")
    problem = isolation_problem()
    if problem is not None:
        raise IsolationUnavailable(
            f"Python tool calls (TIR modes) run model-written code only inside a kernel jail, "
            f"and it cannot be set up here: {problem}. {INSTALL_HINT}"
        )


def run_python(code: str, limits: SandboxLimits, mode: str = BUBBLEWRAP) -> SandboxResult:
    """Execute `code` contained; never raises for anything the code does. Raises
    IsolationUnavailable when `mode` is bubblewrap and the jail cannot be set up."""
    if mode == UNSAFE:
        return _run_unjailed(code, limits)
    require_isolation(mode)
    bwrap = shutil.which("bwrap")
    assert bwrap is not None  # require_isolation found it
    return _run_jailed(bwrap, code, limits)


def _config(limits: SandboxLimits, *, jail: bool, drop_to, site_dirs) -> dict[str, object]:
    return {
        "marker": MARKER,
        "jail": jail,
        "jail_user": [JAIL_UID, JAIL_GID],
        "drop_to": drop_to,
        "site_dirs": list(site_dirs),
        "processes": limits.processes,
        "rlimits": {
            "RLIMIT_CPU": limits.cpu_seconds,
            "RLIMIT_AS": limits.memory_bytes,
            "RLIMIT_FSIZE": limits.file_bytes,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        },
    }


def _run_jailed(bwrap: str, code: str, limits: SandboxLimits) -> SandboxResult:
    layout = jail_layout()
    as_root = os.geteuid() == 0
    code_fd = os.memfd_create("main.py")  # the code reaches the jail without a host file
    encoded = code.encode()
    written = 0
    while written < len(encoded):
        written += os.write(code_fd, encoded[written:])
    os.lseek(code_fd, 0, os.SEEK_SET)
    info_read, info_write = os.pipe() if as_root else (-1, -1)
    block_read, block_write = os.pipe() if as_root else (-1, -1)
    child_fds = [fd for fd in (code_fd, info_write, block_read) if fd >= 0]
    argv = bwrap_argv(
        bwrap,
        layout,
        as_root=as_root,
        code_fd=code_fd,
        disk_bytes=limits.disk_bytes,
        bootstrap=_BOOTSTRAP,
        config=_config(limits, jail=True, drop_to=None, site_dirs=layout.site_dirs),
        info_fd=info_write if as_root else None,
        block_fd=block_read if as_root else None,
    )
    parent_fds = [fd for fd in (info_read, block_write) if fd >= 0]
    try:
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            env={},  # bwrap itself gets no host variables either (it is the jail's pid 1)
            pass_fds=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed whole at the end
        )
        for fd in child_fds:
            os.close(fd)
        child_fds = []
        if as_root:
            try:
                map_user_namespace(info_read, block_write, started + max(limits.wall_seconds, 10))
            except (OSError, ValueError, KeyError) as error:
                _kill_group(process)
                _, stderr = process.communicate()
                raise JailSetupError(
                    f"{error}; bwrap said: {_last_lines(stderr.decode('utf-8', 'replace'), 3)}"
                ) from error
        stdout, stderr, stopped = _collect(process, limits, started)
        wall = time.monotonic() - started
        _kill_group(process)
    finally:
        for fd in child_fds + parent_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    returncode = process.returncode
    if returncode is not None and returncode > 128:
        returncode = 128 - returncode  # bwrap exits 128+N for a child killed by signal N
    result = _classify(returncode, stdout, stderr, stopped, wall, BUBBLEWRAP)
    if not _was_ready(stderr) and stopped is None:
        raise JailSetupError(
            f"the jail did not start (exit {process.returncode}): {_last_lines(stderr, 3)}"
        )
    return result


def _was_ready(stderr: str) -> bool:
    return any(line == MARKER + "ready" for line in stderr.splitlines())


# --- the unsafe opt-out: a plain child process ---------------------------------------------

NOBODY = "nobody"


@functools.cache  # the answer cannot change within a process; every tool call asks
def _unprivileged_user() -> tuple[int, int] | None:
    """When running as root, the unjailed child drops to `nobody` so kernel permissions apply
    too; only possible when `nobody` can read this Python installation (not so under /root)."""
    if os.geteuid() != 0 or not _readable_by_others(_python_dirs()):
        return None
    try:
        entry = pwd.getpwnam(NOBODY)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _python_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")]


def _readable_by_others(directories: list[Path]) -> bool:
    for directory in directories:
        path = directory.resolve()
        for part in [path, *path.parents]:
            try:
                mode = part.stat().st_mode
            except OSError:
                return False
            if not mode & stat.S_IXOTH or (part == path and not mode & stat.S_IROTH):
                return False
    return True


def _run_unjailed(code: str, limits: SandboxLimits) -> SandboxResult:
    workdir = Path(tempfile.mkdtemp(prefix="mind-sandbox-"))
    drop_to = _unprivileged_user()
    config = _config(limits, jail=False, drop_to=drop_to, site_dirs=())
    try:
        (workdir / "main.py").write_text(code)
        if drop_to is not None:
            for path in (workdir, workdir / "main.py"):
                os.chown(path, *drop_to)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir)}
        env |= {"LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, json.dumps(config)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        stdout, stderr, stopped = _collect(process, limits, started)
        wall = time.monotonic() - started
        _kill_group(process)
        return _classify(process.returncode, stdout, stderr, stopped, wall, UNSAFE)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- shared: reading, stopping and classifying -----------------------------------------------


def _collect(
    process: subprocess.Popen[bytes], limits: SandboxLimits, started: float
) -> tuple[str, str, str | None]:
    """Read both pipes until exit, the wall-clock limit or the output cap."""
    assert process.stdout is not None and process.stderr is not None
    buffers: dict[int, bytearray] = {
        process.stdout.fileno(): bytearray(),
        process.stderr.fileno(): bytearray(),
    }
    open_fds = set(buffers)
    stopped: str | None = None
    while open_fds:
        remaining = limits.wall_seconds - (time.monotonic() - started)
        if remaining <= 0:
            stopped = "timeout"
            break
        ready, _, _ = select.select(list(open_fds), [], [], min(remaining, 0.5))
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                continue
            buffers[fd] += data
            if len(buffers[fd]) > limits.output_bytes:
                stopped = "output_limit"
        if stopped:
            break
    if stopped:
        _kill_group(process)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.wait()
    out, err = (
        bytes(buffers[f.fileno()][: limits.output_bytes]) for f in (process.stdout, process.stderr)
    )
    process.stdout.close()
    process.stderr.close()
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), stopped


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the child's process group; for the jail that is bwrap, whose death takes the jail's
    pid namespace, and so every process the code started, with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _classify(
    returncode: int | None,
    stdout: str,
    stderr: str,
    stopped: str | None,
    wall: float,
    mode: str,
) -> SandboxResult:
    refused: list[str] = []
    kept = []
    for line in stderr.splitlines():
        if not line.startswith(MARKER):
            kept.append(line)
            continue
        message = line[len(MARKER) :].strip()
        if message.startswith("refused "):
            refused.append(message[len("refused ") :])
    if stopped is not None:
        outcome = stopped
    elif returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        outcome = "cpu_limit"
    elif refused:
        outcome = "refused"
    elif any("MemoryError" in line for line in kept[-3:]):
        outcome = "memory_limit"
    elif returncode == 0:
        outcome = "ok"
    else:
        outcome = "error"
    return SandboxResult(
        outcome=outcome,
        stdout=stdout,
        stderr="\n".join(kept),
        exit_code=returncode,
        wall_seconds=round(wall, 3),
        refused=sorted(set(refused)),
        isolation=mode,
    )
