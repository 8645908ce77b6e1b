"""The partition space at scale: 100, 1,000 and 10,000 registered shards (x 8 styles, the seven
MIND styles and the rephrase baseline = 800 to 80,000 `conversations` partitions) on a fresh
SQLite and a fresh PostgreSQL instance.

One instance per backend grows through the sizes. Before each size is measured, the shards
missing to reach it are registered in bulk (`register_shards`, the inbox sensor's path), a few
through the CLI (`mind shards add`, in-process and as a real process), a few more by dropping
files into the inbox and ticking `corpus_inbox_sensor`. Then at that size: loading the
definitions (a fresh process: import, Definitions build and validation, the repository's asset
graph, the code location loaded as the webserver loads it), the GraphQL query the asset page of
the Dagster UI sends for partition status (`PartitionHealthQuery`, cold and warm), one idle
tick of the inbox sensor, one tick of `regenerate_unsynced_conversations`, and one evaluation
of the declarative automation conditions. Every shard's spec points at the same napkin file
with its own one-row range, so no corpus data is written; 1 % of the shards get runless
`conversations` materializations (all styles) so the status query has something to report, and
one shard has stale conversation files for the schedule to find.

Wall and CPU seconds are both reported: the development machine is shared, and the 1-minute
load average is printed before each size. Writes the "scale" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.data import NAPKIN  # noqa: E402
from benchmarks.results import RESULTS, replace_section  # noqa: E402
from mind_assets.llm.hardware import detect_host  # noqa: E402
from mind_assets_tests.postgres import throwaway_postgres  # noqa: E402

SIZES = (100, 1_000, 10_000)
CLI_ADDS = 5  # in-process `mind shards add` calls per size
INBOX_FILES = 5  # files dropped into the inbox per size
MATERIALIZED_EVERY = 100  # one shard in this many gets runless conversations materializations
STALE_SHARD = "owm-0000000"  # its conversation files carry an old prompt version

# The query the asset page of the Dagster UI (1.13) sends for the partition status bar and the
# partitions tab: ui-core/src/assets/usePartitionHealthData.tsx, as shipped in
# dagster_webserver/webapp/build (its source map).
PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses {
          materializedPartitions materializingPartitions failedPartitions
        }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses {
                materializedPartitions materializingPartitions failedPartitions
              }
            }
          }
        }
      }
    }
  }
}
"""

# What a fresh process pays to load the code location: prints one JSON line.
DEFS_LOAD = """
import json, time, warnings
warnings.simplefilter("ignore")
wall, cpu = time.perf_counter(), time.process_time()
import mind_assets.definitions as module
out = {"import_s": time.perf_counter() - wall}
from dagster import Definitions
Definitions.validate_loadable(module.defs)
repository = module.defs.get_repository_def()
repository.asset_graph.get_all_asset_keys()
repository.get_all_jobs()
out["validate_s"] = time.perf_counter() - wall - out["import_s"]
from dagster import DagsterInstance
from benchmarks.scale import workspace
start = time.perf_counter()
with DagsterInstance.get() as instance, workspace(instance) as context:
    context.create_request_context().asset_graph.get_all_asset_keys()
out["location_s"] = time.perf_counter() - start
out["wall_s"], out["cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
print("DEFS " + json.dumps(out))
"""


@dataclass(frozen=True)
class Clock:
    wall: float
    cpu: float


@contextlib.contextmanager
def clock() -> Iterator[list[Clock]]:
    """`with clock() as spent:` leaves the block's wall and CPU seconds in spent[0]."""
    spent: list[Clock] = []
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield spent
    finally:
        spent.append(Clock(time.perf_counter() - wall, time.process_time() - cpu))


def shard_name(index: int) -> str:
    return f"owm-{index:07d}"


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_home(home: Path, storage_dir: Path, postgres_url: str | None) -> None:
    """A DAGSTER_HOME whose dagster.yaml keeps run, event and schedule storage in SQLite files
    under `storage_dir`, or in the given PostgreSQL database."""
    home.mkdir(parents=True)
    storage_dir.mkdir(parents=True)
    storage = (
        f"storage:\n  postgres:\n    postgres_url: {postgres_url}\n"
        if postgres_url
        else f"storage:\n  sqlite:\n    base_dir: {storage_dir}\n"
    )
    (home / "dagster.yaml").write_text(
        storage
        + "local_artifact_storage:\n  module: dagster._core.storage.root\n"
        + f"  class: LocalArtifactStorage\n  config:\n    base_dir: {storage_dir}\n"
        + "telemetry:\n  enabled: false\n"
    )


