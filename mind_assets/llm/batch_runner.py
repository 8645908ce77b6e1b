"""Resumable batched generation: finished batches are persisted as they complete.

Each result is keyed by its request hash. A rerun reads what earlier attempts finished (the
batch files, and the partition's final parquet if it exists) and sends only the rest to the
engine, so a crash costs at most one batch and an unchanged rerun costs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from mind_assets.lib.storage import (
    delete,
    list_outputs,
    output_exists,
    read_output,
    read_output_schema,
    remove_dir_if_empty,
    write_parquet_atomic,
)
from mind_assets.llm.requests import REPLY_FIELDS, ChatRequest, ChatResult, GenerationProgress

log = logging.getLogger(__name__)

# One stored reply: its text, which engine or server answered, and what a row keeps of it.
RESULT_SCHEMA = pa.schema(
    [
        pa.field("text", pa.string(), nullable=False),
        pa.field("served_by", pa.string()),
        *REPLY_FIELDS,
    ]
)

ChatFn = Callable[
    [Sequence[ChatRequest], Callable[[GenerationProgress], None] | None], list[ChatResult]
]


@dataclass(frozen=True)
class StoredResult:
    result: ChatResult
    created_at: datetime


@dataclass
class RunStats:
    requested: int = 0
    reused: int = 0
    generated: int = 0
    batches: int = 0
    output_tokens: int = 0
    input_tokens: int = 0
    generation_seconds: float = 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.generation_seconds if self.generation_seconds else 0.0


class RequestStore:
    """Per-partition directory of finished batches (`batch-00001.parquet`, ...), kept through the
    data-root gateway: under an object store each batch is uploaded as it finishes and listed
    from the store, so a step that died resumes in a new pod from what reached the store."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def batch_files(self) -> list[Path]:
        return list_outputs(self.directory, "batch-*.parquet")

    def load(self, extra_files: Sequence[Path] = ()) -> dict[str, StoredResult]:
        done: dict[str, StoredResult] = {}
        for path in [*extra_files, *self.batch_files()]:
            if not output_exists(path):
                continue
            # A partition's final parquet holds the result columns too, minus `served_by`.
            available = set(read_output_schema(path).names)
            table = read_output(path, columns=[n for n in RESULT_SCHEMA.names if n in available])
            for row in table.to_pylist():
                done[row["request_hash"]] = StoredResult(
                    ChatResult(
                        text=row["text"],
                        prompt_tokens=row["prompt_tokens"],
                        completion_tokens=row["completion_tokens"],
                        finish_reason=row["finish_reason"],
                        served_by=row.get("served_by") or "",
                    ),
                    row["created_at"],
                )
        return done

    def save_batch(self, pairs: Sequence[tuple[ChatRequest, ChatResult]]) -> Path:
        existing = self.batch_files()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 1
        now = datetime.now(UTC)
        table = pa.Table.from_pylist(
            [
                {
                    "request_hash": request.request_hash,
                    "text": result.text,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "finish_reason": result.finish_reason,
                    "served_by": result.served_by,
                    "created_at": now,
                }
                for request, result in pairs
            ],
            schema=RESULT_SCHEMA,
        )
        return write_parquet_atomic(table, self.directory / f"batch-{number:05d}.parquet")

    def clear(self) -> None:
        """Delete the batches (here and in the store) once the partition's output holds them."""
        for path in self.batch_files():
            delete(path)
        remove_dir_if_empty(self.directory)


def generate_resumable(
    requests: Sequence[ChatRequest],
    chat: ChatFn,
    store: RequestStore,
    *,
    batch_size: int,
    previous_outputs: Sequence[Path] = (),
    label: str = "generation",
    logger: logging.Logger | None = None,
) -> tuple[dict[str, StoredResult], RunStats]:
    """Results for every request, generating only those no earlier attempt finished."""
    logger = logger or log
    stats = RunStats(requested=len(requests))
    done = store.load(previous_outputs)
    wanted = {r.request_hash for r in requests}
    done = {h: r for h, r in done.items() if h in wanted}
    stats.reused = len(done)
    # Longest first: similar lengths share a batch, and stragglers don't trail at the end.
    missing = sorted(
        {r.request_hash: r for r in requests if r.request_hash not in done}.values(),
        key=lambda r: -r.approx_length,
    )
    if not missing:
        logger.info("%s: all %d requests already generated; nothing to do", label, len(wanted))
        return done, stats
    logger.info(
        "%s: %d requests, %d reused from earlier attempts, %d to generate in batches of %d",
        label,
        len(wanted),
        stats.reused,
        len(missing),
        batch_size,
    )
    n_batches = (len(missing) + batch_size - 1) // batch_size
    for number, offset in enumerate(range(0, len(missing), batch_size), start=1):
        batch = missing[offset : offset + batch_size]

        def report(progress: GenerationProgress, number: int = number) -> None:
            logger.info(
                "%s: batch %d/%d: %d/%d requests (%d/%d overall) %s",
                label,
                number,
                n_batches,
                progress.done,
                progress.total,
                stats.reused + stats.generated + progress.done,
                len(wanted),
                progress.extra.get("speed", ""),
            )

        started = time.monotonic()
        results = chat(batch, report)
        elapsed = time.monotonic() - started
        if len(results) != len(batch):
            raise RuntimeError(f"{label}: engine returned {len(results)} results for {len(batch)}")
        store.save_batch(list(zip(batch, results, strict=True)))
        now = datetime.now(UTC)
        for request, result in zip(batch, results, strict=True):
            done[request.request_hash] = StoredResult(result, now)
        stats.batches += 1
        stats.generated += len(batch)
        stats.generation_seconds += elapsed
        batch_out = sum(r.completion_tokens for r in results)
        stats.output_tokens += batch_out
        stats.input_tokens += sum(r.prompt_tokens for r in results)
        logger.info(
            "%s: batch %d/%d done: %d requests, %d output tokens in %.1f s (%.1f tok/s); "
            "%d/%d complete",
            label,
            number,
            n_batches,
            len(batch),
            batch_out,
            elapsed,
            batch_out / elapsed if elapsed else 0.0,
            len(done),
            len(wanted),
        )
    return done, stats
