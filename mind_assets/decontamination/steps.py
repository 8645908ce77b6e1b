"""What a step that makes or filters blendable rows calls: the current index (read from
`benchmark_index`'s output and held to the settings), the paraphrase judge when it is on, and
the record of what the step's check found (metrics store and asset metadata)."""

from __future__ import annotations

import logging
from typing import Any

from mind_assets.decontamination.check import Decontamination, metric_rows, record_metadata
from mind_assets.decontamination.index import BOILERPLATE_ITEMS, NgramIndex
from mind_assets.decontamination.judge import ParaphraseJudge
from mind_assets.decontamination.normalise import NORMALISATION_VERSION
from mind_assets.decontamination.outputs import BENCHMARK_INDEX
from mind_assets.decontamination.record import CheckRecord, IndexVersion, read_index_version
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import read_output_schema, requests_dir
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import DecontaminationSettings, MindSettings

# Characters of one item's texts the judge is shown.
ITEM_CHARS = 2000


class BenchmarkIndexError(RuntimeError):
    """The benchmark index is missing, or was built for other benchmarks or parameters than the
    settings name now; the message says what to materialize."""


def index_params(settings: DecontaminationSettings) -> dict[str, Any]:
    """Everything besides the benchmark texts that decides what the rule flags."""
    return {
        "ngram": settings.ngram,
        "short_ngram": settings.short_ngram,
        "min_shared_ngrams": settings.min_shared_ngrams,
        "paraphrase_judge": settings.paraphrase_judge,
        "normalisation": NORMALISATION_VERSION,
        "boilerplate_items": BOILERPLATE_ITEMS,
    }


def current_index_version(settings: MindSettings) -> IndexVersion:
    """The version of the index every step checks against, read off benchmark_index's output
    (its schema only) and refused when it was built for other benchmarks or parameters than
    MIND_DECONTAMINATION__* names now; `IndexVersion.off` with an empty benchmark list."""
    options = settings.decontamination
    params = index_params(options)
    if not options.benchmarks:
        return IndexVersion.off(params)
    out = BENCHMARK_INDEX.partition(settings.data_dir, {})
    if not out.is_materialized():
        raise BenchmarkIndexError(
            f"benchmark_index ({out.path}) is not materialized: materialize it first (or set "
            "MIND_DECONTAMINATION__BENCHMARKS=[] to switch decontamination off)"
        )
    version = read_index_version(read_output_schema(out.path))
    wanted = sorted(options.benchmark_names())
    if version is None or sorted(version.benchmarks) != wanted or version.params != params:
        built = (
            "nothing" if version is None else f"{sorted(version.benchmarks)} with {version.params}"
        )
        raise BenchmarkIndexError(
            f"benchmark_index was built for {built}; MIND_DECONTAMINATION__* now names {wanted} "
            f"with {params}: materialize benchmark_index again"
        )
    return version


_BUILT: dict[tuple[str, bool], tuple[NgramIndex, dict[tuple[str, str], str]]] = {}


def current_index(settings: MindSettings) -> Decontamination:
    """The index every step checks against (see `current_index_version`); with an empty
    benchmark list decontamination is off and no index is read."""
    options = settings.decontamination
    version = current_index_version(settings)
    if not options.benchmarks:
        return Decontamination(version, None)
    key = (version.version, options.paraphrase_judge)
    if key not in _BUILT:
        table = BENCHMARK_INDEX.partition(settings.data_dir, {}).read()
        index = NgramIndex.of_table(
            table,
            ngram=options.ngram,
            short_ngram=options.short_ngram,
            near_misses=options.paraphrase_judge,
        )
        texts: dict[tuple[str, str], str] = {}
        if options.paraphrase_judge:
            columns = [table.column(c).to_pylist() for c in ("benchmark", "item_id", "text")]
            for benchmark, item_id, text in zip(*columns, strict=True):
                joined = texts.get((benchmark, item_id))
                texts[(benchmark, item_id)] = text if joined is None else f"{joined}\n{text}"
            texts = {k: v[:ITEM_CHARS] for k, v in texts.items()}
        _BUILT.clear()  # one index per process is plenty
        _BUILT[key] = (index, texts)
    index, texts = _BUILT[key]
    return Decontamination(
        version,
        index,
        options.min_shared_ngrams,
        item_texts=texts,
        judge_limit=options.judge_max_rows,
    )


def with_judge(
    decontamination: Decontamination,
    settings: MindSettings,
    llm: LLMResource,
    asset: str,
    keys: dict[str, str],
    logger: logging.Logger | None = None,
) -> ParaphraseJudge | None:
    """Attach the paraphrase judge to `decontamination` when MIND_DECONTAMINATION__PARAPHRASE_
    JUDGE is on (and the index is); returns it, so the step can count its usage."""
    if not (settings.decontamination.paraphrase_judge and decontamination.on):
        return None
    judge = ParaphraseJudge(
        prompt=load_prompt(settings.prompts_dir / "decontamination" / "paraphrase_judge.yaml"),
        chat=llm.chat,
        identity=llm.identity(),
        requests_dir=requests_dir(
            settings.data_dir, "decontamination_judge", asset, *keys.values()
        ),
        batch_size=llm.requests_per_batch(settings.batch_size),
        base_seed=settings.seed,
        logger=logger,
    )
    decontamination.judge = judge
    return judge


def judge_usage(
    settings: MindSettings,
    llm: LLMResource,
    judge: ParaphraseJudge | None,
    asset: str,
    partition: str,
) -> dict[str, float]:
    """The paraphrase judge's usage in a step that makes no other engine call: its `usage/*`
    metadata, recorded in the metrics store too (`mind metrics --views cost`)."""
    if judge is None:
        return {}
    usage = llm.usage(judge.stats)
    metrics_store(settings.data_dir).record_aggregates(asset, partition, usage)
    return usage


def report_check(
    settings: MindSettings, asset: str, partition: str, record: CheckRecord
) -> dict[str, Any]:
    """Write the check's per-benchmark counts to the metrics store (`decontamination`) and
    return them as asset metadata."""
    metrics_store(settings.data_dir).replace_partition(
        "decontamination",
        {"asset": asset, "partition": partition},
        metric_rows(asset, partition, record),
    )
    return record_metadata(record)
