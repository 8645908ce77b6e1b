import re
from pathlib import Path

import pyarrow as pa
import pytest

from mind_assets.lib.storage import (
    ROW_GROUP_ROWS,
    InvalidNameError,
    Staging,
    asset_path,
    atomic_path,
    validate_name,
    write_parquet_atomic,
)
from mind_assets.settings import EMBEDDED_MODEL, PROJECT_DIR, MindSettings, StageSettings


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
    monkeypatch.setenv("MIND_DECONTAMINATION__NGRAM", "10")
    monkeypatch.setenv("MIND_MATH__SANDBOX", "unsafe-no-isolation")
    monkeypatch.setenv("MIND_DIVERSITY__PRISMATIC_KEEP_FRACTION", "0.25")
    settings = MindSettings()
    assert settings.corpus.chunk_tokens == 300
    assert settings.decontamination.ngram == 10
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


def settings_variables() -> list[tuple[str, tuple[str, ...], object]]:
    """(environment variable, attribute path, default) of every setting, stage sub-models
    included."""
    found = []
    for name, field in MindSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, StageSettings):
            found += [
                (
                    f"MIND_{name.upper()}__{sub.upper()}",
                    (name, sub),
                    f.get_default(call_default_factory=True),
                )
                for sub, f in type(default).model_fields.items()
            ]
        else:
            found.append((field.alias or f"MIND_{name.upper()}", (name,), default))
    return found


def documented_defaults() -> dict[str, str]:
    """The generated settings table of docs/configuration.md: variable -> its default cell."""
    rows = {}
    for line in (PROJECT_DIR / "docs" / "configuration.md").read_text().splitlines():
        match = re.match(r"\| `(MIND_[A-Z0-9_]+)` \| (.*?) \| ", line)
        if match:
            rows[match.group(1)] = match.group(2).replace("\\|", "|")
    return rows


def setting(variable: str, path: tuple[str, ...]) -> object:
    value: object = MindSettings()
    for attribute in path:
        value = getattr(value, attribute)
    return value


def test_every_setting_is_in_the_configuration_table_with_its_default(monkeypatch):
    """A documented default, set as its variable, gives what leaving the variable unset gives."""
    table = documented_defaults()
    variables = settings_variables()
    assert [v for v, _, _ in variables if v not in table] == []
    wrong = []
    for variable, path, default in variables:
        cell = table[variable]
        monkeypatch.delenv(variable, raising=False)
        if cell == "unset" or cell.startswith("`$MIND_DATA_DIR/"):
            # unset, or what unset means (`$MIND_DATA_DIR/models`)
            ok = default is None
        elif cell.startswith("`<repo>/"):
            ok = default == PROJECT_DIR / cell.strip("`").removeprefix("<repo>/")
        else:
            unset = setting(variable, path)
            monkeypatch.setenv(variable, cell.strip("`"))
            ok = setting(variable, path) == unset
            monkeypatch.delenv(variable)
        if not ok:
            wrong.append((variable, cell, default))
    assert wrong == []


@pytest.mark.parametrize("rows", [0, 5, ROW_GROUP_ROWS, 2 * ROW_GROUP_ROWS + 777])
def test_a_table_written_piece_by_piece_has_the_bytes_of_one_written_whole(tmp_path, rows):
    table = pa.table(
        {"n": pa.array(range(rows), pa.int64()), "s": [f"row {i}" for i in range(rows)]}
    )
    staging = Staging(tmp_path)
    whole = staging.add_table("whole.parquet", table)
    with staging.table_writer("pieces.parquet", table.schema) as write:
        start = 0
        for size in [1, 999, ROW_GROUP_ROWS - 3, 7, ROW_GROUP_ROWS * 2]:
            write(table.slice(start, size))
            start += size
    assert (tmp_path / "pieces.parquet").read_bytes() == whole.read_bytes()
