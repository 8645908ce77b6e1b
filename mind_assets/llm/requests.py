"""What is sent to an engine and what comes back, independent of which engine runs it.

A request's hash covers everything that determines its output (model, prompt version, sampling
parameters including the seed, and the rendered messages), so it is the key for resuming work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from mind_assets.lib.prompts import PromptFile

# What a generated row keeps of the reply it was made from, besides its text; the request store's
# batch files hold the same columns, so a partition's rows can be read back as replies.
REPLY_FIELDS = [
    pa.field("prompt_tokens", pa.int32(), nullable=False),
    pa.field("completion_tokens", pa.int32(), nullable=False),
    pa.field("finish_reason", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("request_hash", pa.string(), nullable=False),
]
# The columns that say how a generated row was produced, shared by every generation family's
# row schema (each family adds what its rows derive from: a chunk, seeds, ...).
GENERATION_FIELDS = [
    pa.field("model", pa.string(), nullable=False),
    pa.field("engine", pa.string(), nullable=False),
    pa.field("engine_version", pa.string(), nullable=False),
    # The dtype the engine computed in ("auto" resolves per machine; outputs differ by dtype).
    pa.field("engine_dtype", pa.string(), nullable=False),
    pa.field("sampling_params", pa.string(), nullable=False),  # JSON, seed included
    pa.field("seed", pa.int64(), nullable=False),
    *REPLY_FIELDS,
]


class SamplingSpec(BaseModel):
    """Sampling parameters of one request; serialised verbatim into lineage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    max_tokens: int = Field(ge=1)
    seed: int

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs; tuples keep it hashable
    sampling: SamplingSpec
    request_hash: str
    # Extra chat-template variables, e.g. gpt-oss's native `reasoning_effort`.
    template_kwargs: tuple[tuple[str, str], ...] = ()
    # A JSON schema (canonical JSON text) the reply must follow: decoding is constrained to it
    # offline (vLLM structured outputs) and requested as `response_format` from servers.
    json_schema: str = ""

    @property
    def response_schema(self) -> dict[str, Any] | None:
        return json.loads(self.json_schema) if self.json_schema else None

    def as_openai_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    @property
    def response_prefix(self) -> str:
        """A final assistant message is a prefix the model continues (its text starts the reply)."""
        role, content = self.messages[-1]
        return content if role == "assistant" else ""

    @property
    def approx_length(self) -> int:
        return sum(len(content) for _, content in self.messages)


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    served_by: str = ""  # which engine or server answered (for scale-out accounting)


@dataclass(frozen=True)
class EngineIdentity:
    """The lineage fields that name what generated a row."""

    model: str
    engine: str
    engine_version: str
    # What the engine computed in; "unknown" where a remote server does not say.
    dtype: str = "unknown"

    def lineage(self) -> dict[str, str]:
        """The identity as the generation lineage columns of a row."""
        return {
            "model": self.model,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "engine_dtype": self.dtype,
        }


@dataclass
class GenerationProgress:
    """Running totals for one engine call, passed to a progress callback."""

    done: int
    total: int
    output_tokens: int = 0
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[GenerationProgress], None]


def capped_max_tokens(prompt: PromptFile, max_tokens_cap: int | None) -> int:
    """The prompt file's max_tokens, capped by MIND_MAX_TOKENS: the cap only ever lowers it."""
    wanted = prompt.sampling.max_tokens
    return min(wanted, max_tokens_cap) if max_tokens_cap else wanted


def sampling_for(
    prompt: PromptFile, seed: int, max_tokens_cap: int | None, *, budget: int | None = None
) -> SamplingSpec:
    """Sampling for one request from the prompt file's defaults: its max_tokens capped by
    MIND_MAX_TOKENS and by `budget` (the tokens the context or the trace has left)."""
    max_tokens = capped_max_tokens(prompt, max_tokens_cap)
    if budget is not None:
        max_tokens = min(max_tokens, budget)
    return SamplingSpec(
        temperature=prompt.sampling.temperature,
        top_p=prompt.sampling.top_p,
        max_tokens=max_tokens,
        seed=seed,
    )


def derive_seed(base_seed: int, *parts: str) -> int:
    """A stable 31-bit seed from the base seed and the identity of the request (chunk, style)."""
    digest = hashlib.sha256(":".join([str(base_seed), *parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def request_hash(fields: dict[str, Any]) -> str:
    """The key for resuming: a hash of everything that determines a request's output."""
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def make_request(
    model: str,
    prompt_version: str,
    sampling: SamplingSpec,
    messages: list[dict[str, str]],
    template_kwargs: dict[str, str] | None = None,
    json_schema: dict[str, Any] | None = None,
) -> ChatRequest:
    schema_text = canonical_json(json_schema) if json_schema else ""
    hashed: dict[str, Any] = {
        "model": model,
        "prompt_version": prompt_version,
        "sampling": sampling.model_dump(),
        "messages": messages,
    }
    if template_kwargs:  # only when used, so earlier hashes stay valid
        hashed["template_kwargs"] = template_kwargs
    if schema_text:  # likewise
        hashed["json_schema"] = schema_text
    return ChatRequest(
        messages=tuple((m["role"], m["content"]) for m in messages),
        sampling=sampling,
        request_hash=request_hash(hashed),
        template_kwargs=tuple(sorted((template_kwargs or {}).items())),
        json_schema=schema_text,
    )


def canonical_json(value: Any) -> str:
    """One spelling per value (no spaces), so equal schemas hash alike. Keys keep their order:
    in a schema the order of `properties` is the order decoding writes them in (question and
    solution before the answer), so sorting them would change what is generated."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def with_seed(request: ChatRequest, seed: int, *, model: str, prompt_version: str) -> ChatRequest:
    """The same request (messages, schema, template variables, sampling) under another seed;
    `model` and `prompt_version` must be what `request` was made with, since they are hashed
    but not carried."""
    return make_request(
        model,
        prompt_version,
        request.sampling.model_copy(update={"seed": seed}),
        request.as_openai_messages(),
        dict(request.template_kwargs) or None,
        request.response_schema,
    )
