"""Quality gates: a source partition is blended only when every blocking asset check of its
asset passed on the materialization that wrote its current version.

Blocking checks stop downstream steps of the run they fail in, but the partition's new version
is already current by then, and a later manifest build would blend it. So the manifest build
asks the Dagster instance, per candidate partition, for the check evaluations of the run that
last materialized it: a blocking check that failed there, or never ran there, keeps the
partition out (named in the manifest and in `mind audit-blend`), or refuses the build when the
spec says `on_failed_check: fail`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance

from mind_assets.lib.stages import Stage

DATA_VERSION_TAG = "dagster/data_version"  # on every materialization (test_dagster_contract.py)
# (asset, partition key, sha256 of its current version) -> what keeps the partition out of a
# blend; empty when nothing does.
CheckGate = Callable[[str, str, str], list[str]]


@dataclass(frozen=True)
class GateFailure:
    asset: str
    partition: str
    reasons: tuple[str, ...]


class QualityGateError(ValueError):
    """A blend whose spec refuses partitions that failed a blocking check; names them."""


def blocking_checks(stages: Iterable[Stage]) -> dict[str, list[str]]:
    """Asset name -> the names of its blocking checks, as the stages' assets declare them."""
    found: dict[str, list[str]] = {}
    for stage in stages:
        for asset in stage.assets:
            for spec in getattr(asset, "check_specs", ()) or ():
                if spec.blocking:
                    found.setdefault(spec.asset_key.to_user_string(), []).append(spec.name)
    return found


def instance_gate(instance: DagsterInstance, blocking: dict[str, list[str]]) -> CheckGate:
    """A gate that reads the instance: the evaluations of each blocking check in the run that
    last materialized the partition, provided that materialization wrote the version current
    now (its data version is the version's sha256 prefix); a version written otherwise was
    never checked."""

    def gate(asset: str, partition: str, sha256: str) -> list[str]:
        names = blocking.get(asset)
        if not names:
            return []
        key = AssetKey(asset)
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        tags = (records[0].asset_materialization.tags or {}) if records else {}
        if not records or not sha256.startswith(tags.get(DATA_VERSION_TAG) or "-"):
            return [f"{name}: never ran on its current version" for name in names]
        passed: dict[str, bool] = {}
        for entry in instance.all_logs(
            records[0].run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = entry.dagster_event.asset_check_evaluation_data
            if evaluation.asset_key == key and evaluation.partition in (None, partition):
                passed[evaluation.check_name] = evaluation.passed
        return [
            f"{name}: {'failed' if name in passed else 'never ran on its current version'}"
            for name in names
            if not passed.get(name, False)
        ]

    return gate
