"""Bounded re-sampling of replies that fail to parse: after a first batch, the failing requests
are sent again with fresh seeds, a round at a time, each round resumable like any batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mind_assets.llm.batch_runner import (
    ChatFn,
    RequestStore,
    RunStats,
    StoredResult,
    generate_resumable,
)
from mind_assets.llm.requests import ChatRequest

log = logging.getLogger(__name__)

KeyT = TypeVar("KeyT", bound=Hashable)


@dataclass(frozen=True)
class Attempt:
    """The request whose reply an item keeps, and that reply."""

    request: ChatRequest
    stored: StoredResult
    number: int  # 0 for the first attempt, n for the n-th retry
    parsed: bool


@dataclass
class ParseRetryCounts:
    """How many replies failed to parse, and how re-sampling fared."""

    failed_first_attempt: int = 0
    retries_requested: int = 0
    failed_after_retries: int = 0


@dataclass
class ResampledReplies(Generic[KeyT]):
    attempts: dict[KeyT, Attempt]
    counts: ParseRetryCounts
    # One entry per round that asked for anything (the first batch always counts): retried
    # tokens are tokens spent.
    stats: list[RunStats] = field(default_factory=list)


def generate_until_parsed(
    requests: Mapping[KeyT, ChatRequest],
    chat: ChatFn,
    store: RequestStore,
    *,
    parses: Callable[[KeyT, str], bool],
    resample: Callable[[KeyT, ChatRequest, int], ChatRequest],
    retries: int,
    batch_size: int,
    label: str,
    logger: logging.Logger | None = None,
) -> ResampledReplies[KeyT]:
    """A reply for every request: the first attempt whose text `parses`, else the last one.

    A reply that fails is asked again as `resample(key, first_request, attempt)` (the same
    request under a fresh seed) for up to `retries` rounds. Every round goes through `store`, so
    an interrupted run resumes without regenerating, and a rerun regenerates nothing."""
    logger = logger or log
    results, first_stats = generate_resumable(
        list(requests.values()),
        chat,
        store,
        batch_size=batch_size,
        label=label,
        logger=logger,
    )
    attempts = {
        key: Attempt(
            request,
            results[request.request_hash],
            0,
            parses(key, results[request.request_hash].result.text),
        )
        for key, request in requests.items()
    }
    failing = [key for key, attempt in attempts.items() if not attempt.parsed]
    counts = ParseRetryCounts(failed_first_attempt=len(failing))
    stats = [first_stats]
    for number in range(1, retries + 1):
        if not failing:
            break
        logger.info(
            "%s: retry %d/%d: %d of %d replies did not parse; re-sampling them with fresh seeds",
            label,
            number,
            retries,
            len(failing),
            len(requests),
        )
        retry = {key: resample(key, requests[key], number) for key in failing}
        results, round_stats = generate_resumable(
            list(retry.values()),
            chat,
            store,
            batch_size=batch_size,
            label=f"{label} (retry {number})",
            logger=logger,
        )
        stats.append(round_stats)
        counts.retries_requested += len(retry)
        for key, request in retry.items():
            stored = results[request.request_hash]
            attempts[key] = Attempt(request, stored, number, parses(key, stored.result.text))
        failing = [key for key in failing if not attempts[key].parsed]
    counts.failed_after_retries = len(failing)
    if counts.failed_first_attempt:
        logger.info(
            "%s: %d replies did not parse on the first attempt, %d still fail after %d retries",
            label,
            counts.failed_first_attempt,
            counts.failed_after_retries,
            counts.retries_requested,
        )
    return ResampledReplies(attempts, counts, stats)
