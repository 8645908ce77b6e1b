"""ServerPool routing, retries and failure reporting against small stand-in OpenAI servers.

The stand-ins are real HTTP servers on 127.0.0.1 (threads in this process) that answer
`/v1/models` and `/v1/chat/completions`; the real vLLM servers are exercised in
test_e2e_server_mode.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mind_assets.llm.requests import ChatRequest, SamplingSpec
from mind_assets.llm.server_pool import ServerPool, ServerPoolConfig, ServersUnavailableError


class StandIn:
    """One fake server: answers after `delay` seconds, or with HTTP `fail_with` when set."""

    def __init__(self, delay: float = 0.0, fail_with: int | None = None) -> None:
        self.delay = delay
        self.fail_with = fail_with
        self.answered = 0
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                # vLLM lists its models as owned by "vllm": this stand-in plays a vLLM server.
                self._send(200, {"data": [{"id": "stand-in-model", "owned_by": "vllm"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stand_in.lock:
                    stand_in.in_flight += 1
                    stand_in.max_in_flight = max(stand_in.max_in_flight, stand_in.in_flight)
                    stand_in.bodies.append(body)
                time.sleep(stand_in.delay)
                with stand_in.lock:
                    stand_in.in_flight -= 1
                if stand_in.fail_with is not None:
                    self._send(stand_in.fail_with, {"error": "down"})
                    return
                with stand_in.lock:
                    stand_in.answered += 1
                last = body["messages"][-1]["content"]
                self._send(
                    200,
                    {
                        "choices": [
                            {"message": {"content": f" echo:{last}"}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_ins() -> Iterator[list[StandIn]]:
    created: list[StandIn] = []
    yield created
    for s in created:
        s.close()


def requests(n: int, prefix: bool = False) -> list[ChatRequest]:
    sampling = SamplingSpec(temperature=0.7, top_p=0.9, max_tokens=8, seed=1)
    out = []
    for i in range(n):
        messages: tuple[tuple[str, str], ...] = (("user", f"q{i}"),)
        if prefix:
            messages += (("assistant", "A:"),)
        out.append(ChatRequest(messages=messages, sampling=sampling, request_hash=f"h{i}"))
    return out


def fast_pool(urls: list[str], **overrides: float) -> ServerPool:
    settings = {
        "model": None,
        "max_concurrency_per_server": 32,
        "timeout_s": 600.0,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "cooldown_s": 60.0,
        **overrides,
    }
    config = ServerPoolConfig(urls=urls, **settings)
    return ServerPool(config)


def test_results_come_back_in_request_order_spread_over_both_servers(stand_ins):
    stand_ins += [StandIn(delay=0.05), StandIn(delay=0.05)]
    pool = fast_pool([s.url for s in stand_ins], max_concurrency_per_server=4)
    results = pool.chat(requests(16))
    assert [r.text for r in results] == [f" echo:q{i}" for i in range(16)]
    assert all(s.answered >= 4 for s in stand_ins), [s.answered for s in stand_ins]
    assert all(s.max_in_flight <= 4 for s in stand_ins)
    assert {r.served_by for r in results} == {s.url for s in stand_ins}
    assert pool.report() == {
        s.url: {"served": s.answered, "failed": 0, "rate_limited": 0} for s in stand_ins
    }


def test_least_outstanding_routing_sends_more_to_the_faster_server(stand_ins):
    stand_ins += [StandIn(delay=0.01), StandIn(delay=0.3)]
    pool = fast_pool([s.url for s in stand_ins], max_concurrency_per_server=2)
    pool.chat(requests(24))
    fast, slow = stand_ins
    assert fast.answered > 2 * slow.answered, (fast.answered, slow.answered)


def test_a_failing_server_is_retried_elsewhere_and_reported(stand_ins):
    stand_ins += [StandIn(), StandIn(fail_with=503)]
    good, bad = stand_ins
    pool = fast_pool([good.url, bad.url])
    results = pool.chat(requests(10))
    assert all(r.served_by == good.url for r in results)
    report = pool.report()
    assert report[good.url]["served"] == 10 and report[bad.url]["failed"] >= 1


def test_no_server_answering_names_every_server(stand_ins):
    stand_ins += [StandIn(fail_with=500)]
    dead_url = "http://127.0.0.1:9"  # discard port: connection refused
    pool = fast_pool([stand_ins[0].url, dead_url], max_attempts=3, cooldown_s=0.0)
    with pytest.raises(ServersUnavailableError) as error:
        pool.chat(requests(2))
    assert stand_ins[0].url in str(error.value) and dead_url in str(error.value)


def test_a_response_prefix_is_continued_and_kept_in_the_text(stand_ins):
    stand_ins += [StandIn()]
    pool = fast_pool([stand_ins[0].url])
    [result] = pool.chat(requests(1, prefix=True))
    body = stand_ins[0].bodies[0]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["seed"] == 1 and body["model"] == "stand-in-model"
    assert result.text == "A: echo:A:"


def test_server_mode_needs_urls():
    with pytest.raises(ValueError, match="MIND_SERVER_URLS"):
        ServerPool(ServerPoolConfig(urls=[], model=None, max_concurrency_per_server=1, timeout_s=1))
