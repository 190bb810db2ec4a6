"""The documentation site: every page is in the nav, internal links resolve, the library page's
example runs, and (with the `docs` extra installed) `mkdocs build --strict` succeeds."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    if isinstance(node, list):
        return [p for item in node for p in nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(nav) - set(pages)) == [], "nav entries without a page"


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_internal_links_resolve(page):
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # external or same-page anchor
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
        assert DOCS in path.parents or path.parent == DOCS, f"{page.relative_to(ROOT)} links outside docs/: {target}"
    for include in re.findall(r'^--8<-- "([^"]+)"', page.read_text(), flags=re.M):
        assert (ROOT / include).exists(), f"{page.relative_to(ROOT)} includes missing {include}"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def test_library_page_examples_run(capsys, tmp_path, monkeypatch, one_thread):
    """As the page writes them, in a fresh folder: the trainer's run folder loads back."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(DOCS / "library.md")
    assert len(blocks) >= 2
    scope: dict = {"__name__": "docs_example"}
    for code in blocks:
        exec(compile(code, str(DOCS / "library.md"), "exec"), scope)
    out = capsys.readouterr().out
    assert out.count("loss") == 3
    assert (tmp_path / "runs/mine/config.yaml").is_file()
    trained = torch.load(tmp_path / "runs/mine/checkpoint.pt", weights_only=True)
    teacher = {k.removeprefix("teacher.backbone."): v for k, v in trained["method"].items()
               if k.startswith("teacher.backbone.")}
    assert teacher and all(torch.equal(v, teacher[k]) for k, v in scope["backbone"].state_dict().items())
    assert scope["features"].shape == (1, scope["backbone"].embed_dim)


def test_import_vitssl_is_lazy():
    check = "import sys, vitssl; assert 'torch' not in sys.modules, 'import vitssl imported torch'"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)


def test_every_public_name_resolves():
    import vitssl

    assert [n for n in vitssl.__all__ if getattr(vitssl, n, None) is None] == []
    from vitssl import DINOLoss, build_method, create_backbone, losses  # noqa: F401  (the documented style)

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vitssl.nope  # noqa: B018


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed: pip install -e '.[docs]'")
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("DINOLoss") > 0
