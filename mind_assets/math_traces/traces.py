"""Solution traces for one (source, mode) partition: k samples per problem, optional Python tool
rounds, verification against the reference, pass rate and majority vote per problem.

Tool-integrated reasoning runs in rounds. Every round sends all unfinished traces through the
engine in one batch; each reply is cut after its first complete ```python block, the block runs in
the sandbox, and its output is appended as an ```output block. The next round continues the
trace from there (the trace so far is the assistant prefix), until the reply has no code block,
gives a boxed answer, runs out of token budget or reaches the tool-call cap. Every round goes
through the resumable batch runner, so a crash repeats at most one batch of one round.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.prompts import PromptFile
from mind_assets.lib.report import CheckOutcome, Markdown, StageSummary, markdown_table
from mind_assets.llm.batch_runner import ChatFn, RequestStore, RunStats, generate_resumable
from mind_assets.llm.requests import (
    GENERATION_FIELDS,
    ChatRequest,
    EngineIdentity,
    SamplingSpec,
    capped_max_tokens,
    derive_seed,
    make_request,
)
from mind_assets.math_traces.sandbox import (
    NO_TOOL_CALLS,
    SandboxLimits,
    SandboxResult,
    require_isolation,
    run_python,
)
from mind_assets.math_traces.verify import judge, last_boxed, majority
from mind_assets.metrics.store import MetricsStore
from mind_assets.settings import MathSettings

log = logging.getLogger(__name__)

_CODE_BLOCK = re.compile(r"```python[^\n]*\n(.*?)```", re.DOTALL)

TOOL_CALL_TYPE = pa.struct(
    [
        pa.field("code", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("refused", pa.list_(pa.field("element", pa.string()))),
        pa.field("output", pa.string()),
        pa.field("wall_seconds", pa.float64()),
    ]
)

TRACE_SCHEMA = pa.schema(
    [
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("effort", pa.string(), nullable=False),
        pa.field("tool_use", pa.bool_(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # problem + solution, the training text
        pa.field("solution", pa.string(), nullable=False),  # the trace, tool outputs included
        pa.field("tool_calls", pa.list_(pa.field("element", TOOL_CALL_TYPE)), nullable=False),
        pa.field("rounds", pa.int32(), nullable=False),
        # how tool calls were contained: bubblewrap | unsafe-no-isolation | none-needed (no-TIR)
        pa.field("isolation", pa.string(), nullable=False),
        # verification
        pa.field("reference_answer", pa.string(), nullable=False),
        pa.field("extracted_answer", pa.string()),
        pa.field("normalized_answer", pa.string()),
        pa.field("answer_method", pa.string(), nullable=False),  # boxed | hashes | answer_is | none
        pa.field("is_correct", pa.bool_(), nullable=False),
        pa.field("k", pa.int32(), nullable=False),
        pa.field("n_correct", pa.int32(), nullable=False),  # of the problem's k samples
        pa.field("pass_rate", pa.float64(), nullable=False),
        pa.field("majority_answer", pa.string()),
        pa.field("majority_correct", pa.bool_(), nullable=False),
        # length, for Nemotron-Math style sequence bucketing
        pa.field("seq_tokens", pa.int32(), nullable=False),
        pa.field("length_bucket", pa.string(), nullable=False),
        # lineage
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        *GENERATION_FIELDS,
    ]
)
TRACE_QUARANTINE_SCHEMA = TRACE_SCHEMA.append(
    pa.field("rejected_by", pa.list_(pa.field("element", pa.string())), nullable=False)
)

CountTokens = Callable[[list[str]], list[int]]


@dataclass
class TraceState:
    """One sample of one problem, as it grows over rounds."""

    problem: dict[str, Any]
    sample_index: int
    seed: int
    first_request: ChatRequest | None = None
    text: str = ""  # the assistant's side so far (tool outputs included)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    rounds: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    done: bool = False


@dataclass
class TraceRun:
    accepted: pa.Table
    quarantine: pa.Table
    per_problem: list[dict[str, Any]]
    stats: list[RunStats]
    tool_outcomes: dict[str, int]


def length_bucket(tokens: int, buckets: tuple[int, ...]) -> str:
    for limit in buckets:
        if tokens <= limit:
            return f"<={limit // 1024}k"
    return f">{buckets[-1] // 1024}k"


def split_at_first_code_block(reply: str) -> tuple[str, str | None]:
    """(reply up to and including its first complete python block, the block's code), or
    (reply, None) when it has none or already gave a boxed answer before it."""
    match = _CODE_BLOCK.search(reply)
    if match is None:
        return reply, None
    before = reply[: match.start()]
    if last_boxed(before):
        return reply, None
    return reply[: match.end()], match.group(1)


def tool_turn(result: SandboxResult) -> str:
    return f"\n```output\n{result.as_tool_output().rstrip()}\n```\n"


def _request(
    state: TraceState,
    prompt: PromptFile,
    identity: EngineIdentity,
    max_tokens: int,
    variables: dict[str, Any],
) -> ChatRequest:
    messages = prompt.render(**variables)
    if state.text:
        messages.append({"role": "assistant", "content": state.text})
    sampling = SamplingSpec(
        temperature=prompt.sampling.temperature,
        top_p=prompt.sampling.top_p,
        max_tokens=max_tokens,  # what the trace's capped budget has left
        seed=state.seed,
    )
    return make_request(
        identity.model, prompt.version, sampling, messages, native_effort(identity.model, prompt)
    )


# Models whose chat template takes the reasoning effort itself; for them the effort is passed
# natively as well as through the prompt's depth and length instructions.
NATIVE_EFFORT_MODELS = ("gpt-oss",)


def native_effort(model: str, prompt: PromptFile) -> dict[str, str] | None:
    if prompt.effort and any(name in model.lower() for name in NATIVE_EFFORT_MODELS):
        return {"reasoning_effort": prompt.effort}
    return None


def sandbox_limits(settings: MathSettings) -> SandboxLimits:
    """The limits of one tool call, from MIND_MATH__SANDBOX_*."""
    return SandboxLimits(
        wall_seconds=settings.sandbox_wall_seconds,
        cpu_seconds=settings.sandbox_cpu_seconds,
        memory_bytes=settings.sandbox_memory_mb << 20,
        disk_bytes=settings.sandbox_disk_mb << 20,
        output_bytes=settings.sandbox_output_kb << 10,
    )


def generate_traces(
    *,
    problems: list[dict[str, Any]],
    prompt: PromptFile,
    mode: str,
    chat: ChatFn,
    identity: EngineIdentity,
    requests_dir: Path,
    settings: MathSettings,
    max_tokens_cap: int | None,
    base_seed: int,
    batch_size: int,
    count_tokens: CountTokens,
    logger: logging.Logger | None = None,
) -> TraceRun:
    logger = logger or log
    if prompt.tool_use:  # fail closed before any generation, not at the first tool call
        require_isolation(settings.sandbox, logger)
    limits = sandbox_limits(settings)
    budget = capped_max_tokens(prompt, max_tokens_cap)
    variables = {"max_tool_calls": settings.max_tool_calls}
    states = [
        TraceState(
            problem=p,
            sample_index=i,
            seed=derive_seed(base_seed, "math", p["source"], mode, p["problem_id"], str(i)),
        )
        for p in problems
        for i in range(settings.samples_per_problem)
    ]
    stats: list[RunStats] = []
    tool_outcomes: dict[str, int] = defaultdict(int)
    max_rounds = settings.max_tool_calls + 1 if prompt.tool_use else 1
    for round_index in range(max_rounds):
        active = [s for s in states if not s.done]
        if not active:
            break
        requests = [
            _request(
                s,
                prompt,
                identity,
                max(1, budget - s.completion_tokens),
                {**variables, "problem": s.problem["question"]},
            )
            for s in active
        ]
        results, round_stats = generate_resumable(
            requests,
            chat,
            RequestStore(requests_dir / f"round-{round_index:02d}"),
            batch_size=batch_size,
            label=f"solution_traces {mode}: round {round_index + 1}",
            logger=logger,
        )
        stats.append(round_stats)
        pending: list[tuple[TraceState, str, str]] = []
        for state, request in zip(active, requests, strict=True):
            stored = results[request.request_hash]
            result = stored.result
            if state.first_request is None:
                state.first_request = request
                state.prompt_tokens = result.prompt_tokens
                state.created_at = stored.created_at
            reply = result.text[len(request.response_prefix) :]
            state.finish_reason = result.finish_reason
            state.rounds += 1
            cut, code = (reply, None)
            if prompt.tool_use and len(state.tool_calls) < settings.max_tool_calls:
                cut, code = split_at_first_code_block(reply)
            if code is None:
                state.completion_tokens += result.completion_tokens
                state.text += reply
                state.done = True
                continue
            # Only the reply up to the end of its code block is kept, so only its share of the
            # tokens counts against the budget (by characters; exact counts are not returned).
            share = len(cut) / max(len(reply), 1)
            state.completion_tokens += max(1, round(result.completion_tokens * share))
            pending.append((state, cut, code))
        # Each call is its own short-lived process; run a few side by side.
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            outcomes = list(pool.map(lambda p: run_python(p[2], limits, settings.sandbox), pending))
        for (state, cut, code), outcome in zip(pending, outcomes, strict=True):
            tool_outcomes[outcome.outcome] += 1
            state.tool_calls.append(
                {
                    "code": code,
                    "outcome": outcome.outcome,
                    "refused": outcome.refused,
                    "output": outcome.as_tool_output(),
                    "wall_seconds": outcome.wall_seconds,
                }
            )
            state.text += cut + tool_turn(outcome)
            if state.completion_tokens >= budget:
                state.done = True  # the code ran and is recorded; no budget left to go on
        logger.info(
            "solution_traces %s: round %d done, %d of %d traces still calling tools",
            mode,
            round_index + 1,
            sum(not s.done for s in states),
            len(states),
        )
    return _verify_and_build(
        states, prompt, mode, identity, settings, count_tokens, stats, tool_outcomes
    )


def _verify_and_build(
    states: list[TraceState],
    prompt: PromptFile,
    mode: str,
    identity: EngineIdentity,
    settings: MathSettings,
    count_tokens: CountTokens,
    stats: list[RunStats],
    tool_outcomes: dict[str, int],
) -> TraceRun:
    by_problem: dict[str, list[tuple[TraceState, Any]]] = defaultdict(list)
    for state in states:
        verdict = judge(state.text, state.problem["reference_answer"])
        by_problem[state.problem["problem_id"]].append((state, verdict))
    texts = [f"{s.problem['question']}\n\n{s.text}" for s in states]
    lengths = dict(zip((id(s) for s in states), count_tokens(texts), strict=True))
    accepted, rejected, per_problem = [], [], []
    k = settings.samples_per_problem
    isolation = settings.sandbox if prompt.tool_use else NO_TOOL_CALLS
    for problem_id, samples in by_problem.items():
        n_correct = sum(v.correct for _, v in samples)
        vote = majority([v.normalized for _, v in samples])
        vote_correct = any(v.correct for _, v in samples if v.normalized == vote) if vote else False
        problem = samples[0][0].problem
        per_problem.append(
            {
                "source": problem["source"],
                "mode": mode,
                "problem_id": problem_id,
                "k": k,
                "n_correct": n_correct,
                "pass_rate": n_correct / k,
                "majority_answer": vote,
                "majority_correct": vote_correct,
                "tool_calls": sum(len(s.tool_calls) for s, _ in samples),
            }
        )
        for state, verdict in samples:
            seq_tokens = lengths[id(state)]
            assert state.first_request is not None
            row = {
                "trace_id": f"{problem_id}-{mode}-{state.sample_index}",
                "problem_id": problem_id,
                "source": problem["source"],
                "mode": mode,
                "effort": prompt.effort or mode.split("_")[0],
                "tool_use": prompt.tool_use,
                "sample_index": state.sample_index,
                "question": problem["question"],
                "text": f"{problem['question']}\n\n{state.text}",
                "solution": state.text,
                "tool_calls": state.tool_calls,
                "rounds": state.rounds,
                "isolation": isolation,
                "reference_answer": problem["reference_answer"],
                "extracted_answer": verdict.extracted,
                "normalized_answer": verdict.normalized,
                "answer_method": verdict.method,
                "is_correct": verdict.correct,
                "k": k,
                "n_correct": n_correct,
                "pass_rate": n_correct / k,
                "majority_answer": vote,
                "majority_correct": vote_correct,
                "seq_tokens": seq_tokens,
                "length_bucket": length_bucket(seq_tokens, tuple(settings.length_buckets)),
                "prompt_id": prompt.id,
                "prompt_version": prompt.version,
                **identity.lineage(),
                "sampling_params": state.first_request.sampling.to_json(),
                "seed": state.seed,
                "prompt_tokens": state.prompt_tokens,
                "completion_tokens": state.completion_tokens,
                "finish_reason": state.finish_reason,
                "created_at": state.created_at or datetime.now(UTC),
                "request_hash": state.first_request.request_hash,
            }
            reasons = []
            if not verdict.correct:
                reasons.append("incorrect" if verdict.extracted else "no_answer")
            elif settings.drop_solved_by_all and n_correct == k:
                reasons.append("too_easy")
            if reasons:
                rejected.append({**row, "rejected_by": reasons})
            else:
                accepted.append(row)
    return TraceRun(
        accepted=pa.Table.from_pylist(accepted, schema=TRACE_SCHEMA),
        quarantine=pa.Table.from_pylist(rejected, schema=TRACE_QUARANTINE_SCHEMA),
        per_problem=per_problem,
        stats=stats,
        tool_outcomes=dict(tool_outcomes),
    )


def summarize(per_problem: list[dict[str, Any]]) -> dict[str, float]:
    if not per_problem:
        return {"problems": 0}
    n = len(per_problem)
    return {
        "problems": n,
        "mean_pass_rate": round(sum(p["pass_rate"] for p in per_problem) / n, 4),
        "maj_at_k": round(sum(p["majority_correct"] for p in per_problem) / n, 4),
        "pass_at_k": round(sum(p["n_correct"] > 0 for p in per_problem) / n, 4),
        "solved_by_all": sum(p["n_correct"] == p["k"] for p in per_problem),
    }


def summarize_traces(
    run: TraceRun,
    *,
    problems: int,
    settings: MathSettings,
    prompt: PromptFile,
    isolation: str,
    quarantine_path: Path,
    model: str,
    engine: dict[str, Any],
) -> StageSummary:
    """What one solution-traces partition reports: the check that every sample was verified,
    pass rates, why traces were quarantined, how answers were checked, tool use, lengths, and a
    sample trace."""
    total = run.accepted.num_rows + run.quarantine.num_rows
    expected = problems * settings.samples_per_problem
    rates = summarize(run.per_problem)
    reasons = Counter(r for rs in run.quarantine.column("rejected_by").to_pylist() for r in rs)
    all_rows = pa.concat_tables([run.accepted, run.quarantine.drop_columns(["rejected_by"])])
    seq_tokens = [n for n in all_rows.column("seq_tokens").to_pylist() if n is not None]
    per_problem = [
        {
            "problem": p["problem_id"],
            "pass_rate": p["pass_rate"],
            "maj": p["majority_answer"],
            "maj_correct": p["majority_correct"],
        }
        for p in run.per_problem[:20]
    ]
    sample = json.dumps(all_rows.slice(0, 1).to_pylist(), default=str)[:1500]
    return StageSummary(
        checks=[
            CheckOutcome(
                "every_sample_verified",
                total == expected,
                {"expected": expected, "verified": total},
            )
        ],
        metadata={
            "quarantine_path": quarantine_path,
            "traces": total,
            "kept_correct": run.accepted.num_rows,
            **{k: v for k, v in rates.items() if k != "problems"},
            "problems": problems,
            "k": settings.samples_per_problem,
            "quarantined_by_reason": dict(reasons),
            "answer_methods": dict(Counter(all_rows.column("answer_method").to_pylist())),
            "tool_outcomes": run.tool_outcomes,
            "isolation": isolation,
            "mean_tool_calls": round(
                sum(len(t) for t in all_rows.column("tool_calls").to_pylist()) / max(total, 1), 3
            ),
            "length_buckets": dict(Counter(all_rows.column("length_bucket").to_pylist())),
            "mean_seq_tokens": round(sum(seq_tokens) / len(seq_tokens), 1) if seq_tokens else 0.0,
            "prompt": f"{prompt.id}@{prompt.version}",
            "model": model,
            "engine": engine,
            "requests": [{"generated": s.generated, "reused": s.reused} for s in run.stats],
            "per_problem": Markdown(markdown_table(per_problem)),
            "sample_trace": Markdown(f"```\n{sample}\n```" if total else "_none_"),
        },
    )


def record_trace_metrics(
    store: MetricsStore, source: str, mode: str, run: TraceRun, usage: dict[str, float]
) -> None:
    """The partition's per-problem verification, its aggregates and what it cost, in the
    metrics store."""
    store.replace_partition(
        "trace_verification",
        {"source": source, "mode": mode},
        pa.Table.from_pylist(run.per_problem),
    )
    store.record_aggregates(
        "solution_traces",
        f"{source}|{mode}",
        {
            **summarize(run.per_problem),
            "traces": run.accepted.num_rows + run.quarantine.num_rows,
            "kept": run.accepted.num_rows,
            **{f"tool/{k}": v for k, v in run.tool_outcomes.items()},
            **usage,
        },
    )
