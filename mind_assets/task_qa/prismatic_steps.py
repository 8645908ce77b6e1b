"""What one family's Prismatic rounds ask of the engine and the proxy model: a round of new items
(generated and filtered exactly as `task_qa` does), sampled solutions for the majority check,
and gradient features of the pool. The engine is injected (`chat`, `identity`); every request
goes through a resumable request store, and the stats and parse retries of all rounds add up
here for the step's usage and metadata."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from mind_assets.decontamination.check import Decontamination
from mind_assets.lib.prompts import load_prompt
from mind_assets.lib.report import Markdown, StageSummary, markdown_table
from mind_assets.llm.batch_runner import ChatFn, RunStats
from mind_assets.llm.features import Sample, features_for
from mind_assets.llm.requests import EngineIdentity, derive_seed
from mind_assets.settings import MindSettings
from mind_assets.task_qa.catalog import CatalogEntry
from mind_assets.task_qa.families import task_qa_prompts_for
from mind_assets.task_qa.majority import MajorityVerdict, MathItem, verify_by_majority
from mind_assets.task_qa.prismatic import PrismaticResult, prismatic_cache_name
from mind_assets.task_qa.schema import SEED_SCHEMA
from mind_assets.task_qa.stage import FamilyGeneration, parse_retry_metadata, run_task_qa


@dataclass
class PrismaticSteps:
    settings: MindSettings
    entry: CatalogEntry
    chat: ChatFn
    identity: EngineIdentity
    batch_size: int
    requests_dir: Path
    logger: logging.Logger
    stats: list[RunStats] = field(default_factory=list)
    # Generation rounds re-sample replies that do not parse, as task_qa does; summed over rounds.
    parse_retries: Counter[str] = field(default_factory=Counter)
    # Every round's new items are decontaminated like task_qa's, against the benchmark index.
    decontamination: Decontamination | None = None

    def generate(self, round_: int, pool_rows: list[dict], picker) -> tuple[list[dict], list[dict]]:
        """A later round's new items from the grown pool: (accepted, quarantined) rows."""
        settings = self.settings
        run = FamilyGeneration(
            entry=self.entry,
            prompts=task_qa_prompts_for(settings, self.entry.output_type),
            chat=self.chat,
            identity=self.identity,
            requests_dir=self.requests_dir / f"round_{round_}",
            settings=settings.task_qa,
            base_seed=derive_seed(settings.seed, "prismatic", f"round_{round_}"),
            batch_size=self.batch_size,
            max_tokens_cap=settings.max_tokens,
            logger=self.logger,
        )
        result = run_task_qa(
            run,
            pa.Table.from_pylist(pool_rows, schema=SEED_SCHEMA),
            seed_picker=picker,
            decontamination=self.decontamination,
        )
        self.stats.extend(result.stats)
        self.parse_retries.update(parse_retry_metadata(result))
        return result.accepted.to_pylist(), result.quarantine.to_pylist()

    def verify(self, round_: int, math_items: list[MathItem]) -> dict[str, MajorityVerdict]:
        """The majority answer of sampled solutions per math item of a round."""
        settings = self.settings
        verdicts, run_stats = verify_by_majority(
            math_items,
            load_prompt(settings.prompts_dir / "task_qa" / "solve.yaml"),
            self.chat,
            requests_dir=self.requests_dir / f"verify_{round_}",
            samples=settings.diversity.prismatic_verify_samples,
            model_name=self.identity.model,
            base_seed=settings.seed,
            family=self.entry.family,
            batch_size=self.batch_size,
            max_tokens_cap=settings.max_tokens,
            logger=self.logger,
        )
        self.stats.append(run_stats)
        return verdicts

    def featurise(self, samples: list[Sample]) -> np.ndarray:
        """Gradient features of pool rows and new items, cached per family."""
        _, cached = features_for(
            self.settings, samples, prismatic_cache_name(self.entry.family), self.logger
        )
        return cached.features


def prismatic_round_rows(result: PrismaticResult, family: str, run_id: str) -> pa.Table:
    """One metrics row per round (`prismatic_rounds`): pool growth and G-Vendi."""
    now = datetime.now(UTC)
    return pa.Table.from_pylist(
        [
            {"family": family, "run_id": run_id, **asdict(r), "recorded_at": now}
            for r in result.rounds
        ]
    )


def prismatic_summary(
    result: PrismaticResult, *, seeds: int, majority_check: str, parse_retries: Counter[str]
) -> StageSummary:
    """What a family's Prismatic rounds report: each round's pool and G-Vendi (the UI plots the
    per-round numbers), what was kept and quarantined, and how answers were checked."""
    rounds = [asdict(r) for r in result.rounds]
    return StageSummary(
        metadata={
            "rounds": Markdown(markdown_table(rounds)),
            **{f"g_vendi_pool_round_{r['round']}": r["g_vendi_pool"] for r in rounds},
            **{f"g_vendi_kept_round_{r['round']}": r["g_vendi_kept"] for r in rounds[1:]},
            "seeds": seeds,
            "pool": rounds[-1]["pool_after"],
            "kept": len(result.kept),
            "quarantined": len(result.dropped),
            "majority_check": majority_check,
            **parse_retries,
        }
    )


def prismatic_aggregates(result: PrismaticResult, usage: dict[str, float]) -> dict[str, float]:
    """The per-partition numbers `mind metrics` shows for a family's Prismatic rounds."""
    return {
        "kept": len(result.kept),
        "dropped": len(result.dropped),
        **{f"g_vendi_pool/round_{r.round}": r.g_vendi_pool for r in result.rounds},
        **usage,
    }
