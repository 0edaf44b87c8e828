"""The package tree is the pipeline's plan: imports run one way, from the composition at the top down
through the stages to the shared leaf modules, and no module reaches up or round in a circle.

Every import counts, including those under TYPE_CHECKING and inside functions: a reader follows them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cdc

ROOT = Path(cdc.__file__).resolve().parent

# Highest first. A module may import from its own layer's package and from any layer below it; names
# on one line are siblings that must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("cdc.cli", "cdc.dev"),
    ("cdc.runner", "cdc.cluster"),
    ("cdc.pipeline",),
    ("cdc.ops",),
    ("cdc.sink", "cdc.checkpoint"),
    ("cdc.mapping",),
    ("cdc.snapshot",),
    ("cdc.source",),
    ("cdc.core",),
    ("cdc.config",),
    ("cdc.errors", "cdc"),
]
# Throwaway servers for tests and the demo stand apart: production code never imports them.
DEV = "cdc.dev"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from cdc.x import y` may name the submodule cdc.x.y
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "cdc" or m.startswith("cdc.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def _layer_of(module: str) -> int:
    best, rank = -1, len(LAYERS)
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def _package_of(module: str) -> str:
    for names in LAYERS:
        for prefix in names:
            if prefix != "cdc" and (module == prefix or module.startswith(prefix + ".")):
                return prefix
    return "cdc"


def test_every_module_belongs_to_a_layer() -> None:
    for module in _graph():
        assert _layer_of(module) < len(LAYERS), module


def test_imports_run_down_the_layers_never_up_or_sideways() -> None:
    wrong = []
    for module, targets in _graph().items():
        if module == "cdc":
            continue
        for target in targets:
            if target == "cdc":
                continue
            same_package = _package_of(module) == _package_of(target)
            if not same_package and _layer_of(target) <= _layer_of(module):
                wrong.append(f"{module} -> {target}")
            if target.startswith(DEV) and not module.startswith(DEV):
                wrong.append(f"{module} -> {target} (dev servers are for tests and the demo)")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    # Guard the guard: the layer rank and the walk above must flag what they are for.
    assert _layer_of("cdc.source.binlog") > _layer_of("cdc.mapping.mapper") > _layer_of("cdc.pipeline")
    assert _package_of("cdc.sink.kafka") != _package_of("cdc.checkpoint.store")
    assert _layer_of("cdc.sink.kafka") == _layer_of("cdc.checkpoint.store")
    graph = _graph()
    assert "cdc.source.binlog" in graph["cdc.pipeline"]
    assert "cdc.core.changes" in graph["cdc.source.binlog"]
