"""Write a blend as a folder `datasets.load_dataset` reads: one config per phase, each a `train`
split of the blend's parquet export, and a README.md dataset card generated from lineage.

The folder is built in a staging directory beside its destination and renamed into place, so a
failed publish leaves the previous folder (or none), never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mind_assets.blends.export import EXPORT_SCHEMA, export_blend
from mind_assets.blends.manifest import Manifest, manifest_from_json
from mind_assets.lib.prompts import PromptError, load_prompt
from mind_assets.lib.storage import InvalidNameError, asset_path, validate_name
from mind_assets.lib.tokenizer import TokenCounter
from mind_assets.math_traces.sources import MathSource
from mind_assets.metrics.store import metrics_store
from mind_assets.publish.card import (
    PUBLISHED_TAG,
    SPLIT,
    CardFacts,
    PhaseData,
    PromptText,
    SeedRange,
    render_card,
)
from mind_assets.publish.licences import blend_licences
from mind_assets.settings import BlendSettings


class PublishError(ValueError):
    """A blend that cannot be published; the message names the missing file or field."""


@dataclass
class PublishReport:
    folder: Path
    rows: dict[str, int]
    tokens: dict[str, int]
    exported: bool  # whether the parquet export had to be (re)written first


def manifest_path(data_dir: Path, blend: str) -> Path:
    return asset_path(data_dir, "blend_manifest", blend, suffix="") / "manifest.json"


def export_dir(data_dir: Path, blend: str) -> Path:
    return asset_path(data_dir, "blend_exports", blend, suffix="")


def published_dir(data_dir: Path, blend: str) -> Path:
    return asset_path(data_dir, "published", blend, suffix="")


def load_blend_manifest(data_dir: Path, blends_dir: Path, blend: str) -> Manifest:
    """The blend's manifest, or an error saying whether the blend is unknown or not built."""
    try:
        validate_name(blend, kind="blend name")
    except InvalidNameError as error:
        raise PublishError(str(error)) from error
    path = manifest_path(data_dir, blend)
    spec = blends_dir / f"{blend}.yaml"
    if not path.is_file():
        if not spec.is_file():
            known = sorted(p.stem for p in blends_dir.glob("*.yaml")) if blends_dir.is_dir() else []
            raise PublishError(
                f"unknown blend {blend!r}: no spec {spec} and no manifest {path} "
                f"(blend specs in {blends_dir}: {', '.join(known) or 'none'})"
            )
        raise PublishError(
            f"blend {blend!r} has no manifest at {path}: materialize blend_manifest[{blend}]"
        )
    try:
        return manifest_from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise PublishError(f"manifest {path} is not valid JSON: {error}") from error
    except (KeyError, TypeError) as error:
        raise PublishError(f"manifest {path} is malformed: {error!r} (rebuild it)") from error


def export_is_current(manifest: Manifest, manifest_file: Path, exports: Path) -> bool:
    """Whether every phase has shards written after the manifest: an export older than its
    manifest may hold another version of the blend."""
    built = manifest_file.stat().st_mtime
    for phase in manifest.phases:
        shards = sorted((exports / phase.name).glob("shard-*.parquet"))
        if not shards or min(s.stat().st_mtime for s in shards) < built:
            return False
    return True


def _phase_rows(path: Path) -> pa.Table:
    try:
        return pq.read_table(path, columns=["row_id", "blend", "n_tokens"])
    except (pa.ArrowException, OSError) as error:
        raise PublishError(
            f"export shard {path} is not a readable parquet file: {error}"
        ) from error


