"""Shared engine calls (the platform's run_sharing_calls, and the session worlds' run_merged on
it): every job gets its own replies, in order, the engine sees one call per round, and nothing but
the engine call ever runs in two jobs at once."""

from __future__ import annotations

import threading
import time

import pytest

from mind_assets.llm.offline_engine import OfflineEngine
from mind_assets.llm.shared_calls import run_sharing_calls
from mind_assets_tests.merged_engine_calls import run_merged


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def chat(self, requests):
        self.calls.append(list(requests))
        return [f"reply to {r}" for r in requests]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> RecordingEngine:
    recording = RecordingEngine()
    monkeypatch.setattr(OfflineEngine, "chat", lambda self, requests, *_, **__: self.chat(requests))
    return recording


def test_each_round_is_one_engine_call_and_each_job_gets_its_own_replies(engine):
    inside: list[int] = []  # jobs running outside the engine right now
    overlaps: list[int] = []

    def job(name: str, rounds: list[int]):
        def run():
            replies = []
            for round_number, count in enumerate(rounds):
                inside.append(1)
                time.sleep(0.01)  # room for another job to run meanwhile, were it allowed to
                overlaps.append(len(inside))
                inside.pop()
                asked = [f"{name}{round_number}.{i}" for i in range(count)]
                replies.append(OfflineEngine.chat(engine, asked))
            return replies

        return run

    outcomes, merged = run_merged([job("a", [2, 1]), job("b", [3]), job("c", [1, 2, 1])])
    assert outcomes[0] == [["reply to a0.0", "reply to a0.1"], ["reply to a1.0"]]
    assert outcomes[1] == [["reply to b0.0", "reply to b0.1", "reply to b0.2"]]
    assert outcomes[2][2] == ["reply to c2.0"]
    # Round 1 holds every job's first call; later rounds only the jobs still asking.
    assert merged == [6, 3, 1]
    assert [len(call) for call in engine.calls] == merged
    # In job order, whichever thread asked first: the engine sees the same batch every run.
    assert engine.calls[0] == ["a0.0", "a0.1", "b0.0", "b0.1", "b0.2", "c0.0"]
    assert set(overlaps) == {1}


def test_a_failing_job_raises_after_the_others_finish(engine):
    finished = threading.Event()

    def fails():
        OfflineEngine.chat(engine, ["x"])
        raise RuntimeError("bad reply")

    def succeeds():
        OfflineEngine.chat(engine, ["y"])
        OfflineEngine.chat(engine, ["z"])
        finished.set()
        return "done"

    with pytest.raises(RuntimeError, match="bad reply"):
        run_merged([fails, succeeds])
    assert finished.is_set()
    assert engine.calls == [["x", "y"], ["z"]]


def test_no_jobs_is_no_call():
    assert run_merged([]) == ([], [])


def test_loops_sharing_calls_get_their_own_replies_and_a_short_reply_list_fails_each():
    calls: list[list[str]] = []

    def engine(requests, progress=None):
        calls.append(list(requests))
        return [f"reply to {r}" for r in requests]

    def loop(name: str, rounds: int):
        return lambda chat: [chat([f"{name}{i}"]) for i in range(rounds)]

    outcomes, merged = run_sharing_calls([loop("a", 1), loop("b", 2)], engine)
    assert outcomes == [[["reply to a0"]], [["reply to b0"], ["reply to b1"]]]
    assert merged == [2, 1] and calls == [["a0", "b0"], ["b1"]]

    failures: list[str] = []

    def asks(chat):
        try:
            chat(["x"])
        except RuntimeError as error:
            failures.append(str(error))
            raise

    with pytest.raises(RuntimeError, match="engine returned 1 results for 2"):
        run_sharing_calls([asks, asks], lambda requests, progress=None: ["only one"])
    assert len(failures) == 2  # each loop raised the call's error as its own
