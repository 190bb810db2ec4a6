"""A bad step's update skipped on the device, its flags read on the host only on log steps, before
saves and at epoch ends. Real faults: a NaN batch through a BatchNorm head, a NaN loss from the
method's forward, an optimizer step with lr = NaN. What must hold: no host-device sync on the
other steps, and no damage from a bad step to weights, optimizer state, EMA teacher, centers or
BatchNorm statistics, bitwise, exactly as the per-step host check (the path SGD still takes)."""

import logging
import math

import pytest
import torch

from helpers import tiny_overrides
from sync_probe import record
from vitssl.config import load_config, to_container, to_objects
from vitssl.data import build_dataset
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.checkpoint import load_checkpoint
from vitssl.engine.protocol import StepOutput
from vitssl.engine.rng import seed_everything
from vitssl.engine.trainer import Trainer, TrainingDiverged
from vitssl.methods import build_method, method_configs

BN_HEAD = ["method.head.use_bn=true", "method.freeze_last_layer=0"]  # as every demo_* preset
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def dino_trainer(run_dir, *extra, host_checks=False):
    cfg = load_config(None, [*tiny_overrides("digits"), *BN_HEAD, "train.checkpoint_every_minutes=0", *extra],
                      method_configs())
    objs = to_objects(cfg)
    seed_everything(objs.train.seed)
    method = build_method(objs.method, objs.backbone)
    if host_checks:  # the per-step host read: what a method that does not gate its updates gets
        method.gates_state_updates = False
    data = InputPipeline(method, build_dataset("digits", "train"), objs.train)
    trainer = Trainer(method, data, objs.train, objs.optim, run_dir, to_container(cfg))
    if host_checks:  # the same fused AdamW kernel as the device path (CPU's per-tensor one rounds apart)
        for group in trainer.optimizer.param_groups:
            group["fused"] = True
    return trainer


def full_state(trainer):
    """Everything a step may change: weights, teacher, centers, BatchNorm buffers, optimizer state."""
    state = {f"method.{k}": v.clone() for k, v in trainer.method.state_dict().items()}
    for i, s in trainer.optimizer.state_dict()["state"].items():
        state.update({f"optimizer.{i}.{k}": v.clone() for k, v in s.items()})
    return state


def assert_equal_states(got, want):
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def nan_views(batch):
    views, labels = batch
    return [v * math.nan for v in views], labels


@pytest.mark.parametrize("device", DEVICES)
def test_no_host_sync_on_steps_between_log_steps(tmp_path, device):
    """The whole tiny DINO step (BatchNorm head) reads nothing on non-log steps; a log step reads
    the queued flags once. The per-step host path reads every step (the contrast)."""
    trainer = dino_trainer(tmp_path, "train.max_steps_per_epoch=6", "train.log_every=3", f"train.device={device}")
    assert trainer.on_device
    batches = trainer._batches(0, 0)
    syncs = [record(trainer._optimizer_step, [next(batches)])[1].syncs for _ in range(6)]
    assert syncs == [0, 0, 1, 0, 0, 1]

    host = dino_trainer(tmp_path / "host", "train.max_steps_per_epoch=2", "train.log_every=3", f"train.device={device}",
                        host_checks=True)
    assert not host.on_device
    batches = host._batches(0, 0)
    assert all(record(host._optimizer_step, [next(batches)])[1].syncs >= 1 for _ in range(2))


