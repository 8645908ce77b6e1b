"""Verified math solution traces: normalised problems per source, then traces per source × mode
(reasoning effort × tool use), each verified against the reference answer."""

from pathlib import Path

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.lib.metadata import file_data_version, parquet_metadata, stage_result
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import asset_path, read_output, write_parquet_version
from mind_assets.lib.tokenizer import token_counter
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.versions import llm_config
from mind_assets.math_traces.outputs import MATH_PROBLEMS, SOLUTION_TRACES
from mind_assets.math_traces.problems import build_problem_set
from mind_assets.math_traces.sandbox import NO_TOOL_CALLS
from mind_assets.math_traces.sources import MODES, MathSource
from mind_assets.math_traces.traces import (
    generate_traces,
    record_trace_metrics,
    summarize_traces,
)
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings

math_sources_partitions = StaticPartitionsDefinition(
    [source.name for source in get_settings().math.sources]
)
math_modes_partitions = StaticPartitionsDefinition(list(MODES))
solution_trace_partitions = MultiPartitionsDefinition(
    {"source": math_sources_partitions, "mode": math_modes_partitions}
)


def math_prompt_path(settings: MindSettings, mode: str) -> Path:
    return settings.prompts_dir / "math" / f"{mode}.yaml"


def math_prompt_versions(settings: MindSettings, instance: DagsterInstance) -> dict[str, str]:
    return {mode: load_prompt(math_prompt_path(settings, mode)).version for mode in MODES}


def math_config_version(settings: MindSettings, instance: DagsterInstance) -> str:
    # The sources, their limit and decontamination shape math_problems, not how traces are made.
    return content_version(
        settings.math.model_dump(exclude={"sources", "problems_limit", "decontamination_ngram"})
    )


MATH_PROMPTS = VersionSource(
    "math_prompts",
    "The solution-trace prompt file of each mode (reasoning effort x tool use), versioned by "
    "content hash. Observing it after a prompt edit marks only that mode's traces unsynced.",
    math_prompt_versions,
    partitions_def=math_modes_partitions,
    group_name="math_traces",
)
math_prompts = version_source_asset(MATH_PROMPTS)

MATH_CONFIG = VersionSource(
    "math_config",
    "How traces are sampled, verified and sandboxed (MIND_MATH__* but the problem sources), "
    "hashed.",
    math_config_version,
    group_name="math_traces",
)
math_config = version_source_asset(MATH_CONFIG)


def math_source(settings: MindSettings, name: str) -> MathSource:
    for source in settings.math.sources:
        if source.name == name:
            return source
    known = [s.name for s in settings.math.sources]
    raise KeyError(f"math source {name!r} is not configured (MIND_MATH__SOURCES has {known})")


@asset(
    partitions_def=math_sources_partitions,
    group_name="math_traces",
    kinds={"parquet"},
    code_version="1",
    description="Math problems with reference answers from a source's training split; GSM8K "
    "calculator annotations stripped; rows matching an evaluation split (13-gram or whole "
    "question) removed.",
)
def math_problems(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    source = math_source(settings, context.partition_key)
    problem_set = build_problem_set(
        source,
        settings.task_mirror,
        decontamination_ngram=settings.math.decontamination_ngram,
        limit=settings.math.problems_limit,
    )
    for message in problem_set.skipped[:20]:
        context.log.warning("skipped: %s", message)
    if problem_set.problems.num_rows == 0:
        raise ValueError(
            f"math source {source.name!r}: no usable problems "
            f"({len(problem_set.skipped)} rows skipped, {len(problem_set.contaminated)} "
            "contaminated)"
        )
    out = write_parquet_version(
        problem_set.problems, MATH_PROBLEMS.path(settings.data_dir, {"source": source.name})
    )
    metrics_store(settings.data_dir).record_aggregates(
        "math_problems",
        source.name,
        {
            "problems": problem_set.problems.num_rows,
            "contaminated": len(problem_set.contaminated),
            "skipped": len(problem_set.skipped),
        },
    )
    return MaterializeResult(
        metadata={
            **parquet_metadata(problem_set.problems, out, ["question", "reference_answer"]),
            "dataset": f"{source.dataset_path}:{source.split}",
            "decontaminated_against": MetadataValue.json(source.eval_splits),
            "contaminated_removed": len(problem_set.contaminated),
            "skipped_rows": len(problem_set.skipped),
        },
        data_version=file_data_version(out),
    )


@asset(
    partitions_def=solution_trace_partitions,
    deps=[
        math_problems,
        AssetDep(math_prompts, partition_mapping=MultiToSingleDimensionPartitionMapping("mode")),
        math_config,
        llm_config,
    ],
    group_name="math_traces",
    kinds={"vllm", "parquet"},
    pool="llm",
    backfill_policy=BackfillPolicy.multi_run(1),
    code_version="2",  # 2: tool calls jailed, `isolation` column
    check_specs=[
        AssetCheckSpec(
            "every_sample_verified",
            asset="solution_traces",
            blocking=True,
            description="k traces per problem, each labelled correct or incorrect.",
        )
    ],
    description="k solution traces per problem at one reasoning effort, with or without Python "
    "tool calls run in the sandbox; each verified against the reference (math-verify). Correct "
    "traces are kept, the rest quarantined with the reason; pass rate and maj@k per problem.",
)
def solution_traces(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    source, mode = keys["source"], keys["mode"]
    problems = read_output(MATH_PROBLEMS.path(settings.data_dir, {"source": source})).to_pylist()
    prompt = load_prompt(math_prompt_path(settings, mode))
    trace_settings = settings.math
    context.log.info(
        "solution_traces %s/%s: %d problems x %d samples, tool use %s, sandbox %s",
        source,
        mode,
        len(problems),
        trace_settings.samples_per_problem,
        prompt.tool_use,
        trace_settings.sandbox if prompt.tool_use else "not needed",
    )
    run = generate_traces(
        problems=problems,
        prompt=prompt,
        mode=mode,
        chat=llm.chat,
        identity=llm.identity(),
        requests_dir=asset_path(
            settings.data_dir, "_requests", "solution_traces", source, mode, suffix=""
        ),
        settings=trace_settings,
        max_tokens_cap=settings.max_tokens,
        base_seed=settings.seed,
        batch_size=llm.requests_per_batch(settings.batch_size),
        count_tokens=token_counter(llm.model_path()),
        logger=context.log,
    )
    written = write_split(SOLUTION_TRACES, settings.data_dir, keys, run.accepted, run.quarantine)
    out, quarantine = written.accepted_path, written.quarantine_path
    usage = llm.usage(run.stats)
    record_trace_metrics(metrics_store(settings.data_dir), source, mode, run, usage)
    report = summarize_traces(
        run,
        problems=len(problems),
        settings=trace_settings,
        prompt=prompt,
        isolation=trace_settings.sandbox if prompt.tool_use else NO_TOOL_CALLS,
        quarantine_path=quarantine,
        model=llm.model_name,
        engine=llm.engine_metadata(),
    )
    return stage_result(
        report,
        data_version=file_data_version(out),
        **parquet_metadata(run.accepted, out, ["question", "solution", "extracted_answer"]),
        **usage,
    )
