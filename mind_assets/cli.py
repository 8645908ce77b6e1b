"""The `mind` command line: register shards, prepare the model, run the demo."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable

from mind_assets.corpus.shard_specs import make_shard_spec
from mind_assets.corpus.shards import FieldMap, ShardError, list_shard_specs
from mind_assets.lib.interrupts import restore_interrupts
from mind_assets.lib.storage import InvalidNameError
from mind_assets.settings import get_settings


def _shards_add(args: argparse.Namespace) -> int:
    """register a shard from local jsonl/parquet files or hf://DATASET

    Register shard NAME. SOURCE is one or more local .jsonl/.parquet files, or one hf://DATASET_ID
    (use --config, --split and --rows to pick a slice).
    """
    from mind_assets.corpus.shards import register_shard
    from mind_assets.lib.instance import local_instance

    settings = get_settings()
    spec = make_shard_spec(
        args.name,
        args.sources,
        split=args.split,
        rows=args.rows,
        config_name=args.config,
        fields=FieldMap(
            text=args.text_field, id=args.id_field, url=args.url_field, title=args.title_field
        ),
    )
    register_shard(local_instance(settings), settings, spec)
    print(
        f"registered shard {spec.name!r} ({spec.kind}); materialize raw_documents for it in the UI"
    )
    return 0


def _shards_list(args: argparse.Namespace) -> int:
    """list registered shards"""
    for spec in list_shard_specs(get_settings().data_dir):
        source = (
            ", ".join(spec.paths) if spec.kind == "local" else f"hf://{spec.dataset}:{spec.split}"
        )
        rows = f" rows {spec.start}:{spec.stop if spec.stop is not None else ''}"
        print(f"{spec.name}\t{spec.kind}\t{source}{rows}")
    return 0


def _prepare_model(args: argparse.Namespace) -> int:
    """convert the embedded model to safetensors (cached)"""
    from mind_assets.llm.embedded_model import prepare_embedded_model

    print(prepare_embedded_model(get_settings().models_dir))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """run the main job on the bundled demo corpus"""
    from mind_assets.demo import DEMO_STYLES, format_summary, run_demo
    from mind_assets.metrics.report import format_metrics

    styles = tuple(args.styles.split(",")) if args.styles else DEMO_STYLES
    summary = run_demo(styles, passages=args.passages)
    print(format_summary(summary))
    print()
    print(format_metrics(get_settings().data_dir))
    print()
    print("== mind audit-blend example ==")
    print(summary.audit)
    if not summary.generated_blend_tokens:
        print(
            "error: the demo's blend holds no generated text: the filters kept no conversation "
            "and no task Q&A item (see the rejections above)",
            file=sys.stderr,
        )
        return 1
    return 0


def _gc(args: argparse.Namespace) -> int:
    """list (and with --apply delete) output versions no manifest or current pointer needs, temp
    files of killed writes and staging directories of killed exports and publishes"""
    from mind_assets.blends.gc import collect, format_garbage, parse_duration

    settings = get_settings()
    garbage = collect(
        settings.data_dir,
        parse_duration(args.older_than),
        apply=args.apply,
        keep=settings.blends.keep_versions,
    )
    print(format_garbage(garbage, settings.data_dir, applied=args.apply))
    return 0


def _metrics(args: argparse.Namespace) -> int:
    """quality metrics (parquet under metrics/, read through DuckDB)"""
    from mind_assets.metrics.report import format_metrics
    from mind_assets.metrics.store import metrics_store

    if args.action == "rebuild":
        store = metrics_store(get_settings().data_dir)
        counts = store.rebuild_cache()
        print(f"rebuilt {store.cache_path} from {store.root}:")
        for table, rows in counts.items():
            print(f"  {table}: {rows} rows")
        return 0
    print(
        format_metrics(get_settings().data_dir, views=args.views.split(",") if args.views else None)
    )
    return 0


def _tasks(args: argparse.Namespace) -> int:
    """lm-eval tasks eligible to seed task Q&A"""
    from mind_assets.task_qa.report import format_catalog

    settings = get_settings()
    print(
        format_catalog(
            settings.task_qa.families, refused=args.refused, mirror_dir=settings.task_mirror
        )
    )
    return 0


def _load_manifest(name: str):
    from mind_assets.blends.assets import load_manifest

    return load_manifest(get_settings(), name)


def _export_blend(args: argparse.Namespace) -> int:
    """what the blend_export asset writes, from the shell: shuffled parquet shards per phase
    and/or Megatron indexed datasets with a --data-path list"""
    # The asset's work, for one format or the configured ones; flags override MIND_BLENDS__* for
    # this call.
    from mind_assets.blends.assets import release_request
    from mind_assets.blends.release import write_release
    from mind_assets.llm.resource import LLMResource

    settings = get_settings()
    overrides: dict[str, object] = {}
    if args.shard_rows is not None:
        overrides["export_shard_rows"] = args.shard_rows
    if args.bucket:
        overrides["export_bucket"] = True
    if args.workers is not None:
        overrides["export_workers"] = args.workers
    request = release_request(
        settings,
        _load_manifest(args.name),
        LLMResource.from_settings(settings),
        [args.format] if args.format else settings.blends.export_formats,
        settings.blends.model_copy(update=overrides),
        log=lambda line: print(line, flush=True),
    )
    exports = write_release(request)
    print("\n".join(exports.lines()))
    return 0


def _audit_blend(args: argparse.Namespace) -> int:
    """lineage audit of a blend, stage by stage"""
    from mind_assets.blends.assets import instance_lookup
    from mind_assets.blends.lineage import format_audit
    from mind_assets.lib.instance import local_instance

    settings = get_settings()
    manifest = _load_manifest(args.name)
    lookup = instance_lookup(local_instance(settings))
    print(format_audit(manifest, settings.data_dir, lookup))
    return 0


def _trace(args: argparse.Namespace) -> int:
    """full ancestry of one exported blend row, or of one row of an asset"""
    from mind_assets.blends.lineage import format_trace, trace_asset_row, trace_row

    settings = get_settings()
    if args.asset:
        print(format_trace(trace_asset_row(args.asset, args.row_id, settings.data_dir)))
    else:
        # Only needed when no export of the row's blend version is there to read it from.
        def tokens(manifest):
            from mind_assets.blends.assets import blend_tokenizer, token_cache
            from mind_assets.llm.resource import LLMResource

            llm = LLMResource.from_settings(settings)
            return token_cache(settings, blend_tokenizer(settings, llm, manifest.tokenizer), None)

        print(format_trace(trace_row(args.row_id, settings.data_dir, tokens)))
    return 0


def _blends_versions(args: argparse.Namespace) -> int:
    """every manifest version of a blend: created, tokens, sources, tags, exports

    Every manifest version of blend NAME, oldest first; '*' marks the current one. A version is
    referred to as NAME@VERSION (or a unique prefix of VERSION).
    """
    from mind_assets.blends.release import releases
    from mind_assets.blends.versions import BlendRef, format_versions, version_infos

    data_dir = get_settings().data_dir
    blend = BlendRef.parse(args.name).blend
    exports: dict[str, list[str]] = {}
    for ref, folders in releases(data_dir).items():
        name, _, version = ref.partition("@")
        if name == blend:
            exports.setdefault(version, []).extend(str(f) for f in folders)
    print(format_versions(blend, version_infos(data_dir, blend, exports)))
    return 0


def _blends_tag(args: argparse.Namespace) -> int:
    """pin a blend version under a label: gc keeps it and everything it pins

    Tag NAME@VERSION (NAME alone: the current version) as LABEL, e.g. trained-run-42. A tagged
    version is never deleted by `mind gc`; retention (MIND_BLENDS__KEEP_VERSIONS) applies to
    untagged ones only.
    """
    from mind_assets.blends.versions import BlendRef, tag

    ref = BlendRef.parse(args.ref)
    version = tag(get_settings().data_dir, ref, args.label)
    print(f"tagged {ref.blend}@{version} as {args.label!r}: `mind gc` keeps it and what it pins")
    return 0


def _publish(args: argparse.Namespace) -> int:
    """write a blend (one config per phase) or an asset such as filtered_conversations or task_qa
    (one config per style, task family or source and mode) as a Hugging Face dataset folder with a
    generated dataset card, and upload it with --repo-id"""
    from pathlib import Path

    from mind_assets.publish.dataset import publish
    from mind_assets.publish.hub import hub_token, push_folder

    settings = get_settings()
    # Checked before any work: an upload asked for without a token must not look like success.
    token = hub_token() if args.repo_id else None

    def make_counter():
        from mind_assets.lib.tokenizer import token_counter
        from mind_assets.llm.resource import LLMResource

        return token_counter(LLMResource.from_settings(settings).model_path())

    def make_tokenizer(name):
        from mind_assets.blends.assets import blend_tokenizer
        from mind_assets.llm.resource import LLMResource

        return blend_tokenizer(settings, LLMResource.from_settings(settings), name)

    out_dir = Path(args.out).resolve() if args.out else None
    report = publish(args.name, settings, make_counter, make_tokenizer, out_dir=out_dir)
    if report.exported:
        print(
            f"exported {args.name} first (its parquet export was missing or older than its "
            "manifest)"
        )
    for config, rows in report.rows.items():
        print(f"{args.name}/{config}: {rows} rows, {report.tokens[config]} tokens")
    what = "PHASE" if report.kind == "blend" else "CONFIG"
    print(f"published {report.folder} (datasets.load_dataset({str(report.folder)!r}, {what}))")
    if args.repo_id:
        url = push_folder(report.folder, args.repo_id, token=token, private=args.private)
        print(f"uploaded to https://huggingface.co/datasets/{args.repo_id} ({url})")
    return 0


def _diversity_add(args: argparse.Namespace) -> int:
    """register diversity targets

    TARGET is conversations:<shard>:<style>, task_qa:<family>, solution_traces:<source>:<mode> or
    blend:<blend>:<phase>.
    """
    from mind_assets.diversity.assets import register_targets
    from mind_assets.lib.instance import local_instance

    settings = get_settings()
    for target in register_targets(local_instance(settings), args.targets):
        print(f"registered diversity target {target!r}; materialize `diversity` for it")
    return 0


# argparse's subcommand registry; its class is private, hence the alias.
Commands = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace], int]


def _command(commands: Commands, name: str, run: Handler) -> argparse.ArgumentParser:
    """Subcommand `name`, run by `run`, whose docstring is its help: the first paragraph is the
    line `mind --help` lists, the rest (if any) the description `mind NAME --help` shows."""
    summary, _, description = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    parser = commands.add_parser(name, help=summary, description=description or None)
    parser.set_defaults(func=run)
    return parser


def _command_group(commands: Commands, name: str, help: str) -> Commands:
    """A subcommand with subcommands of its own (`mind blends versions`)."""
    return commands.add_parser(name, help=help).add_subparsers(
        dest=f"{name}_command", required=True
    )


def _add_blend_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME[@VERSION]", help="a blend (its current version) or one version"
    )


def _add_blends_commands(commands: Commands) -> None:
    blends = _command_group(
        commands, "blends", "blend versions: list them, tag the ones a trainer used"
    )
    _command(blends, "versions", _blends_versions).add_argument("name")
    tag = _command(blends, "tag", _blends_tag)
    tag.add_argument("ref", metavar="NAME[@VERSION]")
    tag.add_argument("label")


def _add_shards_commands(commands: Commands) -> None:
    shards = _command_group(commands, "shards", "manage corpus shards")
    add = _command(shards, "add", _shards_add)
    add.add_argument("name")
    add.add_argument("sources", nargs="+", metavar="SOURCE")
    add.add_argument("--split", default="train", help="dataset split (hf sources)")
    add.add_argument("--config", default=None, help="dataset config name (hf sources)")
    add.add_argument("--rows", default=None, help="row range START:STOP (0-based, STOP excluded)")
    add.add_argument("--text-field", default="text")
    add.add_argument("--id-field", default="id")
    add.add_argument("--url-field", default="url")
    add.add_argument("--title-field", default="title")
    _command(shards, "list", _shards_list)


def _add_prepare_model_command(commands: Commands) -> None:
    _command(commands, "prepare-model", _prepare_model)


def _add_demo_command(commands: Commands) -> None:
    demo = _command(commands, "demo", _demo)
    demo.add_argument("--styles", default=None, help="comma-separated styles to generate")
    demo.add_argument(
        "--passages",
        type=int,
        default=8,
        choices=range(1, 31),
        metavar="N",
        help="how many of the 30 bundled passages to use (default 8, sized for a 2-core CPU)",
    )


def _add_tasks_command(commands: Commands) -> None:
    tasks = _command(commands, "tasks", _tasks)
    tasks.add_argument("--refused", action="store_true", help="also list every refused task")


def _add_export_blend_command(commands: Commands) -> None:
    export = _command(commands, "export-blend", _export_blend)
    _add_blend_ref(export)
    export.add_argument(
        "--format",
        choices=("parquet", "megatron"),
        default=None,
        help="only this format (default: MIND_BLENDS__EXPORT_FORMATS); parquet: "
        "blend_exports/NAME/<phase>/; megatron: blend_exports/NAME/megatron/ (same rows, "
        "tokenized)",
    )
    export.add_argument(
        "--shard-rows", type=int, default=None, help="default: MIND_BLENDS__EXPORT_SHARD_ROWS"
    )
    export.add_argument(
        "--bucket",
        action="store_true",
        help="record a sequence-length bucket on each row (MIND_BLENDS__EXPORT_BUCKET)",
    )
    export.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for tokenizing what the token cache lacks "
        "(default: MIND_BLENDS__EXPORT_WORKERS; 0: every CPU this process may use)",
    )


def _add_audit_blend_command(commands: Commands) -> None:
    _add_blend_ref(_command(commands, "audit-blend", _audit_blend))


def _add_publish_command(commands: Commands) -> None:
    publish = _command(commands, "publish", _publish)
    publish.add_argument("name", metavar="ASSET_OR_BLEND")
    publish.add_argument(
        "--out", default=None, metavar="DIR", help="folder to write (default: published/NAME)"
    )
    publish.add_argument(
        "--repo-id",
        default=None,
        metavar="ID",
        help="also upload to this Hub dataset repository (needs HF_TOKEN)",
    )
    publish.add_argument(
        "--private", action="store_true", help="create the Hub repository as private"
    )


def _add_trace_command(commands: Commands) -> None:
    trace = _command(commands, "trace", _trace)
    trace.add_argument(
        "row_id",
        help="an exported row, e.g. example@20261205T153000123456Z-3f2a9c01b2d4e5f6:phase1:42 (the "
        "row_id of the parquet export and of the Megatron documents.parquet), or example:phase1:42 "
        "for the current version; with --asset, the id of a row of that asset",
    )
    trace.add_argument(
        "--asset",
        default=None,
        metavar="NAME",
        help="ROW_ID is the id of a row of this asset (e.g. filtered_conversations), as a "
        "published asset names its rows",
    )


def _add_diversity_commands(commands: Commands) -> None:
    diversity = _command_group(commands, "diversity", "diversity targets (G-Vendi)")
    _command(diversity, "add", _diversity_add).add_argument("targets", nargs="+", metavar="TARGET")


def _add_gc_command(commands: Commands) -> None:
    gc = _command(commands, "gc", _gc)
    gc.add_argument(
        "--older-than",
        default="1h",
        metavar="AGE",
        help="leave anything younger alone, e.g. 30d, 12h, 0 (default 1h: writes in flight keep "
        "their new version for a moment before the pointer moves)",
    )
    gc.add_argument("--apply", action="store_true", help="delete (default: dry run)")


def _add_metrics_command(commands: Commands) -> None:
    metrics = _command(commands, "metrics", _metrics)
    metrics.add_argument(
        "action",
        nargs="?",
        choices=["report", "rebuild"],
        default="report",
        help="report: print the views (default); rebuild: rewrite metrics.duckdb, the copy for "
        "DuckDB clients, from the parquet files (an unreadable one is moved aside)",
    )
    metrics.add_argument(
        "--views", default=None, help="comma-separated views (default: all of them)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mind", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    # Subcommands are listed in `mind --help` in this order.
    _add_shards_commands(commands)
    _add_prepare_model_command(commands)
    _add_demo_command(commands)
    _add_tasks_command(commands)
    _add_export_blend_command(commands)
    _add_audit_blend_command(commands)
    _add_publish_command(commands)
    _add_trace_command(commands)
    _add_blends_commands(commands)
    _add_diversity_commands(commands)
    _add_gc_command(commands)
    _add_metrics_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    restore_interrupts()  # before any in-process Dagster run copies SIGINT onto SIGTERM
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ShardError, InvalidNameError, ValueError, KeyError, FileNotFoundError) as error:
        print(f"mind: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
