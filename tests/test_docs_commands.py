"""Every `vitssl ...` command (and `python benchmarks/NAME.py ...` one) in a fenced bash block of
README.md and docs/**/*.md is run.

Each command parses with the real argument parser, names an existing preset and passes config
validation as written. Then every doc file's commands run in order, in one scratch folder, as a
user would type them, shrunk to seconds: the same subcommand, flags, presets and overrides, plus
flags and overrides appended last (which win) that make the model, data and schedule tiny
(`SHRINK_FLAGS`, `tests/helpers.tiny_overrides`). Paths the docs leave to the reader are made
for them: an image folder where a data set is named (`/data/imagenet/train`, `my_data`, `PATH`),
a tiny pre-trained run where a run folder is read before any command wrote it, an original
repository's checkpoint (synthetic, in that repository's layout) for `vitssl import`, a short
video for `eval video-segmentation`; absolute paths move under the scratch folder. Blocks marked
with a `<!-- run -->` line just above them run exactly as written (keep those cheap).

Inline commands in running text (e.g. `vitssl eval knn ... [--ks ...]`) use a usage notation,
not shell syntax, and are not checked here.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import load_benchmark, tiny_mae_teacher, tiny_overrides
from vitssl.cli import build_parser, main
from vitssl.commands.pretrain import pretrain
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

    @property
    def script(self) -> str | None:
        """`benchmarks/NAME.py` for a benchmark script's command, None for a `vitssl` one."""
        return self.argv[0] if self.argv and self.argv[0].startswith("benchmarks/") else None

    def __str__(self) -> str:
        return f"{self.where}: {'python' if self.script else 'vitssl'} {' '.join(self.argv)}"


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
    """The argument lists of every `vitssl` (or `python -m vitssl`) invocation in a shell line, and
    of every `python benchmarks/NAME.py` one (its argv starts with the script's path)."""
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
            if token.startswith("benchmarks/") and token.endswith(".py"):
                found.append(seg[k:])
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


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.script], ids=str)
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


# -- running every command, shrunk ------------------------------------------------------------

BUILTIN_SETS = {"digits", "mnist", "shapes", "shapes-fg"}
DATA_FLAGS = {"--data", "--train", "--val", "--images"}
DATA_KEYS = ("data.path=", "train.knn_data=")
RUN_FLAGS = {"--checkpoint", "--a", "--b", "--teacher", "--resume"}
CPU = ["--device", "cpu"]
# appended after the documented flags, so these win (argparse keeps the last value)
SHRINK_FLAGS = {
    "demo": ["--dataset", "digits", "--epochs", "1"],
    "eval knn": ["--image-size", "16", "--batch-size", "16", "--num-workers", "0", "--ks", "3", *CPU],
    "eval linear": ["--image-size", "16", "--batch-size", "16", "--num-workers", "0", "--epochs", "1",
                    "--n-last-blocks", "1", *CPU],
    "eval finetune": ["--image-size", "16", "--batch-size", "8", "--num-workers", "0", "--epochs", "1",
                      "--samples-per-class", "2", *CPU],
    "eval transfer": ["--sets", "builtin-digits", "--image-size", "16", "--num-workers", "0", "--cs", "1", "--epochs", "1",
                      "--samples-per-class", "2", *CPU],
    "eval segmentation": ["--image-size", "16", "--batch-size", "8", "--num-workers", "0", "--epochs", "1", *CPU],
    "eval detection": ["--iters", "2", *CPU],
    "eval video-segmentation": ["--short-side", "32", *CPU],
    "analyze attention": ["--image-size", "16", "--limit", "2", *CPU],
    "analyze correspondence": ["--image-size", "16", "--limit", "4", "--top", "2", *CPU],
    "analyze layers": ["--image-size", "16", "--limit", "8", "--batch-size", "8", *CPU],
    "analyze attention-stats": ["--image-size", "16", "--limit", "8", "--batch-size", "8", *CPU],
    "benchmark throughput": ["--batch-size", "2", "--image-size", "32", "--iters", "1", *CPU],
    "benchmark input": ["--workers", "0", "--batch-size", "2", "--batches", "1", *CPU],
    "benchmark step": ["--tiny", "--steps", "1", "--warmup", "0", "--workers", "0", "--images", "4", *CPU],
    "report": ["--limit", "2"],
    "embed": ["--image-size", "16", "--batch-size", "8", "--num-workers", "0", *CPU],
    "benchmarks/checkpoint_save.py": ["--gib", "0.01", "--repeats", "1"],
    "benchmarks/decode_memory.py": ["--pixels", "10000", "--modes", "RGB"],
    "benchmarks/esvit_cpu_evidence.py": ["--epochs", "1", "--knn-every", "0", "--corr-limit", "2", "--overrides",
                                         "train.max_steps_per_epoch=2", "train.num_workers=0", "train.progress=false"],
    "benchmarks/dense_claims.py": ["--tiny", "--seeds", "0", "--parts", "mae"],
}


