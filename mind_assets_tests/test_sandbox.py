"""The tool-call jail against a hostile program. Each escape attempt is judged from outside, on
the host: files that must not appear, secrets that must not be printed, connections that must
not arrive, processes that must not survive. Many attempts succeed *inside* the jail (a shell
command, a file written to /tmp); what matters is that nothing reaches the host. On the
development machines and CI the tests run as root with Python under /root, the case where a
plain child process was escapable."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from mind_assets.math_traces.jail import JAIL_UID
from mind_assets.math_traces.sandbox import (
    BUBBLEWRAP,
    UNSAFE,
    IsolationUnavailable,
    SandboxLimits,
    isolation_problem,
    require_isolation,
    run_python,
)
from mind_assets.math_traces.traces import sandbox_limits
from mind_assets.settings import PROJECT_DIR, MathSettings, get_settings

DEFAULT = sandbox_limits(MathSettings())
FAST = replace(DEFAULT, wall_seconds=6.0, cpu_seconds=2, memory_bytes=512 << 20, output_bytes=16384)

# Starts a process through _posixsubprocess.fork_exec, a C function that raises no audit event:
# the route around the audit hook. The started program has no hook at all.
SPAWN = """
import os, sys, _posixsubprocess

def spawn(argv):
    errpipe_read, errpipe_write = os.pipe()
    args = [[os.fsencode(a) for a in argv], [os.fsencode(argv[0])], True, (errpipe_write,),
            None, None, -1, -1, -1, -1, -1, -1, errpipe_read, errpipe_write, False, False, -1,
            None, None, None, -1, None]
    try:  # allow_vfork, an argument since 3.11.4 / 3.12
        pid = _posixsubprocess.fork_exec(*args, False)
    except TypeError:
        pid = _posixsubprocess.fork_exec(*args)
    os.close(errpipe_write)
    error = os.read(errpipe_read, 1000)
    os.close(errpipe_read)
    if error:
        print("SPAWN-FAILED", argv[0], error)
    return pid

def spawn_python(code, *extra):
    return spawn([sys.executable, "-c", code, *extra])
"""


def token() -> str:
    return "mindjail" + uuid.uuid4().hex[:12]


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A world-writable directory on the host that every user can reach (/tmp/x, mode 0777):
    file permissions alone would not keep the jailed program out of it."""
    path = Path(tempfile.mkdtemp(prefix="mind-host-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root_secrets(host_dir: Path) -> Iterator[tuple[str, list[Path]]]:
    """A secret in two root-only (0600) files: one in a host temp dir, one under /root."""
    secret = "SECRET-" + uuid.uuid4().hex
    paths = [host_dir / "secret.txt"]
    if os.geteuid() == 0:
        paths.append(Path("/root") / f".mind-sandbox-test-{uuid.uuid4().hex[:8]}")
    for path in paths:
        path.write_text(secret + "\n")
        path.chmod(0o600)
    yield secret, paths
    for path in paths:
        path.unlink(missing_ok=True)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(name))
    return pids


def no_process_left(marker: str, wait_seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + wait_seconds
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def while_running(code: str, limits: SandboxLimits, watch: Callable[[], None]):
    """Run `code` in the jail on a thread and call `watch` repeatedly from the host meanwhile."""
    results = []
    thread = threading.Thread(target=lambda: results.append(run_python(code, limits)))
    thread.start()
    while thread.is_alive():
        watch()
        time.sleep(0.05)
    thread.join()
    return results[0]


def output(result) -> str:
    return result.stdout + "\n" + result.stderr


# --- ordinary programs and limits ----------------------------------------------------------


def test_ordinary_code_runs_and_prints():
    result = run_python("import math\nprint(sum(range(10)), math.comb(5, 2))", FAST)
    assert result.outcome == "ok" and result.stdout.strip() == "45 10"
    assert result.as_tool_output().strip() == "45 10"
    assert result.isolation == BUBBLEWRAP


def test_numpy_and_sympy_are_importable_in_the_jail():
    code = (
        "import numpy, sympy\nx = sympy.Symbol('x')\n"
        "print(numpy.arange(4).sum(), sympy.solve(x**2 - 4))"
    )
    result = run_python(code, replace(DEFAULT, wall_seconds=30))
    assert result.outcome == "ok", result
    assert result.stdout.strip() == "6 [-2, 2]"


def test_an_exception_is_reported_with_its_traceback_tail():
    result = run_python("x = 1 / 0", FAST)
    assert result.outcome == "error" and "ZeroDivisionError" in result.as_tool_output()


def test_infinite_loop_is_stopped_at_the_cpu_limit():
    started = time.monotonic()
    result = run_python("while True:\n    pass", FAST)
    assert result.outcome in ("cpu_limit", "timeout")
    assert time.monotonic() - started < FAST.wall_seconds + 5


def test_sleeping_forever_is_stopped_at_the_wall_clock_limit():
    result = run_python("import time\ntime.sleep(3600)", replace(DEFAULT, wall_seconds=2.0))
    assert result.outcome == "timeout" and result.wall_seconds < 5


def test_memory_bomb_hits_the_memory_limit():
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))", FAST)
    assert result.outcome == "memory_limit", result


