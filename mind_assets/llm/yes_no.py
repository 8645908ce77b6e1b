"""A model asked YES-or-NO questions in one resumable engine call: the shape every judge in the
platform has (math answers that math-verify cannot decide, benchmark paraphrases). Requests are
stored like generation's, so a killed step resumes, and their usage is kept for the step's
metadata."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mind_assets.lib.prompts import PromptFile
from mind_assets.llm.batch_runner import ChatFn, RequestStore, RunStats, generate_resumable
from mind_assets.llm.requests import EngineIdentity, derive_seed, make_request, sampling_for

_VERDICT = re.compile(r"\b(YES|NO)\b", re.IGNORECASE)


def parse_yes_no(reply: str) -> bool | None:
    """True for YES, False for NO (the first such word), None for anything else."""
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).upper() == "YES"


@dataclass
class YesNoJudge:
    """The prompt a judge renders, the engine it asks and where its replies are stored."""

    prompt: PromptFile
    chat: ChatFn
    identity: EngineIdentity
    requests_dir: Path
    batch_size: int
    base_seed: int
    logger: logging.Logger | None = None
    stats: list[RunStats] = field(default_factory=list)

    def ask(
        self, label: str, questions: Sequence[tuple[Sequence[str], Mapping[str, Any]]]
    ) -> list[str]:
        """The stripped reply to each question: (seed parts, the prompt's fields). Each
        request's seed derives from the judge's label and its seed parts."""
        seed_label = label.replace(" ", "-")
        requests = [
            make_request(
                self.identity.model,
                self.prompt.version,
                sampling_for(self.prompt, derive_seed(self.base_seed, seed_label, *parts), None),
                self.prompt.render(**fields),
            )
            for parts, fields in questions
        ]
        results, stats = generate_resumable(
            requests,
            self.chat,
            RequestStore(self.requests_dir),
            batch_size=self.batch_size,
            label=label,
            logger=self.logger or logging.getLogger(__name__),
        )
        self.stats.append(stats)
        return [results[r.request_hash].result.text.strip() for r in requests]
