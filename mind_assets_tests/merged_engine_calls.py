"""Materialize several partitions at once and send their engine calls as one batch.

The session's shared generations are many small partitions (each MIND style of a shard, each
task family), and on a CPU a decode step costs about the same for six sequences as for forty:
generated one after another, they pay for the same steps again and again. `run_merged` runs each
partition's Dagster materialization in a thread of its own, one thread at a time, and lets them
overlap only inside the engine: when every unfinished thread is waiting on `OfflineEngine.chat`,
their requests go to the real engine in one call and each thread gets its own replies back.
Everything else (Dagster, storage, the metrics store) runs strictly one thread at a time, as if
the partitions were materialized in turn."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from mind_assets.llm.offline_engine import OfflineEngine
from mind_assets.llm.requests import ChatRequest, ChatResult

ResultT = TypeVar("ResultT")


@dataclass
class _Waiting:
    job: int
    engine: OfflineEngine
    requests: Sequence[ChatRequest]
    results: list[ChatResult] | None = None
    error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self.results is not None or self.error is not None


@dataclass
class _Turns:
    """Which thread runs outside the engine, and which threads wait on it."""

    engine_chat: Callable[..., list[ChatResult]]
    unfinished: int
    busy: bool = False  # a thread is running outside the engine
    waiting: list[_Waiting] = field(default_factory=list)
    merged_calls: list[int] = field(default_factory=list)  # requests per merged engine call
    condition: threading.Condition = field(default_factory=threading.Condition)

    # Every method below runs with `condition` held.

    def take_turn(self) -> None:
        self.condition.wait_for(lambda: not self.busy)
        self.busy = True

    def give_turn(self) -> None:
        self.busy = False
        self.condition.notify_all()

    def call_engine_if_all_wait(self) -> None:
        """The merged call, once every unfinished thread waits on the engine. It runs with the
        condition held: nothing else could run meanwhile anyway."""
        if not self.waiting or len(self.waiting) < self.unfinished:
            return
        # In job order, whichever thread got here first: the same batch every time.
        batch, self.waiting = sorted(self.waiting, key=lambda w: w.job), []
        [engine] = {id(w.engine): w.engine for w in batch}.values()  # the session's one engine
        requests = [r for waiting in batch for r in waiting.requests]
        self.merged_calls.append(len(requests))
        try:
            replies = self.engine_chat(engine, requests)
        except BaseException as error:  # every waiting thread raises it as its own
            for waiting in batch:
                waiting.error = error
        else:
            start = 0
            for waiting in batch:
                waiting.results = replies[start : start + len(waiting.requests)]
                start += len(waiting.requests)
        self.condition.notify_all()


def run_merged(jobs: Sequence[Callable[[], ResultT]]) -> tuple[list[ResultT], list[int]]:
    """Each job's return value, in order, and how many requests each merged engine call held.
    The first job runs in the calling thread, the others in threads of their own. If a job
    raises, the first error is raised once every thread has finished."""
    if not jobs:
        return [], []
    turns = _Turns(engine_chat=OfflineEngine.chat, unfinished=len(jobs))
    current = threading.local()  # the job index of each thread

    def chat(engine: OfflineEngine, requests: Sequence[ChatRequest], *_: Any, **__: Any):
        # Progress callbacks are dropped: a merged call's progress is no one partition's.
        waiting = _Waiting(current.job, engine, requests)
        with turns.condition:
            turns.waiting.append(waiting)
            turns.give_turn()
            turns.call_engine_if_all_wait()
            turns.condition.wait_for(lambda: waiting.answered)
            turns.take_turn()
        if waiting.error is not None:
            raise waiting.error
        assert waiting.results is not None
        return waiting.results

    outcomes: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        current.job = index
        with turns.condition:
            turns.take_turn()
        try:
            outcomes[index] = jobs[index]()
        except BaseException as error:
            errors.append(error)
        finally:
            with turns.condition:
                turns.unfinished -= 1
                turns.give_turn()
                turns.call_engine_if_all_wait()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OfflineEngine, "chat", chat)
        threads = [
            threading.Thread(target=body, args=(i,), daemon=True) for i in range(1, len(jobs))
        ]
        for thread in threads:
            thread.start()
        body(0)  # the first job in the calling thread
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return outcomes, turns.merged_calls
