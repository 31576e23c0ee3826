"""The import graph of the packages, built from their source, and the checks `tests/test_layout.py` runs on it.

Every `import` and `from ... import` statement counts, at module level or inside a function (a lazy import is
still a dependency); an import resolves to the most specific module of the packages it names (`from a.b import
c` is `a.b.c` when that is a module, else `a.b`). Names resolved at run time by the registry ('module:NAME') are
not edges: resolving them is the registry's job.
"""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 350

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # lowest first; a module may import its own layer and below
    ("model basics", ("vae_core.config", "vae_core.distributions", "vae_core.estimators")),
    ("registry", ("vae_core.registry",)),
    ("data", ("vae_core.data",)),
    ("networks and flows", ("vae_core.nets", "vae_core.flows")),
    ("families", ("vae_core.posteriors", "vae_core.priors", "vae_core.likelihoods")),
    ("model", ("vae_core.vae", "vae_core.hierarchical", "vae_core.models")),
    ("model tools", ("vae_core.inference_gaps", "vae_core.layer_diagnostics", "vae_core.contract", "vae_core.probes")),
    ("vae_core API", ("vae_core",)),
    ("support", ("bench", "bench.errors", "bench.interrupts", "bench.quiet", "bench.storage", "bench.progress")),
    ("optimizers", ("bench.training.optim",)),
    ("grid", ("bench.grid",)),
    ("training", ("bench.training",)),
    ("tasks and rows", ("bench.rows", "bench.tasks")),
    ("executors", ("bench.executors",)),
    ("runner", ("bench.runner", "bench.finished_gaps")),
    ("report", ("bench.report",)),
    ("tracking", ("bench.tracking",)),
    ("gpu check", ("bench.gpu_check",)),
    ("commands", ("bench.commands",)),
    ("cli", ("bench.cli",)),
)


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under root."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that `module` imports (itself excluded)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component with more than one
    module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_cycle_through(component, edges) for component in components]


def _cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    paths = {w: [start, w] for w in sorted(edges[start]) if w in members}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of the layer whose longest prefix matches `module`."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def upward_imports(edges: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """'a (layer) imports b (higher layer)' for every import that goes up."""
    found = []
    for a in sorted(edges):
        for b in sorted(edges[a]):
            la, lb = layer_of(a, layers), layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                found.append(f"{a} ({layers[la][0]}) imports {b} ({layers[lb][0]})")
    return found


def long_files(root: Path, packages: tuple[str, ...], limit: int = MAX_LINES) -> list[str]:
    return [f"{path.relative_to(root)}: {n} lines" for path in modules(root, packages).values()
            if (n := len(path.read_text().splitlines())) > limit]
