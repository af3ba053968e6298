"""The shared module stays what a student reads: what the labs need, in layers, with a reading order.

Commands, benchmark helpers and the grader live beside it (tools/, benchmarks/, grading/); these
checks keep anything from drifting back in unnoticed.
"""

from __future__ import annotations

import ast
import re

import nbformat
from conftest import ROOT

SHARED = ROOT / "shared"
MODULES = sorted(path.stem for path in SHARED.glob("*.py") if path.stem != "__init__")


def top_level_definitions() -> dict[str, ast.AST]:
    """Every function, class and constant defined at the top of a shared file, by name."""
    definitions = {}
    for path in SHARED.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                definitions[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                definitions.update({target.id: node for target in targets if isinstance(target, ast.Name)})
    return definitions


def names_in(node: ast.AST) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))}


def solution_code() -> str:
    cells = [cell for path in sorted((ROOT / "solutions").glob("*/*.ipynb")) for cell in nbformat.read(path, as_version=4).cells]
    return "\n".join(cell.source for cell in cells if cell.cell_type == "code")


def test_everything_in_shared_is_used_by_a_lab():
    """A definition is needed if a solution notebook names it, or a needed definition uses it."""
    definitions = top_level_definitions()
    words = set(re.findall(r"\w+", solution_code()))
    needed = {name for name in definitions if name in words}
    frontier = list(needed)
    while frontier:
        for name in names_in(definitions[frontier.pop()]) & definitions.keys() - needed:
            needed.add(name)
            frontier.append(name)
    unused = sorted(name for name, node in definitions.items()
                    if name not in needed and isinstance(node, (ast.FunctionDef, ast.ClassDef)))
    assert not unused, f"shared/ defines {unused}, which no lab uses: move them to tools/ or benchmarks/"


def test_shared_imports_nothing_from_the_commands_benchmarks_or_grader():
    for path in SHARED.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for module in modules:
                    assert module.split(".")[0] not in ("tools", "benchmarks", "grading", "tests"), f"{path.name} imports {module}"


def test_reading_order_names_every_file():
    """shared/__init__.py and the README say in which order to read the files: all of them."""
    order = re.findall(r"\w+", ast.get_docstring(ast.parse((SHARED / "__init__.py").read_text())).split("Read it in this order:")[1].split(".")[0])
    assert sorted(order) == MODULES
    readme = (ROOT / "README.md").read_text().split("## The shared module")[1].split("\n## ")[0]
    assert sorted(set(re.findall(r"`(\w+)\.py`", readme))) == MODULES