def _prompts(manifest: Manifest, prompts_dir: Path) -> list[PromptText]:
    """Each (prompt id, version) in the lineage with the file's text when it still is that
    version: prompts are files under `prompts/` named after their id."""
    wanted = {
        (entry["prompt_id"], entry.get("prompt_version") or "")
        for phase in manifest.phases
        for source in phase.sources
        for entry in source.lineage
        if entry.get("prompt_id")
    }
    root = prompts_dir.resolve()
    texts = []
    for prompt_id, version in sorted(wanted):
        path = prompts_dir / f"{prompt_id}.yaml"
        shown = f"prompts/{prompt_id}.yaml"
        if root not in path.resolve().parents:
            texts.append(PromptText(prompt_id, version, shown, None, problem="outside prompts/"))
            continue
        try:
            prompt = load_prompt(path)
        except PromptError as error:
            # The card is public: the build machine's paths stay out of it.
            problem = str(error).replace(str(prompts_dir), "prompts")
            texts.append(PromptText(prompt_id, version, shown, None, problem=problem))
            continue
        if prompt.version == version:
            texts.append(PromptText(prompt_id, version, shown, path.read_text()))
        else:
            texts.append(PromptText(prompt_id, version, shown, None, prompt.version))
    return texts


def _seeds(manifest: Manifest, data_dir: Path) -> dict[str, SeedRange]:
    seeds: dict[str, SeedRange] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            if source.name in seeds:
                continue
            values: list[pa.Array] = []
            for f in source.files:
                path = f.resolve(data_dir)
                if path.is_file() and "seed" in pq.read_schema(path).names:
                    values.append(pq.read_table(path, columns=["seed"])["seed"].combine_chunks())
            if values:
                column = pa.chunked_array(values)
                if len(column):
                    seeds[source.name] = SeedRange(
                        distinct=len(pc.unique(column)),
                        low=pc.min(column).as_py(),
                        high=pc.max(column).as_py(),
                    )
    return seeds


def _rejections(manifest: Manifest, data_dir: Path) -> list[dict[str, Any]]:
    """Per-rule rejections of the partitions the blend reads: conversation filter decisions,
    and the task Q&A rule counts each task_qa materialization records."""
    styles: dict[tuple[str, str | None], list[str]] = {}  # (shard, style or every style)
    families: dict[str, list[str]] = {}
    for phase in manifest.phases:
        for source in phase.sources:
            for f in source.files:
                parts = f.partition.split("|")
                if f.asset == "filtered_conversations":
                    styles.setdefault((parts[0], parts[1]), []).append(source.name)
                elif f.asset == "longest_conversations":
                    styles.setdefault((parts[0], None), []).append(source.name)
                elif f.asset == "task_qa":
                    families.setdefault(parts[0], []).append(source.name)
    if not styles and not families:
        return []
    store = metrics_store(data_dir)
    rows = []
    for r in store.query("SELECT * FROM rejections_per_rule").to_pylist():
        names = styles.get((r["shard"], r["style"]), []) + styles.get((r["shard"], None), [])
        if names:
            rows.append(
                {
                    "sources": ", ".join(dict.fromkeys(names)),
                    "partition": f"{r['shard']}|{r['style']}",
                    "rule": r["rule"],
                    "rejected": r["rejected"],
                    "evaluated": r["evaluated"],
                }
            )
    if families:
        aggregates = store.query(
            "SELECT partition, metric, value FROM partition_aggregates WHERE asset = 'task_qa'"
        ).to_pylist()
        generated = {a["partition"]: a["value"] for a in aggregates if a["metric"] == "generated"}
        for a in aggregates:
            if a["partition"] in families and a["metric"].startswith("rejected/"):
                rows.append(
                    {
                        "sources": ", ".join(dict.fromkeys(families[a["partition"]])),
                        "partition": a["partition"],
                        "rule": a["metric"].removeprefix("rejected/"),
                        "rejected": int(a["value"]),
                        "evaluated": int(generated.get(a["partition"], 0)),
                    }
                )
    return rows


