"""Nothing a user owns is overwritten, and every refused output or bad checkpoint is one line.

Table-driven like tests/test_invalid_invocations.py: every case runs `vitssl.cli.main(argv)` in
one scratch folder holding a tiny run, an imported run, the user's own files, earlier results
and crafted checkpoints, and checks exit 2, a last stderr line `vitssl: error: ...` naming the
fault, no traceback, no ANSI codes, no advice to load with `weights_only=False`, and every file
that was there byte-identical afterwards with no new file written.

Faults are real where the machine allows: a read-only bind mount (root) or a folder without
write permission (non-root) for read-only outputs; a tiny tmpfs for a full disk. Cases needing a
fault this machine cannot make are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import tiny_overrides
from invocation import invoke, snapshot
from vitssl.cli import main

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    expect: str = ""  # a fragment the error line must contain
    needs: frozenset[str] = frozenset()  # "readonly": a read-only folder at {ro}

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:90]


def case(*argv: str, expect: str = "") -> Case:
    needs = frozenset({"readonly"} if any("{ro}" in a for a in argv) else set())
    return Case(tuple(argv), expect, needs)


RUN, IMPORTED, MINE = "{scratch}/run", "{scratch}/imported", "{scratch}/mine"
KNN = ("eval", "knn", "--checkpoint", RUN, "--train", "digits", "--val", "digits")
TINY_PRETRAIN = tuple(tiny_overrides("digits")[1:])

RUN_FOLDERS = [
    case("pretrain", "--data", "digits", "--out", MINE, *TINY_PRETRAIN, expect="not a vitssl run"),
    case("pretrain", "--resume", MINE, expect="not a vitssl run"),
    case("pretrain", "--resume", MINE, "train.epochs=2", expect="not a vitssl run"),
    case("pretrain", "--data", "digits", "--out", RUN, *TINY_PRETRAIN, expect="already holds a run"),
    case("pretrain", "--resume", IMPORTED, "data.path=digits", expect="init_from="),
    case("pretrain", "--data", "digits", "--out", "{scratch}/afile", *TINY_PRETRAIN, expect="is a file"),
    case("pretrain", "--data", "digits", "--out", "{scratch}/afile/run", *TINY_PRETRAIN, expect="is a file"),
    case("pretrain", "--resume", "{scratch}/afile", expect="is a file"),
    case("pretrain", "--data", "digits", "--out", "{scratch}/fresh", *TINY_PRETRAIN,
         "init_from={scratch}/nontensor.pt", expect="non-tensor"),
    case("demo", "--out", MINE, "--dataset", "digits", expect="not a vitssl run"),
]
EXISTING_OUTPUTS = [
    case(*KNN, "--out", "{scratch}/results.json", expect="--overwrite"),
    case(*KNN, "--out", RUN, expect="is a folder"),
    case(*KNN, "--out", "{scratch}/afile/knn.json", expect="is a file"),
    case(*KNN, expect="eval_knn.json' already exists"),
    case("eval", "linear", "--checkpoint", RUN, "--train", "digits", "--val", "digits", "--out",
         "{scratch}/results.json", expect="--overwrite"),
    case("eval", "finetune", "--checkpoint", RUN, "--train", "digits", "--val", "digits", "--out", MINE,
         expect="is a folder"),
    case("eval", "segmentation", "--checkpoint", RUN, "--train", "shapes", "--val", "shapes", "--out",
         "{scratch}/results.json", expect="--overwrite"),
    case("eval", "video-segmentation", "--checkpoint", RUN, "--frames", MINE, "--first-mask", "{scratch}/afile",
         "--out", "{scratch}/afile", expect="is a file"),
    case("analyze", "attention", "--checkpoint", RUN, "--images", "digits", expect="attention_000.png"),
    case("analyze", "attention", "--checkpoint", RUN, "--images", "digits", "--out", "{scratch}/afile",
         expect="is a file"),
    case("analyze", "correspondence", "--checkpoint", RUN, "--images", "digits", "--out", "{scratch}/afile",
         expect="is a file"),
    case("analyze", "layers", "--a", RUN, "--b", RUN, "--data", "digits", "--out", "{scratch}/afile/x",
         expect="is a file"),
    case("analyze", "attention-stats", "--checkpoint", RUN, "--data", "digits", "--out", "{scratch}/afile",
         expect="is a file"),
    case("benchmark", "throughput", "--backbone", "vit_tiny", "--json", "{scratch}/results.json",
         expect="--overwrite"),
    case("benchmark", "throughput", "--backbone", "vit_tiny", "--json", MINE, expect="is a folder"),
    case("benchmark", "step", "--tiny", "--json", "{scratch}/results.json", expect="--overwrite"),
    case("benchmark", "input", "--data", "{scratch}/shards", "--json", "{scratch}/results.json", expect="--overwrite"),
    case("data", "pack", "--data", "{scratch}/images", "--out", "{scratch}/shards", expect="--overwrite"),
    case("data", "pack", "--data", "{scratch}/images", "--out", "{scratch}/afile", expect="is a file"),
    case("export", "--checkpoint", RUN, "--out", "{scratch}/exported", expect="--overwrite"),
    case("export", "--checkpoint", RUN, "--out", "{scratch}/afile", expect="is a file"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/original.pth", "--out", IMPORTED,
         expect="--overwrite"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/original.pth", "--out", MINE, "--overwrite",
         expect="not a vitssl run"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/original.pth", "--out", RUN, "--overwrite",
         expect="training run"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/original.pth", "--out", "{scratch}/old.pt",
         expect="--overwrite"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/original.pth", "--out", "{scratch}/afile/x.pt",
         expect="is a file"),
    case("report", RUN, "--no-pictures", expect="--overwrite"),
    case("report", "{scratch}/damaged", "--no-pictures", "--overwrite", expect="line 2 is not JSON"),
    case("report", "{scratch}/damaged", "--no-pictures", "--overwrite", "--out", "{scratch}/page.html",
         expect="line 2 is not JSON"),
]
BAD_CHECKPOINTS = [
    case("eval", "knn", "--checkpoint", "{scratch}/evil_system.pt", "--train", "digits", "--val", "digits",
         "--out", "{scratch}/new.json", expect="posix.system"),
    case("eval", "knn", "--checkpoint", "{scratch}/evil_eval.pt", "--train", "digits", "--val", "digits",
         "--out", "{scratch}/new.json", expect="builtins.eval"),
    case("eval", "knn", "--checkpoint", "{scratch}/garbage.pt", "--train", "digits", "--val", "digits",
         "--out", "{scratch}/new.json", expect="not a torch checkpoint"),
    case("eval", "knn", "--checkpoint", "{scratch}/empty.pt", "--train", "digits", "--val", "digits",
         "--out", "{scratch}/new.json", expect="empty"),
    case("eval", "knn", "--checkpoint", "{scratch}/nontensor.pt", "--train", "digits", "--val", "digits",
         "--out", "{scratch}/new.json", expect="non-tensor"),
    case("eval", "knn", "--checkpoint", "{scratch}/notadict.pt", "--train", "digits", "--val", "digits",
         "--out", "{scratch}/new.json", expect="where a state dict of tensors is expected"),
    case("export", "--checkpoint", "{scratch}/evil_system.pt", "--out", "{scratch}/e2", expect="posix.system"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/evil_system.pt", "--out", "{scratch}/i2",
         expect="posix.system"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/garbage.pt", "--out", "{scratch}/i2",
         expect="cannot be read"),
]
READ_ONLY = [
    case("pretrain", "--data", "digits", "--out", "{ro}/run", *TINY_PRETRAIN, expect="{ro}"),
    case("pretrain", "--resume", "{ro}/run", expect="{ro}/run"),
    case(*KNN, "--out", "{ro}/knn.json", expect="{ro}"),
    case("eval", "knn", "--checkpoint", "{ro}/run", "--train", "digits", "--val", "digits", "--overwrite",
         expect="{ro}/run"),
    case("export", "--checkpoint", RUN, "--out", "{ro}/exported", expect="{ro}"),
    case("import", "--from", "dino", "--checkpoint", "{scratch}/original.pth", "--out", "{ro}/imp", expect="{ro}"),
    case("report", "{ro}/run", "--no-pictures", expect="{ro}/run/report"),
    case("analyze", "attention", "--checkpoint", "{ro}/run", "--images", "digits", expect="{ro}/run"),
    case("benchmark", "throughput", "--backbone", "vit_tiny", "--json", "{ro}/t.json", expect="{ro}"),
    case("demo", "--out", "{ro}/demo", "--dataset", "digits", expect="{ro}"),
    case("data", "pack", "--data", "{scratch}/images", "--out", "{ro}/shards", expect="{ro}"),
]
CASES = [*RUN_FOLDERS, *EXISTING_OUTPUTS, *BAD_CHECKPOINTS, *READ_ONLY]


# -- the scratch folder --------------------------------------------------------------------

class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


def _crafted_checkpoints(root: Path, run: Path) -> None:
    torch.save({"method": _Evil(os.system, "echo pwned")}, root / "evil_system.pt")
    torch.save({"method": _Evil(eval, "1+1")}, root / "evil_eval.pt")
    (root / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    (root / "empty.pt").write_bytes(b"")
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    first = next(iter(payload["method"]))
    torch.save({**payload, "method": {**payload["method"], first: "not a tensor"}}, root / "nontensor.pt")
    torch.save({**payload, "method": [1, 2, 3]}, root / "notadict.pt")


def _user_files(root: Path) -> None:
    mine = root / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("learning_rate: 3\nmodel: resnet\n")
    (mine / "metrics.jsonl").write_text('{"note": "mine"}\n')
    (mine / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n my own picture")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "results.json").write_text('{"mine": true}\n')
    (root / "old.pt").write_bytes(b"an older import")


def _original(root: Path) -> list[str]:
    from commands.test_convert import HEADS, dino_original, source_method

    torch.save(dino_original(source_method("dino", ())), root / "original.pth")
    return list(HEADS)


def _quiet(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    run = root / "run"
    _quiet("pretrain", "--data", "digits", "--out", run, *TINY_PRETRAIN)
    _quiet(*[a.format(scratch=root) for a in KNN], "--image-size", "16", "--ks", "1", "--num-workers", "0",
           "--device", "cpu")
    _quiet("analyze", "attention", "--checkpoint", run, "--images", "digits", "--limit", "1", "--image-size", "16",
           "--device", "cpu")
    _quiet("report", run, "--no-pictures")
    _quiet("export", "--checkpoint", run, "--out", root / "exported")
    heads = _original(root)
    _quiet("import", "--from", "dino", "--checkpoint", root / "original.pth", "--out", root / "imported", *heads)
    damaged = root / "damaged"
    shutil.copytree(run, damaged)
    with (damaged / "metrics.jsonl").open("r+") as f:
        lines = f.read().splitlines()
        f.seek(0)
        f.write("\n".join([lines[0], '{"step": 2, "loss": 1.0', *lines[1:]]) + "\n")
    _crafted_checkpoints(root, run)
    _user_files(root)
    _images_and_shards(root)
    return root


def _images_and_shards(root: Path) -> None:
    from shard_helpers import make_folder

    make_folder(root / "images", per_class=2)
    _quiet("data", "pack", "--data", root / "images", "--out", root / "shards", "--no-progress")


@pytest.fixture(scope="module")
def read_only(scratch) -> Path:
    """`scratch/ro`: a real read-only folder holding a copy of the run (bind mount for root,
    mode 0555 otherwise); skipped where neither is possible."""
    source, ro = scratch / ".ro-source", scratch / "ro"
    shutil.copytree(scratch / "run", source / "run")
    ro.mkdir()
    if os.geteuid() != 0:
        shutil.rmtree(ro)
        source.rename(ro)
        for p in [ro, *ro.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        yield ro
        for p in [ro, *ro.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(source), str(ro)], capture_output=True).returncode == 0 and \
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode == 0
    if not mounted:
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("root without mount rights: no real read-only folder can be made here")
    yield ro
    subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_refused_output_or_checkpoint_is_one_line_and_changes_nothing(c, scratch, request, capsys, monkeypatch):
    ro = request.getfixturevalue("read_only") if "readonly" in c.needs else scratch / "ro"
    monkeypatch.chdir(scratch)
    monkeypatch.delenv("VITSSL_DEBUG", raising=False)
    fill = dict(scratch=scratch, ro=ro)
    argv = [a.format(**fill) for a in c.argv]
    before = snapshot(scratch, ".ro-source")
    capsys.readouterr()
    code = invoke(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {err}"
    assert lines and lines[-1].startswith("vitssl: error: "), err
    assert c.expect.format(**fill) in lines[-1], f"{c.expect!r} not named in: {lines[-1]}"
    assert "Traceback" not in out + err and "\x1b" not in err and "weights_only=False" not in err
    after = snapshot(scratch, ".ro-source")
    assert not [name for name, digest in before.items() if after.get(name) != digest], "a file was changed"
    assert set(after) == set(before), f"new files: {sorted(set(after) - set(before))}"


def test_the_table_covers_every_writing_command():
    commands = {c.argv[0] if c.argv[0] not in ("eval", "analyze", "benchmark") else " ".join(c.argv[:2])
                for c in CASES}
    assert {"pretrain", "demo", "import", "export", "report", "eval knn", "eval linear", "eval finetune",
            "eval segmentation", "eval video-segmentation", "analyze attention", "analyze correspondence",
            "analyze layers", "analyze attention-stats", "benchmark throughput", "benchmark step"} <= commands
    assert len(CASES) >= 50


# -- what --overwrite allows ---------------------------------------------------------------

def test_overwrite_replaces_what_it_names_and_nothing_else(scratch, tmp_path, capsys):
    results = tmp_path / "knn.json"
    results.write_text("old")
    args = [a.format(scratch=scratch) for a in KNN] + ["--image-size", "16", "--ks", "1", "--num-workers", "0",
                                                       "--device", "cpu", "--out", str(results), "--overwrite"]
    assert main(args) == 0 and '"results"' in results.read_text()
    exported = tmp_path / "exported"
    shutil.copytree(scratch / "exported", exported)
    (exported / "notes.txt").write_text("mine")
    before = (exported / "model.safetensors").stat().st_mtime_ns
    assert main(["export", "--checkpoint", str(scratch / "run"), "--out", str(exported), "--overwrite"]) == 0
    assert (exported / "model.safetensors").stat().st_mtime_ns != before
    assert (exported / "notes.txt").read_text() == "mine" and not list(exported.glob(".*.tmp"))
    imported = tmp_path / "imported"
    shutil.copytree(scratch / "imported", imported)
    payload = torch.load(imported / "checkpoint.pt", weights_only=True)
    heads = ["backbone.num_heads=2"]
    assert main(["import", "--from", "dino", "--checkpoint", str(scratch / "original.pth"), "--out", str(imported),
                 *heads, "train.epochs=7", "--overwrite"]) == 0
    replaced = torch.load(imported / "checkpoint.pt", weights_only=True)
    assert replaced["config"]["train"]["epochs"] == 7 != payload["config"]["train"]["epochs"]
    assert "epochs: 7" in (imported / "config.yaml").read_text()


def test_report_replaces_its_figures_only_after_it_succeeds(scratch, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scratch / "run", run)
    stale = run / "report" / "attention_007.png"
    stale.write_bytes(b"a picture of an earlier report")
    old_page = (run / "report" / "report.html").read_bytes()
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + "{broken\n")
    assert main(["report", str(run), "--no-pictures", "--overwrite"]) == 2
    assert stale.exists() and (run / "report" / "report.html").read_bytes() == old_page
    assert [p.name for p in (run / "report").iterdir() if p.name.startswith(".")] == []  # no staging left
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (run / "report" / ".staging-killed").mkdir()  # left by a report that was killed
    assert main(["report", str(run), "--no-pictures", "--overwrite"]) == 0
    assert not (run / "report" / ".staging-killed").exists()
    assert not stale.exists() and (run / "report" / "report.html").read_bytes() != old_page
    assert (run / "report" / "loss.png").exists()


def test_demo_picks_a_free_folder_past_the_users_own(tmp_path):
    from vitssl.commands.demo_command import _free_folder

    (tmp_path / "demo_run").mkdir()
    (tmp_path / "demo_run" / "notes.txt").write_text("mine")
    (tmp_path / "demo_run-2").mkdir()  # empty: a run may start there
    assert _free_folder(tmp_path / "demo_run") == tmp_path / "demo_run-2"


# -- disk full ------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs: a real ENOSPC. Needs root with mount rights; skipped otherwise."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("no tmpfs can be mounted here (needs root with mount rights): no real full disk")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(small_disk):
    from vitssl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = save_checkpoint({"w": torch.arange(1000.0)}, small_disk / "checkpoint.pt")
    with pytest.raises(CheckpointError) as info:
        save_checkpoint({"w": torch.zeros(40_000)}, path)  # 160 kB: more than is left
    message = str(info.value)
    assert message == f"no space left on device writing '{path}'; the previous checkpoint is intact: free some " \
                      "space, then continue with --resume"
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(1000.0))
    assert sorted(p.name for p in small_disk.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_pretrain_and_export_on_a_full_disk_end_in_one_line(small_disk, scratch, capsys):
    code = main(["pretrain", "--data", "digits", "--out", str(small_disk / "run"), *TINY_PRETRAIN])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"vitssl: error: no space left on device writing '{small_disk}/run/")
    assert not [p for p in (small_disk / "run").iterdir() if p.name.endswith(".tmp")]
    shutil.rmtree(small_disk / "run")
    for fmt, name in (("safetensors", "model.safetensors"), ("timm", "pytorch_model.pth")):
        code = main(["export", "--checkpoint", str(scratch / "run"), "--out", str(small_disk), "--format", fmt])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1] == f"vitssl: error: no space left on device writing '{small_disk / name}': " \
                                       "free some space or choose another disk"
        assert list(small_disk.iterdir()) == []


# -- temp files of interrupted writes -------------------------------------------------------

SLOW_SAVE = """
import sys, time, torch
from vitssl.engine.checkpoint import save_checkpoint
class Slow:
    def __reduce__(self):
        print("writing", flush=True)
        time.sleep(60)
        return (int, (0,))
