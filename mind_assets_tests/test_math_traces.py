"""The trace stage with a scripted chat function (the real engine runs in test_e2e_math_traces):
tool rounds, caps, verification fields, pass rate and maj@k, resume, problem normalisation."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mind_assets.blends.manifest import source_lineage
from mind_assets.lib.buckets import length_bucket
from mind_assets.lib.prompts import load_prompt
from mind_assets.llm.requests import ChatResult, EngineIdentity
from mind_assets.math_traces.problems import (
    EvalIndex,
    MathSourceError,
    build_problem_set,
    normalize_row,
    strip_calculator_annotations,
)
from mind_assets.math_traces.sandbox import IsolationUnavailable
from mind_assets.math_traces.sources import MODES, MathSource
from mind_assets.math_traces.traces import (
    build_traces,
    generate_samples,
    split_at_first_code_block,
    summarize,
)
from mind_assets.settings import PROJECT_DIR, MathSettings

IDENTITY = EngineIdentity(model="scripted", engine="test", engine_version="0")
PROBLEMS = [
    {"problem_id": "p1", "source": "toy", "question": "What is 6*7?", "reference_answer": "42"},
    {"problem_id": "p2", "source": "toy", "question": "What is 2+2?", "reference_answer": "4"},
]


def prompt(mode: str):
    return load_prompt(PROJECT_DIR / "prompts" / "math" / f"{mode}.yaml")


class Scripted:
    """Replies by what the trace so far holds; counts the requests it answered."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = 0

    def __call__(self, requests, progress=None):
        self.calls += len(requests)
        results = []
        for r in requests:
            text = r.response_prefix + self.reply(r)
            results.append(ChatResult(text, 10, 5, "stop"))
        return results


def question_of(request) -> str:
    return next(c for role, c in request.messages if role == "user")


def tool_then_answer(request) -> str:
    prefix = request.response_prefix
    if "```output" not in prefix:
        expression = "6*7" if "6*7" in question_of(request) else "2+3"
        return f"Compute it.\n```python\nprint({expression})\n```\nignored tail"
    value = prefix.rsplit("```output\n", 1)[1].split("\n")[0]
    return f"\nSo the result is {value}. The answer is \\boxed{{{value}}}"


def run(tmp_path, chat, mode="medium_tir", max_tokens_cap=None, **overrides):
    settings = MathSettings(samples_per_problem=2, sandbox_wall_seconds=5, **overrides)
    samples = generate_samples(
        problems=PROBLEMS,
        prompt=prompt(mode),
        mode=mode,
        chat=chat,
        identity=IDENTITY,
        requests_dir=tmp_path / "requests",
        settings=settings,
        k=settings.samples_per_problem,
        max_tokens_cap=max_tokens_cap,
        base_seed=0,
        batch_size=8,
        count_tokens=lambda texts: [len(t.split()) for t in texts],
    )
    return build_traces(samples)


def test_tool_round_runs_the_code_and_the_model_continues_from_its_output(tmp_path):
    chat = Scripted(tool_then_answer)
    result = run(tmp_path, chat)
    rows = result.accepted.to_pylist() + result.quarantine.to_pylist()
    assert len(rows) == 4 and chat.calls == 8  # two rounds for each of 4 traces
    by_problem = {r["problem_id"]: r for r in rows}
    good, bad = by_problem["p1"], by_problem["p2"]
    assert good["is_correct"] and good["extracted_answer"] == "42"
    assert good["tool_calls"][0]["outcome"] == "ok" and good["tool_calls"][0]["output"] == "42\n"
    assert "```output\n42\n```" in good["solution"] and "ignored tail" not in good["solution"]
    assert not bad["is_correct"] and bad["extracted_answer"] == "5"
    assert result.quarantine.column("rejected_by").to_pylist() == [["incorrect"]] * 2
    assert good["pass_rate"] == 1.0 and good["majority_correct"]
    assert bad["pass_rate"] == 0.0 and not bad["majority_correct"]
    assert result.tool_outcomes == {"ok": 4}
    assert summarize(result.per_problem) == {
        "problems": 2,
        "mean_pass_rate": 0.5,
        "maj_at_k": 0.5,
        "pass_at_k": 0.5,
        "solved_by_all": 1,
    }
    for row in rows:
        assert row["model"] == "scripted" and row["prompt_id"] == "math/medium_tir"
        assert json.loads(row["sampling_params"])["seed"] == row["seed"]
        assert row["length_bucket"] == "<=4k" and row["rounds"] == 2
        assert row["isolation"] == "bubblewrap"


