"""The task-Q&A stage for one family: generate, parse into both forms, enrich, filter."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mind_assets.decontamination.check import Decontamination, contamination_value
from mind_assets.decontamination.record import CheckRecord, with_record
from mind_assets.lib.prompts import PromptFile, load_prompt
from mind_assets.lib.quarantine import SplitRows
from mind_assets.lib.report import Markdown, StageSummary, markdown_table
from mind_assets.llm.batch_runner import ChatFn, RequestStore, RunStats
from mind_assets.llm.requests import ChatRequest, EngineIdentity, derive_seed, with_seed
from mind_assets.llm.resampling import (
    Attempt,
    ParseRetryCounts,
    ResampledReplies,
    generate_until_parsed,
)
from mind_assets.settings import TaskQASettings
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.conversion import open_ended_stem
from mind_assets.task_qa.generation import (
    PlannedItem,
    SeedPicker,
    apply_enrichment,
    enrichment_parses,
    item_parses,
    plan_enrichment,
    plan_items,
    to_candidates,
    training_text,
)
from mind_assets.task_qa.rules import TASK_QA_RULES, Candidate, item_text, run_task_rules
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
    decontamination: CheckRecord | None = None


@dataclass(frozen=True)
class FamilyGeneration:
    """How one family's requests are made and sent: its catalog entry and prompts, the engine
    and where its replies are stored, and the seed, batch size and token cap of the run."""

    entry: CatalogEntry
    prompts: TaskQAPrompts
    chat: ChatFn
    identity: EngineIdentity
    requests_dir: Path
    settings: TaskQASettings
    base_seed: int
    batch_size: int
    max_tokens_cap: int | None = None
    logger: logging.Logger | None = None


@dataclass
class GeneratedItem:
    """One item: its plan, the attempt whose reply it keeps, and that reply parsed into its
    candidates (one per form)."""

    plan: PlannedItem
    candidates: list[Candidate]
    attempt: Attempt


def run_task_qa(
    run: FamilyGeneration,
    seeds: pa.Table,
    *,
    seed_picker: SeedPicker | None = None,
    decontamination: Decontamination | None = None,
) -> TaskQAResult:
    """Generate one family's items from its seeds, enrich their multiple-choice form, and split
    every form into accepted and quarantined rows by the task-Q&A rules (`contaminated` among
    them: the benchmark index `decontamination` holds; the accepted rows carry its record)."""
    items, generated = _generate_items(run, seeds, seed_picker)
    enrich_requests, enriched = _enrich_items(run, items)
    flat = [(item, c) for item in items for c in item.candidates]
    contamination = (
        decontamination.scan([item_text(c) for _, c in flat]) if decontamination else None
    )
    reasons = run_task_rules(
        [c for _, c in flat],
        seed_questions=seeds.column("question").to_pylist(),
        thresholds=run.settings,
        contamination=contamination,
    )
    split = SplitRows()
    counts = dict.fromkeys(TASK_QA_RULES, 0)
    for position, ((item, candidate), why) in enumerate(zip(flat, reasons, strict=True)):
        enrichment = enrich_requests.get(item.plan.item_index)
        row = _row(run, item.plan, candidate, item.attempt, enrichment)
        if why:
            found = contamination[position] if contamination else []
            row["contamination"] = contamination_value(found)
        split.add(row, why)
        for reason in why:
            counts[reason.split(":")[0]] += 1
    accepted, quarantine = split.tables(TASK_QA_SCHEMA, TASK_QA_QUARANTINE_SCHEMA)
    record = decontamination.record(contamination or []) if decontamination else None
    return TaskQAResult(
        accepted=with_record(accepted, record) if record else accepted,
        quarantine=quarantine,
        rejections_per_rule=counts,
        stats=[*generated.stats, *enriched.stats],
        generation_retries=generated.counts,
        enrichment_retries=enriched.counts,
        decontamination=record,
    )


def _generate_items(
    run: FamilyGeneration, seeds: pa.Table, seed_picker: SeedPicker | None
) -> tuple[list[GeneratedItem], ResampledReplies[int]]:
    """Plan the family's items, generate each until its reply parses (or its retries run out),
    and fit the reply's candidates to the family (`judge_and_convert`)."""
    entry, prompts, identity = run.entry, run.prompts, run.identity
    generation_task = entry.output_type != "multiple_choice"
    # Structured generation holds a math family's final answer to a number.
    numeric_answer = generation_task and entry.answer_check == "math"
    planned = plan_items(
        seeds,
        prompts.generate,
        task=entry.task,
        family=entry.family,
        n_items=run.settings.items,
        shots=run.settings.shots,
        model_name=identity.model,
        base_seed=run.base_seed,
        max_tokens_cap=run.max_tokens_cap,
        seed_picker=seed_picker,
        generation_task=generation_task,
        numeric_answer=numeric_answer,
    )
    structured = prompts.generate.output_format == "json"
    generated = generate_until_parsed(
        {plan.item_index: plan.request for plan in planned},
        run.chat,
        RequestStore(run.requests_dir / "generate"),
        parses=lambda _, text: item_parses(
            text,
            generation_task=generation_task,
            structured=structured,
            numeric_answer=numeric_answer,
        ),
        resample=_resampler(run.base_seed, entry.family, "retry", identity.model, prompts.generate),
        retries=run.settings.parse_retries,
        batch_size=run.batch_size,
        label=f"task_qa {entry.family}: generate",
        logger=run.logger,
    )
    items = []
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
        items.append(GeneratedItem(plan, judge_and_convert(entry, candidates), attempt))
    return items, generated


