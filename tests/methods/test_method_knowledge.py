"""The method object is the only place that knows its method: no module outside `vitssl/methods/`
branches on a registered method's name (a comparison with it, or a table keyed by it).

What such code wants to know is a member of the method (`vitssl.engine.protocol.MethodBase`).
Allowed: `vitssl import --from`'s layouts of the original repositories (commands/convert.py) and
`eval finetune`'s recipes, named after the papers that publish them; neither is chosen by the
method of a run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vitssl.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "vitssl"
ALSO = [ROOT / "tests" / "helpers.py"]  # shared test helpers: the tiny overrides come from the methods
ALLOWED_TABLES = {
    ("commands/convert.py", "CONVERTERS"),  # import --from: the original repositories' checkpoint layouts
    ("eval/finetune.py", "RECIPES"),  # eval finetune --recipe: the papers' fine-tuning recipes
}


def _names_in(node: ast.AST, names: set[str]) -> list[str]:
    """Method names `node` spells as string literals, itself or as a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and node.value in names:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
    return []


def method_name_branches(source: str, names: set[str], where: str = "") -> list[str]:
    """Every comparison with, `case` on, or dict literal keyed by a name in `names`, as 'where:line: what'."""
    tree = ast.parse(source)
    allowed = {id(node.value) for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
               and any(isinstance(t, ast.Name) and (where, t.id) in ALLOWED_TABLES
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            hits = [n for operand in (node.left, *node.comparators) for n in _names_in(operand, names)]
            what = "compares with"
        elif isinstance(node, ast.Dict):
            if id(node) in allowed:
                continue
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            hits, what = sorted(keys & names), "a table keyed by"
        elif isinstance(node, ast.MatchValue):
            hits, what = _names_in(node.value, names), "a case on"
        else:
            continue
        if hits:
            found.append((node.lineno, f"{where}:{node.lineno}: {what} {hits}"))
    return [text for _, text in sorted(found)]


def test_the_check_finds_each_kind_of_branch():
    names = {"dino", "mae"}
    source = ('if cfg.name == "dino": pass\nif name in ("x", "mae"): pass\nT = {"dino": 1}\n'
              'match n:\n    case "mae": pass\nok = {"transfer": 1}\nif name != "other": pass\n'
              'RECIPES = {"mae": 1}\n')
    assert [f.split(": ", 1)[1] for f in method_name_branches(source, names, "x.py")] == [
        "compares with ['dino']", "compares with ['mae']", "a table keyed by ['dino']", "a case on ['mae']",
        "a table keyed by ['mae']"]
    assert method_name_branches('RECIPES = {"mae": 1}\n', names, "eval/finetune.py") == []


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "methods" not in p.relative_to(PACKAGE).parts[:1]] + ALSO


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_outside_methods_branches_on_a_method_name(path):
    where = path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else str(path)
    found = method_name_branches(path.read_text(), set(METHODS), where)
    assert found == [], "ask the method (a MethodBase member) instead:\n" + "\n".join(found)