def test_huge_print_is_cut_at_the_output_cap():
    result = run_python("while True:\n    print('x' * 1000)", FAST)
    assert result.outcome == "output_limit"
    assert len(result.stdout) <= FAST.output_bytes
    assert "printed too much" in result.as_tool_output()


def test_refusals_are_still_labelled_by_the_audit_hook():
    for code, event in (
        ("import os\nos.system('true')", "os.system"),
        ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
        ("import ctypes\nctypes.CDLL('libc.so.6').system(b'true')", "ctypes.dlopen"),
        ("import socket\nsocket.socket()", "socket.__new__"),
        ("import os\nos.fork()", "os.fork"),
    ):
        result = run_python(code, FAST)
        assert result.outcome == "refused" and event in result.refused, (code, result)


# --- who the jailed program is, seen from the host ---------------------------------------------


def test_the_jailed_program_is_nobody_without_capabilities_in_its_own_namespaces():
    marker = token()
    code = (
        SPAWN
        + f"spawn_python('import time; time.sleep(3)', {marker!r})\nimport time\ntime.sleep(3)"
    )
    seen: dict[int, dict[str, str]] = {}

    def look() -> None:
        for pid in processes_with(marker):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                namespaces = {
                    ns: os.readlink(f"/proc/{pid}/ns/{ns}")
                    for ns in ("user", "mnt", "pid", "net", "ipc", "uts")
                }
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            seen[pid] = {**{k: fields[k].strip() for k in ("Uid", "Gid", "CapEff")}, **namespaces}

    result = while_running(code, FAST, look)
    assert result.outcome == "ok", result
    assert seen, "the jailed process was never seen from the host"
    mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "mnt", "pid", "net", "ipc")}
    for view in seen.values():
        assert view["Uid"].split() == [str(JAIL_UID)] * 4  # real, effective, saved, fs
        assert view["Gid"].split() == [str(JAIL_UID)] * 4
        assert int(view["CapEff"], 16) == 0
        assert all(view[ns] != mine[ns] for ns in mine), view
    assert no_process_left(marker)


# --- process creation ------------------------------------------------------------------------

