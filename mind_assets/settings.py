"""The one configuration object of the platform, read from `MIND_*` environment variables.

Every default lives here; modules receive a `MindSettings` instead of reading the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mind_assets.filtering.thresholds import FilterThresholds
from mind_assets.math_traces.sources import DEFAULT_MATH_SOURCES, MathSource
from mind_assets.task_qa.catalog import DEFAULT_FAMILIES

PROJECT_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = "embedded"


class MindSettings(BaseSettings):
    """Platform configuration. Each field is overridable as `MIND_<FIELD NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="MIND_", extra="ignore", populate_by_name=True, env_nested_delimiter="__"
    )

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"),
        description="Root of every file the platform writes (asset parquet, models, metrics).",
    )
    models_dir_override: Path | None = Field(
        default=None,
        alias="MIND_MODELS_DIR",
        description="Where converted models are cached; defaults to <data_dir>/models. Point "
        "several data roots at one directory to convert the embedded model once.",
    )
    inbox_dir: Path | None = Field(
        default=None,
        description="Corpus inbox watched by corpus_inbox_sensor (default <data_dir>/inbox).",
    )
    # 100: with 10,000 files waiting, the worst tick took 5.4 s on the loaded 2-core
    # development machine (benchmarks/RESULTS.md); the rest of a tick is the inbox's scan.
    inbox_max_files_per_tick: int = Field(
        default=100,
        ge=1,
        description="New inbox files one corpus_inbox_sensor tick registers; the rest wait for "
        "the next ticks (every 30 s), so a flood of files never makes a tick time out.",
    )
    blends_dir: Path = Field(
        default=PROJECT_DIR / "blends", description="Directory of blend specs (*.yaml)."
    )
    prompts_dir: Path = Field(
        default=PROJECT_DIR / "prompts",
        description="Directory of versioned prompt files.",
    )

    # --- model and engine ----------------------------------------------------------------
    model: str = Field(
        default=EMBEDDED_MODEL,
        description="Hugging Face model id or local directory; 'embedded' means the bundled "
        "SmolLM2-135M-Instruct, converted once under <data_dir>/models.",
    )
    engine_mode: Literal["offline", "server"] = Field(
        default="offline",
        description="'offline' runs vLLM inside the step's process; 'server' sends requests to "
        "the OpenAI-compatible vLLM servers in server_urls.",
    )
    server_urls: list[str] = Field(
        default_factory=list,
        description='Server mode: base URLs as a JSON list, e.g. ["http://10.0.0.5:8000"].',
    )
    server_model: str | None = Field(
        default=None, description="Server mode: served model name (default: asked from /v1/models)."
    )
    server_max_concurrency: int = Field(
        default=32, ge=1, description="Server mode: requests in flight per server."
    )
    server_timeout_s: float = Field(default=600.0, gt=0, description="Server mode: per request.")
    dtype: str = Field(
        default="auto",
        description="Weight and activation dtype. 'auto': bfloat16 on GPUs (float16 before "
        "Ampere) and on CPUs with native bf16 (avx512_bf16 or amx_bf16), float32 on other CPUs, "
        "where bf16 is emulated and several times slower. Any vLLM dtype name overrides it.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU engine: torch/OpenMP threads. Empty means one per CPU this process "
        "may use (its affinity mask).",
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Prompt tokens one engine step may process. Empty leaves vLLM's default on "
        "GPU and chooses on CPU (never below max_model_len: CPU prefill is not chunked).",
    )
    max_model_len: int = Field(default=4096, gt=0, description="Context length of the engine.")
    memory_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="vLLM gpu_memory_utilization. On the CPU backend this is the share of RAM "
        "reserved for the KV cache. Empty means 0.3 on CPU and 0.9 on GPU.",
    )
    kv_cache_gib: float | None = Field(
        default=None,
        gt=0,
        description="Explicit KV-cache size in GiB; overrides memory_fraction. On CPU, where "
        "vLLM sizes the cache as (fraction x node RAM - process RSS), this is the predictable "
        "choice when several engines share a machine or a process.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine.")
    max_num_seqs: int = Field(default=256, ge=1, description="Max sequences decoded at once.")
    enforce_eager: bool | None = Field(
        default=None, description="Disable CUDA graphs. Empty means True on CPU, False on GPU."
    )
    keep_engine_between_runs: bool = Field(
        default=False,
        description="Keep the loaded engine cached in the process after a run ends. Useful when "
        "one process materializes many runs in-process (tests, `mind demo`); off by default so "
        "the engine never outlives the step that loaded it.",
    )

    # --- generation ----------------------------------------------------------------------
    seed: int = Field(default=0, description="Base seed; each request derives its own from it.")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Requests per engine call; each finished batch is persisted. Empty means 256 "
        "on GPU, 16 per core on CPU (where throughput stops growing long before 256), and "
        "server_max_concurrency x servers in server mode.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Override of every prompt file's max_tokens (keeps demos and tests short).",
    )

    regeneration_budget: int = Field(
        default=4,
        ge=1,
        description="Conversation partitions the regenerate_unsynced_conversations schedule "
        "requests per tick.",
    )

    # --- chunking ------------------------------------------------------------------------
    chunk_tokens: int = Field(default=500, ge=16, description="Target tokens per chunk.")
    chunk_overlap_tokens: int = Field(
        default=0, ge=0, description="Tokens of the previous chunk repeated at each chunk start."
    )

    # --- task-seeded Q&A ---------------------------------------------------------------------
    task_families: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FAMILIES),
        description='lm-eval tasks that seed task Q&A, as a JSON list; ["all"] for every '
        "eligible task.",
    )
    task_mirror_dir: Path | None = Field(
        default=None,
        description="Local dataset mirror, <dataset_path>/<dataset_name or default>/<split>.jsonl "
        "or .parquet; checked before the hub. Defaults to <data_dir>/task_mirror.",
    )
    task_qa_items: int = Field(default=32, ge=1, description="Generated items per family.")
    task_qa_shots: int = Field(default=3, ge=1, description="Seed examples per prompt.")
    task_seed_limit: int | None = Field(
        default=None, ge=1, description="Normalise at most this many training rows per task."
    )

    # --- verified math solution traces ---------------------------------------------------------
    math_sources: list[MathSource] = Field(
        default_factory=lambda: list(DEFAULT_MATH_SOURCES),
        description="Problem sources as a JSON list of {name, dataset_path, dataset_name, split, "
        "eval_splits, question_field, answer_field, answer_format}; read from the task mirror "
        "first, then the hub. Default: GSM8K train, decontaminated against GSM8K test.",
    )
    math_problems_limit: int | None = Field(
        default=None, ge=1, description="Use at most this many problems per source."
    )
    math_samples_per_problem: int = Field(
        default=4, ge=1, description="k: solution traces sampled per problem and mode."
    )
    math_max_tool_calls: int = Field(
        default=4, ge=0, description="Most Python tool calls in one TIR trace."
    )
    math_drop_solved_by_all: bool = Field(
        default=False, description="Quarantine problems every sample solved (too easy)."
    )
    math_length_buckets: list[int] = Field(
        default_factory=lambda: [4096, 8192, 16384, 32768, 65536, 131072],
        description="Upper token bounds of the sequence-length buckets recorded on traces.",
    )
    sandbox: Literal["bubblewrap", "unsafe-no-isolation"] = Field(
        default="bubblewrap",
        description="How TIR tool calls are contained. 'bubblewrap': each call in a kernel jail "
        "(new namespaces, read-only minimal root, unprivileged uid); TIR modes refuse to start "
        "when it cannot be set up. 'unsafe-no-isolation': a plain child process with rlimits and "
        "an audit hook only, for trusted code; warns on every run and is recorded on every "
        "trace row (column `isolation`).",
    )
    sandbox_wall_seconds: float = Field(
        default=10.0, gt=0, description="Tool calls: wall-clock limit per call."
    )
    sandbox_cpu_seconds: int = Field(default=5, ge=1, description="Tool calls: CPU-time limit.")
    sandbox_memory_mb: int = Field(
        default=1024, ge=64, description="Tool calls: address-space limit (MiB)."
    )
    sandbox_disk_mb: int = Field(
        default=64, ge=1, description="Tool calls: size of the jail's writable tmpfs (MiB)."
    )
    sandbox_output_kb: int = Field(
        default=64, ge=1, description="Tool calls: captured output cap (KiB); more is killed."
    )

    # --- diversity (G-Vendi) and Prismatic selection -----------------------------------------
    diversity_proxy_model: str = Field(
        default=EMBEDDED_MODEL,
        description="Proxy model whose gradients are the features ('embedded' = SmolLM2-135M; "
        "the paper uses Qwen/Qwen2.5-0.5B-Instruct).",
    )
    diversity_last_blocks: int = Field(
        default=1, ge=0, description="Gradient over the last k transformer blocks; 0 = all."
    )
    diversity_dim: int = Field(default=1024, ge=8, description="Projected feature dimension.")
    diversity_max_samples: int = Field(
        default=256, ge=2, description="Rows per target (a seeded subset when there are more)."
    )
    diversity_max_tokens: int = Field(
        default=512, ge=16, description="Tokens per sample for the gradient (prompt cut first)."
    )
    diversity_batch_size: int = Field(default=16, ge=1, description="Gradients projected together.")
    prismatic_cluster_fraction: float = Field(
        default=0.1, gt=0, le=1, description="k of spherical k-means as a share of the pool."
    )
    prismatic_keep_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Filter mode: keep samples in this smallest share of clusters.",
    )
    prismatic_generation_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Generation mode: draw seeds from one cluster among this smallest share.",
    )
    task_qa_seed_selection: Literal["random", "prismatic"] = Field(
        default="random",
        description="How task Q&A draws its few-shot seeds: uniformly, or (prismatic) from one "
        "of the smallest clusters of the seeds' gradient features.",
    )

    # --- filtering -------------------------------------------------------------------------
    filters: FilterThresholds = Field(
        default_factory=FilterThresholds,
        description="Heuristic filter thresholds; set one as MIND_FILTERS__<NAME>.",
    )

    @field_validator(
        "data_dir",
        "prompts_dir",
        "blends_dir",
        "models_dir_override",
        "task_mirror_dir",
        "inbox_dir",
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @model_validator(mode="after")
    def _overlap_below_size(self) -> MindSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"MIND_CHUNK_OVERLAP_TOKENS ({self.chunk_overlap_tokens}) must be smaller than "
                f"MIND_CHUNK_TOKENS ({self.chunk_tokens})"
            )
        return self

    @property
    def models_dir(self) -> Path:
        return self.models_dir_override or self.data_dir / "models"

    @property
    def shard_specs_dir(self) -> Path:
        return self.data_dir / "shard_specs"

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.data_dir / "inbox"

    @property
    def task_mirror(self) -> Path:
        return self.task_mirror_dir or self.data_dir / "task_mirror"

    @property
    def dagster_storage_dir(self) -> Path:
        return self.data_dir / "dagster"


def get_settings() -> MindSettings:
    """Settings as the environment gives them now (cheap; read on every call so tests and
    long-lived processes see changes)."""
    return MindSettings()
