"""The optional judge model (`MIND_MATH__JUDGE`): asked, through the same `llm` resource as the
traces, whether an answer matches the reference when math-verify cannot decide (an expression it
cannot parse, an option given by its text). Its reply is kept on the trace; a reply that is not
YES or NO leaves the answer undecided."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mind_assets.lib.prompts import PromptFile
from mind_assets.llm.batch_runner import ChatFn, RequestStore, generate_resumable
from mind_assets.llm.requests import EngineIdentity, derive_seed, make_request, sampling_for

_VERDICT = re.compile(r"\b(YES|NO)\b", re.IGNORECASE)


def parse_judgement(reply: str) -> bool | None:
    """True for YES, False for NO (the first such word), None for anything else."""
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).upper() == "YES"


class ModelJudge:
    """Judges a batch of (problem, reference, answer) items with one resumable engine call."""

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

    def __call__(self, items: list[dict[str, Any]]) -> list[tuple[bool | None, str]]:
        """(equal or None, the reply) per item; items carry problem_id, sample_index, problem,
        answer_type, reference, answer."""
        if not items:
            return []
        requests = [
            make_request(
                self.identity.model,
                self.prompt.version,
                sampling_for(
                    self.prompt,
                    derive_seed(
                        self.base_seed, "math-judge", item["problem_id"], str(item["answer"])
                    ),
                    None,
                ),
                self.prompt.render(
                    problem=item["problem"],
                    answer_type=item["answer_type"],
                    reference=item["reference"],
                    answer=item["answer"],
                ),
            )
            for item in items
        ]
        results, _ = generate_resumable(
            requests,
            self.chat,
            RequestStore(self.requests_dir),
            batch_size=self.batch_size,
            label="math judge",
            logger=self.logger,
        )
        replies = [results[r.request_hash].result.text.strip() for r in requests]
        return [(parse_judgement(reply), reply) for reply in replies]
