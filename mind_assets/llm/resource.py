"""The `llm` Dagster resource: one chat interface over vLLM, whatever runs behind it.

The engine is created lazily on the first request and, unless `keep_engine_between_runs` is set,
shut down when the resource is torn down at the end of the step (or the in-process run).

The resource's fields are generated from `EngineSettings` (settings.py), not written out again:
the same names, types, constraints and descriptions, as flat fields (`llm.dtype` reads like
`settings.dtype`; Dagster takes these plain types, a Literal as an enum, where a nested field
would have to be a `dagster.Config` copy of the group). They carry no defaults: every value
comes from the settings (`from_settings`), and Dagster would fill the fields a run config leaves
out with declared defaults, not the settings' values, so a partial run config is refused, as it
always was. The servers' API key is no field: it is read from the settings when the pool starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import BaseModel, Field, PrivateAttr, create_model

from mind_assets.llm.batch_runner import RunStats
from mind_assets.llm.embedded_model import embedded_model_name, prepare_embedded_model
from mind_assets.llm.hardware import EngineTuning, choose_engine_tuning, detect_host
from mind_assets.llm.offline_engine import (
    OfflineEngine,
    OfflineEngineConfig,
    get_engine,
    release_engines,
)
from mind_assets.llm.requests import ChatRequest, ChatResult, EngineIdentity, ProgressCallback
from mind_assets.llm.server_pool import ServerPool, ServerPoolConfig, auth_headers
from mind_assets.llm.usage import Usage
from mind_assets.settings import (
    EMBEDDED_MODEL,
    EngineSettings,
    MindSettings,
    OfflineEngineSettings,
    get_settings,
)


def _resource_fields(group: type[BaseModel]) -> type[ConfigurableResource]:
    """A resource base holding `group`'s fields as declared, less their defaults."""
    fields: dict[str, Any] = {}
    for name, info in group.model_fields.items():
        # The constraints (ge=1, ...) are the field's metadata; they travel with its type.
        annotation = (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        )
        fields[name] = (annotation, Field(description=info.description))
    return create_model(f"{group.__name__}Fields", __base__=ConfigurableResource, **fields)


EngineSettingsFields = _resource_fields(EngineSettings)


class LLMResource(EngineSettingsFields):
    """Chat generation with vLLM, configured from `MindSettings` (`from_settings`), where every
    default lives: the engine's fields (EngineSettings) and where the embedded model is cached."""

    models_dir: str = Field(description="Where the embedded model is converted and cached.")

    _engine: OfflineEngine | None = PrivateAttr(default=None)
    _pool: ServerPool | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: MindSettings) -> LLMResource:
        return cls(
            models_dir=str(settings.models_dir),
            **settings.model_dump(include=set(EngineSettings.model_fields)),
        )

    # --- identity, known without loading the engine -------------------------------------------
    @property
    def model_name(self) -> str:
        """The model as lineage records it."""
        return embedded_model_name() if self.model == EMBEDDED_MODEL else self.model

    def model_path(self) -> str:
        """A loadable model id or directory, converting the embedded model if needed."""
        if self.model == EMBEDDED_MODEL:
            return str(prepare_embedded_model(Path(self.models_dir)))
        return self.model

    def tuning(self) -> EngineTuning:
        """The dtype and CPU settings the in-process engine uses on this machine."""
        return choose_engine_tuning(
            self.dtype,
            detect_host(),
            max_model_len=self.max_model_len,
            threads=self.threads,
            max_num_batched_tokens=self.max_num_batched_tokens,
        )

    def requests_per_batch(self, requested: int | None = None) -> int:
        """Requests per engine call: `requested` (MIND_BATCH_SIZE), or what suits the engine
        that answers."""
        if requested:
            return requested
        if self.engine_mode == "server":  # the servers batch continuously; keep them busy
            return self.server_max_concurrency * max(1, len(self.server_urls))
        return self.tuning().batch_size

    def identity(self) -> EngineIdentity:
        if self.engine_mode == "server":
            return EngineIdentity(
                model=self.model_name,
                engine="vllm-openai-server",
                engine_version=self._server_version(),
            )
        from mind_assets.llm.offline_engine import vllm_distribution

        dist, version = vllm_distribution()
        return EngineIdentity(
            model=self.model_name, engine=dist, engine_version=version, dtype=self.tuning().dtype
        )

    def engine_metadata(self) -> dict[str, object]:
        """What ran the generation, for a materialization's `engine` metadata entry."""
        if self.engine_mode == "server":
            return {"mode": "server", "servers": list(self.server_urls)}
        return {"mode": "offline", **self.tuning().as_metadata()}

    def _server_version(self) -> str:
        import httpx

        headers = auth_headers(get_settings().server_key())
        for url in self.server_urls:
            try:
                answer = httpx.get(f"{url.rstrip('/')}/version", headers=headers, timeout=10)
                return str(answer.json()["version"])
            except (httpx.HTTPError, KeyError, ValueError):
                continue
        return "unknown"

    def pool(self) -> ServerPool:
        if self._pool is None:
            self._pool = ServerPool(
                ServerPoolConfig(
                    urls=self.server_urls,
                    model=self.server_model,
                    max_concurrency_per_server=self.server_max_concurrency,
                    timeout_s=self.server_timeout_s,
                    # Read from the environment or its file here, never a resource field.
                    api_key=get_settings().server_key(),
                    api=self.server_api,
                    max_rate_limit_wait_s=self.server_max_rate_limit_wait_s,
                )
            )
        return self._pool

    def usage(self, stats: Iterable[RunStats]) -> dict[str, float]:
        """What the generation behind `stats` cost (llm/usage.py), as `usage/*` numbers."""
        return Usage.of(stats).metrics(
            model=self.model_name,
            mode=self.engine_mode,
            devices=max(1, self.tensor_parallel_size),
            prices=get_settings().prices,
        )

    def server_report(self) -> dict[str, dict[str, int]]:
        """Per-server answered requests and failed attempts (empty for the in-process engine)."""
        return self._pool.report() if self._pool is not None else {}

    # --- generation ---------------------------------------------------------------------------
    def engine(self) -> OfflineEngine:
        if self._engine is None:
            self._engine = get_engine(
                OfflineEngineConfig(
                    model_path=self.model_path(),
                    model_name=self.model_name,
                    tuning=self.tuning(),
                    **self.model_dump(include=set(OfflineEngineSettings.model_fields)),
                )
            )
        return self._engine

    def chat(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[ChatResult]:
        """Generate one completion per request, in request order, in a single engine call."""
        if self.engine_mode == "server":
            return self.pool().chat(requests, progress=progress)
        return self.engine().chat(requests, progress=progress)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._engine is not None and not self.keep_engine_between_runs:
            release_engines()
        self._engine = None
