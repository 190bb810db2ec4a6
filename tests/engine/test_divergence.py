"""Divergence with real faults: an optimizer step that explodes (huge or NaN learning rate), a NaN
input batch through BatchNorm, a gradient that is NaN under a finite loss. What must hold: no
NaN/Inf is ever saved, a diverged run goes back to the newest checkpoint a good step ran from,
and `--resume` with a lower learning rate continues from it."""

import math

import pytest
import torch
from torch import nn

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.config import load_config, to_container, to_objects
from vitssl.data import build_dataset
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resume_candidates,
    save_checkpoint,
)
from vitssl.engine.optim import OptimConfig
from vitssl.engine.protocol import StepOutput
from vitssl.engine.rng import seed_everything
from vitssl.engine.train_config import TrainConfig
from vitssl.engine.trainer import Trainer, TrainingDiverged
from vitssl.methods import build_method, method_configs

BN_HEAD = ["method.head.use_bn=true", "method.freeze_last_layer=0"]  # as every demo_* preset


def dino_trainer(run_dir, *extra):
    cfg = load_config(None, [*tiny_overrides("digits"), *BN_HEAD, "train.max_steps_per_epoch=4", *extra],
                      method_configs())
    objs = to_objects(cfg)
    seed_everything(objs.train.seed)
    method = build_method(objs.method, objs.backbone)
    data = InputPipeline(method, build_dataset("digits", "train"), objs.train)
    return Trainer(method, data, objs.train, objs.optim, run_dir, to_container(cfg))


def nonfinite_entries(state):
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def batchnorm_stats(state):
    return {k: v for k, v in state.items() if "running_" in k}


