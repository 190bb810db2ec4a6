"""Trainer fault tolerance on a tiny fake method: rolling checkpoints, corrupt-checkpoint
fallback, skipped non-finite steps, collapse warnings."""

import json
import logging
import math

import pytest
import torch
from torch import nn

from vitssl.data.pipeline import InputPipeline
from vitssl.engine.checkpoint import CheckpointError, load_checkpoint, rolling_checkpoints
from vitssl.engine.optim import OptimConfig
from vitssl.engine.protocol import StepOutput
from vitssl.engine.train_config import TrainConfig
from vitssl.engine.trainer import Trainer, TrainingDiverged
from vitssl.losses import Center


class Regressor(nn.Module):
    """A minimal `Method`: a linear map pulled to 1; NaN loss (and NaN statistics) on `nan_steps`.

    `collapse` makes it report the teacher metrics of a constant one-hot output.
    """

    def __init__(self, nan_steps=(), collapse=False):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.center = Center(4)
        self.nan_steps, self.collapse = set(nan_steps), collapse
        self.stepped: list[int] = []

    def train_transform(self):
        return lambda image, generator: torch.rand(4, generator=generator)

    def collate(self, samples):
        return torch.stack([x for x, _ in samples])

    def trainable_parameters(self):
        return self.net.named_parameters()

    def training_step(self, batch, ctx):
        bad = ctx.step in self.nan_steps
        self.center.accumulate(batch * float("nan") if bad else batch)
        loss = (self.net(batch) - 1).pow(2).mean() * (float("nan") if bad else 1.0)
        metrics = {}
        if self.collapse:
            metrics = {"teacher_entropy": torch.tensor(0.0), "teacher_kl_uniform": torch.tensor(math.log(64)),
                       "teacher_mutual_info": torch.tensor(0.0)}
        return StepOutput(loss, metrics)

    def before_optimizer_step(self, ctx):
        pass

    def after_optimizer_step(self, ctx):
        self.stepped.append(ctx.step)
        self.center.update()

    def evaluation_backbone(self):
        return self.net

    def student_backbone(self):
        return self.net


