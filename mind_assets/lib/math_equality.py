"""Math-Verify's `parse` and `verify`, callable from any thread.

Math-Verify bounds both with `signal.alarm`, which Python allows only in the main thread: from a
worker thread (a threaded executor, a server, several partitions materialized at once) every
call raised ValueError ("doesn't support threaded environment"). There they run unbounded
instead; the main thread keeps Math-Verify's own 5-second bound.
"""

from __future__ import annotations

import threading
from typing import Any

MAIN_THREAD_TIMEOUT_S = 5  # Math-Verify's default for both calls


def _timeout() -> int | None:
    return MAIN_THREAD_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def parse(text: str) -> list[Any]:
    """The expressions Math-Verify reads in `text` (empty when it reads none)."""
    from math_verify import parse as math_verify_parse

    return math_verify_parse(text, parsing_timeout=_timeout())  # type: ignore[arg-type]


def verify(gold: list[Any], guess: list[Any]) -> bool:
    """Whether two parsed answers are equal as mathematics."""
    from math_verify import verify as math_verify_verify

    return bool(math_verify_verify(gold, guess, timeout_seconds=_timeout()))
