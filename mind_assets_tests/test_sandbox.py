"""The tool-call sandbox: each hostile program is refused, killed at its limit or contained, the
outcome is recorded, and the host is unharmed."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from mind_assets.math_traces.sandbox import SandboxLimits, run_python

FAST = SandboxLimits(wall_seconds=6.0, cpu_seconds=2, memory_bytes=512 << 20, output_bytes=16384)


def test_ordinary_code_runs_and_prints():
    result = run_python("import math\nprint(sum(range(10)), math.comb(5, 2))", FAST)
    assert result.outcome == "ok" and result.stdout.strip() == "45 10"
    assert result.as_tool_output().strip() == "45 10"


def test_an_exception_is_reported_with_its_traceback_tail():
    result = run_python("x = 1 / 0", FAST)
    assert result.outcome == "error" and "ZeroDivisionError" in result.as_tool_output()


def test_infinite_loop_is_stopped_at_the_cpu_limit():
    started = time.monotonic()
    result = run_python("while True:\n    pass", FAST)
    assert result.outcome in ("cpu_limit", "timeout")
    assert time.monotonic() - started < FAST.wall_seconds + 5


def test_sleeping_forever_is_stopped_at_the_wall_clock_limit():
    result = run_python("import time\ntime.sleep(3600)", SandboxLimits(wall_seconds=2.0))
    assert result.outcome == "timeout" and result.wall_seconds < 5


def test_memory_bomb_hits_the_memory_limit():
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))", FAST)
    assert result.outcome == "memory_limit", result


def test_os_system_and_subprocess_are_refused(tmp_path):
    marker = tmp_path / "ran"
    for code in (
        f"import os\nos.system('touch {marker}')",
        f"import subprocess\nsubprocess.run(['touch', '{marker}'])",
        f"import os\nos.execv('/usr/bin/touch', ['touch', '{marker}'])",
    ):
        result = run_python(code, FAST)
        assert result.outcome == "refused", (code, result)
        assert result.refused
    assert not marker.exists()


def test_sockets_are_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    connected = threading.Event()

    def accept() -> None:
        server.settimeout(4)
        try:
            server.accept()
            connected.set()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    result = run_python(code, FAST)
    thread.join()
    server.close()
    assert result.outcome == "refused" and any("socket" in r for r in result.refused)
    assert not connected.is_set()
    listen = run_python("import socket\nsocket.socket().bind(('0.0.0.0', 8000))", FAST)
    assert listen.outcome == "refused"


def test_writing_outside_the_working_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    tmp_path.chmod(0o777)  # so only the sandbox's policy, not file permissions, can stop it
    for code in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        "open('../escaped.txt', 'w').write('x')",
        f"import os\nos.rename('main.py', {str(target)!r})",
    ):
        result = run_python(code, FAST)
        assert result.outcome == "refused", (code, result)
    assert not target.exists()
    inside = run_python("open('notes.txt', 'w').write('ok')\nprint(open('notes.txt').read())")
    assert inside.outcome == "ok" and inside.stdout.strip() == "ok"


def test_environment_variables_of_the_host_are_not_visible(monkeypatch):
    monkeypatch.setenv("MIND_TEST_SECRET_TOKEN", "hunter2-secret")
    result = run_python("import os\nprint(dict(os.environ))", FAST)
    assert result.outcome == "ok" and "hunter2-secret" not in result.stdout
    parent = run_python(
        "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())", FAST
    )
    assert parent.outcome in ("refused", "error") and "hunter2-secret" not in parent.stdout


def test_fork_bomb_is_refused_and_leaves_no_processes():
    before = _process_count()
    code = "import os\nwhile True:\n    os.fork()"
    result = run_python(code, FAST)
    assert result.outcome == "refused" and "os.fork" in result.refused
    mp = run_python(
        "import multiprocessing as m\n"
        "ps = [m.Process(target=print) for _ in range(50)]\n"
        "[p.start() for p in ps]",
        FAST,
    )
    assert mp.outcome == "refused"
    time.sleep(0.5)
    assert _process_count() <= before + 2


def test_huge_print_is_cut_at_the_output_cap():
    result = run_python("while True:\n    print('x' * 1000)", FAST)
    assert result.outcome == "output_limit"
    assert len(result.stdout) <= FAST.output_bytes
    assert "printed too much" in result.as_tool_output()


def test_the_working_directory_is_removed_afterwards():
    result = run_python("import os\nprint(os.getcwd())", FAST)
    workdir = result.stdout.strip()
    assert workdir and not os.path.exists(workdir)


@pytest.mark.parametrize("code", ["import ctypes\nctypes.CDLL(None).system(b'true')"])
def test_native_code_loading_is_refused(code):
    assert run_python(code, FAST).outcome == "refused"


def _process_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())
