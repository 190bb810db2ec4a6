"""Online k-NN and Weights & Biases logging during pre-training."""

import sys
import types

import pytest
import torch

from helpers import tiny_overrides
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config
from vitssl.engine.logging import read_metrics
from vitssl.methods import method_configs

TWO_EPOCHS = [*tiny_overrides("digits"), "train.epochs=2"]


def test_online_knn_is_logged_every_epoch_and_leaves_training_unchanged(tmp_path):
    with_knn = pretrain(load_config(None, [*TWO_EPOCHS, "train.knn_every_epochs=1", "train.knn_data=digits",
                                           "train.knn_k=5"], method_configs()), tmp_path / "knn")
    plain = pretrain(load_config(None, TWO_EPOCHS, method_configs()), tmp_path / "plain")
    rows = [r for r in read_metrics(tmp_path / "knn") if "knn_top1" in r]
    assert [r["epoch"] for r in rows] == [0, 1] and [r["step"] for r in rows] == [2, 4]
    assert all(0.0 <= r["knn_top1"] <= 1.0 for r in rows)
    assert not any("knn_top1" in r for r in read_metrics(tmp_path / "plain"))
    for (name, a), b in zip(with_knn.method.state_dict().items(), plain.method.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # the k-NN draws no training randomness


def test_online_knn_runs_on_the_last_epoch_even_off_cadence(tmp_path):
    pretrain(load_config(None, [*TWO_EPOCHS, "train.knn_every_epochs=5", "train.knn_data=digits"],
                         method_configs()), tmp_path / "run")
    assert [r["epoch"] for r in read_metrics(tmp_path / "run") if "knn_top1" in r] == [1]


def test_online_knn_without_data_is_refused_before_the_run_folder_exists(tmp_path):
    with pytest.raises(ValueError, match="train.knn_data"):
        pretrain(load_config(None, [*TWO_EPOCHS, "train.knn_every_epochs=1"], method_configs()), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_wandb_receives_the_same_scalars_as_metrics_jsonl(tmp_path, monkeypatch):
    calls = {"init": [], "log": [], "finish": 0}

    class FakeRun:
        def log(self, metrics, step):
            calls["log"].append((step, metrics))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    pretrain(load_config(None, [*tiny_overrides("digits"), "train.wandb=true", "train.wandb_project=p"],
                         method_configs()), tmp_path / "run")
    assert calls["init"][0]["project"] == "p" and calls["init"][0]["config"]["method"]["name"] == "dino"
    assert calls["finish"] == 1
    logged = {step: m["loss"] for step, m in calls["log"]}
    assert logged == {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run")}


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(RuntimeError, match="pip install wandb"):
        pretrain(load_config(None, [*tiny_overrides("digits"), "train.wandb=true"], method_configs()),
                 tmp_path / "run")