@pytest.mark.parametrize("device", DEVICES)
def test_a_nan_step_mid_interval_changes_nothing_and_is_counted_when_read(tmp_path, caplog, device):
    on = f"train.device={device}"
    trainer = dino_trainer(tmp_path / "device", "train.max_steps_per_epoch=4", "train.log_every=4", on)
    host = dino_trainer(tmp_path / "host", "train.max_steps_per_epoch=4", "train.log_every=4", on, host_checks=True)
    assert trainer.on_device and not host.on_device
    batches = list(zip(range(4), trainer._batches(0, 0)))
    trainer._optimizer_step([batches[0][1]])
    before = full_state(trainer)
    assert any("running_var" in k for k in before) and any("center" in k for k in before)
    assert any(k.endswith("exp_avg_sq") for k in before)

    metrics = trainer._optimizer_step([nan_views(batches[1][1])])  # a real NaN through the BatchNorm head
    assert math.isnan(float(metrics["loss"]))
    assert_equal_states(full_state(trainer), before)  # weights, moments, step counts, teacher, centers, BN
    assert trainer.skipped_steps == 0  # not read yet: the next read counts it
    with caplog.at_level(logging.WARNING, logger="vitssl"):
        trainer._optimizer_step([batches[2][1]])
        assert trainer.skipped_steps == 0
        metrics = trainer._optimizer_step([batches[3][1]])  # the log step reads the interval's flags
    assert trainer.skipped_steps == 1 and metrics["skipped_steps"] == 1
    assert [r.getMessage()[:22] for r in caplog.records if "step skipped" in r.getMessage()] == ["step 1: loss is nan, s"]

    for i, batch in batches:  # the per-step host check, which skips on the host, ends bitwise alike
        host._optimizer_step([nan_views(batch) if i == 1 else batch])
    assert host.skipped_steps == 1
    assert_equal_states(full_state(trainer), full_state(host))


def test_nonfinite_steps_in_a_row_between_reads_still_stop_at_the_good_checkpoint(tmp_path):
    """NaN losses at steps 5 and 6 with max_nonfinite_steps=2, read at the last step (7): the run
    goes back to the save at step 4, which a good step (4) ran from, and stops."""
    trainer = dino_trainer(tmp_path, "train.max_steps_per_epoch=8", "train.log_every=8",
                           "train.checkpoint_every_steps=4", "train.max_nonfinite_steps=2")
    real_step = trainer.method.training_step

    def poisoned(batch, ctx):
        out = real_step(batch, ctx)
        return StepOutput(out.loss * math.nan, out.metrics) if ctx.step in (5, 6) else out

    trainer.method.training_step = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss was nan at 2 steps in a row \(5 to 6.*checkpoint-good\.pt \(step 4,"):
        trainer.fit()
    good = load_checkpoint(tmp_path / "checkpoint-good.pt")
    assert good["step"] == 4 and (tmp_path / "checkpoint.pt").samefile(tmp_path / "checkpoint-good.pt")
    assert trainer.step == 4 and trainer.skipped_steps == 0
    for k, v in trainer.method.state_dict().items():  # the trainer in memory went back too
        assert torch.equal(v, good["method"][k]), k


def test_a_nan_update_between_log_steps_is_read_before_the_save_and_never_saved(tmp_path):
    trainer = dino_trainer(tmp_path, "train.max_steps_per_epoch=4", "train.log_every=100",
                           "train.checkpoint_every_steps=2")
    real_lr = trainer.lr_at
    trainer.lr_at = lambda step: math.nan if step >= 1 else real_lr(step)
    with pytest.raises(TrainingDiverged, match=r"update of step 1 left NaN/Inf"):
        trainer.fit()
    saved = sorted(tmp_path.glob("checkpoint*.pt"))
    assert len(saved) == 3 and not (tmp_path / "checkpoint-step0000002.pt").exists()  # the step-2 save read first
    for path in saved:  # the initial state only (three names), nothing from after the NaN update
        ckpt = load_checkpoint(path)
        assert ckpt["step"] == 0 and all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())


def test_a_streak_between_log_steps_is_read_before_the_save_which_is_not_written(tmp_path):
    """NaN losses at steps 1 and 2 (max_nonfinite_steps=2), a save due after step 2, no log step
    before it: the save reads the flags first and the run stops instead of writing it."""
    trainer = dino_trainer(tmp_path, "train.max_steps_per_epoch=4", "train.log_every=100",
                           "train.checkpoint_every_steps=3", "train.max_nonfinite_steps=2")
    real_step = trainer.method.training_step
    ran = []

    def poisoned(batch, ctx):
        ran.append(ctx.step)
        out = real_step(batch, ctx)
        return StepOutput(out.loss * math.nan, out.metrics) if ctx.step in (1, 2) else out

    trainer.method.training_step = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss was nan at 2 steps in a row \(1 to 2.*checkpoint-good\.pt \(step 0,"):
        trainer.fit()
    assert ran == [0, 1, 2] and not list(tmp_path.glob("checkpoint-step0000003*"))
    assert load_checkpoint(tmp_path)["step"] == 0
