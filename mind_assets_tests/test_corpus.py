"""raw_documents: normalisation, shard registration, and clear errors on bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from mind_assets.cli import main as mind_cli
from mind_assets.corpus.assets import raw_documents
from mind_assets.corpus.normalize import normalize_text
from mind_assets.corpus.shard_specs import make_shard_spec
from mind_assets.corpus.shards import ShardError
from mind_assets.corpus.sources import CorpusError, read_raw_documents
from mind_assets.lib.storage import asset_path
from mind_assets.llm.resource import LLMResource
from mind_assets.settings import get_settings
from mind_assets_tests.conftest import napkin_shard


def write_jsonl(path, rows):
    path.write_bytes(
        b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in rows)
    )
    return path


def materialize_shard(tmp_path, register, instance, name, files):
    register(make_shard_spec(name, [str(f) for f in files]))
    return materialize(
        [raw_documents],
        partition_key=name,
        instance=instance,
        resources={"llm": LLMResource.from_settings(get_settings())},
        raise_on_error=False,
    )


def failure_message(result):
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected the step to fail"
    return failures[0].step_failure_data.error.to_string()


def assert_no_output(settings, shard):
    out = asset_path(settings.data_dir, "raw_documents", shard)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_normalisation_keeps_math_and_cleans_whitespace():
    raw = "A\r\nB  \n\n\n\nC\x00 $x^2$ ²"
    assert normalize_text(raw) == "A\nB\n\nC $x^2$ ²"


def test_real_napkin_rows_become_raw_documents(settings):
    table, report = read_raw_documents(napkin_shard("napkin3", 3))
    assert table.num_rows == 3 and report.rows_read == 3
    assert table.column_names == ["doc_id", "source", "url", "title", "text", "n_chars", "sha256"]
    row = table.to_pylist()[0]
    assert row["source"].endswith("sections.jsonl#0") and row["url"].startswith("http")
    assert row["n_chars"] == len(row["text"]) and "$" in row["text"]


def test_missing_text_column_names_file_and_row(tmp_path, settings, register, instance):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "content": "x"}])
    result = materialize_shard(tmp_path, register, instance, "notext", [path])
    assert not result.success
    assert f"{path} row 0: no 'text' field" in failure_message(result)
    assert_no_output(settings, "notext")


def test_parquet_without_text_column_names_file(tmp_path, settings):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(CorpusError, match=rf"{path}: no 'text' column \(columns: body\)"):
        read_raw_documents(make_shard_spec("pq", [str(path)]))


def test_empty_text_names_file_and_row(tmp_path, settings, register, instance):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": "a", "text": "fine"}, {"id": "b", "text": "ok"}, {"id": "c", "text": "  \n "}],
    )
    result = materialize_shard(tmp_path, register, instance, "empty", [path])
    assert f"{path} row 2: empty text" in failure_message(result)
    assert_no_output(settings, "empty")


def test_an_empty_file_is_named_and_called_empty(tmp_path, settings, register, instance):
    fine = write_jsonl(tmp_path / "fine.jsonl", [{"id": "a", "text": "fine"}])
    blank = write_jsonl(tmp_path / "blank.jsonl", [b"\n", b"  \n"])
    result = materialize_shard(tmp_path, register, instance, "blankfile", [fine, blank])
    assert f"{blank}: the file is empty (no rows)" in failure_message(result)
    assert_no_output(settings, "blankfile")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(CorpusError, match=rf"{empty}: the file is empty"):
        read_raw_documents(make_shard_spec("emptypq", [str(empty)]))


def test_a_row_range_past_the_end_names_the_files_and_the_range(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "fine"}])
    with pytest.raises(CorpusError, match=rf"shard 'past': no rows in {path} within rows 5:9"):
        read_raw_documents(make_shard_spec("past", [str(path)], rows="5:9"))


def test_invalid_utf8_names_file_and_row(tmp_path, settings, register, instance):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": "a", "text": "fine"}, b'{"id": "b", "text": "bad \xff\xfe"}\n'],
    )
    result = materialize_shard(tmp_path, register, instance, "utf8", [path])
    assert f"{path} row 1 (line 2): invalid UTF-8" in failure_message(result)
    assert_no_output(settings, "utf8")


def test_invalid_utf8_in_parquet_binary_column(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": pa.array([b"ok", b"\xff"], pa.binary())}), path)
    with pytest.raises(CorpusError, match=rf"{path} row 1: column 'text' is not valid UTF-8"):
        read_raw_documents(make_shard_spec("pqb", [str(path)]))


def test_missing_path_is_refused_at_registration_and_at_materialization(
    tmp_path, settings, register, instance
):
    with pytest.raises(ShardError, match=r"corpus file not found: .*nope\.jsonl"):
        make_shard_spec("gone", [str(tmp_path / "nope.jsonl")])
    path = write_jsonl(tmp_path / "later.jsonl", [{"text": "x"}])
    register(make_shard_spec("vanished", [str(path)]))
    path.unlink()
    result = materialize(
        [raw_documents],
        partition_key="vanished",
        instance=instance,
        raise_on_error=False,
        resources={"llm": LLMResource.from_settings(settings)},  # the paraphrase judge's
    )
    assert f"corpus file not found: {path}" in failure_message(result)
    assert_no_output(settings, "vanished")


@pytest.mark.parametrize("bad_name", ["../x", "a/b"])
def test_shard_name_escaping_the_data_root_is_refused(tmp_path, settings, capsys, bad_name):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    assert mind_cli(["shards", "add", bad_name, str(path)]) == 2
    assert "cannot escape the data root" in capsys.readouterr().err
    assert not settings.data_dir.exists() or not any(settings.data_dir.rglob("*.json"))


def test_duplicate_source_ids_are_an_error_but_duplicate_texts_without_ids_are_dropped(tmp_path):
    with_ids = write_jsonl(
        tmp_path / "a.jsonl", [{"id": "1", "text": "x"}, {"id": "1", "text": "y"}]
    )
    with pytest.raises(CorpusError, match=r"row 1: duplicate 'id' '1' \(first seen at .*#0\)"):
        read_raw_documents(make_shard_spec("dup", [str(with_ids)]))
    no_ids = write_jsonl(
        tmp_path / "b.jsonl", [{"text": "same"}, {"text": "same"}, {"text": "other"}]
    )
    table, report = read_raw_documents(make_shard_spec("dup2", [str(no_ids)]))
    assert table.num_rows == 2 and report.exact_duplicates_dropped == 1


def test_row_range_selects_a_slice_of_local_files(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": str(i), "text": f"t{i}"} for i in range(10)])
    table, _ = read_raw_documents(make_shard_spec("slice", [str(path)], rows="3:6"))
    assert table.column("doc_id").to_pylist() == ["3", "4", "5"]


def test_hf_dataset_source_reads_a_row_range_through_datasets(tmp_path):
    # A local dataset directory goes through the same `datasets.load_dataset` path as a hub id.
    data = tmp_path / "owm" / "data"
    data.mkdir(parents=True)
    pq.write_table(
        pa.table({"url": [f"u{i}" for i in range(8)], "text": [f"page {i} $x$" for i in range(8)]}),
        data / "train-00000.parquet",
    )
    spec = make_shard_spec("owm", [f"hf://{tmp_path / 'owm'}"], split="train", rows="2:5")
    table, _ = read_raw_documents(spec)
    assert table.column("url").to_pylist() == ["u2", "u3", "u4"]
    assert table.column("source").to_pylist()[0].endswith(":train#2")