def test_a_rerun_reuses_every_round(tmp_path):
    run(tmp_path, Scripted(tool_then_answer))
    again = Scripted(tool_then_answer)
    run(tmp_path, again)
    assert again.calls == 0


def test_tool_calls_stop_at_the_cap(tmp_path):
    def always_code(request):
        return "```python\nprint(1)\n```\n"

    result = run(tmp_path, Scripted(always_code), max_tool_calls=2)
    rows = result.quarantine.to_pylist()
    assert all(len(r["tool_calls"]) == 2 and r["rounds"] == 3 for r in rows)
    assert {tuple(r["rejected_by"]) for r in rows} == {("no_answer",)}


def test_without_tools_code_is_not_run(tmp_path):
    result = run(tmp_path, Scripted(tool_then_answer), mode="low_no_tir")
    rows = result.quarantine.to_pylist() + result.accepted.to_pylist()
    assert all(r["tool_calls"] == [] and not r["tool_use"] for r in rows)
    assert all(r["isolation"] == "none-needed" for r in rows)


def test_without_bwrap_tir_refuses_before_any_generation_and_no_tir_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no bwrap to be found
    chat = Scripted(tool_then_answer)
    with pytest.raises(IsolationUnavailable) as refused:
        run(tmp_path, chat, mode="medium_tir")
    assert chat.calls == 0
    message = str(refused.value)
    assert "bwrap" in message and "apt-get install bubblewrap" in message
    assert "MIND_MATH__SANDBOX=unsafe-no-isolation" in message
    result = run(tmp_path, Scripted(tool_then_answer), mode="medium_no_tir")
    assert result.accepted.num_rows + result.quarantine.num_rows == 4


