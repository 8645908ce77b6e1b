"""The optional paraphrase judge (`MIND_DECONTAMINATION__PARAPHRASE_JUDGE`), as NeMo-Skills'
decontamination stage has one: for a near miss (a row that shares a short n-gram with a
benchmark item but too little to be flagged), the model is asked, through the same `llm`
resource as generation, whether the row holds the item reworded. Requests are resumable and
counted in the step's usage, so the judge's cost shows beside the step's other engine work."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mind_assets.decontamination.index import Match
from mind_assets.lib.prompts import PromptFile
from mind_assets.llm.batch_runner import ChatFn, RequestStore, RunStats, generate_resumable
from mind_assets.llm.requests import EngineIdentity, derive_seed, make_request, sampling_for

_VERDICT = re.compile(r"\b(YES|NO)\b", re.IGNORECASE)
# Characters of a row shown to the judge, around the words it shares with the item.
EXCERPT_CHARS = 3000


def parse_verdict(reply: str) -> bool | None:
    """True for YES, False for NO (the first such word), None for anything else."""
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).upper() == "YES"


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


class ParaphraseJudge:
    """Asks the model about a batch of near misses in one resumable engine call."""

    def __init__(
        self,
        *,
        prompt: PromptFile,
        chat: ChatFn,
        identity: EngineIdentity,
        requests_dir: Path,
        batch_size: int,
        base_seed: int,
        logger: logging.Logger | None = None,
    ) -> None:
        self.prompt, self.chat, self.identity = prompt, chat, identity
        self.requests_dir, self.batch_size, self.base_seed = requests_dir, batch_size, base_seed
        self.logger = logger or logging.getLogger(__name__)
        self.stats: list[RunStats] = []
        self.replies: list[str] = []

    def __call__(self, cases: list[tuple[str, str, Match]]) -> list[bool | None]:
        if not cases:
            return []
        requests = [
            make_request(
                self.identity.model,
                self.prompt.version,
                sampling_for(
                    self.prompt, derive_seed(self.base_seed, "paraphrase-judge", m.item_id), None
                ),
                self.prompt.render(item=item, text=excerpt(text, m.span)),
            )
            for text, item, m in cases
        ]
        results, stats = generate_resumable(
            requests,
            self.chat,
            RequestStore(self.requests_dir),
            batch_size=self.batch_size,
            label="paraphrase judge",
            logger=self.logger,
        )
        self.stats.append(stats)
        replies = [results[r.request_hash].result.text.strip() for r in requests]
        self.replies += replies
        return [parse_verdict(reply) for reply in replies]
