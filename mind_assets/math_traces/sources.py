"""Where math problems come from: any `datasets` split with a question and a reference answer."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EFFORTS = ("high", "medium", "low")
TOOL_USE = ("tir", "no_tir")
MODES = tuple(f"{effort}_{tool}" for effort in EFFORTS for tool in TOOL_USE)


class MathSource(BaseModel):
    """One problem source. `answer_format: gsm8k` reads the reference after `#### ` and strips
    `<<...>>` calculator annotations; `plain` takes the answer field as it is."""

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

    @model_validator(mode="after")
    def _train_is_not_eval(self) -> MathSource:
        if self.split in self.eval_splits or re.search(r"test|valid|dev|eval", self.split):
            raise ValueError(
                f"math source {self.name!r}: split {self.split!r} is an evaluation split; "
                "problems come from training data only"
            )
        return self


DEFAULT_MATH_SOURCES = [MathSource(name="gsm8k", dataset_path="openai/gsm8k", dataset_name="main")]
