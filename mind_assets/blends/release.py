"""An export of one blend version: every requested format in one directory, built whole.

`write_release` is the one path the `blend_export` asset, `mind export-blend` and publishing
take. It checks the sha256 of every file every phase pins before writing anything, plans every
phase from the token cache, writes the parts of each phase (parquet shards and Megatron
datasets from one streaming pass, `blends/export.py`) into one staging directory and swaps it in
once: a mismatch or a crash anywhere leaves the previous export byte for byte as it was. A
partitioned export (`write_release_parts` in several Dagster steps, then
`finish_release_parts`) writes the same files: each step writes its parts into the data root's
parts folder, and the last moves them into the staging directory and swaps it in.

The current version exports to `blend_exports/<blend>/`; an older version, asked for by
`<blend>@<version>`, to `blend_exports/<blend>@<version>/`, so re-creating what a trainer
received never replaces the current export. Formats not requested are carried over from the
export in place when it is of the same version, and dropped when it is not (one directory never
mixes two versions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mind_assets.blends.export import (
    ExportJob,
    ExportReport,
    finish_parquet,
    plan_export,
    verify_pinned_files,
    write_part,
)
from mind_assets.blends.manifest import Manifest
from mind_assets.blends.megatron import (
    MEGATRON_DIRNAME,
    ExportError,
    check_megatron_names,
    check_tokenizer,
    eod_token_id,
    finish_megatron,
)
from mind_assets.blends.tokens import TokenCache
from mind_assets.lib.progress import Log, Progress
from mind_assets.lib.storage import (
    Staging,
    blend_export_dir,
    blend_exports_root,
    delete_dir,
    export_parts_dir,
    files_under,
    fresh_dir,
    list_outputs,
    push_dir,
    read_json,
    replace_dir,
    sha256_text,
    write_json_atomic,
)
from mind_assets.lib.tokenizer import BlendTokenizer, worker_count
from mind_assets.settings import BlendSettings

RELEASE_FILE = "export.json"  # what an export holds: blend, version, formats, rows per phase
FORMATS = ("parquet", "megatron")


@dataclass
class BlendExports:
    """What one export of a blend wrote, per format."""

    directory: Path
    version: str = ""
    parquet: ExportReport | None = None
    megatron: Any = None  # MegatronReport, when the export wrote the Megatron format
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


@dataclass
class ReleaseRequest:
    """One export of one manifest version: where, which formats, how, with which tokenizer."""

    manifest: Manifest
    out: Path
    data_dir: Path
    formats: Sequence[str]
    options: BlendSettings
    length_buckets: Sequence[int]
    tokenizer: BlendTokenizer
    log: Log | None = None

    def check(self) -> None:
        """Refuse before any work: an unknown format, another tokenizer than the manifest's,
        names that cannot be Megatron prefixes, a pinned file missing or changed."""
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown export format(s) {unknown}: use {', '.join(FORMATS)}")
        check_tokenizer(self.manifest, self.tokenizer)
        if "megatron" in self.formats:
            check_megatron_names(self.manifest)
            eod_token_id(self.tokenizer)
        verify_pinned_files(self.manifest, self.data_dir)

    def plan(self) -> ExportJob:
        tokens = TokenCache(
            self.data_dir,
            self.tokenizer,
            workers=worker_count(self.options.export_workers),
            log=self.log,
        )
        return plan_export(
            self.manifest, self.data_dir, self.options, self.length_buckets, self.formats, tokens
        )

    def progress(self, job: ExportJob) -> Progress:
        total = sum(plan.rows for plan in job.plans)
        return Progress(f"exporting {self.manifest.ref}", self.log, total)

    def parts_dir(self) -> Path:
        """Where the parts of a partitioned export of this request wait (`export_parts_dir`),
        keyed by the version and everything that decides the files."""
        decided = {
            "formats": sorted(self.formats),
            "shard_rows": self.options.export_shard_rows,
            "part_rows": self.options.export_part_rows,
            "bucket": self.options.export_bucket,
            "length_buckets": list(self.length_buckets),
            "tokenizer": self.tokenizer.fingerprint,
            "out": self.out.name,
        }
        digest = sha256_text(json.dumps(decided, sort_keys=True))[:16]
        return export_parts_dir(
            self.data_dir, self.manifest.blend, f"{self.manifest.version or 'current'}-{digest}"
        )


def _write_parts(
    job: ExportJob, staging: Staging, progress: Progress, log: Log | None
) -> dict[str, list[dict[str, Any]]]:
    """Every part of the job into `staging`, one after another: a step holds one part at a
    time, however long the blend. (Two parts at once, in threads, measured 940 MB against
    658 MB at 1 M documents for an export 1.5x as fast; but writing is a tenth of the blend
    path's time, and the tokenizing, the rest, already runs on every core.) Parts are written
    side by side as separate steps (MIND_BLENDS__EXPORT_STEPS), each its own process or pod."""
    receipts: dict[str, list[dict[str, Any]]] = {plan.phase.name: [] for plan in job.plans}
    parts = job.parts()
    for phase, part in parts:
        receipt = write_part(job, phase, part, staging, progress)
        receipts[receipt["phase"]].append(receipt)
        if log is not None and len(parts) > 1:
            log(f"part {receipt['part']} of phase {receipt['phase']!r} written")
    progress.finish()
    return receipts


def _finish(
    request: ReleaseRequest,
    job: ExportJob,
    staging: Staging,
    receipts: dict[str, list[dict[str, Any]]],
) -> BlendExports:
    """What an export holds besides its parts: the Megatron lists, summaries, formats carried
    over from the export in place, and export.json."""
    manifest, out = request.manifest, request.out
    exports = BlendExports(out, manifest.version)
    if "parquet" in request.formats:
        exports.parquet = finish_parquet(staging, job, receipts, out)
    if "megatron" in request.formats:
        exports.megatron = finish_megatron(
            staging.sub(MEGATRON_DIRNAME),
            manifest,
            job.plans,
            {phase: [r["megatron"] for r in parts] for phase, parts in receipts.items()},
            request.tokenizer,
            out / MEGATRON_DIRNAME,
        )
    previous = read_json(out / RELEASE_FILE) or {}
    exports.carried = _carry_over(out, staging, request.formats, manifest.version)
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
            "formats": sorted({*request.formats, *exports.carried}),
            "spec_sha256": manifest.spec_sha256,
            "tokenizer": manifest.tokenizer,
            "tokenizer_sha256": request.tokenizer.fingerprint,
            "parts": {plan.phase.name: len(plan.parts) for plan in job.plans},
            "phases": phases,
        },
    )
    return exports


def write_release(request: ReleaseRequest) -> BlendExports:
    """Export the request's manifest in each of its formats into its folder, as one directory
    swapped in once: checked, planned from the token cache, every part written in one streaming
    pass, part after part, then finished."""
    request.check()
    job = request.plan()
    with replace_dir(request.out) as staging:
        receipts = _write_parts(job, staging, request.progress(job), request.log)
        return _finish(request, job, staging, receipts)


def write_release_parts(request: ReleaseRequest, step: int, steps: int) -> list[dict[str, Any]]:
    """The parts a Dagster step of a partitioned export writes (every `steps`-th, from
    `step`), each into its own folder under the request's parts directory, uploaded, and
    acknowledged with a receipt; a part with a receipt already is not written again, so a step
    that runs again resumes."""
    request.check()
    job = request.plan()
    root = request.parts_dir()
    done = []
    progress = request.progress(job)
    for index, (phase, part) in enumerate(job.parts()):
        if index % steps != step:
            continue
        name = f"part-{phase:03d}-{part:05d}"
        receipt = read_json(root / f"{name}.json")
        if receipt is None:
            directory = root / name
            receipt = write_part(job, phase, part, fresh_dir(directory), progress)
            receipt["files"] = [
                p.relative_to(directory).as_posix() for p in files_under(directory, "**/*")
            ]
            push_dir(directory)
            write_json_atomic(receipt, root / f"{name}.json")
        done.append(receipt)
    progress.finish()
    return done


def finish_release_parts(request: ReleaseRequest) -> BlendExports:
    """The last step of a partitioned export: every part's files moved into one staging
    directory with the lists and summaries, swapped in once, and the parts deleted. A part
    without its receipt stops it, naming the part."""
    request.check()
    job = request.plan()
    root = request.parts_dir()
    receipts: dict[str, list[dict[str, Any]]] = {plan.phase.name: [] for plan in job.plans}
    found = []
    for phase, part in job.parts():
        name = f"part-{phase:03d}-{part:05d}"
        receipt = read_json(root / f"{name}.json")
        if receipt is None:
            raise ExportError(
                f"{request.manifest.ref}: part {part} of phase "
                f"{job.plans[phase].phase.name!r} was not written ({root / name}.json missing); "
                "run the export's part steps first"
            )
        receipts[receipt["phase"]].append(receipt)
        found.append((root / name, receipt))
    with replace_dir(request.out) as staging:
        for directory, receipt in found:
            for relative in receipt["files"]:
                staging.add_move(directory / relative, relative)
        exports = _finish(request, job, staging, receipts)
    delete_dir(root)
    return exports
