"""The house rules, read off the code with `ast`:

- Dependencies run downhill: every import in mind_assets/ (function-level ones included) is checked
  against the layer order below, and a stage imports only the stages whose outputs it reads. The
  stages and what they read are not listed here: they are discovered (`lib/stages.py`), and what
  a stage reads is its assets' dependencies.
- One door to the data root: outside `lib/`, no module touches files itself (no `pyarrow.parquet`,
  no `object_store`, no `path.is_file()` / `open()` / `shutil`): every output is read and written
  through the gateway in `lib/storage.py`. The few modules that read files the user points at
  outside the data root (corpus files, blend specs, prompt files, /proc) are named below, with
  the reason, and may not mention the data root.
- Only public Dagster APIs: no `dagster._...` import anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mind_assets.lib.stages import discover_stages, stage_depths, stage_reads
from mind_assets.settings import PROJECT_DIR

PACKAGE = PROJECT_DIR / "mind_assets"

# Bottom first, around the stages (whose order is derived). A module may import its own package
# and packages of lower layers; packages of one layer know nothing of each other.
BELOW_STAGES: tuple[tuple[str, ...], ...] = (
    ("settings",),  # the one configuration object
    ("settings_table",),  # its documentation, generated
    ("lib",),  # the data-root gateway, declarations, the stage contract: no stage
    ("llm", "metrics"),  # the engine resource and the DuckDB store
)
ABOVE_STAGES: tuple[tuple[str, ...], ...] = (
    ("operations",),  # schedules across stages
    ("definitions",),  # assembles everything
    ("demo",),
    ("cli",),
)

# Modules outside lib/ that read files outside the data root, and why. They may not mention the
# data root (`data_dir`), so none of them can read or write an output.
INPUT_READERS: dict[str, str] = {
    "settings.py": "the server API key file (MIND_SERVER_API_KEY_FILE)",
    "settings_table.py": "docs/configuration.md, the page the settings table is written into",
    "corpus/sources.py": "the corpus files (jsonl, parquet) a shard reads",
    "corpus/shard_specs.py": "checks that the corpus files a user names exist",
    "corpus/inbox.py": "the inbox directory a user drops corpus files into",
    "conversations/styles.py": "the prompt files of a MIND prompt set (prompts/mind/<set>/)",
    "blends/spec.py": "blend spec files (blends/*.yaml)",
    "task_qa/licences.py": "dataset cards in the Hugging Face cache",
    "llm/hardware.py": "/proc (CPU flags, memory, GPUs)",
    "llm/embedded_model.py": "the converted-model cache (MIND_MODELS_DIR), local to each machine",
    "math_traces/sandbox.py": "the jail's scratch directory for model-written code",
    "math_traces/jail.py": "the jail process's uid and gid maps under /proc",
}
# The settings object declares the data root; it reads no output.
DECLARES_DATA_ROOT = {"settings.py"}
# Modules that hand files the gateway listed (and pulled) to a reader of their own, and which.
THIRD_PARTY_READERS: dict[str, str] = {
    "metrics/store.py": "DuckDB queries the metric partitions `list_outputs` returned",
}
# Calls on a path that read or write the file system directly.
FILE_METHODS = {
    "is_file",
    "is_dir",
    "exists",
    "glob",
    "rglob",
    "iterdir",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "unlink",
    "rmdir",
    "rename",
    "touch",
    "mkdir",
    "stat",
    "symlink_to",
    "hardlink_to",
}
FILE_MODULES = {"shutil", "pyarrow.parquet", "pyarrow.dataset", "mind_assets.lib.object_store"}
OS_FILE_CALLS = {"replace", "rename", "remove", "unlink", "walk", "listdir", "scandir", "makedirs"}


def layers() -> tuple[tuple[str, ...], ...]:
    """The layer order: the fixed layers below, each depth of the stage graph, the fixed layers
    above."""
    stages = discover_stages()
    depths = stage_depths(stages)
    by_depth = [
        tuple(sorted(name for name, d in depths.items() if d == depth))
        for depth in range(max(depths.values()) + 1)
    ]
    return (*BELOW_STAGES, *by_depth, *ABOVE_STAGES)


def upstream_stages(stage: str, reads: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    for direct in reads[stage]:
        found |= {direct} | upstream_stages(direct, reads)
    return found


def package_of(module: str) -> str:
    """`mind_assets.blends.lineage` -> `blends`; `mind_assets.settings` -> `settings`."""
    return module.split(".")[1]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT_DIR).with_suffix("").parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in a file, wherever it stands; `from a import b`
    counts as both `a` and `a.b` (b may be a module)."""
    module = module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def layer_violations() -> list[str]:
    rank = {package: r for r, layer in enumerate(layers()) for package in layer}
    reads = stage_reads(discover_stages())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        here = package_of(module_name(path))
        if here not in rank:
            found.append(f"{path}: package {here!r} has no layer in this test")
            continue
        seen = set()
        for line, name in imports(path):
            if not name.startswith("mind_assets.") or (line, package_of(name)) in seen:
                continue
            seen.add((line, package_of(name)))
            there = package_of(name)
            where = f"{path.relative_to(PROJECT_DIR)}:{line} imports {name}"
            if there == here:
                continue
            if there not in rank:
                found.append(f"{where}: {there!r} has no layer")
            elif rank[there] >= rank[here]:
                found.append(f"{where}: {there} is not below {here}")
            elif here in reads and there in reads and there not in upstream_stages(here, reads):
                found.append(f"{where}: {here} does not read {there}'s rows")
    return found


