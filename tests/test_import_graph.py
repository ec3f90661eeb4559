"""The package's import graph keeps its shape: no cycles between top-level subpackages, and the HTTP
server (``server/``) never imports torch nor the engine's internals, only its client and wire format.

Static, from the source (every import statement counts, function-level lazy ones included: a lazy
import still ties two subpackages together), plus one runtime check that importing the API
process's modules loads no torch.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

PKG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sparkserve")
# what server/ may import from engine/: the torch-free client of the core process and its messages
SERVER_MAY_IMPORT_FROM_ENGINE = ("sparkserve.engine.client", "sparkserve.engine.wire", "sparkserve.engine.args")


def _modules() -> dict[str, str]:
    """dotted module name -> file path, for every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(PKG_DIR):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(PKG_DIR))[:-3]
                name = rel.replace(os.sep, ".").removesuffix(".__init__")
                out[name] = os.path.join(dirpath, f)
    return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
    """The sparkserve modules a file imports (``from a import b`` counts as a.b when a.b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
    return {m for m in found if m in modules}


def _top(module: str) -> str | None:
    """The top-level unit a module belongs to (``engine``, ``config``...); None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _unit_graph(modules: dict[str, str]) -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the files that make the edge."""
    graph: dict[str, dict[str, set[str]]] = {}
    for name, path in modules.items():
        src = _top(name)
        for dep in _imports(path, modules):
            dst = _top(dep)
            if src and dst and dst != src:
                graph.setdefault(src, {}).setdefault(dst, set()).add(os.path.relpath(path, PKG_DIR))
    return graph


def _cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(set(graph) | {d for deps in graph.values() for d in deps}):
        if v not in index:
            visit(v)
    return comps


def test_no_cycles_between_top_level_subpackages():
    graph = _unit_graph(_modules())
    cycles = _cycles(graph)
    detail = [f"{a} -> {b} ({', '.join(sorted(graph[a][b]))})" for comp in cycles for a in comp for b in comp
              if b in graph.get(a, {})]
    assert not cycles, f"import cycles between subpackages {cycles}:\n" + "\n".join(detail)


def test_server_imports_no_torch_and_only_the_engine_client():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        if _top(name) != "server":
            continue
        tree = ast.parse(open(path).read(), path)
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if "torch" in roots:
            bad.append(f"{name} imports torch")
        for dep in _imports(path, modules):
            if _top(dep) == "engine" and not dep.startswith(SERVER_MAY_IMPORT_FROM_ENGINE) and dep != "sparkserve.engine":
                bad.append(f"{name} imports {dep}")
            if dep == "sparkserve.engine":
                bad.append(f"{name} imports the engine package itself (import its client module)")
    assert not bad, "\n".join(bad)


def test_api_process_modules_load_without_torch():
    code = ("import sys, sparkserve.server.app, sparkserve.server.launch; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(PKG_DIR))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "the API process imported torch"
