"""Reading one split of a Hugging Face dataset: a local mirror first, then the hub."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class DatasetSplitMissing(FileNotFoundError):
    """Neither the local mirror nor the hub could provide a split."""


def load_dataset_split(
    dataset_path: str, dataset_name: str | None, split: str, mirror_dir: Path | None, label: str
) -> Any:
    """One split as a `datasets.Dataset`: the local mirror first, then the hub (unless offline).

    Mirror layout: `<mirror>/<dataset_path>/<dataset_name or 'default'>/<split>.{jsonl,parquet}`.
    """
    import datasets

    base = (mirror_dir or Path("/nonexistent")) / dataset_path / (dataset_name or "default")
    files = [p for p in (base / f"{split}.jsonl", base / f"{split}.parquet") if p.is_file()]
    if files:
        kind = "json" if files[0].suffix == ".jsonl" else "parquet"
        return datasets.load_dataset(kind, data_files=str(files[0]), split="train")
    where = f"{mirror_dir}/{dataset_path}/{dataset_name or 'default'}/{split}.jsonl"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DatasetSplitMissing(
            f"{label}: no {split!r} split in the mirror ({where}) "
            "and the hub is switched off (HF_HUB_OFFLINE)"
        )
    try:
        return datasets.load_dataset(dataset_path, dataset_name, split=split)
    except Exception as error:
        raise DatasetSplitMissing(
            f"{label}: {split!r} split not in the mirror ({where}) and the hub failed: {error}"
        ) from error
