"""`mind demo` judges its own product from its summary (make demo runs the demo itself)."""

import pytest

import mind_assets.demo as demo
from mind_assets.cli import main as mind_cli
from mind_assets.demo import DemoSummary, format_summary


def _summary(blend_tokens: dict[str, float]) -> DemoSummary:
    return DemoSummary(
        shard="demo",
        conversations={"debate": 8},
        accepted={"debate": 0},
        failed_checks=["debate: not_empty"],
        blend_tokens=blend_tokens,
        filter_profile="paper",
    )


@pytest.mark.parametrize(
    ("blend_tokens", "code"),
    [
        ({"raw_documents": 900.0, "filtered_conversations": 0.0, "task_qa": 0.0}, 1),
        ({"raw_documents": 600.0, "filtered_conversations": 300.0, "task_qa": 0.0}, 0),
    ],
)
def test_the_demo_fails_when_its_blend_holds_no_generated_text(
    blend_tokens, code, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(demo, "run_demo", lambda styles, passages: _summary(blend_tokens))
    assert mind_cli(["demo"]) == code
    captured = capsys.readouterr()
    assert "failed asset checks: debate: not_empty" in captured.out
    assert "filter profile: paper" in captured.out
    assert ("the demo's blend holds no generated text" in captured.err) == bool(code)


def test_the_summary_names_task_qa_rejections_and_blend_tokens_per_source():
    summary = _summary({"raw_documents": 600.0, "filtered_conversations": 300.0})
    summary.task_qa = (0, 8)
    summary.task_qa_rejections.update({"math_mismatch": 8, "copy_of_seed": 4})
    text = format_summary(summary)
    assert "task_qa/gsm8k: 0 rows kept, 8 quarantined (math_mismatch 8, copy_of_seed 4)" in text
    assert "blend tokens by source: raw_documents 600, filtered_conversations 300" in text
