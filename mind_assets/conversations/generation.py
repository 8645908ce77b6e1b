"""Turn chunks into MIND conversation requests, and results back into conversation rows."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mind_assets.conversations.parsing import parse_turns
from mind_assets.conversations.schema import CONVERSATION_SCHEMA
from mind_assets.corpus.chunking import TokenCounter
from mind_assets.lib.prompts import PromptFile
from mind_assets.llm.batch_runner import StoredResult
from mind_assets.llm.requests import (
    ChatRequest,
    EngineIdentity,
    SamplingSpec,
    derive_seed,
    make_request,
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
    max_tokens_override: int | None = None,
) -> Plan:
    """One request per chunk. The seed derives from (chunk, style) so reruns reproduce it, and
    max_tokens shrinks where a long chunk would overflow the context."""
    plan = Plan()
    rows = chunks.select(["chunk_id", "doc_id", "text"]).to_pylist()
    rendered = [prompt.render(text=row["text"]) for row in rows]
    prompt_sizes = count_tokens(["\n".join(m["content"] for m in msgs) for msgs in rendered])
    wanted = max_tokens_override or prompt.sampling.max_tokens
    for row, messages, size in zip(rows, rendered, prompt_sizes, strict=True):
        budget = max_model_len - size - _TEMPLATE_MARGIN_TOKENS
        max_tokens = min(wanted, budget)
        if max_tokens < min(wanted, MIN_COMPLETION_TOKENS):
            plan.skipped_too_long.append(row["chunk_id"])
            continue
        sampling = SamplingSpec(
            temperature=prompt.sampling.temperature,
            top_p=prompt.sampling.top_p,
            max_tokens=max_tokens,
            seed=derive_seed(base_seed, row["chunk_id"], style),
        )
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
    for item in plan.planned:
        stored = results[item.request.request_hash]
        result = stored.result
        turns = parse_turns(result.text, prompt.speakers)
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