def subcommand(argv: list[str]) -> str:
    if argv[0].startswith("benchmarks/"):
        return argv[0]
    return " ".join(argv[:2]) if argv[0] in ("eval", "analyze", "benchmark") else argv[0]


def flag_values(argv: list[str], flags: set[str]) -> list[tuple[str, str]]:
    return [(a, argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in flags]


def relocate(argv: list[str]) -> list[str]:
    """Absolute paths (`/data/imagenet/train`, `/tmp/ft/mae`) move under the scratch folder."""
    def move(token: str) -> str:
        key, eq, value = token.partition("=")
        if eq and value.startswith("/") and "." in key:
            return f"{key}={value.lstrip('/')}"
        return token.lstrip("/") if token.startswith("/") else token
    return [move(a) for a in argv]


class Fixtures:
    """What the docs leave to the reader, made on first use: image folders, runs, originals, videos."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def image_folder(self, root: Path) -> None:
        rng = np.random.default_rng(0)
        for c, name in enumerate(("a", "b", "c")):
            (root / name).mkdir(parents=True)
            for i in range(6):
                pixels = (rng.random((24, 24, 3)) * 100 + 70 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / name / (f"{i}.jpg" if i % 2 else f"{i}.png"))

    def run(self, method: str) -> Path:
        """A tiny pre-trained run (2 steps on digits), made once per method and copied where needed."""
        made = self.scratch / ".fixtures" / method
        if not made.exists():
            if method == "mae-teacher":
                made.mkdir(parents=True)
                shutil.copy(tiny_mae_teacher(), made / "checkpoint.pt")
            else:
                cfg = load_config(None, [f"method.name={method}", *tiny_overrides("digits", method=method)],
                                  method_configs())
                pretrain(cfg, made)
        return made

    def original(self, source: str, path: Path) -> list[str]:
        """A synthetic checkpoint in the original repository's layout; returns the import's overrides."""
        from commands.test_convert import (
            HEADS,
            TINY_SWIN,
            dino_original,
            esvit_original,
            mae_original,
            selfpatch_original,
            source_method,
        )

        method, build, extra = {
            "dino": ("dino", dino_original, HEADS), "esvit": ("esvit", esvit_original, []),
            "selfpatch": ("selfpatch", selfpatch_original, HEADS), "mae-lite": ("mae", mae_original, HEADS),
        }[source]
        model = source_method(method, TINY_SWIN if source == "esvit" else ())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build(model), path)
        return list(extra)

    def video(self, frames: Path, first_mask: Path) -> None:
        frames.mkdir(parents=True)
        for t in range(3):
            pixels = np.zeros((32, 48, 3), np.uint8)
            pixels[8:20, 4 + 8 * t:16 + 8 * t, 0] = 255
            Image.fromarray(pixels).save(frames / f"{t:05d}.png")
            if t == 0:
                ids = (pixels[..., 0] > 0).astype(np.uint8)
                mask = Image.frombytes("P", (48, 32), ids.tobytes())
                mask.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
                mask.save(first_mask)

    def provide(self, argv: list[str]) -> list[str]:
        """Make the paths `argv` reads but no earlier command wrote; returns extra arguments."""
        command = subcommand(argv)
        datas = [v for _, v in flag_values(argv, DATA_FLAGS)]
        datas += [a.split("=", 1)[1] for a in argv if a.startswith(DATA_KEYS)]
        for value in datas:
            if value not in BUILTIN_SETS and not Path(value).exists():
                self.image_folder(Path(value))
        if command == "import":
            (_, source), (_, original) = flag_values(argv, {"--from"})[0], flag_values(argv, {"--checkpoint"})[0]
            return self.original(source, Path(original)) if not Path(original).exists() else []
        if command == "eval video-segmentation":
            (_, frames), (_, mask) = flag_values(argv, {"--frames"})[0], flag_values(argv, {"--first-mask"})[0]
            if not Path(frames).exists():
                self.video(Path(frames), Path(mask))
        runs = flag_values(argv, RUN_FLAGS) + ([("report", argv[1])] if command == "report" else [])
        for flag, value in runs:
            if not Path(value).exists():
                shutil.copytree(self.run("mae-teacher" if flag == "--teacher" else "dino"), value)
        return []


def shrunk(argv: list[str]) -> list[str]:
    """The documented command with the flags and overrides that make it take seconds."""
    command = subcommand(argv)
    if command == "pretrain" and "--resume" not in argv:
        args = build_parser().parse_args(argv)
        keep_data = args.data or any(a.startswith("data.path=") for a in args.overrides)
        if args.method:
            tiny = tiny_overrides(method=args.method)
        else:
            tiny = tiny_overrides(preset=args.config) if args.config else tiny_overrides()
        drop = (("data.path=",) if keep_data else ()) + (("method.teacher=",) if args.teacher else ())
        return argv + [o for o in tiny if not (drop and o.startswith(drop))]
    if command == "benchmarks/preset_stability.py":  # one variant, one seed, two steps
        tiny = [o for o in tiny_overrides() if not o.startswith(("data.path=", "train.epochs="))]
        return argv + ["--epochs", "1", "--seeds", "0", "--variants", "preset", "--knn-every", "1", *tiny]
    if command == "benchmarks/step_proxies.py":  # one image per batch
        return argv + ["--batch", "1"]
    if command == "benchmarks/demo_step.py":  # one round of two steps per variant
        return argv + ["--steps", "2", "--skip", "0", "--rounds", "1"]
    if command == "demo" and "mae" in argv:  # the MAE demo runs on MNIST only
        return argv + ["--dataset", "mnist", "--epochs", "1"]
    return argv + SHRINK_FLAGS.get(command, [])


DOC_FILES = sorted({c.where.split(":")[0] for c in COMMANDS})


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOC_FILES)
def test_every_command_of_a_doc_file_runs(doc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fixtures = Fixtures(tmp_path)
    for command in [c for c in COMMANDS if c.where.split(":")[0] == doc]:
        argv = list(command.argv) if command.run else relocate(command.argv)
        extra = [] if command.run else fixtures.provide(argv)
        argv = argv if command.run else shrunk(argv) + extra
        code = run_script(argv) if command.script else main(argv)
        assert code == 0, f"{command}\n  ran as: {' '.join(argv)}\n{capsys.readouterr().err[-2000:]}"


def run_script(argv: list[str]) -> int:
    """`python benchmarks/NAME.py ARGS`: the script's `main(ARGS)` (a parse error exits non-zero)."""
    name = Path(argv[0]).stem
    module = load_benchmark(name)
    try:
        module.main(argv[1:])
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.modules.pop(name, None)
    return 0
