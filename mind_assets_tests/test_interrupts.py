"""A `mind` command started with SIGINT ignored (a script's background job, `mind demo &`):
Dagster's in-process runs copy SIGINT's handler onto SIGTERM, and processes started afterwards
inherit what is ignored. The command restores SIGINT first, so SIGTERM still stops them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

# In a process that starts with SIGINT ignored: optionally `mind shards list`, then one
# in-process Dagster run, then a child process. Prints whether the child ignores SIGTERM (read
# from its /proc status, not waited for), and how it ended when asked to stop with SIGTERM.
SCRIPT = textwrap.dedent(
    """
    import signal, subprocess, sys
    from dagster import asset, materialize
    from mind_assets.cli import main

    if sys.argv[1] == "mind":
        assert main(["shards", "list"]) == 0

    @asset
    def one() -> int:
        return 1

    assert materialize([one]).success
    child = subprocess.Popen(["sleep", "120"])
    with open(f"/proc/{child.pid}/status") as status:
        ignored = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    if ignored & (1 << (signal.SIGTERM - 1)):
        child.kill()
        print("ignored SIGTERM")
    else:
        child.terminate()
        print(child.wait(timeout=60))
    """
)


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("first", "child_ends"),
    [("mind", str(-signal.SIGTERM)), ("dagster only", "ignored SIGTERM")],
)
def test_sigterm_still_stops_children_after_a_run_in_a_process_started_with_sigint_ignored(
    first, child_ends, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, first],
        env={**os.environ, "MIND_DATA_DIR": str(tmp_path / "data")},
        preexec_fn=ignore_sigint,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Without the command's restore, Dagster's trap is real: the child ignored SIGTERM.
    assert result.stdout.strip().splitlines()[-1] == child_ends, result.stdout[-2000:]
