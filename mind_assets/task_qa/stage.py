"""The task-Q&A stage for one family: generate, parse into both forms, enrich, filter."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.lib.prompts import PromptFile, load_prompt
from mind_assets.lib.report import Markdown, StageSummary, markdown_table
from mind_assets.llm.batch_runner import ChatFn, RequestStore, RunStats
from mind_assets.llm.requests import ChatRequest, EngineIdentity, derive_seed, with_seed
from mind_assets.llm.resampling import Attempt, ParseRetryCounts, generate_until_parsed
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.conversion import open_ended_stem
from mind_assets.task_qa.generation import (
    SeedPicker,
    apply_enrichment,
    enrichment_parses,
    item_parses,
    plan_enrichment,
    plan_items,
    to_candidates,
    training_text,
)
from mind_assets.task_qa.rules import TASK_QA_RULES, Candidate, run_task_rules
from mind_assets.task_qa.schema import TASK_QA_QUARANTINE_SCHEMA, TASK_QA_SCHEMA


@dataclass
class TaskQAPrompts:
    generate: PromptFile
    enrich: PromptFile

    @classmethod
    def load(cls, prompts_dir: Path, *, output_type: str, structured: bool) -> TaskQAPrompts:
        """The generation prompt for a family's output type and the enrichment prompt, from the
        structured (JSON) set or the free-text one."""
        kind = "multiple_choice" if output_type == "multiple_choice" else "open_ended"
        folder = prompts_dir / "task_qa" / ("structured" if structured else "")
        return cls(
            generate=load_prompt(folder / f"generate_{kind}.yaml"),
            enrich=load_prompt(folder / "enrich_multiple_choice.yaml"),
        )


@dataclass
class TaskQAResult:
    accepted: pa.Table
    quarantine: pa.Table
    rejections_per_rule: dict[str, int]
    stats: list[RunStats] = field(default_factory=list)
    generation_retries: ParseRetryCounts = field(default_factory=ParseRetryCounts)
    enrichment_retries: ParseRetryCounts = field(default_factory=ParseRetryCounts)


def run_task_qa(
    *,
    entry: CatalogEntry,
    seeds: pa.Table,
    eval_texts: list[str],
    prompts: TaskQAPrompts,
    chat: ChatFn,
    identity: EngineIdentity,
    requests_dir: Path,
    settings: TaskQASettings,
    base_seed: int,
    batch_size: int,
    max_tokens_cap: int | None = None,
    seed_picker: SeedPicker | None = None,
    logger: logging.Logger | None = None,
    eval_labels: list[str] | None = None,
) -> TaskQAResult:
    family = entry.family
    generation_task = entry.output_type != "multiple_choice"
    # Structured generation holds a math family's final answer to a number.
    numeric_answer = generation_task and entry.answer_check == "math"
    planned = plan_items(
        seeds,
        prompts.generate,
        task=entry.task,
        family=family,
        n_items=settings.items,
        shots=settings.shots,
        model_name=identity.model,
        base_seed=base_seed,
        max_tokens_cap=max_tokens_cap,
        seed_picker=seed_picker,
        generation_task=generation_task,
        numeric_answer=numeric_answer,
    )
    structured = prompts.generate.output_format == "json"
    generated = generate_until_parsed(
        {plan.item_index: plan.request for plan in planned},
        chat,
        RequestStore(requests_dir / "generate"),
        parses=lambda _, text: item_parses(
            text,
            generation_task=generation_task,
            structured=structured,
            numeric_answer=numeric_answer,
        ),
        resample=_resampler(base_seed, family, "retry", identity.model, prompts.generate),
        retries=settings.parse_retries,
        batch_size=batch_size,
        label=f"task_qa {family}: generate",
        logger=logger,
    )
    items: list[tuple[Any, list[Candidate], Attempt]] = []
    for plan in planned:
        attempt = generated.attempts[plan.item_index]
        candidates = to_candidates(
            attempt.stored.result.text,
            generation_task=generation_task,
            # The seed of the attempt kept, so its distractors and option order follow it.
            seed=attempt.request.sampling.seed,
            structured=structured,
            numeric_answer=numeric_answer,
        )
        items.append((plan, judge_and_convert(entry, candidates), attempt))

    enrich_requests = {}
    for plan, candidates, _ in items:
        mc = candidates[0]
        if not mc.parse_error:
            enrich_requests[plan.item_index] = plan_enrichment(
                mc,
                prompts.enrich,
                model_name=identity.model,
                seed=derive_seed(base_seed, family, "enrich", str(plan.item_index)),
                max_tokens_cap=max_tokens_cap,
            )
    enrich_structured = prompts.enrich.output_format == "json"
    enriched = generate_until_parsed(
        enrich_requests,
        chat,
        RequestStore(requests_dir / "enrich"),
        parses=lambda _, text: enrichment_parses(text, structured=enrich_structured),
        resample=_resampler(base_seed, family, "enrich-retry", identity.model, prompts.enrich),
        retries=settings.parse_retries,
        batch_size=batch_size,
        label=f"task_qa {family}: enrich",
        logger=logger,
    )
    for plan, candidates, _ in items:
        if plan.item_index in enriched.attempts:
            apply_enrichment(
                candidates,
                enriched.attempts[plan.item_index].stored.result.text,
                structured=enrich_structured,
            )

    flat = [(plan, c, attempt) for plan, candidates, attempt in items for c in candidates]
    reasons = run_task_rules(
        [c for _, c, _ in flat],
        seed_questions=seeds.column("question").to_pylist(),
        eval_texts=eval_texts,
        eval_labels=eval_labels,
        thresholds=settings,
    )
    accepted_rows, rejected_rows = [], []
    counts = dict.fromkeys(TASK_QA_RULES, 0)
    for (plan, candidate, attempt), why in zip(flat, reasons, strict=True):
        row = _row(
            entry,
            plan,
            candidate,
            attempt,
            enrich_requests.get(plan.item_index),
            prompts,
            identity,
        )
        if why:
            rejected_rows.append({**row, "rejected_by": why})
            for reason in why:
                counts[reason.split(":")[0]] += 1
        else:
            accepted_rows.append(row)
    return TaskQAResult(
        accepted=pa.Table.from_pylist(accepted_rows, schema=TASK_QA_SCHEMA),
        quarantine=pa.Table.from_pylist(rejected_rows, schema=TASK_QA_QUARANTINE_SCHEMA),
        rejections_per_rule=counts,
        stats=[*generated.stats, *enriched.stats],
        generation_retries=generated.counts,
        enrichment_retries=enriched.counts,
    )


def _resampler(
    base_seed: int, family: str, purpose: str, model_name: str, prompt: PromptFile
) -> Callable[[int, ChatRequest, int], ChatRequest]:
    """Retry `attempt` of item `index`: its first request under a seed derived from the item and
    the attempt, so reruns ask for (and reuse) exactly the same retries."""

    def resample(index: int, request: ChatRequest, attempt: int) -> ChatRequest:
        seed = derive_seed(base_seed, family, purpose, str(index), str(attempt))
        return with_seed(request, seed, model=model_name, prompt_version=prompt.version)

    return resample


def judge_and_convert(entry: CatalogEntry, candidates: list[Candidate]) -> list[Candidate]:
    """Fit one item's candidates to their family: the open-ended form of a multiple-choice item
    gets a stem that stands without options where one safe rewrite exists; a generative family
    that is not math is judged by its own metric rather than math-verify."""
    for c in candidates:
        if entry.output_type == "multiple_choice":
            if c.form == "open_ended" and not c.parse_error:
                c.question, c.conversion = open_ended_stem(c.question)
        elif entry.answer_check in ("exact_match", "free_text"):
            c.is_math = False
            c.metric = entry.answer_check
            c.metric_options = json.loads(entry.metric_options or "{}")
    return candidates


def answer_check_of(entry: CatalogEntry, candidate: Candidate) -> str:
    if entry.output_type == "multiple_choice":
        return "choice"
    return candidate.metric or ("math" if candidate.is_math else "")


def _row(
    entry, plan, candidate: Candidate, attempt: Attempt, enrich_request, prompts, identity
) -> dict:
    """One form of an item as a row. The item keeps its id (from its first request) whichever
    attempt it keeps; the lineage columns are those of the attempt kept."""
    result, request = attempt.stored.result, attempt.request
    item_id = plan.request.request_hash[:24]
    return {
        "qa_id": f"{item_id}:{candidate.form}",
        "item_id": item_id,
        "task": entry.task,
        "family": entry.family,
        "form": candidate.form,
        "question": candidate.question or None,
        "choices": candidate.choices if candidate.form == "multiple_choice" else None,
        "answer": candidate.answer or None,
        "reasoning": candidate.reasoning or None,
        "distractor_explanations": [
            {"choice": c, "why_wrong": w} for c, w in candidate.distractors
        ],
        "text": training_text(candidate),
        "answer_check": answer_check_of(entry, candidate) or None,
        "conversion": candidate.conversion or None,
        "licence": entry.licence or None,
        "seed_ids": plan.seed_ids,
        "seed_cluster": plan.seed_cluster,
        "selection_reason": plan.selection_reason,
        "prompt_id": prompts.generate.id,
        "prompt_version": prompts.generate.version,
        "enrich_prompt_id": prompts.enrich.id if enrich_request else None,
        "enrich_prompt_version": prompts.enrich.version if enrich_request else None,
        **identity.lineage(),
        "sampling_params": request.sampling.to_json(),
        "seed": request.sampling.seed,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
        "created_at": attempt.stored.created_at,
        "request_hash": request.request_hash,
        "raw_output": result.text,
    }


def parse_retry_metadata(result: TaskQAResult) -> dict[str, int]:
    """Replies that did not parse on the first attempt, the retries asked for, and the replies
    that still did not parse after them, for generation and (prefixed `enrich_`) enrichment."""
    metadata = {}
    for prefix, counts in (("", result.generation_retries), ("enrich_", result.enrichment_retries)):
        metadata[f"{prefix}parse_failures_first_attempt"] = counts.failed_first_attempt
        metadata[f"{prefix}parse_retries_requested"] = counts.retries_requested
        metadata[f"{prefix}parse_failures_after_retries"] = counts.failed_after_retries
    return metadata


def summarize_task_qa(
    result: TaskQAResult,
    *,
    prompts: TaskQAPrompts,
    quarantine_path: Path,
    eval_texts: int,
    engine: dict[str, Any],
    eval_splits: dict[str, int] | None = None,
    licence: str = "",
) -> StageSummary:
    """What one task Q&A partition reports: acceptance, rejections per rule, what it was
    decontaminated against, the prompts and engine, and a sample of the quarantine."""
    generated = result.accepted.num_rows + result.quarantine.num_rows
    rejected = result.quarantine.slice(0, 5).to_pylist()
    return StageSummary(
        metadata={
            "quarantine_path": quarantine_path,
            "generated_rows": generated,
            "accepted": result.accepted.num_rows,
            "acceptance_rate": result.accepted.num_rows / generated if generated else 0.0,
            "rejections_per_rule": Markdown(
                markdown_table(
                    [{"rule": r, "rejected": n} for r, n in result.rejections_per_rule.items()]
                )
            ),
            "decontaminated_against": eval_texts,
            "decontamination_splits": Markdown(
                markdown_table(
                    [{"split": k, "documents": v} for k, v in (eval_splits or {}).items()]
                )
            ),
            "licence": licence or "unknown",
            "engine": engine,
            "generate_prompt": f"{prompts.generate.id}@{prompts.generate.version}",
            "enrich_prompt": f"{prompts.enrich.id}@{prompts.enrich.version}",
            "requests": [{"generated": s.generated, "reused": s.reused} for s in result.stats],
            **parse_retry_metadata(result),
            "quarantine_sample": Markdown(
                "\n".join(
                    f"- {json.dumps(r['rejected_by'])}: {(r['raw_output'] or '')[:160]!r}"
                    for r in rejected
                )
                or "_none_"
            ),
        }
    )
