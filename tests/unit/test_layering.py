"""Arrows one way: cri/ -> managers (sandbox/, container/, images/) -> steps/ -> host/.

Every import of a module counts, also those inside functions or `if TYPE_CHECKING:`:
an arrow that points up is a cycle waiting to happen, whether or not it runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PODRT = SRC / "podrt"

# (package whose modules are checked, what they may not import / all they may import)
STEPS_MAY_NOT = ("podrt.sandbox", "podrt.container")
HOST_MAY = ("podrt.host", "podrt.errors", "podrt.aio")
CONFIG_MAY_NOT = ("podrt.images",)  # images/ imports config
ROLLBACK_MAY = ("podrt.aio", "podrt.errors", "podrt.faults")  # the runner: state/ (its journal) and steps/ import it


def imports(path: Path) -> set[str]:
    """The podrt modules `path` imports (for `from a import b`: a.b and a, as b may be either)."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package up
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "podrt" or name.startswith("podrt.")}


def under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def modules(package: str) -> list[pytest.param]:
    found = []
    for path in sorted((PODRT / package).rglob("*.py")):
        found.append(pytest.param(path, id=str(path.relative_to(PODRT))))
    assert found, f"no modules under {package}"
    return found


def test_imports_are_found() -> None:
    """The parser sees every form of import (else the tests below pass for nothing)."""
    names = imports(PODRT / "steps" / "sandbox" / "spec.py")
    assert "podrt.steps.spec_files.WriteSpec" in names and "podrt.steps.sandbox.context" in names
    assert under("podrt.sandbox.store", STEPS_MAY_NOT) and not under("podrt.sandboxes", STEPS_MAY_NOT)


@pytest.mark.parametrize("path", modules("steps"))
def test_steps_import_nothing_from_the_managers(path: Path) -> None:
    assert [name for name in sorted(imports(path)) if under(name, STEPS_MAY_NOT)] == []


@pytest.mark.parametrize("path", modules("host"))
def test_host_imports_only_the_floor(path: Path) -> None:
    assert [name for name in sorted(imports(path)) if name != "podrt" and not under(name, HOST_MAY)] == []


@pytest.mark.parametrize("path", modules("config"))
def test_config_imports_nothing_from_images(path: Path) -> None:
    assert [name for name in sorted(imports(path)) if under(name, CONFIG_MAY_NOT)] == []


def test_rollback_imports_only_the_floor() -> None:
    assert [name for name in sorted(imports(PODRT / "rollback.py")) if not under(name, ROLLBACK_MAY)] == []


def package_graph() -> dict[str, set[str]]:
    """podrt's packages (and top-level modules) -> the others their modules import."""
    graph: dict[str, set[str]] = {}
    for path in PODRT.rglob("*.py"):
        parts = path.relative_to(PODRT).with_suffix("").parts
        if parts[0] == "api" or parts == ("__init__",):
            continue
        edges = graph.setdefault(parts[0], set())
        for name in imports(path):
            target = name.split(".")[1] if "." in name else ""  # podrt.<target>...
            if target not in ("", parts[0], "api") and ((PODRT / target).is_dir() or (PODRT / f"{target}.py").exists()):
                edges.add(target)
    return graph


def test_no_two_packages_import_each_other_even_by_way_of_others() -> None:
    graph = package_graph()
    assert {"steps", "host", "cri", "sandbox", "container"} <= graph.keys()  # the walk saw the tree
    assert "host" in graph["steps"] and "steps" in graph["sandbox"]  # ... and its arrows
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []


# The issue-17 limits: a module a reader takes in on one or two screens, a class of one concern.
MAX_LINES, MAX_METHODS, MAX_TOP_MODULES = 450, 25, 8


def ours() -> list[Path]:
    return [p for p in sorted(PODRT.rglob("*.py")) if p.relative_to(PODRT).parts[0] != "api"]


def test_no_module_over_the_line_limit() -> None:
    assert [(str(p.relative_to(PODRT)), n) for p in ours() if (n := p.read_text().count("\n")) > MAX_LINES] == []


def test_no_class_over_the_method_limit() -> None:
    big = []
    for path in ours():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(d, ast.FunctionDef | ast.AsyncFunctionDef) for d in node.body)
                if methods > MAX_METHODS:
                    big.append((str(path.relative_to(PODRT)), node.name, methods))
    assert big == []


def test_few_modules_directly_in_podrt() -> None:
    assert len(list(PODRT.glob("*.py"))) <= MAX_TOP_MODULES
