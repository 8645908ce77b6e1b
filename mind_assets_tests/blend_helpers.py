"""Building and exporting a blend in a test without Dagster: the same calls the blend assets
make (a manifest saved as the blend's new version, one export of every format at once), and a
word-counting stand-in tokenizer for tests that do not need a real one."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mind_assets.blends.manifest import Manifest
from mind_assets.blends.release import BlendExports, ReleaseRequest, write_release
from mind_assets.blends.tokens import TokenCache
from mind_assets.blends.versions import save_manifest_version
from mind_assets.lib.storage import blend_export_dir
from mind_assets.lib.tokenizer import BlendTokenizer, Encoded, flatten
from mind_assets.settings import BlendSettings


@dataclass(frozen=True)
class WordTokenizer:
    """One token per whitespace-separated word (ids from a checksum of the word): counts a
    reader can check by eye, and no model to load."""

    name: str = "words"
    fingerprint: str = "words-v1"
    eos_id: int | None = 0
    vocab_size: int = 1000

    def encode(self, texts: Sequence[str]) -> Encoded:
        rows = [[1 + zlib.crc32(w.encode()) % 999 for w in t.split()] for t in texts]
        return flatten(rows, np.dtype(np.uint16))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "words.txt").write_text("one id per word\n")

    def id_to_token(self, token_id: int) -> str:
        return f"<w{token_id}>"

    def worker_encoder(self):
        return self.encode


def words(texts: Sequence[str]) -> list[int]:
    """What WordTokenizer counts, for assertions."""
    return [len(t.split()) for t in texts]


def word_tokens(data_dir: Path) -> TokenCache:
    """The token cache of WordTokenizer under `data_dir`."""
    return TokenCache(data_dir, WordTokenizer(), workers=1)


def save_and_export(
    manifest: Manifest,
    data_dir: Path,
    tokenizer: BlendTokenizer | None = None,
    *,
    formats: Sequence[str] = ("parquet",),
    options: BlendSettings | None = None,
    length_buckets: Sequence[int] = (),
) -> BlendExports:
    """Save `manifest` as the blend's current version and export it to its export folder (with
    WordTokenizer unless another is given)."""
    save_manifest_version(data_dir, manifest)
    return write_release(
        ReleaseRequest(
            manifest,
            blend_export_dir(data_dir, manifest.blend),
            data_dir,
            formats,
            options or BlendSettings(export_workers=1),
            length_buckets,
            tokenizer or WordTokenizer(),
        )
    )
