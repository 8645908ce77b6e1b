"""Any OpenAI-compatible endpoint: an API key that goes out only as the Authorization header,
standard request fields for servers that are not vLLM, and a provider's 429s waited out as its
Retry-After asks. The provider is a stand-in process on 127.0.0.1 (fixtures/provider_stand_in.py)
that refuses requests without the key and rate-limits the first ones."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import MultiPartitionKey

from mind_assets.conversations.assets import conversations
from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.lib.storage import asset_path
from mind_assets.llm.requests import ChatRequest, SamplingSpec
from mind_assets.llm.resource import LLMResource
from mind_assets.llm.server_pool import (
    ServerPool,
    ServerPoolConfig,
    ServersUnavailableError,
    retry_after_seconds,
)
from mind_assets.metrics.report import format_metrics
from mind_assets.settings import PROJECT_DIR, get_settings
from mind_assets_tests.conftest import napkin_shard

STAND_IN = PROJECT_DIR / "mind_assets_tests" / "fixtures" / "provider_stand_in.py"
STANDARD_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "seed"}


@contextmanager
def provider(tmp_path: Path, key: str, **options: object) -> Iterator[tuple[str, Path]]:
    """The stand-in provider as a process; yields its URL and the log of what it received."""
    port_file = tmp_path / f"port-{secrets.token_hex(4)}"
    log = tmp_path / f"received-{secrets.token_hex(4)}.jsonl"
    command = [sys.executable, str(STAND_IN), "--key", key, "--port-file", str(port_file)]
    command += ["--log", str(log)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            assert process.poll() is None, "the stand-in provider exited"
            assert time.monotonic() < deadline, "the stand-in provider did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}", log
    finally:
        # SIGKILL, not SIGTERM: it has nothing to clean up, and a SIGTERM disposition the test
        # process passed on (ignored, after an earlier test) must not keep it alive.
        process.kill()
        process.wait(timeout=10)


def received(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def pool(url: str, key: str | None, **overrides: object) -> ServerPool:
    config = {
        "model": None,
        "max_concurrency_per_server": 4,
        "timeout_s": 30.0,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "api_key": key,
        **overrides,
    }
    return ServerPool(ServerPoolConfig(urls=[url], **config))


def conversation_requests(n: int) -> list[ChatRequest]:
    sampling = SamplingSpec(temperature=0.7, top_p=0.95, max_tokens=64, seed=3)
    return [
        ChatRequest(
            messages=(("user", f"Rewrite text {i} as a dialogue."), ("assistant", "Teacher:")),
            sampling=sampling,
            request_hash=f"h{i}",
        )
        for i in range(n)
    ]


def test_retry_after_is_read_as_seconds_or_a_date_and_capped():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(None) == 1.0 and retry_after_seconds("soon") == 1.0
    assert retry_after_seconds("100000") == 300.0
    in_three = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    assert 1.0 <= retry_after_seconds(in_three) <= 3.5


def test_a_provider_gets_the_key_standard_fields_only_and_its_429s_are_waited_out(tmp_path):
    key = "sk-" + secrets.token_hex(16)
    with provider(tmp_path, key, rate_limit=3, retry_after="0.2") as (url, log):
        server_pool = pool(url, key)
        results = server_pool.chat(conversation_requests(4))
    requests = received(log)
    assert requests and all(r["key_ok"] for r in requests)
    posts = [r["body"] for r in requests if r["path"] == "/v1/chat/completions"]
    assert len(posts) == 4 + 3  # every request answered; three 429s waited out and retried
    for body in posts:
        assert set(body) == STANDARD_FIELDS, sorted(set(body) - STANDARD_FIELDS)
        # Only vLLM continues a final assistant message: the prefix is not sent to others...
        assert body["messages"][-1]["role"] == "user"
    # ...and is put back in front of the reply once, not twice.
    assert all(r.text.startswith("Teacher: Let us") for r in results)
    report = server_pool.report()[url]
    assert report == {"served": 4, "failed": 0, "rate_limited": 3}


def test_a_vllm_server_gets_the_vllm_fields(tmp_path):
    with provider(tmp_path, "k", owned_by="vllm") as (url, log):
        pool(url, "k").chat(conversation_requests(1))
    [body] = [r["body"] for r in received(log) if r["path"] == "/v1/chat/completions"]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "Teacher:"}


def test_a_provider_that_keeps_rate_limiting_fails_naming_the_limit(tmp_path):
    with (
        provider(tmp_path, "k", rate_limit=1000, retry_after="0.5") as (url, _),
        pytest.raises(ServersUnavailableError, match=r"rate limited for over 1 s .*HTTP 429"),
    ):
        pool(url, "k", max_rate_limit_wait_s=1.0).chat(conversation_requests(1))


def test_a_wrong_key_fails_naming_the_server_and_the_answer_but_never_the_key(tmp_path):
    wrong = "sk-wrong-" + secrets.token_hex(8)
    with (
        provider(tmp_path, "the-right-key") as (url, _),
        pytest.raises(ServersUnavailableError) as error,
    ):
        pool(url, wrong, max_attempts=2, model="provider-model").chat(conversation_requests(1))
    assert url in str(error.value) and "401" in str(error.value)
    assert wrong not in str(error.value)


def test_without_a_key_the_provider_refuses_and_the_step_fails_naming_it(tmp_path):
    with (
        provider(tmp_path, "the-right-key") as (url, log),
        pytest.raises(ServersUnavailableError, match=r"401"),
    ):
        pool(url, None, max_attempts=2, model="provider-model").chat(conversation_requests(1))
    assert received(log) and not any(r["key_ok"] for r in received(log))


def test_the_key_never_reaches_run_config_metadata_lineage_data_or_logs(
    settings, instance, run, register, monkeypatch, tmp_path, caplog, capfd
):
    """A conversations partition generated through Dagster against the key-checking provider:
    every request carried the key, and no byte of it is in the data root, the Dagster instance
    (run config, event log, metadata), the captured logs or the process output."""
    key = "sk-secret-" + secrets.token_hex(16)
    key_file = tmp_path / "mounted-secret"
    key_file.write_text(key + "\n")
    caplog.set_level(logging.DEBUG)
    with provider(tmp_path, key, rate_limit=2, retry_after="0.2") as (url, log):
        monkeypatch.setenv("MIND_ENGINE_MODE", "server")
        monkeypatch.setenv("MIND_SERVER_URLS", json.dumps([url]))
        monkeypatch.setenv("MIND_SERVER_API_KEY_FILE", str(key_file))  # a mounted secret
        monkeypatch.setenv("MIND_MAX_TOKENS", "64")
        model = LLMResource.from_settings(get_settings()).model_name
        prices = {model: {"input_per_million": 2.0, "output_per_million": 8.0}}
        monkeypatch.setenv("MIND_PRICES", json.dumps(prices))
        server_llm = LLMResource.from_settings(get_settings())
        register(napkin_shard("hosted", 2))
        run([raw_documents, chunks], "hosted")
        key_partition = MultiPartitionKey({"shard": "hosted", "style": "teacher_student"})
        result = run([conversations], key_partition, resources={"llm": server_llm})
        assert result.success
    requests = received(log)
    generated = result.asset_materializations_for_node("conversations")[0].metadata["requests"]
    assert sum(r["path"] == "/v1/chat/completions" for r in requests) == generated.value + 2
    assert all(r["key_ok"] for r in requests)

    needle = key.encode()
    roots = [settings.data_dir, Path(instance.root_directory)]
    leaked = [
        str(path)
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]
    assert not leaked
    events = instance.get_records_for_run(result.run_id).records
    assert key not in repr([r.event_log_entry for r in events])
    assert key not in repr(instance.get_run_by_id(result.run_id))
    out, err = capfd.readouterr()
    assert key not in caplog.text and key not in out and key not in err
    materialization = result.asset_materializations_for_node("conversations")[0]
    assert key not in repr(materialization.metadata)

    # Cost accounting from the same run: the provider billed 40 prompt and 52 completion tokens
    # per answered request; the price table turns them into dollars.
    n = generated.value
    usage = {k: v.value for k, v in materialization.metadata.items() if k.startswith("usage/")}
    assert usage["usage/requests"] == n
    assert usage["usage/prompt_tokens"] == 40 * n and usage["usage/completion_tokens"] == 52 * n
    assert usage["usage/dollars"] == pytest.approx((40 * 2.0 + 52 * 8.0) * n / 1e6)
    assert "usage/device_seconds" not in usage  # a hosted endpoint bills tokens, not devices
    # ...and agree with the token columns of the rows the run wrote.
    rows = pq.read_table(
        asset_path(settings.data_dir, "conversations", "hosted", "teacher_student"),
        columns=["prompt_tokens", "completion_tokens"],
    )
    assert usage["usage/prompt_tokens"] == sum(rows["prompt_tokens"].to_pylist())
    assert usage["usage/completion_tokens"] == sum(rows["completion_tokens"].to_pylist())
    report = format_metrics(settings.data_dir, ["cost"])
    assert "Cost and usage per partition" in report
    assert "conversations" in report and "hosted|teacher_student" in report


def test_the_key_file_is_read_once_and_a_bad_one_is_named_never_shown(tmp_path, monkeypatch):
    from mind_assets.settings import MindSettings

    monkeypatch.delenv("MIND_SERVER_API_KEY", raising=False)
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\nignored second line\n")
    assert MindSettings(server_api_key_file=secret).server_key() == "sk-from-file"
    assert MindSettings(server_api_key="sk-env", server_api_key_file=secret).server_key() == (
        "sk-env"
    )
    assert "sk-env" not in repr(MindSettings(server_api_key="sk-env"))
    with pytest.raises(ValueError, match=rf"MIND_SERVER_API_KEY_FILE {tmp_path / 'nope'}: No such"):
        MindSettings(server_api_key_file=tmp_path / "nope").server_key()
    (tmp_path / "blank").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        MindSettings(server_api_key_file=tmp_path / "blank").server_key()
