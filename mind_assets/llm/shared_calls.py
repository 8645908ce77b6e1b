"""Several generation loops in one step, sharing each engine call.

A step that generates for several independent request sets (problem_difficulty's difficulty
modes, say) would otherwise call the engine once per set and round, one after another. On a CPU,
and on a GPU with a small batch, a decode step costs about the same for ten sequences as for
forty, so each extra call pays for the same steps again. `run_sharing_calls` runs each loop in a
thread of its own, one loop at a time, and lets them overlap only inside the engine: a loop's chat
waits until every unfinished loop is waiting on the engine, then one call carries all their
requests and each loop gets its own replies back. Outside the engine the loops take turns, so
what they share (a tokenizer, the metrics store, a log) is used by one thread at a time, as if
the loops ran one after another."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mind_assets.llm.batch_runner import ChatFn
from mind_assets.llm.requests import ChatRequest, ChatResult, ProgressCallback

ResultT = TypeVar("ResultT")


@dataclass
class _Call:
    loop: int
    requests: Sequence[ChatRequest]
    progress: ProgressCallback | None
    results: list[ChatResult] | None = None
    error: BaseException | None = None


class _SharedEngine:
    """The chat function each loop is given, whose turn it is outside the engine, and how many
    loops are still running; `_condition` guards all of it."""

    def __init__(self, chat: ChatFn, loops: int) -> None:
        self._chat = chat
        self._running = loops
        self._busy = False  # a loop is running outside the engine
        self._waiting: list[_Call] = []
        self._condition = threading.Condition()
        self.calls: list[int] = []  # requests per engine call

    def take_turn(self) -> None:
        with self._condition:
            self._condition.wait_for(lambda: not self._busy)
            self._busy = True

    def chat_for(self, loop: int) -> ChatFn:
        def chat(
            requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
        ) -> list[ChatResult]:
            call = _Call(loop, requests, progress)
            with self._condition:
                self._waiting.append(call)
                self._busy = False
                self._condition.notify_all()
                self._call_if_all_wait()
                # Answered, and then the turn back outside the engine.
                self._condition.wait_for(
                    lambda: (call.results is not None or call.error is not None) and not self._busy
                )
                self._busy = True
            if call.error is not None:
                raise call.error
            assert call.results is not None
            return call.results

        return chat

    def finished(self) -> None:
        with self._condition:
            self._running -= 1
            self._busy = False
            self._condition.notify_all()
            self._call_if_all_wait()

    def _call_if_all_wait(self) -> None:
        """With the condition held: once every running loop waits, make the one call. The call
        runs with the condition held, since every other loop is waiting on it anyway."""
        if not self._waiting or len(self._waiting) < self._running:
            return
        # In loop order, whichever thread arrived first: the same batch every time.
        batch, self._waiting = sorted(self._waiting, key=lambda c: c.loop), []
        requests = [r for call in batch for r in call.requests]
        self.calls.append(len(requests))
        progress = next((c.progress for c in batch if c.progress is not None), None)
        try:
            replies = self._chat(requests, progress)
            if len(replies) != len(requests):
                raise RuntimeError(f"engine returned {len(replies)} results for {len(requests)}")
        except BaseException as error:  # every loop of the call raises it as its own
            for call in batch:
                call.error = error
        else:
            start = 0
            for call in batch:
                call.results = replies[start : start + len(call.requests)]
                start += len(call.requests)
        self._condition.notify_all()


def run_sharing_calls(
    loops: Sequence[Callable[[ChatFn], ResultT]], chat: ChatFn
) -> tuple[list[ResultT], list[int]]:
    """Each loop's return value, in order, and how many requests each engine call carried. Each
    loop is called with the chat function it must use. The first loop runs in the calling
    thread, the others in threads of their own; if a loop raises, the first error (in loop
    order) is raised once every loop has finished."""
    engine = _SharedEngine(chat, len(loops))
    outcomes: list[ResultT | None] = [None] * len(loops)
    errors: dict[int, BaseException] = {}

    def body(index: int) -> None:
        engine.take_turn()
        try:
            outcomes[index] = loops[index](engine.chat_for(index))
        except BaseException as error:
            errors[index] = error
        finally:
            engine.finished()

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(1, len(loops))]
    for thread in threads:
        thread.start()
    if loops:
        body(0)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[min(errors)]
    return outcomes, engine.calls  # type: ignore[return-value]
