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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.decontamination.check import CONTAMINATION_FIELD
from mind_assets.lib.buckets import length_bucket
from mind_assets.lib.prompts import PromptFile
from mind_assets.lib.quarantine import SplitRows
from mind_assets.lib.report import CheckOutcome, Markdown, StageSummary, markdown_table
from mind_assets.llm.batch_runner import (
    ChatFn,
    RequestStore,
    RunStats,
    StoredResult,
    generate_resumable,
)
from mind_assets.llm.requests import (
    GENERATION_FIELDS,
    ChatRequest,
    EngineIdentity,
    SamplingSpec,
    derive_seed,
    make_request,
)
from mind_assets.math_traces.difficulty import UNCHECKABLE
from mind_assets.math_traces.judge import ModelJudge
from mind_assets.math_traces.sandbox import (
    NO_TOOL_CALLS,
    SandboxLimits,
    SandboxResult,
    require_isolation,
    run_python,
)
from mind_assets.math_traces.sources import EFFORTS, MODES
from mind_assets.math_traces.verify import Verdict, last_boxed, majority
from mind_assets.math_traces.verify import judge as verify_trace
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
        pa.field("answer_type", pa.string(), nullable=False),  # numeric | expression | ...
        pa.field("reference_answer", pa.string()),  # what the trace was checked against
        pa.field("original_reference", pa.string()),  # as the source gave it
        # given, repaired_* (majority vote), missing | unparseable | outvoted | proof (see
        # math_traces/difficulty.py)
        pa.field("reference_status", pa.string(), nullable=False),
        pa.field("extracted_answer", pa.string()),
        pa.field("normalized_answer", pa.string()),
        pa.field("answer_method", pa.string(), nullable=False),  # boxed | hashes | answer_is | none
        pa.field("is_correct", pa.bool_(), nullable=False),
        # exact | math-verify | choice | yes-no | judge | no-answer | undecided | proof
        pa.field("verified_by", pa.string(), nullable=False),
        pa.field("judge_reply", pa.string()),  # the judge model's reply, when it was asked
        pa.field("k", pa.int32(), nullable=False),
        pa.field("n_correct", pa.int32(), nullable=False),  # of the problem's k samples
        pa.field("pass_rate", pa.float64(), nullable=False),
        pa.field("majority_answer", pa.string()),
        pa.field("majority_correct", pa.bool_(), nullable=False),
        # length, for Nemotron-Math style sequence bucketing (MIND_LENGTH_BUCKETS)
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
).append(CONTAMINATION_FIELD)  # the benchmark items a trace holds (rule `contaminated`)

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


# k when MIND_MATH__SAMPLES_PER_PROBLEM is empty: the recipe's 8 where generation is cheap
# (a GPU or remote servers), 4 on a CPU engine, where every sample costs seconds.
K_ON_GPU = 8
K_ON_CPU = 4
# Room for the chat template's own tokens around the rendered messages.
TEMPLATE_MARGIN_TOKENS = 32


def samples_per_problem(settings: MathSettings, *, on_gpu: bool) -> int:
    """k: the setting, else 8 on GPU or server engines and 4 on CPU."""
    if settings.samples_per_problem is not None:
        return settings.samples_per_problem
    return K_ON_GPU if on_gpu else K_ON_CPU


def trace_budget(prompt: PromptFile, mode: str, settings: MathSettings, cap: int | None) -> int:
    """Completion tokens one trace may use: MIND_MATH__TOKEN_BUDGETS for the mode, else for its
    effort, else the prompt file's max_tokens; MIND_MAX_TOKENS only ever lowers it."""
    unknown = sorted(set(settings.token_budgets) - set(EFFORTS) - set(MODES))
    if unknown:
        raise ValueError(
            f"MIND_MATH__TOKEN_BUDGETS names {unknown}: keys are efforts {list(EFFORTS)} or "
            f"modes {list(MODES)}"
        )
    if any(n < 1 for n in settings.token_budgets.values()):
        raise ValueError(f"MIND_MATH__TOKEN_BUDGETS must be positive: {settings.token_budgets}")
    effort = prompt.effort or mode.split("_")[0]
    wanted = settings.token_budgets.get(
        mode, settings.token_budgets.get(effort, prompt.sampling.max_tokens)
    )
    return min(wanted, cap) if cap else wanted


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


