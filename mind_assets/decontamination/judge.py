"""The optional paraphrase judge (`MIND_DECONTAMINATION__PARAPHRASE_JUDGE`), as NeMo-Skills'
decontamination stage has one: for a near miss (a row that shares a short n-gram with a
benchmark item but too little to be flagged), the model is asked, through the same `llm`
resource as generation, whether the row holds the item reworded. Requests are resumable and
counted in the step's usage, so the judge's cost shows beside the step's other engine work."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mind_assets.decontamination.index import Match
from mind_assets.llm.yes_no import YesNoJudge
from mind_assets.llm.yes_no import parse_yes_no as parse_verdict

# Characters of a row shown to the judge, around the words it shares with the item.
EXCERPT_CHARS = 3000


def excerpt(text: str, span: str, chars: int = EXCERPT_CHARS) -> str:
    """At most `chars` characters of `text`, around where the first words of `span` (normal
    form) occur in it, else its start."""
    if len(text) <= chars:
        return text
    first = span.split()[:3]
    pattern = r"\W+".join(re.escape(w) for w in first)
    found = re.search(pattern, text, re.IGNORECASE) if first else None
    start = max(0, (found.start() if found else 0) - chars // 3)
    return text[start : start + chars]


@dataclass
class ParaphraseJudge(YesNoJudge):
    """Asks the model about a batch of near misses in one resumable engine call."""

    replies: list[str] = field(default_factory=list)

    def __call__(self, cases: list[tuple[str, str, Match]]) -> list[bool | None]:
        if not cases:
            return []
        replies = self.ask(
            "paraphrase judge",
            [
                ((m.item_id,), {"item": item, "text": excerpt(text, m.span)})
                for text, item, m in cases
            ],
        )
        self.replies += replies
        return [parse_verdict(reply) for reply in replies]
