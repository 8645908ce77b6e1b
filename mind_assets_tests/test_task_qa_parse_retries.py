"""Re-sampling task Q&A replies that do not parse, with a scripted chat function (the real
engine runs in test_e2e_task_qa): which attempt an item keeps, its lineage, the counts, the
tokens, and resuming from the request store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from mind_assets.llm.requests import (
    ChatRequest,
    ChatResult,
    EngineIdentity,
    derive_seed,
)
from mind_assets.settings import PROJECT_DIR, TaskQASettings
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.schema import SEED_SCHEMA
from mind_assets.task_qa.stage import (
    FamilyGeneration,
    TaskQAPrompts,
    TaskQAResult,
    parse_retry_metadata,
    run_task_qa,
)

FAMILY = "gsm8k"
BASE_SEED = 7
IDENTITY = EngineIdentity(model="scripted", engine="test", engine_version="0")
ENTRY = CatalogEntry(
    task=FAMILY,
    family=FAMILY,
    eligible=True,
    reason="",
    output_type="generate_until",
    dataset_path="openai/gsm8k",
    dataset_name="main",
    training_split="train",
    validation_split=None,
    test_split="test",
    yaml_path=None,
    answer_check="math",
)
WORDS = (
    "apples pears crates trucks farmers bakers loaves rivers boats nails boards shelves "
    "marbles jars coins wallets tickets buses seats pencils boxes cartons eggs hens"
).split()
# What the 135M model writes when it loops under the schema: a string that never closes.
LOOPING_REPLY = '{"question": "' + "and then " * 60


def item_seed(index: int) -> int:
    return derive_seed(BASE_SEED, FAMILY, "item", str(index))


def retry_seed(index: int, attempt: int) -> int:
    return derive_seed(BASE_SEED, FAMILY, "retry", str(index), str(attempt))


def enrich_seed(index: int) -> int:
    return derive_seed(BASE_SEED, FAMILY, "enrich", str(index))


def enrich_retry_seed(index: int, attempt: int) -> int:
    return derive_seed(BASE_SEED, FAMILY, "enrich-retry", str(index), str(attempt))


class ScriptedChat:
    """Answers every request with valid JSON unless its seed is listed as failing; records what
    it was asked. Each seed gets its own problem, so items are not duplicates of each other."""

    def __init__(self, failing_seeds: set[int] = frozenset(), crash_on: set[int] = frozenset()):
        self.failing_seeds = set(failing_seeds)
        self.crash_on = set(crash_on)
        self.asked: list[ChatRequest] = []
        self.replies: list[ChatResult] = []

    def __call__(self, batch, progress=None):
        if any(r.sampling.seed in self.crash_on for r in batch):
            raise RuntimeError("engine crashed")
        results = [self.reply(r) for r in batch]
        self.asked += batch
        self.replies += results
        return results

    def reply(self, request: ChatRequest) -> ChatResult:
        seed = request.sampling.seed
        if seed in self.failing_seeds:
            return ChatResult(LOOPING_REPLY, 100, request.sampling.max_tokens, "length")
        if '"answer_explanation"' in request.json_schema:
            text = json.dumps(
                {
                    "reasoning": "Adding the two amounts together gives the total asked for.",
                    "wrong_options": [],
                }
            )
        else:
            rng = random.Random(seed)
            a, b = rng.randint(2, 40), rng.randint(2, 40)
            thing, other = rng.sample(WORDS, 2)
            text = json.dumps(
                {
                    "question": f"A shop stocks {a} {thing} of {' '.join(rng.sample(WORDS, 6))} "
                    f"and gets {b} more {other}. How many does it have now?",
                    "solution": f"It starts with {a} and gets {b} more, so {a} + {b} = {a + b}.",
                    "final_answer": str(a + b),
                }
            )
        return ChatResult(text, 100, 40, "stop")

    def seeds_asked(self) -> list[int]:
        return [r.sampling.seed for r in self.asked]


def seeds() -> pa.Table:
    rows = [
        {
            "task": FAMILY,
            "family": FAMILY,
            "seed_id": f"s{i}",
            "context": None,
            "question": f"Seed problem {i}: Ann has {i + 2} cups and buys {i + 3} more?",
            "choices": None,
            "answer": str(2 * i + 5),
            "rationale": f"{i + 2} + {i + 3} = {2 * i + 5}",
            "output_type": "generation",
            "source_split": "train",
        }
        for i in range(4)
    ]
    return pa.Table.from_pylist(rows, schema=SEED_SCHEMA)


def run(chat: ScriptedChat, requests_dir: Path, *, parse_retries: int = 2) -> TaskQAResult:
    generation = FamilyGeneration(
        entry=ENTRY,
        prompts=TaskQAPrompts.load(
            PROJECT_DIR / "prompts", output_type="generate_until", structured=True
        ),
        chat=chat,
        identity=IDENTITY,
        requests_dir=requests_dir,
        settings=TaskQASettings(items=3, shots=2, parse_retries=parse_retries),
        base_seed=BASE_SEED,
        batch_size=8,
    )
    return run_task_qa(generation, seeds())


def rows_of_item(
    result: TaskQAResult, chat: ScriptedChat, index: int
) -> tuple[list[dict], list[dict]]:
    """(accepted rows, quarantined rows) of item `index`. An item keeps the id of its first
    request whichever attempt it keeps."""
    first = next(r for r in chat.asked if r.sampling.seed == item_seed(index))
    item_id = first.request_hash[:24]
    return (
        [r for r in result.accepted.to_pylist() if r["item_id"] == item_id],
        [r for r in result.quarantine.to_pylist() if r["item_id"] == item_id],
    )


def unparsed_rows(result: TaskQAResult, chat: ScriptedChat, index: int) -> list[dict]:
    """Both forms of item `index`, quarantined as `parse_failure` and nothing kept."""
    accepted, rejected = rows_of_item(result, chat, index)
    assert accepted == []
    assert len(rejected) == 2
    for row in rejected:
        assert row["rejected_by"][0].startswith("parse_failure")
    return rejected


def all_seeds_of(index: int) -> set[int]:
    return {item_seed(index), retry_seed(index, 1), retry_seed(index, 2)}


def test_a_reply_that_fails_then_parses_on_retry_is_kept_with_the_retrys_lineage(tmp_path):
    chat = ScriptedChat(failing_seeds={item_seed(1)})
    result = run(chat, tmp_path / "requests")

    accepted, rejected = rows_of_item(result, chat, 1)
    assert rejected == []
    assert {r["form"] for r in accepted} == {"multiple_choice", "open_ended"}
    (retry,) = [r for r in chat.asked if r.sampling.seed == retry_seed(1, 1)]
    for row in accepted:
        assert row["seed"] == retry_seed(1, 1)
        assert json.loads(row["sampling_params"])["seed"] == retry_seed(1, 1)
        assert row["request_hash"] == retry.request_hash
        assert row["finish_reason"] == "stop"
        assert json.loads(row["raw_output"])["final_answer"] == row["answer"]
    # Only the reply that failed was asked again, once.
    assert sorted(chat.seeds_asked()).count(retry_seed(1, 1)) == 1
    assert retry_seed(0, 1) not in chat.seeds_asked()
    counts = result.generation_retries
    assert (counts.failed_first_attempt, counts.retries_requested) == (1, 1)
    assert counts.failed_after_retries == 0


def test_a_retry_is_the_same_request_under_a_fresh_seed(tmp_path):
    chat = ScriptedChat(failing_seeds={item_seed(1)})
    run(chat, tmp_path / "requests")
    first = next(r for r in chat.asked if r.sampling.seed == item_seed(1))
    retry = next(r for r in chat.asked if r.sampling.seed == retry_seed(1, 1))
    assert retry.messages == first.messages
    assert retry.json_schema == first.json_schema != ""
    assert retry.sampling == first.sampling.model_copy(update={"seed": retry_seed(1, 1)})


def test_with_parse_retries_off_a_failed_reply_is_quarantined_as_before(tmp_path):
    chat = ScriptedChat(failing_seeds={item_seed(1)})
    result = run(chat, tmp_path / "requests", parse_retries=0)

    for row in unparsed_rows(result, chat, 1):
        assert row["seed"] == item_seed(1)
        assert row["finish_reason"] == "length"
    assert len(chat.asked) == 3 + 2  # three items, two enrichments
    counts = result.generation_retries
    assert (counts.failed_first_attempt, counts.retries_requested) == (1, 0)
    assert counts.failed_after_retries == 1


def test_an_item_failing_every_attempt_is_quarantined_and_its_attempts_counted(tmp_path):
    chat = ScriptedChat(failing_seeds=all_seeds_of(1))
    result = run(chat, tmp_path / "requests", parse_retries=2)

    for row in unparsed_rows(result, chat, 1):
        # The last attempt is the one kept, and the row traces to it.
        assert row["seed"] == retry_seed(1, 2)
    counts = result.generation_retries
    assert (counts.failed_first_attempt, counts.retries_requested) == (1, 2)
    assert counts.failed_after_retries == 1
    assert parse_retry_metadata(result) == {
        "parse_failures_first_attempt": 1,
        "parse_retries_requested": 2,
        "parse_failures_after_retries": 1,
        "enrich_parse_failures_first_attempt": 0,
        "enrich_parse_retries_requested": 0,
        "enrich_parse_failures_after_retries": 0,
    }


def test_retried_tokens_are_counted_as_spent(tmp_path):
    chat = ScriptedChat(failing_seeds=all_seeds_of(1))
    result = run(chat, tmp_path / "requests")
    assert len(chat.asked) == 3 + 2 + 2  # items, retries of item 1, enrichments of 0 and 2
    assert sum(s.generated for s in result.stats) == len(chat.asked)
    assert sum(s.output_tokens for s in result.stats) == sum(
        r.completion_tokens for r in chat.replies
    )


def test_an_enrichment_that_fails_to_parse_is_resampled(tmp_path):
    chat = ScriptedChat(failing_seeds={enrich_seed(0)})
    result = run(chat, tmp_path / "requests")

    accepted, rejected = rows_of_item(result, chat, 0)
    assert rejected == []
    (mc,) = [r for r in accepted if r["form"] == "multiple_choice"]
    assert mc["reasoning"].startswith("Adding the two amounts")
    assert enrich_retry_seed(0, 1) in chat.seeds_asked()
    counts = result.enrichment_retries
    assert (counts.failed_first_attempt, counts.retries_requested) == (1, 1)
    assert counts.failed_after_retries == 0


def test_without_retries_a_failed_enrichment_leaves_the_item_missing_reasoning(tmp_path):
    chat = ScriptedChat(failing_seeds={enrich_seed(0)})
    result = run(chat, tmp_path / "requests", parse_retries=0)

    _, rejected = rows_of_item(result, chat, 0)
    (mc,) = [r for r in rejected if r["form"] == "multiple_choice"]
    assert "missing_reasoning" in mc["rejected_by"]
    assert result.enrichment_retries.failed_after_retries == 1


def test_a_rerun_against_the_same_request_store_generates_nothing(tmp_path):
    failing = {item_seed(1), retry_seed(1, 1), enrich_seed(2)}
    first = run(ScriptedChat(failing_seeds=failing), tmp_path / "requests")
    again = ScriptedChat(failing_seeds=failing)
    rerun = run(again, tmp_path / "requests")

    assert again.asked == []
    assert sum(s.generated for s in rerun.stats) == 0
    assert rerun.accepted.drop(["created_at"]) == first.accepted.drop(["created_at"])
    assert rerun.generation_retries == first.generation_retries
    assert rerun.enrichment_retries == first.enrichment_retries


def test_a_run_interrupted_during_a_retry_round_resumes_without_regenerating(tmp_path):
    failing = {item_seed(1)}
    with pytest.raises(RuntimeError):
        run(ScriptedChat(failing_seeds=failing, crash_on={retry_seed(1, 1)}), tmp_path / "r")
    resumed = ScriptedChat(failing_seeds=failing)
    result = run(resumed, tmp_path / "r")

    # The first round was stored before the crash: only the retry and the enrichments are new.
    assert sorted(resumed.seeds_asked()) == sorted(
        [retry_seed(1, 1), enrich_seed(0), enrich_seed(1), enrich_seed(2)]
    )
    assert result.generation_retries.failed_after_retries == 0


def test_retry_seeds_are_deterministic_and_differ_by_item_and_attempt(tmp_path):
    failing = all_seeds_of(0) | all_seeds_of(1)
    one, two = ScriptedChat(failing_seeds=failing), ScriptedChat(failing_seeds=failing)
    run(one, tmp_path / "a")
    run(two, tmp_path / "b")
    assert [r.request_hash for r in one.asked] == [r.request_hash for r in two.asked]
    retried = [retry_seed(i, n) for i in (0, 1) for n in (1, 2)]
    assert len(set(retried)) == 4
    assert set(retried) <= set(one.seeds_asked())
