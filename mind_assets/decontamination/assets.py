"""`benchmark_index`: the evaluation benchmarks' texts, read and versioned; its data version is
the index version, so a change of benchmark list or n-gram settings marks every partition
checked against the old index unsynced."""

from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from mind_assets.decontamination.benchmarks import read_benchmark_texts, resolve_benchmarks
from mind_assets.decontamination.index import NgramIndex
from mind_assets.decontamination.outputs import BENCHMARK_INDEX
from mind_assets.decontamination.record import INDEX_KEY, IndexVersion, with_metadata
from mind_assets.decontamination.steps import index_params
from mind_assets.lib.metadata import parquet_metadata
from mind_assets.lib.report import markdown_table
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.settings import MindSettings, get_settings


def decontamination_config_version(settings: MindSettings, instance: DagsterInstance) -> str:
    # How many near misses the judge sees per partition bounds its cost, not what the index is.
    return content_version(settings.decontamination.model_dump(exclude={"judge_max_rows"}))


DECONTAMINATION_CONFIG = VersionSource(
    "decontamination_config",
    "The benchmark list and n-gram settings (MIND_DECONTAMINATION__*), hashed. Observing it "
    "after a change marks benchmark_index unsynced; materializing benchmark_index then marks "
    "every partition checked against the old index.",
    decontamination_config_version,
    group_name="decontamination",
)
decontamination_config = version_source_asset(DECONTAMINATION_CONFIG)


@asset(
    deps=[decontamination_config],
    group_name="decontamination",
    kinds={"parquet"},
    code_version="1",
)
def benchmark_index(context: AssetExecutionContext) -> MaterializeResult:
    """Every text (question, solution, each option) of every item of the evaluation benchmarks
    named in MIND_DECONTAMINATION__BENCHMARKS (lm-eval tasks: their test split, or validation
    where they have none), read through the task mirror, then the hub; a split that cannot be
    read fails the step by name. Its data version is the index version, which every checked
    partition records.
    """
    settings = get_settings()
    options = settings.decontamination
    out = BENCHMARK_INDEX.partition(settings.data_dir, {})
    splits = resolve_benchmarks(options.benchmarks) if options.benchmarks else []
    texts = read_benchmark_texts(splits, settings.task_mirror)
    per_benchmark: dict[str, list[str]] = {}
    for split in splits:
        per_benchmark.setdefault(split.benchmark, []).append(f"{split.dataset} {split.split}")
    params = index_params(options)
    version = IndexVersion.of(params, texts, per_benchmark) if splits else IndexVersion.off(params)
    index = NgramIndex.of_table(texts, ngram=options.ngram, short_ngram=options.short_ngram)
    out.write(with_metadata(texts, INDEX_KEY, version.to_json()))
    rows = [
        {
            "benchmark": name,
            "splits": "; ".join(per_benchmark[name]),
            "items": version.items.get(name, 0),
            "fingerprint": version.benchmarks.get(name, ""),
        }
        for name in per_benchmark
    ]
    context.log.info(
        "benchmark index %s: %d benchmarks, %d texts, %d n-grams (%d texts too short to index)",
        version.version,
        len(per_benchmark),
        texts.num_rows,
        index.stats.ngrams,
        index.stats.too_short,
    )
    return MaterializeResult(
        metadata={
            **parquet_metadata(texts, out.path, ["benchmark", "item_id", "field", "text"]),
            "index_version": version.version,
            "benchmarks": MetadataValue.md(markdown_table(rows) or "_none: decontamination off_"),
            "items": sum(version.items.values()),
            "texts": texts.num_rows,
            "ngrams": index.stats.ngrams,
            "texts_too_short": index.stats.too_short,
            "boilerplate_ngrams_dropped": index.stats.boilerplate,
            "params": MetadataValue.json(params),
        },
        data_version=DataVersion(version.version),
    )