PROCESS_ROUTES = {
    "os.system": "import os\nos.system('touch {m}; cat {s}')",
    "subprocess": "import subprocess\nsubprocess.run('touch {m}; cat {s}', shell=True)",
    "posix.system": "import posix\nposix.system('touch {m}')",
    "os.posix_spawn": "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'touch {m}'], {{}})",
    "os.execv": "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {m}; cat {s}'])",
    "fork_exec shell": SPAWN + "spawn(['/bin/sh', '-c', 'touch {m}; cat {s}'])",
    "fork_exec touch": SPAWN + "spawn(['/usr/bin/touch', '{m}'])",
    "fork_exec python": SPAWN
    + "spawn_python(\"open('{m}', 'w').write('x'); print(open('{s}').read())\")\n"
    + "import time\ntime.sleep(1)",
    "ctypes libc system": "import ctypes\nctypes.CDLL('libc.so.6').system(b'touch {m}')",
    "ctypes pythonapi system": "import ctypes\nctypes.pythonapi.system(b'touch {m}')",
    "ctypes libc system, unhooked": SPAWN
    + "spawn_python(\"import ctypes; ctypes.CDLL(None).system(b'touch {m}; cat {s}')\")\n"
    + "import time\ntime.sleep(1)",
    "ctypes fork+execve python, unhooked": SPAWN
    + 'spawn_python("import ctypes, sys; libc = ctypes.CDLL(None); '
    "code = b'open(\\\\'{m}\\\\', \\\\'w\\\\'); print(open(\\\\'{s}\\\\').read())'; "
    "argv = (ctypes.c_char_p * 4)(sys.executable.encode(), b'-c', code, None); "
    'libc.fork() == 0 and libc.execve(sys.executable.encode(), argv, None)")\n'
    + "import time\ntime.sleep(1)",
    "ctypes fork+execve": "import ctypes\nlibc = ctypes.CDLL(None)\n"
    "if libc.fork() == 0:\n"
    "    argv = (ctypes.c_char_p * 4)(b'/bin/sh', b'-c', b'touch {m}', None)\n"
    "    libc.execve(b'/bin/sh', argv, None)",
}


@pytest.mark.parametrize("route", list(PROCESS_ROUTES))
def test_process_creation_leaves_no_trace_on_the_host(route, host_dir, root_secrets):
    secret, secret_paths = root_secrets
    targets = [host_dir / "ran", Path("/tmp") / f"{token()}-ran"]
    for target in targets:
        code = PROCESS_ROUTES[route].format(m=target, s=secret_paths[-1])
        result = run_python(code, FAST)
        assert secret not in output(result), (route, result)
    time.sleep(0.2)
    assert not any(t.exists() for t in targets), route
    assert [p.name for p in host_dir.iterdir()] == ["secret.txt"]


def test_the_attacks_do_escape_a_plain_child_process(host_dir):
    """The control: without the jail (the unsafe opt-out) the C-module routes that the audit hook
    does not see reach the host, so the attacks in this file are real ones."""
    for name, code in (
        ("touched", SPAWN + f"spawn(['/usr/bin/touch', '{host_dir}/touched'])"),
        ("db", f"import sqlite3\nsqlite3.connect('{host_dir}/db').execute('create table t(x)')"),
        ("fifo", f"import os\nos.mkfifo('{host_dir}/fifo')"),
    ):
        result = run_python(code + "\nimport time\ntime.sleep(0.5)", FAST, mode=UNSAFE)
        assert result.isolation == UNSAFE
        assert (host_dir / name).exists(), (name, result)


# --- files outside the working directory ---------------------------------------------------

FILE_ROUTES = {
    "open": "open('{m}', 'w').write('x')",
    "relative ..": "open('../../../../{m}', 'w').write('x')",
    "sqlite3": "import sqlite3\nsqlite3.connect('{m}').execute('create table t(x)')",
    "dbm": "import dbm\ndb = dbm.open('{m}', 'c')\ndb[b'k'] = b'v'\ndb.close()",
    "os.mkfifo": "import os\nos.mkfifo('{m}')",
    "os.mknod fifo": "import os, stat\nos.mknod('{m}', stat.S_IFIFO | 0o666)",
    "os.mknod device": "import os, stat\nos.mknod('{m}', stat.S_IFCHR | 0o666, os.makedev(1, 3))",
    "hard link": "import os\nos.link('main.py', '{m}')",
    "rename": "import os\nos.rename('main.py', '{m}')",
    "symlink then write": "import os\nos.symlink('{d}', 'out')\n"
    "open('out/escaped', 'w').write('x')",
    "fork_exec python": SPAWN + "spawn_python(\"import sqlite3, os; os.mkfifo('{m}.fifo'); "
    "sqlite3.connect('{m}').execute('create table t(x)')\")\nimport time\ntime.sleep(1)",
}


