"""The package's layers (``docs/design.md``: data flows one way): no import cycles between
fit3d's modules, function-level imports included (they hid three: the pipeline importing the
command line, the body models' weights table importing the priors and training, the regressors'
base importing its subclasses), and no lower layer importing a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fit3d"

#: Lowest first: a module may import its own layer and those below it, never one above.
LAYERS = [
    {"cache", "devices", "geometry", "names", "optim", "wording", "data"},
    {"body_models"},
    {"priors", "regressors", "mocap"},
    {"training"},
    {"fitters"},
    {"pipeline"},
    {"evaluation", "export", "render"},  # (they read what the pipeline wrote: merged fits, settings)
    {"cli"},
]

#: Cycles allowed: inside the command line, ``fit3d submit`` hands its tasks the entry point
#: (``fit3d.cli.main.run``), and ``fit3d.cli.main`` registers the submit command.
ALLOWED_CYCLES = [{"fit3d.cli.cluster", "fit3d.cli.main"}]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _runtime_imports(tree: ast.AST):
    """Import statements outside ``if TYPE_CHECKING:`` blocks (those never run)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if not (node.module or "").startswith("fit3d"):
                    continue
                targets = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in targets if t in mods] or [node.module]  # a name from the module
            else:
                targets = [a.name for a in node.names if a.name.startswith("fit3d")]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def test_no_import_cycles():
    cycles = [sorted(c) for c in _cycles(_graph()) if c not in ALLOWED_CYCLES]
    assert cycles == []


def test_every_module_belongs_to_a_layer():
    assert [m for m in _modules() if m != "fit3d" and _layer(m) is None] == []


def test_no_layer_imports_one_above_it():
    wrong = [f"{a} -> {b}" for a, targets in _graph().items() for b in targets
             if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert wrong == []


def test_the_checks_see_cycles_and_function_level_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    tree = ast.parse("import os\ndef f():\n    from fit3d.cli import main\nif TYPE_CHECKING:\n    import fit3d.pipeline\n")
    assert [ast.unparse(n) for n in _runtime_imports(tree)] == ["import os", "from fit3d.cli import main"]


def test_every_fit3d_name_the_benchmarks_and_tests_import_exists():
    """A moved name breaks a benchmark script only when it runs (bench_eft.py imported
    PlainRegressor from its old module after the layering change; a review found it)."""
    import importlib

    repo = PACKAGE.parent
    missing = []
    for path in sorted([*(repo / "benchmarks").glob("*.py"), *(repo / "tests").rglob("*.py")]):
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fit3d"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.relative_to(repo)}: {node.module}.{alias.name}")
    assert missing == []
