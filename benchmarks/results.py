"""Writes one benchmark's section of RESULTS.md, leaving the other sections as they are."""

from __future__ import annotations

from pathlib import Path

from mind_assets.lib.storage import atomic_path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = (
    "# Benchmark results\n\n"
    "Figures from actual runs on the development machine; `make bench` rewrites each section.\n"
)


def replace_section(path: Path, name: str, section: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else _HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with atomic_path(path) as tmp:  # an interrupted run leaves the other sections intact
        tmp.write_text(text)
        tmp.chmod(0o644)  # mkstemp creates it private
