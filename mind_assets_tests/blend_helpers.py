"""Building and exporting a blend in a test without Dagster: the same calls the blend assets
make (a manifest saved as the blend's new version, one export of every format at once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mind_assets.blends.manifest import Manifest
from mind_assets.blends.release import BlendExports, write_release
from mind_assets.blends.versions import save_manifest_version
from mind_assets.lib.storage import blend_export_dir
from mind_assets.lib.tokenizer import TokenCounter
from mind_assets.settings import BlendSettings


def save_and_export(
    manifest: Manifest,
    data_dir: Path,
    count: TokenCounter,
    *,
    formats: Sequence[str] = ("parquet",),
    options: BlendSettings | None = None,
    tokenizer: Any = None,
    length_buckets: Sequence[int] = (),
) -> BlendExports:
    """Save `manifest` as the blend's current version and export it to its export folder."""
    save_manifest_version(data_dir, manifest)
    return write_release(
        manifest,
        blend_export_dir(data_dir, manifest.blend),
        data_dir=data_dir,
        formats=formats,
        options=options or BlendSettings(),
        length_buckets=length_buckets,
        count_tokens=lambda: count,
        tokenizer=lambda: tokenizer,
        tokenizer_name=manifest.tokenizer,
    )