@pytest.fixture
def warnings():
    """Warnings of the `vitssl` logger (captured on it: the CLI turns off propagation to root)."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("vitssl")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def make_trainer(run_dir, method=None, steps=8, **train):
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 4, "num_workers": 0, "device": "cpu", "precision": "fp32",
                         "max_steps_per_epoch": steps, "log_every": 1, "checkpoint_every_minutes": 0,
                         "save_every_epochs": 0, "tensorboard": False, "progress": False, **train})
    torch.manual_seed(0)
    method = method or Regressor()
    return Trainer(method, InputPipeline(method, [(None, 0)] * 64, cfg), cfg, OptimConfig(lr=0.5, warmup_epochs=0),
                   run_dir)


def steps_of(paths):
    return [load_checkpoint(p)["step"] for p in paths]


# -- keep the last K ---------------------------------------------------------------------------
def test_keeps_the_last_k_rolling_checkpoints_and_every_epoch_snapshot(tmp_path):
    trainer = make_trainer(tmp_path, steps=4, epochs=2, checkpoint_every_steps=1, keep_checkpoints=3,
                           save_every_epochs=1)
    trainer.fit()
    assert [p.name for p in rolling_checkpoints(tmp_path)] == [
        "checkpoint-step0000008.pt", "checkpoint-step0000007.pt", "checkpoint-step0000006.pt"]
    assert steps_of(rolling_checkpoints(tmp_path)) == [8, 7, 6]
    assert steps_of([tmp_path / "checkpoint_epoch0001.pt", tmp_path / "checkpoint_epoch0002.pt"]) == [4, 8]
    assert not list(tmp_path.glob(".*.tmp"))


def test_keep_zero_writes_only_the_latest(tmp_path):
    make_trainer(tmp_path, steps=3, checkpoint_every_steps=1, keep_checkpoints=0).fit()
    assert rolling_checkpoints(tmp_path) == []
    assert load_checkpoint(tmp_path)["step"] == 3


# -- corrupt latest checkpoint -----------------------------------------------------------------
def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_latest_falls_back_to_the_newest_readable(tmp_path, warnings):
    make_trainer(tmp_path, steps=6, checkpoint_every_steps=2, keep_checkpoints=3).fit()
    assert [p.name for p in rolling_checkpoints(tmp_path)] == [
        "checkpoint-step0000006.pt", "checkpoint-step0000004.pt", "checkpoint-step0000002.pt"]
    # checkpoint.pt and checkpoint-step0000006.pt may be one file (a hard link): truncate both names
    truncate(tmp_path / "checkpoint.pt")
    if load_checkpoint_ok(tmp_path / "checkpoint-step0000006.pt"):
        truncate(tmp_path / "checkpoint-step0000006.pt")

    resumed = make_trainer(tmp_path, steps=6)
    resumed.resume(tmp_path)
    assert resumed.step == 4
    assert len(warnings) == 1
    assert "checkpoint.pt" in warnings[0] and "cannot be read" in warnings[0] and "checkpoint-step0000004.pt" in warnings[0]
    # the corrupt files are kept, renamed, and never picked again
    assert (tmp_path / "checkpoint.pt.corrupt").exists() and (tmp_path / "checkpoint-step0000006.pt.corrupt").exists()
    assert not (tmp_path / "checkpoint.pt").exists()
    resumed.fit()
    assert load_checkpoint(tmp_path)["step"] == 6


def load_checkpoint_ok(path):
    try:
        load_checkpoint(path)
        return True
    except CheckpointError:
        return False


def test_no_readable_checkpoint_is_one_line_error_and_renames_nothing(tmp_path):
    make_trainer(tmp_path, steps=2, checkpoint_every_steps=1, keep_checkpoints=2).fit()
    files = sorted(p.name for p in tmp_path.glob("checkpoint*.pt"))
    for name in files:
        if load_checkpoint_ok(tmp_path / name):  # hard-linked names are truncated together
            truncate(tmp_path / name)
    with pytest.raises(CheckpointError, match="no readable checkpoint") as err:
        make_trainer(tmp_path, steps=2).resume(tmp_path)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.glob("checkpoint*.pt")) == files


def test_an_explicit_file_is_not_replaced_by_another(tmp_path):
    make_trainer(tmp_path, steps=2, checkpoint_every_steps=1).fit()
    truncate(tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        make_trainer(tmp_path, steps=2).resume(tmp_path / "checkpoint.pt")


# -- non-finite losses -------------------------------------------------------------------------
def test_nonfinite_steps_are_skipped_counted_and_change_nothing(tmp_path, warnings):
    method = Regressor(nan_steps={2, 3})
    trainer = make_trainer(tmp_path, method, steps=6)
    trainer.fit()
    assert trainer.step == 6 and trainer.skipped_steps == 2
    assert sum("loss is nan, step skipped" in w for w in warnings) == 2
    assert method.stepped == [0, 1, 4, 5]  # no EMA / center update on skipped steps
    assert torch.isfinite(method.center.center).all()
    assert all(torch.isfinite(p).all() for p in method.parameters())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 2, 2, 2]
    assert load_checkpoint(tmp_path)["skipped_steps"] == 2


def test_a_skipped_step_leaves_weights_and_optimizer_untouched(tmp_path):
    method = Regressor(nan_steps={1})
    trainer = make_trainer(tmp_path, method, steps=2)
    batches = trainer._batches(0, 0)
    trainer._optimizer_step([next(batches)])
    before = {k: v.clone() for k, v in method.state_dict().items()}
    moments = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
    metrics = trainer._optimizer_step([next(batches)])
    assert math.isnan(float(metrics["loss"])) and metrics["skipped_steps"] == 1
    for k, v in method.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in trainer.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, moments[k]), k
    assert all(p.grad is None for p in method.parameters())


def test_stops_after_max_nonfinite_steps_in_a_row_and_goes_back_to_the_good_checkpoint(tmp_path):
    method = Regressor(nan_steps={1, 3, 4, 5})
    trainer = make_trainer(tmp_path, method, steps=8, max_nonfinite_steps=3, checkpoint_every_steps=1)
    weights = {}  # the weights after each applied step
    real = method.after_optimizer_step

    def remember(ctx):
        real(ctx)
        weights[ctx.step] = {k: v.clone() for k, v in method.net.state_dict().items()}

    method.after_optimizer_step = remember
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row \(3 to 5.*checkpoint-good\.pt \(step 2,.*"
                                               r"optim\.lr.*train\.precision.*teacher_temp.*--resume"):
        trainer.fit()
    assert method.stepped == [0, 2]
    # the save after step 2 (step 3) was not followed by a good step: the good one is the save at
    # step 2, which holds the weights after step 0 (step 1 was skipped); newer ones are set aside
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 2 and ckpt["skipped_steps"] == 1
    for k, v in weights[0].items():
        assert torch.equal(ckpt["method"][f"net.{k}"], v), k
    assert (tmp_path / "checkpoint.pt").samefile(tmp_path / "checkpoint-good.pt")
    assert sorted(p.name for p in tmp_path.glob("*.diverged")) == [
        "checkpoint-step0000004.pt.diverged", "checkpoint-step0000005.pt.diverged"]
    assert rolling_checkpoints(tmp_path) == []  # step 2's rolling name was pruned; the good name kept it
    # the trainer in memory went back too
    assert trainer.step == 2 and trainer.skipped_steps == 1
    for k, v in weights[0].items():
        assert torch.equal(method.net.state_dict()[k], v), k


# -- collapse ----------------------------------------------------------------------------------
def test_collapsed_teacher_warns_once(tmp_path, warnings):
    trainer = make_trainer(tmp_path, Regressor(collapse=True), steps=4, collapse_patience=2)
    trainer.fit()
    (message,) = [w for w in warnings if "collapse" in w]
    assert "one prototype" in message and "at step 2" in message and "teacher_temp" in message