def _stage_phases(manifest: Manifest, exports: Path, staging: Path) -> list[PhaseData]:
    phases = []
    for phase in manifest.phases:
        shards = sorted((exports / phase.name).glob("shard-*.parquet"))
        if not shards:
            raise PublishError(f"blend export {exports / phase.name} has no shard-*.parquet")
        target = staging / phase.name
        target.mkdir()
        files, rows, tokens, num_bytes, first = [], 0, 0, 0, None
        for n, shard in enumerate(shards):
            table = _phase_rows(shard)
            blends = set(table["blend"].to_pylist())
            if blends - {manifest.blend}:
                raise PublishError(
                    f"export shard {shard} holds rows of blend(s) {sorted(blends)}, "
                    f"not {manifest.blend!r}"
                )
            rows += table.num_rows
            metadata = pq.read_metadata(shard)
            num_bytes += sum(
                metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)
            )
            tokens += pc.sum(table["n_tokens"]).as_py() or 0
            if first is None and table.num_rows:
                first = table["row_id"][0].as_py()
            # The Hub's file naming for a split, so tools that infer splits from names agree.
            name = f"{SPLIT}-{n:05d}-of-{len(shards):05d}.parquet"
            shutil.copyfile(shard, target / name)
            files.append(f"{phase.name}/{name}")
        download = sum((staging / f).stat().st_size for f in files)
        phases.append(PhaseData(phase.name, files, rows, tokens, num_bytes, download, first))
    return phases


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace a folder that is not an earlier publish (`--out` pointed elsewhere)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise PublishError(f"{folder} exists and is not a directory")
    card = folder / "README.md"
    earlier = card.is_file() and f"\n- {PUBLISHED_TAG}\n" in card.read_text(errors="replace")
    if any(folder.iterdir()) and not earlier:
        raise PublishError(
            f"{folder} exists and is not a published blend (no README.md tagged {PUBLISHED_TAG}); "
            "choose an empty or new --out directory"
        )


def _replace_dir(staging: Path, folder: Path) -> None:
    """Move the finished `staging` to `folder`, replacing an earlier publish of it."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.rename(folder, old / folder.name)
    try:
        os.rename(staging, folder)
    except OSError:
        if old is not None:
            os.rename(old / folder.name, folder)  # the earlier publish stays where it was
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old)


def publish_blend(
    blend: str,
    *,
    data_dir: Path,
    blends_dir: Path,
    prompts_dir: Path,
    make_counter: Callable[[], TokenCounter],
    out_dir: Path | None = None,
    math_sources: Sequence[MathSource] = (),
    tags: Sequence[str] = (),
    export_options: BlendSettings | None = None,
) -> PublishReport:
    """Write the published folder of `blend` (default `<data_dir>/published/<blend>/`),
    exporting the blend first when its parquet export is missing or older than its manifest.
    `make_counter` builds the token counter only when an export is needed; that export is
    written with `export_options` (default: the `MIND_BLENDS__*` defaults)."""
    manifest = load_blend_manifest(data_dir, blends_dir, blend)
    if not manifest.phases:
        raise PublishError(f"manifest {manifest_path(data_dir, blend)} has no phases")
    folder = out_dir if out_dir is not None else published_dir(data_dir, blend)
    _check_replaceable(folder)
    exports = export_dir(data_dir, blend)
    exported = False
    if not export_is_current(manifest, manifest_path(data_dir, blend), exports):
        export_blend(
            manifest,
            exports,
            make_counter(),
            data_dir=data_dir,
            options=export_options or BlendSettings(),
        )
        exported = True
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging.", dir=folder.parent))
    # mkdtemp makes the directory private; the published folder is meant to be read by others.
    staging.chmod(0o755)
    try:
        phases = _stage_phases(manifest, exports, staging)
        facts = CardFacts(
            manifest=manifest,
            phases=phases,
            schema=EXPORT_SCHEMA,
            prompts=_prompts(manifest, prompts_dir),
            seeds=_seeds(manifest, data_dir),
            rejections=_rejections(manifest, data_dir),
            licences=blend_licences(manifest, data_dir, math_sources),
            tags=list(tags),
        )
        (staging / "README.md").write_text(render_card(facts))
        _replace_dir(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return PublishReport(
        folder,
        rows={p.name: p.rows for p in phases},
        tokens={p.name: p.tokens for p in phases},
        exported=exported,
    )
