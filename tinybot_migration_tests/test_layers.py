"""The package's three layers, each importing only from below: `lib` (the Dagster-free core), `defs`
(the Dagster definitions, assembled in `definitions`), and the app shell (`cli`, `runtime`). Read
from the source, every import counted, including those inside functions."""

import ast
import subprocess
import sys
from pathlib import Path

import tinybot_migration

PACKAGE = Path(tinybot_migration.__file__).parent
LAYERS = {"lib": 0, "defs": 1, "definitions": 1, "cli": 2, "runtime": 2}
LAYER_NAMES = {0: "lib", 1: "defs", 2: "the app shell"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in it (a name imported from a package
    counts as its submodule when there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {t for t in targets if t in known and t != name}


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in modules() if m != "tinybot_migration" and layer_of(m) is None]
    assert unplaced == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{src} ({LAYER_NAMES[layer_of(src)]}) imports {dst} ({LAYER_NAMES[layer_of(dst)]})"
        for src, targets in graph().items()
        for dst in targets
        if layer_of(src) is not None and layer_of(dst) is not None and layer_of(dst) > layer_of(src)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    """The test above could fail: a two-module loop and a three-module one are found."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(cycles(edges)) == [["a", "b"], ["c", "d", "e"]]


def test_the_domains_of_the_definitions_refer_to_each_other_by_asset_key_only():
    """A domain's definitions import shared definitions (resources, pools, partitions), never
    another domain's assets."""
    domains = {"relational", "memories", "shapes", "search", "sync"}
    crossing = [
        f"{src} imports {dst}"
        for src, targets in graph().items()
        for dst in targets
        if src.startswith("tinybot_migration.defs.")
        and dst.startswith("tinybot_migration.defs.")
        and (a := src.split(".")[2]) in domains
        and (b := dst.split(".")[2]) in domains
        and a != b
    ]
    assert crossing == []


def test_the_core_runs_without_dagster():
    """Importing every core module loads neither Dagster nor anything above the core."""
    core = sorted(m for m in modules() if layer_of(m) == 0)
    script = (
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster' "
        "or m.startswith(('tinybot_migration.defs', 'tinybot_migration.cli', 'tinybot_migration.runtime', "
        "'tinybot_migration.definitions')))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert len(core) > 30 and result.stdout.strip() == "[]"
