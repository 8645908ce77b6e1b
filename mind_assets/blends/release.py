"""An export of one blend version: every requested format in one directory, built whole.

`write_release` is the one path the `blend_export` asset, `mind export-blend` and publishing
take. It checks the sha256 of every file every phase pins before writing anything, then writes
the parquet phases, the Megatron datasets and `export.json` into one staging directory and swaps
it in once: a mismatch or a crash anywhere leaves the previous export byte for byte as it was.
The current version exports to `blend_exports/<blend>/`; an older version, asked for by
`<blend>@<version>`, to `blend_exports/<blend>@<version>/`, so re-creating what a trainer
received never replaces the current export. Formats not requested are carried over from the
export in place when it is of the same version, and dropped when it is not (one directory never
mixes two versions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mind_assets.blends.export import ExportReport, export_blend, verify_pinned_files
from mind_assets.blends.manifest import Manifest
from mind_assets.blends.megatron import MEGATRON_DIRNAME, check_megatron_names, export_megatron
from mind_assets.lib.storage import (
    Staging,
    blend_export_dir,
    blend_exports_root,
    files_under,
    list_outputs,
    read_json,
    replace_dir,
)
from mind_assets.lib.tokenizer import TokenCounter
from mind_assets.settings import BlendSettings

RELEASE_FILE = "export.json"  # what an export holds: blend, version, formats, rows per phase
FORMATS = ("parquet", "megatron")


@dataclass
class BlendExports:
    """What one export of a blend wrote, per format."""

    directory: Path
    version: str = ""
    parquet: ExportReport | None = None
    megatron: Any = None  # MegatronReport, imported with megatron-core only when asked for
    carried: list[str] = field(default_factory=list)  # formats kept from the export in place

    def lines(self) -> list[str]:
        """One line per phase and format, as `mind export-blend` prints them."""
        lines = [f"{self.directory.name}: blend version {self.version or '(unversioned)'}"]
        if self.parquet is not None:
            for phase, rows in self.parquet.rows.items():
                lines.append(
                    f"{self.directory.name}/{phase}: {rows} rows, {self.parquet.tokens[phase]} "
                    f"tokens, {self.parquet.shards[phase]} shard(s) in {self.directory / phase}"
                )
        if self.megatron is not None:
            for phase, documents in self.megatron.documents.items():
                lines.append(
                    f"{self.directory.name}/{phase}: {documents} documents, "
                    f"{self.megatron.tokens[phase]} tokens (one eod each) in "
                    f"{self.megatron.datasets[phase]} indexed dataset(s); "
                    f"--data-args-path {self.megatron.data_path_file(phase)}"
                )
        lines += [f"{self.directory.name}: {f} export kept as it was" for f in self.carried]
        return lines


def release_dir(data_dir: Path, manifest: Manifest, current: str | None) -> Path:
    """Where an export of `manifest` goes: the blend's export folder for the current version
    (or an unversioned manifest), a folder named after the version for any other."""
    if not manifest.version or manifest.version == current:
        return blend_export_dir(data_dir, manifest.blend)
    return blend_export_dir(data_dir, manifest.blend, manifest.version)


def release_version(directory: Path) -> str | None:
    """The blend version an export folder holds (None: no export, or one from before)."""
    summary = read_json(directory / RELEASE_FILE)
    return None if summary is None else summary.get("blend_version")


def releases(data_dir: Path) -> dict[str, list[Path]]:
    """Every export folder under the data root, by the `blend@version` it holds."""
    found: dict[str, list[Path]] = {}
    root = blend_exports_root(data_dir)
    for summary_path in list_outputs(root, f"*/{RELEASE_FILE}"):
        summary = read_json(summary_path) or {}
        ref = f"{summary.get('blend')}@{summary.get('blend_version')}"
        found.setdefault(ref, []).append(summary_path.parent)
    return found


def _carry_over(out: Path, staging: Staging, formats: Sequence[str], version: str) -> list[str]:
    """Copy the formats not being written from the export in place, when it holds the same
    version; returns those carried."""
    if release_version(out) != version:
        return []
    summary = read_json(out / RELEASE_FILE) or {}
    carried = [f for f in summary.get("formats", []) if f not in formats]
    for fmt in carried:
        for path in files_under(out, "**/*"):
            relative = path.relative_to(out)
            in_megatron = relative.parts[0] == MEGATRON_DIRNAME
            if relative.as_posix() != RELEASE_FILE and (fmt == "megatron") == in_megatron:
                staging.add_copy(path, relative.as_posix())
    return carried


def write_release(
    manifest: Manifest,
    out: Path,
    *,
    data_dir: Path,
    formats: Sequence[str],
    options: BlendSettings,
    length_buckets: Sequence[int],
    count_tokens: Callable[[], TokenCounter],
    tokenizer: Callable[[], Any],
    tokenizer_name: str,
) -> BlendExports:
    """Export `manifest` in each of `formats` into `out`, as one directory swapped in once.
    `count_tokens` and `tokenizer` are built only for the formats that need them."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}: use {', '.join(FORMATS)}")
    if "megatron" in formats:
        check_megatron_names(manifest, tokenizer_name)
    verify_pinned_files(manifest, data_dir)
    exports = BlendExports(out, manifest.version)
    with replace_dir(out) as staging:
        if "parquet" in formats:
            exports.parquet = export_blend(
                manifest,
                staging,
                count_tokens(),
                data_dir=data_dir,
                options=options,
                length_buckets=length_buckets,
            )
            exports.parquet.directory = out
        if "megatron" in formats:
            exports.megatron = export_megatron(
                manifest,
                staging.sub(MEGATRON_DIRNAME),
                tokenizer(),
                tokenizer_name=tokenizer_name,
                data_dir=data_dir,
                out_dir=out / MEGATRON_DIRNAME,
            )
        previous = read_json(out / RELEASE_FILE) or {}
        exports.carried = _carry_over(out, staging, formats, manifest.version)
        phases = (
            {
                p: {"rows": n, "tokens": exports.parquet.tokens[p]}
                for p, n in exports.parquet.rows.items()
            }
            if exports.parquet
            else previous.get("phases", {})
            if "parquet" in exports.carried
            else {}
        )
        staging.add_json(
            RELEASE_FILE,
            {
                "blend": manifest.blend,
                "blend_version": manifest.version,
                "formats": sorted({*formats, *exports.carried}),
                "spec_sha256": manifest.spec_sha256,
                "tokenizer": manifest.tokenizer,
                "phases": phases,
            },
        )
    return exports