@pytest.mark.parametrize("route", list(FILE_ROUTES))
def test_files_outside_the_working_directory_never_reach_the_host(route, host_dir):
    name = token()
    for target in (host_dir / name, Path("/tmp") / name):
        code = FILE_ROUTES[route].format(m=target, d=target.parent)
        run_python(code, FAST)
    assert list(host_dir.iterdir()) == [], route
    assert not list(Path("/tmp").glob(f"{name}*")), route


def test_the_same_attempts_succeed_inside_the_jail_where_they_harm_nothing():
    """A file written to /tmp lands in the jail's own tmpfs working directory."""
    code = (
        "import os, sqlite3\nsqlite3.connect('/tmp/x.db').execute('create table t(x)')\n"
        "os.mkfifo('/tmp/f')\nprint(sorted(os.listdir('.')), os.path.realpath('/tmp'))"
    )
    result = run_python(code, FAST)
    assert result.outcome == "ok", result
    assert result.stdout.split("]")[0] == "['f', 'main.py', 'x.db'"
    assert result.stdout.strip().endswith("/sandbox")


def test_the_disk_cannot_be_filled():
    """Run by a process without the audit hook, so only the kernel stops it: one file is capped
    by RLIMIT_FSIZE, all files by the size of the jail's tmpfs, and nothing else is writable."""
    limits = replace(DEFAULT, wall_seconds=20, cpu_seconds=10, disk_bytes=32 << 20)
    filler = (
        "import os\n"
        "try:\n"
        "    open('big', 'wb').write(b'x' * (20 << 20))\n"
        "except OSError as e:\n"
        "    print('big', e.errno)\n"
        "os.remove('big')\n"
        "written = 0\n"
        "for directory in ('.', '/tmp', '/dev/shm', '/', '/usr/lib', '/proc'):\n"
        "    for i in range(1000):\n"
        "        try:\n"
        "            with open(f'{directory}/fill-{len(directory)}-{i}', 'wb') as f:\n"
        "                f.write(b'x' * (1 << 20))\n"
        "            written += 1 << 20\n"
        "        except OSError as e:\n"
        "            print(directory, e.errno)\n"
        "            break\n"
        "print('written', written)\n"
    )
    result = run_python(SPAWN + f"spawn_python({filler!r})\nimport time\ntime.sleep(5)", limits)
    assert "big 27" in result.stdout, result  # EFBIG
    written = int(result.stdout.split("written ")[1].split()[0])
    assert limits.disk_bytes // 2 < written <= limits.disk_bytes
    errors = dict(line.split() for line in result.stdout.splitlines() if line.startswith("/"))
    assert errors["/tmp"] == "28"  # ENOSPC: the same tmpfs as the working directory
    read_only = ("/dev/shm", "/", "/usr/lib", "/proc")
    assert all(errors[d] in ("2", "13", "30") for d in read_only), errors  # ENOENT/EACCES/EROFS


# --- reading the host ------------------------------------------------------------------------

READ_ROUTES = {
    "open": "for p in {paths!r}:\n    try:\n        print(open(p).read())\n"
    "    except OSError as e:\n        print(type(e).__name__)",
    "os.open": "import os\nfor p in {paths!r}:\n    try:\n"
    "        print(os.read(os.open(p, os.O_RDONLY), 1000))\n    except OSError as e:\n"
    "        print(type(e).__name__)",
    "symlink": "import os\nfor i, p in enumerate({paths!r}):\n    os.symlink(p, f'l{{i}}')\n"
    "    try:\n        print(open(f'l{{i}}').read())\n    except OSError as e:\n"
    "        print(type(e).__name__)",
    "/proc/1/root": "for p in {paths!r}:\n    try:\n"
    "        print(open('/proc/1/root' + p).read())\n"
    "    except OSError as e:\n        print(type(e).__name__)",
    "sqlite3 readfile": "import sqlite3\nfor p in {paths!r}:\n    try:\n"
    "        print(sqlite3.connect(p).execute('select 1').fetchall())\n"
    "    except Exception as e:\n        print(e)",
    "fork_exec cat": SPAWN + "for p in {paths!r}:\n    spawn(['/bin/cat', p])\n"
    "import time\ntime.sleep(0.5)",
    "fork_exec python": SPAWN
    + "spawn_python('import sys\\nfor p in sys.argv[1:]:\\n    try: print(open(p).read())\\n"
    "    except OSError as e: print(e)', *{paths!r})\nimport time\ntime.sleep(1)",
}


