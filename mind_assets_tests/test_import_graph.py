"""Dependencies run downhill: every import in mind_assets/ (function-level ones included) is read
with `ast` and checked against the layer order below, and a stage imports only the stages whose
outputs it reads."""

from __future__ import annotations

import ast
from pathlib import Path

from mind_assets.settings import PROJECT_DIR

PACKAGE = PROJECT_DIR / "mind_assets"

# Bottom first. A module may import its own package and packages of lower layers; packages of
# one layer know nothing of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("settings",),  # the one configuration object
    ("settings_table",),  # renders the settings reference of docs/configuration.md
    ("lib",),  # storage, prompts, declarations, text helpers: no stage
    ("llm", "metrics"),  # the engine resource and the DuckDB store
    ("corpus", "task_qa", "math_traces"),  # stages that start from outside data
    ("conversations",),
    ("filtering",),
    ("blends",),
    ("publish", "diversity"),
    ("operations",),  # schedules over the stages' assets
    ("definitions",),  # assembles everything
    ("demo",),
    ("cli",),
)
# The stages whose rows each stage reads (the asset graph); a stage may import these and what
# they read, never a sibling.
STAGE_INPUTS: dict[str, set[str]] = {
    "corpus": set(),
    "task_qa": set(),
    "math_traces": set(),
    "conversations": {"corpus"},
    "filtering": {"conversations", "corpus"},
    "blends": {"corpus", "filtering", "task_qa", "math_traces"},
    "diversity": {"conversations", "task_qa", "math_traces", "blends"},
    "publish": {"blends"},
}
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def upstream_stages(stage: str) -> set[str]:
    found: set[str] = set()
    for direct in STAGE_INPUTS[stage]:
        found |= {direct} | upstream_stages(direct)
    return found


def package_of(module: str) -> str:
    """`mind_assets.blends.lineage` -> `blends`; `mind_assets.settings` -> `settings`."""
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported mind_assets module) for every import in a file, wherever it stands."""
    module = ".".join(path.relative_to(PROJECT_DIR).with_suffix("").parts)
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
    return [(line, name) for line, name in found if name.startswith("mind_assets.")]


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        here = package_of(".".join(path.relative_to(PROJECT_DIR).with_suffix("").parts))
        if here not in RANK:
            found.append(f"{path}: package {here!r} has no layer in this test")
            continue
        for line, name in imports(path):
            there = package_of(name)
            where = f"{path.relative_to(PROJECT_DIR)}:{line} imports {name}"
            if there == here:
                continue
            if there not in RANK:
                found.append(f"{where}: {there!r} has no layer")
            elif RANK[there] >= RANK[here]:
                found.append(f"{where}: {there} is not below {here}")
            elif (
                here in STAGE_INPUTS
                and there in STAGE_INPUTS
                and there not in upstream_stages(here)
            ):
                found.append(f"{where}: {here} does not read {there}'s rows")
    return found


def test_the_import_graph_has_no_upward_or_sibling_edges():
    assert violations() == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    """The check itself can fail: a lib module importing a stage lazily, a stage importing a
    sibling of its layer, and one importing a lower stage whose rows it does not read."""
    fake = tmp_path / "mind_assets"
    (fake / "lib").mkdir(parents=True)
    (fake / "lib" / "helper.py").write_text(
        "def f():\n    from mind_assets.blends.lineage import trace_row\n    return trace_row\n"
    )
    (fake / "task_qa").mkdir()
    (fake / "task_qa" / "rules.py").write_text("from mind_assets.math_traces import problems\n")
    (fake / "filtering").mkdir()
    (fake / "filtering" / "rules.py").write_text("import mind_assets.task_qa.rules\n")
    monkeypatch.setitem(globals(), "PROJECT_DIR", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert violations() == [
        "mind_assets/filtering/rules.py:1 imports mind_assets.task_qa.rules: filtering does not "
        "read task_qa's rows",
        "mind_assets/lib/helper.py:2 imports mind_assets.blends.lineage: blends is not below lib",
        "mind_assets/task_qa/rules.py:1 imports mind_assets.math_traces: math_traces is not "
        "below task_qa",
    ]
