"""Ctrl-C on a real `vitssl pretrain` process saves a checkpoint that resumes on the same path."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import tiny_overrides

ARGS = [*tiny_overrides("digits")[1:], "train.epochs=2", "train.max_steps_per_epoch=12"]


def pretrain(*argv):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "vitssl", "pretrain", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_then_resume_equals_uninterrupted(tmp_path, sig):
    proc = pretrain("--data", "digits", "--out", tmp_path / "b", *ARGS)
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "vitssl: stopped at step" in err and "--resume" in err and "error" not in err  # a stop, not an error
    stopped = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= stopped < 24

    resumed = pretrain("--resume", tmp_path / "b")
    straight = pretrain("--data", "digits", "--out", tmp_path / "a", *ARGS)
    for p in (resumed, straight):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 24
    for k, v in a["method"].items():
        assert torch.equal(v, b["method"][k]), k
