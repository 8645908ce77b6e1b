"""The licence of a task family's dataset: from its dataset card when one is on disk (the task
mirror, or the Hugging Face hub cache that `datasets` fills when it downloads a dataset), else from
a small table read off the Hub cards by hand; "unknown" when neither knows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

UNKNOWN = "unknown"

# `license:` of each dataset's card on huggingface.co, read by hand for families a default install
# seeds from; a card on disk wins over this table. Add a row only after reading the card.
KNOWN_DATASET_LICENCES: dict[str, str] = {
    "openai/gsm8k": "mit",
    "tau/commonsense_qa": "mit",
    "allenai/ai2_arc": "cc-by-sa-4.0",
    "allenai/sciq": "cc-by-nc-3.0",
}
TABLE_SOURCE = "mind_assets/task_qa/licences.py (read from https://huggingface.co/datasets/{path})"


@dataclass(frozen=True)
class Licence:
    licence: str  # Hugging Face Hub licence id, or "unknown"
    source: str  # the card it was read from, the table, or "" when unknown


def card_licence(text: str) -> str | None:
    """The `license` of a dataset card's YAML header (several joined by ", "), or None."""
    if not text.startswith("---"):
        return None
    header = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(header)
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value if v)
    text = str(value).strip() if value else ""
    return text or None


def _hub_cache() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return Path(explicit)
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


class LicenceFinder:
    """Looks licences up per dataset path, each path once."""

    def __init__(self, mirror_dir: Path | None = None, hub_cache: Path | None = None) -> None:
        self.mirror_dir = mirror_dir
        self.hub_cache = hub_cache or _hub_cache()
        self._found: dict[str, Licence] = {}

    def cards(self, dataset_path: str) -> list[Path]:
        """Dataset cards on disk for `dataset_path`, most trusted first."""
        found = []
        if self.mirror_dir is not None:
            found.append(self.mirror_dir / dataset_path / "README.md")
        snapshots = self.hub_cache / f"datasets--{dataset_path.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir():
            found += sorted(
                snapshots.glob("*/README.md"), key=lambda p: p.stat().st_mtime, reverse=True
            )
        return [p for p in found if p.is_file()]

    def find(self, dataset_path: str | None) -> Licence:
        if not dataset_path:
            return Licence(UNKNOWN, "")
        if dataset_path not in self._found:
            self._found[dataset_path] = self._look_up(dataset_path)
        return self._found[dataset_path]

    def _look_up(self, dataset_path: str) -> Licence:
        for card in self.cards(dataset_path):
            licence = card_licence(card.read_text(encoding="utf-8", errors="replace"))
            if licence:
                return Licence(licence, str(card))
        if dataset_path in KNOWN_DATASET_LICENCES:
            return Licence(
                KNOWN_DATASET_LICENCES[dataset_path], TABLE_SOURCE.format(path=dataset_path)
            )
        return Licence(UNKNOWN, "")
