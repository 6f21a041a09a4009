"""The package's stated architecture holds: each part of ``pagcore`` imports only from its own layer
or the layers below it (``pagcore.LAYERS``), and imports sit at module top, where a reader sees them."""

import ast
from pathlib import Path

import pagcore

PACKAGE = Path(pagcore.__file__).parent

# Imported where they are needed, not at module top: optional or heavy dependencies that most
# uses of the module never touch.
DEFERRED = {
    "pyautoattack",
    "submitit",
    "yaml",
    "ipywidgets",
    "IPython",
    "papermill",
    "torchvision",
    "nbformat",
    "myst_nb",
}


def part_of(module: str) -> str:
    """The layer entry a dotted module belongs to: ``pagcore.paper.targets`` -> ``paper``."""
    return module.split(".")[1] if module.count(".") else ""


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        dotted = ".".join(("pagcore", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        yield dotted, path, ast.parse(path.read_text())


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def rank() -> dict[str, int]:
    return {part: level for level, parts in enumerate(pagcore.LAYERS) for part in parts}


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(dotted) for dotted, _, _ in modules()} - {""}
    assert parts == set(rank()), (
        f"parts without a layer: {parts - set(rank())}; layers without a part: {set(rank()) - parts}"
    )


def test_no_part_imports_from_a_layer_above_it():
    levels = rank()
    upward = []
    for dotted, _, tree in modules():
        here = part_of(dotted)
        for node in ast.walk(tree):
            for name in imported(node):
                if name.startswith("pagcore.") and levels[part_of(name)] > levels.get(here, -1):
                    upward.append(f"{dotted} ({here}) imports {name}")
    assert not upward, "\n".join(upward)


def test_imports_sit_at_module_top_except_deferred_optional_dependencies():
    inside = []
    for dotted, _, tree in modules():
        top = set(map(id, tree.body))
        guarded = {id(n) for stmt in tree.body if isinstance(stmt, ast.If) for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            names = imported(node) if isinstance(node, ast.Import | ast.ImportFrom) else []
            if not names or id(node) in top or id(node) in guarded:
                continue
            if not all(name.split(".")[0] in DEFERRED for name in names):
                inside.append(f"{dotted}:{node.lineno} imports {', '.join(names)} inside a function")
    assert not inside, "\n".join(inside)


def test_the_package_docstring_names_every_layer():
    for parts in pagcore.LAYERS:
        for part in parts:
            assert f"pagcore.{part}" in pagcore.__doc__, part
