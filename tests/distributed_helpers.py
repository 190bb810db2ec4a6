"""Pieces of the 2-process gloo tests that must be importable by spawned workers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from helpers import one_batch, tiny_overrides
from vitssl.config import load_config, to_container, to_objects
from vitssl.data import build_dataset
from vitssl.data.pipeline import InputPipeline
from vitssl.distributed import mean_over_ranks, rank, world_size
from vitssl.engine.rng import seed_everything
from vitssl.engine.trainer import Trainer
from vitssl.eval.features import gather_features, rank_shard
from vitssl.methods import build_method, method_configs

GLOBAL_BATCH = 8
STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_trainer(run_dir: Path | None, batch_size: int, accum_steps: int, extra: tuple[str, ...] = ()) -> Trainer:
    """A tiny DINO trainer; the same seed on every rank gives the same initial weights.

    SGD, not AdamW: Adam divides by the gradient's own scale, so entries whose true gradient
    is zero (the attention key bias: softmax ignores it) turn float rounding noise into full
    lr-sized steps, which no tolerance on the weights survives. SGD keeps the comparison a
    comparison of gradients.
    """
    overrides = [*tiny_overrides("digits"), f"train.batch_size={batch_size}", f"train.accum_steps={accum_steps}",
                 "train.epochs=2", "train.max_steps_per_epoch=3", "optim.optimizer=sgd", "optim.lr=5.0",
                 "method.freeze_last_layer=0", *extra]
    cfg = load_config(None, overrides, method_configs())
    objs = to_objects(cfg)
    seed_everything(objs.train.seed)
    method = build_method(objs.method, objs.backbone)
    data = InputPipeline(method, build_dataset("digits", "train"), objs.train)
    return Trainer(method, data, objs.train, objs.optim, run_dir or Path("unused"), to_container(cfg))


def global_batches(trainer: Trainer) -> list:
    """STEPS fixed multi-crop batches of GLOBAL_BATCH images (the same on every rank)."""
    everything = one_batch(trainer.method, GLOBAL_BATCH * STEPS)
    return [shard(everything, step, STEPS) for step in range(STEPS)]


def shard(batch, index: int, parts: int):
    """Images [index * n/parts, (index + 1) * n/parts) of every view (and of the labels)."""
    views, labels = batch
    n = labels.shape[0] // parts
    return [v[index * n:(index + 1) * n] for v in views], labels[index * n:(index + 1) * n]


def run_steps(trainer: Trainer, accum_steps: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Each rank trains on its slice of every global batch, split into `accum_steps` micro-batches.

    Returns the logged (rank-averaged) losses and the full method state after the steps.
    """
    parts = world_size() * accum_steps
    losses = []
    for batch in global_batches(trainer):
        micro = [shard(batch, rank() * accum_steps + a, parts) for a in range(accum_steps)]
        losses.append(mean_over_ranks(trainer._optimizer_step(micro))["loss"])
    state = {k: v.detach().clone().cpu() for k, v in trainer.parallel.method_state_dict().items()}
    return losses, state


def sharded_features(out_dir: Path, total: int = 7) -> None:
    """k-NN/linear feature extraction under torchrun: each rank reads its share, all get everything."""
    data = TensorDataset(torch.arange(total, dtype=torch.float32).reshape(total, 1), torch.arange(total))
    part = rank_shard(data)
    feats = torch.stack([part[i][0] for i in range(len(part))]) * 10
    labels = torch.stack([part[i][1] for i in range(len(part))])
    got = gather_features(feats, labels, total)
    if rank() == 0:
        torch.save({"shard": len(part), "feats": got[0], "labels": got[1]}, out_dir / "features.pt")


def worker(local_rank: int, world: int, port: int, out_dir: str, cases: list[tuple[str, int]]) -> None:
    """One spawned rank: join a gloo group, run every (strategy, accum_steps) case, rank 0 saves."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=local_rank, world_size=world)
    try:
        sharded_features(Path(out_dir))
        for strategy, accum in cases:
            batch_size = GLOBAL_BATCH // (world * accum)
            trainer = make_trainer(Path(out_dir) / f"{strategy}{accum}", batch_size, accum,
                                   (f"train.strategy={strategy}",))
            losses, state = run_steps(trainer, accum)
            if local_rank == 0:
                dtensors = sum(type(p).__name__ == "DTensor" for p in trainer.method.parameters())
                torch.save({"losses": losses, "state": state, "dtensor_params": dtensors},
                           Path(out_dir) / f"{strategy}{accum}.pt")
    finally:
        dist.destroy_process_group()


def divergence_worker(local_rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank of a DDP run where rank 1 alone gets a NaN loss at step 1 and, from step 3 on,
    every rank steps with lr = NaN; saves what the rank saw to `rank{N}.pt`."""
    import math

    from vitssl.engine.protocol import StepOutput
    from vitssl.engine.trainer import TrainingDiverged

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=local_rank, world_size=world)
    try:
        trainer = make_trainer(Path(out_dir) / "run", GLOBAL_BATCH // world, 1,
                               ("train.max_nonfinite_steps=2", "method.head.use_bn=true", "train.log_every=100"))
        real_step, real_lr = trainer.method.training_step, trainer.lr_at

        def poisoned(batch, ctx):
            out = real_step(batch, ctx)
            return StepOutput(out.loss * math.nan, out.metrics) if (local_rank, ctx.step) == (1, 1) else out

        trainer.method.training_step = poisoned
        trainer.lr_at = lambda step: math.nan if step >= 3 else real_lr(step)
        try:
            trainer.fit()
            result = "finished"
        except TrainingDiverged as e:
            result = str(e)
        state = {k: v.detach().clone() for k, v in trainer.method.state_dict().items()}
        torch.save({"result": result, "step": trainer.step, "skipped": trainer.skipped_steps, "state": state},
                   Path(out_dir) / f"rank{local_rank}.pt")
    finally:
        dist.destroy_process_group()


def stop_on_one_rank(local_rank: int, world: int, port: int, out_dir: str) -> None:
    """One spawned rank of a 2-rank `fit`: rank 1 alone receives SIGTERM during step 2.

    Writes `rank{r}.txt` with the step at which the rank stopped (or `finished`).
    """
    import datetime
    import signal

    from vitssl.engine.trainer import TrainingInterrupted

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=local_rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        trainer = make_trainer(Path(out_dir) / "run", GLOBAL_BATCH // world, 1, ("train.epochs=4",))
        step_hook = trainer.method.after_optimizer_step

        def signal_rank_one(ctx):
            step_hook(ctx)
            if local_rank == 1 and ctx.step == 1:
                os.kill(os.getpid(), signal.SIGTERM)

        trainer.method.after_optimizer_step = signal_rank_one
        outcome = "finished"
        try:
            trainer.fit()
        except TrainingInterrupted:
            outcome = str(trainer.step)
        (Path(out_dir) / f"rank{local_rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()
