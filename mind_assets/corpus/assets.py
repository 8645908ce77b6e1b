"""Corpus assets, per shard: `raw_documents` (normalized source rows) and `chunks`."""

import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from mind_assets.corpus.chunking import chunk_rows
from mind_assets.corpus.outputs import CHUNKS, RAW_DOCUMENTS
from mind_assets.corpus.shards import load_shard_spec
from mind_assets.corpus.sources import read_raw_documents
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.metadata import output_result
from mind_assets.lib.tokenizer import token_counter
from mind_assets.llm.resource import LLMResource
from mind_assets.metrics.store import metrics_store, with_partition_columns
from mind_assets.settings import get_settings

shards_partitions = DynamicPartitionsDefinition(name=SHARDS_PARTITION)
CORPUS_ASSET = {
    "partitions_def": shards_partitions,
    "group_name": "corpus",
    "kinds": {"parquet"},
    "code_version": "1",
}


@asset(
    **CORPUS_ASSET,
    description="A shard's source rows, normalized: doc_id, source, url, title, text, n_chars, "
    "sha256. Register shards with `mind shards add`.",
)
def raw_documents(context: AssetExecutionContext) -> MaterializeResult:
    settings = get_settings()
    out = RAW_DOCUMENTS.partition(settings.data_dir, context.partition_key)
    spec = load_shard_spec(settings.data_dir, out.keys["shard"])
    table, report = read_raw_documents(spec)
    out.write(table)
    metrics_store(settings.data_dir).replace_partition(
        "documents", out.keys, with_partition_columns(table.drop(["text"]), **out.keys)
    )
    context.log.info("shard %s: %d documents written to %s", out.key, table.num_rows, out.path)
    return output_result(
        table,
        out.path,
        preview=["doc_id", "source", "title", "n_chars", "text"],
        rows_read=report.rows_read,
        exact_duplicates_dropped=report.exact_duplicates_dropped,
        chars=int(pc.sum(table.column("n_chars")).as_py()),
        source=MetadataValue.json(spec.model_dump()),
    )


@asset(
    **CORPUS_ASSET,
    deps=[raw_documents],
    automation_condition=AutomationCondition.eager(),
    description="Documents cut into ~chunk_tokens-token windows on paragraph/sentence boundaries, "
    "never inside math or LaTeX environments.",
)
def chunks(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    settings = get_settings()
    out = CHUNKS.partition(settings.data_dir, context.partition_key)
    documents = RAW_DOCUMENTS.partition(settings.data_dir, out.keys).read()
    table = chunk_rows(
        documents,
        token_counter(llm.model_path()),
        shard=out.keys["shard"],
        tokenizer=llm.model_name,
        target_tokens=settings.corpus.chunk_tokens,
        overlap_tokens=settings.corpus.chunk_overlap_tokens,
    )
    out.write(table)
    metrics_store(settings.data_dir).replace_partition("chunks", out.keys, table)
    tokens = table.column("n_tokens")
    context.log.info("shard %s: %d documents -> %d chunks", out.key, documents.num_rows, len(table))
    return output_result(
        table,
        out.path,
        preview=["chunk_id", "n_tokens", "text"],
        documents=documents.num_rows,
        tokens=int(pc.sum(tokens).as_py() or 0),
        mean_tokens=float(pc.mean(tokens).as_py() or 0.0),
        oversize_chunks=int(pc.sum(pc.greater(tokens, settings.corpus.chunk_tokens)).as_py() or 0),
        chunk_tokens_target=settings.corpus.chunk_tokens,
    )
