"""Scheduled regeneration of every generated family: each tick observes every version source
(prompt files, model and engine, thresholds), asks which materialized partitions of its chain
are unsynced, and requests at most a budget of them.

A chain is the assets one unsynced partition brings along: an unsynced `conversations`
partition is regenerated and filtered again, an unsynced `filtered_conversations` one (a
threshold change) only filtered again; task Q&A, Prismatic items and solution traces are chains
of one. A tick asks about at most a scan limit of partitions, in key order, going on after the
last one the previous tick asked; that position (the cursor, in the instance's cursor storage)
moves only once Dagster has accepted the tick that asked: the next tick commits it when a run of
the previous tick's requests exists (or the tick requested nothing), and asks from the old
position again otherwise, so a tick Dagster dropped loses no partition.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from mind_assets.lib.versions import UnsyncedStatus
from mind_assets.operations.versions import record_versions
from mind_assets.settings import MindSettings, get_settings

RUN_KEY_TAG = "dagster/run_key"  # on every run a RunRequest with a run_key launches


@dataclass(frozen=True)
class RegenerationChain:
    """Assets regenerated together: a partition's first unsynced asset of the chain and every
    one after it are rematerialized."""

    name: str  # the schedule is regenerate_unsynced_<name>
    assets: tuple[AssetsDefinition, ...]
    budget: Callable[[MindSettings], int]  # partitions requested per tick
    scan_limit: Callable[[MindSettings], int]  # partitions asked about per tick
    description: str

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key.to_user_string() for a in self.assets)


@dataclass(frozen=True)
class PartitionToRegenerate:
    partition: str  # the partition key, e.g. "shard|style"
    assets: tuple[str, ...]  # what to rematerialize
    causes: tuple[str, ...]


@dataclass(frozen=True)
class RegenerationScan:
    found: list[PartitionToRegenerate]
    asked: int  # partitions Dagster was asked about
    last_asked: str | None  # where the next scan goes on (None: nothing is materialized)


def partitions_to_regenerate(
    status: UnsyncedStatus,
    chain: Sequence[str],
    *,
    budget: int | None = None,
    scan_limit: int | None = None,
    start_after: str | None = None,
) -> RegenerationScan:
    """Materialized partitions of the `chain`'s assets that are unsynced, each with the assets
    to rematerialize (its first unsynced asset and the rest of the chain).

    Partitions are asked about in key order from the one after `start_after` (wrapping around),
    at most `scan_limit` of them, stopping once `budget` are found: each partition asked costs a
    few event-log queries (benchmarks/RESULTS.md, *scale*), so a tick over tens of thousands of
    partitions must not ask about all of them."""
    materialized = {key: set(status.materialized_partitions(key)) for key in chain}
    ordered = sorted(set().union(*materialized.values()))
    if start_after is not None:
        later = [p for p in ordered if p > start_after]
        ordered = later + [p for p in ordered if p <= start_after]
    found: list[PartitionToRegenerate] = []
    asked = 0
    last_asked = None
    for partition in ordered:
        if (scan_limit is not None and asked >= scan_limit) or (
            budget is not None and len(found) >= budget
        ):
            break
        asked += 1
        last_asked = partition
        for position, key in enumerate(chain):
            if partition in materialized[key] and (item := status.unsynced(key, partition)):
                found.append(PartitionToRegenerate(partition, tuple(chain[position:]), item.causes))
                break
    return RegenerationScan(found, asked, last_asked)


class ScanCursor:
    """Where a schedule's scan goes on, committed only for ticks Dagster accepted. A tick
    stages its new position with the run keys it requested; the next tick commits it when one
    of those runs exists (or nothing was requested) and discards it otherwise."""

    def __init__(self, instance: DagsterInstance, name: str) -> None:
        self._instance = instance
        self._storage = instance.daemon_cursor_storage
        self._committed = f"mind_assets/regenerate_unsynced_{name}/last_asked"
        self._staged = f"mind_assets/regenerate_unsynced_{name}/staged"

    def position(self) -> str | None:
        """The committed position, after committing the last tick's if it was accepted."""
        values = self._storage.get_cursor_values({self._committed, self._staged})
        staged = json.loads(values.get(self._staged) or "{}")
        if staged:
            if not staged.get("run_keys") or self._any_launched(staged["run_keys"]):
                self._storage.set_cursor_values(
                    {self._committed: staged["last_asked"], self._staged: "{}"}
                )
                return staged["last_asked"]
            self._storage.set_cursor_values({self._staged: "{}"})  # the tick was dropped
        return values.get(self._committed)

    def stage(self, last_asked: str | None, run_keys: list[str]) -> None:
        if last_asked is not None:
            payload = json.dumps({"last_asked": last_asked, "run_keys": run_keys})
            self._storage.set_cursor_values({self._staged: payload})

    def _any_launched(self, run_keys: list[str]) -> bool:
        return any(
            self._instance.get_run_records(RunsFilter(tags={RUN_KEY_TAG: key}), limit=1)
            for key in run_keys
        )


def partition_key(partitions_def: Any, key: str) -> str:
    """A partition key string as a run request wants it (a MultiPartitionKey for several
    dimensions)."""
    from_str = getattr(partitions_def, "get_partition_key_from_str", None)
    return from_str(key) if from_str is not None else key


def regeneration_schedule(chain: RegenerationChain) -> ScheduleDefinition:
    """The hourly schedule (off until switched on) that regenerates `chain`'s unsynced
    partitions, at most its budget per tick."""
    partitions_def = chain.assets[0].partitions_def

    @schedule(
        name=f"regenerate_unsynced_{chain.name}",
        cron_schedule="0 * * * *",
        target=list(chain.assets),
        default_status=DefaultScheduleStatus.STOPPED,
        description=chain.description,
    )
    def _regenerate(context: ScheduleEvaluationContext):
        settings = get_settings()
        for change in record_versions(context.instance, settings):
            where = f"[{change.partition}]" if change.partition else ""
            context.log.info(
                "observed %s%s: %s -> %s", change.key, where, change.previous, change.current
            )
        # Dagster's code server evaluates schedules with their repository, and so its assets.
        status = UnsyncedStatus.of_repository(context.instance, context.repository_def)
        cursor = ScanCursor(context.instance, chain.name)
        start_after = cursor.position()
        scan = partitions_to_regenerate(
            status,
            chain.keys,
            budget=chain.budget(settings),
            scan_limit=chain.scan_limit(settings),
            start_after=start_after,
        )
        context.log.info(
            "asked about %d %s partitions after %s; %d unsynced",
            scan.asked,
            chain.name,
            start_after or "the first",
            len(scan.found),
        )
        requests = [
            RunRequest(
                # One request per partition and tick: a partition still unsynced when the scan
                # comes round to it again (its run failed) is asked for again.
                run_key=f"regenerate:{item.partition}:{'+'.join(item.assets)}:"
                f"{context.scheduled_execution_time:%Y%m%dT%H%M}",
                partition_key=partition_key(partitions_def, item.partition),
                asset_selection=[AssetKey(a) for a in item.assets],
            )
            for item in scan.found
        ]
        cursor.stage(scan.last_asked, [r.run_key for r in requests])
        for item in scan.found:
            context.log.info("regenerating %s %s: %s", item.partition, item.assets, item.causes)
        return requests or SkipReason(
            f"no unsynced {chain.name} partition among the {scan.asked} asked"
        )

    return _regenerate
