"""Scale-out: the same chat interface over a pool of OpenAI-compatible servers (vLLM, NIM or any
hosted provider).

Requests go out concurrently (bounded per server) to the server with the fewest requests in
flight. A failed request is retried with capped exponential backoff on another server; a server
that keeps failing is taken out of rotation for a cool-down; a provider's rate-limit answer (429)
takes the server out for as long as its Retry-After asks, without counting as a failure, up to a
total wait per request; when no server can answer, the step fails with a message naming every
server and its last error. An API key goes out only as the Authorization header. vLLM's extra
request fields (continuing a reply prefix, chat-template arguments) are sent only to vLLM.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime

import httpx

from mind_assets.llm.requests import ChatRequest, ChatResult, GenerationProgress, ProgressCallback

log = logging.getLogger(__name__)


class ServersUnavailableError(RuntimeError):
    """No server of the pool could answer a request."""


@dataclass
class ServerTotals:
    """What one server did since the pool was created, as `ServerPool.report()` gives it."""

    served: int = 0  # requests answered
    failed: int = 0  # attempts that failed
    rate_limited: int = 0  # answers asking to come back later


@dataclass
class ServerState:
    url: str
    totals: ServerTotals = field(default_factory=ServerTotals)
    in_flight: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    rate_limited_until: float = 0.0
    last_error: str = ""
    semaphore: asyncio.Semaphore | None = None

    def available(self, now: float) -> bool:
        return now >= self.down_until


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The only place the API key goes: the Authorization header of each request."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class RateLimited:
    """A provider's 429: come back after `seconds`."""

    seconds: float


