"""`llm_config`, the version of everything about the model and engine that changes what every
generating asset writes: model identity, engine mode, dtype and the shared sampling settings."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance

from mind_assets.lib.versions import VersionSource, content_version, version_source_asset
from mind_assets.llm.embedded_model import embedded_model_name
from mind_assets.settings import EMBEDDED_MODEL, MindSettings


def llm_version_inputs(settings: MindSettings) -> dict[str, Any]:
    """What goes into the version. Throughput settings (batch size, threads, KV cache, tensor
    parallelism) are left out; `dtype` is the configured name, not what `auto` resolves to on
    the machine that observes, so a CPU daemon and a GPU pod agree (pin a dtype to version it)."""
    return {
        "model": embedded_model_name() if settings.model == EMBEDDED_MODEL else settings.model,
        "engine_mode": settings.engine_mode,
        "server_model": settings.server_model,
        "dtype": settings.dtype,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        "max_model_len": settings.max_model_len,
    }


def llm_config_version(settings: MindSettings, instance: DagsterInstance) -> str:
    return content_version(llm_version_inputs(settings))


LLM_CONFIG = VersionSource(
    "llm_config",
    "The model and engine configuration every generating asset depends on (MIND_MODEL, "
    "MIND_ENGINE_MODE, MIND_SERVER_MODEL, MIND_DTYPE, MIND_SEED, MIND_MAX_TOKENS, "
    "MIND_MAX_MODEL_LEN), hashed. Observing it after a change marks every generated partition "
    "unsynced.",
    llm_config_version,
    group_name="llm",
)
llm_config = version_source_asset(LLM_CONFIG)