@pytest.mark.parametrize("route", list(READ_ROUTES))
def test_root_only_host_files_are_never_printed(route, root_secrets):
    secret, paths = root_secrets
    code = READ_ROUTES[route].format(paths=[str(p) for p in paths])
    result = run_python(code, FAST)
    assert secret not in output(result), (route, result)


def test_nothing_of_the_host_is_visible():
    host_file = Path(tempfile.gettempdir()) / f"{token()}.txt"
    host_file.write_text("host tmp")
    try:
        hidden = [
            str(PROJECT_DIR),
            str(PROJECT_DIR / "mind_assets"),
            str(PROJECT_DIR.parent),
            str(get_settings().data_dir.resolve()),
            str(host_file),
            sys.prefix,  # the venv, in the repository
            "/home",
            "/work",
            "/var",
            "/run",
            "/sys",
            "/etc/passwd",
            "/etc/shadow",
            "/etc/hostname",
            "/root/.bashrc",
        ]
        code = (
            "import json, os\n"
            f"hidden = {hidden!r}\n"
            "tree = []\n"
            "for top, dirs, files in os.walk('/root'):\n"
            "    tree += [os.path.join(top, name) for name in dirs + files]\n"
            "    if top.count('/') >= 4:\n"
            "        dirs[:] = []\n"
            "print(json.dumps({'visible': [p for p in hidden if os.path.lexists(p)],\n"
            "                  'top': sorted(os.listdir('/')), 'etc': sorted(os.listdir('/etc')),\n"
            "                  'root': tree}))"
        )
        result = run_python(code, FAST)
        assert result.outcome == "ok", result
        seen = json.loads(result.stdout)
        assert seen["visible"] == []
        allowed_top = {"usr", "lib", "lib32", "lib64", "libx32", "etc", "root", "opt", "proc"}
        assert set(seen["top"]) <= allowed_top | {"dev", "sandbox", "tmp"}, seen["top"]
        assert seen["etc"] in ([], ["ld.so.cache"])
        python_home = os.path.realpath(sys.base_prefix)
        for path in seen["root"]:  # only the chain of directories down to the Python install
            assert python_home.startswith(path + "/") or path.startswith(python_home), path
    finally:
        host_file.unlink()


def test_other_processes_and_the_parents_environment_stay_unreadable(monkeypatch):
    secret = "hunter2-" + uuid.uuid4().hex
    monkeypatch.setenv("MIND_TEST_SECRET_TOKEN", secret)
    host_pid = os.getpid()
    reader = (
        "import os\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        f"pids += ['{host_pid}', str(os.getppid())]\n"
        "print('pids', sorted(set(pids)))\n"
        "for pid in pids:\n"
        "    for name in ('environ', 'cmdline', 'mem', 'root/proc/1/environ'):\n"
        "        try:\n"
        "            print(pid, name, open(f'/proc/{pid}/{name}', 'rb').read(4000))\n"
        "        except Exception as e:\n"
        "            print(pid, name, type(e).__name__)\n"
        "print(dict(os.environ))\n"
    )
    direct = run_python(reader, FAST)
    unhooked = run_python(SPAWN + f"spawn_python({reader!r})\nimport time\ntime.sleep(1)", FAST)
    for result in (direct, unhooked):
        assert secret not in output(result), result
    pids = eval(unhooked.stdout.split("pids ")[1].splitlines()[0])
    assert len(pids) <= 5  # the jail's own pid namespace: its init, the program and its child


