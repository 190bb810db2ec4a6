"""SIGKILL on a real `vitssl pretrain --data SHARDS` mid-epoch, then `--resume`: the streamed
run ends with bitwise the parameters of an uninterrupted one, so the resumed run read exactly
the samples (and augmentation draws) that were left, in their order (see test_sigkill_resume.py)."""


import pytest
import torch
from shard_helpers import packed

from helpers import sigkill_pretrain_after_logged_steps, tiny_overrides
from vitssl.cli import main

STEPS_PER_EPOCH = 12  # 96 images / batch 8
ARGS = [*tiny_overrides("unused")[1:], "train.epochs=2", "train.max_steps_per_epoch=0", "train.num_workers=2",
        "train.checkpoint_every_steps=1", "train.checkpoint_every_minutes=0"]


def final_state(run_dir):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 * STEPS_PER_EPOCH
    return ckpt["method"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_streams_the_rest_exactly(tmp_path):
    shards = str(packed(tmp_path, per_class=32, shard_size=2048))
    spec = f"{shards}/train-{{000000..{len(list(tmp_path.glob('shards/*.tar'))) - 1:06d}}}.tar"
    assert main(["pretrain", "--data", spec, "--out", str(tmp_path / "whole"), *ARGS]) == 0
    run_dir = tmp_path / "killed"
    stopped = sigkill_pretrain_after_logged_steps(run_dir, ["--data", spec, *ARGS])
    assert 2 <= stopped < 2 * STEPS_PER_EPOCH

    assert main(["pretrain", "--resume", str(run_dir)]) == 0
    want, got = final_state(tmp_path / "whole"), final_state(run_dir)
    for k, v in want.items():
        assert torch.equal(v, got[k]), f"{k} differs after SIGKILL at step {stopped} and resume"
