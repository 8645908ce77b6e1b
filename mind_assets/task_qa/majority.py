"""Majority-answer verification of generated math items, for the Prismatic rounds: the model
solves each new problem several times, and an item is kept only when more than half of the
sampled solutions reach the answer the item states."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mind_assets.lib import math_equality
from mind_assets.lib.prompts import PromptFile
from mind_assets.llm.batch_runner import ChatFn, RequestStore, RunStats, generate_resumable
from mind_assets.llm.requests import ChatRequest, derive_seed, make_request, sampling_for

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class MathItem:
    item_id: str
    question: str
    answer: str  # the answer the generated item states


@dataclass(frozen=True)
class MajorityVerdict:
    agrees: bool
    majority_answer: str | None  # None: no answer reached more than half of the samples
    votes: int  # samples that reached the majority answer (or the most common one)
    samples: int
    reason: str


def final_answer(solution: str) -> str:
    """The final answer a sampled solution gives: after its last "####", else in its last
    \\boxed{}, else after its last "Answer:", else its last number; "" when it gives none."""
    if "####" in solution:
        tail = solution.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else ""
    boxed = _BOXED.findall(solution)
    if boxed:
        return boxed[-1].strip()
    marker = re.split(r"(?i)\banswer\s*:", solution)
    if len(marker) > 1 and marker[-1].strip():
        return marker[-1].strip().splitlines()[0].strip()
    numbers = _NUMBER.findall(solution)
    return numbers[-1].replace(",", "") if numbers else ""


def same_answer(a: str, b: str) -> bool:
    """Equal as math (math-verify) or, where either does not parse, as normalised text."""
    parsed_a = math_equality.parse(a.replace(",", ""))
    parsed_b = math_equality.parse(b.replace(",", ""))
    if parsed_a and parsed_b:
        return math_equality.verify(parsed_a, parsed_b)
    return _plain(a) == _plain(b) != ""


def _plain(text: str) -> str:
    return re.sub(r"[\s$.,]+", "", text).lower()


def majority_verdict(stated: str, solutions: Sequence[str]) -> MajorityVerdict:
    """Group the solutions' final answers by equality; keep when the largest group holds more
    than half of the samples and agrees with `stated`."""
    groups: list[list[str]] = []
    for answer in (final_answer(s) for s in solutions):
        if not answer:
            continue
        for group in groups:
            if same_answer(group[0], answer):
                group.append(answer)
                break
        else:
            groups.append([answer])
    samples = len(solutions)
    if not groups:
        return MajorityVerdict(False, None, 0, samples, "no_majority: no sample gave an answer")
    top = max(groups, key=len)
    votes = len(top)
    if 2 * votes <= samples:
        reason = f"no_majority: most common answer {top[0]!r} {votes}/{samples}"
        return MajorityVerdict(False, None, votes, samples, reason)
    if not same_answer(top[0], stated):
        return MajorityVerdict(
            False,
            top[0],
            votes,
            samples,
            f"majority_disagrees: {votes}/{samples} say {top[0]!r}, the item says {stated!r}",
        )
    return MajorityVerdict(True, top[0], votes, samples, f"majority agrees {votes}/{samples}")


def plan_solutions(
    items: Sequence[MathItem],
    prompt: PromptFile,
    *,
    samples: int,
    model_name: str,
    base_seed: int,
    family: str,
    max_tokens_cap: int | None,
) -> dict[str, list[ChatRequest]]:
    """`samples` solve requests per item, each with its own seed (item, sample index)."""
    planned = {}
    for item in items:
        messages = prompt.render(question=item.question)
        planned[item.item_id] = [
            make_request(
                model_name,
                prompt.version,
                sampling_for(
                    prompt,
                    derive_seed(base_seed, family, "verify", item.item_id, str(i)),
                    max_tokens_cap,
                ),
                messages,
            )
            for i in range(samples)
        ]
    return planned


def verify_by_majority(
    items: Sequence[MathItem],
    prompt: PromptFile,
    chat: ChatFn,
    *,
    requests_dir: Path,
    samples: int,
    model_name: str,
    base_seed: int,
    family: str,
    batch_size: int,
    max_tokens_cap: int | None = None,
    logger: logging.Logger | None = None,
) -> tuple[dict[str, MajorityVerdict], RunStats]:
    """A verdict per item id; solutions are generated in one resumable batch."""
    planned = plan_solutions(
        items,
        prompt,
        samples=samples,
        model_name=model_name,
        base_seed=base_seed,
        family=family,
        max_tokens_cap=max_tokens_cap,
    )
    results, stats = generate_resumable(
        [r for requests in planned.values() for r in requests],
        chat,
        RequestStore(requests_dir),
        batch_size=batch_size,
        label=f"prismatic {family}: majority answer",
        logger=logger,
    )
    verdicts = {
        item.item_id: majority_verdict(
            item.answer, [results[r.request_hash].result.text for r in planned[item.item_id]]
        )
        for item in items
    }
    return verdicts, stats