def _messages(state: TraceState, prompt: PromptFile, variables: dict[str, Any]) -> list[dict]:
    messages = prompt.render(**variables)
    if state.text:
        messages.append({"role": "assistant", "content": state.text})
    return messages


def _request(
    state: TraceState,
    prompt: PromptFile,
    identity: EngineIdentity,
    max_tokens: int,
    messages: list[dict[str, str]],
) -> ChatRequest:
    sampling = SamplingSpec(
        temperature=prompt.sampling.temperature,
        top_p=prompt.sampling.top_p,
        max_tokens=max_tokens,  # what the trace's budget and the context have left
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


@dataclass(frozen=True)
class RoundPlan:
    """What every round of one mode shares: the prompt and the variables common to all its
    problems, the token budget of a trace, the context it must fit and the sandbox's limits."""

    prompt: PromptFile
    identity: EngineIdentity
    settings: MathSettings
    variables: dict[str, Any]
    budget: int
    max_model_len: int | None
    count_tokens: CountTokens
    limits: SandboxLimits


@dataclass
class Samples:
    """The k traces of every problem in one mode, generated and not yet verified, and the plan
    they were generated by."""

    states: list[TraceState]
    stats: list[RunStats]
    tool_outcomes: dict[str, int]
    k: int
    mode: str
    plan: RoundPlan


def generate_samples(
    *,
    problems: list[dict[str, Any]],
    prompt: PromptFile,
    mode: str,
    chat: ChatFn,
    identity: EngineIdentity,
    requests_dir: Path,
    settings: MathSettings,
    k: int,
    max_tokens_cap: int | None,
    base_seed: int,
    batch_size: int,
    count_tokens: CountTokens,
    max_model_len: int | None = None,
    logger: logging.Logger | None = None,
) -> Samples:
    """k traces per problem in one mode, tool rounds included. Every request stays within what
    the context leaves after its prompt (`max_model_len`); a trace whose context is full stops
    with finish reason `length`. Requests are stored under `requests_dir`, so the same mode of
    the same problems (solution_traces and problem_difficulty) is generated once."""
    logger = logger or log
    if prompt.tool_use:  # fail closed before any generation, not at the first tool call
        require_isolation(settings.sandbox, logger)
    budget = trace_budget(prompt, mode, settings, max_tokens_cap)
    asked = min(budget, max_model_len) if max_model_len else budget
    plan = RoundPlan(
        prompt=prompt,
        identity=identity,
        settings=settings,
        variables={"max_tool_calls": settings.max_tool_calls, "word_budget": asked * 3 // 4},
        budget=budget,
        max_model_len=max_model_len,
        count_tokens=count_tokens,
        limits=sandbox_limits(settings),
    )
    states = _new_states(problems, mode, k, base_seed)
    stats: list[RunStats] = []
    tool_outcomes: dict[str, int] = defaultdict(int)
    max_rounds = settings.max_tool_calls + 1 if prompt.tool_use else 1
    for round_index in range(max_rounds):
        active = [s for s in states if not s.done]
        if not active:
            break
        requests, active = _next_requests(active, plan)
        if not requests:
            break
        results, round_stats = generate_resumable(
            requests,
            chat,
            RequestStore(requests_dir / f"round-{round_index:02d}"),
            batch_size=batch_size,
            label=f"solution_traces {mode}: round {round_index + 1}",
            logger=logger,
        )
        stats.append(round_stats)
        pending = _take_replies(active, requests, results, plan)
        _run_tool_calls(pending, plan, tool_outcomes)
        logger.info(
            "solution_traces %s: round %d done, %d of %d traces still calling tools",
            mode,
            round_index + 1,
            sum(not s.done for s in states),
            len(states),
        )
    for state in states:
        if state.first_request is None:
            raise ValueError(
                f"solution_traces {mode}: problem {state.problem['problem_id']} does not fit "
                f"the context (MIND_MAX_MODEL_LEN={max_model_len}) with room to answer"
            )
    return Samples(states, stats, dict(tool_outcomes), k, mode, plan)


def _new_states(
    problems: list[dict[str, Any]], mode: str, k: int, base_seed: int
) -> list[TraceState]:
    """k empty traces per problem, each with its own seed."""
    return [
        TraceState(
            problem=p,
            sample_index=i,
            seed=derive_seed(base_seed, "math", p["source"], mode, p["problem_id"], str(i)),
        )
        for p in problems
        for i in range(k)
    ]


def _next_requests(
    active: list[TraceState], plan: RoundPlan
) -> tuple[list[ChatRequest], list[TraceState]]:
    """(the next request of each active trace, the traces asking). Each request asks for what
    the trace's budget and the context have left; a trace whose context is full ends here with
    finish reason `length` and asks nothing."""
    rendered = [
        _messages(
            s,
            plan.prompt,
            {
                **plan.variables,
                "problem": s.problem["question"],
                "answer_type": s.problem.get("answer_type") or "numeric",
            },
        )
        for s in active
    ]
    left = [plan.budget - s.completion_tokens for s in active]
    if plan.max_model_len:
        sizes = plan.count_tokens(["\n".join(m["content"] for m in msgs) for msgs in rendered])
        left = [
            min(n, plan.max_model_len - size - TEMPLATE_MARGIN_TOKENS)
            for n, size in zip(left, sizes, strict=True)
        ]
    requests, asking = [], []
    for state, messages, tokens in zip(active, rendered, left, strict=True):
        if tokens < 1:  # the context is full: the trace ends here
            state.done, state.finish_reason = True, "length"
            continue
        requests.append(_request(state, plan.prompt, plan.identity, tokens, messages))
        asking.append(state)
    return requests, asking


def _take_replies(
    asking: list[TraceState],
    requests: list[ChatRequest],
    results: dict[str, StoredResult],
    plan: RoundPlan,
) -> list[tuple[TraceState, str, str]]:
    """Append each reply to its trace. A reply that calls a tool (while calls are left) is cut
    after its first code block and returned as (trace, reply up to the block, code) for the
    sandbox; any other reply finishes its trace."""
    pending: list[tuple[TraceState, str, str]] = []
    for state, request in zip(asking, requests, strict=True):
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
        if plan.prompt.tool_use and len(state.tool_calls) < plan.settings.max_tool_calls:
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
    return pending


def _run_tool_calls(
    pending: list[tuple[TraceState, str, str]], plan: RoundPlan, tool_outcomes: dict[str, int]
) -> None:
    """Run each pending code block in the sandbox and append the kept reply and the block's
    output to its trace, counting outcomes in `tool_outcomes`. A trace with no budget left
    ends here."""
    settings = plan.settings
    # Each call is its own short-lived process; run a few side by side.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        outcomes = list(
            pool.map(lambda p: run_python(p[2], plan.limits, settings.sandbox), pending)
        )
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
        if state.completion_tokens >= plan.budget:
            state.done = True  # the code ran and is recorded; no budget left to go on


def verify_samples(
    states: list[TraceState],
    references: dict[str, str | None],
    judge: ModelJudge | None = None,
) -> list[Verdict]:
    """Each trace's verdict against its problem's reference; undecided ones go to the judge
    model when there is one (its reply is kept on the verdict)."""
    verdicts = [
        verify_trace(
            s.text, references[s.problem["problem_id"]], s.problem.get("answer_type") or "numeric"
        )
        for s in states
    ]
    if judge is None:
        return verdicts
    asked = [
        i
        for i, (s, v) in enumerate(zip(states, verdicts, strict=True))
        if v.verified_by == "undecided" and v.extracted and references[s.problem["problem_id"]]
    ]
    replies = judge(
        [
            {
                "problem_id": states[i].problem["problem_id"],
                "sample_index": states[i].sample_index,
                "problem": states[i].problem["question"],
                "answer_type": states[i].problem.get("answer_type") or "numeric",
                "reference": references[states[i].problem["problem_id"]],
                "answer": verdicts[i].extracted,
            }
            for i in asked
        ]
    )
    for i, (equal, reply) in zip(asked, replies, strict=True):
        verdicts[i] = replace(
            verdicts[i],
            correct=bool(equal),
            verified_by="judge" if equal is not None else "undecided",
            judge_reply=reply,
        )
    return verdicts


def reference_of(
    problem: dict[str, Any], verdicts: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """The reference a problem's traces are checked against, and its status."""
    if verdicts is None:
        given = problem.get("reference_answer")
        status = "given" if given else "missing"
        if (problem.get("answer_type") or "numeric") == "proof":
            status = "proof"
        return {"reference_answer": given, "reference_status": status, "too_easy": False}
    try:
        return verdicts[problem["problem_id"]]
    except KeyError:
        raise ValueError(
            f"problem {problem['problem_id']} of source {problem['source']!r} has no verdict in "
            "problem_difficulty: rematerialize problem_difficulty for this source"
        ) from None


@dataclass(frozen=True)
class ProblemVote:
    """What the k samples of one problem add up to: how many were correct and the majority
    answer, with whether it is correct."""

    k: int
    n_correct: int
    majority_answer: str | None
    majority_correct: bool

    @classmethod
    def of(cls, verdicts: list[Verdict], k: int) -> ProblemVote:
        vote = majority([v.normalized for v in verdicts])
        agreeing = [v for v in verdicts if vote and v.normalized == vote]
        return cls(
            k=k,
            n_correct=sum(v.correct for v in verdicts),
            majority_answer=vote,
            majority_correct=any(v.correct for v in agreeing),
        )

    @property
    def pass_rate(self) -> float:
        return self.n_correct / self.k


@dataclass(frozen=True)
class PartitionColumns:
    """What every trace row of one (source, mode) partition shares."""

    prompt: PromptFile
    mode: str
    identity: EngineIdentity
    isolation: str  # how tool calls were contained
    length_buckets: tuple[int, ...]


def build_traces(
    samples: Samples,
    *,
    problem_verdicts: dict[str, dict[str, Any]] | None = None,
    judge: ModelJudge | None = None,
    length_buckets: tuple[int, ...] = (4096, 8192, 16384, 32768, 65536, 131072),
) -> TraceRun:
    """Verify every sample of one (source, mode) partition and split them: correct traces are
    kept; the rest are quarantined with why (incorrect, no_answer, undecided, proof_unverified,
    no_reference, too_easy). `problem_verdicts` (from problem_difficulty) give the reference to
    check against and which problems are too easy; without them references are taken as given
    and nothing is dropped as too easy."""
    states, mode, plan = samples.states, samples.mode, samples.plan
    prompt, settings = plan.prompt, plan.settings
    refs = {s.problem["problem_id"]: reference_of(s.problem, problem_verdicts) for s in states}
    verdicts = verify_samples(
        states, {pid: r["reference_answer"] for pid, r in refs.items()}, judge
    )
    by_problem: dict[str, list[tuple[TraceState, Verdict]]] = defaultdict(list)
    for state, verdict in zip(states, verdicts, strict=True):
        by_problem[state.problem["problem_id"]].append((state, verdict))
    texts = [f"{s.problem['question']}\n\n{s.text}" for s in states]
    lengths = dict(zip((id(s) for s in states), plan.count_tokens(texts), strict=True))
    columns = PartitionColumns(
        prompt=prompt,
        mode=mode,
        identity=plan.identity,
        isolation=settings.sandbox if prompt.tool_use else NO_TOOL_CALLS,
        length_buckets=length_buckets,
    )
    split, per_problem = SplitRows(), []
    for problem_id, group in by_problem.items():
        vote = ProblemVote.of([v for _, v in group], samples.k)
        problem = group[0][0].problem
        ref = refs[problem_id]
        too_easy = bool(ref.get("too_easy")) and settings.difficulty_filter
        per_problem.append(
            {
                "source": problem["source"],
                "mode": mode,
                "problem_id": problem_id,
                "k": vote.k,
                "n_correct": vote.n_correct,
                "pass_rate": vote.pass_rate,
                "majority_answer": vote.majority_answer,
                "majority_correct": vote.majority_correct,
                "tool_calls": sum(len(s.tool_calls) for s, _ in group),
                "reference_status": ref["reference_status"],
                "too_easy": too_easy,
            }
        )
        for state, verdict in group:
            row = _trace_row(state, verdict, ref, vote, lengths[id(state)], columns)
            split.add(row, rejection_reasons(verdict, ref["reference_status"], too_easy=too_easy))
    accepted, quarantine = split.tables(TRACE_SCHEMA, TRACE_QUARANTINE_SCHEMA)
    return TraceRun(accepted, quarantine, per_problem, samples.stats, samples.tool_outcomes)


def rejection_reasons(verdict: Verdict, reference_status: str, *, too_easy: bool) -> list[str]:
    """Why a trace is quarantined (empty when it is kept): at most one reason, the first of
    proof_unverified, no_reference, undecided, incorrect or no_answer, too_easy that holds."""
    if verdict.verified_by == "proof":
        return ["proof_unverified"]  # generated, never kept as verified
    if reference_status in UNCHECKABLE:
        return ["no_reference"]
    if verdict.verified_by == "undecided":
        return ["undecided"]
    if not verdict.correct:
        return ["incorrect" if verdict.extracted else "no_answer"]
    if too_easy:
        return ["too_easy"]
    return []


def _trace_row(
    state: TraceState,
    verdict: Verdict,
    ref: dict[str, Any],
    vote: ProblemVote,
    seq_tokens: int,
    columns: PartitionColumns,
) -> dict[str, Any]:
    """One trace as a TRACE_SCHEMA row: the trace, its verification against `ref`, its
    problem's vote, its length and its lineage."""
    problem = state.problem
    prompt = columns.prompt
    assert state.first_request is not None
    return {
        "trace_id": f"{problem['problem_id']}-{columns.mode}-{state.sample_index}",
        "problem_id": problem["problem_id"],
        "source": problem["source"],
        "mode": columns.mode,
        "effort": prompt.effort or columns.mode.split("_")[0],
        "tool_use": prompt.tool_use,
        "sample_index": state.sample_index,
        "question": problem["question"],
        "text": f"{problem['question']}\n\n{state.text}",
        "solution": state.text,
        "tool_calls": state.tool_calls,
        "rounds": state.rounds,
        "isolation": columns.isolation,
        "answer_type": problem.get("answer_type") or "numeric",
        "reference_answer": ref["reference_answer"],
        "original_reference": problem.get("reference_answer"),
        "reference_status": ref["reference_status"],
        "extracted_answer": verdict.extracted,
        "normalized_answer": verdict.normalized,
        "answer_method": verdict.method,
        "is_correct": verdict.correct,
        "verified_by": verdict.verified_by,
        "judge_reply": verdict.judge_reply,
        "k": vote.k,
        "n_correct": vote.n_correct,
        "pass_rate": vote.pass_rate,
        "majority_answer": vote.majority_answer,
        "majority_correct": vote.majority_correct,
        "seq_tokens": seq_tokens,
        "length_bucket": length_bucket(seq_tokens, columns.length_buckets),
        "prompt_id": prompt.id,
        "prompt_version": prompt.version,
        **columns.identity.lineage(),
        "sampling_params": state.first_request.sampling.to_json(),
        "seed": state.seed,
        "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens,
        "finish_reason": state.finish_reason,
        "created_at": state.created_at or datetime.now(UTC),
        "request_hash": state.first_request.request_hash,
    }


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
    k = run.per_problem[0]["k"] if run.per_problem else 0
    expected = problems * k
    rates = summarize(run.per_problem)
    reasons = Counter(r for rs in run.quarantine.column("rejected_by").to_pylist() for r in rs)
    # The quarantine's own columns (rejected_by, the decontamination rule's matches) left out.
    quarantined = run.quarantine.select(run.accepted.column_names).cast(run.accepted.schema)
    all_rows = pa.concat_tables([run.accepted, quarantined])
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
            "k": k,
            "reference_status": dict(Counter(p["reference_status"] for p in run.per_problem)),
            "verified_by": dict(Counter(all_rows.column("verified_by").to_pylist())),
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
