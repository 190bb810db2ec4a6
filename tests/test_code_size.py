"""Small modules and short functions (the developers' guide): no function over 60 lines and no
file over 400 lines anywhere in the package, so each piece can be read in one sitting."""

import ast
from pathlib import Path

import pytest

import vitssl

PACKAGE = Path(vitssl.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400
# Being split on other branches of the same change; the xfail goes once those are merged.
def too_long(source: str) -> list[str]:
    """What in `source` breaks the limits: the file's length, and each function (nested ones and
    methods included) longer than the limit, counted from `def` (decorators excluded) to its end."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_FILE_LINES:
        found.append(f"file: {lines} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{node.name} (line {node.lineno}): {length} lines")
    return found


def _modules() -> list:
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", _modules())
def test_no_long_file_or_function(module):
    assert too_long((PACKAGE / module).read_text()) == []


def test_the_limits_are_measured():
    """A 61-line function and a 401-line file are caught; 60 and 400 pass."""
    def function(body_lines: int) -> str:
        return "def f():\n" + "    x = 1\n" * (body_lines - 1)

    assert too_long(function(60)) == []
    assert too_long(function(61)) == ["f (line 1): 61 lines"]
    assert too_long("x = 1\n" * 400) == []
    assert too_long("x = 1\n" * 401) == ["file: 401 lines"]
    method = "class A:\n    def g(self):\n" + "        y = 2\n" * 61
    assert too_long(method) == ["g (line 2): 62 lines"]

