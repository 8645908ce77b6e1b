"""What a stage declares about each family of rows it writes, once: the asset and its file per
partition, the partition dimensions, the Arrow schema (lineage columns included), the columns that
name a row and hold its text, the quarantine beside it, and how a row reaches the rows it was
made from. Blends (spec, manifest, export) and lineage (audit, trace) read these declarations
instead of knowing each family.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.storage import (
    InvalidNameError,
    asset_path,
    list_outputs,
    output_exists,
    quarantine_version,
    read_output,
    validate_name,
    write_parquet_version,
)
from mind_assets.settings import MindSettings

QUARANTINE_SUFFIX = ".quarantine.parquet"

Keys = dict[str, str]  # one partition: {dimension name: key}


@dataclass(frozen=True)
class PartitionDim:
    """One partition dimension, and where its keys come from: fixed in code (`values`: styles,
    modes), registered at run time in a Dagster dynamic partitions definition (`dynamic`: shards,
    task families) or configured (`configured`: math sources from settings). `selection` is the
    blend spec's selection field that narrows it (`shards: [a, b]`). `shards_rows`: its keys
    only cut one kind of rows into pieces (corpus shards), so a published dataset joins them into
    one config; the keys of every other dimension (style, task family, source, mode) tell kinds
    of rows apart, a config each."""

    name: str
    selection: str
    values: tuple[str, ...] = ()
    dynamic: str | None = None
    configured: Callable[[MindSettings], Sequence[str]] | None = None
    shards_rows: bool = False

    def __post_init__(self) -> None:
        given = [bool(self.values), self.dynamic is not None, self.configured is not None]
        if sum(given) != 1:
            raise ValueError(
                f"partition dimension {self.name!r}: give exactly one of values, dynamic, "
                "configured"
            )


@dataclass(frozen=True)
class ParentLink:
    """How a row reaches the rows it was made from: the parent family, and the pair (column of
    this row, id column of the parent) that match. `many`: this row's column lists several
    parent ids (task Q&A seeds). The parent's partition is read off this row's columns named
    after the parent's dimensions, else taken from this row's own partition."""

    family: OutputFamily
    column: str
    many: bool = False


@dataclass(frozen=True)
class OutputFamily:
    """A family of rows: the output of one asset, `<data_dir>/<name>/<key1>/<key2>.parquet`."""

    name: str  # the asset that writes it, and its directory under the data root
    dims: tuple[PartitionDim, ...]  # in path order
    schema: pa.Schema
    id_column: str
    text_column: str = "text"  # what a blend trains on
    quarantine_schema: pa.Schema | None = None  # rejected rows, beside the accepted file
    parents: tuple[ParentLink, ...] = ()
    token_column: str | None = None  # tokens a row holds or cost, summed by the audit
    # What a row answers, where it answers something: diversity takes the gradient of the
    # completion (default: the text column) given this prompt column.
    prompt_column: str | None = None
    completion_column: str | None = None
    label: str = ""  # how `mind trace` names one row of the family (default: the name)
    blendable: bool = False  # a blend spec may name it as a source
    dim_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_names", tuple(d.name for d in self.dims))
        columns = (
            self.id_column,
            self.text_column,
            self.token_column,
            self.prompt_column,
            self.completion_column,
        )
        for column in columns:
            if column is not None and column not in self.schema.names:
                raise ValueError(f"{self.name}: column {column!r} is not in its schema")
        for link in self.parents:
            if link.column not in self.schema.names:
                raise ValueError(
                    f"{self.name}: parent link column {link.column!r} is not in its schema"
                )

    @property
    def row_label(self) -> str:
        return self.label or self.name

    @property
    def completion(self) -> str:
        return self.completion_column or self.text_column

    @property
    def is_root(self) -> bool:
        """Derives from no other family: raw text, seed rows, problems."""
        return not self.parents

    # --- partitions ---------------------------------------------------------------------------
    def keys(self, partition_key: str) -> Keys:
        """A Dagster partition key string as {dimension: key}. Dagster joins a multi-partition
        key in the order of the dimension names, not of their declaration."""
        parts = partition_key.split("|")
        if len(parts) != len(self.dims):
            raise ValueError(
                f"{self.name}: partition {partition_key!r} does not match its dimensions "
                f"{list(self.dim_names)}"
            )
        return dict(zip(sorted(self.dim_names), parts, strict=True))

    def partition_key(self, keys: Mapping[str, str]) -> str:
        """The Dagster partition key string of one partition."""
        return "|".join(keys[name] for name in sorted(self.dim_names))

    def partitions(self, choices: Mapping[str, Sequence[str]]) -> list[Keys]:
        """Every partition over the given keys per dimension; a dimension not given takes its
        declared values (none, for a dynamic or configured one)."""
        axes = [choices.get(d.name) or d.values for d in self.dims]
        return [dict(zip(self.dim_names, combo, strict=True)) for combo in itertools.product(*axes)]

    # --- files --------------------------------------------------------------------------------
    def path(self, data_dir: Path, keys: Mapping[str, str]) -> Path:
        return asset_path(data_dir, self.name, *(keys[name] for name in self.dim_names))

    def quarantine_path(self, data_dir: Path, keys: Mapping[str, str]) -> Path:
        if self.quarantine_schema is None:
            raise ValueError(f"{self.name} keeps no quarantine")
        parts = (keys[name] for name in self.dim_names)
        return asset_path(data_dir, self.name, *parts, suffix=QUARANTINE_SUFFIX)

    def partition(self, data_dir: Path, keys: Mapping[str, str] | str) -> Partition:
        """One partition of this family under `data_dir`, by its keys or its Dagster partition
        key string (`"shard|style"`)."""
        return Partition(self, data_dir, self.keys(keys) if isinstance(keys, str) else dict(keys))

    def materialized(self, data_dir: Path) -> list[Keys]:
        """Every partition that has a file now (`<name>/<k1>/<k2>.parquet`), in path order;
        quarantines, versions and temporary files are no partitions. Under an object store the
        store is listed, and what it holds is pulled (the callers read the files next)."""
        if not self.dims:
            return []
        root = data_dir / self.name
        found = []
        for path in list_outputs(root, "/".join(["*"] * len(self.dims)) + ".parquet"):
            if path.name.endswith(QUARANTINE_SUFFIX):
                continue
            keys = self.keys_from_path(path)
            try:
                for key in keys.values():
                    validate_name(key)
            except InvalidNameError:
                continue  # not a file a partition could have written
            found.append(keys)
        return found

    def keys_from_path(self, path: Path) -> Keys:
        """The partition a file of this family holds, read off its path (`.../<name>/<k1>/<k2>
        .parquet`), so that a data root moved elsewhere still resolves."""
        parts = path.with_suffix("").parts
        n = len(self.dims)
        if len(parts) > n and parts[-n - 1] == self.name:
            return dict(zip(self.dim_names, parts[-n:], strict=True))
        raise ValueError(f"{path} is not a file of {self.name} (<{self.name}>/{self.dim_names})")

    # --- lineage ------------------------------------------------------------------------------
    def parent_keys(
        self, link: ParentLink, keys: Mapping[str, str], row: Mapping[str, Any] | None = None
    ) -> list[Keys]:
        """The parent partitions a partition (or one `row` of it) derives from: each parent
        dimension from the row's column of that name, else this partition's key of that name,
        else every declared key of the dimension."""
        known: dict[str, list[str]] = {}
        for dim in link.family.dims:
            value = (row or {}).get(dim.name) or keys.get(dim.name)
            if value is not None:
                known[dim.name] = [str(value)]
            elif not dim.values:
                raise ValueError(
                    f"{self.name} -> {link.family.name}: the parent's {dim.name!r} cannot be "
                    "known from this partition"
                )
        return link.family.partitions(known)

    def upstream(self, keys: Mapping[str, str]) -> Iterator[tuple[OutputFamily, Keys]]:
        """Every partition this one derives from, roots first and itself last (repeats
        included: callers that want each once keep the first)."""
        for link in self.parents:
            for parent_keys in self.parent_keys(link, keys):
                yield from link.family.upstream(parent_keys)
        yield self, dict(keys)

    def depth(self) -> int:
        """Hops to the farthest root: 0 for a root family."""
        return 1 + max(link.family.depth() for link in self.parents) if self.parents else 0


@dataclass(frozen=True)
class Partition:
    """One partition of an output family under one data root, read and written through the
    data-root gateway: what an asset body holds instead of paths."""

    family: OutputFamily
    data_dir: Path
    keys: Keys

    @property
    def path(self) -> Path:
        return self.family.path(self.data_dir, self.keys)

    @property
    def quarantine_path(self) -> Path:
        return self.family.quarantine_path(self.data_dir, self.keys)

    @property
    def key(self) -> str:
        """The Dagster partition key string."""
        return self.family.partition_key(self.keys)

    def is_materialized(self) -> bool:
        """Whether the partition has an output (in the store first)."""
        return output_exists(self.path)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return read_output(self.path, columns=columns)

    def has_quarantine(self) -> bool:
        """Whether the accepted rows read now have a quarantine beside them."""
        if self.family.quarantine_schema is None or not self.is_materialized():
            return False
        return output_exists(quarantine_version(self.path, self.quarantine_path))

    def read_quarantine(self, columns: list[str] | None = None) -> pa.Table:
        """The quarantine written with the accepted rows read now (one commit, one version id)."""
        return read_output(quarantine_version(self.path, self.quarantine_path), columns=columns)

    def write(self, table: pa.Table) -> Path:
        """Write `table` as this partition's new version; returns the partition's path."""
        return write_parquet_version(table, self.path)


def family_graph(families: Sequence[OutputFamily]) -> dict[str, OutputFamily]:
    """The given families and every family they derive from, by name; two declarations under
    one name are an error."""
    found: dict[str, OutputFamily] = {}

    def visit(family: OutputFamily) -> None:
        seen = found.get(family.name)
        if seen is not None and seen is not family:
            raise ValueError(f"two output families are named {family.name!r}")
        found[family.name] = family
        for link in family.parents:
            visit(link.family)

    for family in families:
        visit(family)
    return found
