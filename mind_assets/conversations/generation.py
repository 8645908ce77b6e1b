"""Turn chunks into MIND conversation requests, and results back into conversation rows."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mind_assets.conversations.parsing import parse_turns
from mind_assets.conversations.schema import CONVERSATION_SCHEMA, LINEAGE_COLUMNS
from mind_assets.lib.prompts import PromptFile
from mind_assets.lib.report import CheckOutcome, Markdown, StageSummary, markdown_preview
from mind_assets.lib.tokenizer import TokenCounter
from mind_assets.llm.batch_runner import RunStats, StoredResult
from mind_assets.llm.requests import (
    ChatRequest,
    EngineIdentity,
    capped_max_tokens,
    derive_seed,
    make_request,
    sampling_for,
)

# Room for the chat template's own tokens around the rendered messages.
_TEMPLATE_MARGIN_TOKENS = 32
# A completion budget below this cannot hold a conversation; such chunks are skipped.
MIN_COMPLETION_TOKENS = 64


@dataclass(frozen=True)
class PlannedConversation:
    """One request to make, with the identity of the chunk it comes from."""

    chunk_id: str
    doc_id: str
    request: ChatRequest


@dataclass
class Plan:
    planned: list[PlannedConversation] = field(default_factory=list)
    skipped_too_long: list[str] = field(default_factory=list)  # chunk ids


def plan_conversations(
    chunks: pa.Table,
    prompt: PromptFile,
    style: str,
    *,
    model_name: str,
    base_seed: int,
    max_model_len: int,
    count_tokens: TokenCounter,
    max_tokens_cap: int | None = None,
) -> Plan:
    """One request per chunk. The seed derives from (chunk, style) so reruns reproduce it, and
    max_tokens shrinks where a long chunk would overflow the context."""
    plan = Plan()
    rows = chunks.select(["chunk_id", "doc_id", "text"]).to_pylist()
    rendered = [prompt.render(text=row["text"]) for row in rows]
    prompt_sizes = count_tokens(["\n".join(m["content"] for m in msgs) for msgs in rendered])
    wanted = capped_max_tokens(prompt, max_tokens_cap)
    for row, messages, size in zip(rows, rendered, prompt_sizes, strict=True):
        budget = max_model_len - size - _TEMPLATE_MARGIN_TOKENS
        if min(wanted, budget) < min(wanted, MIN_COMPLETION_TOKENS):
            plan.skipped_too_long.append(row["chunk_id"])
            continue
        seed = derive_seed(base_seed, row["chunk_id"], style)
        sampling = sampling_for(prompt, seed, max_tokens_cap, budget=budget)
        plan.planned.append(
            PlannedConversation(
                chunk_id=row["chunk_id"],
                doc_id=row["doc_id"],
                request=make_request(model_name, prompt.version, sampling, messages),
            )
        )
    return plan


def conversation_rows(
    plan: Plan,
    results: dict[str, StoredResult],
    *,
    shard: str,
    style: str,
    prompt: PromptFile,
    identity: EngineIdentity,
) -> pa.Table:
    rows: list[dict[str, Any]] = []
    # A rephrase is prose, not turns: it is never parsed (a "Definition:" line is no speaker).
    is_conversation = prompt.style is None or prompt.style.is_conversation
    for item in plan.planned:
        stored = results[item.request.request_hash]
        result = stored.result
        turns = parse_turns(result.text, prompt.speakers) if is_conversation else []
        rows.append(
            {
                "conversation_id": item.request.request_hash[:32],
                "shard": shard,
                "style": style,
                "text": result.text,
                "turns": [{"speaker": t.speaker, "text": t.text} for t in turns],
                "n_turns": len(turns),
                "doc_id": item.doc_id,
                "chunk_id": item.chunk_id,
                "prompt_id": prompt.id,
                "prompt_version": prompt.version,
                **identity.lineage(),
                "sampling_params": item.request.sampling.to_json(),
                "seed": item.request.sampling.seed,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason,
                "created_at": stored.created_at,
                "request_hash": item.request.request_hash,
            }
        )
    return pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA)


def turn_count_distribution(table: pa.Table) -> dict[str, int]:
    counts = Counter(table.column("n_turns").to_pylist())
    return {str(k): counts[k] for k in sorted(counts)}


def sampling_summary(table: pa.Table) -> dict[str, Any]:
    if table.num_rows == 0:
        return {}
    first = json.loads(table.column("sampling_params")[0].as_py())
    first.pop("seed", None)
    return first


def summarize_conversations(
    table: pa.Table,
    *,
    chunk_ids: list[str],
    plan: Plan,
    stats: RunStats,
    served_by: list[str | None],
    prompt: PromptFile,
    model: str,
    engine: dict[str, Any],
    servers: Any,
    wall_seconds: float,
) -> StageSummary:
    """What one conversations partition reports: its checks (a conversation per chunk, lineage
    filled), the prompt, model, engine and sampling behind it, and tokens and throughput."""
    missing_chunks = (
        set(chunk_ids) - set(table.column("chunk_id").to_pylist()) - set(plan.skipped_too_long)
    )
    null_lineage = {
        c: table.column(c).null_count for c in LINEAGE_COLUMNS if table.column(c).null_count
    }
    finish = table.column("finish_reason").to_pylist()
    return StageSummary(
        checks=[
            CheckOutcome(
                "every_chunk_has_a_conversation",
                not missing_chunks,
                {"missing": len(missing_chunks), "skipped_too_long": len(plan.skipped_too_long)},
            ),
            CheckOutcome("lineage_non_null", not null_lineage, {"null_counts": null_lineage}),
        ],
        metadata={
            "prompt_id": prompt.id,
            "prompt_version": prompt.version,
            "model": model,
            "engine": engine,
            "sampling": sampling_summary(table),
            "requests": stats.requested,
            "generated_requests": stats.generated,
            "reused_requests": stats.reused,
            "nothing_to_generate": stats.generated == 0,
            "skipped_too_long": len(plan.skipped_too_long),
            "input_tokens": int(pc.sum(table.column("prompt_tokens")).as_py() or 0),
            "output_tokens": int(pc.sum(table.column("completion_tokens")).as_py() or 0),
            "output_tokens_per_s": round(stats.output_tokens_per_s, 1),
            "finish_reason_length": finish.count("length"),
            "turn_count_distribution": turn_count_distribution(table),
            "wall_seconds": round(wall_seconds, 1),
            "served_by": dict(Counter(s for s in served_by if s)),
            "servers": servers,
            "sample": Markdown(markdown_preview(table, ["chunk_id", "text"])),
        },
    )
