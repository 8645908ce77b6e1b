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

from mind_assets.corpus.chunking import chunk_rows
from mind_assets.corpus.outputs import CHUNKS, RAW_DOCUMENTS
from mind_assets.corpus.schema import RAW_DOCUMENT_SCHEMA
from mind_assets.corpus.shards import load_shard_spec
from mind_assets.corpus.sources import read_raw_documents
from mind_assets.decontamination.assets import benchmark_index
from mind_assets.decontamination.check import decontaminate_split
from mind_assets.decontamination.steps import (
    current_index,
    judge_usage,
    report_check,
    with_judge,
)
from mind_assets.lib.instance import SHARDS_PARTITION
from mind_assets.lib.metadata import output_result
from mind_assets.lib.outputs import Partition
from mind_assets.lib.quarantine import write_split
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
    deps=[benchmark_index],
)
def raw_documents(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """A shard's source rows, normalized: doc_id, source, url, title, text, n_chars, sha256.
    Documents that hold a benchmark item go to <shard>.quarantine.parquet (rule `contaminated`:
    benchmark, item, matched span); chunks are still cut from them. Register shards with `mind
    shards add`.
    """
    settings = get_settings()
    out = RAW_DOCUMENTS.partition(settings.data_dir, context.partition_key)
    spec = load_shard_spec(settings.data_dir, out.keys["shard"])
    table, report = read_raw_documents(spec)
    decontamination = current_index(settings)
    judge = with_judge(decontamination, settings, llm, "raw_documents", out.keys, context.log)
    checked = decontaminate_split(
        decontamination,
        table,
        RAW_DOCUMENTS.quarantine_schema.empty_table(),
        RAW_DOCUMENTS.quarantine_schema,
    )
    written = write_split(
        RAW_DOCUMENTS, settings.data_dir, out.keys, checked.accepted, checked.quarantine
    )
    metrics_store(settings.data_dir).replace_partition(
        "documents", out.keys, with_partition_columns(table.drop(["text"]), **out.keys)
    )
    context.log.info(
        "shard %s: %d documents written to %s, %d quarantined as holding a benchmark item",
        out.key,
        checked.accepted.num_rows,
        out.path,
        checked.quarantine.num_rows,
    )
    return output_result(
        checked.accepted,
        written.accepted_path,
        preview=["doc_id", "source", "title", "n_chars", "text"],
        rows_read=report.rows_read,
        exact_duplicates_dropped=report.exact_duplicates_dropped,
        chars=int(pc.sum(table.column("n_chars")).as_py() or 0),
        source=MetadataValue.json(spec.model_dump()),
        quarantine_path=MetadataValue.path(str(written.quarantine_path)),
        quarantined=checked.quarantine.num_rows,
        **report_check(settings, "raw_documents", out.key, checked.record),
        **judge_usage(settings, llm, judge, "raw_documents", out.key),
    )


def shard_documents(documents: Partition) -> pa.Table:
    """Every document of a shard, accepted and quarantined alike: chunks are cut from all of
    them (a benchmark item on a long page spoils only the chunk that holds it, and that chunk's
    conversations are quarantined where they are filtered)."""
    accepted = documents.read(columns=RAW_DOCUMENT_SCHEMA.names)
    if not documents.has_quarantine():
        return accepted
    quarantined = documents.read_quarantine(columns=RAW_DOCUMENT_SCHEMA.names)
    return pa.concat_tables(
        [accepted.replace_schema_metadata(None), quarantined.replace_schema_metadata(None)]
    )


@asset(
    **CORPUS_ASSET,
    deps=[raw_documents],
    automation_condition=AutomationCondition.eager(),
)
def chunks(context: AssetExecutionContext, llm: LLMResource) -> MaterializeResult:
    """Documents cut into ~chunk_tokens-token windows on paragraph/sentence boundaries, never
    inside math or LaTeX environments.
    """
    settings = get_settings()
    out = CHUNKS.partition(settings.data_dir, context.partition_key)
    documents = shard_documents(RAW_DOCUMENTS.partition(settings.data_dir, out.keys))
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
