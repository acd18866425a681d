"""The package's import graph has no circle, and the mesh node's parts never reach back up to it.

Every import counts: top-level, lazy (inside a function) and under `TYPE_CHECKING`, since each is a
dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package lives in the checkout (pyproject's package-dir).
FOLDERS = {
    "xmesh_agent": ROOT / "xmesh_agent",
    "xmesh_agent.workflows": ROOT / "workflows",
    "xmesh_agent.activities": ROOT / "activities",
    "xmesh_agent.workers": ROOT / "workers",
    "xmesh_agent.demo": ROOT / "demo",
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            name = ".".join((package, *rel))
            # A folder mapped elsewhere (xmesh_agent/workers shim, say) must not shadow the mapping.
            if package == "xmesh_agent" and any(
                name.startswith(p + ".") or name == p for p in FOLDERS if p != package
            ):
                continue
            out[name] = path
    return out


def _resolve(module: str, known: dict[str, Path]) -> str | None:
    """The known module an import names (a `from pkg import mod` may name a submodule)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parent = ".".join(parts[: len(parts) - node.level + 1])
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                if not target.startswith("xmesh_agent"):
                    continue
                dep = _resolve(target, known)
                if dep is not None and dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "xmesh_agent.mmp.node" in graph["xmesh_agent.workers.peer"]
    assert "xmesh_agent.mmp.session" in graph["xmesh_agent.mmp.intake"]
    assert "xmesh_agent.mmp.relay.client" in graph["xmesh_agent.mmp.peering"]  # imported lazily


def test_nothing_under_mmp_imports_the_node() -> None:
    graph = import_graph()
    importers = sorted(m for m, deps in graph.items() if "xmesh_agent.mmp.node" in deps)
    assert [m for m in importers if m.startswith("xmesh_agent.mmp.")] == []


def test_the_spine_only_goes_down() -> None:
    """node -> intake/peering -> session -> dialect codecs: the codecs never see a session."""
    graph = import_graph()
    above = {"xmesh_agent.mmp." + m for m in ("node", "intake", "peering", "session")}
    for module, deps in graph.items():
        if module.startswith("xmesh_agent.mmp.dialects"):
            assert not deps & above, (module, deps & above)
    assert not graph["xmesh_agent.mmp.session"] & above
    assert "xmesh_agent.mmp.peering" not in graph["xmesh_agent.mmp.intake"]
    assert "xmesh_agent.mmp.intake" not in graph["xmesh_agent.mmp.peering"]


def test_no_import_circle_in_mmp() -> None:
    inside = [c for c in cycles(import_graph()) if any(m.startswith("xmesh_agent.mmp") for m in c)]
    assert inside == []


def test_no_import_circle_outside_workers() -> None:
    outside = [c for c in cycles(import_graph()) if not all(m.startswith("xmesh_agent.workers") for m in c)]
    assert outside == []


def test_no_import_circle_in_workers() -> None:
    assert cycles(import_graph()) == []


def test_workers_hold_no_demo() -> None:
    assert sorted(p.name for p in (ROOT / "workers").glob("demo*")) == []
    assert "xmesh_agent.demo.runner" in import_graph()


# What each folder may import (docs/architecture.md keeps the same table). A layer names the
# layers below it; the domain (everything under xmesh_agent/ but cli/) never reaches the Temporal
# side, and the wire never reaches the wake.
MAY_IMPORT: dict[str, set[str]] = {
    "mmp": {"mmp", "core"},
    "models": {"models", "core"},
    "safety": {"safety", "core"},
    "core": {"core", "mmp", "safety"},
    "wake": {"wake", "core", "mmp", "models", "safety"},
    "activities": {"activities", "wake", "core", "mmp", "models", "safety"},
    "workflows": {"workflows", "activities", "wake", "core", "mmp", "models", "safety"},
    "workers": {"workers", "workflows", "activities", "wake", "core", "mmp", "models", "safety"},
    "demo": {"demo", "workers", "workflows", "activities", "wake", "core", "mmp", "models", "safety"},
    "cli": {"cli", "demo", "workers", "workflows", "activities", "wake", "core", "mmp", "models", "safety"},
}


def layer(module: str) -> str:
    part = module.split(".")[1] if "." in module else "core"
    return part if part in MAY_IMPORT else "core"


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = sorted(
        (module, dep)
        for module, deps in import_graph().items()
        for dep in deps
        if layer(dep) not in MAY_IMPORT[layer(module)]
    )
    assert wrong == []


def test_the_domain_never_imports_temporal() -> None:
    domain = {"core", "mmp", "models", "safety", "wake"}
    importers = []
    for name, path in _modules().items():
        if layer(name) not in domain:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "temporalio" or n.startswith("temporalio.") for n in names):
                importers.append(name)
    assert importers == []
