"""The import contract: no cycle among apiary's modules, and who may import whom.

Read from the source (every `import` statement, including those inside functions and under
`TYPE_CHECKING`), so a cycle cannot hide behind a deferred import. The layers, bottom up:

- the base (`apiary.kit`, `apiary.db`, `apiary.errors`): imports no other apiary module;
- the process resources (`apiary.resources`: database, Redis, notifier, HTTP client): the
  base and the settings, no domain;
- domain modules (models, repositories, services, the swarm engine, the gateway's flow):
  never import the composition root, `apiary.runtime`; each declares what it needs;
- the composition root and those who read the whole process: entry points, HTTP endpoints
  and FastAPI dependencies, health and platform metrics.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "apiary"

BASE = ("apiary.kit", "apiary.db", "apiary.errors")
COMPOSITION_ROOT = "apiary.runtime"
# Who may import the composition root, besides endpoint modules (`*.endpoints`,
# `apiary.gateway.*_api`): the processes' entry points and what reads the process whole.
MAY_IMPORT_ROOT = {
    "apiary.main",  # the API's composition
    "apiary.cli",
    "apiary.worker.process",  # a worker's composition
    "apiary.bootstrap",
    "apiary.health",
    "apiary.auth.dependencies",  # FastAPI dependencies resolve the request's runtime
    "apiary.observability.platform",  # metrics of every process-wide part
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's apiary imports, as the modules they load (a name imported from a
    package resolves to its submodule when there is one)."""

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names]
                names = [name if name in modules else base for name in names]
            else:
                continue
            for name in names:
                if name == "apiary" or name.startswith("apiary."):
                    target = known(name)
                    if target not in (module, "apiary"):
                        graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


GRAPH = _imports(_modules())


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_reader_sees_every_kind_of_import() -> None:
    """The contract's own reader: top-level, deferred and TYPE_CHECKING imports all count."""
    assert "apiary.runtime" in GRAPH["apiary.main"]  # top level
    assert "apiary.swarm.engine" in GRAPH["apiary.runtime"]  # deferred, and TYPE_CHECKING
    assert "apiary.kv.redis_store" in GRAPH["apiary.runtime"]  # deferred, in a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_apiary_modules() -> None:
    assert _cycles(GRAPH) == []


def test_domain_modules_never_import_the_composition_root() -> None:
    importers = {module for module, targets in GRAPH.items() if COMPOSITION_ROOT in targets}
    allowed = {
        module
        for module in importers
        if module in MAY_IMPORT_ROOT
        or module.endswith(".endpoints")
        or module == "apiary.graphql.context"  # the GraphQL resolvers' request, as endpoints'
        or (module.startswith("apiary.gateway.") and module.endswith("_api"))
    }
    assert importers - allowed == set()


def test_the_base_layer_imports_no_domain() -> None:
    leaks = {
        (module, target)
        for module, targets in GRAPH.items()
        if _in(module, BASE)
        for target in targets
        if not _in(target, BASE)
    }
    assert leaks == set()


def test_the_process_resources_import_no_domain() -> None:
    assert GRAPH["apiary.resources"]  # it is read: the database, Redis, the notifier
    leaks = {
        target
        for target in GRAPH["apiary.resources"]
        if not _in(target, BASE) and target != "apiary.config"
    }
    assert leaks == set()