def test_rlimits_cannot_be_raised():
    code = (
        "import resource, os\n"
        "names = ('RLIMIT_NPROC', 'RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE')\n"
        "for name in names:\n"
        "    limit = getattr(resource, name)\n"
        "    soft, hard = resource.getrlimit(limit)\n"
        "    for new in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), (hard + 1, hard + 1)):\n"
        "        try:\n"
        "            resource.setrlimit(limit, new)\n"
        "            print('RAISED', name)\n"
        "        except (ValueError, OSError):\n"
        "            pass\n"
        "        try:\n"
        "            resource.prlimit(1, limit, new)\n"
        "            print('RAISED pid 1', name)\n"
        "        except (ValueError, OSError):\n"
        "            pass\n"
        "print('done')\n"
    )
    for program in (code, SPAWN + f"spawn_python({code!r})\nimport time\ntime.sleep(1)"):
        result = run_python(program, FAST)
        assert "done" in result.stdout and "RAISED" not in result.stdout, result


KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219}.get(os.uname().machine)


@pytest.mark.skipif(KEYCTL is None, reason="keyctl syscall number unknown on this architecture")
def test_keys_in_the_callers_session_keyring_stay_unreadable():
    """Keys of the caller's session keyring (login tokens, credentials) would be readable by
    anything that inherits the keyring; the jail starts in a fresh one."""
    libc = ctypes.CDLL(None, use_errno=True)
    secret = ("KEY-" + uuid.uuid4().hex).encode()
    seen: list = []

    def in_own_session() -> None:  # keyrings belong to the thread's credentials
        assert libc.syscall(KEYCTL, 1, None) > 0  # KEYCTL_JOIN_SESSION_KEYRING, anonymous
        key = libc.syscall(
            248 if KEYCTL == 250 else 217, b"user", b"mindtest", secret, len(secret), -3
        )  # add_key to the session keyring
        assert key > 0
        reader = (
            "import ctypes\nlibc = ctypes.CDLL(None)\nbuf = ctypes.create_string_buffer(200)\n"
            f"found = libc.syscall({KEYCTL}, 10, -3, b'user', b'mindtest', 0)\n"  # SEARCH
            f"for key in (found, {key}):\n"
            f"    n = libc.syscall({KEYCTL}, 11, key, buf, 200)\n"  # READ
            "    print(key, n, buf.raw[:max(n, 0)])\n"
        )
        seen.append(
            run_python(SPAWN + f"spawn_python({reader!r})\nimport time\ntime.sleep(1)", DEFAULT)
        )

    thread = threading.Thread(target=in_own_session)
    thread.start()
    thread.join()
    assert seen and secret.decode() not in output(seen[0]), seen


# --- network ---------------------------------------------------------------------------------


