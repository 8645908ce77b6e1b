"""Verified math solution traces: normalised problems per source, then traces per source × mode
(reasoning effort × tool use), each verified against the reference answer."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)

from mind_assets.lib.metadata import file_data_version, markdown_table, parquet_metadata
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.storage import asset_path, read_output, write_parquet_version
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.math_traces.outputs import MATH_PROBLEMS, SOLUTION_TRACES
from mind_assets.math_traces.problems import build_problem_set
from mind_assets.math_traces.sandbox import NO_TOOL_CALLS
from mind_assets.math_traces.sources import MODES, MathSource
from mind_assets.math_traces.traces import generate_traces, summarize
from mind_assets.metrics.store import metrics_store
from mind_assets.settings import MindSettings, get_settings

math_sources_partitions = StaticPartitionsDefinition(
    [source.name for source in get_settings().math.sources]
)
solution_trace_partitions = MultiPartitionsDefinition(
    {"source": math_sources_partitions, "mode": StaticPartitionsDefinition(list(MODES))}
)


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
    deps=[math_problems],
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
    prompt = load_prompt(settings.prompts_dir / "math" / f"{mode}.yaml")
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
    out = write_parquet_version(run.accepted, SOLUTION_TRACES.path(settings.data_dir, keys))
    quarantine = write_parquet_version(
        run.quarantine,
        SOLUTION_TRACES.quarantine_path(settings.data_dir, keys),
    )
    store = metrics_store(settings.data_dir)
    store.replace_partition(
        "trace_verification",
        {"source": source, "mode": mode},
        pa.Table.from_pylist(run.per_problem),
    )
    summary = summarize(run.per_problem)
    total = run.accepted.num_rows + run.quarantine.num_rows
    store.record_aggregates(
        "solution_traces",
        f"{source}|{mode}",
        {
            **summary,
            "traces": total,
            "kept": run.accepted.num_rows,
            **{f"tool/{k}": v for k, v in run.tool_outcomes.items()},
        },
    )
    expected = len(problems) * trace_settings.samples_per_problem
    reasons = Counter(r for rs in run.quarantine.column("rejected_by").to_pylist() for r in rs)
    all_rows = pa.concat_tables([run.accepted, run.quarantine.drop_columns(["rejected_by"])])
    methods = Counter(all_rows.column("answer_method").to_pylist())
    return MaterializeResult(
        check_results=[
            AssetCheckResult(
                check_name="every_sample_verified",
                passed=total == expected,
                metadata={"expected": expected, "verified": total},
            )
        ],
        metadata={
            **parquet_metadata(run.accepted, out, ["question", "solution", "extracted_answer"]),
            "quarantine_path": MetadataValue.path(str(quarantine)),
            "traces": total,
            "kept_correct": run.accepted.num_rows,
            **{k: v for k, v in summary.items() if k != "problems"},
            "problems": len(problems),
            "k": trace_settings.samples_per_problem,
            "quarantined_by_reason": MetadataValue.json(dict(reasons)),
            "answer_methods": MetadataValue.json(dict(methods)),
            "tool_outcomes": MetadataValue.json(run.tool_outcomes),
            "isolation": trace_settings.sandbox if prompt.tool_use else NO_TOOL_CALLS,
            "mean_tool_calls": round(
                sum(len(t) for t in all_rows.column("tool_calls").to_pylist()) / max(total, 1), 3
            ),
            "length_buckets": MetadataValue.json(
                dict(Counter(all_rows.column("length_bucket").to_pylist()))
            ),
            "mean_seq_tokens": round(
                float(pc.mean(all_rows.column("seq_tokens")).as_py() or 0.0), 1
            ),
            "prompt": f"{prompt.id}@{prompt.version}",
            "model": llm.model_name,
            "engine": MetadataValue.json(llm.engine_metadata()),
            "requests": MetadataValue.json(
                [{"generated": s.generated, "reused": s.reused} for s in run.stats]
            ),
            "per_problem": MetadataValue.md(
                markdown_table(
                    [
                        {
                            "problem": p["problem_id"],
                            "pass_rate": p["pass_rate"],
                            "maj": p["majority_answer"],
                            "maj_correct": p["majority_correct"],
                        }
                        for p in run.per_problem[:20]
                    ]
                )
            ),
            "sample_trace": MetadataValue.md(
                "```\n" + json.dumps(all_rows.slice(0, 1).to_pylist(), default=str)[:1500] + "\n```"
                if total
                else "_none_"
            ),
        },
        data_version=file_data_version(out),
    )
