"""Corpus: a shard's source rows normalized into raw documents, and their math-aware chunks; the
inbox sensor that turns new corpus files into shards."""

from mind_assets.corpus.assets import chunks, raw_documents
from mind_assets.corpus.outputs import CHUNKS, RAW_DOCUMENTS
from mind_assets.corpus.sensors import corpus_inbox_sensor
from mind_assets.lib.stages import Stage
from mind_assets.settings import CorpusSettings

STAGE = Stage(
    name="corpus",
    description=__doc__,
    assets=(raw_documents, chunks),
    families=(RAW_DOCUMENTS, CHUNKS),
    sensors=(corpus_inbox_sensor,),
    settings=CorpusSettings,
)
