"""The three layers: core (engine and contracts) <- library (shared domain code) <- plugins.

Every module under ``brainsynth/`` is parsed (no import is run) and each import it makes, at any
depth (inside functions too), with relative imports resolved, is checked:

* ``brainsynth.core.*`` imports neither ``brainsynth.library`` nor ``brainsynth.plugins``;
* ``brainsynth.library.*`` imports no ``brainsynth.plugins``;
* a module of ``brainsynth.plugins.<package>`` imports no other plugin package.

``brainsynth.cli`` and ``brainsynth.api`` sit above the layers and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import brainsynth

ROOT = Path(brainsynth.__file__).parent

ALLOWED: dict[tuple[str, str], str] = {}
"""(module, imported module) -> why this crossing is still allowed."""


def module_name(path: Path) -> tuple[str, str]:
    """The dotted name of the module at `path`, and the package its relative imports start from."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports_of(source: str, package: str) -> list[tuple[str, int]]:
    """Every module `source` imports (``from a import b`` gives ``a`` and ``a.b``), with its line;
    relative imports are resolved from `package`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def imported_modules(path: Path) -> list[tuple[str, int]]:
    return imports_of(path.read_text(), module_name(path)[1])


def plugin_package(module: str) -> str | None:
    """``brainsynth.plugins.tasks.x`` -> ``tasks``; None outside a plugin package."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["brainsynth", "plugins"] else None


def crossing(importer: str, imported: str) -> str | None:
    """Which rule `importer` importing `imported` breaks, or None."""
    inside = lambda module, prefix: module == prefix or module.startswith(prefix + ".")  # noqa: E731
    if inside(importer, "brainsynth.core"):
        if inside(imported, "brainsynth.library") or inside(imported, "brainsynth.plugins"):
            return "core imports only core"
    elif inside(importer, "brainsynth.library"):
        if inside(imported, "brainsynth.plugins"):
            return "the library imports no plugin"
    elif plugin_package(importer) is not None and inside(imported, "brainsynth.plugins"):
        other = plugin_package(imported)
        if imported == "brainsynth.plugins" or other != plugin_package(importer):
            return "a plugin imports no other plugin"
    return None


def violations() -> list[str]:
    """One line per import statement that crosses the layers (``from a import b`` is named once)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        importer, _ = module_name(path)
        for imported, line in imported_modules(path):
            rule = crossing(importer, imported)
            allowed = any(importer == a and (imported == b or imported.startswith(b + ".")) for a, b in ALLOWED)
            if rule is not None and not allowed:
                found.setdefault((str(path.relative_to(ROOT.parent)), line), f"{importer} imports {imported} ({rule})")
    return [f"{where}:{line}: {what}" for (where, line), what in sorted(found.items())]


def test_core_library_and_plugins_import_only_downwards():
    problems = violations()
    assert not problems, "imports that cross the layers:\n" + "\n".join(problems)


def test_the_allowed_crossings_still_exist():
    """An exception that nothing needs any more is removed from `ALLOWED`."""
    made = {(module_name(path)[0], imported) for path in ROOT.rglob("*.py") for imported, _ in imported_modules(path)}
    stale = [pair for pair in ALLOWED if pair not in made]
    assert not stale, f"remove these from ALLOWED, nothing imports them: {stale}"


def test_the_check_sees_relative_and_nested_imports():
    assert crossing("brainsynth.plugins.tasks.x", "brainsynth.plugins.metrics.y") is not None
    assert crossing("brainsynth.plugins.tasks.x", "brainsynth.plugins.tasks.y") is None
    assert crossing("brainsynth.plugins.tasks.x", "brainsynth.plugins") is not None
    assert crossing("brainsynth.core.runner", "brainsynth.library.subjects") is not None
    assert crossing("brainsynth.library.report", "brainsynth.plugins.reports") is not None
    assert crossing("brainsynth.library.report", "brainsynth.core.errors") is None
    assert crossing("brainsynth.cli", "brainsynth.plugins.tasks") is None
    source = "import os\n\ndef f():\n    from ..metrics import fid\n    from .prior import x\n"
    found = imports_of(source, "brainsynth.plugins.tasks")
    assert ("brainsynth.plugins.metrics", 4) in found and ("brainsynth.plugins.metrics.fid", 4) in found
    assert ("brainsynth.plugins.tasks.prior", 5) in found
    assert crossing("brainsynth.plugins.tasks.x", "brainsynth.plugins.metrics.fid") is not None
