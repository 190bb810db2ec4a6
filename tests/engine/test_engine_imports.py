"""The engine runs any method on any input: no engine module imports the packages above it
(shared/STYLE.md, direction of imports), so the input pipeline is built outside the trainer
(`vitssl.data.pipeline`) and handed to it. Every import statement counts, lazy ones too."""

import ast
from pathlib import Path

import pytest

import vitssl.engine

ENGINE = Path(vitssl.engine.__file__).parent
ABOVE = ("data", "augment", "methods", "losses", "heads", "eval", "analysis", "bench", "commands", "cli", "config")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from vitssl import data`
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path.name}: relative import (the package uses absolute ones)")
    return names


def reaches_above(names: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for p in packages if n == f"vitssl.{p}" or n.startswith(f"vitssl.{p}."))


def test_the_trainer_imports_nothing_from_data_or_augment():
    names = imported_modules(ENGINE / "trainer.py")
    assert "vitssl.engine.input" in names  # what it runs instead: the TrainingInput protocol
    assert reaches_above(names, ("data", "augment")) == []


@pytest.mark.parametrize("module", sorted(p.name for p in ENGINE.glob("*.py")))
def test_no_engine_module_imports_a_package_above_the_engine(module):
    assert reaches_above(imported_modules(ENGINE / module), ABOVE) == []


def test_the_check_sees_an_import_above_the_engine(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from vitssl.data.loaders import build_train_loader\n    from vitssl import augment\n")
    assert reaches_above(imported_modules(bad), ABOVE) == ["vitssl.augment", "vitssl.data.loaders",
                                                           "vitssl.data.loaders.build_train_loader"]
