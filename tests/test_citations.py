"""Every citation in the package, presets and docs is one a user can follow: a paper (section,
table) or an original repository, never the internal methods document ("spec 1.5")."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "src", ROOT / "docs", ROOT / "benchmarks", ROOT / "README.md"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".html", ".j2"}
# "spec 1.5", "spec §3", "spec section 1", "the spec", "the methods spec", "spec tables", "spec/x.md"
UNFOLLOWABLE = re.compile(r"\bspec(?:'s)?\s*(?:§\s*|section\s*)?\d|\bspec (?:section|tables?)\b|"
                          r"\bthe (?:methods |performance )?spec\b|\bspec/\w+\.md", re.IGNORECASE)


def scanned_files():
    for base in SCANNED:
        yield from ([base] if base.is_file() else
                    sorted(p for p in base.rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts))


@pytest.mark.parametrize("text", ["(spec 1.5)", "spec 3.7, released", "The spec (1.2, 1.5)", "spec section 1.",
                                  "the spec's tables", "(`spec/performance.md`)", "MAE spec 2.3"])
def test_pattern_catches_internal_citations(text):
    assert UNFOLLOWABLE.search(text)


@pytest.mark.parametrize("text", ["timm_model_spec(backbone)", "spec = {'model_name': name}", "timespec='seconds'",
                                  "(DINO paper Sec. 3.2; facebookresearch/dino main_dino.py)", "specs = []"])
def test_pattern_leaves_code_and_paper_citations(text):
    assert not UNFOLLOWABLE.search(text)


def test_no_citation_of_the_internal_spec():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
             for path in scanned_files()
             for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if UNFOLLOWABLE.search(line)]
    assert not found, "cite the paper (section, table) or the original repository instead:\n" + "\n".join(found)
