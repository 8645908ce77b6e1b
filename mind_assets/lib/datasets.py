"""Reading one split of a Hugging Face dataset: a local mirror first, then the hub.

A split that cannot be read is an error that names the dataset, the split and where it was looked
for; no caller turns it into "nothing to read". `DatasetSplitMissing` says no place holds the
split at all (the mirror lacks it and the hub is switched off), `DatasetSplitError` anything else
(a mirror file that does not parse, a hub request that failed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class DatasetSplitError(ValueError):
    """A split that cannot be read; the message names the dataset, the split and the cause."""


class DatasetSplitMissing(DatasetSplitError, FileNotFoundError):
    """Neither the local mirror nor the hub could provide a split."""


def mirror_files(
    dataset_path: str, dataset_name: str | None, split: str, mirror_dir: Path | None
) -> list[Path]:
    """The mirror's files for one split (`.jsonl` first), none when the mirror lacks it."""
    base = (mirror_dir or Path("/nonexistent")) / dataset_path / (dataset_name or "default")
    return [p for p in (base / f"{split}.jsonl", base / f"{split}.parquet") if p.is_file()]


def load_dataset_split(
    dataset_path: str, dataset_name: str | None, split: str, mirror_dir: Path | None, label: str
) -> Any:
    """One split as a `datasets.Dataset`: the local mirror first, then the hub (unless offline).

    Mirror layout: `<mirror>/<dataset_path>/<dataset_name or 'default'>/<split>.{jsonl,parquet}`.
    """
    import datasets

    files = mirror_files(dataset_path, dataset_name, split, mirror_dir)
    if files:
        kind = "json" if files[0].suffix == ".jsonl" else "parquet"
        try:
            return datasets.load_dataset(kind, data_files=str(files[0]), split="train")
        except Exception as error:
            raise DatasetSplitError(
                f"{label}: the mirror's {split!r} split {files[0]} cannot be read: {error}"
            ) from error
    where = f"{mirror_dir}/{dataset_path}/{dataset_name or 'default'}/{split}.jsonl"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DatasetSplitMissing(
            f"{label}: no {split!r} split in the mirror ({where}) "
            "and the hub is switched off (HF_HUB_OFFLINE)"
        )
    try:
        return datasets.load_dataset(dataset_path, dataset_name, split=split)
    except Exception as error:
        raise DatasetSplitError(
            f"{label}: {split!r} split not in the mirror ({where}) and the hub failed: {error}"
        ) from error
