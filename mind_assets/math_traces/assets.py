"""Verified math solution traces: normalised problems per source, their difficulty and checked
reference per source (from the difficulty modes' samples), then traces per source × mode
(reasoning effort × tool use), each verified against that reference."""

from collections import Counter
from functools import partial
from pathlib import Path

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.check import decontaminate_split
from mind_assets.decontamination.steps import current_index, report_check, with_judge
from mind_assets.lib.metadata import output_result
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.quarantine import write_split
from mind_assets.lib.storage import requests_dir as partition_requests_dir
from mind_assets.lib.tokenizer import token_counter
from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.llm.batch_runner import ChatFn
from mind_assets.llm.pods import generating_asset
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.shared_calls import run_sharing_calls
from mind_assets.llm.versions import llm_config
from mind_assets.math_traces.difficulty import assess_problems, verdicts_by_problem
from mind_assets.math_traces.judge import ModelJudge
from mind_assets.math_traces.outputs import MATH_PROBLEMS, PROBLEM_DIFFICULTY, SOLUTION_TRACES
from mind_assets.math_traces.problems import build_problem_set
from mind_assets.math_traces.sandbox import NO_TOOL_CALLS
from mind_assets.math_traces.sources import MODES, MathSource
from mind_assets.math_traces.traces import (
    Samples,
    build_traces,
    generate_samples,
    record_trace_metrics,
    samples_per_problem,
    summarize_traces,
    verify_samples,
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
    # The sources, their limit and decontamination shape math_problems, and the regeneration
    # settings how fast a schedule refreshes traces, not how traces are made.
    return content_version(
        settings.math.model_dump(
            exclude={
                "sources",
                "problems_limit",
                "decontamination_ngram",
                "regeneration_budget",
                "regeneration_scan_limit",
            }
        )
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
)
def math_problems(context: AssetExecutionContext) -> MaterializeResult:
    """Math problems with reference answers from a source's training split; GSM8K calculator
    annotations stripped; rows matching an evaluation split (13-gram or whole question) removed.
    """
    settings = get_settings()
    source = math_source(settings, context.partition_key)
    out = MATH_PROBLEMS.partition(settings.data_dir, {"source": source.name})
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
    out.write(problem_set.problems)
    metrics_store(settings.data_dir).record_aggregates(
        "math_problems",
        source.name,
        {
            "problems": problem_set.problems.num_rows,
            "contaminated": len(problem_set.contaminated),
            "skipped": len(problem_set.skipped),
        },
    )
    return output_result(
        problem_set.problems,
        out.path,
        preview=["question", "reference_answer"],
        dataset=f"{source.dataset_path}:{source.split}",
        decontaminated_against=MetadataValue.json(source.eval_splits),
        contaminated_removed=len(problem_set.contaminated),
        skipped_rows=len(problem_set.skipped),
    )


def engine_is_gpu(llm: LLMResource) -> bool:
    """Whether generation is cheap enough for the recipe's k: a GPU engine, or servers."""
    return llm.engine_mode == "server" or llm.tuning().device == "gpu"


def requests_dir(settings: MindSettings, source: str, mode: str) -> Path:
    """Where a (source, mode)'s requests are stored: shared by problem_difficulty and
    solution_traces, so the difficulty modes are generated once."""
    return partition_requests_dir(settings.data_dir, "solution_traces", source, mode)


def sample_mode(
    settings: MindSettings,
    llm: LLMResource,
    problems: list[dict],
    source: str,
    mode: str,
    k: int,
    logger,
    chat: ChatFn | None = None,
) -> Samples:
    """k traces per problem of a source in one mode, through the engine (or `chat`, when the
    mode shares its engine calls with others); the requests are stored per (source, mode), so
    problem_difficulty and solution_traces generate a mode once."""
    return generate_samples(
        problems=problems,
        prompt=load_prompt(math_prompt_path(settings, mode)),
        mode=mode,
        chat=chat or llm.chat,
        identity=llm.identity(),
        requests_dir=requests_dir(settings, source, mode),
        settings=settings.math,
        k=k,
        max_tokens_cap=settings.max_tokens,
        base_seed=settings.seed,
        batch_size=llm.requests_per_batch(settings.batch_size),
        count_tokens=token_counter(llm.model_path()),
        max_model_len=llm.max_model_len,
        logger=logger,
    )


def model_judge(settings: MindSettings, llm: LLMResource, source: str, logger) -> ModelJudge | None:
    if not settings.math.judge:
        return None
    return ModelJudge(
        prompt=load_prompt(settings.prompts_dir / "math" / "judge.yaml"),
        chat=llm.chat,
        identity=llm.identity(),
        requests_dir=partition_requests_dir(settings.data_dir, "math_judge", source),
        batch_size=llm.requests_per_batch(settings.batch_size),
        base_seed=settings.seed,
        logger=logger,
    )


@asset(
    partitions_def=math_sources_partitions,
    deps=[math_problems, math_config, llm_config],
    group_name="math_traces",
    kinds={"vllm", "parquet"},
    **generating_asset(),
    code_version="1",
)
def problem_difficulty(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """Per problem, from k samples in each difficulty mode (MIND_MATH__DIFFICULTY_MODES, default
    both high modes, generated once and reused by their solution_traces partitions): the
    reference to check traces against, repaired by a confident majority where the source's is
    missing, unparseable or outvoted (flagged in reference_status), and whether every sample
    solved it (too_easy: its traces are dropped in every mode).
    """
    settings = get_settings()
    out = PROBLEM_DIFFICULTY.partition(settings.data_dir, context.partition_key)
    source = out.keys["source"]
    problems = MATH_PROBLEMS.partition(settings.data_dir, out.keys).read().to_pylist()
    unknown = [m for m in settings.math.difficulty_modes if m not in MODES]
    if unknown:
        raise ValueError(f"MIND_MATH__DIFFICULTY_MODES names unknown modes {unknown}: {MODES}")
    k = samples_per_problem(settings.math, on_gpu=engine_is_gpu(llm))
    judge = model_judge(settings, llm, source, context.log)
    # The modes generate side by side, each round of theirs in one engine call.
    samples, engine_calls = run_sharing_calls(
        [
            partial(sample_mode, settings, llm, problems, source, mode, k, context.log)
            for mode in settings.math.difficulty_modes
        ],
        llm.chat,
    )
    table = assess_problems(
        problems,
        [s.states for s in samples],
        settings.math,
        lambda states, refs: verify_samples(states, refs, judge),
    )
    out.write(table)
    statuses = Counter(table.column("reference_status").to_pylist())
    too_easy = sum(table.column("too_easy").to_pylist())
    metrics_store(settings.data_dir).record_aggregates(
        "problem_difficulty",
        source,
        {
            "problems": table.num_rows,
            "too_easy": too_easy,
            **{f"reference/{status}": n for status, n in statuses.items()},
        },
    )
    return output_result(
        table,
        out.path,
        preview=["question", "reference_answer", "reference_status"],
        k=k,
        difficulty_modes=MetadataValue.json(list(settings.math.difficulty_modes)),
        engine_calls=MetadataValue.json(engine_calls),
        too_easy=too_easy,
        reference_status=MetadataValue.json(dict(statuses)),
    )


def problem_verdicts(settings: MindSettings, source: str) -> dict[str, dict] | None:
    """problem_difficulty's rows by problem, when the difficulty filter or reference repair
    needs them; an error naming what to do when they are missing."""
    if not (settings.math.difficulty_filter or settings.math.reference_repair):
        return None
    difficulty = PROBLEM_DIFFICULTY.partition(settings.data_dir, {"source": source})
    if not difficulty.is_materialized():
        raise FileNotFoundError(
            f"solution_traces for source {source!r} need problem_difficulty[{source}] "
            f"({difficulty.path}): "
            "materialize it first, or set MIND_MATH__DIFFICULTY_FILTER=false and "
            "MIND_MATH__REFERENCE_REPAIR=false to check against the source's references as given"
        )
    return verdicts_by_problem(difficulty.read())


@asset(
    partitions_def=solution_trace_partitions,
    deps=[
        math_problems,
        problem_difficulty,
        AssetDep(math_prompts, partition_mapping=MultiToSingleDimensionPartitionMapping("mode")),
        math_config,
        llm_config,
        benchmark_index,
    ],
    group_name="math_traces",
    kinds={"vllm", "parquet"},
    **generating_asset(),
    # 3: answer types, repaired references and the difficulty filter from problem_difficulty
    code_version="3",
    check_specs=[
        AssetCheckSpec(
            "every_sample_verified",
            asset="solution_traces",
            blocking=True,
            description="k traces per problem, each labelled correct or incorrect.",
        )
    ],
)
def solution_traces(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """k solution traces per problem at one reasoning effort, with or without Python tool calls run
    in the sandbox; each verified against problem_difficulty's reference (math-verify by answer
    type, the judge model when on). Correct traces that hold no benchmark item are kept, the
    rest (and too-easy problems) quarantined with the reason; pass rate and maj@k per problem.
    """
    settings = get_settings()
    keys = SOLUTION_TRACES.keys(context.partition_key)
    source, mode = keys["source"], keys["mode"]
    problems = MATH_PROBLEMS.partition(settings.data_dir, {"source": source}).read().to_pylist()
    prompt = load_prompt(math_prompt_path(settings, mode))
    trace_settings = settings.math
    k = samples_per_problem(trace_settings, on_gpu=engine_is_gpu(llm))
    verdicts = problem_verdicts(settings, source)
    context.log.info(
        "solution_traces %s/%s: %d problems x %d samples, tool use %s, sandbox %s",
        source,
        mode,
        len(problems),
        k,
        prompt.tool_use,
        trace_settings.sandbox if prompt.tool_use else "not needed",
    )
    run = build_traces(
        sample_mode(settings, llm, problems, source, mode, k, context.log),
        problem_verdicts=verdicts,
        judge=model_judge(settings, llm, source, context.log),
        length_buckets=tuple(settings.length_buckets),
    )
    decontamination = current_index(settings)
    judge = with_judge(decontamination, settings, llm, "solution_traces", keys, context.log)
    checked = decontaminate_split(
        decontamination, run.accepted, run.quarantine, SOLUTION_TRACES.quarantine_schema
    )
    run.accepted, run.quarantine = checked.accepted, checked.quarantine
    written = write_split(
        SOLUTION_TRACES, settings.data_dir, keys, checked.accepted, checked.quarantine
    )
    usage = llm.usage([*run.stats, *(judge.stats if judge else [])])
    record_trace_metrics(metrics_store(settings.data_dir), source, mode, run, usage)
    report = summarize_traces(
        run,
        problems=len(problems),
        settings=trace_settings,
        prompt=prompt,
        isolation=trace_settings.sandbox if prompt.tool_use else NO_TOOL_CALLS,
        quarantine_path=written.quarantine_path,
        model=llm.model_name,
        engine=llm.engine_metadata(),
    )
    return output_result(
        checked.accepted,
        written.accepted_path,
        preview=["question", "solution", "extracted_answer"],
        summary=report,
        **report_check(settings, "solution_traces", context.partition_key, checked.record),
        **usage,
    )
