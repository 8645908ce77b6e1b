"""The `mind` command line: register shards, prepare the model, run the demo."""

from __future__ import annotations

import argparse
import logging
import sys

from mind_assets.corpus.shards import FieldMap, ShardError, list_shard_specs, make_shard_spec
from mind_assets.lib.storage import InvalidNameError
from mind_assets.settings import get_settings


def _shards_add(args: argparse.Namespace) -> int:
    from mind_assets.lib.instance import local_instance, register_shard

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
    for spec in list_shard_specs(get_settings().shard_specs_dir):
        source = (
            ", ".join(spec.paths) if spec.kind == "local" else f"hf://{spec.dataset}:{spec.split}"
        )
        rows = f" rows {spec.start}:{spec.stop if spec.stop is not None else ''}"
        print(f"{spec.name}\t{spec.kind}\t{source}{rows}")
    return 0


def _prepare_model(args: argparse.Namespace) -> int:
    from mind_assets.llm.embedded_model import prepare_embedded_model

    print(prepare_embedded_model(get_settings().models_dir))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mind_assets.demo import DEMO_STYLES, format_summary, run_demo

    styles = tuple(args.styles.split(",")) if args.styles else DEMO_STYLES
    print(format_summary(run_demo(styles)))
    from mind_assets.metrics.report import format_metrics

    print()
    print(format_metrics(get_settings().data_dir))
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from mind_assets.metrics.report import format_metrics

    print(
        format_metrics(get_settings().data_dir, views=args.views.split(",") if args.views else None)
    )
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from mind_assets.task_qa.report import format_catalog

    print(format_catalog(refused=args.refused))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mind", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    shards = commands.add_parser("shards", help="manage corpus shards").add_subparsers(
        dest="shards_command", required=True
    )
    add = shards.add_parser(
        "add",
        help="register a shard from local jsonl/parquet files or hf://DATASET",
        description="Register shard NAME. SOURCE is one or more local .jsonl/.parquet files, or "
        "one hf://DATASET_ID (use --config, --split and --rows to pick a slice).",
    )
    add.add_argument("name")
    add.add_argument("sources", nargs="+", metavar="SOURCE")
    add.add_argument("--split", default="train", help="dataset split (hf sources)")
    add.add_argument("--config", default=None, help="dataset config name (hf sources)")
    add.add_argument("--rows", default=None, help="row range START:STOP (0-based, STOP excluded)")
    add.add_argument("--text-field", default="text")
    add.add_argument("--id-field", default="id")
    add.add_argument("--url-field", default="url")
    add.add_argument("--title-field", default="title")
    add.set_defaults(func=_shards_add)
    shards.add_parser("list", help="list registered shards").set_defaults(func=_shards_list)

    commands.add_parser(
        "prepare-model", help="convert the embedded model to safetensors (cached)"
    ).set_defaults(func=_prepare_model)

    demo = commands.add_parser("demo", help="run the main job on the bundled demo corpus")
    demo.add_argument("--styles", default=None, help="comma-separated styles to generate")
    demo.set_defaults(func=_demo)
    tasks = commands.add_parser("tasks", help="lm-eval tasks eligible to seed task Q&A")
    tasks.add_argument("--refused", action="store_true", help="also list every refused task")
    tasks.set_defaults(func=_tasks)

    metrics = commands.add_parser("metrics", help="quality metrics from the DuckDB store")
    metrics.add_argument(
        "--views", default=None, help="comma-separated views (default: all of them)"
    )
    metrics.set_defaults(func=_metrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ShardError, InvalidNameError, ValueError) as error:
        print(f"mind: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
