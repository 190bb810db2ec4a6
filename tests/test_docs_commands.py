"""Every `vitssl ...` command in a fenced bash block of README.md and docs/**/*.md parses with the
real argument parser, names an existing preset, and passes config validation; blocks marked with
a `<!-- run -->` line just above them are run in full (keep those cheap: seconds in total).

Inline commands in running text (e.g. `vitssl eval knn ... [--ks ...]`) use a usage notation,
not shell syntax, and are not checked here.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from vitssl.cli import build_parser, main
from vitssl.config import load_config, preset_names
from vitssl.methods import method_configs

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
RUN_MARK = "<!-- run -->"
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass
class DocCommand:
    where: str  # file:line
    argv: list[str]
    run: bool

    def __str__(self) -> str:
        return f"{self.where}: vitssl {' '.join(self.argv)}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def shell_blocks(text: str) -> list[tuple[int, list[str], bool]]:
    """(first line number, lines, marked to run) of each fenced shell block."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*(\w+)?\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if (fence.group(1) or "").lower() in SHELL_LANGUAGES:
            blocks.append((i + 2, lines[i + 1:end], previous == RUN_MARK))
        i = end + 1
    return blocks


def vitssl_argvs(line: str) -> list[list[str]]:
    """The argument lists of every `vitssl` (or `python -m vitssl`) invocation in a shell line."""
    tokens = shlex.split(line, comments=True)
    segments, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    found = []
    for seg in segments:
        for k, token in enumerate(seg):
            if Path(token).name == "vitssl":
                found.append(seg[k + 1:])
                break
            if token == "-m" and k + 1 < len(seg) and seg[k + 1] == "vitssl":
                found.append(seg[k + 2:])
                break
    return found


def doc_commands() -> list[DocCommand]:
    commands = []
    for path in doc_files():
        for first, lines, run in shell_blocks(path.read_text()):
            joined, start = "", first
            for n, line in enumerate(lines):
                if not joined:
                    start = first + n
                if line.rstrip().endswith("\\"):
                    joined += line.rstrip()[:-1] + " "
                    continue
                joined += line
                for argv in vitssl_argvs(joined):
                    commands.append(DocCommand(f"{path.relative_to(ROOT)}:{start}", argv, run))
                joined = ""
    return commands


COMMANDS = doc_commands()


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 20 and any(c.run for c in COMMANDS)


def parse(command: DocCommand):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(command.argv)
    except SystemExit:
        pytest.fail(f"{command}\n  does not parse: {err.getvalue().strip().splitlines()[-1]}")


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command_parses_and_its_config_is_valid(command):
    args = parse(command)
    preset = getattr(args, "config", None)
    if preset and not preset.endswith((".yaml", ".yml")):
        assert preset in preset_names(), f"{command}\n  names an unknown preset '{preset}'"
    for name in getattr(args, "names", None) or []:  # vitssl recipes NAME ...
        assert name in preset_names(), f"{command}\n  names an unknown preset '{name}'"
    if args.command in ("pretrain", "config") and not getattr(args, "resume", None):
        overrides = list(args.overrides)
        for flag, key in (("method", "method.name"), ("backbone", "backbone.name")):
            if getattr(args, flag, None):
                overrides.append(f"{key}={getattr(args, flag)}")
        load_config(preset, overrides, method_configs())  # unknown keys and bad values raise


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.run], ids=str)
def test_marked_command_runs(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(command.argv) == 0, f"{command}\n{capsys.readouterr().err}"