def _file_access(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every direct file-system access in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in FILE_METHODS:
                found.append((node.lineno, f".{func.attr}()"))
            elif isinstance(func, ast.Name) and func.id == "open":
                found.append((node.lineno, "open()"))
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "os"
                and func.attr in OS_FILE_CALLS
            ):
                found.append((node.lineno, f"os.{func.attr}()"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "read_parquet(" in node.value
        ):
            found.append((node.lineno, "DuckDB read_parquet"))
    return found


def _mentions_data_root(tree: ast.AST) -> int | None:
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if name in {"data_dir", "data_root"}:
            return node.lineno
    return None


def gateway_violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("lib/"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        where = f"mind_assets/{relative}"
        if relative in INPUT_READERS:
            line = None if relative in DECLARES_DATA_ROOT else _mentions_data_root(tree)
            if line is not None:
                found.append(
                    f"{where}:{line}: reads files outside the data root "
                    f"({INPUT_READERS[relative]}) and must not touch the data root"
                )
            continue
        for line, name in imports(path):
            if name in FILE_MODULES:
                found.append(f"{where}:{line} imports {name}: read and write through lib/storage")
        for line, what in _file_access(tree):
            if what == "DuckDB read_parquet" and relative in THIRD_PARTY_READERS:
                continue
            found.append(f"{where}:{line} {what}: files are read and written through lib/storage")
    return found


def private_dagster_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = set()
        for line, name in imports(path):
            if name.startswith("dagster._") and line not in lines:
                lines.add(line)
                where = f"{path.relative_to(PROJECT_DIR)}:{line}"
                found.append(f"{where} imports {name}: a private Dagster module")
    return found


def test_the_import_graph_has_no_upward_or_sibling_edges():
    assert layer_violations() == []


def test_outputs_are_read_and_written_only_through_the_gateway():
    assert gateway_violations() == []


def test_no_private_dagster_module_is_imported():
    assert private_dagster_imports() == []


def test_every_module_named_as_an_exception_exists():
    """A module named above that no longer exists would widen nothing, but the list would lie:
    keep it to what is there."""
    named = [*INPUT_READERS, *THIRD_PARTY_READERS]
    assert [m for m in named if not (PACKAGE / m).is_file()] == []


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A copy of the package where a test plants a module; the checks then read the copy."""
    fake = tmp_path / "mind_assets"

    def plant(relative: str, source: str) -> None:
        target = fake / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)

    monkeypatch.setitem(globals(), "PROJECT_DIR", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    return plant


def test_the_check_sees_an_upward_import_inside_a_function(planted):
    """The layer check itself can fail: a lib module importing a stage lazily, a stage importing
    a sibling of its layer, and one importing a lower stage whose rows it does not read."""
    planted(
        "lib/helper.py",
        "def f():\n    from mind_assets.blends.lineage import trace_row\n    return trace_row\n",
    )
    planted("task_qa/rules.py", "from mind_assets.math_traces import problems\n")
    planted("filtering/rules.py", "import mind_assets.task_qa.rules\n")
    assert layer_violations() == [
        "mind_assets/filtering/rules.py:1 imports mind_assets.task_qa.rules: filtering does not "
        "read task_qa's rows",
        "mind_assets/lib/helper.py:2 imports mind_assets.blends.lineage: blends is not below lib",
        "mind_assets/task_qa/rules.py:1 imports mind_assets.math_traces: math_traces is not "
        "below task_qa",
    ]


def test_the_gateway_check_catches_each_way_around_it(planted):
    planted("blends/a.py", "import pyarrow.parquet as pq\n\nread = pq.read_table\n")
    planted("blends/b.py", "from mind_assets.lib import object_store\n")
    planted("filtering/c.py", "def f(path):\n    return path.is_file()\n")
    planted("publish/d.py", "import shutil\n\ndef f(a, b):\n    shutil.copyfile(a, b)\n")
    planted("diversity/e.py", "def f(p):\n    with open(p) as h:\n        return h.read()\n")
    planted("metrics/f.py", 'SQL = "SELECT * FROM read_parquet(?)"\n')
    planted("corpus/sources.py", "def f(settings):\n    return settings.data_dir\n")
    planted("lib/storage.py", "import pyarrow.parquet as pq\n\ndef f(p):\n    return p.is_file()\n")
    assert gateway_violations() == [
        "mind_assets/blends/a.py:1 imports pyarrow.parquet: read and write through lib/storage",
        "mind_assets/blends/b.py:1 imports mind_assets.lib.object_store: read and write through "
        "lib/storage",
        "mind_assets/corpus/sources.py:2: reads files outside the data root (the corpus files "
        "(jsonl, parquet) a shard reads) and must not touch the data root",
        "mind_assets/diversity/e.py:2 open(): files are read and written through lib/storage",
        "mind_assets/filtering/c.py:2 .is_file(): files are read and written through lib/storage",
        "mind_assets/metrics/f.py:1 DuckDB read_parquet: files are read and written through "
        "lib/storage",
        "mind_assets/publish/d.py:1 imports shutil: read and write through lib/storage",
    ]


def test_the_dagster_check_catches_a_private_import(planted):
    planted("lib/versions.py", "from dagster._core.loader import LoadingContext\n")
    planted("corpus/ledger.py", "if False:\n    import dagster._core.storage.runs.base\n")
    planted("blends/ok.py", "from dagster import asset\n")
    assert private_dagster_imports() == [
        "mind_assets/corpus/ledger.py:2 imports dagster._core.storage.runs.base: a private "
        "Dagster module",
        "mind_assets/lib/versions.py:1 imports dagster._core.loader: a private Dagster module",
    ]
