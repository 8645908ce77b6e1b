"""Building a shard spec from what a user names on the command line or drops in the inbox:
local corpus files (which must exist) or a row range of a Hugging Face dataset split."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from mind_assets.corpus.shards import HF_PREFIX, LOCAL_SUFFIXES, FieldMap, ShardError, ShardSpec
from mind_assets.lib.storage import validate_name


def parse_row_range(text: str) -> tuple[int, int | None]:
    """'100:200' -> (100, 200); '100:' -> (100, None); ':50' -> (0, 50)."""
    start_text, sep, stop_text = text.partition(":")
    if not sep:
        raise ShardError(f"row range {text!r} must look like START:STOP")
    try:
        start = int(start_text) if start_text else 0
        stop = int(stop_text) if stop_text else None
    except ValueError as error:
        raise ShardError(f"row range {text!r} must hold integers") from error
    return start, stop


def make_shard_spec(
    name: str,
    sources: list[str],
    *,
    split: str = "train",
    rows: str | None = None,
    config_name: str | None = None,
    fields: FieldMap | None = None,
) -> ShardSpec:
    """Build and validate a spec from CLI-style arguments; local paths must exist."""
    validate_name(name, kind="shard name")
    if not sources:
        raise ShardError("name at least one corpus file or an hf://DATASET source")
    start, stop = parse_row_range(rows) if rows else (0, None)
    try:
        if len(sources) == 1 and sources[0].startswith(HF_PREFIX):
            return ShardSpec(
                name=name,
                kind="hf",
                dataset=sources[0][len(HF_PREFIX) :],
                config_name=config_name,
                split=split,
                start=start,
                stop=stop,
                fields=fields or FieldMap(),
            )
        paths = []
        for source in sources:
            path = Path(source).expanduser().resolve()
            if not path.is_file():
                raise ShardError(f"corpus file not found: {source}")
            if path.suffix not in LOCAL_SUFFIXES:
                raise ShardError(
                    f"{source}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})"
                )
            paths.append(str(path))
        return ShardSpec(
            name=name,
            kind="local",
            paths=paths,
            start=start,
            stop=stop,
            fields=fields or FieldMap(),
        )
    except ValidationError as error:
        raise ShardError(f"invalid shard {name!r}: {error}") from error
