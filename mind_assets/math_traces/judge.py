"""The optional judge model (`MIND_MATH__JUDGE`): asked, through the same `llm` resource as the
traces, whether an answer matches the reference when math-verify cannot decide (an expression it
cannot parse, an option given by its text). Its reply is kept on the trace; a reply that is not
YES or NO leaves the answer undecided."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mind_assets.llm.yes_no import YesNoJudge
from mind_assets.llm.yes_no import parse_yes_no as parse_judgement


@dataclass
class ModelJudge(YesNoJudge):
    """Judges a batch of (problem, reference, answer) items with one resumable engine call."""

    def __call__(self, items: list[dict[str, Any]]) -> list[tuple[bool | None, str]]:
        """(equal or None, the reply) per item; items carry problem_id, sample_index, problem,
        answer_type, reference, answer."""
        if not items:
            return []
        fields = ("problem", "answer_type", "reference", "answer")
        replies = self.ask(
            "math judge",
            [
                ((item["problem_id"], str(item["answer"])), {f: item[f] for f in fields})
                for item in items
            ],
        )
        return [(parse_judgement(reply), reply) for reply in replies]
