"""Prompt files: YAML documents under `prompts/`, versioned by the hash of their bytes.

A prompt file holds an id, a description, sampling defaults and a Jinja template rendered in a
sandbox with StrictUndefined, so a missing variable is an error rather than an empty string.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mind_assets.lib.mappings import parse_mapping


class PromptError(ValueError):
    """A prompt file that is missing, malformed or fails to render."""


class SamplingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=1024, ge=1)


class StyleHeader(BaseModel):
    """What makes a prompt file a MIND style: its title, the paper's knowledge-gap group
    (`explicit`: one speaker knows, the other asks; `implicit`: the gap comes from the task, as in
    debate or problem solving; `none`: peers), its place in listings, and its form: a
    `conversation` between speakers, or a `rephrase` of the source in another register (the
    paper's Rephrase baseline), which has no turns, so no turn rule judges it and it is never the
    longest conversation of a chunk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    knowledge_gap: Literal["explicit", "implicit", "none"]
    order: int = 100
    form: Literal["conversation", "rephrase"] = "conversation"

    @model_validator(mode="after")
    def _a_rephrase_has_no_knowledge_gap(self) -> StyleHeader:
        if self.form == "rephrase" and self.knowledge_gap != "none":
            raise ValueError(
                "a style of form `rephrase` has no speakers, so its knowledge_gap must be `none`"
            )
        return self

    @property
    def is_conversation(self) -> bool:
        return self.form == "conversation"


class PromptFile(BaseModel):
    """One prompt file as written on disk, plus its content-hash version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    description: str
    style: StyleHeader | None = None  # conversation styles only (prompts/mind/<set>/)
    sampling: SamplingDefaults = SamplingDefaults()
    system: str | None = None
    template: str
    speakers: list[str] = Field(default_factory=list)
    # Literal text the assistant's reply starts with (e.g. the first speaker's label). Small
    # models follow a format far more reliably when its first tokens are given.
    response_prefix: str | None = None
    # Solution-trace prompts: the reasoning effort they ask for and whether tool calls are on.
    effort: str | None = None
    tool_use: bool = False
    # `json`: the reply is a JSON object whose schema the calling stage attaches to the request
    # (structured generation); such prompts cannot also give a response_prefix.
    output_format: Literal["text", "json"] = "text"
    version: str = ""
    path: str = ""

    @model_validator(mode="after")
    def _json_replies_start_fresh(self) -> PromptFile:
        if self.output_format == "json" and self.response_prefix:
            raise ValueError("a prompt with output_format json cannot have a response_prefix")
        return self

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Chat messages for this prompt: an optional system message, then the user message."""
        messages = []
        if self.system:
            messages.append({"role": "system", "content": _render(self.system, self, variables)})
        messages.append({"role": "user", "content": _render(self.template, self, variables)})
        if self.response_prefix:
            messages.append({"role": "assistant", "content": self.response_prefix})
        return messages

    @property
    def instruction_text(self) -> str:
        """The template's fixed text, without Jinja expressions (used to detect leakage)."""
        return "".join(
            value for _, token, value in _environment().lex(self.template) if token == "data"
        )


_ENV: SandboxedEnvironment | None = None


def _environment() -> SandboxedEnvironment:
    global _ENV
    if _ENV is None:
        _ENV = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
        )
        # JSON as a model should write it (Jinja's own `tojson` escapes <, > and & for HTML).
        _ENV.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return _ENV


def _render(source: str, prompt: PromptFile, variables: dict[str, Any]) -> str:
    try:
        return _environment().from_string(source).render(**variables)
    except jinja2.TemplateError as error:
        raise PromptError(
            f"prompt {prompt.id} ({prompt.path}) failed to render: {error}"
        ) from error


def prompt_version(raw: bytes) -> str:
    """The version of a prompt is the sha256 of its file bytes (16 hex chars)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def load_prompt(path: Path) -> PromptFile:
    """Parse and validate one prompt file; errors name the file and the field."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise PromptError(f"prompt file not found: {path}") from error
    payload = parse_mapping(
        raw,
        "YAML",
        f"prompt file {path}",
        expected="a mapping with id, description, template",
        error=PromptError,
    )
    try:
        prompt = PromptFile(**payload, version=prompt_version(raw), path=str(path))
    except ValidationError as error:
        raise PromptError(f"prompt file {path} is invalid: {error}") from error
    try:
        _environment().parse(prompt.template)
    except jinja2.TemplateSyntaxError as error:
        raise PromptError(f"prompt file {path}: template syntax error: {error}") from error
    return prompt


def prompt_text(path: Path) -> str:
    """A prompt file exactly as written (a dataset card quotes it)."""
    try:
        return path.read_text()
    except FileNotFoundError as error:
        raise PromptError(f"prompt file not found: {path}") from error
