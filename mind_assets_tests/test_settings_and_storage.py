from pathlib import Path

import pyarrow as pa
import pytest

from mind_assets.lib.storage import (
    InvalidNameError,
    asset_path,
    atomic_path,
    validate_name,
    write_parquet_atomic,
)
from mind_assets.settings import EMBEDDED_MODEL, MindSettings


def test_defaults_point_at_embedded_model_and_local_data_dir(monkeypatch):
    for name in ("MIND_DATA_DIR", "MIND_MODEL", "MIND_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = MindSettings()
    assert settings.model == EMBEDDED_MODEL
    assert settings.data_dir == Path("data").resolve()
    assert settings.models_dir == settings.data_dir / "models"


def test_environment_overrides_every_option(monkeypatch, tmp_path):
    monkeypatch.setenv("MIND_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MIND_MODEL", "meta-llama/Llama-3.1-8B-Instruct")
    monkeypatch.setenv("MIND_MAX_MODEL_LEN", "8192")
    monkeypatch.setenv("MIND_MEMORY_FRACTION", "0.85")
    monkeypatch.setenv("MIND_TENSOR_PARALLEL_SIZE", "2")
    monkeypatch.setenv("MIND_MAX_NUM_SEQS", "128")
    settings = MindSettings()
    assert settings.data_dir == tmp_path
    assert settings.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert (settings.max_model_len, settings.memory_fraction) == (8192, 0.85)
    assert (settings.tensor_parallel_size, settings.max_num_seqs) == (2, 128)


def test_each_stage_reads_its_sub_model_from_nested_variables(monkeypatch):
    monkeypatch.setenv("MIND_CORPUS__CHUNK_TOKENS", "300")
    monkeypatch.setenv("MIND_TASK_QA__DECONTAMINATION_NGRAM", "8")
    monkeypatch.setenv("MIND_MATH__SANDBOX", "unsafe-no-isolation")
    monkeypatch.setenv("MIND_DIVERSITY__PRISMATIC_KEEP_FRACTION", "0.25")
    settings = MindSettings()
    assert settings.corpus.chunk_tokens == 300
    assert settings.task_qa.decontamination_ngram == 8
    assert settings.math.sandbox == "unsafe-no-isolation"
    assert settings.diversity.prismatic_keep_fraction == 0.25


def test_a_renamed_flat_variable_is_refused_naming_its_new_name(monkeypatch):
    monkeypatch.setenv("MIND_TASK_QA_ITEMS", "5")
    with pytest.raises(ValueError, match="MIND_TASK_QA_ITEMS is now MIND_TASK_QA__ITEMS"):
        MindSettings()


def test_overlap_must_be_smaller_than_chunk(monkeypatch):
    monkeypatch.setenv("MIND_CORPUS__CHUNK_TOKENS", "100")
    monkeypatch.setenv("MIND_CORPUS__CHUNK_OVERLAP_TOKENS", "100")
    with pytest.raises(ValueError, match="MIND_CORPUS__CHUNK_OVERLAP_TOKENS"):
        MindSettings()


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "x" * 200, "a b"])
def test_names_that_would_escape_the_data_root_are_refused(name):
    with pytest.raises(InvalidNameError, match="cannot escape the data root"):
        validate_name(name, kind="shard name")


def test_asset_path_joins_partition_dimensions(tmp_path):
    assert asset_path(tmp_path, "conversations", "s1", "debate") == (
        tmp_path / "conversations" / "s1" / "debate.parquet"
    )
    with pytest.raises(InvalidNameError):
        asset_path(tmp_path, "conversations", "..", "debate")


def test_failed_write_leaves_no_file_behind(tmp_path):
    target = tmp_path / "out" / "table.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_parquet_write_is_atomic_rename(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet_atomic(pa.table({"a": [1, 2]}), target)
    assert target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
