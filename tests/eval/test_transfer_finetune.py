"""The mae-lite-finetune suite: MAE-Lite's transfer recipe per set, stopped by a real Ctrl-C
(SIGINT to a real `vitssl` process) and continued by a rerun that keeps the finished set."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config
from vitssl.methods import method_configs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mae")
    pretrain(load_config(None, ["method.name=mae", *tiny_overrides("digits", method="mae")], method_configs()), folder)
    return folder


def argv(run, out):
    return ["eval", "transfer", "--checkpoint", str(run), "--suite", "mae-lite-finetune", "--sets",
            "builtin-digits,builtin-mnist", "--out", str(out), "--image-size", "16", "--samples-per-class", "2",
            "--epochs", "4", "--device", "cpu", "--num-workers", "0"]


@pytest.mark.slow
def test_an_interrupted_suite_keeps_finished_sets_and_a_rerun_continues(mae_run, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vitssl", *argv(mae_run, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "builtin-digits.json"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]  # a stop, not an error
    assert last.startswith("vitssl: stopped by SIGINT after ") and "error" not in last
    assert "before `vitssl eval transfer` finished; the finished sets are kept in" in last
    assert not (out / "builtin-mnist.json").exists()
    done = first.read_text()
    assert json.loads(done)["protocol"] == "finetune" and json.loads(done)["epochs"] == 4

    assert main(argv(mae_run, out)) == 0  # the rerun: digits kept as it was, mnist fine-tuned
    assert first.read_text() == done
    summary = json.loads((out / "suite.json").read_text())
    assert [r["set"] for r in summary["rows"]] == ["builtin-digits", "builtin-mnist"]
    assert json.loads((out / "builtin-mnist.json").read_text())["train_images"] == 20
