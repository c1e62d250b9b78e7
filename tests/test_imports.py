"""Imports inside ``engine/`` and ``pages/`` run one way: no cycles, no upward imports between layers.

The graph is built by parsing (never importing) every module with :mod:`ast`; an import anywhere in a
module counts, at module level or inside a function. ``from pkg import name`` where ``pkg.name`` is a
module is an edge to that submodule; otherwise it is an edge to ``pkg`` (its ``__init__``).
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Lowest first. Modules of the same layer may import each other (without cycles); a module may
# import any lower layer but never a higher one. A module belongs to its longest listed prefix.
LAYERS = [
    ["engine.errors", "engine.version", "engine.runtime", "engine.paths", "engine.fileio",
     "engine.device", "engine.images", "engine.catalogue"],
    ["engine.data", "engine.models"],
    ["engine.checkpoints"],
    ["engine.selection", "engine.uploads", "engine.evaluation", "engine.attacks", "engine.similarity",
     "engine.featvis"],
    ["engine.training"],
    ["engine.attribution", "engine.generalisation"],
    ["engine.analysis"],
    ["engine.jobs"],
    ["engine.cli", "engine.__main__", "engine"],
    ["pages", "app"],
]
LAYER_OF = {prefix: level for level, prefixes in enumerate(LAYERS) for prefix in prefixes}


def _module_files():
    """``{dotted module name: (path, is_package)}`` for every ``.py`` under engine/ and pages/, and app.py."""
    modules = {}
    paths = list((REPO / "engine").rglob("*.py")) + list((REPO / "pages").rglob("*.py"))
    if (REPO / "app.py").exists():
        paths.append(REPO / "app.py")
    for path in paths:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _resolve_base(module, is_package, node):
    """The absolute dotted name an ``ImportFrom`` node's ``module`` part names (relative ones resolved)."""
    if not node.level:
        return node.module
    package = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _known(name, modules):
    """The longest prefix of ``name`` that is a repo module, or ``None``."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph():
    """``{module: {imported module: line}}`` over the repo's own modules."""
    modules = _module_files()
    graph = {}
    for module, (path, is_package) in modules.items():
        edges = graph.setdefault(module, {})
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_base(module, is_package, node)
                if not base:
                    continue
                # ``from pkg import sub`` runs pkg's __init__ too (which may re-export): an edge to
                # both, except to the root ``engine`` facade, which every engine import runs anyway
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    package = [base] if base != "engine" else []
                    targets += [sub, *package] if sub in modules else [base]
            for target in targets:
                resolved = _known(target, modules)
                if resolved and resolved != module:
                    edges.setdefault(resolved, node.lineno)
    return graph


def _strongly_connected(graph):
    """Tarjan's algorithm, iteratively; returns the components as sorted lists."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def layer_of(module):
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYER_OF:
            return LAYER_OF[prefix]
    return None


def test_no_import_cycles():
    graph = import_graph()
    problems = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        edges = [f"    {a} -> {b} (line {graph[a][b]})" for a in component for b in sorted(graph[a]) if b in members]
        problems.append("cycle: " + ", ".join(component) + "\n" + "\n".join(edges))
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_no_upward_imports_between_layers():
    graph = import_graph()
    violations = []
    for module in sorted(graph):
        source = layer_of(module)
        if source is None:
            continue
        for target in sorted(graph[module]):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer > source:
                violations.append(f"{module} -> {target} (layer {source} -> {target_layer})")
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_every_module_has_a_layer():
    unplaced = sorted(module for module in import_graph() if layer_of(module) is None)
    assert not unplaced, unplaced
