"""The package's layers (docs/architecture.md): imports point down only, and no two modules import each other.

Read from the source with `ast`, so imports inside functions count too: a lazy import still makes the lower layer
depend on the upper one, and a cycle hidden in a function still makes two modules one unit to read.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "openformers"

# Lowest first. A module may import its own layer (without cycles) and the layers below it.
LAYERS = [
    # files in, files out, the library's logger, and the slot the accelerator above fills (acceleration.py)
    {"hub", "configs", "quantization_config", "gguf_reader", "weights", "logging", "acceleration", "testing_utils"},
    {"generation", "tokenizers"},
    {"models", "activations", "pytorch_utils"},  # with the reference's building blocks for custom models
    {"kernels"},  # the opt-in CPU accelerator, applied to plain models
    {"pipelines", "training", "hf_argparser"},
    {"cli", "serving"},
]
# The public faces: the top-level name table and the reference's `transformers.utils` path re-export the
# layers, so they sit above all of them.
FACADES = {"", "utils"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str) -> set[str]:
    """The openformers modules that `name` imports anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import x` may name a module
                child = f"{target}.{alias.name}"
                found.add(child if child in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {target for target in found if target in MODULES and target != name}


def top_level(name: str) -> str:
    """The first component under openformers ("" for the package itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(name: str) -> int:
    top = top_level(name)
    if top in FACADES:
        return len(LAYERS)
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} is in no layer: add {top!r} to LAYERS in {__file__} and to docs/architecture.md")


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_point_down():
    upward = [
        f"{name} imports {target}"
        for name in sorted(MODULES)
        for target in sorted(imported_modules(name))
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_models_never_import_kernels():
    offenders = [name for name in MODULES if top_level(name) == "models"
                 and any(top_level(target) == "kernels" for target in imported_modules(name))]
    assert offenders == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one node: the import cycles."""
    order, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph[node]:
            if neighbour not in order:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], order[neighbour])
        if low[node] == order[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return components


def test_no_import_cycles():
    graph = {name: imported_modules(name) for name in MODULES if top_level(name) not in FACADES}
    graph = {name: {target for target in targets if target in graph} for name, targets in graph.items()}
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
