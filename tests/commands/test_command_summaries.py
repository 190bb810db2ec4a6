"""Every long command ends with the same closing lines (`vitssl.commands.summary.command_summary`):
`WHAT done in T: HEADLINE`, the files it wrote, and a next command. Checked on a tiny run against
the files on disk, the numbers in the results they hold, a stopwatch around the call, and by
running the next command; a stop signal mid-command is a stop line, not an error."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands import evaluate
from vitssl.data import build_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("summaries") / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(folder), *tiny_overrides("digits")[1:]]) == 0
    return folder


def summarised(argv, capsys, what):
    """Run `vitssl ARGV`; return (summary headline, written paths, next command) after checking
    that the reported time is no longer than the measured one."""
    capsys.readouterr()
    started = time.perf_counter()
    assert main(argv) == 0
    took = time.perf_counter() - started
    lines = capsys.readouterr().out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"{what} done in "))
    seconds, headline = re.fullmatch(rf"{what} done in (\d+) s: (.+)", lines[first]).groups()
    assert int(seconds) <= round(took) + 1
    block = lines[first + 1:]
    wrote = [Path(line.split("wrote: ", 1)[1]) for line in block if line.startswith("  wrote: ")]
    nxt = [line.split("next: ", 1)[1] for line in block if line.startswith("  next: ")]
    assert len(nxt) == 1 and block[-1].startswith("  next: "), block  # the summary closes the output
    assert wrote and all((p.is_file() and p.stat().st_size > 0) or (p.is_dir() and any(p.iterdir()))
                         for p in wrote), wrote
    return headline, wrote, nxt[0]


EVAL = ["--train", "digits", "--val", "digits", "--device", "cpu", "--num-workers", "0", "--batch-size", "64"]


def test_knn_summary_names_its_json_its_20nn_and_a_report_that_runs(run, capsys, one_thread):
    headline, wrote, nxt = summarised(["eval", "knn", "--checkpoint", str(run), *EVAL, "--ks", "5", "20"], capsys,
                                      "eval knn")
    assert wrote == [run / "eval_knn.json"]
    saved = json.loads(wrote[0].read_text())
    assert headline == (f"20-NN top-1 {saved['results']['20']['top1']:.4f} (pre-trained; "
                        f"raw pixels {saved['raw_pixels']['20']['top1']:.4f})")
    assert nxt == f"vitssl report {run}"
    report_head, pages, opener = summarised([*shlex.split(nxt)[1:], "--no-pictures"], capsys, "report")
    page = run / "report" / "report.html"
    assert pages[0] == page and "eval_knn.json" in page.read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert report_head == f"final loss {rows[-1]['loss']:.4f}"
    assert pages[1:] == [run / "report"] and {p.name for p in pages[1].glob("*.png")} >= {"loss.png", "teacher.png"}
    assert opener == f"python -m webbrowser {page.resolve().as_uri()}"


def test_linear_summary_holds_the_saved_top1(run, tmp_path, capsys, one_thread):
    out = tmp_path / "linear.json"
    headline, wrote, nxt = summarised(["eval", "linear", "--checkpoint", str(run), *EVAL, "--epochs", "2", "--n-last-blocks", "1",
                                       "--no-pixels", "--out", str(out)], capsys, "eval linear")
    assert wrote == [out] and headline == f"linear top-1 {json.loads(out.read_text())['top1']:.4f} (pre-trained)"
    assert nxt == f"vitssl report {run}"


def test_attention_stats_summary_names_plot_json_and_opens_the_plot(run, capsys, one_thread):
    headline, wrote, nxt = summarised(["analyze", "attention-stats", "--checkpoint", str(run), "--data", "digits",
                                       "--limit", "8", "--device", "cpu"], capsys, "analyze attention-stats")
    folder = run / "attention_stats"
    assert wrote == [folder / "attention_stats.png", folder / "attention_stats.json"]
    stats = json.loads(wrote[1].read_text())
    assert headline == f"last layer's mean attention distance {stats['mean_distance'][-1]:.1f} (pixel)"
    assert nxt == f"python -m webbrowser {wrote[0].resolve().as_uri()}"


def test_embed_summary_and_its_next_command_loads_the_table(run, tmp_path, capsys, one_thread):
    out = tmp_path / "e.npy"
    headline, wrote, nxt = summarised(["embed", "--checkpoint", str(run), "--data", "digits", "--out", str(out),
                                       "--num-workers", "0", "--device", "cpu"], capsys, "embed")
    images = len(build_dataset("digits", "train"))
    assert wrote == [out] and headline == f"embedded {images} images (32 features each: cls)"
    argv = shlex.split(nxt)
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=60)
    assert argv[0] == "python" and done.returncode == 0 and f"({images}, 32)" in done.stdout, done.stderr


def test_export_summary_and_its_next_command_builds_the_model_in_timm(run, tmp_path, capsys):
    headline, wrote, nxt = summarised(["export", "--checkpoint", str(run), "--out", str(tmp_path / "e")], capsys,
                                      "export")
    assert wrote == [tmp_path / "e" / "model.safetensors", tmp_path / "e" / "timm_model.json"]
    spec = json.loads(wrote[1].read_text())
    assert headline == f"{spec['model_name'] or spec['model_class']}, {wrote[0].stat().st_size / 1e6:.1f} MB"
    argv = shlex.split(nxt)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All keys matched successfully" in done.stdout, done.stdout


def test_sigterm_mid_command_is_a_stop_line_and_writes_nothing(run, tmp_path, capsys, monkeypatch, one_thread):
    """A real SIGTERM to this process while `eval knn` extracts features: without the command's
    handler it would end the test run; with it, one stop line, exit 2, no results file."""
    real = evaluate.labelled_features

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "labelled_features", signalled)
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", "--checkpoint", str(run), *EVAL, "--ks", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vitssl: stopped by SIGTERM after ") and "before `vitssl eval knn` finished" in err[-1]
    assert not any("error" in line or "Traceback" in line for line in err)
    assert not out.exists() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler given back


def test_ctrl_c_that_a_library_turns_into_its_own_error_is_still_a_stop(run, tmp_path, capsys, monkeypatch, one_thread):
    """What OmegaConf did in CI: a real Ctrl-C landed inside `OmegaConf.create`, its cleanup
    failed on the half-built node, and it raised its own `ConfigKeyError` from that (`from
    None`). The command must still end as a stop (exit 2, the stop line), not as an error."""
    from omegaconf.errors import ConfigKeyError

    def interrupted_inside_a_library(*args, **kwargs):
        try:
            try:
                os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt at the next bytecode
                time.sleep(5)
            finally:
                None._invalidate_flags_cache()  # the library's cleanup on its half-built state
        except AttributeError as e:
            raise ConfigKeyError(str(e)) from None

    monkeypatch.setattr(evaluate, "labelled_features", interrupted_inside_a_library)
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", "--checkpoint", str(run), *EVAL, "--ks", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vitssl: stopped by SIGINT after "), err
    assert not any("error" in line or "Traceback" in line for line in err) and not out.exists()


def test_sigterm_before_pretrain_trains_is_a_stop_naming_resume(tmp_path, capsys, monkeypatch):
    """Outside its training loop (here: the data scan) pretrain has no step to finish: the signal
    still ends it as a stop, naming how to continue, and no run folder is made."""
    from vitssl.commands import pretrain

    real = pretrain.build_dataset

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "build_dataset", signalled)
    run = tmp_path / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run), *tiny_overrides("digits")[1:]]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vitssl: stopped by SIGTERM after ") and "error" not in last
    assert last.endswith(f"vitssl pretrain --resume {run}") and not run.exists()
