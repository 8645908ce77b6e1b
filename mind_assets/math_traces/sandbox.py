"""Run model-written Python in a contained child process and say what happened.

Every call gets a fresh process and a fresh temporary working directory, and is contained by
layers that do not depend on each other:

- kernel limits set in the child before it runs any code: CPU seconds, address space, file size,
  open files and, when the host runs as root, a drop to an unprivileged user so that the process
  limit holds and the filesystem's own permissions apply;
- a new network namespace when the kernel lets us create one (no interfaces, so no network);
- an audit hook installed before the code runs that refuses process creation, sockets, native
  code loading and any write, delete or rename outside the working directory;
- the parent's wall-clock timeout, a cap on captured output, and a kill of the whole process
  group at the end, so nothing the code started outlives the call;
- a clean environment: nothing of the host's environment (tokens, keys) is passed in.

The outcome is one of OUTCOMES and is recorded on the trace with what was refused.
"""

from __future__ import annotations

import contextlib
import functools
import json
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

OUTCOMES = (
    "ok",  # ran to the end, exit status 0
    "error",  # the code raised (traceback in stderr)
    "refused",  # the code tried something the policy forbids
    "timeout",  # wall-clock limit reached; the process group was killed
    "cpu_limit",  # CPU-seconds limit reached (SIGXCPU/SIGKILL from the kernel)
    "memory_limit",  # address-space limit reached (MemoryError)
    "output_limit",  # printed more than the cap; killed
)

MARKER = "__mind_sandbox__:"


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30  # address space; Python with numpy needs ~300 MB
    file_bytes: int = 16 << 20
    open_files: int = 64
    processes: int = 32  # per unprivileged user; only effective after the drop from root
    output_bytes: int = 64 << 10


@dataclass
class SandboxResult:
    outcome: str
    stdout: str
    stderr: str
    exit_code: int | None
    wall_seconds: float
    refused: list[str] = field(default_factory=list)
    isolation: str = "audit-hook"  # the layers that were in force, e.g. "netns+nobody+audit-hook"

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


# The child's entry point, run with `python -I` (no user site, no PYTHON* variables). Before the
# model's code runs it: tries a private network namespace, sets the kernel limits, drops root to
# an unprivileged user, and installs the audit hook. Its settings arrive as one JSON argument.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, sys
CONFIG = json.loads(sys.argv[1])
MARK = CONFIG["marker"]
try:
    netns = ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0  # CLONE_NEWNET
except Exception:
    netns = False
os.write(2, (MARK + "network-namespace " + ("yes" if netns else "no") + "\n").encode())
for name, value in CONFIG["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if CONFIG["drop_to"]:
    uid, gid = CONFIG["drop_to"]
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (CONFIG["processes"], CONFIG["processes"]))
ROOT = os.path.realpath(os.getcwd())
SELF_PROC = ("/proc/self/", "/proc/thread-self/", "/proc/%d/" % os.getpid())
BLOCKED = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "ctypes.dlopen", "ctypes.dlsym", "os.chroot", "os.setuid", "sys.addaudithook",
    "os.putenv", "os.unsetenv",
}
PATH_EVENTS = {
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
    "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
}

def inside(path):
    real = os.path.realpath(os.path.join(ROOT, os.fsdecode(path)))
    return real == ROOT or real.startswith(ROOT + os.sep)

def refuse(event, detail=""):
    os.write(2, (MARK + "refused " + event + (" " + detail if detail else "") + "\n").encode())
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

with open("main.py") as source:
    code = source.read()
sys.addaudithook(hook)
sys.argv = ["main.py"]
exec(compile(code, "main.py", "exec"), {"__name__": "__main__", "__file__": "main.py"})
"""

NOBODY = "nobody"


@functools.cache  # the answer cannot change within a process; every tool call asks
def _unprivileged_user() -> tuple[int, int] | None:
    """When running as root, the child drops to `nobody` so kernel permissions apply too; only
    possible when `nobody` can read this Python installation (not so for one under /root)."""
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


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Execute `code` contained; never raises for anything the code does."""
    limits = limits or SandboxLimits()
    workdir = Path(tempfile.mkdtemp(prefix="mind-sandbox-"))
    drop_to = _unprivileged_user()
    config = {
        "marker": MARKER,
        "drop_to": drop_to,
        "processes": limits.processes,
        "rlimits": {
            "RLIMIT_CPU": limits.cpu_seconds,
            "RLIMIT_AS": limits.memory_bytes,
            "RLIMIT_FSIZE": limits.file_bytes,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        },
    }
    try:
        (workdir / "main.py").write_text(code)
        (workdir / "bootstrap.py").write_text(_BOOTSTRAP)
        if drop_to is not None:
            for path in (workdir, workdir / "main.py", workdir / "bootstrap.py"):
                os.chown(path, *drop_to)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", "bootstrap.py", json.dumps(config)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed whole at the end
        )
        stdout, stderr, stopped = _collect(process, limits, started)
        wall = time.monotonic() - started
        _kill_group(process)
        return _classify(process.returncode, stdout, stderr, stopped, wall, drop_to is not None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _classify(
    returncode: int | None,
    stdout: str,
    stderr: str,
    stopped: str | None,
    wall: float,
    dropped: bool,
) -> SandboxResult:
    refused: list[str] = []
    netns = False
    kept = []
    for line in stderr.splitlines():
        if not line.startswith(MARKER):
            kept.append(line)
            continue
        message = line[len(MARKER) :].strip()
        if message.startswith("refused "):
            refused.append(message[len("refused ") :])
        elif message == "network-namespace yes":
            netns = True
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
        isolation="+".join(
            [*(["netns"] if netns else []), *(["nobody"] if dropped else []), "audit-hook"]
        ),
    )
