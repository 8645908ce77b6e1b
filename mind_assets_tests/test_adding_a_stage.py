"""docs/adding-a-stage.md, followed literally: in a copy of the repository, every file the page
titles with a path is written and its one-line edit applied; the change is one new package (and
its test) plus one line elsewhere, and then the code location validates, the import test passes
and the new stage materializes through Dagster on real text, its rows tracing to their raw
documents and its family open to blends."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mind_assets.settings import PROJECT_DIR
from mind_assets_tests.conftest import NAPKIN

GUIDE = PROJECT_DIR / "docs" / "adding-a-stage.md"
COPIED = ("mind_assets", "mind_assets_tests", "prompts", "blends", "docs")
COPIED_FILES = ("workspace.yaml", "dagster.yaml", "pyproject.toml")
NEW_FILE = re.compile(r'```python title="(?P<path>[^"]+)"\n(?P<body>.*?)```', re.S)
EDIT = re.compile(
    r'```text insert-after="(?P<after>(?:[^"\\]|\\.)*)" file="(?P<path>[^"]+)"\n(?P<body>.*?)```',
    re.S,
)


def follow_the_guide(copy: Path) -> tuple[list[str], list[str]]:
    """Apply the page to `copy`: (files written, files edited)."""
    text = GUIDE.read_text()
    written = []
    for block in NEW_FILE.finditer(text):
        target = copy / block["path"]
        assert not target.exists(), f"the guide overwrites {block['path']}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block["body"])
        written.append(block["path"])
    edited = []
    for block in EDIT.finditer(text):
        target = copy / block["path"]
        anchor = block["after"].replace('\\"', '"')
        lines = target.read_text().splitlines(keepends=True)
        matches = [i for i, line in enumerate(lines) if line.rstrip("\n") == anchor]
        assert len(matches) == 1, f"{block['path']}: the line {anchor!r} is not there once"
        lines[matches[0] + 1 : matches[0] + 1] = block["body"].splitlines(keepends=True)
        target.write_text("".join(lines))
        edited.append(block["path"])
    return written, edited


def run_in(copy: Path, *command: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    base = {n: v for n, v in os.environ.items() if not n.startswith(("MIND_", "DAGSTER_"))}
    return subprocess.run(
        command,
        cwd=copy,
        env={**base, "PYTHONPATH": str(copy), **environment},
        capture_output=True,
        text=True,
        timeout=900,
    )


MATERIALIZE = textwrap.dedent(
    """
    import sys
    from dagster import AssetKey, instance_for_test, materialize

    from mind_assets.blends.assets import blend_manifest
    from mind_assets.blends.families import BLEND_SOURCES
    from mind_assets.blends.lineage import trace_asset_row
    from mind_assets.corpus.shards import ShardSpec, register_shard
    from mind_assets.definitions import ASSETS
    from mind_assets.lib.storage import read_output
    from mind_assets.llm.resource import LLMResource
    from mind_assets.paragraphs.outputs import PARAGRAPHS
    from mind_assets.settings import get_settings

    settings = get_settings()
    spec = ShardSpec(name="napkin", kind="local", paths=[sys.argv[1]], start=0, stop=3)
    with instance_for_test() as instance:
        register_shard(instance, settings, spec)
        result = materialize(
            ASSETS,
            selection=["raw_documents", "paragraphs"],
            partition_key="napkin",
            instance=instance,
            resources={"llm": LLMResource.from_settings(settings)},
        )
        assert result.success
        [event] = result.asset_materializations_for_node("paragraphs")
        rows = read_output(PARAGRAPHS.path(settings.data_dir, {"shard": "napkin"})).to_pylist()
        assert rows and event.metadata["dagster/row_count"].value == len(rows)
        documents = read_output(settings.data_dir / "raw_documents" / "napkin.parquet")
        assert {r["doc_id"] for r in rows} <= set(documents["doc_id"].to_pylist())
        ancestry = trace_asset_row("paragraphs", rows[0]["paragraph_id"], settings.data_dir)
        assert ancestry["raw_document"]["doc_id"] == rows[0]["doc_id"]
        assert "paragraphs" in BLEND_SOURCES
        assert AssetKey("paragraphs") in set(blend_manifest.dependency_keys)
        print(f"paragraphs: {len(rows)} rows from {documents.num_rows} documents")
    """
)


@pytest.fixture(scope="module")
def copy_with_the_new_stage(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("repo") / "mind-assets"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in COPIED:
        shutil.copytree(PROJECT_DIR / name, copy / name, ignore=ignore)
    for name in COPIED_FILES:
        shutil.copyfile(PROJECT_DIR / name, copy / name)
    written, edited = follow_the_guide(copy)
    assert written and edited
    return copy


def changed_lines(original: Path, changed: Path) -> list[str]:
    diff = difflib.unified_diff(
        original.read_text().splitlines(), changed.read_text().splitlines(), lineterm="", n=0
    )
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_the_guide_adds_one_package_and_one_line(copy_with_the_new_stage):
    copy = copy_with_the_new_stage
    new_files = sorted(
        p.relative_to(copy).as_posix()
        for p in copy.rglob("*.py")
        if not (PROJECT_DIR / p.relative_to(copy)).exists()
    )
    assert all(
        f.startswith("mind_assets/paragraphs/") or f == "mind_assets_tests/test_paragraphs.py"
        for f in new_files
    ), new_files
    changed = {
        p.relative_to(copy).as_posix(): changed_lines(PROJECT_DIR / p.relative_to(copy), p)
        for p in copy.rglob("*.py")
        if (PROJECT_DIR / p.relative_to(copy)).exists()
    }
    changed = {path: lines for path, lines in changed.items() if lines}
    assert changed == {"mind_assets/blends/families.py": ['+    "paragraphs",']}


def test_the_new_stage_validates_passes_the_import_test_and_materializes(
    copy_with_the_new_stage, tmp_path
):
    copy = copy_with_the_new_stage
    data = tmp_path / "data"
    storage = data / "dagster"
    storage.mkdir(parents=True)
    environment = {
        "MIND_DATA_DIR": str(data),
        "MIND_DAGSTER_STORAGE_DIR": str(storage),
        # No benchmark split is at hand offline: raw_documents runs with decontamination off.
        "MIND_DECONTAMINATION__BENCHMARKS": "[]",
    }
    dagster = str(Path(sys.executable).with_name("dagster"))
    validated = run_in(
        copy,
        dagster,
        "definitions",
        "validate",
        "-w",
        "workspace.yaml",
        environment={**environment, "DAGSTER_HOME": str(copy)},
    )
    assert validated.returncode == 0, (validated.stdout + validated.stderr)[-3000:]
    tests = run_in(
        copy,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "mind_assets_tests/test_import_graph.py",
        "mind_assets_tests/test_paragraphs.py",
        environment=environment,
    )
    assert tests.returncode == 0, (tests.stdout + tests.stderr)[-3000:]
    materialized = run_in(
        copy, sys.executable, "-c", MATERIALIZE, str(NAPKIN), environment=environment
    )
    assert materialized.returncode == 0, (materialized.stdout + materialized.stderr)[-3000:]
    assert "paragraphs:" in materialized.stdout
