"""`vitssl pretrain` ends with a summary whose numbers and paths are the run's own, and whose
next command runs; on a CPU, defaults follow the cores and a slow run gets a hint that fits."""

import json
import os
import shlex

import pytest
import torch

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.cpu_hint import cpu_hint
from vitssl.commands.summary import duration
from vitssl.config import load_config, to_objects
from vitssl.methods import method_configs


def test_summary_names_the_runs_loss_checkpoint_and_a_next_command_that_runs(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run), *tiny_overrides("digits")[1:]]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert f"final loss {rows[-1]['loss']:.4f}" in out
    assert f"checkpoint: {run / 'checkpoint.pt'}" in out and (run / "checkpoint.pt").is_file()
    assert "pre-training done: 2 steps in " in out
    knn = next(line.split("next: ", 1)[1] for line in out.splitlines() if "next: vitssl eval knn" in line)
    argv = shlex.split(knn)[1:] + ["--ks", "5", "--num-workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    assert "saved" in capsys.readouterr().out


@pytest.mark.parametrize("seconds, text", [(4.2, "4 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_num_workers_default_follows_the_cores_and_explicit_values_stay(tmp_path):
    from helpers import tiny_method
    from vitssl.data import build_dataset
    from vitssl.data.pipeline import InputPipeline

    cores = len(os.sched_getaffinity(0))
    data = build_dataset("digits", "train")
    for given, used in ((None, min(8, cores)), (8, 8)):
        objs = to_objects(load_config(None, [f"train.num_workers={given or 'null'}"], method_configs()))
        assert objs.train.num_workers == given  # the saved config keeps None: it resolves on each machine
        assert InputPipeline(tiny_method("dino"), data, objs.train).num_workers == used


def test_cpu_hint_names_a_size_that_removes_it():
    objs = to_objects(load_config("dino_vit_small16", [], method_configs()))
    hint = cpu_hint(objs, torch.device("cpu"))
    assert hint and "--image-size" in hint and "--config demo_mnist" in hint
    size = int(hint.split("--image-size ")[1].split()[0])
    smaller = to_objects(load_config("dino_vit_small16", [f"data.image_size={size}"], method_configs()))
    assert cpu_hint(smaller, torch.device("cpu")) is None
    assert cpu_hint(objs, torch.device("cuda")) is None
    assert cpu_hint(to_objects(load_config("demo_mnist", [], method_configs())), torch.device("cpu")) is None


def test_demo_estimate_comes_after_its_first_steps_and_counts_what_is_left(tmp_path, caplog, monkeypatch, one_thread):
    from helpers import tiny_method
    from vitssl.commands.demo_eta import RemainingTime
    from vitssl.data import build_dataset
    from vitssl.data.pipeline import InputPipeline
    from vitssl.engine.logging import log
    from vitssl.engine.trainer import Trainer

    monkeypatch.setattr(log, "propagate", True)
    caplog.set_level("INFO", logger="vitssl")
    objs = to_objects(load_config(None, [*tiny_overrides("digits"), "train.max_steps_per_epoch=6"], method_configs()))
    method = tiny_method("dino")
    data = InputPipeline(method, build_dataset("digits", "train"), objs.train)
    trainer = Trainer(method, data, objs.train, objs.optim, tmp_path)
    eta = RemainingTime(evaluation_s=30.0, first_steps=2)
    trainer.step_end_callbacks.append(eta)
    trainer.fit()
    assert eta.message is not None and "3 steps and the final evaluation to go" in eta.message
    left = eta.message.split("about ")[1].split(" left")[0]
    assert " min " in left or int(left.removesuffix(" s")) >= 30  # at least the evaluation's own time
    assert {r.getMessage() for r in caplog.records if r.getMessage().startswith("estimate")} == {eta.message}


def test_each_methods_cpu_preset_exists_trains_that_method_and_is_what_the_hint_names():
    from vitssl.commands.cpu_hint import _cpu_preset_hint
    from vitssl.engine.protocol import optional_member
    from vitssl.methods import METHODS

    named = 0
    for name, cls in METHODS.items():
        preset = optional_member(cls, "cpu_preset")
        hint = _cpu_preset_hint(name)
        if preset:
            named += 1
            assert load_config(preset, [], method_configs()).method.name == name  # runs as the hint writes it
            assert f"`--config {preset}`" in hint
        else:
            assert hint == "`vitssl demo`"
    assert named >= 4  # dino, esvit, selfpatch, mae
