"""Re-sampling replies that do not parse: a retry is the same request under another seed, and
an item keeps the first attempt whose reply parses."""

from __future__ import annotations

from mind_assets.llm.batch_runner import RequestStore
from mind_assets.llm.requests import ChatResult, SamplingSpec, make_request, with_seed
from mind_assets.llm.resampling import generate_until_parsed

REQUEST = make_request(
    "m",
    "v1",
    SamplingSpec(temperature=0.8, top_p=0.95, max_tokens=64, seed=1),
    [{"role": "user", "content": "Write a question."}],
    template_kwargs={"reasoning_effort": "low"},
    json_schema={"type": "object", "properties": {"b": {"type": "string"}, "a": {}}},
)


def test_with_seed_changes_the_seed_and_nothing_else():
    same = with_seed(REQUEST, 1, model="m", prompt_version="v1")
    assert same == REQUEST
    other = with_seed(REQUEST, 2, model="m", prompt_version="v1")
    assert other.request_hash != REQUEST.request_hash
    assert (other.messages, other.template_kwargs, other.json_schema) == (
        REQUEST.messages,
        REQUEST.template_kwargs,
        REQUEST.json_schema,
    )
    assert other.sampling.seed == 2 and other.sampling.max_tokens == 64


def _until_good(chat, tmp_path, *, retries: int):
    """REQUEST under key 'a' until its reply is "good"; retry n asks under seed 100 + n."""
    return generate_until_parsed(
        {"a": REQUEST},
        chat,
        RequestStore(tmp_path / "store"),
        parses=lambda _, text: text == "good",
        resample=lambda _, request, attempt: with_seed(
            request, 100 + attempt, model="m", prompt_version="v1"
        ),
        retries=retries,
        batch_size=4,
        label="test",
    )


def test_generate_until_parsed_keeps_the_first_attempt_that_parses(tmp_path):
    """Key 'a' fails twice and parses on its second retry; a third retry is never asked."""
    bad = {1, 101}

    def chat(batch, progress=None):
        return [
            ChatResult("bad" if r.sampling.seed in bad else "good", 1, 1, "stop") for r in batch
        ]

    replies = _until_good(chat, tmp_path, retries=3)
    kept = replies.attempts["a"]
    assert (kept.number, kept.parsed, kept.request.sampling.seed) == (2, True, 102)
    assert replies.counts.retries_requested == 2
    assert len(replies.stats) == 3


def test_a_reply_that_never_parses_keeps_the_last_attempt_and_is_counted(tmp_path):
    asked = []

    def chat(batch, progress=None):
        asked.extend(batch)
        return [ChatResult("bad", 1, 1, "length") for _ in batch]

    replies = _until_good(chat, tmp_path, retries=2)
    kept = replies.attempts["a"]
    assert (kept.number, kept.parsed, kept.request.sampling.seed) == (2, False, 102)
    assert [r.sampling.seed for r in asked] == [1, 101, 102]
    counts = replies.counts
    assert (counts.failed_first_attempt, counts.retries_requested) == (1, 2)
    assert counts.failed_after_retries == 1
