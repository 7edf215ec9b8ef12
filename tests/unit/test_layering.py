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
ROLLBACK_MAY = ("podrt.aio", "podrt.errors")  # the runner: state/ (its journal) and steps/ import it


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


def test_config_imports_nothing_from_images() -> None:
    assert [name for name in sorted(imports(PODRT / "config.py")) if under(name, CONFIG_MAY_NOT)] == []


def test_rollback_imports_only_the_floor() -> None:
    assert [name for name in sorted(imports(PODRT / "rollback.py")) if not under(name, ROLLBACK_MAY)] == []
