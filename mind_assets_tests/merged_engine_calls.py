"""Materialize several partitions at once and send their engine calls as one batch.

The session's shared generations are many small partitions (each MIND style of a shard, each
task family), and on a CPU a decode step costs about the same for six sequences as for forty:
generated one after another, they pay for the same steps again and again. `run_merged` runs each
partition's Dagster materialization as a loop of the platform's `run_sharing_calls`: one thread
at a time outside the engine, and when every unfinished materialization is waiting on
`OfflineEngine.chat`, their requests go to the real engine in one call and each gets its own
replies back. Everything else (Dagster, storage, the metrics store) runs strictly one thread at a
time, as if the partitions were materialized in turn."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest

from mind_assets.llm.batch_runner import ChatFn
from mind_assets.llm.offline_engine import OfflineEngine
from mind_assets.llm.requests import ChatRequest
from mind_assets.llm.shared_calls import run_sharing_calls

ResultT = TypeVar("ResultT")


def run_merged(jobs: Sequence[Callable[[], ResultT]]) -> tuple[list[ResultT], list[int]]:
    """Each job's return value, in order, and how many requests each merged engine call held.
    The first job runs in the calling thread, the others in threads of their own. If a job
    raises, the first error (in job order) is raised once every thread has finished."""
    engine_chat = OfflineEngine.chat
    engines: list[OfflineEngine] = []  # the session's one engine, once a job has asked it
    shared = threading.local()  # each job's chat function, in the job's thread

    def chat(engine: OfflineEngine, requests: Sequence[ChatRequest], *_: Any, **__: Any):
        if not engines:
            engines.append(engine)
        assert engine is engines[0], "the merged jobs must share one engine"
        return shared.chat(requests)  # progress callbacks are no one partition's: dropped

    def loop(job: Callable[[], ResultT]) -> Callable[[ChatFn], ResultT]:
        def run(chat_fn: ChatFn) -> ResultT:
            shared.chat = chat_fn
            return job()

        return run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OfflineEngine, "chat", chat)
        return run_sharing_calls(
            [loop(job) for job in jobs],
            lambda requests, progress=None: engine_chat(engines[0], requests),
        )
