"""The package's shape: commands live in `vitssl.commands`, and the library below never imports them."""

import ast
from pathlib import Path

import vitssl

PACKAGE = Path(vitssl.__file__).parent
# the CLI entry points, and the bottom-level modules everything imports
ROOT_MODULES = {"__init__.py", "__main__.py", "cli.py", "config.py", "distributed.py"}


def _imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in `path` names, lazy ones inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_package_root_holds_only_the_entry_points_and_shared_modules():
    assert {p.name for p in PACKAGE.glob("*.py")} == ROOT_MODULES


def test_nothing_below_commands_imports_them():
    above = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path not in above and "commands" not in path.relative_to(PACKAGE).parts
        and any(name == "vitssl.commands" or name.startswith("vitssl.commands.") for name in _imported_modules(path))
    )
    assert offenders == []


def test_lazy_imports_are_read(tmp_path):
    """The check above reads lazy imports too: one inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from vitssl.commands.evaluate import run_knn\n")
    assert "vitssl.commands.evaluate" in _imported_modules(module)
