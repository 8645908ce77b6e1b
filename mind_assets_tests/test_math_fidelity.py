"""Nemotron-Math as published, with scripted chat functions (the real engine runs in
test_e2e_math_traces): token budgets up to the context, k by device, answer types and the forms
prompts ask for, proofs never kept, the judge model, majority-vote reference repair, the
difficulty filter over all modes, and bucketed export with a short-to-long schedule."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from mind_assets.blends.export import SCHEDULE_FILE
from mind_assets.blends.manifest import build_manifest, manifest_from_json
from mind_assets.blends.release import ReleaseRequest, write_release
from mind_assets.blends.spec import load_blend_spec
from mind_assets.lib.buckets import length_bucket, schedule
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.quarantine import write_split
from mind_assets.llm.requests import ChatResult, EngineIdentity
from mind_assets.math_traces.difficulty import assess_problems, decide_reference
from mind_assets.math_traces.judge import ModelJudge, parse_judgement
from mind_assets.math_traces.outputs import SOLUTION_TRACES
from mind_assets.math_traces.problems import MathSourceError, normalize_row
from mind_assets.math_traces.traces import (
    K_ON_CPU,
    K_ON_GPU,
    build_traces,
    generate_samples,
    samples_per_problem,
    verify_samples,
)
from mind_assets.math_traces.verify import compare
from mind_assets.settings import PROJECT_DIR, BlendSettings, MathSettings, MathSource, MindSettings
from mind_assets_tests.blend_helpers import WordTokenizer, word_tokens

IDENTITY = EngineIdentity(model="scripted", engine="test", engine_version="0")


def prompt(name: str):
    return load_prompt(PROJECT_DIR / "prompts" / "math" / f"{name}.yaml")


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


class Scripted:
    """Answers each request with reply(request); keeps every request it saw."""

    def __init__(self, reply):
        self.reply, self.seen = reply, []

    def __call__(self, requests, progress=None):
        self.seen.extend(requests)
        return [ChatResult(r.response_prefix + self.reply(r), 10, 5, "stop") for r in requests]


def user_text(request) -> str:
    return next(c for role, c in request.messages if role == "user")


def system_text(request) -> str:
    return next(c for role, c in request.messages if role == "system")


def samples(chat, problems, mode, tmp_path, settings, *, k=2, max_model_len=None, cap=None):
    return generate_samples(
        problems=problems,
        prompt=prompt(mode),
        mode=mode,
        chat=chat,
        identity=IDENTITY,
        requests_dir=tmp_path / "requests" / mode,
        settings=settings,
        k=k,
        max_tokens_cap=cap,
        base_seed=0,
        batch_size=16,
        count_tokens=words,
        max_model_len=max_model_len,
    )


ONE = [{"problem_id": "p", "source": "toy", "question": "What is 6*7?", "answer_type": "numeric"}]


# --- token budgets and k ------------------------------------------------------------------


def test_token_budgets_go_past_the_prompt_file_up_to_what_the_context_leaves(tmp_path):
    answer = Scripted(lambda r: "The answer is \\boxed{42}")
    settings = MathSettings(token_budgets={"high": 30000, "low_no_tir": 50})
    assert prompt("high_no_tir").sampling.max_tokens < 30000
    samples(answer, ONE, "high_no_tir", tmp_path / "a", settings, k=1)
    assert answer.seen[-1].sampling.max_tokens == 30000  # raised past the prompt file's 2,048
    assert "about 22500 words" in user_text(answer.seen[-1])  # the prompt asks for that length

    samples(answer, ONE, "high_no_tir", tmp_path / "b", settings, k=1, max_model_len=8192)
    request = answer.seen[-1]
    prompt_words = len("\n".join(c for _, c in request.messages).split())
    assert request.sampling.max_tokens == 8192 - prompt_words - 32  # what the context leaves

    samples(answer, ONE, "low_no_tir", tmp_path / "c", settings, k=1)
    assert answer.seen[-1].sampling.max_tokens == 50  # a mode's own budget wins over its effort
    samples(answer, ONE, "high_no_tir", tmp_path / "d", settings, k=1, cap=96)
    assert answer.seen[-1].sampling.max_tokens == 96  # MIND_MAX_TOKENS still only lowers

    with pytest.raises(ValueError, match="MIND_MATH__TOKEN_BUDGETS names \\['hihg'\\]"):
        samples(answer, ONE, "high_no_tir", tmp_path / "e", MathSettings(token_budgets={"hihg": 1}))


def test_a_trace_stops_when_the_context_is_full(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = Scripted(lambda r: "step " * 80 + "\n```python\nprint(1)\n```\n")
    settings = MathSettings(sandbox="unsafe-no-isolation", max_tool_calls=4)
    run = samples(code, ONE, "low_tir", tmp_path, settings, k=1, max_model_len=400)
    [state] = run.states
    assert state.finish_reason == "length" and 1 <= len(state.tool_calls) < 4


def test_k_is_the_recipes_8_on_gpu_and_small_on_cpu_unless_set():
    assert (K_ON_GPU, K_ON_CPU) == (8, 4)
    assert samples_per_problem(MathSettings(), on_gpu=True) == 8
    assert samples_per_problem(MathSettings(), on_gpu=False) == 4
    assert samples_per_problem(MathSettings(samples_per_problem=3), on_gpu=True) == 3


# --- answer types ---------------------------------------------------------------------------


def test_sources_carry_answer_types_and_options_and_prompts_ask_for_that_form(tmp_path):
    choice = MathSource(
        name="mc",
        dataset_path="toy",
        answer_format="plain",
        answer_type="multiple_choice",
        choices_field="options",
    )
    row = normalize_row(choice, 0, {"question": "2+2?", "options": ["3", "4"], "answer": 1})
    assert row["question"] == "2+2?\n\nA) 3\nB) 4" and row["reference_answer"] == "B"
    assert row["answer_type"] == "multiple_choice"
    mixed = MathSource(name="m", dataset_path="toy", answer_format="plain", answer_type_field="t")
    assert normalize_row(mixed, 1, {"question": "q", "answer": "True", "t": "yes_no"}) == {
        **normalize_row(mixed, 1, {"question": "q", "answer": "yes", "t": "yesno"}),
    }
    assert (
        normalize_row(mixed, 2, {"question": "q", "answer": "", "t": "numeric"})["reference_answer"]
        is None
    )  # missing: left to repair, flagged
    with pytest.raises(MathSourceError, match="row 3: field 't' is 'essay'"):
        normalize_row(mixed, 3, {"question": "q", "answer": "x", "t": "essay"})

    asks = {}
    for answer_type in ("numeric", "expression", "multiple_choice", "yes_no", "proof"):
        chat = Scripted(lambda r: "ok")
        problem = [{**ONE[0], "answer_type": answer_type}]
        samples(chat, problem, "medium_no_tir", tmp_path / answer_type, MathSettings(), k=1)
        asks[answer_type] = user_text(chat.seen[0]) + system_text(chat.seen[0])
    assert "final number only" in asks["numeric"]
    assert "final number only" not in asks["expression"] and "expression" in asks["expression"]
    assert "letter of the correct option" in asks["multiple_choice"]
    assert "Yes or No" in asks["yes_no"]
    assert "rigorous proof" in asks["proof"] and "boxed" not in asks["proof"]


def test_each_answer_type_is_compared_in_its_own_form():
    assert compare("(b) 4", "B", "multiple_choice") == (True, "choice")
    assert compare("C", "B", "multiple_choice") == (False, "choice")
    assert compare("the fourth one", "B", "multiple_choice") == (None, "undecided")
    assert compare("Yes.", "true", "yes_no") == (True, "yes-no")
    assert compare("(x+1)^2", "x^2+2x+1", "expression") == (True, "math-verify")
    assert compare("every even integer", "all even numbers", "expression")[0] is None
    assert compare("anything", "anything else", "proof") == (None, "proof")


def test_proofs_are_generated_but_never_kept_as_verified(tmp_path):
    proof = [{**ONE[0], "answer_type": "proof", "reference_answer": None}]
    chat = Scripted(lambda r: "By induction ... This completes the proof. \\boxed{QED}")
    samples = generate_samples(
        problems=proof,
        prompt=prompt("high_no_tir"),
        mode="high_no_tir",
        chat=chat,
        identity=IDENTITY,
        requests_dir=tmp_path / "r",
        settings=MathSettings(),
        k=2,
        max_tokens_cap=None,
        base_seed=0,
        batch_size=8,
        count_tokens=words,
    )
    run = build_traces(samples)
    assert run.accepted.num_rows == 0 and run.quarantine.num_rows == 2
    rows = run.quarantine.to_pylist()
    assert all(r["rejected_by"] == ["proof_unverified"] and r["solution"] for r in rows)
    assert {(r["verified_by"], r["reference_status"], r["is_correct"]) for r in rows} == {
        ("proof", "proof", False)
    }


# --- the judge model ------------------------------------------------------------------------


def test_the_judge_decides_what_math_verify_cannot_and_is_recorded_per_trace(tmp_path):
    def reply(request):
        if request.messages[0][1].startswith("You compare final answers"):
            return "YES" if "all even numbers" in user_text(request) else "NO, they differ"
        return "The answer is \\boxed{every even integer}"

    chat = Scripted(reply)
    problems = [
        {**ONE[0], "problem_id": "even", "answer_type": "expression"},
        {**ONE[0], "problem_id": "odd", "answer_type": "expression"},
    ]
    judge = ModelJudge(
        prompt=prompt("judge"),
        chat=chat,
        identity=IDENTITY,
        requests_dir=tmp_path / "judge",
        batch_size=8,
        base_seed=0,
    )
    run = samples(chat, problems, "low_no_tir", tmp_path, MathSettings(), k=1)
    references = {"even": "all even numbers", "odd": "all odd numbers"}
    without = verify_samples(run.states, references)
    assert [v.verified_by for v in without] == ["undecided", "undecided"]
    judged = verify_samples(run.states, references, judge)
    assert [(v.correct, v.verified_by) for v in judged] == [(True, "judge"), (False, "judge")]
    assert [v.judge_reply for v in judged] == ["YES", "NO, they differ"]
    assert parse_judgement("maybe") is None
    asked = [r for r in chat.seen if r.sampling.temperature == 0.0]
    assert len(asked) == 2 and "all odd numbers" in user_text(asked[1])


def test_the_judge_is_off_by_default():
    assert MathSettings().judge is False


# --- reference repair -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "answers", "status", "repaired"),
    [
        (None, ["7", "7", "7", None], "repaired_missing", "7"),
        ("see the solution", ["7", "7", "7", "7"], "repaired_unparseable", "7"),
        ("8", ["7", "7", "7", "8"], "repaired_outvoted", "7"),
        ("8", ["7", "7", "8", "8"], "given", "8"),  # no confident majority: kept
        (None, ["7", "6", "5", None], "missing", None),  # nothing to repair it with: flagged
        ("8", ["7", None, None, None], "given", "8"),  # one vote is never confident
    ],
)
def test_majority_vote_repairs_a_reference_and_flags_it(reference, answers, status, repaired):
    problem = {**ONE[0], "reference_answer": reference}
    decided = decide_reference(problem, answers, MathSettings())
    assert (decided["reference_status"], decided["reference_answer"]) == (status, repaired)
    assert decided["original_reference"] == reference


def test_with_repair_off_a_wrong_reference_is_flagged_but_kept():
    problem = {**ONE[0], "reference_answer": "8"}
    decided = decide_reference(problem, ["7"] * 4, MathSettings(reference_repair=False))
    assert (decided["reference_status"], decided["reference_answer"]) == ("outvoted", "8")


# --- the recipe end to end, on real parquet files, without the engine ------------------------

# Problems of four answer types; `wrong` has a reference the samples' confident majority
# contradicts; `easy` every high-mode sample solves; `hard` one high-mode sample misses.
PROBLEMS = [
    {"problem_id": "easy", "question": "What is 2+2?", "answer_type": "numeric", "ref": "4"},
    {"problem_id": "hard", "question": "What is 6*7?", "answer_type": "numeric", "ref": "42"},
    {"problem_id": "wrong", "question": "What is 3*3?", "answer_type": "numeric", "ref": "6"},
    {
        "problem_id": "choice",
        "question": "Which is prime?\n\nA) 4\nB) 5",
        "answer_type": "multiple_choice",
        "ref": "B",
    },
    {"problem_id": "yesno", "question": "Is 9 odd?", "answer_type": "yes_no", "ref": "yes"},
    {"problem_id": "proof", "question": "Prove 1 = 1.", "answer_type": "proof", "ref": None},
]
ANSWERS = {"easy": "4", "hard": "42", "wrong": "9", "choice": "(B)", "yesno": "Yes"}


MISSED = {"hard": "41", "wrong": "8", "yesno": "No"}  # what an odd-seeded high_tir sample says


def recipe_reply(request) -> str:
    """High modes write long traces, low modes short ones; high_tir samples with an odd seed
    miss `hard`, `wrong` and `yesno`, so those are not too easy."""
    text = user_text(request)
    problem = next(p for p in PROBLEMS if p["question"] in text)
    thorough = "Reason thoroughly" in text
    answer = ANSWERS.get(problem["problem_id"], "")
    if thorough and "python" in text and request.sampling.seed % 2:
        answer = MISSED.get(problem["problem_id"], answer)
    body = ("Let us check every step carefully. " * 30) if thorough else "Quick. "
    if problem["answer_type"] == "proof":
        return body + "This completes the proof."
    return body + f"The answer is \\boxed{{{answer}}}"


def test_recipe_answer_types_repair_difficulty_over_all_modes_and_bucketed_export(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # TIR prompts, no code written
    settings = MindSettings(data_dir=tmp_path / "data", length_buckets=[64, 256])
    math = settings.math.model_copy(
        update={"sandbox": "unsafe-no-isolation", "repair_min_share": 0.6}
    )
    problems = [
        {
            "problem_id": p["problem_id"],
            "source": "toy",
            "question": p["question"],
            "reference_answer": p["ref"],
            "answer_type": p["answer_type"],
        }
        for p in PROBLEMS
    ]
    chat = Scripted(recipe_reply)
    common = dict(chat=chat, identity=IDENTITY, base_seed=0, batch_size=64, count_tokens=words)

    def requests(mode):
        return tmp_path / "requests" / mode

    # problem_difficulty: both high modes, k = 4, decided together.
    high = [
        generate_samples(
            problems=problems,
            prompt=prompt(mode),
            mode=mode,
            requests_dir=requests(mode),
            settings=math,
            k=4,
            max_tokens_cap=None,
            **common,
        )
        for mode in math.difficulty_modes
    ]
    difficulty = assess_problems(
        problems, [s.states for s in high], math, lambda st, refs: verify_samples(st, refs)
    )
    verdicts = {r["problem_id"]: r for r in difficulty.to_pylist()}
    assert verdicts["wrong"]["reference_status"] == "repaired_outvoted"
    assert verdicts["wrong"]["reference_answer"] == "9" and verdicts["wrong"]["original_reference"]
    assert verdicts["easy"]["too_easy"] and verdicts["choice"]["too_easy"]
    assert not verdicts["hard"]["too_easy"] and not verdicts["yesno"]["too_easy"]
    assert verdicts["hard"]["difficulty_samples"] == 8  # both high modes, k each
    assert verdicts["proof"]["reference_status"] == "proof" and not verdicts["proof"]["too_easy"]

    # Every mode's traces: the high modes reuse problem_difficulty's generations.
    before = len(chat.seen)
    kept, quarantined = {}, {}
    for mode in ("high_tir", "high_no_tir", "low_no_tir"):
        samples = generate_samples(
            problems=problems,
            prompt=prompt(mode),
            mode=mode,
            requests_dir=requests(mode),
            settings=math,
            k=4,
            max_tokens_cap=None,
            **common,
        )
        run = build_traces(
            samples, problem_verdicts=verdicts, length_buckets=tuple(settings.length_buckets)
        )
        write_split(
            SOLUTION_TRACES,
            settings.data_dir,
            {"source": "toy", "mode": mode},
            run.accepted,
            run.quarantine,
        )
        kept[mode] = run.accepted.to_pylist()
        quarantined[mode] = run.quarantine.to_pylist()
    new_requests = len(chat.seen) - before
    assert new_requests == len(problems) * 4  # only low_no_tir was generated anew

    reasons = {
        (r["problem_id"], r["mode"], r["rejected_by"][0])
        for rows in quarantined.values()
        for r in rows
    }
    # The difficulty filter applies to every mode, low included, though low was not asked.
    for mode in kept:
        assert ("easy", mode, "too_easy") in reasons and ("choice", mode, "too_easy") in reasons
        assert ("proof", mode, "proof_unverified") in reasons
    assert {r["problem_id"] for r in kept["low_no_tir"]} == {"hard", "wrong", "yesno"}
    repaired = [r for rows in kept.values() for r in rows if r["problem_id"] == "wrong"]
    assert repaired and all(
        r["reference_answer"] == "9"
        and r["original_reference"] == "6"
        and r["reference_status"] == "repaired_outvoted"
        for r in repaired
    )
    yes_no = [r for rows in kept.values() for r in rows if r["answer_type"] == "yes_no"]
    assert all(r["verified_by"] == "yes-no" for r in yes_no)
    buckets = {r["mode"]: r["length_bucket"] for rows in kept.values() for r in rows}
    assert buckets["low_no_tir"] == "<=64" and buckets["high_no_tir"] == "<=256"

    # A blend of every mode's kept traces, exported bucketed: one set of bounds, per-bucket
    # shards, and a short-to-long schedule in the manifest and the export.
    spec_path = tmp_path / "math.yaml"
    spec_path.write_text(
        json.dumps(
            {
                "name": "math",
                "total_tokens": sum(words([r["text"] for rs in kept.values() for r in rs])),
                "phases": [
                    {
                        "name": "reasoning",
                        "fraction": 1.0,
                        "sources": [
                            {
                                "name": "traces",
                                "asset": "solution_traces",
                                "selection": {"modes": list(kept)},
                                "quality_tier": "high",
                                "share": 1.0,
                                "max_epochs": 1,
                            }
                        ],
                    }
                ],
            }
        )
    )
    manifest = build_manifest(
        load_blend_spec(spec_path),
        spec_path,
        settings.data_dir,
        known={"source": ["toy"]},
        tokens=word_tokens(settings.data_dir),
        lookup=lambda asset, partition: {"run_id": None, "data_version": None},
        length_buckets=settings.length_buckets,
    )
    assert manifest.schedule == schedule([64, 256])
    assert [b["bucket"] for b in manifest.schedule] == ["<=64", "<=256", ">256"]
    manifest = manifest_from_json(json.loads(json.dumps(manifest.to_json())))  # as stored
    out = tmp_path / "export"
    report = write_release(
        ReleaseRequest(
            manifest,
            out,
            settings.data_dir,
            ["parquet"],
            BlendSettings(export_shard_rows=5),  # bucketing comes from the manifest
            (),
            WordTokenizer(),
        )
    ).parquet
    phase = out / "reasoning"
    shards = sorted(p.name for p in phase.glob("shard-*.parquet"))
    assert shards and all(re.fullmatch(r"shard-b0[0-2]-\d{5}\.parquet", n) for n in shards)
    written = json.loads((out / SCHEDULE_FILE).read_text())
    assert written["order"] == "short_to_long" and written["bounds"] == [64, 256]
    stages = written["phases"]["reasoning"]
    assert [s["bucket"] for s in stages] == ["<=64", "<=256", ">256"]
    assert stages == report.schedule["reasoning"]
    total = sum(len(rows) for rows in kept.values())
    assert sum(s["rows"] for s in stages) == total == report.rows["reasoning"]
    assert stages[0]["rows"] > 0 and stages[1]["rows"] > 0  # short and long traces both
    # Each shard holds one bucket; the files' own order is the schedule, short to long.
    for stage in stages:
        for name in stage["shards"]:
            table = pq.read_table(phase / name)
            assert set(table.column("length_bucket").to_pylist()) == {stage["bucket"]}
            assert len(table) <= 5
            assert all(
                length_bucket(n, [64, 256]) == stage["bucket"]
                for n in table["n_tokens"].to_pylist()
            )
    assert [n for s in stages for n in s["shards"]] == shards
