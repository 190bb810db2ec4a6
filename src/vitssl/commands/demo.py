"""`vitssl demo`: pre-train a tiny ViT with DINO on built-in data and show that it learned.

Measures 20-NN top-1 of the same network at random initialisation and after pre-training on a
held-out split, prints a table, and writes results.json and loss_curve.png in the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitssl.analysis.plots import plot_loss_curve
from vitssl.commands.demo_eta import RemainingTime
from vitssl.commands.run_folder import prepare_run_dir
from vitssl.config import load_config, save_config, to_container, to_objects
from vitssl.data import build_dataset
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.logging import log
from vitssl.engine.rng import seed_everything
from vitssl.engine.trainer import Trainer
from vitssl.engine.wording import counted
from vitssl.eval import knn_classify
from vitssl.eval.baselines import RawPixels
from vitssl.eval.features import labelled_features
from vitssl.eval.pretrained import normalization
from vitssl.methods import build_method, method_class, method_configs

DEMO_PRESETS = {"mnist": "demo_mnist", "digits": "demo_digits", "shapes": "demo_shapes"}


def knn_top1(backbone: nn.Module, dataset_name: str, image_size: int, device: torch.device, k: int = 20,
             normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> float:
    """k-NN top-1 of `backbone` features: built-in train split as memory, val split as queries
    (the same protocol as `vitssl eval knn`), images normalised with `normalization` (the run's)."""
    kw = dict(num_workers=0, normalization=normalization)
    tr_f, tr_y, classes = labelled_features(backbone, dataset_name, "train", image_size, device, **kw)
    va_f, va_y, _ = labelled_features(backbone, dataset_name, "val", image_size, device, **kw)
    return knn_classify(tr_f, tr_y, va_f, va_y, ks=(k,), temperature=0.07, num_classes=classes)[k]["top1"]


class DemoKNN:
    """20-NN top-1 on a demo's held-out split with the run's evaluation crop size and normalisation,
    for any backbone (random init, pre-trained, `RawPixels`), so the rows of the table compare."""

    def __init__(self, objs: Any, dataset: str, device: torch.device) -> None:
        eval_input = method_class(objs.method.name).evaluation_input(objs.method, objs.backbone)
        self.size, self.norm = eval_input.image_size, normalization(eval_input)
        self.dataset, self.device = dataset, device

    def __call__(self, backbone: nn.Module) -> float:
        return knn_top1(backbone, self.dataset, self.size, self.device, normalization=self.norm)

    def pixels(self) -> float:
        return self(RawPixels(self.size))


def start_demo_run(preset: str, run_dir: Path, dataset: str, epochs: int | None, seed: int,
                   overrides: list[str] | None) -> tuple[Any, Any, Trainer]:
    """(config objects, method, trainer) of a demo, its run folder prepared; not trained yet."""
    extra = ([f"data.path={dataset}", f"train.seed={seed}"] + ([f"train.epochs={epochs}"] if epochs else [])
             + list(overrides or []))  # data.path: the saved config names the set actually trained on
    cfg = load_config(preset, extra, method_configs())
    objs = to_objects(cfg)
    seed_everything(seed)
    method = build_method(objs.method, objs.backbone)
    data = InputPipeline(method, build_dataset(dataset, "train", seed), objs.train)
    prepare_run_dir(run_dir, resume=False)  # after what can refuse the config: no folder is left behind
    save_config(cfg, run_dir / "config.yaml")
    trainer = Trainer(method, data, objs.train, objs.optim, run_dir, to_container(cfg))
    return objs, method, trainer


def run_demo(out: str | Path = "demo_run", dataset: str = "mnist", epochs: int | None = None,
             seed: int = 0, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the demo end to end; returns what it writes to results.json."""
    start = time.perf_counter()
    run_dir = Path(out)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    objs, method, trainer = start_demo_run(DEMO_PRESETS[dataset], run_dir, dataset, epochs, seed, overrides)
    knn = DemoKNN(objs, dataset, trainer.device)
    evaluated = time.perf_counter()
    random_init, pixels = knn(method.evaluation_backbone()), knn.pixels()
    log.info("20-NN top-1: random init %.3f, raw pixels %.3f; pre-training for %s", random_init, pixels,
             counted(trainer.total_steps, "step"))
    trainer.step_end_callbacks.append(RemainingTime(evaluation_s=time.perf_counter() - evaluated))
    trainer.fit()
    pretrained = knn(method.evaluation_backbone())
    plot_loss_curve(run_dir)

    results = {
        "dataset": dataset,
        "knn_top1": {"random_init": round(random_init, 4), "pretrained": round(pretrained, 4),
                     "raw_pixels": round(pixels, 4)},
        "k": 20,
        "steps": trainer.total_steps,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(format_demo_table(results, run_dir))
    return results


def format_demo_table(results: dict[str, Any], run_dir: Path) -> str:
    r = results["knn_top1"]
    lines = [
        f"DINO demo on {results['dataset']} ({counted(results['steps'], 'step')}, {results['seconds']:.0f} s)",
        "model                  20-NN top-1 (held-out split)",
        f"random init            {r['random_init']:.3f}",
        f"DINO pre-trained       {r['pretrained']:.3f}   ({100 * (r['pretrained'] - r['random_init']):+.1f} points)",
        f"raw pixels             {r['raw_pixels']:.3f}   (the same images, normalised and flattened: the bar to beat)",
        f"results: {run_dir / 'results.json'}   loss curve: {run_dir / 'loss_curve.png'}",
        f"next: vitssl report {run_dir}   (or vitssl pretrain --config demo_mnist --data FOLDER --out RUN on your images)",
    ]
    return "\n".join(lines)
