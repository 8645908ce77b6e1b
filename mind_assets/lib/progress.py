"""Progress of long work (tokenizing a corpus, exporting a blend): rows, tokens, tokens per
second and the time left, logged at most every few seconds to the Dagster log or the terminal."""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts rows and tokens of one piece of work of `total_rows` rows (None: unknown) and
    logs a line through `log` every `every_s` seconds and when done."""

    def __init__(
        self, what: str, log: Log | None, total_rows: int | None = None, every_s: float = 10.0
    ) -> None:
        self.what = what
        self.log = log
        self.total_rows = total_rows
        self.every_s = every_s
        self.rows = 0
        self.tokens = 0
        self.started = time.monotonic()
        self._last = self.started

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.rows += rows
        self.tokens += tokens
        now = time.monotonic()
        if self.log is not None and now - self._last >= self.every_s:
            self._last = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        done = f"{self.rows:,}"
        left = ""
        if self.total_rows:
            done += f"/{self.total_rows:,} rows ({100 * self.rows / self.total_rows:.0f}%)"
            if 0 < self.rows < self.total_rows:
                left = f", about {_duration(elapsed * (self.total_rows / self.rows - 1))} left"
        else:
            done += " rows"
        rate = f"{self.tokens / elapsed:,.0f} tokens/s"
        return f"{self.what}: {done}, {self.tokens:,} tokens, {rate}{left}"

    def finish(self) -> None:
        if self.log is not None:
            elapsed = time.monotonic() - self.started
            self.log(f"{self.line()} (done in {_duration(elapsed)})")