# -- an update that makes the state NaN --------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 4])  # 1: the run ends right after the bad update
def test_a_nan_learning_rate_update_is_undone_and_never_saved(tmp_path, steps):
    trainer = dino_trainer(tmp_path, f"train.max_steps_per_epoch={steps}")
    start = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    trainer.peak_lr = math.nan  # the optimizer really steps with lr = NaN
    with pytest.raises(TrainingDiverged, match=r"update of step 0 left NaN/Inf or overflowing values.*checkpoint-good\.pt"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 0 and nonfinite_entries(ckpt["method"]) == []
    assert batchnorm_stats(ckpt["method"]) and all(torch.equal(v, start[k]) for k, v in ckpt["method"].items())
    # the trainer in memory is back at the good state too
    assert trainer.step == 0 and nonfinite_entries(trainer.method.state_dict()) == []


@pytest.mark.parametrize("lr,cause", [
    ("1e30", "the update of step 3 left NaN/Inf or overflowing values"),  # weights ~1e28: caught at once
    ("1e12", "loss was nan at 2 steps in a row (4 to 5"),  # weights ~1e10, finite: then NaN losses
])
def test_a_real_exploding_step_stops_with_the_good_checkpoint_and_resumes_with_a_lower_lr(tmp_path, capsys, lr,
                                                                                          cause):
    """1 epoch at a sane lr, then `--resume` at a huge lr: the weights explode. The run goes back
    to the checkpoint it resumed from, not to the exploded ones saved after it, and
    `--resume ... optim.lr=<lower>` trains on from there."""
    run = tmp_path / "run"
    base = ["pretrain", "--out", str(run), *tiny_overrides("digits"), *BN_HEAD, "train.max_steps_per_epoch=3",
            "train.checkpoint_every_steps=1", "train.max_nonfinite_steps=2"]
    assert main(base) == 0
    good = load_checkpoint(run)
    assert good["step"] == 3 and nonfinite_entries(good["method"]) == []
    capsys.readouterr()

    assert main(["pretrain", "--resume", str(run), "train.epochs=3", f"optim.lr={lr}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("vitssl: error:")]
    assert cause in line and f"{run / 'checkpoint-good.pt'} (step 3," in line and f"--resume {run} optim.lr=" in line
    reset = load_checkpoint(run)
    assert reset["step"] == 3 and nonfinite_entries(reset["method"]) == []
    for k, v in good["method"].items():  # the checkpoint is the good one, BatchNorm statistics included
        assert torch.equal(reset["method"][k], v), k
    assert resume_candidates(run)[0].samefile(run / "checkpoint-good.pt")
    if lr == "1e12":  # the save after the exploding update (step 4) is finite but destroyed: set aside
        exploded = load_checkpoint(run / "checkpoint-step0000004.pt.diverged")["method"]
        assert nonfinite_entries(exploded) == [] and max(v.abs().max() for v in exploded.values()) > 1e6

    assert main(["pretrain", "--resume", str(run), "train.epochs=3", "optim.lr=0.005"]) == 0
    final = load_checkpoint(run)
    assert final["step"] == 9 and final["skipped_steps"] == 0 and nonfinite_entries(final["method"]) == []
    assert any(not torch.equal(final["method"][k], v) for k, v in good["method"].items())  # it trained on


# -- skipped steps undo their forward passes --------------------------------------------------
def test_a_nan_batch_leaves_batchnorm_statistics_as_they_were(tmp_path):
    trainer = dino_trainer(tmp_path)
    batches = trainer._batches(0, 0)
    trainer._optimizer_step([next(batches)])
    before = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    views, labels = next(batches)
    metrics = trainer._optimizer_step([([v * math.nan for v in views], labels)])  # a real NaN through BN
    assert math.isnan(float(metrics["loss"])) and trainer.skipped_steps == 1
    assert batchnorm_stats(before)
    for k, v in trainer.method.state_dict().items():  # running stats and num_batches_tracked too
        assert torch.equal(v, before[k]), k


class SqrtAtZero(nn.Module):
    """A minimal `Method` whose loss is finite (0) but whose gradient is NaN: d sqrt(|x|)/dx at 0."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def train_transform(self):
        return lambda image, generator: torch.rand(4, generator=generator)

    def collate(self, samples):
        return torch.stack([x for x, _ in samples])

    def trainable_parameters(self):
        return self.net.named_parameters()

    def training_step(self, batch, ctx):
        w = self.net.weight
        return StepOutput((self.net(batch) - 1).pow(2).mean() + (w - w.detach()).abs().sum().sqrt())

    def before_optimizer_step(self, ctx):
        pass

    def after_optimizer_step(self, ctx):
        pass


def test_a_nan_gradient_under_a_finite_loss_is_skipped(tmp_path, caplog):
    cfg = TrainConfig(epochs=1, batch_size=4, num_workers=0, device="cpu", precision="fp32", max_steps_per_epoch=3,
                      max_nonfinite_steps=2, checkpoint_every_minutes=0, save_every_epochs=0, tensorboard=False,
                      progress=False)
    torch.manual_seed(0)
    method = SqrtAtZero()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    trainer = Trainer(method, InputPipeline(method, [(None, 0)] * 16, cfg), cfg, OptimConfig(lr=0.5, warmup_epochs=0),
                      tmp_path)
    with pytest.raises(TrainingDiverged, match=r"gradients were not finite at 2 steps in a row \(0 to 1"):
        trainer.fit()
    skips = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert len(skips) == 2 and all("gradients are not finite (loss " in m and "nan" not in m for m in skips)
    assert trainer.optimizer.state == {}  # never stepped
    for k, v in method.state_dict().items():
        assert torch.equal(v, before[k]), k


# -- the good checkpoint ------------------------------------------------------------------------
def test_a_healthy_run_keeps_a_good_checkpoint_without_extra_writes(tmp_path):
    trainer = dino_trainer(tmp_path, "train.checkpoint_every_steps=2", "train.max_steps_per_epoch=6")
    trainer.fit()
    good = tmp_path / "checkpoint-good.pt"
    # saved at 2, 4, 6 (and 6 again at the epoch end): a good step ran from 2 and 4, none yet from 6
    assert load_checkpoint(good)["step"] == 4
    assert good.samefile(tmp_path / "checkpoint-step0000004.pt")  # a second name, not a second write
    assert [p.name for p in resume_candidates(tmp_path)][:2] == ["checkpoint.pt", "checkpoint-step0000006.pt"]


def test_resume_refuses_a_checkpoint_holding_nan(tmp_path):
    dino_trainer(tmp_path, "train.max_steps_per_epoch=1").fit()
    ckpt = load_checkpoint(tmp_path)
    ckpt["method"]["student.head.mlp.1.running_var"][0] = math.nan
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"NaN/Inf values \(student\.head\.mlp\.1\.running_var\).*move it aside"):
        dino_trainer(tmp_path, "train.max_steps_per_epoch=1").resume(tmp_path)


# -- under DDP every rank decides alike ---------------------------------------------------------
@pytest.mark.slow  # ~30 s on 2 shared cores: two spawned gloo ranks
def test_ranks_agree_to_skip_and_to_stop(tmp_path):
    import torch.multiprocessing as mp

    from distributed_helpers import divergence_worker, free_port

    mp.spawn(divergence_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for got in ranks:
        # rank 1's NaN loss at step 1 was skipped on both ranks; the NaN-lr update of step 3 stopped
        # both at once, back at the epoch-end checkpoint (step 3) a good step ran from
        assert "update of step 3 left NaN/Inf" in got["result"] and "checkpoint-good.pt (step 3," in got["result"]
        assert got["step"] == 3 and got["skipped"] == 1 and nonfinite_entries(got["state"]) == []
    for k, v in ranks[0]["state"].items():
        if "running_" not in k:  # on CPU each rank keeps its own BatchNorm statistics
            assert torch.equal(v, ranks[1]["state"][k]), k
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 3 and nonfinite_entries(ckpt["method"]) == []