def retry_after_seconds(value: str | None, default: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date; the
    default when absent or unreadable, never above `cap`."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), cap)


@dataclass
class ServerPoolConfig:
    """The configured fields come from settings (MIND_SERVER_*, through LLMResource); the
    retry policy below them is the pool's own."""

    urls: list[str]
    model: str | None  # served model name; asked from /v1/models when unset
    max_concurrency_per_server: int
    timeout_s: float
    # Never printed: repr=False keeps it out of any log of the config.
    api_key: str | None = field(default=None, repr=False)
    api: str = "auto"  # auto | vllm | openai
    max_rate_limit_wait_s: float = 300.0
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
        self._vllm: bool | None = {"vllm": True, "openai": False}.get(config.api)
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
        return min(candidates, key=lambda s: (s.in_flight >= limit, s.in_flight, s.totals.served))

    def _failed(self, state: ServerState, error: str) -> None:
        state.totals.failed += 1
        state.consecutive_failures += 1
        state.last_error = error
        if state.consecutive_failures >= self.config.failures_before_cooldown:
            state.down_until = time.monotonic() + self.config.cooldown_s
            log.warning(
                "server %s out of rotation for %.0f s: %s", state.url, self.config.cooldown_s, error
            )

    def _detail(self) -> str:
        return "; ".join(f"{s.url}: {s.last_error or 'no answer'}" for s in self.states.values())

    def _unavailable(self) -> ServersUnavailableError:
        return ServersUnavailableError(f"no server could answer ({self._detail()})")

    # --- one request ------------------------------------------------------------------------
    async def _model_name(self, client: httpx.AsyncClient) -> str:
        """The served model (configured, or the first /v1/models lists) and, with api=auto,
        whether the server is vLLM (vLLM lists its models as owned by "vllm")."""
        if self._model is None or self._vllm is None:
            for state in self.states.values():
                try:
                    response = await client.get(f"{state.url}/v1/models", timeout=30)
                    response.raise_for_status()
                    first = response.json()["data"][0]
                    self._model = self._model or first["id"]
                    if self._vllm is None:
                        self._vllm = first.get("owned_by") == "vllm"
                    break
                except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
                    state.last_error = f"/v1/models: {error!r}"
            if self._model is None:
                raise self._unavailable()
            if self._vllm is None:
                # A configured model on a server that does not list models: standard fields only.
                self._vllm = False
                log.warning("could not tell whether the servers are vLLM; sending standard fields")
        return self._model

    def _body(self, model: str, request: ChatRequest) -> dict:
        """The request: standard OpenAI chat fields, plus vLLM's extensions for vLLM servers."""
        prefix = request.response_prefix
        messages = request.as_openai_messages()
        if prefix and not self._vllm and messages and messages[-1]["role"] == "assistant":
            # Only vLLM continues a final assistant message; elsewhere the reply starts fresh
            # and the prefix is put back in front of it (see _send).
            messages = messages[:-1]
        body = {
            "model": model,
            "messages": messages,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "max_tokens": request.sampling.max_tokens,
            "seed": request.sampling.seed,
        }
        schema = request.response_schema
        if schema is not None and not self._vllm:
            # The OpenAI-standard field; providers that ignore it are caught by tolerant parsing.
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.get("title", "reply"), "schema": schema},
            }
        if self._vllm:
            if schema is not None:
                # vLLM's own field says the same as offline, compact JSON included.
                body["structured_outputs"] = {"json": schema, "disable_any_whitespace": True}
            body["add_generation_prompt"] = not prefix
            body["continue_final_message"] = bool(prefix)
            if request.template_kwargs:
                body["chat_template_kwargs"] = dict(request.template_kwargs)
        return body

    async def _complete(self, client: httpx.AsyncClient, request: ChatRequest) -> ChatResult:
        model = await self._model_name(client)
        body = self._body(model, request)
        prefix = request.response_prefix
        tried: set[str] = set()
        attempt = 0
        waited = 0.0
        while attempt < self.config.max_attempts:
            delay = min(self.config.backoff_s * 2**attempt, self.config.max_backoff_s)
            # Route only once the pool has a free slot, so the choice reflects the servers'
            # load at that moment (a faster server frees slots sooner and gets more requests).
            assert self._capacity is not None
            async with self._capacity:
                state = self._pick(tried)
                if state is None:
                    outcome: ChatResult | str | RateLimited = self._rate_limited_until()
                else:
                    tried.add(state.url)
                    outcome = await self._send(client, state, body, prefix)
            if isinstance(outcome, ChatResult):
                return outcome
            if isinstance(outcome, RateLimited):
                # The provider said when to come back: wait that long, not counting an attempt.
                pause = max(outcome.seconds, 0.05)
                if waited + pause > self.config.max_rate_limit_wait_s:
                    raise ServersUnavailableError(
                        f"rate limited for over {self.config.max_rate_limit_wait_s:.0f} s "
                        f"(MIND_SERVER_MAX_RATE_LIMIT_WAIT_S): {self._detail()}"
                    )
                waited += pause
                tried.clear()
                await asyncio.sleep(pause)
                continue
            attempt += 1
            await asyncio.sleep(delay * (0.5 + random.random()))
        raise self._unavailable()

    def _rate_limited_until(self) -> RateLimited | str:
        """When every server is out only because it asked us to wait: how long until the first
        comes back."""
        now = time.monotonic()
        limited = [s for s in self.states.values() if s.rate_limited_until > now]
        if limited and len(limited) == len(self.states):
            return RateLimited(min(s.rate_limited_until for s in limited) - now)
        return "no server available"

    async def _send(
        self, client: httpx.AsyncClient, state: ServerState, body: dict, prefix: str
    ) -> ChatResult | str | RateLimited:
        """One attempt on one server: the result, or the error as text."""
        assert state.semaphore is not None
        state.in_flight += 1
        try:
            async with state.semaphore:
                response = await client.post(
                    f"{state.url}/v1/chat/completions", json=body, timeout=self.config.timeout_s
                )
                if response.status_code == 429:
                    seconds = retry_after_seconds(response.headers.get("retry-after"))
                    state.rate_limited_until = time.monotonic() + seconds
                    state.down_until = max(state.down_until, state.rate_limited_until)
                    state.totals.rate_limited += 1
                    state.last_error = f"HTTP 429 (rate limited; retry after {seconds:.1f} s)"
                    log.info("server %s rate limited: retry after %.1f s", state.url, seconds)
                    return RateLimited(seconds)
                if response.status_code >= 500:
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
        state.totals.served += 1
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        content = choice["message"].get("content") or ""
        if prefix and not self._vllm and content.lstrip().startswith(prefix.strip()):
            prefix = ""  # a fresh reply that already opens with the prefix
        return ChatResult(
            text=prefix + content,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            served_by=state.url,
        )

    # --- a batch ----------------------------------------------------------------------------
    async def _chat(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None
    ) -> list[ChatResult]:
        per_server = self.config.max_concurrency_per_server
        for state in self.states.values():
            state.semaphore = asyncio.Semaphore(per_server)
        capacity = per_server * len(self.states)
        self._capacity = asyncio.Semaphore(capacity)
        started = time.monotonic()
        done = 0
        tokens = 0
        limits = httpx.Limits(max_connections=capacity)
        headers = auth_headers(self.config.api_key)
        async with httpx.AsyncClient(limits=limits, headers=headers) as client:

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
                                "served": {s.url: s.totals.served for s in self.states.values()},
                            },
                        )
                    )
                return result

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def report(self) -> dict[str, dict[str, int]]:
        """Requests answered and attempts failed per server, since the pool was created."""
        return {s.url: asdict(s.totals) for s in self.states.values()}

    def chat(
        self, requests: Sequence[ChatRequest], progress: ProgressCallback | None = None
    ) -> list[ChatResult]:
        """Results in request order; raises ServersUnavailableError when the pool cannot answer."""
        if not requests:
            return []
        return asyncio.run(self._chat(requests, progress))
