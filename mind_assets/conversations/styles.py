"""The seven MIND conversation styles and what the paper found about each.

The knowledge gap between speakers is what makes a style useful: explicit gaps (one side
explains) and shared gaps (both reason it out) beat conversations between equals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KnowledgeGap = Literal["explicit", "shared", "adversarial", "interview", "none"]


@dataclass(frozen=True)
class Style:
    key: str
    title: str
    knowledge_gap: KnowledgeGap


STYLES: tuple[Style, ...] = (
    Style("two_students", "Two Students", "shared"),
    Style("teacher_student", "Teacher-Student", "explicit"),
    Style("two_professors", "Two Professors", "none"),
    Style("debate", "Debate", "adversarial"),
    Style("problem_solving", "Problem Solving", "shared"),
    Style("layman_knowall", "Layman-Knowall", "explicit"),
    Style("interview", "Interview", "interview"),
)
STYLE_KEYS: tuple[str, ...] = tuple(s.key for s in STYLES)
KNOWLEDGE_GAP_STYLES: tuple[str, ...] = tuple(
    s.key for s in STYLES if s.knowledge_gap in ("explicit", "shared")
)


def style_prompt_path(prompts_dir: Path, style: str) -> Path:
    if style not in STYLE_KEYS:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLE_KEYS)}")
    return prompts_dir / "mind" / f"{style}.yaml"