def test_no_connection_reaches_a_host_listener_and_no_name_resolves():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connections.append(server.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        client = (
            "import socket\n"
            "for host in ('127.0.0.1', 'localhost', socket.gethostname()):\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=2)\n"
            "        print('CONNECTED', host)\n"
            "    except OSError as e:\n"
            "        print('no', host, e)\n"
            "try:\n"
            "    print('RESOLVED', socket.getaddrinfo('example.com', 80))\n"
            "except OSError as e:\n"
            "    print('no dns', e)\n"
            "lines = open('/proc/net/dev').read().splitlines()[2:]\n"
            "print('INTERFACES', [line.split(':')[0].strip() for line in lines])\n"
        )
        hooked = run_python(client, FAST)
        assert hooked.outcome == "refused"
        unhooked = run_python(SPAWN + f"spawn_python({client!r})\nimport time\ntime.sleep(3)", FAST)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert connections == []
    assert "CONNECTED" not in unhooked.stdout and "RESOLVED" not in unhooked.stdout, unhooked
    assert "no dns" in unhooked.stdout
    assert "INTERFACES ['lo']" in unhooked.stdout  # its own network namespace: loopback only


def test_a_port_bound_in_the_jail_is_not_reachable_from_the_host():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = (
        "import socket, time\ns = socket.socket()\n"
        f"s.bind(('0.0.0.0', {port}))\ns.listen(1)\nprint('LISTENING', flush=True)\n"
        "s.settimeout(3)\ntry:\n    s.accept()\n    print('ACCEPTED')\nexcept OSError:\n    pass\n"
    )
    reached = []

    def knock() -> None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            reached.append(port)
        except OSError:
            pass

    result = while_running(
        SPAWN + f"spawn_python({server!r})\nimport time\ntime.sleep(3.5)", FAST, knock
    )
    assert "LISTENING" in result.stdout, result  # it did listen, in its own network namespace
    assert reached == [] and "ACCEPTED" not in result.stdout


# --- processes: bombs, daemons, signals ------------------------------------------------------


def test_a_fork_bomb_is_held_by_the_process_limit_and_leaves_nothing():
    marker = token()
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    code = SPAWN + f"spawn_python({bomb!r}, {marker!r})\nimport time\ntime.sleep(3)"
    most = [0]

    def count() -> None:
        most[0] = max(most[0], len(processes_with(marker)))

    limits = replace(DEFAULT, wall_seconds=8, cpu_seconds=2, memory_bytes=512 << 20)
    started = time.monotonic()
    result = while_running(code, limits, count)
    assert time.monotonic() - started < limits.wall_seconds + 5, result
    assert 1 < most[0] <= limits.processes, most[0]
    assert no_process_left(marker)


def test_os_fork_and_multiprocessing_are_labelled_refused():
    result = run_python("import os\nwhile True:\n    os.fork()", FAST)
    assert result.outcome == "refused" and "os.fork" in result.refused
    mp = run_python(
        "import multiprocessing as m\n"
        "ps = [m.Process(target=print) for _ in range(50)]\n"
        "[p.start() for p in ps]",
        FAST,
    )
    assert mp.outcome == "refused"


def test_a_daemonised_child_does_not_outlive_the_call():
    marker = token()
    daemon = (
        "import os, time\n"
        "if os.fork():\n    os._exit(0)\n"
        "os.setsid()\n"
        "if os.fork():\n    os._exit(0)\n"
        "time.sleep(4)\n"
        "open('/tmp/daemon-was-here', 'w').write('x')\n"
    )
    result = run_python(SPAWN + f"spawn_python({daemon!r}, {marker!r})\nprint('started')", FAST)
    assert result.outcome == "ok" and "started" in result.stdout, result
    assert result.wall_seconds < 3  # the call did not wait for the daemon
    assert no_process_left(marker, wait_seconds=2.0)
    stuck = run_python(
        SPAWN + f"spawn_python('import time; time.sleep(600)', {marker!r})\n"
        "import time\ntime.sleep(600)",
        replace(DEFAULT, wall_seconds=2),
    )
    assert stuck.outcome == "timeout"
    assert no_process_left(marker)


def test_signals_cannot_reach_host_processes_of_the_same_uid():
    sentinel = (
        subprocess.Popen(["sleep", "30"], user=JAIL_UID, group=JAIL_UID, extra_groups=[])
        if os.geteuid() == 0
        else subprocess.Popen(["sleep", "30"])
    )
    try:
        killer = (
            "import os, signal\n"
            f"for target in (-1, {sentinel.pid}, {os.getpid()}):\n"
            "    try:\n"
            "        os.kill(target, signal.SIGKILL)\n"
            "    except OSError as e:\n"
            "        print(target, e)\n"
        )
        run_python(SPAWN + f"spawn_python({killer!r})\nimport time\ntime.sleep(1)", FAST)
        time.sleep(0.2)
        assert sentinel.poll() is None
    finally:
        sentinel.kill()
        sentinel.wait()


def test_the_code_arrives_in_a_fresh_working_directory_without_a_host_file():
    code = "import os\nprint(os.getcwd(), sorted(os.listdir('.')), os.listdir('/proc/self/fd'))"
    result = run_python(code, FAST)
    # and with no descriptor but stdin, stdout, stderr (3 is the listing's own)
    assert result.stdout.strip() == "/sandbox ['main.py'] ['0', '1', '2', '3']"


def test_descriptors_numbered_above_the_open_files_limit_do_not_reach_the_code():
    """A host process with many files open hands bwrap descriptors above the jail's
    RLIMIT_NOFILE; they are closed before the code runs all the same."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(FAST.open_files + 16)]
    try:
        code = "import os\nprint(sorted(os.listdir('/proc/self/fd'), key=int))"
        result = run_python(code, FAST)
    finally:
        for fd in held:
            os.close(fd)
    assert result.stdout.strip() == "['0', '1', '2', '3']", result.stderr


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON.exists(),
    reason="needs root (to become another user) and a system Python every user can run",
)
def test_a_non_root_host_gets_the_same_jail():
    """The other path of jail.py: the platform itself runs as an ordinary user (here nobody,
    with the distribution's Python); bwrap then maps the jail's uid to that user."""
    copy = Path(tempfile.mkdtemp(prefix="mind-nonroot-", dir="/tmp"))
    try:
        package = copy / "mind_assets" / "math_traces"
        package.mkdir(parents=True)
        source = PROJECT_DIR / "mind_assets"
        shutil.copy(source / "__init__.py", copy / "mind_assets")
        # The jail needs only the stdlib: its two modules, in a package without the stage's
        # exports (which import Dagster and the assets).
        (package / "__init__.py").write_text("")
        for name in ("sandbox.py", "jail.py"):
            shutil.copy(source / "math_traces" / name, package)
        jailed = (
            SPAWN + "spawn_python(\"import os; print(os.getuid(), os.path.exists('/home'))\")\n"
            "import os, time\nprint(os.getuid(), os.getcwd())\ntime.sleep(1)"
        )
        (copy / "check.py").write_text(
            "import json, sys\n"
            f"sys.path.insert(0, {str(copy)!r})\n"
            "from mind_assets.math_traces.sandbox import SandboxLimits, isolation_problem\n"
            "from mind_assets.math_traces.sandbox import run_python\n"
            f"result = run_python({jailed!r}, SandboxLimits(**{asdict(DEFAULT)!r}))\n"
            "print(json.dumps([isolation_problem(), result.outcome, result.stdout]))\n"
        )
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755)
        ran = subprocess.run(
            [str(SYSTEM_PYTHON), str(copy / "check.py")],
            user=JAIL_UID,
            group=JAIL_UID,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        problem, outcome, printed = json.loads(ran.stdout.splitlines()[-1])
        assert problem is None and outcome == "ok", printed
        assert sorted(printed.split("\n")[:2]) == ["65534 /sandbox", "65534 False"]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


# --- failing closed --------------------------------------------------------------------------


def test_without_bwrap_tool_calls_refuse_and_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert "not installed" in (isolation_problem() or "")
    with pytest.raises(IsolationUnavailable) as refused:
        run_python("print(1)", FAST)
    message = str(refused.value)
    assert "bwrap" in message and "apt-get install bubblewrap" in message
    assert "MIND_MATH__SANDBOX=unsafe-no-isolation" in message


def test_a_bwrap_that_cannot_make_namespaces_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(IsolationUnavailable, match="No permissions to create new namespace"):
        require_isolation(BUBBLEWRAP)


def test_the_unsafe_opt_out_runs_warns_and_says_so(caplog):
    caplog.set_level("WARNING")
    require_isolation(UNSAFE)
    assert "WITHOUT kernel isolation" in caplog.text
    result = run_python("import os\nprint(6 * 7, os.getcwd())", FAST, mode=UNSAFE)
    answer, workdir = result.stdout.split()
    assert result.outcome == "ok" and answer == "42"
    assert result.isolation == UNSAFE
    assert not os.path.exists(workdir)  # its host temp dir is removed afterwards
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        require_isolation("chroot")