save_checkpoint({"w": torch.zeros(10), "slow": Slow()}, sys.argv[1])
"""


def test_a_killed_checkpoint_write_leaves_a_temp_file_that_the_next_start_removes(scratch, tmp_path, capsys):
    from vitssl.engine.checkpoint import stale_temp_files

    run = tmp_path / "run"
    shutil.copytree(scratch / "run", run)
    before = (run / "checkpoint.pt").read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(run / "checkpoint.pt")], env=env,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"  # the temp file is open and half written
    writer.kill()
    writer.wait()
    left = [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(f".checkpoint.pt.{writer.pid}.")
    assert (run / "checkpoint.pt").read_bytes() == before
    live = run / f".checkpoint.pt.{os.getpid()}.abcdefgh.tmp"  # a live writer's: kept
    live.write_bytes(b"")
    mine = run / ".checkpoint.pt.notes.txt"  # not vitssl's pattern: never touched
    mine.write_text("mine")
    assert stale_temp_files(run) == left
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert not left[0].exists() and live.exists() and mine.read_text() == "mine"
    assert "removed 1 temp file" in capsys.readouterr().err


def test_old_temp_files_without_a_writer_count_as_stale(tmp_path):
    from vitssl.engine.checkpoint import STALE_TEMP_SECONDS, stale_temp_files

    legacy = tmp_path / ".checkpoint_epoch0001.pt.k2j3h4g5.tmp"  # older vitssl: no pid in the name
    recent = tmp_path / ".checkpoint.pt.s0bsgf92.tmp"
    for p in (legacy, recent):
        p.write_bytes(b"")
    old = time.time() - STALE_TEMP_SECONDS - 5
    os.utime(legacy, (old, old))
    assert stale_temp_files(tmp_path) == [legacy]


def test_a_run_stopped_before_its_first_checkpoint_starts_again_in_its_folder(tmp_path, capsys):
    """What a requeued job does (docs/distributed.md): `--out RUN` again when RUN has no checkpoint."""
    run = tmp_path / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run), *TINY_PRETRAIN]) == 0
    for p in run.glob("checkpoint*.pt"):
        p.unlink()
    rows = len((run / "metrics.jsonl").read_text().splitlines())
    assert main(["pretrain", "--data", "digits", "--out", str(run), *TINY_PRETRAIN]) == 0
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert (run / "checkpoint.pt").exists() and len((run / "metrics.jsonl").read_text().splitlines()) == 2 * rows


def test_an_os_error_wrapped_by_a_library_is_one_line_naming_the_path(monkeypatch, capsys):
    """torch reports a failed write as `RuntimeError('[enforce fail at inline_container.cc ...')`
    raised while handling the real OSError: the line names the OSError's path and errno."""
    import errno

    import vitssl.cli as cli

    def failing_write(_args):
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out.pt")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setitem(cli.COMMANDS, "presets", failing_write)
    assert main(["presets"]) == 2
    assert capsys.readouterr().err.strip() == ("vitssl: error: '/mnt/ro/out.pt' is on a read-only file system: "
                                               "choose a path on a writable disk")
