"""Data parallelism on CPU: 2 gloo processes must train exactly like 1 process on the whole batch."""

import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from distributed_helpers import GLOBAL_BATCH, free_port, make_trainer, run_steps, worker
from helpers import tiny_overrides
from vitssl.engine.logging import read_metrics

CASES = [("ddp", 1), ("ddp", 2), ("fsdp", 1)]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(worker, args=(2, free_port(), str(out), CASES), nprocs=2, join=True)
    results = {f"{s}{a}": torch.load(out / f"{s}{a}.pt", weights_only=True) for s, a in CASES}
    results["features"] = torch.load(out / "features.pt", weights_only=True)
    return results


@pytest.mark.slow
def test_feature_extraction_is_sharded_and_gathered_in_order(two_rank_results):
    got = two_rank_results["features"]
    assert got["shard"] == 4  # rank 0 of 2 reads items 0, 2, 4, 6
    assert got["feats"].flatten().tolist() == [10.0 * i for i in range(7)]
    assert got["labels"].tolist() == list(range(7))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("single"), GLOBAL_BATCH, 1)
    return run_steps(trainer, 1)


@pytest.mark.slow  # ~40 s on 2 shared cores: two spawned ranks import torch and train 3 setups
@pytest.mark.parametrize("strategy,accum", CASES)
def test_two_ranks_match_one_process_on_the_concatenated_batch(two_rank_results, one_process, strategy, accum):
    """Same global batch: DDP/FSDP gradient averaging, all-reduced centers and the lr rule
    reproduce the single-process losses and parameters (student, teacher EMA, center)."""
    want_losses, want_state = one_process
    got = two_rank_results[f"{strategy}{accum}"]
    assert got["losses"] == pytest.approx(want_losses, rel=1e-5, abs=1e-6)
    assert (got["dtensor_params"] > 0) == (strategy == "fsdp")  # FSDP really sharded the parameters
    assert got["state"].keys() == want_state.keys()
    moved = 0
    for key, want in want_state.items():
        torch.testing.assert_close(got["state"][key], want, rtol=1e-4, atol=1e-5, msg=f"{key} differs")
    trainer = make_trainer(None, GLOBAL_BATCH, 1)  # initial weights, to check training moved them
    for key, value in trainer.method.state_dict().items():
        moved += int(not torch.allclose(value, want_state[key]))
    assert moved > 0


@pytest.mark.slow  # ~30 s: torchrun starts two Python processes
def test_torchrun_pretrain_writes_one_run_folder(tmp_path):
    """`torchrun --nproc_per_node=2 -m vitssl pretrain`: both ranks train, rank 0 alone writes."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           "-m", "vitssl", "pretrain", "--out", str(run), *tiny_overrides("digits"), "train.batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]  # one writer, global batch 2 x 4
    assert (run / "checkpoint.pt").exists() and (run / "config.yaml").exists()
