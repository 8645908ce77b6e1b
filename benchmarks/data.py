"""Where the benchmarks read real text: ../shared/data in place (or MIND_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MIND_SHARED_DATA", ROOT.parent / "shared" / "data"))
NAPKIN = SHARED_DATA / "napkin" / "sections.jsonl"
