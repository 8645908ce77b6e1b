"""SIGINT for a process that started with it ignored, before Dagster copies it onto SIGTERM."""

from __future__ import annotations

import signal
import threading


def restore_interrupts() -> None:
    """Give SIGINT its default handler back when the process started with it ignored.

    A shell runs a script's background job (`mind demo &`) with SIGINT ignored, and every
    in-process Dagster run hands SIGTERM whatever SIGINT's handler is at the time. From the
    first run on SIGTERM would be ignored too, and so by every process started afterwards
    (Dagster's compute-log tails, servers, sandboxes), which inherit ignored signals: each
    terminate() then waits out its whole timeout, 30 s for every captured step."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # may set handlers
    if in_main_thread and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
