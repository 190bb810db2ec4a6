"""SIGKILL (no chance to save) on a real `vitssl pretrain` process mid-epoch, then `--resume`:
the run ends with bitwise the parameters of an uninterrupted run (CPU).

Only the killed run is a subprocess (it must die without cleanup); the resumed and the
uninterrupted runs go through the same CLI entry point in this process, which saves two
interpreter start-ups (torch, timm and sklearn imports) per case. The subprocess gets this
process's intra-op thread count, so both sides add floats in the same order.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import tiny_overrides
from vitssl.cli import main

STEPS_PER_EPOCH = 12
ARGS = [*tiny_overrides("digits")[1:], "train.epochs=2", f"train.max_steps_per_epoch={STEPS_PER_EPOCH}",
        "train.checkpoint_every_steps=1", "train.checkpoint_every_minutes=0", "train.keep_checkpoints=2"]


def final_method_state(run_dir):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 * STEPS_PER_EPOCH
    return ckpt["method"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run_dir), *ARGS]) == 0
    return final_method_state(run_dir)


def start_killable(run_dir, args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(torch.get_num_threads()))
    # its own process group, so the kill also takes data-loader workers, as a scheduler's would
    return subprocess.Popen([sys.executable, "-m", "vitssl", "pretrain", "--data", "digits", "--out", str(run_dir),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def logged_steps(run_dir):
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, uninterrupted, workers):
    run_dir = tmp_path / "run"
    proc = start_killable(run_dir, [*ARGS, f"train.num_workers={workers}"])
    deadline = time.time() + 120
    while time.time() < deadline and logged_steps(run_dir) < 3 and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    stopped = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 2 <= stopped < 2 * STEPS_PER_EPOCH

    assert main(["pretrain", "--resume", str(run_dir)]) == 0
    resumed = final_method_state(run_dir)
    assert resumed.keys() == uninterrupted.keys()
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]), f"{k} differs after SIGKILL at step {stopped} and resume"