@contextlib.contextmanager
def workspace(instance):
    """The code location loaded in this process, as the webserver's workspace holds it."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="mind_assets.definitions",
            attribute="defs",
            working_directory=str(ROOT),
        ),
        location_name="mind_assets",
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def partition_health(context, asset: str) -> tuple[Clock, dict]:
    from dagster_graphql.test.utils import execute_dagster_graphql

    with clock() as spent:
        result = execute_dagster_graphql(
            context.create_request_context(),
            PARTITION_HEALTH_QUERY,
            {"assetKey": {"path": [asset]}},
        )
    return spent[0], result.data["assetNodeOrError"]


def write_stale_conversations(data_dir: Path) -> None:
    """One shard's conversation files, as written by an older prompt version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mind_assets.conversations.styles import STYLE_KEYS
    from mind_assets.lib.storage import asset_path

    for style in STYLE_KEYS:
        path = asset_path(data_dir, "conversations", STALE_SHARD, style)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"prompt_version": ["0-old"], "model": ["an-older-model"]}), path)


def drop_inbox_files(inbox: Path, names: list[str]) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    with NAPKIN.open() as handle:
        row = handle.readline()
    for name in names:
        (inbox / f"{name}.jsonl").write_text(row)


class Backend:
    """One instance growing through the sizes, and what is measured at each."""

    def __init__(self, kind: str, root: Path, postgres_url: str | None):
        from dagster import DagsterInstance

        self.kind = kind
        self.root = root
        self.home = root / "home"
        self.data_dir = root / "data"
        write_home(self.home, root / "dagster", postgres_url)
        self.env = {
            "DAGSTER_HOME": str(self.home),
            "MIND_DATA_DIR": str(self.data_dir),
            "MIND_INBOX_DIR": str(root / "inbox"),
            "MIND_DAGSTER_STORAGE_DIR": str(root / "dagster"),
        }
        self.instance = DagsterInstance.from_config(str(self.home))
        self.registered = 0  # shards named owm-NNNNNNN so far
        self.inbox_cursor: str | None = None
        self.materialized: set[str] = set()
        with environment(**self.env):
            write_stale_conversations(self.data_dir)

    def close(self) -> None:
        self.instance.dispose()

    def next_names(self, count: int) -> list[str]:
        names = [shard_name(i) for i in range(self.registered, self.registered + count)]
        self.registered += count
        return names

    def bulk_register(self, count: int) -> Clock:
        from mind_assets.corpus.shard_specs import make_shard_spec
        from mind_assets.corpus.shards import register_shards
        from mind_assets.settings import get_settings

        names = self.next_names(count)
        with clock() as spent:
            specs = [
                make_shard_spec(n, [str(NAPKIN)], rows=f"{i}:{i + 1}") for i, n in enumerate(names)
            ]
            register_shards(self.instance, get_settings(), specs)
        return spent[0]

    def cli_adds(self, count: int) -> Clock:
        """`mind shards add` as the CLI runs it (its own instance from DAGSTER_HOME), in-process."""
        from mind_assets.cli import main

        with clock() as spent:
            for name in self.next_names(count):
                if main(["shards", "add", name, str(NAPKIN), "--rows", "0:1"]) != 0:
                    raise RuntimeError(f"mind shards add {name} failed")
        return Clock(spent[0].wall / count, spent[0].cpu / count)

    def cli_process_add(self) -> float:
        """One `mind shards add` as a fresh process: wall seconds."""
        [name] = self.next_names(1)
        command = [sys.executable, "-m", "mind_assets.cli", "shards", "add", name, str(NAPKIN)]
        start = time.perf_counter()
        subprocess.run(
            [*command, "--rows", "0:1"],
            check=True,
            capture_output=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return time.perf_counter() - start

    def sensor_tick(self, files: int) -> tuple[Clock, int]:
        from dagster import build_sensor_context

        from mind_assets.corpus.sensors import corpus_inbox_sensor

        names = self.next_names(files)
        drop_inbox_files(Path(self.env["MIND_INBOX_DIR"]), names)
        with clock() as spent:
            result = corpus_inbox_sensor(
                build_sensor_context(instance=self.instance, cursor=self.inbox_cursor)
            )
        self.inbox_cursor = result.cursor
        return spent[0], len(result.run_requests)

    def materialize_some(self) -> int:
        """Runless `conversations` materializations, every style, for 1 % of the shards."""
        from dagster import AssetMaterialization, MultiPartitionKey

        from mind_assets.conversations.styles import STYLE_KEYS

        shards = [
            shard_name(i)
            for i in range(0, self.registered, MATERIALIZED_EVERY)
            if shard_name(i) not in self.materialized
        ]
        for shard in shards:
            for style in STYLE_KEYS:
                key = MultiPartitionKey({"shard": shard, "style": style})
                self.instance.report_runless_asset_event(
                    AssetMaterialization(asset_key="conversations", partition=key)
                )
            self.materialized.add(shard)
        return len(self.materialized) * len(STYLE_KEYS)

    def schedule_tick(self) -> tuple[Clock, int]:
        from datetime import UTC, datetime

        from dagster import build_schedule_context

        from mind_assets.definitions import defs
        from mind_assets.operations.schedules import regenerate_unsynced_conversations

        # The context opens its own instance from the ref: close it, or it stays Dagster's
        # current definitions-state storage after it is gone.
        # The partitions materialized above are runless, without provenance, and their chunks
        # were never materialized, so every one is unsynced ("has a new input"): the schedule
        # judges every materialized partition (its worst case).
        with (
            clock() as spent,
            build_schedule_context(
                instance=self.instance,
                repository_def=defs.get_repository_def(),
                # The schedule names its run keys after the tick's time, as a real tick has one.
                scheduled_execution_time=datetime.now(UTC),
            ) as context,
        ):
            result = regenerate_unsynced_conversations(context)
        return spent[0], len(result) if isinstance(result, list) else 0

    def automation_tick(self) -> tuple[Clock, int]:
        from dagster import evaluate_automation_conditions

        from mind_assets.definitions import defs

        with clock() as spent:
            result = evaluate_automation_conditions(defs, self.instance)
        return spent[0], result.total_requested

    def defs_load(self) -> dict:
        """Definitions and code location loaded in a fresh process against this instance."""
        done = subprocess.run(
            [sys.executable, "-c", DEFS_LOAD],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        line = next(x for x in done.stdout.splitlines() if x.startswith("DEFS "))
        return json.loads(line[len("DEFS ") :])

    def measure(self, size: int, process: bool, automation: bool) -> dict:
        """Grow to `size` shards and take every measurement there."""
        out: dict = {"backend": self.kind, "shards": size, "load_1m": os.getloadavg()[0]}
        print(
            f"[{self.kind}] {size:,} shards: 1-minute load average {out['load_1m']:.1f}", flush=True
        )
        with environment(**self.env):
            fixed = CLI_ADDS + INBOX_FILES + (1 if process else 0)
            bulk = size - self.registered - fixed
            if bulk < 0:
                raise ValueError(f"{size} shards is too few to grow to from {self.registered}")
            fill = self.bulk_register(bulk)
            out["bulk_shards"], out["bulk_s"] = bulk, fill.wall
            out["bulk_per_shard_ms"] = 1000 * fill.wall / max(bulk, 1)
            busy, requests = self.sensor_tick(INBOX_FILES)
            out["sensor_busy_s"], out["sensor_busy_cpu_s"], out["sensor_runs"] = (
                busy.wall,
                busy.cpu,
                requests,
            )
            add = self.cli_adds(CLI_ADDS)
            out["add_ms"], out["add_cpu_ms"] = 1000 * add.wall, 1000 * add.cpu
            out["add_process_s"] = self.cli_process_add() if process else None
            registered = self.instance.get_dynamic_partitions("shards")
            if len(registered) != size:
                raise RuntimeError(f"{len(registered)} shards registered, expected {size}")
            out["materialized"] = self.materialize_some()
            idle, _ = self.sensor_tick(0)
            out["sensor_idle_s"], out["sensor_idle_cpu_s"] = idle.wall, idle.cpu
            tick, requested = self.schedule_tick()
            out["schedule_s"], out["schedule_cpu_s"], out["schedule_runs"] = (
                tick.wall,
                tick.cpu,
                requested,
            )
            # The same tick with no budget: it asks about every materialized partition, up to
            # the scan limit (its worst case: nothing to stop it early).
            with environment(MIND_CONVERSATIONS__REGENERATION_BUDGET=str(10**9)):
                scan, asked = self.schedule_tick()
            out["scan_s"], out["scan_cpu_s"], out["scan_asked"] = scan.wall, scan.cpu, asked
            out["scan_cpu_ms_per_partition"] = 1000 * scan.cpu / max(asked, 1)
            with clock() as spent, workspace(self.instance) as context:
                pass
            out["location_inproc_s"] = spent[0].wall
            with workspace(self.instance) as context:
                for label in ("cold", "warm"):
                    seconds, node = partition_health(context, "conversations")
                    out[f"gql_{label}_s"], out[f"gql_{label}_cpu_s"] = seconds.wall, seconds.cpu
                out["gql_bytes"] = len(json.dumps(node))
                dims = {
                    d["name"]: len(d["partitionKeys"]) for d in node["partitionKeysByDimension"]
                }
                out["gql_partitions"] = dims.get("shard", 0) * dims.get("style", 0)
                seconds, node = partition_health(context, "raw_documents")
                out["gql_raw_s"] = seconds.wall
            if automation:
                evaluation, requested = self.automation_tick()
                out["automation_s"], out["automation_cpu_s"] = evaluation.wall, evaluation.cpu
                out["automation_requested"] = requested
            out["defs"] = self.defs_load() if process else None
        print("RESULT " + json.dumps(out), flush=True)
        return out


@contextlib.contextmanager
def backend(kind: str, workdir: Path) -> Iterator[Backend]:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{kind}-", dir=workdir))
    try:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(throwaway_postgres()) if kind == "postgres" else None
            chosen = Backend(kind, root, url)
            stack.callback(chosen.close)
            yield chosen
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_backend(
    kind: str,
    sizes: list[int],
    workdir: Path,
    *,
    process: bool = True,
    automation: bool = True,
    budget_s: float | None = None,
    on_result=None,
) -> list[dict]:
    """Every size on one fresh instance of `kind`; sizes left once `budget_s` is spent are
    recorded as skipped."""
    results: list[dict] = []
    start = time.perf_counter()
    with backend(kind, workdir) as chosen:
        for size in sizes:
            if budget_s is not None and time.perf_counter() - start > budget_s:
                results.append({"backend": kind, "shards": size, "skipped": True})
            else:
                results.append(chosen.measure(size, process, automation))
            if on_result:
                on_result(results[-1])
    return results


ROWS = (
    ("1-minute load average before the size", "load_1m", "{:.1f}"),
    ("shards registered in bulk (`register_shards`) for this size", "bulk_shards", "{:,}"),
    ("bulk registration, s", "bulk_s", "{:.1f}"),
    ("bulk registration per shard, ms", "bulk_per_shard_ms", "{:.2f}"),
    ("`mind shards add`, in-process CLI, ms per shard", "add_ms", "{:.0f}"),
    ("`mind shards add`, in-process CLI, CPU ms per shard", "add_cpu_ms", "{:.0f}"),
    ("`mind shards add`, fresh process, s", "add_process_s", "{:.1f}"),
    ("definitions: import, fresh process, s", ("defs", "import_s"), "{:.1f}"),
    ("definitions: build + validate + asset graph, s", ("defs", "validate_s"), "{:.2f}"),
    (
        "code location load (webserver workspace), fresh process, s",
        ("defs", "location_s"),
        "{:.2f}",
    ),
    ("code location load, in-process, s", "location_inproc_s", "{:.2f}"),
    ("conversations partitions in the GraphQL answer", "gql_partitions", "{:,}"),
    ("conversations partitions materialized (runless events)", "materialized", "{:,}"),
    ("`PartitionHealthQuery` conversations, first, s", "gql_cold_s", "{:.2f}"),
    ("`PartitionHealthQuery` conversations, first, CPU s", "gql_cold_cpu_s", "{:.2f}"),
    ("`PartitionHealthQuery` conversations, again, s", "gql_warm_s", "{:.2f}"),
    ("`PartitionHealthQuery` answer size, KB", "gql_bytes", "{:,.0f}", 1 / 1000),
    ("`PartitionHealthQuery` raw_documents, s", "gql_raw_s", "{:.2f}"),
    ("inbox sensor tick, 5 new files, s", "sensor_busy_s", "{:.2f}"),
    ("inbox sensor tick, 5 new files, CPU s", "sensor_busy_cpu_s", "{:.2f}"),
    ("inbox sensor tick, idle, s", "sensor_idle_s", "{:.2f}"),
    ("inbox sensor tick, idle, CPU s", "sensor_idle_cpu_s", "{:.2f}"),
    ("regeneration schedule tick, s", "schedule_s", "{:.2f}"),
    ("regeneration schedule tick, CPU s", "schedule_cpu_s", "{:.2f}"),
    ("regeneration schedule tick, runs requested", "schedule_runs", "{:,}"),
    ("schedule tick without a budget, s", "scan_s", "{:.2f}"),
    ("schedule tick without a budget, CPU s", "scan_cpu_s", "{:.2f}"),
    ("schedule tick without a budget, partitions asked (all unsynced)", "scan_asked", "{:,}"),
    (
        "schedule tick without a budget, CPU ms per partition asked",
        "scan_cpu_ms_per_partition",
        "{:.1f}",
    ),
    ("automation condition evaluation (all assets, first tick), s", "automation_s", "{:.1f}"),
    ("automation condition evaluation, CPU s", "automation_cpu_s", "{:.1f}"),
)


def cell(result: dict, key, fmt: str, scale: float | None = None) -> str:
    if result.get("skipped"):
        return "not run"
    value = (result.get(key[0]) or {}).get(key[1]) if isinstance(key, tuple) else result.get(key)
    if value is None:
        return "-"
    return fmt.format(value * scale if scale else value)


def report(results: list[dict], notes: list[str]) -> str:
    columns = list(results)
    header = " | ".join(f"{r['backend']} {r['shards']:,}" for r in columns)
    lines = [
        "<!-- scale:start -->",
        "## 100, 1,000 and 10,000 shards (`benchmarks/scale.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d} on **{detect_host().describe()}**, shared with other "
        "jobs (the load average row); one process per backend, a fresh instance growing through "
        "the sizes; shards x 8 styles (the seven MIND styles and the rephrase baseline) "
        "`conversations` partitions (80,000 at 10,000 shards). "
        "Times are wall seconds unless marked CPU; a run on an idle machine would be faster, "
        "the growth between sizes is the point.",
        "",
        f"| measured | {header} |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for label, key, fmt, *scale in ROWS:
        cells = " | ".join(cell(r, key, fmt, *scale) for r in columns)
        lines.append(f"| {label} | {cells} |")
    lines += ["", *notes, "<!-- scale:end -->"]
    return "\n".join(lines)


NOTES = [
    "- Each shard's spec points at the same napkin file with its own one-row range; the bulk "
    "path is `register_shards` (one spec file per shard, one `add_dynamic_partitions` call), "
    "which the inbox sensor uses. `mind shards add` registers one shard per call: its "
    "cost is a fresh instance, one spec file and two queries, whatever the number of shards.",
    "- `PartitionHealthQuery` is the query the asset page of the UI sends for its partition "
    "status bar (dagster-webserver 1.13's ui-core `usePartitionHealthData.tsx`), run in-process "
    "through dagster-graphql against a workspace holding the code location, as the webserver "
    "does. *first* includes computing and storing Dagster's asset status cache after new "
    "materializations; *again* reads it back.",
    "- The schedule tick is `regenerate_unsynced_conversations` evaluated with "
    "`build_schedule_context`: it observes the version sources and judges materialized "
    "`conversations` / `filtered_conversations` partitions (`UnsyncedStatus`, from the "
    "provenance on their materializations) in key order, after the last one the previous tick "
    "asked, until it has MIND_CONVERSATIONS__REGENERATION_BUDGET (4) unsynced ones or has asked "
    "MIND_CONVERSATIONS__REGENERATION_SCAN_LIMIT (1,000). Those materialized above are runless, "
    "without provenance or chunks, so all are unsynced: the budgeted tick stops after 4, and "
    "the tick *without a budget* asks about every materialized partition (up to the scan "
    "limit), the cost of a tick when nothing is unsynced. The sensor tick is "
    "`corpus_inbox_sensor` with `build_sensor_context`, handed the previous cursor.",
    "- The automation evaluation is `evaluate_automation_conditions` over every asset with no "
    "cursor, the first tick of `default_automation_condition_sensor` (off by default).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--no-automation", action="store_true")
    parser.add_argument("--no-process", action="store_true", help="skip the fresh-process loads")
    parser.add_argument(
        "--budget-minutes", type=float, default=None, help="per backend; later sizes are skipped"
    )
    parser.add_argument("--note", action="append", default=[], help="a line under the table")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="measure nothing: write the table from the RESULT lines of earlier runs' output "
        "(e.g. one run per backend, started side by side)",
    )
    args = parser.parse_args()

    results: list[dict] = []
    if args.render:
        for path in args.render:
            results += [
                json.loads(line[len("RESULT ") :])
                for line in path.read_text().splitlines()
                if line.startswith("RESULT ")
            ]
        section = report(results, NOTES + args.note)
        print(section)
        if not args.no_write:
            replace_section(RESULTS, "scale", section)
        return

    def record(result: dict) -> None:
        results.append(result)
        if not args.no_write:  # after every size, so a run cut short keeps what it measured
            replace_section(RESULTS, "scale", report(results, NOTES + args.note))

    for kind in args.backends:
        run_backend(
            kind,
            args.sizes,
            args.workdir,
            process=not args.no_process,
            automation=not args.no_automation,
            budget_s=args.budget_minutes * 60 if args.budget_minutes else None,
            on_result=record,
        )
    print(report(results, NOTES + args.note))


if __name__ == "__main__":
    main()