def test_the_unsafe_opt_out_warns_and_is_recorded_on_every_row(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # the opt-out does not need bwrap
    caplog.set_level("WARNING")
    result = run(tmp_path, Scripted(tool_then_answer), sandbox="unsafe-no-isolation")
    rows = result.accepted.to_pylist() + result.quarantine.to_pylist()
    assert len(rows) == 4 and all(r["isolation"] == "unsafe-no-isolation" for r in rows)
    assert result.tool_outcomes == {"ok": 4}
    assert "WITHOUT kernel isolation" in caplog.text


def test_a_blend_manifest_lineage_shows_how_tool_calls_were_contained(tmp_path):
    jailed = run(tmp_path / "a", Scripted(tool_then_answer)).quarantine
    unjailed = run(
        tmp_path / "b", Scripted(tool_then_answer), sandbox="unsafe-no-isolation"
    ).quarantine
    paths = [tmp_path / "jailed.parquet", tmp_path / "unjailed.parquet"]
    for table, path in zip((jailed, unjailed), paths, strict=True):
        pq.write_table(table, path)
    lineage = source_lineage(paths)
    assert sorted(entry["isolation"] for entry in lineage) == [
        "bubblewrap",
        "unsafe-no-isolation",
    ]


def test_sandbox_refusals_are_recorded_on_the_trace(tmp_path):
    def hostile(request):
        if "```output" in request.response_prefix:
            return "The answer is \\boxed{0}"
        return "```python\nimport os\nos.system('true')\n```"

    rows = run(tmp_path, Scripted(hostile)).quarantine.to_pylist()
    call = rows[0]["tool_calls"][0]
    assert call["outcome"] == "refused" and call["refused"] == ["os.system"]


def test_split_at_first_code_block():
    reply = "a\n```python\nx=1\n```\nb\n```python\ny\n```"
    cut, code = split_at_first_code_block(reply)
    assert cut == "a\n```python\nx=1\n```" and code == "x=1\n"
    assert split_at_first_code_block("\\boxed{3}\n```python\nx\n```") == (
        "\\boxed{3}\n```python\nx\n```",
        None,
    )
    assert split_at_first_code_block("```python\nunterminated") == ("```python\nunterminated", None)


def test_length_buckets():
    buckets = (4096, 8192, 16384)
    assert [length_bucket(n, buckets) for n in (10, 4096, 5000, 20000)] == [
        "<=4k",
        "<=4k",
        "<=8k",
        ">16k",
    ]


def test_six_mode_prompts_exist_with_effort_and_tool_use():
    for mode in MODES:
        p = prompt(mode)
        assert p.effort == mode.split("_")[0] and p.tool_use == (not mode.endswith("no_tir"))
        assert ("```python" in p.template) == p.tool_use
    budgets = [prompt(f"{e}_no_tir").sampling.max_tokens for e in ("high", "medium", "low")]
    assert budgets == sorted(budgets, reverse=True)


def test_gsm8k_rows_are_normalised_and_bad_rows_named():
    source = MathSource(name="toy", dataset_path="toy")
    row = normalize_row(
        source,
        3,
        {"question": "Tom has 2*3 apples.", "answer": "He has 2*3=<<2*3=6>>6.\n#### 6"},
    )
    assert row["reference_answer"] == "6" and row["reference_solution"] == "He has 2*3=6."
    assert strip_calculator_annotations("a <<1+1=2>>2") == "a 2"
    with pytest.raises(MathSourceError, match=r"toy:train row 4: field 'answer'"):
        normalize_row(source, 4, {"question": "q", "answer": "no hashes"})
    with pytest.raises(MathSourceError, match=r"row 5: field 'question'"):
        normalize_row(source, 5, {"question": " ", "answer": "#### 1"})


def test_eval_splits_are_refused_as_problem_sources():
    with pytest.raises(ValueError, match="evaluation split"):
        MathSource(name="x", dataset_path="openai/gsm8k", split="test")


def test_real_gsm8k_train_is_decontaminated_against_its_test_split(mirror):
    source = MathSource(name="gsm8k", dataset_path="openai/gsm8k", dataset_name="main")
    test_rows = [json.loads(line) for line in (mirror / "openai/gsm8k/main/test.jsonl").open()]
    planted = test_rows[0]["question"]
    # A training split with a test question planted in it: that row must be removed.
    train = mirror / "planted" / "default"
    train.mkdir(parents=True)
    real = [json.loads(line) for line in (mirror / "openai/gsm8k/main/train.jsonl").open()][:30]
    rows = [*real[:10], {"question": planted, "answer": test_rows[0]["answer"]}, *real[10:]]
    (train / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (train / "test.jsonl").symlink_to(mirror / "openai/gsm8k/main/test.jsonl")
    planted_source = MathSource(name="gsm8k", dataset_path="planted")
    result = build_problem_set(planted_source, mirror, decontamination_ngram=13)
    removed = [c["row_index"] for c in result.contaminated]
    # Row 10 is the planted one; row 21 is real: GSM8K train has a stamps problem whose template
    # ("...post office. Some of the stamps had a snowflake design...") reappears in test.
    assert removed == [10, 21]
    assert result.problems.num_rows == 31 - len(removed)
    assert planted not in result.problems.column("question").to_pylist()
    assert all("<<" not in q for q in result.problems.column("question").to_pylist())
    limited = build_problem_set(source, mirror, decontamination_ngram=13, limit=20)
    assert limited.problems.num_rows == 20


def test_eval_index_matches_13_gram_overlap_and_whole_short_questions():
    index = EvalIndex(
        ["one two three four five six seven eight nine ten eleven twelve thirteen"], n=13
    )
    assert index.contaminated(
        "Zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    )
    assert not index.contaminated("one two three four five six seven")
    assert EvalIndex(["What is 2+2?"], n=13).contaminated("what is 2 + 2")


def test_native_effort_control_goes_to_models_that_have_it(tmp_path):
    seen = []

    def capture(request):
        seen.append(request)
        return "The answer is \\boxed{42}"

    generate_samples(
        problems=PROBLEMS[:1],
        prompt=prompt("high_no_tir"),
        mode="high_no_tir",
        chat=Scripted(capture),
        identity=EngineIdentity(model="openai/gpt-oss-20b", engine="vllm", engine_version="0"),
        requests_dir=tmp_path / "r",
        settings=MathSettings(samples_per_problem=1),
        k=1,
        max_tokens_cap=None,
        base_seed=0,
        batch_size=8,
        count_tokens=lambda texts: [1 for _ in texts],
    )
    assert seen[0].template_kwargs == (("reasoning_effort", "high"),)
    seen.clear()
    run(tmp_path, Scripted(capture), mode="low_no_tir")
    assert all(r.template_kwargs == () for r in seen)
