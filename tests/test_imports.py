"""The package import graph: no cycles between modules, and the layers point one way.

Every import counts, including the lazy ones inside functions (a lazy import still makes two modules depend on
each other). Layers: vila2_model imports neither curator nor pipelines; curator.world imports only curator.errors;
pipelines imports curator and vila2_model; only the CLI (curator.cli, curator.commands) sits on top of pipelines.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curator", "vila2_model", "pipelines")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                r = _resolve(t, mods)
                if r and r != mod and r.split(".")[0] in PACKAGES:
                    graph[mod].add(r)
    for m in graph:   # `from curator.world import grade` resolves to the submodule; drop the package edge it adds
        graph[m] = {t for t in graph[m] if not (Path(mods[t]).name == "__init__.py" and
                                                 any(u.startswith(t + ".") for u in graph[m]))}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                c = visit(t)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_layers_point_one_way():
    bad = []
    for mod, deps in import_graph().items():
        for d in deps:
            top = d.split(".")[0]
            if mod.startswith("vila2_model") and top != "vila2_model":
                bad.append(f"{mod} → {d} (the model library knows nothing of the store or the loops)")
            if mod.startswith("curator.world") and not (d.startswith("curator.world") or d == "curator.errors"):
                bad.append(f"{mod} → {d} (the world is a fixture: it imports no curation module)")
            if top == "pipelines" and mod.startswith("curator") and not (mod == "curator.cli"
                                                                          or mod.startswith("curator.commands")):
                bad.append(f"{mod} → {d} (only the CLI sits on top of pipelines)")
    assert not bad, "\n".join(sorted(bad))


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_packages_import_cleanly():
    r = subprocess.run([sys.executable, "-c", "import curator, pipelines, vila2_model, curator.cli"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