def _enrich_items(
    run: FamilyGeneration, items: list[GeneratedItem]
) -> tuple[dict[int, ChatRequest], ResampledReplies[int]]:
    """Ask for the enrichment (distractor explanations) of every item whose multiple-choice
    form parsed, and apply each reply to the item's candidates. Returns the enrichment requests
    by item index, for the rows' lineage, and the replies."""
    family, prompt = run.entry.family, run.prompts.enrich
    enrich_requests = {}
    for item in items:
        mc = item.candidates[0]
        if not mc.parse_error:
            enrich_requests[item.plan.item_index] = plan_enrichment(
                mc,
                prompt,
                model_name=run.identity.model,
                seed=derive_seed(run.base_seed, family, "enrich", str(item.plan.item_index)),
                max_tokens_cap=run.max_tokens_cap,
            )
    enrich_structured = prompt.output_format == "json"
    enriched = generate_until_parsed(
        enrich_requests,
        run.chat,
        RequestStore(run.requests_dir / "enrich"),
        parses=lambda _, text: enrichment_parses(text, structured=enrich_structured),
        resample=_resampler(run.base_seed, family, "enrich-retry", run.identity.model, prompt),
        retries=run.settings.parse_retries,
        batch_size=run.batch_size,
        label=f"task_qa {family}: enrich",
        logger=run.logger,
    )
    for item in items:
        if item.plan.item_index in enriched.attempts:
            apply_enrichment(
                item.candidates,
                enriched.attempts[item.plan.item_index].stored.result.text,
                structured=enrich_structured,
            )
    return enrich_requests, enriched


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
    run: FamilyGeneration, plan, candidate: Candidate, attempt: Attempt, enrich_request
) -> dict:
    """One form of an item as a row. The item keeps its id (from its first request) whichever
    attempt it keeps; the lineage columns are those of the attempt kept."""
    entry, prompts = run.entry, run.prompts
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
        **run.identity.lineage(),
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
    engine: dict[str, Any],
    licence: str = "",
) -> StageSummary:
    """What one task Q&A partition reports: acceptance, rejections per rule, the prompts and
    engine, and a sample of the quarantine (what it was decontaminated against: the asset adds
    the check's record)."""
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
