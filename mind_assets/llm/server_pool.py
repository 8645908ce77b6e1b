"""Scale-out: the same chat interface over a pool of OpenAI-compatible vLLM servers.

Requests go out concurrently (bounded per server) to the server with the fewest requests in
flight. A failed request is retried with capped exponential backoff on another server; a server
that keeps failing is taken out of rotation for a cool-down; when no server can answer, the step
fails with a message naming every server and its last error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from mind_assets.llm.requests import ChatRequest, ChatResult, GenerationProgress, ProgressCallback

log = logging.getLogger(__name__)


class ServersUnavailableError(RuntimeError):
    """No server of the pool could answer a request."""


@dataclass
class ServerState:
    url: str
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    last_error: str = ""
    semaphore: asyncio.Semaphore | None = None

    def available(self, now: float) -> bool:
        return now >= self.down_until


@dataclass
class ServerPoolConfig:
    """The configured fields come from settings (MIND_SERVER_*, through LLMResource); the
    retry policy below them is the pool's own."""

    urls: list[str]
    model: str | None  # served model name; asked from /v1/models when unset
    max_concurrency_per_server: int
    timeout_s: float
    max_attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    failures_before_cooldown: int = 2
    cooldown_s: float = 30.0


class ServerPool:
    def __init__(self, config: ServerPoolConfig) -> None:
        if not config.urls:
            raise ValueError("server mode needs at least one URL in MIND_SERVER_URLS")
        self.config = config
        self.states = {url.rstrip("/"): ServerState(url.rstrip("/")) for url in config.urls}
        self._model = config.model
        self._capacity: asyncio.Semaphore | None = None

    # --- choosing a server ------------------------------------------------------------------
    def _pick(self, exclude: set[str]) -> ServerState | None:
        now = time.monotonic()
        candidates = [s for s in self.states.values() if s.available(now) and s.url not in exclude]
        if not candidates:
            candidates = [s for s in self.states.values() if s.available(now)]
        if not candidates:
            return None
        # Least outstanding requests; a server with a free slot before one that would queue.
        limit = self.config.max_concurrency_per_server
        return min(candidates, key=lambda s: (s.in_flight >= limit, s.in_flight, s.served))

    def _failed(self, state: ServerState, error: str) -> None:
        state.failed += 1
        state.consecutive_failures += 1
        state.last_error = error
        if state.consecutive_failures >= self.config.failures_before_cooldown:
            state.down_until = time.monotonic() + self.config.cooldown_s
            log.warning(
                "server %s out of rotation for %.0f s: %s", state.url, self.config.cooldown_s, error
            )

    def _unavailable(self) -> ServersUnavailableError:
        detail = "; ".join(f"{s.url}: {s.last_error or 'no answer'}" for s in self.states.values())
        return ServersUnavailableError(f"no vLLM server could answer ({detail})")

    # --- one request ------------------------------------------------------------------------
    async def _model_name(self, client: httpx.AsyncClient) -> str:
        if self._model is None:
            for state in self.states.values():
                try:
                    response = await client.get(f"{state.url}/v1/models", timeout=30)
                    response.raise_for_status()
                    self._model = response.json()["data"][0]["id"]
                    break
                except (httpx.HTTPError, KeyError, IndexError) as error:
                    state.last_error = f"/v1/models: {error!r}"
            if self._model is None:
                raise self._unavailable()
        return self._model

    async def _complete(self, client: httpx.AsyncClient, request: ChatRequest) -> ChatResult:
        model = await self._model_name(client)
        prefix = request.response_prefix
        body = {
            "model": model,
            "messages": request.as_openai_messages(),
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "max_tokens": request.sampling.max_tokens,
            "seed": request.sampling.seed,
            # vLLM extensions: continue the assistant prefix instead of starting a new turn.
            "add_generation_prompt": not prefix,
            "continue_final_message": bool(prefix),
        }
        if request.template_kwargs:
            body["chat_template_kwargs"] = dict(request.template_kwargs)
        tried: set[str] = set()
        for attempt in range(self.config.max_attempts):
            delay = min(self.config.backoff_s * 2**attempt, self.config.max_backoff_s)
            # Route only once the pool has a free slot, so the choice reflects the servers'
            # load at that moment (a faster server frees slots sooner and gets more requests).
            assert self._capacity is not None
            async with self._capacity:
                state = self._pick(tried)
                if state is None:
                    outcome: ChatResult | str = "no server available"
                else:
                    tried.add(state.url)
                    outcome = await self._send(client, state, body, prefix)
            if isinstance(outcome, ChatResult):
                return outcome
            await asyncio.sleep(delay * (0.5 + random.random()))
        raise self._unavailable()

    async def _send(
        self, client: httpx.AsyncClient, state: ServerState, body: dict, prefix: str
    ) -> ChatResult | str:
        """One attempt on one server: the result, or the error as text."""
        assert state.semaphore is not None
        state.in_flight += 1
        try:
            async with state.semaphore:
                response = await client.post(
                    f"{state.url}/v1/chat/completions", json=body, timeout=self.config.timeout_s
                )
                if response.status_code >= 500 or response.status_code == 429:
                    raise httpx.HTTPStatusError(
                        f"HTTP {response.status_code}", request=response.request, response=response
                    )
                response.raise_for_status()
                payload = response.json()
        except (httpx.HTTPError, ValueError) as error:
            self._failed(state, repr(error))
            return repr(error)
        finally:
            state.in_flight -= 1
        state.consecutive_failures = 0
        state.served += 1
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        return ChatResult(
            text=prefix + (choice["message"].get("content") or ""),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            served_by=state.url,
        )

    # --- a batch ----------------------------------------------------------------------------
    async def _chat(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None
    ) -> list[ChatResult]:
        for state in self.states.values():
            state.semaphore = asyncio.Semaphore(self.config.max_concurrency_per_server)
        self._capacity = asyncio.Semaphore(
            self.config.max_concurrency_per_server * len(self.states)
        )
        started = time.monotonic()
        done = 0
        tokens = 0
        limits = httpx.Limits(
            max_connections=self.config.max_concurrency_per_server * len(self.states)
        )
        async with httpx.AsyncClient(limits=limits) as client:

            async def one(request: ChatRequest) -> ChatResult:
                nonlocal done, tokens
                result = await self._complete(client, request)
                done += 1
                tokens += result.completion_tokens
                if progress is not None and (done == len(requests) or done % 16 == 0):
                    elapsed = time.monotonic() - started
                    progress(
                        GenerationProgress(
                            done,
                            len(requests),
                            tokens,
                            elapsed,
                            {
                                "speed": f"output: {tokens / max(elapsed, 1e-6):.1f} toks/s",
                                "served": {s.url: s.served for s in self.states.values()},
                            },
                        )
                    )
                return result

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def report(self) -> dict[str, dict[str, int]]:
        """Requests answered and attempts failed per server, since the pool was created."""
        return {s.url: {"served": s.served, "failed": s.failed} for s in self.states.values()}

    def chat(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[ChatResult]:
        """Results in request order; raises ServersUnavailableError when the pool cannot answer."""
        if not requests:
            return []
        return asyncio.run(self._chat(requests, progress))
