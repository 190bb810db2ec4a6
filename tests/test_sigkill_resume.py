"""SIGKILL (no chance to save) on a real `vitssl pretrain` process mid-epoch, then `--resume`:
the run ends with bitwise the parameters of an uninterrupted run (CPU).

Only the killed run is a subprocess (it must die without cleanup); the resumed and the
uninterrupted runs go through the same CLI entry point in this process, which saves two
interpreter start-ups (torch, timm and sklearn imports) per case. The subprocess gets this
process's intra-op thread count, so both sides add floats in the same order.
"""


import pytest
import torch

from helpers import sigkill_pretrain_after_logged_steps, tiny_overrides
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


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, uninterrupted, workers):
    run_dir = tmp_path / "run"
    stopped = sigkill_pretrain_after_logged_steps(run_dir, ["--data", "digits", *ARGS, f"train.num_workers={workers}"])
    assert 2 <= stopped < 2 * STEPS_PER_EPOCH

    assert main(["pretrain", "--resume", str(run_dir)]) == 0
    resumed = final_method_state(run_dir)
    assert resumed.keys() == uninterrupted.keys()
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]), f"{k} differs after SIGKILL at step {stopped} and resume"
