"""Corpus assets, per shard: `raw_documents` (normalized source rows) and `chunks`."""

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from mind_assets.corpus.chunking import chunk_text
from mind_assets.corpus.outputs import CHUNKS, RAW_DOCUMENTS
from mind_assets.corpus.schema import CHUNK_SCHEMA
from mind_assets.corpus.shards import load_shard_spec
from mind_assets.corpus.sources import read_raw_documents
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.metadata import file_data_version, parquet_metadata
from mind_assets.lib.storage import read_output, write_parquet_version
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store, with_partition_columns
from mind_assets.settings import get_settings

shards_partitions = DynamicPartitionsDefinition(name=SHARDS_PARTITION)


@asset(
    partitions_def=shards_partitions,
    group_name="corpus",
    kinds={"parquet"},
    code_version="1",
    description="A shard's source rows, normalized: doc_id, source, url, title, text, n_chars, "
    "sha256. Register shards with `mind shards add`.",
)
def raw_documents(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    shard = context.partition_key
    spec = load_shard_spec(settings.shard_specs_dir, shard)
    table, report = read_raw_documents(spec)
    path = write_parquet_version(table, RAW_DOCUMENTS.path(settings.data_dir, {"shard": shard}))
    metrics_store(settings.data_dir).replace_partition(
        "documents", {"shard": shard}, with_partition_columns(table.drop(["text"]), shard=shard)
    )
    context.log.info("shard %s: %d documents written to %s", shard, table.num_rows, path)
    return MaterializeResult(
        metadata={
            **parquet_metadata(table, path, ["doc_id", "source", "title", "n_chars", "text"]),
            "rows_read": report.rows_read,
            "exact_duplicates_dropped": report.exact_duplicates_dropped,
            "chars": int(pc.sum(table.column("n_chars")).as_py()),
            "source": MetadataValue.json(spec.model_dump()),
        },
        data_version=file_data_version(path),
    )


@asset(
    partitions_def=shards_partitions,
    deps=[raw_documents],
    automation_condition=AutomationCondition.eager(),
    group_name="corpus",
    kinds={"parquet"},
    code_version="1",
    description="Documents cut into ~chunk_tokens-token windows on paragraph/sentence boundaries, "
    "never inside math or LaTeX environments.",
)
def chunks(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    shard = context.partition_key
    documents = read_output(RAW_DOCUMENTS.path(settings.data_dir, {"shard": shard}))
    model_path = llm.model_path()
    count = token_counter(model_path)
    rows = []
    for doc_id, text in zip(
        documents.column("doc_id").to_pylist(), documents.column("text").to_pylist(), strict=True
    ):
        for chunk in chunk_text(
            text,
            count,
            target_tokens=settings.corpus.chunk_tokens,
            overlap_tokens=settings.corpus.chunk_overlap_tokens,
        ):
            rows.append(
                {
                    "chunk_id": f"{doc_id}#{chunk.index}",
                    "doc_id": doc_id,
                    "shard": shard,
                    "chunk_index": chunk.index,
                    "text": chunk.text,
                    "n_tokens": chunk.n_tokens,
                    "char_start": chunk.start,
                    "char_end": chunk.end,
                    "tokenizer": llm.model_name,
                }
            )
    table = pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA)
    path = write_parquet_version(table, CHUNKS.path(settings.data_dir, {"shard": shard}))
    metrics_store(settings.data_dir).replace_partition("chunks", {"shard": shard}, table)
    tokens = table.column("n_tokens")
    context.log.info("shard %s: %d documents -> %d chunks", shard, documents.num_rows, len(rows))
    return MaterializeResult(
        metadata={
            **parquet_metadata(table, path, ["chunk_id", "n_tokens", "text"]),
            "documents": documents.num_rows,
            "tokens": int(pc.sum(tokens).as_py() or 0),
            "mean_tokens": float(pc.mean(tokens).as_py() or 0.0),
            "oversize_chunks": int(
                pc.sum(pc.greater(tokens, settings.corpus.chunk_tokens)).as_py() or 0
            ),
            "chunk_tokens_target": settings.corpus.chunk_tokens,
        },
        data_version=file_data_version(path),
    )
