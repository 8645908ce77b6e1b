"""MIND conversation styles: one prompt file each, in a prompt set under `prompts/mind/<set>/`.

A style is its prompt file's name plus the file's `style:` header (title, knowledge-gap group,
order). Dropping a file into the set adds a style, and with it a partition of every
conversation asset, with no code change. Two sets ship: `paper` (the seven styles as the MIND
paper published them) and `enhanced` (this platform's stricter wording); `MIND_CONVERSATIONS__
PROMPT_SET` picks one, and each row's `prompt_id` (`mind/<set>/<style>`) records which.

The knowledge gap between speakers is what makes a style useful (Akter et al., 2025): the
explicit-gap styles (one side knows, the other asks) and the implicit-gap ones (the gap comes
from the task: debate, problem solving) beat conversations between equals.

A style's header may also say `form: rephrase`: the source rewritten in another register, not a
conversation (the paper's Rephrase baseline, after Maini et al., 2024). It is a partition like
any style, but it never joins the knowledge-gap styles, no turn rule judges it, and the longest-
conversation set never picks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mind_assets.lib.prompts import PromptError, StyleHeader, load_prompt
from mind_assets.settings import get_settings

KNOWLEDGE_GAP_GROUPS = ("explicit", "implicit")


@dataclass(frozen=True)
class Style:
    key: str
    title: str
    knowledge_gap: str  # explicit | implicit | none
    path: Path
    form: str = "conversation"  # conversation | rephrase

    @property
    def is_conversation(self) -> bool:
        return self.form == "conversation"


def prompt_set_dir(prompts_dir: Path, prompt_set: str) -> Path:
    return prompts_dir / "mind" / prompt_set


def load_styles(prompts_dir: Path, prompt_set: str) -> tuple[Style, ...]:
    """The styles of a prompt set, in their declared order: every `*.yaml` in its directory
    with a `style:` header. A set that is missing or holds no style is an error naming what
    exists."""
    directory = prompt_set_dir(prompts_dir, prompt_set)
    if not directory.is_dir():
        sets_dir = prompts_dir / "mind"
        known = (
            sorted(p.name for p in sets_dir.iterdir() if p.is_dir()) if sets_dir.is_dir() else []
        )
        raise PromptError(
            f"prompt set {prompt_set!r}: no directory {directory} "
            f"(sets: {', '.join(known) or 'none'})"
        )
    found: list[tuple[int, Style]] = []
    for path in sorted(directory.glob("*.yaml")):
        header: StyleHeader | None = load_prompt(path).style
        if header is None:
            raise PromptError(f"{path}: a MIND prompt file needs a `style:` header")
        found.append(
            (
                header.order,
                Style(path.stem, header.title, header.knowledge_gap, path, header.form),
            )
        )
    if not found:
        raise PromptError(f"prompt set {prompt_set!r}: no prompt files in {directory}")
    return tuple(style for _, style in sorted(found, key=lambda pair: (pair[0], pair[1].key)))


def configured_styles() -> tuple[Style, ...]:
    settings = get_settings()
    return load_styles(settings.prompts_dir, settings.conversations.prompt_set)


# The styles of the configured set, read once when the definitions load: they are the style
# partitions of every conversation asset.
STYLES: tuple[Style, ...] = configured_styles()
STYLE_KEYS: tuple[str, ...] = tuple(s.key for s in STYLES)
KNOWLEDGE_GAP_STYLES: tuple[str, ...] = tuple(
    s.key for s in STYLES if s.is_conversation and s.knowledge_gap in KNOWLEDGE_GAP_GROUPS
)
# The styles that are conversations (not a rephrase): the candidates of the longest set.
CONVERSATION_STYLE_KEYS: tuple[str, ...] = tuple(s.key for s in STYLES if s.is_conversation)


def style_forms(styles: tuple[Style, ...] = STYLES) -> dict[str, str]:
    """style -> form (`conversation` | `rephrase`), what the filter rules need to know."""
    return {s.key: s.form for s in styles}


def style_prompt_path(prompts_dir: Path, style: str, prompt_set: str | None = None) -> Path:
    """The prompt file of a style in `prompt_set` (default: the configured set)."""
    prompt_set = prompt_set or get_settings().conversations.prompt_set
    styles = {s.key: s for s in load_styles(prompts_dir, prompt_set)}
    if style not in styles:
        raise ValueError(
            f"unknown style {style!r} in prompt set {prompt_set!r}; known: {', '.join(styles)}"
        )
    return styles[style].path
