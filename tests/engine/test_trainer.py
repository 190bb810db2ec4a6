import json

import pytest
import torch

from helpers import tiny_overrides
from vitssl.config import load_config, to_container, to_objects
from vitssl.data import build_dataset
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.checkpoint import load_checkpoint
from vitssl.engine.protocol import StepOutput
from vitssl.engine.rng import seed_everything
from vitssl.engine.trainer import Trainer, TrainingDiverged
from vitssl.methods import build_method, method_configs


def make_trainer(run_dir, extra=()):
    cfg = load_config(None, [*tiny_overrides("digits"), "train.epochs=2", "train.max_steps_per_epoch=3",
                             "optim.warmup_epochs=1", "method.freeze_last_layer=1", *extra], method_configs())
    objs = to_objects(cfg)
    seed_everything(objs.train.seed)
    method = build_method(objs.method, objs.backbone)
    data = InputPipeline(method, build_dataset("digits", "train"), objs.train)
    return Trainer(method, data, objs.train, objs.optim, run_dir, to_container(cfg))


def final_state(trainer):
    return {k: v.clone() for k, v in trainer.method.state_dict().items()}


class Killed(Exception):
    pass


@pytest.mark.parametrize("extra", [(), ("backbone.drop_path_rate=0.2", "train.accum_steps=2"), ("train.num_workers=2",),
                                   ("method.mim_weight=1.0", "method.mim.shared_head=false"),
                                   ("method.pixel_weight=1.0",)])
def test_resumed_run_matches_uninterrupted_run(tmp_path, extra):
    straight = make_trainer(tmp_path / "a", extra)
    straight.fit()
    want = final_state(straight)
    assert straight.step == 6

    # a run killed during step 5 (the last checkpoint was written after step 4) ...
    killed = make_trainer(tmp_path / "b", (*extra, "train.checkpoint_every_steps=2"))
    original = killed._optimizer_step

    def dying(batches):
        if killed.step == 4:
            raise Killed
        return original(batches)

    killed._optimizer_step = dying
    with pytest.raises(Killed):
        killed.fit()
    assert load_checkpoint(tmp_path / "b")["step"] == 4

    # ... and resumed in a fresh process-like state (other global RNG, new objects)
    torch.manual_seed(1234)
    resumed = make_trainer(tmp_path / "b", extra)
    resumed.resume(tmp_path / "b" / "checkpoint.pt")
    assert resumed.step == 4
    resumed.fit()
    got = final_state(resumed)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), f"{k} differs after resume"


def test_schedules_follow_the_global_batch(tmp_path):
    trainer = make_trainer(tmp_path, ("optim.lr=0.256", "train.accum_steps=2"))
    assert trainer.global_batch == 16
    assert trainer.peak_lr == pytest.approx(0.016)
    assert trainer.steps_per_epoch == 3 and trainer.total_steps == 6
    assert trainer.lr_at(2) == pytest.approx(0.016)  # warm-up (1 epoch = 3 steps) ends on step 2
    assert trainer.weight_decay_at(0) == pytest.approx(0.04)


def test_nan_loss_step_is_skipped_and_dino_state_stays_finite(tmp_path):
    trainer = make_trainer(tmp_path)
    real = trainer.method.training_step

    def poisoned(batch, ctx):
        out = real(batch, ctx)
        return StepOutput(out.loss * float("nan") if ctx.step == 2 else out.loss, out.metrics)

    trainer.method.training_step = poisoned
    trainer.fit()
    assert trainer.step == 6 and trainer.skipped_steps == 1
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())


def test_nan_loss_in_a_row_stops_with_a_clear_error_and_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, ("train.max_nonfinite_steps=2", "train.checkpoint_every_steps=1"))
    real = trainer.method.training_step

    def poisoned(batch, ctx):
        out = real(batch, ctx)
        return StepOutput(out.loss * float("nan") if ctx.step >= 2 else out.loss, out.metrics)

    trainer.method.training_step = poisoned
    with pytest.raises(TrainingDiverged, match="loss was nan at 2 steps in a row.*checkpoint-good.pt.*--resume"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")  # the save at step 1: step 1 ran well from it
    assert ckpt["step"] == 1 and ckpt["skipped_steps"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())


def test_metrics_are_logged_per_step(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "weight_decay", "teacher_temp", "teacher_entropy", "teacher_kl_uniform",
            "teacher_mutual_info", "skipped_steps", "images_per_s"} <= rows[0].keys()


def test_bf16_autocast_gives_the_fp32_loss_within_tolerance(tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = make_trainer(tmp_path / precision, (f"train.precision={precision}",))
        trainer.fit()
        rows = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
        losses[precision] = rows[0]["loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_fp16_needs_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        make_trainer(tmp_path, ("train.precision=fp16",))
